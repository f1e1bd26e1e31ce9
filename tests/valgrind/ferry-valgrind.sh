#!/bin/sh
# Run the real ferry binary under valgrind memcheck, with the arguments
# given. Point the black-box harness at this script (FERRY_BIN) and every
# `ferry serve` and CLI run in the suite is checked: a memory error or a
# definite/indirect leak makes ferry exit 99 instead of its own code, and
# the harness already fails any instance that does not exit as expected.
#
#   VG_FERRY_BIN   the binary to run (default: build-vg/ferry); not FERRY_*
#                  because the harness strips FERRY_* from ferry's env.
#   VG_EXTRA       extra valgrind options, e.g. "--gen-suppressions=all".
# See tests/valgrind/README.md; `make test-valgrind` runs it.
here=$(cd "$(dirname "$0")" && pwd)
bin=${VG_FERRY_BIN:-$here/../../build-vg/ferry}
# -q: only errors reach stderr, so tests that read ferry's stderr still can.
# shellcheck disable=SC2086  # VG_EXTRA is a list of options
exec valgrind -q --tool=memcheck --leak-check=full \
    --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
    --error-exitcode=99 --track-fds=no --num-callers=30 --vgdb=no \
    --suppressions="$here/ferry.supp" $VG_EXTRA "$bin" "$@"
