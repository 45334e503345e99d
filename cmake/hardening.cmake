# Hardening tests beyond the per-file e2e tests (docs/hardening.md):
#
#   valgrind_e2e_<name>  a few e2e files with nano-host under valgrind's memcheck
#                        (spec/e2e/valgrind/nano-host.sh): their closing SIGTERM check fails on any
#                        memory error or definitely/indirectly lost block. Not in sanitizer builds:
#                        ASan and valgrind do not mix, and the ASan build runs every e2e file with
#                        LeakSanitizer already.
#   soak_e2e             spec/e2e/soak/soak.js for NH_SOAK_SECONDS (45 here; scripts/soak runs it
#                        longer). Release builds only: its RSS check means nothing under ASan.

find_program(VALGRIND_EXECUTABLE valgrind)
set(NH_E2E_READY OFF)
if(NODE_EXECUTABLE AND EXISTS "${NH_NODE_MODULES}/pomelo-protocol")
  set(NH_E2E_READY ON)
endif()

if(VALGRIND_EXECUTABLE AND NH_E2E_READY AND NOT NH_SANITIZE)
  foreach(name protocol limits hardening-faults hardening-limits tls storage)
    add_test(NAME valgrind_e2e_${name}
      COMMAND ${NODE_EXECUTABLE} ${CMAKE_SOURCE_DIR}/spec/e2e/${name}.test.js)
    # RUN_SERIAL: memcheck is slow enough without another test competing for the two cores.
    set_tests_properties(valgrind_e2e_${name} PROPERTIES TIMEOUT 900 RUN_SERIAL ON
      ENVIRONMENT "NANO_HOST=${CMAKE_SOURCE_DIR}/spec/e2e/valgrind/nano-host.sh;NH_VALGRIND_TARGET=$<TARGET_FILE:nano-host>;NH_SOURCE_DIR=${CMAKE_SOURCE_DIR};NH_E2E_SLOW=4")
  endforeach()
endif()

if(NH_E2E_READY AND NOT NH_SANITIZE)
  add_test(NAME soak_e2e COMMAND ${NODE_EXECUTABLE} ${CMAKE_SOURCE_DIR}/spec/e2e/soak/soak.js)
  set_tests_properties(soak_e2e PROPERTIES TIMEOUT 300
    ENVIRONMENT "NANO_HOST=$<TARGET_FILE:nano-host>;NH_SOURCE_DIR=${CMAKE_SOURCE_DIR};NH_SOAK_SECONDS=45")
endif()
