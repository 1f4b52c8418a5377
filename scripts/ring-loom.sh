#!/usr/bin/env bash
# Loom models of slotpool-ring's ring algorithms (crates/ring/tests/loom.rs).
#
# --cfg loom            switches src/sync.rs to loom's model atomics and puts every
#                       slot copy behind a loom cell, so orderings are checked.
# --release             loom explores thousands of interleavings; debug is ~10x slower.
# own target dir        a different RUSTFLAGS would otherwise rebuild the normal target.
# LOOM_MAX_PREEMPTIONS  bounds the search (3 is the usual choice: it finds the bugs
#                       that matter and finishes in a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target-loom}"
start=$SECONDS
cargo test --release -p slotpool-ring --test loom -- --test-threads=1 "$@"
echo "ring-loom: ok in $((SECONDS - start))s (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
