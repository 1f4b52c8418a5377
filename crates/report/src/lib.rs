//! `slotpool-report`: the plots of docs/PERFORMANCE-engine.md and docs/RELIABILITY.md,
//! drawn as SVG from the raw samples that `crates/host/benches/cycle.rs`
//! (`SLOTPOOL_BENCH_OUT`) and `crates/host/tests/chaos_*.rs` (`SLOTPOOL_CHAOS_OUT`)
//! write. Parsing and statistics are in [`data`] (pure, unit-tested), drawing in
//! [`plot`]. `make report` runs the measurements and this; see the Makefile.
#![forbid(unsafe_code)]

pub mod data;
pub mod plot;
