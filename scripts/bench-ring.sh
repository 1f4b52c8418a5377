#!/usr/bin/env bash
# Runs the ring benchmarks of docs/PERFORMANCE.md and prints their tables.
#
#   scripts/bench-ring.sh                 criterion + interleaved tables, all five benches
#   scripts/bench-ring.sh --tables-only   only the interleaved tables (what PERFORMANCE.md quotes)
#   scripts/bench-ring.sh --quick         every measurement once, tiny (a smoke test)
#
# The full criterion output of each bench goes to $LOG_DIR/<bench>.log (default
# target/bench-ring/); stdout gets the machine line and the tables.
set -euo pipefail
cd "$(dirname "$0")/.."

bench_args=(--bench)
for arg in "$@"; do
    case "$arg" in
        --tables-only) export SLOTPOOL_BENCH_TABLES_ONLY=1 ;;
        # `--bench --test` is criterion's (and our benches') quick mode.
        --quick) bench_args+=(--test) ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "bench-ring.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
LOG_DIR="${LOG_DIR:-$target_dir/bench-ring}"
mkdir -p "$LOG_DIR"

# Build first, at normal priority: only the measurements below run with raised priority.
cargo bench -p slotpool --no-run

# The machine is shared (CI, other builds). A negative nice value keeps the bench's
# producer and consumer threads on their CPUs against ordinary work (still SCHED_OTHER,
# nothing is starved); only root may lower it, anyone else measures at nice 0.
nice_cmd=()
if [ "$(id -u)" = 0 ]; then
    nice_cmd=(nice -n -15)
fi

echo "# slotpool ring benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)" \
     "model $(grep -m1 '^model[[:space:]]' /proc/cpuinfo | cut -d: -f2 | xargs);" \
     "$(ldd --version | head -1); $(uname -sr); $(rustc --version)"
echo "# priority: ${nice_cmd[*]:-nice 0}"

for bench in memcpy_alias ring_audio ring_handoff ring_command ring_wake; do
    log="$LOG_DIR/$bench.log"
    echo
    echo "=== $bench (full output: $log)"
    "${nice_cmd[@]}" cargo bench -p slotpool --bench "$bench" -- "${bench_args[@]:1}" >"$log" 2>&1 || {
        echo "bench-ring.sh: $bench failed; last lines of $log:" >&2
        tail -20 "$log" >&2
        exit 1
    }
    # Our tables start at the machine line, after criterion's output.
    sed -n '/^machine: /,$p' "$log"
done
