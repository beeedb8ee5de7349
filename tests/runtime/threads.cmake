# Timers, cross-thread posts, the worker pool, signals, the stall watchdog,
# init errors and counters.  Included by tests/CMakeLists.txt.
eddy_test(test_timer runtime/test_timer.c LABELS unit TIMEOUT 60)
eddy_test(test_post runtime/test_post.c LABELS unit TIMEOUT 60 LIBS Threads::Threads)
eddy_test(test_work runtime/test_work.c LABELS unit TIMEOUT 60 LIBS Threads::Threads)
eddy_test(test_signal runtime/test_signal.c LABELS unit TIMEOUT 60 LIBS Threads::Threads)
eddy_test(test_watchdog runtime/test_watchdog.c LABELS unit TIMEOUT 60
          LIBS Threads::Threads ${CMAKE_DL_LIBS})
eddy_test(test_init runtime/test_init.c LABELS unit TIMEOUT 60)
# Choosing the backend (EDDY_BACKEND, the option, the fallback to epoll).
eddy_test(test_backend runtime/test_backend.c LABELS unit TIMEOUT 60)
