# FERRY_FUZZ=ON: libFuzzer targets for the parsers (tests/fuzz), clang only.
# ferry_core is compiled with coverage instrumentation plus ASan and UBSan
# (-fsanitize=fuzzer-no-link,...), and everything that links it gets the
# sanitizer runtimes; each fuzz_* target also links libFuzzer's main.
# Build:  CC=clang cmake -S . -B build-fuzz -DFERRY_FUZZ=ON && cmake --build build-fuzz
# Run:    tests/fuzz/run.sh SECONDS   (see tests/fuzz/README.md)
option(FERRY_FUZZ "Build the libFuzzer targets in tests/fuzz (needs clang)" OFF)
if(FERRY_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "FERRY_FUZZ needs clang (libFuzzer): configure with "
            "CC=clang (Debian packages clang and libclang-rt-dev)")
  endif()
  set(_fuzz_san address,undefined)
  target_compile_options(ferry_core PRIVATE
    -fsanitize=fuzzer-no-link,${_fuzz_san}
    -fno-omit-frame-pointer -fno-sanitize-recover=undefined
    # clang only: httpd.c's libmicrohttpd log callback formats MHD's own
    # va_list format (gcc does not flag it; nothing the fuzzers reach).
    -Wno-format-nonliteral)
  target_link_options(ferry_core INTERFACE -fsanitize=${_fuzz_san})

  set(FERRY_FUZZ_TARGETS fuzz_structured fuzz_batch fuzz_binary_headers
      fuzz_config fuzz_filter fuzz_jsoncheck)
  add_library(ferry_fuzz_common STATIC
    ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_common.c)
  target_link_libraries(ferry_fuzz_common PUBLIC ferry_core)
  target_compile_options(ferry_fuzz_common PRIVATE
    -fsanitize=fuzzer-no-link,${_fuzz_san}
    -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  ferry_warnings(ferry_fuzz_common)
  foreach(name ${FERRY_FUZZ_TARGETS})
    add_executable(${name} ${PROJECT_SOURCE_DIR}/tests/fuzz/${name}.c)
    target_link_libraries(${name} PRIVATE ferry_fuzz_common)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,${_fuzz_san}
      -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,${_fuzz_san})
    ferry_warnings(${name})
  endforeach()
  add_custom_target(fuzz DEPENDS ${FERRY_FUZZ_TARGETS})
endif()
