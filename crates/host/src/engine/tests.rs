//! The engine with real worker loops (the worker SDK's `Worker`, on threads) over heap
//! regions: fallback in the cycle a worker stops, reset and re-attach with the
//! recorded parameters, quarantine of a scribbling worker. Every test arms a watchdog.

use std::time::Duration;

use slotpool_ring::{Heap, HostRegion, Interrupter, SlotLayout};
use slotpool_router::{ChannelMap, PatchRouter};
use slotpool_worker::WorkerThread;
use slotpool_worker::modules::ModuleSpec;

use super::*;
use crate::config::{Fallback, SlotMode};

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
}

const FRAMES: u32 = 256;
const RATE: u32 = 48_000;

type TestWorker = WorkerThread;

/// Attaches a worker loop running `module` to `region` and waits for RUNNING.
fn start_worker(region: &HostRegion<Heap>, module: &ModuleSpec) -> TestWorker {
    WorkerThread::start(
        region,
        module.build().unwrap(),
        RATE as f32,
        Duration::from_secs(60),
    )
    .unwrap()
}

fn settings() -> EngineSettings {
    EngineSettings {
        sample_rate: RATE,
        block_frames: FRAMES,
        channels_in: 1,
        channels_out: 1,
        // The whole period: generous on a loaded 2-core test box.
        deadline: 1.0,
        pacing: Pacing::RealTime,
        capacity: 8,
        wait_spin: Duration::ZERO,
    }
}

fn layout() -> SlotLayout {
    SlotLayout {
        channels_in: 1,
        channels_out: 1,
        block_frames: FRAMES,
        audio_capacity: 4,
        command_capacity: 64,
        event_capacity: 64,
    }
}

/// One sine slot `osc:0` → output, attached, running, patch published.
/// What [`one_sine`] returns.
type OneSine = (
    EngineRt,
    EngineHandle,
    HostRegion<Heap>,
    TestWorker,
    ModuleSpec,
    Interrupter,
);

fn one_sine(fallback: Fallback) -> OneSine {
    one_sine_with(fallback, settings())
}

fn one_sine_with(fallback: Fallback, settings: EngineSettings) -> OneSine {
    let (rt, mut handle) = engine(settings);
    let region = HostRegion::create_heap("osc:0", layout()).unwrap();
    let module = ModuleSpec::parse("sine", [("freq", "1000"), ("amp", "0.5")]).unwrap();
    let spec = SlotSpec {
        name: "osc:0".into(),
        mode: SlotMode::Sync,
        fallback,
        channels_in: 1,
        channels_out: 1,
        params: module
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect(),
    };
    let end = region.host_end().unwrap();
    let interrupter = end.bell.interrupter();
    handle.attach(&spec, end, region.monitor()).unwrap();
    let worker = start_worker(&region, &module);
    let mut patch = PatchRouter::new(1, 1).unwrap();
    patch.add_slot("osc:0", 1, 1).unwrap();
    patch
        .connect("osc:0", "output", ChannelMap::Auto, 1.0)
        .unwrap();
    handle.publish(&patch).unwrap();
    (rt, handle, region, worker, module, interrupter)
}

fn run(rt: &mut EngineRt, n: usize) -> Vec<Vec<f32>> {
    let input = vec![0.0; FRAMES as usize];
    let period = Duration::from_nanos(settings().period_ns());
    (0..n)
        .map(|_| {
            let mut out = vec![0.0; FRAMES as usize];
            rt.process(&input, &mut out);
            std::thread::sleep(period / 4);
            out
        })
        .collect()
}

fn peak(b: &[f32]) -> f32 {
    b.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Runs cycles until `done(stats)` or a bound; returns the blocks.
fn run_until(
    rt: &mut EngineRt,
    handle: &EngineHandle,
    done: impl Fn(&SlotSnapshot) -> bool,
) -> Vec<Vec<f32>> {
    let mut blocks = Vec::new();
    for _ in 0..2000 {
        blocks.extend(run(rt, 1));
        if done(&handle.stats().slot(0).unwrap().snapshot()) {
            return blocks;
        }
    }
    panic!("condition not reached in 2000 cycles");
}

#[test]
fn a_stopped_worker_falls_back_in_the_same_cycle_and_its_replacement_gets_the_params_back() {
    watchdog(Duration::from_secs(60));
    let (mut rt, mut handle, region, worker, module, _) = one_sine(Fallback::Silence);
    let first = run_until(&mut rt, &handle, |s| s.good_blocks >= 20);
    assert!(
        first.iter().rev().take(5).all(|b| peak(b) > 0.4),
        "the sine plays"
    );

    // A parameter change is recorded by the host (and forwarded).
    handle
        .send(ToEngine::SetParam {
            slot: 0,
            id: 1,
            value: 0.125,
        })
        .unwrap();
    run(&mut rt, 40);

    worker.stop();
    let late_before = handle.stats().slot(0).unwrap().snapshot().late;
    let after = run(&mut rt, 3);
    let snap = handle.stats().slot(0).unwrap().snapshot();
    assert!(
        snap.late > late_before,
        "the stopped worker's blocks are late"
    );
    // The first block after the stop already is the fallback, faded out from the
    // last good block; the next ones are the fallback itself (silence).
    assert!(after[1].iter().all(|&x| x == 0.0) && after[2].iter().all(|&x| x == 0.0));
    assert_eq!(
        *after[0].last().unwrap(),
        0.0,
        "the fade-out ends on the fallback"
    );

    // The supervisor reaped it: the engine resets the region and says so.
    handle.send(ToEngine::SlotDown { slot: 0 }).unwrap();
    run(&mut rt, 1);
    assert!(matches!(
        handle.poll(),
        Some(FromEngine::SlotReset { slot: 0 })
    ));
    assert_eq!(
        handle.stats().slot(0).unwrap().snapshot().link,
        SlotLink::Down
    );

    // A replacement started with the config's parameters (amp 0.5) gets the recorded
    // amp 0.125 back on SlotUp.
    let worker = start_worker(&region, &module);
    handle.send(ToEngine::SlotUp { slot: 0 }).unwrap();
    let good = handle.stats().slot(0).unwrap().snapshot().good_blocks;
    let back = run_until(&mut rt, &handle, |s| s.good_blocks >= good + 60);
    let tail_peak = back
        .iter()
        .rev()
        .take(10)
        .map(|b| peak(b))
        .fold(0.0, f32::max);
    assert!(
        (0.1..0.15).contains(&tail_peak),
        "recorded amp 0.125 re-sent to the replacement, peak {tail_peak}"
    );
    worker.stop();
}

#[test]
fn a_scribbling_worker_is_quarantined_and_replaced_while_the_host_keeps_running() {
    watchdog(Duration::from_secs(60));
    let (mut rt, mut handle, region, worker, module, _) = one_sine(Fallback::Hold);
    run_until(&mut rt, &handle, |s| s.good_blocks >= 10);
    worker.stop();
    // A dead worker's last act: garbage over every word it may write.
    let mut quarantined = false;
    for seed in 1..50u64 {
        region.open_worker().unwrap().scribble(seed);
        run(&mut rt, 2);
        while let Some(msg) = handle.poll() {
            if let FromEngine::Quarantined { slot: 0, .. } = msg {
                quarantined = true;
            }
        }
        if quarantined {
            break;
        }
    }
    assert!(quarantined, "the engine noticed the broken ring");
    let snap = handle.stats().slot(0).unwrap().snapshot();
    assert_eq!(snap.link, SlotLink::Quarantined);
    assert!(snap.ring_faults >= 1);
    // SlotUp on a quarantined slot is refused until the region was reset.
    handle.send(ToEngine::SlotUp { slot: 0 }).unwrap();
    run(&mut rt, 1);
    assert_eq!(
        handle.stats().slot(0).unwrap().snapshot().link,
        SlotLink::Quarantined
    );

    handle.send(ToEngine::SlotDown { slot: 0 }).unwrap();
    run(&mut rt, 1);
    assert!(matches!(
        handle.poll(),
        Some(FromEngine::SlotReset { slot: 0 })
    ));
    let worker = start_worker(&region, &module);
    handle.send(ToEngine::SlotUp { slot: 0 }).unwrap();
    let good = handle.stats().slot(0).unwrap().snapshot().good_blocks;
    let back = run_until(&mut rt, &handle, |s| s.good_blocks >= good + 10);
    assert!(peak(back.last().unwrap()) > 0.4, "the replacement plays");
    worker.stop();
}

#[test]
fn a_new_patch_takes_effect_at_the_next_cycle_without_a_late_block() {
    watchdog(Duration::from_secs(60));
    let (mut rt, mut handle, _region, worker, _, _) = one_sine(Fallback::Silence);
    run_until(&mut rt, &handle, |s| s.good_blocks >= 10);
    let late = handle.stats().slot(0).unwrap().snapshot().late;
    let mut patch = PatchRouter::new(1, 1).unwrap();
    patch.add_slot("osc:0", 1, 1).unwrap();
    patch
        .connect("osc:0", "output", ChannelMap::Auto, 0.0)
        .unwrap();
    handle.publish(&patch).unwrap();
    let blocks = run(&mut rt, 3);
    assert!(
        blocks.iter().all(|b| b.iter().all(|&x| x == 0.0)),
        "gain 0 from the first cycle after publish"
    );
    assert_eq!(handle.stats().slot(0).unwrap().snapshot().late, late);
    worker.stop();
}

#[test]
fn a_worker_reported_gone_falls_back_at_once_without_a_late_block() {
    watchdog(Duration::from_secs(60));
    let (mut rt, mut handle, region, worker, module, interrupter) = one_sine(Fallback::Silence);
    run_until(&mut rt, &handle, |s| s.good_blocks >= 20);

    // The worker ends and the supervisor, having reaped it, interrupts: the engine
    // does not wait for its block (no late block: it knows the worker is gone), goes
    // to the fallback (faded out) and marks the link down before SlotDown arrives.
    worker.stop();
    interrupter.interrupt();
    let late_before = handle.stats().slot(0).unwrap().snapshot().late;
    let after = run(&mut rt, 3);
    let snap = handle.stats().slot(0).unwrap().snapshot();
    assert_eq!(snap.late, late_before, "a gone worker's block is not late");
    assert_eq!(snap.link, SlotLink::Down);
    assert_eq!(*after[0].last().unwrap(), 0.0, "faded out to the fallback");
    assert!(after[1..].iter().all(|b| b.iter().all(|&x| x == 0.0)));

    // SlotDown resets the region (and takes note of the interrupt); a replacement is
    // waited for again, and its blocks are used.
    handle.send(ToEngine::SlotDown { slot: 0 }).unwrap();
    run(&mut rt, 1);
    assert!(matches!(
        handle.poll(),
        Some(FromEngine::SlotReset { slot: 0 })
    ));
    let worker = start_worker(&region, &module);
    handle.send(ToEngine::SlotUp { slot: 0 }).unwrap();
    let good = handle.stats().slot(0).unwrap().snapshot().good_blocks;
    let back = run_until(&mut rt, &handle, |s| s.good_blocks >= good + 20);
    assert!(
        back.iter().rev().take(5).all(|b| peak(b) > 0.4),
        "it plays again"
    );
    assert_eq!(
        handle.stats().slot(0).unwrap().snapshot().link,
        SlotLink::Up
    );
    worker.stop();
}

/// This thread's voluntary context switches (each one a sleep: here a futex wait).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

#[test]
fn the_configured_spin_keeps_the_audio_thread_from_sleeping_on_its_workers() {
    watchdog(Duration::from_secs(60));
    // A spin longer than the deadline: the cycle never sleeps on the worker, however
    // late it is (with `wait_spin` zero it sleeps in nearly every cycle).
    let spinning = EngineSettings {
        wait_spin: Duration::from_millis(50),
        ..settings()
    };
    let (mut rt, handle, _region, worker, _, _) = one_sine_with(Fallback::Silence, spinning);
    run_until(&mut rt, &handle, |s| s.good_blocks >= 10);
    let input = vec![0.0; FRAMES as usize];
    let mut out = vec![0.0; FRAMES as usize];
    let period = Duration::from_nanos(settings().period_ns());
    let good = handle.stats().slot(0).unwrap().snapshot().good_blocks;
    let mut slept = 0;
    for _ in 0..50 {
        let before = voluntary_switches();
        rt.process(&input, &mut out);
        slept += voluntary_switches() - before;
        std::thread::sleep(period / 4);
    }
    assert!(
        slept <= 3,
        "the cycle slept {slept} times in 50 spinning cycles"
    );
    let snap = handle.stats().slot(0).unwrap().snapshot();
    assert!(snap.good_blocks > good, "the worker's blocks were used");
    worker.stop();
}
