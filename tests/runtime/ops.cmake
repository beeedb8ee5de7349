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
