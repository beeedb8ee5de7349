# The HTTP layer (proto/).  Included by tests/CMakeLists.txt.
eddy_test(test_http proto/test_http.c LABELS proto TIMEOUT 120 LIBS eddy_http Threads::Threads)
eddy_test(test_http_timeouts proto/test_http_timeouts.c LABELS proto TIMEOUT 120 LIBS eddy_http Threads::Threads)
# curl and python3 against the server; exit 77 (skipped) without curl.
eddy_test(test_http_interop proto/test_http_interop.c LABELS proto interop TIMEOUT 120 LIBS eddy_http Threads::Threads)
set_tests_properties(test_http_interop test_http_interop_compat PROPERTIES SKIP_RETURN_CODE 77)
foreach(t test_http test_http_timeouts test_http_interop)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/proto)
endforeach()
