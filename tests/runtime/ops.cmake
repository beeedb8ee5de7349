# I/O operations on real descriptors: sockets over loopback, files, the
# buffer pool, cancellation races and ring back-pressure.  Included by
# tests/CMakeLists.txt.
eddy_test(test_net runtime/test_net.c LABELS unit TIMEOUT 60 LIBS Threads::Threads)
eddy_test(test_file runtime/test_file.c LABELS unit TIMEOUT 60)
eddy_test(test_bufpool runtime/test_bufpool.c LABELS unit TIMEOUT 60)
eddy_test(test_cancel runtime/test_cancel.c LABELS unit TIMEOUT 60)
# test_backpressure interposes io_uring_submit (dlsym RTLD_NEXT).
eddy_test(test_backpressure runtime/test_backpressure.c LABELS unit TIMEOUT 60
          LIBS ${CMAKE_DL_LIBS})
# The runtime's public header (eddy/eddy.h) from C++: warning-free under
# -Wall -Wextra -Werror, EDDY_OP_INIT included.  Only where a C++ compiler
# exists; the project itself stays C.
include(CheckLanguage)
check_language(CXX)
if(CMAKE_CXX_COMPILER)
  enable_language(CXX)
  add_executable(test_cxx_header runtime/test_cxx_header.cpp)
  target_link_libraries(test_cxx_header PRIVATE eddy)
  target_compile_options(test_cxx_header PRIVATE -Wall -Wextra -Werror)
  set_target_properties(test_cxx_header PROPERTIES CXX_STANDARD 11 CXX_STANDARD_REQUIRED ON)
  add_test(NAME test_cxx_header COMMAND test_cxx_header)
  set_tests_properties(test_cxx_header PROPERTIES LABELS unit TIMEOUT 30)
  add_test(NAME test_cxx_header_compat COMMAND test_cxx_header)
  set_tests_properties(test_cxx_header_compat PROPERTIES LABELS "unit;compat" TIMEOUT 30
    ENVIRONMENT "EDDY_COMPAT=5.10")
endif()
