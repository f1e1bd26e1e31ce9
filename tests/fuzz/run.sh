#!/usr/bin/env bash
# Build (if needed) and run every libFuzzer target for SECONDS each.
#
#   tests/fuzz/run.sh SECONDS [OUTDIR]      (OUTDIR default: build-fuzz/fuzz-results)
#
# First replays tests/fuzz/regressions/<target>/* (every crash found so far
# must stay fixed), then fuzzes the targets FUZZ_PARALLEL (default 2) at a
# time. Each target starts from its committed seeds (tests/fuzz/corpus/<target>,
# read only) plus a fresh working corpus in OUTDIR/<target>/corpus, so the
# committed seeds stay small and every run's figures start from the same point.
# Writes OUTDIR/<target>.json (target, seconds, executions, exec_per_s, corpus
# size, crashes) and OUTDIR/summary.json (all of them). Exits 1 on any crash,
# leak, timeout or out-of-memory, printing the reproducer's path.
#
# Environment: FUZZ_BUILD (default build-fuzz), FUZZ_PARALLEL (2),
# FUZZ_TARGETS (all six), CC (clang) for the first configure.
set -u

usage() { echo "usage: $0 SECONDS [OUTDIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in ''|*[!0-9]*) usage ;; esac
SECS=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FUZZ_DIR=$ROOT/tests/fuzz
BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz}
case "$BUILD" in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OUT=${2:-$BUILD/fuzz-results}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
PARALLEL=${FUZZ_PARALLEL:-2}
TARGETS=${FUZZ_TARGETS:-"fuzz_structured fuzz_batch fuzz_binary_headers fuzz_config fuzz_filter fuzz_jsoncheck"}

# Largest input per target: one event, a batch, one request's headers and
# body, a config file, a filter plus an event, one JSON text.
max_len() {
    case "$1" in
        fuzz_structured) echo 16384 ;;
        fuzz_batch) echo 65536 ;;
        fuzz_binary_headers) echo 8192 ;;
        fuzz_config) echo 16384 ;;
        fuzz_filter) echo 4096 ;;
        fuzz_jsoncheck) echo 16384 ;;
        *) echo 4096 ;;
    esac
}
dict() {
    case "$1" in
        fuzz_structured|fuzz_batch|fuzz_jsoncheck) echo "$FUZZ_DIR/dict/event.dict" ;;
        fuzz_binary_headers) echo "$FUZZ_DIR/dict/binary.dict" ;;
        fuzz_config) echo "$FUZZ_DIR/dict/config.dict" ;;
        fuzz_filter) echo "$FUZZ_DIR/dict/filter.dict" ;;
    esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# ---- build -------------------------------------------------------------
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    CC=${CC:-clang} cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DFERRY_FUZZ=ON -DBUILD_TESTING=OFF >"$BUILD.configure.log" 2>&1 || {
        cat "$BUILD.configure.log" >&2
        echo "fuzz: configure failed (needs clang and libclang-rt-14-dev)" >&2
        exit 1
    }
    rm -f "$BUILD.configure.log"
fi
cmake --build "$BUILD" --target fuzz -j "${JOBS:-2}" >"$BUILD/fuzz-build.log" 2>&1 || {
    tail -40 "$BUILD/fuzz-build.log" >&2
    echo "fuzz: build failed (full log: $BUILD/fuzz-build.log)" >&2
    exit 1
}

mkdir -p "$OUT"
failed=0

# ---- regressions: every reproducer committed so far ---------------------
for t in $TARGETS; do
    dir=$FUZZ_DIR/regressions/$t
    files=$(find "$dir" -type f ! -name '*.md' 2>/dev/null | sort)
    [ -n "$files" ] || continue
    # shellcheck disable=SC2086  # one argument per reproducer file
    if "$BUILD/$t" -timeout=5 -rss_limit_mb=1024 $files </dev/null \
            >"$OUT/$t.regressions.log" 2>&1; then
        echo "fuzz: $t: $(echo "$files" | wc -l) regression input(s) pass"
    else
        echo "fuzz: $t: a regression input fails again; see $OUT/$t.regressions.log" >&2
        grep -aE "^Running: |ERROR|contract broken" "$OUT/$t.regressions.log" | tail -5 >&2
        failed=1
    fi
done

# ---- fuzz ---------------------------------------------------------------
# "corp: 123/45Kb" style sizes from libFuzzer's last status line, in bytes.
to_bytes() {
    case "$1" in
        *Mb) echo $(( ${1%Mb} * 1048576 )) ;;
        *Kb) echo $(( ${1%Kb} * 1024 )) ;;
        *b) echo "${1%b}" ;;
        *) echo 0 ;;
    esac
}

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

run_one() {
    local t=$1 dir=$OUT/$1
    rm -rf "$dir"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    local start end rc
    start=$(date +%s)
    "$BUILD/$t" -max_total_time="$SECS" -timeout=5 -rss_limit_mb=1024 \
        -max_len="$(max_len "$t")" -dict="$(dict "$t")" -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" "$dir/corpus" "$FUZZ_DIR/corpus/$t" \
        </dev/null >"$dir/fuzz.log" 2>&1
    rc=$?
    end=$(date +%s)

    local execs eps seeds seed_bytes new_files new_bytes last units ubytes crashes
    execs=$(stat_of number_of_executed_units "$dir/fuzz.log")
    eps=$(stat_of average_exec_per_sec "$dir/fuzz.log")
    seeds=$(find "$FUZZ_DIR/corpus/$t" -type f | wc -l)
    seed_bytes=$(find "$FUZZ_DIR/corpus/$t" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    new_files=$(find "$dir/corpus" -type f | wc -l)
    new_bytes=$(find "$dir/corpus" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    last=$(grep -oE 'corp: [0-9]+/[0-9]+[KM]?b' "$dir/fuzz.log" | tail -1)
    units=$(echo "$last" | sed -E 's/corp: ([0-9]+)\/.*/\1/')
    ubytes=$(to_bytes "$(echo "$last" | sed -E 's/corp: [0-9]+\///')")
    crashes=$(find "$dir/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' \
        -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    local crash_json
    crash_json=$(printf '%s\n' "$crashes" | awk 'NF {printf "%s\"%s\"", sep, $0; sep=", "}')
    cat >"$OUT/$t.json" <<EOF
{"target": "$t", "seconds": $SECS, "wall_seconds": $((end - start)),
 "executions": ${execs:-0}, "exec_per_s": ${eps:-0},
 "corpus_files": $((seeds + new_files)), "corpus_bytes": $((seed_bytes + new_bytes)),
 "seed_files": $seeds, "seed_bytes": $seed_bytes,
 "new_files": $new_files, "new_bytes": $new_bytes,
 "libfuzzer_corpus_units": ${units:-0}, "libfuzzer_corpus_bytes": ${ubytes:-0},
 "max_len": $(max_len "$t"), "exit_code": $rc, "crashes": [$crash_json],
 "log": "$dir/fuzz.log"}
EOF
    if [ "$rc" -ne 0 ] || [ -n "$crashes" ]; then
        echo "fuzz: $t FAILED (exit $rc); log: $dir/fuzz.log" >&2
        grep -aE "ERROR: |contract broken|SUMMARY" "$dir/fuzz.log" | head -5 >&2
        for c in $crashes; do
            echo "fuzz: reproducer: $c   (replay: $BUILD/$t $c)" >&2
        done
        return 1
    fi
    printf 'fuzz: %-20s %4ss %10s execs %7s exec/s  corpus %4s files %8s bytes (%s new)\n' \
        "$t" "$SECS" "${execs:-0}" "${eps:-0}" "$((seeds + new_files))" \
        "$((seed_bytes + new_bytes))" "$new_files"
}

pids=()
names=()
# Interrupted: stop the fuzzers this script started (children of our jobs).
stop_jobs() {
    for pid in "${pids[@]}"; do
        pkill -TERM -P "$pid" 2>/dev/null
        kill "$pid" 2>/dev/null
    done
    exit 130
}
trap stop_jobs INT TERM
reap_one() {
    # Wait for the oldest running job (targets take about the same time).
    local pid=${pids[0]}
    wait "$pid" || failed=1
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
}
for t in $TARGETS; do
    [ -x "$BUILD/$t" ] || { echo "fuzz: $BUILD/$t not built" >&2; failed=1; continue; }
    while [ "${#pids[@]}" -ge "$PARALLEL" ]; do reap_one; done
    run_one "$t" &
    pids+=($!)
    names+=("$t")
done
while [ "${#pids[@]}" -gt 0 ]; do reap_one; done

# One file with every target's figures.
{
    echo "["
    sep=""
    for t in $TARGETS; do
        [ -f "$OUT/$t.json" ] || continue
        printf '%s' "$sep"
        cat "$OUT/$t.json"
        sep=","
    done
    echo "]"
} >"$OUT/summary.json"
echo "fuzz: summary: $OUT/summary.json"
exit $failed
