# Install test: installs this build into a temporary prefix and builds a tiny
# program against the *installed* package, out of tree, with find_package and
# with pkg-config --static (eddy.pc, eddy_http.pc).  Registered once (no
# _compat twin): it checks packaging, not kernel features.
add_test(NAME install_consumer
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run.sh
          ${CMAKE_BINARY_DIR} ${CMAKE_CURRENT_LIST_DIR}/consumer ${CMAKE_C_COMPILER})
set_tests_properties(install_consumer PROPERTIES LABELS "install" TIMEOUT 180)
