//! The allocation guard is really on: a processor that allocates inside `process()` kills
//! its worker in a debug build (and runs normally in a release build, where the guard is
//! compiled out).
//!
//! `harness = false`: this binary is both the test and, re-executed with
//! `SLOTPOOL_TEST_ROLE=alloc-worker`, the worker under test (a worker built on the SDK
//! like any user's).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use common::*;
use slotpool_worker::{AudioIn, AudioOut, ParamSpec, ProcessConfig, ProcessContext, Processor};

// Debug builds: any allocation inside a process() call aborts.
#[global_allocator]
static ALLOC: slotpool_worker::GuardAllocator = slotpool_worker::GuardAllocator;

const ROLE: &str = "SLOTPOOL_TEST_ROLE";

/// Copies its input through a freshly allocated buffer: the bug the guard exists for.
struct Allocating;

impl Processor for Allocating {
    fn params(&self) -> &[ParamSpec] {
        &[]
    }
    fn prepare(&mut self, _config: &ProcessConfig) {}
    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let copy: Vec<f32> = input.as_slice().to_vec();
        let out = output.as_mut_slice();
        let n = out.len();
        out.copy_from_slice(&copy[..n]);
    }
    fn set_param(&mut self, _id: u32, _value: f32) {}
    fn reset(&mut self) {}
}

fn main() -> ExitCode {
    if std::env::var_os(ROLE).is_some_and(|r| r == "alloc-worker") {
        return slotpool_worker::run(Allocating);
    }
    let _dog = Watchdog::arm("alloc_guard", PATIENCE * 3);
    let mut host = TestHost::new("alloc:0", stereo(32));
    let exe = std::env::current_exe().expect("current_exe");
    let mut prepared = host.prepare(&exe, &[], &Spawn::default());
    prepared.cmd.env(ROLE, "alloc-worker");
    let mut worker = prepared.spawn();
    assert!(worker.wait_ready(PATIENCE), "{}", worker.stderr_text());
    let layout = host.layout;
    let mut out = vec![0.0; layout.output_samples()];
    let input = test_input(&layout, 0);
    let result = host.process_raw(&input, &mut out, Duration::from_secs(2));
    if slotpool_worker::ALLOC_GUARD_ACTIVE {
        let status = worker.exit_status();
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "an allocation in process() must abort a debug worker; got {} (block: {result:?}); stderr:\n{}",
            describe(status),
            worker.stderr_text()
        );
        assert!(
            worker.stderr_text().contains("memory allocation"),
            "{}",
            worker.stderr_text()
        );
    } else {
        assert_eq!(
            result,
            Ok(slotpool_ring::OutputStatus::Ready),
            "release: the guard is compiled out"
        );
        worker.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(worker.exit_status().code(), Some(0));
    }
    println!("alloc_guard: 1 passed, 0 failed");
    ExitCode::SUCCESS
}
