//! Host cycle time vs worker count (1, 2, 4, 8, 16), fan-out and chain, at 64 and 256
//! frames, as shares of the block period (p50/p99/p99.9/max from the engine's own
//! cycle-time histogram), plus criterion's time per cycle.
//!
//! Workers here are the worker SDK's real process loop (`Worker::run`) on threads over
//! heap regions: the same rings, futex doorbells and copies as worker processes,
//! without process start-up. The cycles are driven back to back (offline pacing), so
//! this measures the cycle's own cost, not a clock.
//!
//! With `SLOTPOOL_BENCH_OUT=DIR`, after criterion and the summary line of a
//! configuration, one more pass of `SLOTPOOL_BENCH_CYCLES` (default 20,000) cycles
//! times each `process` call on its own (`Instant` around the call) and writes the
//! raw values to `DIR/cycle_<frames>f_<shape>_<workers>w.txt` for the plots
//! (`slotpool-report`, docs/PERFORMANCE-engine.md): `#` header lines (configuration,
//! period, date, load average), then one cycle time in ns per line. The pass runs
//! after the figures above are taken, so it changes neither of them.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use slotpool_host::config::{Fallback, SlotMode};
use slotpool_host::engine::{BlockProcessor, EngineSettings, Pacing, SlotSpec, engine};
use slotpool_ring::{Heap, HostRegion, SlotLayout};
use slotpool_router::{ChannelMap, PatchRouter};
use slotpool_worker::WorkerThread;
use slotpool_worker::modules::ModuleSpec;

struct Rig {
    rt: slotpool_host::engine::EngineRt,
    _handle: slotpool_host::engine::EngineHandle,
    _regions: Vec<HostRegion<Heap>>,
    /// Stopped and joined when the rig is dropped.
    _workers: Vec<WorkerThread>,
    frames: usize,
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
        wait_spin: Duration::ZERO,
    };
    let (rt, mut handle) = engine(settings);
    let mut patch = PatchRouter::new(2, 2).unwrap();
    let (mut regions, mut workers_v) = (Vec::new(), Vec::new());
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
        let p = ModuleSpec::new("passthrough").unwrap().build().unwrap();
        workers_v
            .push(WorkerThread::start(&region, p, 48_000.0, Duration::from_secs(600)).unwrap());
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
        _workers: workers_v,
        frames: frames as usize,
    }
}

/// `/proc/loadavg`'s three load averages (1, 5, 15 min), as text.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Where raw samples go (`$SLOTPOOL_BENCH_OUT`), if anywhere.
fn raw_out() -> Option<(PathBuf, usize)> {
    let dir = PathBuf::from(std::env::var_os("SLOTPOOL_BENCH_OUT")?);
    std::fs::create_dir_all(&dir).expect("create $SLOTPOOL_BENCH_OUT");
    let cycles = std::env::var("SLOTPOOL_BENCH_CYCLES")
        .ok()
        .map(|v| v.parse().expect("SLOTPOOL_BENCH_CYCLES: a number"))
        .unwrap_or(20_000);
    Some((dir, cycles))
}

/// The extra pass: `cycles` cycles, each `process` call timed on its own; writes the
/// raw ns values with a header. The engine's own histogram is cleared first and its
/// p50/p99 over the same cycles go into the header, to check the two timings agree.
fn write_raw(dir: &Path, cycles: usize, r: &mut Rig, shape: &str, workers: usize) {
    let input = vec![0.25f32; 2 * r.frames];
    let mut output = vec![0.0f32; 2 * r.frames];
    let mut ns = Vec::with_capacity(cycles);
    r.rt.stats().cycle_time.clear();
    for _ in 0..cycles {
        let t = Instant::now();
        r.rt.process(black_box(&input), black_box(&mut output));
        ns.push(t.elapsed().as_nanos() as u64);
    }
    let st = r.rt.stats();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut text = String::new();
    let _ = writeln!(text, "# bench cycle");
    let _ = writeln!(text, "# frames {}", r.frames);
    let _ = writeln!(text, "# shape {shape}");
    let _ = writeln!(text, "# workers {workers}");
    let _ = writeln!(text, "# sample_rate 48000");
    let _ = writeln!(text, "# period_ns {}", st.period_ns);
    let _ = writeln!(text, "# unix_time {unix}");
    let _ = writeln!(text, "# loadavg {}", loadavg());
    let _ = writeln!(
        text,
        "# engine_histogram_p50_ns {} p99_ns {}",
        st.cycle_time.percentile(0.5).unwrap_or(0),
        st.cycle_time.percentile(0.99).unwrap_or(0)
    );
    for v in &ns {
        let _ = writeln!(text, "{v}");
    }
    let path = dir.join(format!("cycle_{}f_{shape}_{workers}w.txt", r.frames));
    std::fs::write(&path, text).expect("write raw cycle samples");
    assert!(output.iter().all(|x| x.is_finite()));
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    let raw = raw_out();
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
                if let Some((dir, cycles)) = &raw {
                    write_raw(dir, *cycles, &mut r, shape, workers);
                }
            }
        }
    }
    if let Some((dir, _)) = &raw {
        println!("\nraw cycle times written to {}", dir.display());
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
