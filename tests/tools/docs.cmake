# The documentation's commands and the scripts in tools/ (label docs).
# Included by tests/CMakeLists.txt.
#   docs_commands  tools/check-docs.py: every command block of README.md,
#                  docs/*.md and tools/**/README.md, run against this build
#                  directory (about 15 s; see tools/check-docs.py --list)
#   docs_scripts   tests/tools/test_scripts.sh: the benchmarks' build
#                  directory, soak.sh's phase rule, check-docs.py's own
#                  failures (stubbed cmake and wrk; about 10 s)
find_program(EDDY_PYTHON3 python3)
find_program(EDDY_BASH bash)
if(EDDY_PYTHON3 AND EDDY_BASH)
  add_test(NAME docs_commands
           COMMAND ${EDDY_PYTHON3} ${PROJECT_SOURCE_DIR}/tools/check-docs.py
                   --source ${PROJECT_SOURCE_DIR} --build ${PROJECT_BINARY_DIR})
  set_tests_properties(docs_commands PROPERTIES LABELS docs TIMEOUT 180)
  add_test(NAME docs_scripts
           COMMAND ${EDDY_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/tools/test_scripts.sh
                   ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  set_tests_properties(docs_scripts PROPERTIES LABELS docs TIMEOUT 180)
else()
  message(STATUS "python3 or bash not found: no docs tests")
endif()
