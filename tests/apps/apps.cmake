# Integration tests of the applications: each starts the real binary.
if(TARGET eddy-echo)
  eddy_test(test_echo apps/test_echo.c LABELS integration TIMEOUT 60)
  target_compile_definitions(test_echo PRIVATE EDDY_ECHO_PATH="$<TARGET_FILE:eddy-echo>")
  add_dependencies(test_echo eddy-echo)
endif()
if(TARGET eddy-demo)
  eddy_test(test_demo apps/test_demo.c LABELS integration TIMEOUT 120)
  target_compile_definitions(test_demo PRIVATE EDDY_DEMO_PATH="$<TARGET_FILE:eddy-demo>")
  add_dependencies(test_demo eddy-demo)
  # The home page and the race API (issue 16).
  eddy_test(test_race apps/test_race.c LABELS integration TIMEOUT 120)
  target_compile_definitions(test_race PRIVATE EDDY_DEMO_PATH="$<TARGET_FILE:eddy-demo>")
  add_dependencies(test_race eddy-demo)
  # The page in headless Chromium; exits 77 (skipped) without chromium,
  # chromedriver or python3-selenium (tools/setup.sh --browser).
  add_test(NAME browser_demo COMMAND /usr/bin/python3
           ${CMAKE_CURRENT_SOURCE_DIR}/apps/browser_demo.py --demo $<TARGET_FILE:eddy-demo>
           --screenshot ${CMAKE_CURRENT_BINARY_DIR}/demo-page.png)
  set_tests_properties(browser_demo PROPERTIES LABELS "browser;integration" TIMEOUT 240
                       SKIP_RETURN_CODE 77)
endif()
