# The fault injector (runtime/src/fault.c, eddy/fault.h): the EDDY_FAULTS
# grammar, each effect on each kind, triggers, determinism.  Included by
# tests/CMakeLists.txt.
eddy_test(test_fault runtime/test_fault.c LABELS unit chaos fault TIMEOUT 60)
