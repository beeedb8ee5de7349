# The HTTP client (proto/src/client.c, resolve.c, blocking.c, client_codec.c).  Included by tests/CMakeLists.txt.
eddy_test(test_client_codec proto/test_client_codec.c LABELS unit LIBS eddy_http)
# test_client_codec reaches into the client's internals (proto/src/client_codec.h, llhttp).
target_include_directories(test_client_codec PRIVATE ${PROJECT_SOURCE_DIR}/proto/src)
if(EXISTS ${EDDY_LLHTTP_INC_DIR}/llhttp.h)
  target_include_directories(test_client_codec PRIVATE ${EDDY_LLHTTP_INC_DIR})
endif()
# The faulty upstream (tests/proto/upstream.h) makes these part of the
# reliability suite too: refused, reset mid-body, truncated, silent,
# dripping, malformed, stale pooled connection (GET retried once, POST never).
eddy_test(test_client proto/test_client.c LABELS integration reliability TIMEOUT 120 LIBS eddy_http Threads::Threads)
eddy_test(test_blocking proto/test_blocking.c LABELS integration reliability TIMEOUT 120 LIBS eddy_http Threads::Threads)
# Interop with python3 -m http.server; exit code 77 (skipped) without python3.
eddy_test(test_client_python proto/test_client_python.c LABELS integration interop TIMEOUT 120 LIBS eddy_http)
set_tests_properties(test_client_python test_client_python_compat PROPERTIES SKIP_RETURN_CODE 77)
# The public HTTP headers used from C++ (eddy_http_pair brace-initialised
# next to the server's eddy_http_arg() function).  Only where a C++
# compiler exists; the project itself stays C.
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_executable(test_cxx_http proto/test_cxx_http.cpp)
  target_link_libraries(test_cxx_http PRIVATE eddy_http)
  target_compile_options(test_cxx_http PRIVATE -Wall -Wextra -Werror)
  set_target_properties(test_cxx_http PROPERTIES CXX_STANDARD 11 CXX_STANDARD_REQUIRED ON)
  add_test(NAME test_cxx_http COMMAND test_cxx_http)
  set_tests_properties(test_cxx_http PROPERTIES LABELS unit TIMEOUT 30)
endif()
# HTTP on fibers: fiber routes (pipelining, abort, shutdown drain, spawn
# refused) and eddy_http_fetch_await (issue 14).
eddy_test(test_http_fiber proto/test_http_fiber.c LABELS integration fiber TIMEOUT 120 LIBS eddy_http)
