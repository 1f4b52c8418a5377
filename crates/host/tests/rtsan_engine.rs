//! RealtimeSanitizer proofs (only in `--cfg rtsan` builds: scripts/rtsan.sh).
//!
//! - The engine's cycle (`EngineRt::process`, marked nonblocking) runs clean with
//!   real worker loops attached: doorbells, bounded waits, fallbacks, a worker going
//!   down and coming back.
//! - The sanitizer really fires: an allocation in a nonblocking function aborts the
//!   process, and with the futex exemption switched off the engine's own cycle aborts
//!   on its first futex call — so the cycle is checked, and the two futex calls are
//!   the only thing exempted. Each violation runs in a child process (this test
//!   binary re-executed for one test) and the parent asserts on its abort and report.
#![cfg(rtsan)]
#![feature(sanitize)]

use std::process::Command;
use std::time::Duration;

use slotpool_host::config::{Fallback, SlotMode};
use slotpool_host::engine::{
    BlockProcessor, EngineHandle, EngineRt, EngineSettings, Pacing, SlotSpec, ToEngine, engine,
};
use slotpool_ring::{Heap, HostRegion, SlotLayout};
use slotpool_router::{ChannelMap, PatchRouter};
use slotpool_worker::WorkerThread;
use slotpool_worker::modules::ModuleSpec;

const CHILD: &str = "SLOTPOOL_RTSAN_CHILD";
const FRAMES: u32 = 64;

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
}

/// A passthrough worker loop on a thread over a heap region, as a worker process
/// would run it; waits until it reports RUNNING.
fn start_worker(region: &HostRegion<Heap>) -> WorkerThread {
    let p = ModuleSpec::new("passthrough").unwrap().build().unwrap();
    WorkerThread::start(region, p, 48_000.0, Duration::from_secs(60)).unwrap()
}

struct Rig {
    rt: EngineRt,
    handle: EngineHandle,
    regions: Vec<HostRegion<Heap>>,
    /// Each stopped and joined when dropped (`None` while its slot has no worker).
    workers: Vec<Option<WorkerThread>>,
}

/// `count` passthrough worker loops (threads over heap regions) in a fan-out,
/// real-time pacing with the whole period as deadline and the default 100 µs spin.
fn rig(count: usize) -> Rig {
    let (rt, mut handle) = engine(EngineSettings {
        sample_rate: 48_000,
        block_frames: FRAMES,
        channels_in: 1,
        channels_out: 1,
        deadline: 1.0,
        pacing: Pacing::RealTime,
        capacity: 8,
        wait_spin: Duration::from_micros(100),
    });
    let mut patch = PatchRouter::new(1, 1).unwrap();
    let (mut regions, mut workers) = (Vec::new(), Vec::new());
    for i in 0..count {
        let name = format!("p{i}:0");
        let layout = SlotLayout {
            channels_in: 1,
            channels_out: 1,
            block_frames: FRAMES,
            audio_capacity: 4,
            command_capacity: 64,
            event_capacity: 64,
        };
        let region = HostRegion::create_heap(&name, layout).unwrap();
        let spec = SlotSpec {
            name: name.clone(),
            mode: SlotMode::Sync,
            fallback: Fallback::Bypass,
            channels_in: 1,
            channels_out: 1,
            params: Vec::new(),
        };
        handle
            .attach(&spec, region.host_end().unwrap(), region.monitor())
            .unwrap();
        workers.push(Some(start_worker(&region)));
        regions.push(region);
        patch.add_slot(&name, 1, 1).unwrap();
        patch
            .connect("input", &name, ChannelMap::Auto, 1.0)
            .unwrap();
        patch
            .connect(&name, "output", ChannelMap::Auto, 1.0)
            .unwrap();
    }
    handle.publish(&patch).unwrap();
    Rig {
        rt,
        handle,
        regions,
        workers,
    }
}

/// Runs this test binary again for `test` only, with the child switch set; returns
/// (exit success, stderr).
fn run_child(test: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn is_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == test)
}

#[sanitize(realtime = "nonblocking")]
fn allocates_in_real_time_context(n: usize) -> usize {
    let v = vec![1u8; n];
    std::hint::black_box(&v).len()
}

#[test]
fn sanitizer_aborts_an_allocation_in_a_nonblocking_function() {
    const NAME: &str = "sanitizer_aborts_an_allocation_in_a_nonblocking_function";
    if is_child(NAME) {
        let n = allocates_in_real_time_context(std::hint::black_box(64));
        println!("not aborted ({n})");
        return;
    }
    watchdog(Duration::from_secs(120));
    let (ok, stderr) = run_child(NAME);
    assert!(!ok, "the child was not aborted:\n{stderr}");
    assert!(
        stderr.contains("RealtimeSanitizer") && stderr.contains("malloc"),
        "no RTSan report of malloc:\n{stderr}"
    );
}

#[test]
fn engine_cycle_aborts_on_a_futex_call_when_the_exemption_is_off() {
    const NAME: &str = "engine_cycle_aborts_on_a_futex_call_when_the_exemption_is_off";
    if is_child(NAME) {
        let mut r = rig(2);
        let input = vec![0.25f32; FRAMES as usize];
        let mut output = vec![0.0f32; FRAMES as usize];
        slotpool_ring::rtsan::strict_futex(true);
        for _ in 0..100 {
            r.rt.process(&input, &mut output);
        }
        println!("not aborted");
        return;
    }
    watchdog(Duration::from_secs(120));
    let (ok, stderr) = run_child(NAME);
    assert!(!ok, "the child was not aborted:\n{stderr}");
    assert!(
        stderr.contains("RealtimeSanitizer") && stderr.contains("`syscall`"),
        "no RTSan report of the futex syscall:\n{stderr}"
    );
    assert!(
        stderr.contains("EngineRt"),
        "the report does not point into the engine's cycle:\n{stderr}"
    );
}

#[test]
fn engine_cycles_pass_the_sanitizer_with_workers_down_and_up() {
    watchdog(Duration::from_secs(120));
    let mut r = rig(3);
    let frames = FRAMES as usize;
    let input: Vec<f32> = (0..frames).map(|i| (i as f32 * 0.1).sin() * 0.5).collect();
    let mut output = vec![0.0f32; frames];
    let period = Duration::from_nanos(r.handle.settings().period_ns());
    let cycle = |r: &mut Rig, output: &mut [f32], n: usize| {
        for _ in 0..n {
            r.rt.process(&input, output);
            std::thread::sleep(period);
        }
    };
    cycle(&mut r, &mut output, 300);
    // Three passthroughs of the input, summed.
    let want: Vec<f32> = input.iter().map(|x| 3.0 * x).collect();
    assert_eq!(output, want, "three passthrough workers, summed");
    // One worker exits; as after a reap, the slot goes down (region reset on the
    // audio thread: the contract is that no worker is attached then) and a
    // replacement comes up.
    let id = r.handle.slot_id("p0:0").unwrap();
    // Ends the loop the way the supervisor ends a process: stop, nudge, exit.
    r.workers[0].take().unwrap().stop();
    cycle(&mut r, &mut output, 5);
    r.handle.send(ToEngine::SlotDown { slot: id }).unwrap();
    cycle(&mut r, &mut output, 15);
    r.workers[0] = Some(start_worker(&r.regions[0]));
    r.handle
        .send(ToEngine::SetParam {
            slot: id,
            id: 0,
            value: 1.0,
        })
        .unwrap();
    r.handle.send(ToEngine::SlotUp { slot: id }).unwrap();
    cycle(&mut r, &mut output, 50);
    assert_eq!(output, want, "the replacement sounds again (faded in)");
    while r.handle.poll().is_some() {}
    let stats = r.handle.stats();
    assert!(stats.cycle_time.count() >= 370, "every cycle was recorded");
    assert!(output.iter().all(|x| x.is_finite()));
}
