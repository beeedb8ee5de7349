# The HTTP client (proto/src/client.c, blocking.c, url.c).  Included by tests/CMakeLists.txt.
eddy_test(test_url proto/test_url.c LABELS unit LIBS eddy_http)
# test_url reaches into the client's internals (proto/src/url.h, llhttp).
target_include_directories(test_url PRIVATE ${PROJECT_SOURCE_DIR}/proto/src)
if(EXISTS ${EDDY_LLHTTP_INC_DIR}/llhttp.h)
  target_include_directories(test_url PRIVATE ${EDDY_LLHTTP_INC_DIR})
endif()
# The faulty upstream (tests/proto/upstream.h) makes these part of the
# reliability suite too: refused, reset mid-body, truncated, silent,
# dripping, malformed, stale pooled connection (GET retried once, POST never).
eddy_test(test_client proto/test_client.c LABELS integration reliability TIMEOUT 120 LIBS eddy_http Threads::Threads)
eddy_test(test_blocking proto/test_blocking.c LABELS integration reliability TIMEOUT 120 LIBS eddy_http Threads::Threads)
# Interop with python3 -m http.server; exit code 77 (skipped) without python3.
eddy_test(test_client_python proto/test_client_python.c LABELS integration interop TIMEOUT 120 LIBS eddy_http)
set_tests_properties(test_client_python test_client_python_compat PROPERTIES SKIP_RETURN_CODE 77)
