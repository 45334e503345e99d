#!/bin/sh
# nano-host under valgrind's memcheck, for the end-to-end tests (cmake/valgrind.cmake sets
# NANO_HOST to this script and NH_VALGRIND_TARGET to the real binary). Any memory error, and any
# definitely or indirectly lost block at exit, turns the exit status into 99, which the tests'
# SIGTERM check (exit code 0 expected) reports as a failure.
here=$(cd "$(dirname "$0")" && pwd)
# --fair-sched=yes: valgrind runs one thread at a time, and without a fair lock a loop thread busy in
# a handler can starve the watchdog thread for seconds.
exec valgrind --quiet --error-exitcode=99 --leak-check=full --fair-sched=yes \
  --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
  --suppressions="$here/nano-host.supp" --num-callers=30 \
  "${NH_VALGRIND_TARGET:?set NH_VALGRIND_TARGET to the nano-host binary}" "$@"
