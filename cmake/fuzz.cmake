# Fuzz targets: core/fuzz/fuzz_<name>.c, each defining LLVMFuzzerTestOneInput.
#
# Always built: fuzz_replay_<name>, the target linked with core/fuzz/replay_main.c. CTest runs it
# over the seed corpus core/fuzz/corpus/<name>/ and the kept crash inputs
# core/fuzz/regressions/<name>/, so every input that once crashed stays a test in the release and
# the ASan+UBSan builds, without libFuzzer.
#
# -DNH_FUZZ=ON (the C compiler must be clang): fuzz_<name>, the libFuzzer binaries, built against
# a copy of the core compiled with coverage instrumentation, ASan and UBSan. scripts/fuzz builds
# them in their own folder and runs them (docs/hardening.md).

option(NH_FUZZ "Build the libFuzzer targets (needs clang)" OFF)

file(GLOB NH_FUZZ_SOURCES CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/core/fuzz/fuzz_*.c")

foreach(src ${NH_FUZZ_SOURCES})
  get_filename_component(target ${src} NAME_WE) # fuzz_codec
  string(REGEX REPLACE "^fuzz_" "" short ${target}) # codec
  add_executable(fuzz_replay_${short} ${src} ${CMAKE_SOURCE_DIR}/core/fuzz/replay_main.c)
  target_link_libraries(fuzz_replay_${short} PRIVATE nanocore)
  target_compile_definitions(fuzz_replay_${short} PRIVATE NH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  add_test(NAME fuzz_replay_${short}
    COMMAND fuzz_replay_${short}
      ${CMAKE_SOURCE_DIR}/core/fuzz/corpus/${short}
      ${CMAKE_SOURCE_DIR}/core/fuzz/regressions/${short})
  set_tests_properties(fuzz_replay_${short} PROPERTIES TIMEOUT 120)
endforeach()

if(NH_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "NH_FUZZ needs clang: configure with -DCMAKE_C_COMPILER=clang")
  endif()
  set(NH_FUZZ_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -g -O1)
  # The core again, instrumented for coverage (libFuzzer's main comes with the targets).
  add_library(nanocore_fuzz STATIC ${NH_CORE_SOURCES})
  target_include_directories(nanocore_fuzz PUBLIC core)
  target_compile_options(nanocore_fuzz PRIVATE ${NH_FUZZ_FLAGS} -fsanitize=fuzzer-no-link)
  target_link_libraries(nanocore_fuzz PUBLIC ${NH_CORE_LIBS})
  target_compile_definitions(nanocore_fuzz PRIVATE
    NH_VERSION="${PROJECT_VERSION}"
    NH_LUA_SOURCE_DIR="${CMAKE_SOURCE_DIR}/lua"
    NH_LUA_INSTALL_DIR="${NH_LUA_INSTALL_DIR}")
  foreach(src ${NH_FUZZ_SOURCES})
    get_filename_component(target ${src} NAME_WE)
    add_executable(${target} ${src})
    target_compile_options(${target} PRIVATE ${NH_FUZZ_FLAGS} -fsanitize=fuzzer)
    target_compile_definitions(${target} PRIVATE NH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    target_link_options(${target} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${target} PRIVATE nanocore_fuzz)
  endforeach()
endif()
