//! slotpool: a real-time audio host that runs every DSP module in a supervised
//! worker process. This facade re-exports the workspace crates; the end-to-end
//! tests in `tests/` and the benchmarks in `benches/` belong to this package.
#![forbid(unsafe_code)]

pub use slotpool_ring as ring;
