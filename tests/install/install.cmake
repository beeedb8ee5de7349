# Install test: installs this build into a temporary prefix and builds a tiny
# program against the *installed* package, out of tree, with find_package and
# with pkg-config --static.  Registered once (no _compat twin): it checks
# packaging, not kernel features.
# When proto/ installs libeddy_http.a (eddy_http.pc, eddy::http), extend
# run.sh and consumer/ to link it the same way.
add_test(NAME install_consumer
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run.sh
          ${CMAKE_BINARY_DIR} ${CMAKE_CURRENT_LIST_DIR}/consumer ${CMAKE_C_COMPILER})
set_tests_properties(install_consumer PROPERTIES LABELS "install" TIMEOUT 180)
