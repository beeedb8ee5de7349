# Fibers (runtime/src/fiber*.c): switching, the stack pool, every kind of
# wait, overflow reports.  Included by tests/CMakeLists.txt.
eddy_test(test_fiber runtime/test_fiber.c LABELS unit fiber TIMEOUT 180 LIBS Threads::Threads m)
