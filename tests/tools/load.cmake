# eddy-load (tools/load): the histogram, and the binary against an in-test
# server.  Included by tests/CMakeLists.txt.
if(TARGET eddy-load)
  eddy_test(test_load tools/test_load.c LABELS integration TIMEOUT 60
            LIBS eddy_http Threads::Threads m)
  target_link_libraries(test_load PRIVATE eddy_hist) # tools/common/hist.h
  target_compile_definitions(test_load PRIVATE EDDY_LOAD_PATH="$<TARGET_FILE:eddy-load>")
  add_dependencies(test_load eddy-load)
endif()
