# The stress half of the reliability suite: slow and abusive clients,
# exhaustion (descriptors, receive buffers, rings), and the demo process
# under faults (SIGTERM under load, io_uring refused, io_uring_enter
# interrupted).  Figures are printed by each test; tools/soak.sh is the
# long soak (not a ctest test).
eddy_test(test_slow reliability/test_slow.c LABELS reliability stress LIBS eddy_http TIMEOUT 90)
eddy_test(test_exhaust reliability/test_exhaust.c LABELS reliability stress LIBS eddy_http TIMEOUT 90)
if(TARGET eddy-demo)
  eddy_test(test_process reliability/test_process.c LABELS reliability stress LIBS eddy_http TIMEOUT 90)
  target_compile_definitions(test_process PRIVATE EDDY_DEMO_BIN="$<TARGET_FILE:eddy-demo>")
  add_dependencies(test_process eddy-demo)
endif()
