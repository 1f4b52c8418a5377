#!/usr/bin/env bash
# Build every cargo-fuzz (libFuzzer) target of fuzz/ with nightly and run each for N
# seconds (default 60): scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Why each part:
# - cargo-fuzz needs a nightly toolchain (-Zsanitizer=address); without one we print why
#   and exit 0, so CI on a stable-only box skips instead of failing.
# - cargo-fuzz is installed from crates.io if missing (`cargo install --locked`).
# - fuzz/seeds/<target>/ are checked-in seed inputs; the working corpus lives in
#   fuzz/corpus/<target>/ (git-ignored) and grows across runs, so long runs resume.
# - -timeout=10: a single input running 10 s is a hang (the region target must never
#   wait past a deadline); -rss_limit_mb=2048: a leak or huge allocation is a crash.
# - A crash leaves its input in fuzz/artifacts/<target>/; the script exits 1 and prints
#   the command that replays it.
# Long runs: FUZZ_JOBS=2 scripts/fuzz.sh 3600 region_open (see docs/RELIABILITY.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config_parse record_decode region_open control_request)
fi
# -jobs/-workers only when asked: with them libFuzzer forks children that log to fuzz-N.log.
parallel=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
    parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target}/fuzz"

if ! command -v rustup >/dev/null || ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: SKIP: no nightly toolchain (cargo-fuzz needs -Zsanitizer); install with 'rustup toolchain install nightly'"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz: SKIP: cargo-fuzz could not be installed (no network to crates.io?)"
        exit 0
    fi
fi

echo "fuzz: building ${targets[*]} with $(cargo +nightly --version)"
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -O "$t"
done

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    log="artifacts/$t/last-run.log"
    echo "fuzz: $t for ${secs}s (log $log)"
    if cargo +nightly fuzz run -O "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 "${parallel[@]}" \
        -print_final_stats=1 >"$log" 2>&1; then
        execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
        echo "fuzz: $t OK: $execs execs, $cov, corpus $(find "corpus/$t" -type f | wc -l) inputs"
    else
        echo "fuzz: $t FAILED; tail of $log:"
        tail -40 "$log"
        for a in "artifacts/$t"/crash-* "artifacts/$t"/timeout-* "artifacts/$t"/oom-*; do
            [ -e "$a" ] && echo "fuzz: reproduce: (cd fuzz && cargo +nightly fuzz run -O $t $a)"
        done
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${secs}s without a finding"
