#!/usr/bin/env bash
# The long chaos run (`make soak`): every chaos test in its long version
# (SLOTPOOL_SOAK=1: 30 s spawn storm, 100 host SIGKILLs, 10,000 restarts, 60 s
# engine kill storm, 10^6-cycle false-hang run), the
# supervisord side-by-side comparison, then the fuzz targets for FUZZ_SECS each
# (default 600). Figures land in $SLOTPOOL_CHAOS_OUT (default target/chaos) and on
# stdout; docs/RELIABILITY.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
export SLOTPOOL_SOAK=1
export SLOTPOOL_CHAOS_OUT="${SLOTPOOL_CHAOS_OUT:-$PWD/target/chaos}"
mkdir -p "$SLOTPOOL_CHAOS_OUT"
# The engine-level chaos (chaos_engine: 60 s kill storm, hang storm, 10^6-cycle
# false-hang run) runs against release binaries: the host's deadline is what is
# measured, not the debug build's speed.
cargo build --release -p slotpool-host --bin slotpool -p slotpool-worker --bin slotpool-worker
export SLOTPOOL_CHAOS_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release"
# One test at a time: the spawn-rate and restart figures are timing-sensitive.
cargo test -p slotpool-host --test 'chaos_*' --test supervisord_compare -- --nocapture --test-threads=1
scripts/fuzz.sh "${FUZZ_SECS:-600}"
echo "soak: figures in $SLOTPOOL_CHAOS_OUT"
