//! # slotpool-worker: the worker SDK
//!
//! A slotpool worker is a process that runs one DSP module for one slot of the host's
//! patch. It talks to the host only through its *slot region* (a sealed memfd holding
//! lock-free rings, see `docs/ABI.md` and the `slotpool-ring` crate) and is supervised like
//! a supervisord program. This crate is everything a worker needs:
//!
//! - the [`Processor`] trait your DSP implements;
//! - [`run`], the whole worker main: start-up handshake, the process loop, exit codes;
//! - the built-in modules ([`modules`]) that the `slotpool-worker` binary runs, usable as
//!   plain library objects (the host's in-process reference renderer builds them through
//!   [`modules::ModuleSpec`]);
//! - [`Instance`], the wrapper every real-time call goes through (denormal guard and, in
//!   debug builds, an allocation guard), shared by the worker loop and in-process rendering
//!   so both compute bit-identical output.
//!
//! ## A complete worker
//!
//! ```no_run
//! use slotpool_worker::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig};
//! use slotpool_worker::{ProcessContext, Processor};
//!
//! // Debug builds: any allocation inside process() aborts (release: the system allocator).
//! #[global_allocator]
//! static ALLOC: slotpool_worker::GuardAllocator = slotpool_worker::GuardAllocator;
//!
//! const PARAMS: &[ParamSpec] = &[ParamSpec {
//!     id: 0, name: "amount", unit: "", min: 0.0, max: 1.0, default: 1.0,
//!     kind: ParamKind::Continuous,
//! }];
//!
//! struct Invert { amount: f32 }
//!
//! impl Processor for Invert {
//!     fn params(&self) -> &[ParamSpec] { PARAMS }
//!     fn prepare(&mut self, _config: &ProcessConfig) {}
//!     fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _: &ProcessContext) {
//!         for (c, out) in output.channels_mut().enumerate() {
//!             for (y, x) in out.iter_mut().zip(input.channel_for_output(c)) {
//!                 *y = -x * self.amount;
//!             }
//!         }
//!     }
//!     fn set_param(&mut self, _id: u32, value: f32) { self.amount = value; }
//!     fn reset(&mut self) {}
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     slotpool_worker::run(Invert { amount: 1.0 })
//! }
//! ```
//!
//! `examples/worker-tremolo` in the repository is such a worker, built and run by the tests.
//!
//! ## The start-up contract (the ABI for workers in any language)
//!
//! The host starts a worker by `exec` (never a bare fork), in its own process group, with
//! `PR_SET_PDEATHSIG(SIGKILL)` already set, and with these environment variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `SLOTPOOL_REGION_FD` | required: decimal number of the inherited fd of the slot region (a sealed memfd) |
//! | `SLOTPOOL_SLOT` | required: the slot's name, `<program>:<index>`; must equal the name in the region header |
//! | `SLOTPOOL_READY_FD` | optional: decimal fd of a pipe; the worker writes one byte `\n` and closes it when ready |
//! | `SLOTPOOL_GO_FD` | standbys only: decimal fd of a pipe; the worker starts up but waits for one byte on it before it opens the region (end of file: released, exit 0) |
//! | `SLOTPOOL_STANDBY_REGION_FD` | standbys only, *instead of* `SLOTPOOL_REGION_FD`: the region fd, to be opened only after go (a worker that does not know standbys finds no `SLOTPOOL_REGION_FD` and exits 2 rather than use a region another worker owns) |
//! | `SLOTPOOL_PARENT_PID` | optional: the host's pid, for the parent re-check (without it, a host lost before the worker armed its death signal is only detected by the heartbeat watch, which runs every [`WAIT_SLICE`] until the first ring or nudge) |
//! | `SLOTPOOL_SAMPLE_RATE` | optional: frames per second (default 48000); the region layout does not carry it |
//! | `SLOTPOOL_PREWAKE_US` | optional: the pre-wake window in µs, 0..=10000 (absent or 0: off); see [`prewake`] |
//!
//! The worker, in this order:
//! 1. sets `PR_SET_PDEATHSIG(SIGKILL)` itself (so it holds even if the host forgot), then
//!    checks `getppid() == SLOTPOOL_PARENT_PID`: if the parent already changed, the host
//!    died before the death signal was armed, and the worker exits with status 3;
//! 2. opens and validates the region (seals, size, magic, ABI version, layout), checks
//!    that the header's slot name equals `SLOTPOOL_SLOT`, and closes the inherited fd once
//!    mapped, so that its own children never inherit it (this SDK takes the fd without
//!    `unsafe` by reopening `/proc/self/fd/N` and closing `N`);
//! 3. writes its pid and state `STARTING`;
//! 4. prepares the processor (the only phase that may allocate);
//! 5. announces every parameter as `Event::Param { id, default, name }` in id order;
//! 6. sets state `RUNNING` and writes `\n` to the ready fd, then closes it.
//!
//! Started without `SLOTPOOL_REGION_FD` or `SLOTPOOL_SLOT` (by hand, say), a worker
//! prints one line saying how it is meant to be started and exits with status 2.
//!
//! ## The process loop
//!
//! Each iteration: apply pending commands (each acknowledged by its sequence number);
//! process every pending input block in cycle order, pushing each output block tagged with
//! the input's cycle and publishing `done` after each (the host is woken only when it
//! sleeps); bump `worker_heartbeat`; look at the host heartbeat; then sleep on the doorbell
//! futex. Commands are applied between blocks, never inside one. A block is only taken from
//! the input ring when the output ring has room for its result (back-pressure instead of
//! loss).
//!
//! The sleep has no timeout (plain `FUTEX_WAIT`, the cheapest wake-up there is) once the
//! host has rung or nudged the doorbell once (until then it is bounded by [`WAIT_SLICE`]):
//! the host promises to bump the doorbell at least every slot tick, with a cycle
//! (`ring`) or without (the supervisor's `nudge`, docs/ABI.md "Idle rings"). So an idle
//! worker wakes once per nudge: it beats (the host's hang watchdog judges those beats),
//! watches the host heartbeat and sees SIGTERM, all within a slot tick (50 ms under the
//! slotpool host, which also nudges right after it signals a worker).
//!
//! The host rings the doorbell after pushing input blocks, and should ring it after pushing
//! commands too; a command pushed without a ring is seen at the next ring or nudge.
//! A command is only taken when the event ring has room for its answer, so a host that
//! stops reading events stalls its commands instead of losing answers.
//!
//! Commands: `SetParam` (validated, clamped; continuous parameters glide), `Reset`,
//! `Bypass`, `Ping` (acked), `Shutdown`. Each command is answered by `Event::Ack { seq }`, or
//! by `Event::Error { seq, code, .. }` when refused (codes in [`error_code`]).
//!
//! ## Exit statuses
//!
//! | status | meaning |
//! |---|---|
//! | 0 | stopped on request: SIGTERM, SIGINT or the `Shutdown` command |
//! | 1 | the region could not be opened or the host broke the protocol (message on stderr) |
//! | 2 | started wrongly: the environment above is missing or malformed, or bad arguments |
//! | 3 | the host is gone: parent changed at start, or the host kept ringing or nudging while `host_heartbeat` stood still for the host timeout |
//!
//! A host that stops ringing altogether is dead, and the parent-death signal kills the
//! worker, or stopped (SIGSTOP, a frozen cgroup), and the worker sleeps without using any
//! CPU until it rings again; a sleep that long restarts the heartbeat watch, so a host
//! resuming after a long stop is not taken for gone.
//!
//! ## Real-time rules
//!
//! [`Processor::process`], [`Processor::set_param`] and [`Processor::reset`] run on the
//! process loop and must not allocate, lock, log or block. Every such call goes through
//! [`rt_guard`]: flush-to-zero/denormals-are-zero set for the call, and
//! `assert_no_alloc::assert_no_alloc` around it; the whole loop iteration runs under the
//! allocation guard too. The guard only fires when the program's global allocator is
//! [`GuardAllocator`] (declare it in your `main.rs` as above; the `slotpool-worker` binary
//! does) and only in debug builds.
#![forbid(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod cli;
/// The denormal guard, re-exported from the ring crate (which holds all unsafe code).
pub use slotpool_ring::denormal;
pub mod fault;
mod in_thread;
mod instance;
pub mod modules;
pub mod prewake;
mod processor;
mod run;
pub mod smooth;
mod sys;

pub use in_thread::WorkerThread;
pub use instance::{Instance, rt_guard};
pub use processor::{
    AudioIn, AudioOut, ParamError, ParamKind, ParamSpec, ProcessConfig, ProcessContext, Processor,
    StateError,
};
pub use run::{
    DEFAULT_HOST_TIMEOUT, Outcome, RunOptions, StartError, WAIT_SLICE, Worker, error_code,
    exit_status, fault_code, grandchild_main, run, run_with,
};
pub use sys::{
    DEFAULT_SAMPLE_RATE, ENV_GO_FD, ENV_PARENT_PID, ENV_PREWAKE_US, ENV_READY_FD, ENV_REGION_FD,
    ENV_SAMPLE_RATE, ENV_SLOT, ENV_STANDBY_REGION_FD, EnvError, MAX_PREWAKE_US, StartEnv,
};

/// The global allocator a worker program declares so that the allocation guard works:
/// `assert_no_alloc::AllocDisabler` in debug builds (an allocation inside a guarded call
/// aborts the process), the system allocator in release builds. Chosen by this crate's
/// build profile, so it always matches the guard compiled into [`rt_guard`]. Declare it
/// as in the crate example: `#[global_allocator] static ALLOC: GuardAllocator = GuardAllocator;`.
// (`not(doctest)`: rustdoc collects doctests with debug assertions on even in a release
// test run, where assert_no_alloc has no AllocDisabler.)
#[cfg(all(debug_assertions, not(doctest)))]
pub use assert_no_alloc::AllocDisabler as GuardAllocator;
/// The global allocator a worker program declares (release build: the system allocator;
/// debug builds: `assert_no_alloc::AllocDisabler`).
#[cfg(any(not(debug_assertions), doctest))]
pub use std::alloc::System as GuardAllocator;

/// Whether [`rt_guard`] forbids allocation in this build (debug builds, given
/// [`GuardAllocator`] as the global allocator).
pub const ALLOC_GUARD_ACTIVE: bool = cfg!(debug_assertions);

// The library's own unit tests run with the allocation guard armed, like the binary.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: GuardAllocator = GuardAllocator;
