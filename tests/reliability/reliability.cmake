# The reliability suite (tests/reliability/): the bad-bytes corpus against a
# live server, and faults (resets, half-close, allocation failure).
# Included by tests/CMakeLists.txt.
find_package(Threads REQUIRED)
eddy_test(test_corpus reliability/test_corpus.c LABELS reliability TIMEOUT 180
          LIBS eddy_http Threads::Threads)
eddy_test(test_faults reliability/test_faults.c LABELS reliability TIMEOUT 120
          LIBS eddy_http Threads::Threads)
foreach(t test_corpus test_faults)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/proto
                                          ${CMAKE_CURRENT_SOURCE_DIR}/reliability)
endforeach()
target_compile_definitions(test_corpus PRIVATE
  CORPUS_FILE="${CMAKE_CURRENT_SOURCE_DIR}/reliability/corpus.txt")

# The libFuzzer target (tools/fuzz.sh builds it): clang with -DEDDY_FUZZ=ON.
option(EDDY_FUZZ "Build the libFuzzer target fuzz_http (clang only)" OFF)
if(EDDY_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "EDDY_FUZZ needs clang")
  endif()
  add_executable(fuzz_http reliability/fuzz/fuzz_http.c)
  target_link_libraries(fuzz_http PRIVATE eddy_http)
  target_compile_options(fuzz_http PRIVATE -fsanitize=fuzzer ${EDDY_WARNINGS})
  target_link_options(fuzz_http PRIVATE -fsanitize=fuzzer)
endif()
