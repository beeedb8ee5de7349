# The chaos suite (issue 15): the HTTP server, the async, blocking and raw
# clients under seeded mixes of faults (50 seeds), eddy-demo under
# EDDY_FAULTS, and the exhaustive nth:K mode on the client's and the
# server's paths.  Included by tests/CMakeLists.txt.  A failure prints the
# seed and the command that replays it.
find_package(Threads REQUIRED)
eddy_test(test_http_chaos chaos/test_http_chaos.c LABELS chaos fault TIMEOUT 300
          LIBS eddy_http Threads::Threads)
if(TARGET eddy-demo)
  target_compile_definitions(test_http_chaos PRIVATE EDDY_DEMO_PATH="$<TARGET_FILE:eddy-demo>")
  target_include_directories(test_http_chaos PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/apps)
  add_dependencies(test_http_chaos eddy-demo)
endif()
