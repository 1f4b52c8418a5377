//! slotpool-router: the patch as a petgraph DAG, compiled to a real-time-safe
//! [`Schedule`].
//!
//! - [`PatchRouter`] (control thread) holds the patch: the device nodes `input` and
//!   `output`, slot instances `<program>:<index>`, and routes between them with a
//!   channel map and a gain, in a petgraph `Acyclic<StableDiGraph>`. Every edit is
//!   validated; a refused edit changes nothing and says why ([`PatchError`]).
//! - [`PatchRouter::compile`] builds a [`Schedule`]: steps in topological order,
//!   grouped into levels of independent steps, a buffer plan of reusable lanes, and
//!   the mixes with their gains. See [`schedule`] for the execution contract.
//! - [`Workspace`] and [`execute`] run a schedule without allocating: the engine
//!   (slots in worker processes) and the reference renderer (modules in-process)
//!   use the same primitives, so they compute the same sums.
//! - [`handover`] moves a new schedule to the audio thread and the old one back,
//!   with no allocation, free, lock or wait on the audio thread.
//!
//! ```
//! use slotpool_router::{ChannelMap, PatchRouter, Workspace, execute};
//!
//! let mut patch = PatchRouter::new(2, 2)?;
//! patch.add_slot("osc:0", 0, 1)?;
//! patch.add_slot("fx:0", 2, 2)?;
//! patch.connect("osc:0", "fx:0", ChannelMap::Auto, 1.0)?; // mono to both sides
//! patch.connect("fx:0", "output", ChannelMap::Auto, 0.5)?;
//! let err = patch.connect("fx:0", "osc:0", ChannelMap::Auto, 1.0).unwrap_err();
//! assert!(err.to_string().starts_with(
//!     "route fx:0 → osc:0 would close the cycle osc:0 → fx:0 → osc:0"));
//!
//! let schedule = patch.compile();
//! let mut workspace = Workspace::for_schedule(&schedule, 64);
//! let mut out = vec![0.0; 2 * 64];
//! let mut run = |step: &slotpool_router::Step, input: &[f32], output: &mut [f32]| {
//!     if step.name().program() == "osc" { output.fill(1.0) } else { output.copy_from_slice(input) }
//! };
//! execute(&schedule, &mut workspace, &mut run, &[0.0; 2 * 64], &mut out)?;
//! assert!(out.iter().all(|&s| s == 0.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod exec;
pub mod handover;
mod name;
mod patch;
pub mod schedule;

pub use error::{PatchError, Side};
pub use exec::{ExecuteError, StepRunner, Workspace, execute};
pub use handover::{Busy, Publisher, Receiver, handover};
pub use name::{INPUT, NodeKind, OUTPUT, SlotName};
pub use patch::{ChannelMap, Link, MAX_CHANNELS, Node, NodeId, PatchRouter, Route};
pub use schedule::{Lanes, Levels, Mix, MixTerm, Schedule, Step};
