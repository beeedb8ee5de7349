# Integration tests of the applications: each starts the real binary.
if(TARGET eddy-echo)
  eddy_test(test_echo apps/test_echo.c LABELS integration TIMEOUT 60)
  target_compile_definitions(test_echo PRIVATE EDDY_ECHO_PATH="$<TARGET_FILE:eddy-echo>")
  add_dependencies(test_echo eddy-echo)
endif()
