//! The audio-thread paths allocate and free nothing: `execute` over a compiled
//! schedule, and `Receiver::pickup` of the handover.
//!
//! A counting global allocator (stats_alloc) counts every allocation, free and
//! reallocation of the process. This binary has no test harness (`harness = false`):
//! `main` runs on the only thread, so nothing else allocates while a region is
//! measured.

use std::alloc::System;

use slotpool_router::{ChannelMap, PatchRouter, Schedule, Step, Workspace, execute, handover};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const FRAMES: usize = 64;

/// Counts what `f` allocates, frees and reallocates.
fn measure(f: impl FnOnce()) -> Stats {
    let region = Region::new(GLOBAL);
    f();
    region.change()
}

fn assert_silent(what: &str, stats: Stats) {
    assert!(
        stats.allocations == 0 && stats.deallocations == 0 && stats.reallocations == 0,
        "{what} touched the allocator: {stats:?}"
    );
    println!("ok: {what} allocates and frees nothing");
}

/// A layered patch with fan-in, fan-out, mono/stereo conversions and a device
/// input, so every kind of mix is exercised.
fn patch() -> Schedule {
    let mut p = PatchRouter::new(2, 2).unwrap();
    for layer in 0..5u32 {
        for i in 0..6u32 {
            let channels = if i % 3 == 0 { 1 } else { 2 };
            p.add_slot(&format!("n{layer}:{i}"), channels, channels)
                .unwrap();
            let name = format!("n{layer}:{i}");
            if layer == 0 {
                p.connect("input", &name, ChannelMap::Auto, 0.5).unwrap();
            } else {
                for j in [i, (i + 1) % 6, (i + 4) % 6] {
                    let from = format!("n{}:{j}", layer - 1);
                    p.connect(&from, &name, ChannelMap::Auto, 0.3).unwrap();
                }
            }
        }
    }
    for i in 0..6 {
        p.connect(&format!("n4:{i}"), "output", ChannelMap::Auto, 0.2)
            .unwrap();
    }
    p.connect("n2:1", "output", ChannelMap::Pairs(vec![(1, 0)]), 1.0)
        .unwrap();
    p.compile()
}

fn execute_allocates_nothing() {
    let schedule = patch();
    assert_eq!(schedule.level_count(), 5);
    let mut workspace = Workspace::for_schedule(&schedule, FRAMES);
    let input: Vec<f32> = (0..2 * FRAMES).map(|i| i as f32 / 100.0).collect();
    let mut output = vec![0.0; 2 * FRAMES];
    let mut runner = |step: &Step, inp: &[f32], out: &mut [f32]| {
        let k = step.index() as f32 + 1.0;
        for (o, i) in out.iter_mut().zip(inp.iter().cycle()) {
            *o = 0.5 * i + 0.01 * k;
        }
    };
    let stats = measure(|| {
        for _ in 0..100 {
            execute(&schedule, &mut workspace, &mut runner, &input, &mut output).unwrap();
        }
    });
    assert!(output.iter().any(|&s| s != 0.0), "the patch produced sound");
    assert_silent("execute (100 cycles)", stats);
}

fn pickup_allocates_and_frees_nothing() {
    let (mut publisher, mut receiver) = handover(Box::new(patch()), 4);
    // Nothing published: a pickup is a no-op.
    assert_silent(
        "pickup with nothing published",
        measure(|| assert!(!receiver.pickup())),
    );
    // Three schedules waiting: the audio side takes the newest and sends the
    // initial one and the two skipped ones back, without freeing any of them.
    for _ in 0..3 {
        publisher.publish(Box::new(patch())).unwrap();
    }
    let stats = measure(|| {
        assert!(receiver.pickup());
        assert_eq!(receiver.current().level_count(), 5);
    });
    assert_silent("pickup of three published schedules", stats);
    // The control side frees them.
    let stats = measure(|| assert_eq!(publisher.collect(), 3));
    assert!(stats.deallocations > 0, "collect frees: {stats:?}");
    println!("ok: collect on the control side frees the returned schedules");
}

fn the_counter_sees_allocations() {
    // Guards the two checks above against a counter that never counts.
    let stats = measure(|| drop(std::hint::black_box(Box::new([0u8; 32]))));
    assert_eq!(
        (stats.allocations, stats.deallocations),
        (1, 1),
        "{stats:?}"
    );
    println!("ok: the counting allocator counts");
}

fn main() {
    the_counter_sees_allocations();
    execute_allocates_nothing();
    pickup_allocates_and_frees_nothing();
}
