#!/usr/bin/env bash
# The whole reliability campaign at long settings, then docs/RELIABILITY.md.
# This is `make reliability`; `make test-reliability` runs the same tests at
# CI sizes and writes no document.
#
#   1. tests/reliability (crash loop, chaos peers, disk full and spool limit,
#      hostile clients) with the long FERRY_REL_* settings below;
#   2. tests/fuzz/run.sh $FUZZ_SECONDS, when it is there;
#   3. `make test-valgrind $RELIABILITY_VALGRIND_ARGS`, when the target
#      exists (RELIABILITY_VALGRIND=0 skips it; the whole black-box suite
#      under memcheck, VALGRIND_ALL=1, takes about 20 minutes, while
#      RELIABILITY_VALGRIND_ARGS= runs CI's subset), and
#      `make test-asan $RELIABILITY_ASAN_ARGS` when RELIABILITY_ASAN=1; each
#      run's log becomes a memory-safety summary;
#   4. tests/reliability/report.py writes $RELIABILITY_DOC from all of it.
# The document is written even when a part fails; the exit status is then 1.
#
# Environment: BUILD (build), PYTHON (/usr/bin/python3), MAKE (make),
# FUZZ_SECONDS (60), RELIABILITY_OUT ($BUILD/reliability),
# RELIABILITY_DOC (docs/RELIABILITY.md), RELIABILITY_VALGRIND (1),
# RELIABILITY_VALGRIND_ARGS (VALGRIND_ALL=1), RELIABILITY_ASAN (0),
# RELIABILITY_ASAN_ARGS (none; e.g. BUILD_SAN=build-other), and any
# FERRY_REL_* knob (see tests/reliability/test_*.py) to override a size.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
MAKE=${MAKE:-make}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=${RELIABILITY_OUT:-$BUILD/reliability}
DOC=${RELIABILITY_DOC:-docs/RELIABILITY.md}
VALGRIND=${RELIABILITY_VALGRIND:-1}
VALGRIND_ARGS=${RELIABILITY_VALGRIND_ARGS-VALGRIND_ALL=1}
ASAN=${RELIABILITY_ASAN:-0}
ASAN_ARGS=${RELIABILITY_ASAN_ARGS:-}

# The long settings (CI's are the defaults in the tests).
export FERRY_REL_KILLS=${FERRY_REL_KILLS:-100}
export FERRY_REL_EVENTS=${FERRY_REL_EVENTS:-1500}
export FERRY_REL_TLS_EVENTS=${FERRY_REL_TLS_EVENTS:-120}
export FERRY_REL_DISK_CLIENTS=${FERRY_REL_DISK_CLIENTS:-8}
export FERRY_REL_FULL_S=${FERRY_REL_FULL_S:-5}
export FERRY_REL_HOSTILE_S=${FERRY_REL_HOSTILE_S:-60}
export FERRY_REL_LORIS=${FERRY_REL_LORIS:-200}
export FERRY_REL_CONNECTIONS=${FERRY_REL_CONNECTIONS:-10000}
FERRY_REL_SEED=${FERRY_REL_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
FERRY_REL_SEED=$((FERRY_REL_SEED % 2147483647 + 1))
export FERRY_REL_SEED
SETTINGS=$(env | grep '^FERRY_REL_' | grep -v '^FERRY_REL_OUT=' | sort | tr '\n' ' ')
SETTINGS="${SETTINGS% } FUZZ_SECONDS=$FUZZ_SECONDS"

rm -rf "$OUT"
mkdir -p "$OUT/results" "$OUT/fuzz" "$OUT/memory"
failed=""
echo "reliability: $SETTINGS"
echo "reliability: results in $OUT"

# ---- 1. the campaign's own tests ----------------------------------------
FERRY_BIN=$ROOT/$BUILD/ferry FERRY_REL_OUT=$ROOT/$OUT/results \
    "$PYTHON" -m pytest -q -rxs -p no:cacheprovider \
    --junitxml="$OUT/results/junit.xml" tests/reliability || failed="$failed tests"

# ---- 2. fuzzing ---------------------------------------------------------
if [ -x tests/fuzz/run.sh ]; then
    tests/fuzz/run.sh "$FUZZ_SECONDS" "$OUT/fuzz" || failed="$failed fuzz"
else
    echo "reliability: tests/fuzz/run.sh not found; no fuzzing figures" >&2
fi

# ---- 3. memory safety ---------------------------------------------------
# suite NAME COMMAND...: run it, keep its log, summarize it as JSON.
suite() {
    local name=$1
    shift
    local log=$OUT/memory/$name.log start end rc
    echo "reliability: $name: $*"
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    tail -5 "$log"
    "$PYTHON" tests/reliability/report.py summarize-log --suite "$name" \
        --command "$*" --seconds $((end - start)) --exit-code "$rc" \
        "$log" "$OUT/memory/$name.json" >/dev/null
    [ "$rc" -eq 0 ] || failed="$failed $name"
}
if [ "$VALGRIND" = 1 ]; then
    if "$MAKE" -n test-valgrind >/dev/null 2>&1; then
        # shellcheck disable=SC2086  # VALGRIND_ARGS is a list of assignments
        suite valgrind "$MAKE" --no-print-directory test-valgrind $VALGRIND_ARGS
    else
        echo "reliability: no test-valgrind target; no valgrind figures" >&2
    fi
fi
if [ "$ASAN" = 1 ]; then
    # shellcheck disable=SC2086  # ASAN_ARGS is a list of assignments
    suite asan "$MAKE" --no-print-directory test-asan $ASAN_ARGS
fi

# ---- 4. the document ----------------------------------------------------
"$PYTHON" tests/reliability/report.py --results "$OUT/results" --fuzz "$OUT/fuzz" \
    --memory "$OUT/memory" --junit "$OUT/results/junit.xml" --binary "$BUILD/ferry" \
    --settings "$SETTINGS" --out "$DOC" || failed="$failed report"

if [ -n "$failed" ]; then
    echo "reliability: FAILED:$failed (the document says what was measured)" >&2
    exit 1
fi
echo "reliability: all parts passed; wrote $DOC"
