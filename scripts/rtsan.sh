#!/usr/bin/env bash
# The engine's real-time path under RealtimeSanitizer (RTSan): `EngineRt::process` is
# marked nonblocking (`#[cfg_attr(rtsan, sanitize(realtime = "nonblocking"))]`), so any
# malloc/free, lock, sleep, file or socket call or other blocking syscall reached from a
# cycle aborts the test with a stack trace.
#
# Runs: the engine's unit tests (real worker loops: fallback, down/up, quarantine),
# tests/engine_render.rs (`slotpool render` through worker processes, bit-exact), and
# tests/rtsan_engine.rs (a clean run with workers going down and up, plus two negative
# controls in child processes that must abort: an allocation in a nonblocking fn, and
# the engine's own cycle with the futex exemption switched off).
#
# The one exemption: slotpool-ring's `sys::futex_wait_until` (FUTEX_WAIT_BITSET to an
# absolute deadline, the one wait the design allows) and `sys::futex_wake` (never
# sleeps) run inside `__rtsan_disable/__rtsan_enable`, only in `--cfg rtsan` builds.
#
# RUSTC_BOOTSTRAP=1        -Zsanitizer and #![feature(sanitize)] are unstable; this lets
#                          the pinned stable toolchain accept them (falls back to
#                          `cargo +nightly` if stable refuses).
# -Zsanitizer=realtime     link the RTSan runtime, instrument nonblocking functions.
# --cfg rtsan              turns on the attribute, the futex exemption and the tests.
# --target <host>          keeps RUSTFLAGS away from build scripts and proc macros and
#                          gives its own output dir.
# own target dir           a different RUSTFLAGS would otherwise rebuild the normal target.
# Skips (exit 0) with the reason printed only where the toolchain cannot do it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${RTSAN_TARGET_DIR:-target-rtsan}"
export RUSTFLAGS="-Zsanitizer=realtime --cfg rtsan ${RUSTFLAGS:-}"
export RUSTC_BOOTSTRAP=1
# halt_on_error (the default) makes a violation abort; print the full report.
export RTSAN_OPTIONS="${RTSAN_OPTIONS:-halt_on_error=1}"
start=$SECONDS

case "$target" in
  x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) ;;
  *) echo "rtsan: skipped: RealtimeSanitizer is not supported by rustc on $target"; exit 0 ;;
esac

probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
# Can this toolchain build an RTSan binary, and does it abort on a violation?
probe() {
  cat > "$probe_dir/p.rs" <<'RS'
#![feature(sanitize)]
#[sanitize(realtime = "nonblocking")]
fn rt() -> usize { std::hint::black_box(vec![1u8; 4]).len() }
fn main() { if std::env::args().count() > 1 { rt(); } }
RS
  rustc $1 -Zsanitizer=realtime --target "$target" -o "$probe_dir/p" "$probe_dir/p.rs" 2>"$probe_dir/err" \
    && "$probe_dir/p" \
    && ! "$probe_dir/p" violate 2>>"$probe_dir/err"
}
cargo_cmd=(cargo)
if ! probe ""; then
  if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly' && probe "+nightly"; then
    echo "rtsan: stable rustc cannot build with RTSan here; using nightly"
    cargo_cmd=(cargo +nightly)
  else
    echo "rtsan: skipped: this toolchain cannot build a RealtimeSanitizer binary:"
    sed 's/^/  /' "$probe_dir/err" | head -5
    exit 0
  fi
fi

# engine_render.rs runs the slotpool-worker binary next to `slotpool`: build it here
# (same target dir and flags) so the test does not start a nested cargo.
"${cargo_cmd[@]}" build -p slotpool-worker --bin slotpool-worker --target "$target"
"${cargo_cmd[@]}" test -p slotpool-host --target "$target" --lib "$@" -- engine::
"${cargo_cmd[@]}" test -p slotpool-host --target "$target" --test engine_render --test rtsan_engine "$@"
echo "rtsan: ok in $((SECONDS - start))s"
