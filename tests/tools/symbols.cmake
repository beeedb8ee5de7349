# What the installed archives export (tools/check-symbols.sh): only the API
# (eddy_*), so a user's own mono_ns or url_parse links.  Registered once:
# it checks packaging, not kernel features.
add_test(NAME install_symbols
  COMMAND ${CMAKE_COMMAND} -E env CC=${CMAKE_C_COMPILER}
          ${PROJECT_SOURCE_DIR}/tools/check-symbols.sh ${CMAKE_BINARY_DIR})
set_tests_properties(install_symbols PROPERTIES LABELS "install" TIMEOUT 120)
