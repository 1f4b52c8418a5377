#!/usr/bin/env bash
# Test 6 of the engine issue against a JACK server this script owns: starts
# `jackd -d dummy -r 48000 -p 256` under a fixed name, runs the JACK tests with
# JACK_DEFAULT_SERVER / SLOTPOOL_JACK_SERVER naming it, and always kills it again.
# Without this script the tests start their own server the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v jackd >/dev/null || { echo "jack-test: jackd not found; run scripts/install-deps.sh" >&2; exit 1; }

# A fixed name: JACK2 reclaims a dead server's registry entry only by name, so a run
# killed before its trap never leaves an entry behind for good.
name="slotpool-ci"
jackd -n "$name" -d dummy -r 48000 -p 256 >"${TMPDIR:-/tmp}/$name.log" 2>&1 &
jack_pid=$!
# Kill the server however this script ends (the test's own watchdogs bound its runtime).
trap 'kill "$jack_pid" 2>/dev/null; wait "$jack_pid" 2>/dev/null || true' EXIT

if ! jack_wait -s "$name" -w -t 20 >/dev/null 2>&1; then
    echo "jack-test: jackd -n $name did not come up in 20 s:" >&2
    cat "${TMPDIR:-/tmp}/$name.log" >&2
    exit 1
fi
echo "jack-test: JACK server '$name' up (pid $jack_pid)"

export JACK_DEFAULT_SERVER="$name" SLOTPOOL_JACK_SERVER="$name" JACK_NO_START_SERVER=1
# audio_jack: the cpal JACK backend itself; run_jack: `slotpool run` with 4 slots for
# 10 s through it, 0 device xruns and 0 late blocks (issue #6, test 6).
cargo test -p slotpool-host --features jack --test audio_jack --test run_jack -- --nocapture
