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
# Loop groups (eddy/group.h): thread-per-core start, barrier, stop, posts;
# and the listening-socket helpers.
eddy_test(test_group runtime/test_group.c LABELS unit TIMEOUT 60 LIBS Threads::Threads)
# The README's multi-core server (the ```c block after the marker
# "<!-- compiled: readme_group") is built with every build, so that it
# cannot rot: extracted here at configure time, re-extracted when README.md
# changes.
if(TARGET eddy_http)
  set(_readme ${PROJECT_SOURCE_DIR}/README.md)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_readme})
  file(READ ${_readme} _readme_text)
  string(REGEX MATCH "<!-- compiled: readme_group[^\n]*\n```c\n([^`]*)```" _readme_block
         "${_readme_text}")
  if(NOT CMAKE_MATCH_1)
    message(FATAL_ERROR "README.md: no ```c block after <!-- compiled: readme_group")
  endif()
  file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/readme_group.c CONTENT "${CMAKE_MATCH_1}"
       @ONLY)
  add_executable(readme_group ${CMAKE_CURRENT_BINARY_DIR}/readme_group.c)
  target_link_libraries(readme_group PRIVATE eddy_http eddy)
  target_compile_options(readme_group PRIVATE ${EDDY_WARNINGS})
endif()
