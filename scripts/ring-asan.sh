#!/usr/bin/env bash
# slotpool-ring's tests (conformance, hostile-peer proptests, cross-process) under
# AddressSanitizer: any out-of-bounds access the hostile peer could provoke aborts.
#
# RUSTC_BOOTSTRAP=1      -Zsanitizer is unstable; this lets the pinned stable toolchain
#                        accept it (falls back to `cargo +nightly` if stable refuses).
# -Zsanitizer=address    instrument every load/store of our code.
# --target <host>        keeps RUSTFLAGS away from build scripts and proc macros
#                        (they must not be instrumented) and gives its own output dir.
# own target dir         a different RUSTFLAGS would otherwise rebuild the normal target.
# --lib --tests          unit + integration tests (not doctests: rustdoc ignores RUSTFLAGS).
# ASAN_OPTIONS           detect_leaks=0: the watchdog threads and proptest's statics are
#                        "leaked" at exit by design; we are after memory errors.
# Skips (exit 0) with the reason printed only where the toolchain cannot do it.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${ASAN_TARGET_DIR:-target-asan}"
export RUSTFLAGS="-Zsanitizer=address ${RUSTFLAGS:-}"
export RUSTDOCFLAGS="-Zsanitizer=address"
export RUSTC_BOOTSTRAP=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}"
start=$SECONDS

case "$target" in
  x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) ;;
  *) echo "ring-asan: skipped: AddressSanitizer is not supported by rustc on $target"; exit 0 ;;
esac

probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
# Can this toolchain link an ASan binary (runtime present)?
probe() {
  echo 'fn main() { let v = vec![1u8; 4]; std::hint::black_box(&v); }' > "$probe_dir/p.rs"
  rustc $1 -Zsanitizer=address --target "$target" -o "$probe_dir/p" "$probe_dir/p.rs" 2>"$probe_dir/err" \
    && "$probe_dir/p"
}
cargo_cmd=(cargo)
if ! probe ""; then
  if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly' && probe "+nightly"; then
    echo "ring-asan: stable rustc cannot build with ASan here; using nightly"
    cargo_cmd=(cargo +nightly)
  else
    echo "ring-asan: skipped: this toolchain cannot build an AddressSanitizer binary:"
    sed 's/^/  /' "$probe_dir/err" | head -5
    exit 0
  fi
fi

"${cargo_cmd[@]}" test -p slotpool-ring --target "$target" --lib --tests "$@"
echo "ring-asan: ok in $((SECONDS - start))s"
