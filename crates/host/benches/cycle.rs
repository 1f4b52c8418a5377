//! Host cycle time vs worker count (1, 2, 4, 8, 16), fan-out and chain, at 64 and 256
//! frames, as shares of the block period (p50/p99/p99.9/max from the engine's own
//! cycle-time histogram), plus criterion's time per cycle.
//!
//! Workers here are the worker SDK's real process loop (`Worker::run`) on threads over
//! heap regions: the same rings, futex doorbells and copies as worker processes,
//! without process start-up. The cycles are driven back to back (offline pacing), so
//! this measures the cycle's own cost, not a clock.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use slotpool_host::config::{Fallback, SlotMode};
use slotpool_host::engine::{BlockProcessor, EngineSettings, Pacing, SlotSpec, engine};
use slotpool_ring::{Heap, HostRegion, SlotLayout, WorkerState};
use slotpool_router::{ChannelMap, PatchRouter};
use slotpool_worker::Worker;
use slotpool_worker::fault::FaultPlan;
use slotpool_worker::modules::ModuleSpec;

struct Rig {
    rt: slotpool_host::engine::EngineRt,
    _handle: slotpool_host::engine::EngineHandle,
    _regions: Vec<HostRegion<Heap>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    frames: usize,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn rig(workers: usize, frames: u32, chain: bool) -> Rig {
    let settings = EngineSettings {
        sample_rate: 48_000,
        block_frames: frames,
        channels_in: 2,
        channels_out: 2,
        deadline: 1.0,
        pacing: Pacing::Offline,
        capacity: 32,
    };
    let (rt, mut handle) = engine(settings);
    let mut patch = PatchRouter::new(2, 2).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (mut regions, mut threads) = (Vec::new(), Vec::new());
    for i in 0..workers {
        let name = format!("p{i}:0");
        let layout = SlotLayout {
            channels_in: 2,
            channels_out: 2,
            block_frames: frames,
            audio_capacity: 4,
            command_capacity: 64,
            event_capacity: 64,
        };
        let region = HostRegion::create_heap(&name, layout).unwrap();
        let spec = SlotSpec {
            name: name.clone(),
            mode: SlotMode::Sync,
            fallback: Fallback::Silence,
            channels_in: 2,
            channels_out: 2,
            params: Vec::new(),
        };
        handle
            .attach(&spec, region.host_end().unwrap(), region.monitor())
            .unwrap();
        let wr = region.open_worker().unwrap();
        let flag = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let p = ModuleSpec::new("passthrough").unwrap().build().unwrap();
            let mut w = Worker::new(
                p,
                wr,
                48_000.0,
                FaultPlan::default(),
                Duration::from_secs(5),
            )
            .unwrap();
            w.mark_running();
            let _ = w.run(&flag, Duration::from_secs(600), true);
        }));
        let m = region.monitor();
        while m.worker_state() != WorkerState::Running {
            std::thread::sleep(Duration::from_millis(1));
        }
        regions.push(region);
        patch.add_slot(&name, 2, 2).unwrap();
        let from = if chain && i > 0 {
            format!("p{}:0", i - 1)
        } else {
            "input".into()
        };
        patch.connect(&from, &name, ChannelMap::Auto, 1.0).unwrap();
        if !chain || i + 1 == workers {
            patch
                .connect(&name, "output", ChannelMap::Auto, 1.0)
                .unwrap();
        }
    }
    handle.publish(&patch).unwrap();
    Rig {
        rt,
        _handle: handle,
        _regions: regions,
        stop,
        threads,
        frames: frames as usize,
    }
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    for frames in [64u32, 256] {
        for chain in [false, true] {
            for workers in [1usize, 2, 4, 8, 16] {
                let shape = if chain { "chain" } else { "fanout" };
                let mut r = rig(workers, frames, chain);
                let input = vec![0.25f32; 2 * r.frames];
                let mut output = vec![0.0f32; 2 * r.frames];
                // Warm up, then start the histogram afresh.
                for _ in 0..200 {
                    r.rt.process(&input, &mut output);
                }
                r.rt.stats().cycle_time.clear();
                c.bench_function(&format!("cycle/{frames}f/{shape}/{workers}w"), |b| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            r.rt.process(black_box(&input), black_box(&mut output));
                        }
                        t.elapsed()
                    })
                });
                let st = r.rt.stats();
                let period = st.period_ns as f64;
                let share = |v: Option<u64>| v.unwrap_or(0) as f64 / period * 100.0;
                summary.push(format!(
                    "{frames:>4} frames {shape:<6} {workers:>2} workers: p50 {:6.2}%  p99 {:6.2}%  p99.9 {:6.2}%  max {:6.2}% of the period ({} cycles)",
                    share(st.cycle_time.percentile(0.5)),
                    share(st.cycle_time.percentile(0.99)),
                    share(st.cycle_time.percentile(0.999)),
                    share(Some(st.cycle_time.max())),
                    st.cycle_time.count()
                ));
                assert!(output.iter().all(|x| x.is_finite()));
            }
        }
    }
    println!("\nhost cycle time as a share of the block period (48 kHz):");
    for line in summary {
        println!("  {line}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);
