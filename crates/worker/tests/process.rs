//! The real `slotpool-worker` binary under a minimal host built on the ring crate: start-up
//! contract, processing, commands, heartbeats, exits.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use slotpool_ring::{Command as Cmd, Event, ShortStr, WorkerState};
use slotpool_worker::modules::{self, ModuleSpec};
use slotpool_worker::{Instance, ProcessConfig, error_code};

// Debug builds: any allocation inside a process() call aborts.
#[global_allocator]
static ALLOC: slotpool_worker::GuardAllocator = slotpool_worker::GuardAllocator;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_slotpool-worker"))
}

fn config(layout: &slotpool_ring::SlotLayout) -> ProcessConfig {
    ProcessConfig {
        sample_rate: SAMPLE_RATE as f32,
        block_frames: layout.block_frames as usize,
        channels_in: layout.channels_in as usize,
        channels_out: layout.channels_out as usize,
    }
}

fn args(spec: &ModuleSpec) -> Vec<String> {
    spec.to_cli_args()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn started_by_hand_it_exits_2_with_one_line_saying_how_to_start_it() {
    let _dog = Watchdog::arm("by_hand", PATIENCE * 2);
    let out = Command::new(exe())
        .args(["--module", "sine"])
        .env_remove("SLOTPOOL_REGION_FD")
        .env_remove("SLOTPOOL_SLOT")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("SLOTPOOL_REGION_FD") && stderr.contains("slotpool run"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_problem() {
    let _dog = Watchdog::arm("bad_args", PATIENCE * 2);
    let out = Command::new(exe())
        .args(["--module", "sine", "--param", "freq=-3"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("freq") && stderr.contains("out of range"),
        "{stderr}"
    );
}

#[test]
fn announces_its_parameters_and_pid_then_reports_ready() {
    let _dog = Watchdog::arm("announce", PATIENCE * 3);
    let mut host = TestHost::new("filter:0", stereo(64));
    let w = host.spawn_ready(exe(), &["--module", "biquad", "--param", "freq=250"]);
    assert_eq!(host.monitor.worker_pid(), w.pid() as u32);
    let events = host.drain_events();
    let expected: Vec<Event> = modules::find("biquad")
        .unwrap()
        .params
        .iter()
        .map(|p| Event::Param {
            id: p.id,
            default: p.default,
            name: ShortStr::new(p.name),
        })
        .collect();
    assert_eq!(events, expected);
}

/// A parameter change per module that makes an audible difference.
fn change_for(module: &str) -> Option<(&'static str, f32)> {
    match module {
        "sine" => Some(("freq", 880.0)),
        "noise" => Some(("amp", 0.1)),
        "gain" => Some(("gain_db", -12.0)),
        "biquad" => Some(("freq", 3000.0)),
        "delay" => Some(("time", 0.003)),
        "wavplay" => Some(("amp", 0.5)),
        _ => None,
    }
}

fn initial_params(module: &str, wav: &str) -> Vec<(&'static str, String)> {
    let v = |s: &str| s.to_string();
    match module {
        "sine" => vec![("freq", v("523.25")), ("amp", v("0.8"))],
        "noise" => vec![("seed", v("1234")), ("amp", v("0.3"))],
        "gain" => vec![("gain_db", v("-3.5"))],
        "biquad" => vec![
            ("mode", v("peak")),
            ("freq", v("700")),
            ("q", v("2")),
            ("gain_db", v("9")),
        ],
        "delay" => vec![
            ("time", v("0.0011")),
            ("feedback", v("0.6")),
            ("mix", v("0.4")),
        ],
        "wavplay" => vec![("file", v(wav)), ("loop", v("on"))],
        _ => vec![],
    }
}

fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for f in 0..1000_i32 {
        w.write_sample((f * 7919) % 8_000_000 - 4_000_000).unwrap();
        w.write_sample(-((f * 104_729) % 8_000_000) + 4_000_000)
            .unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn every_module_in_a_worker_is_bit_identical_to_the_library_object() {
    let _dog = Watchdog::arm("bit_identical", PATIENCE * 6);
    let wav = std::env::temp_dir().join(format!("slotpool-worker-test-{}.wav", std::process::id()));
    write_wav(&wav);
    let layout = stereo(64);
    for info in modules::modules() {
        let params = initial_params(info.name, wav.to_str().unwrap());
        let spec = ModuleSpec::parse(info.name, params.iter().map(|(k, v)| (*k, v.as_str())))
            .expect("spec");
        let change = change_for(info.name);

        // In-process reference: the same library object through the same wrapper.
        let mut reference = Instance::new(spec.build().unwrap(), config(&layout));
        let mut expected = Vec::new();
        let mut out = vec![0.0; layout.output_samples()];
        for block in 0..24 {
            if block == 12 {
                match change {
                    Some((name, value)) => {
                        let id = info.param(name).unwrap().id;
                        reference.set_param(id, value).unwrap();
                    }
                    None => reference.reset(),
                }
            }
            reference.process(block + 1, &test_input(&layout, block), &mut out);
            expected.extend_from_slice(&out);
        }

        // The worker process.
        let mut host = TestHost::new(&format!("{}:0", info.name), layout);
        let args = args(&spec);
        let mut worker = host.spawn_ready(exe(), &as_strs(&args));
        let mut got = Vec::new();
        for block in 0..24 {
            if block == 12 {
                let command = match change {
                    Some((name, value)) => Cmd::SetParam {
                        id: info.param(name).unwrap().id,
                        value,
                    },
                    None => Cmd::Reset,
                };
                let (answer, _) = host.send(command);
                assert!(
                    matches!(answer, Event::Ack { .. }),
                    "{}: {answer:?}",
                    info.name
                );
            }
            host.process(&test_input(&layout, block), &mut out)
                .unwrap_or_else(|e| {
                    panic!("{}: {e}; stderr:\n{}", info.name, worker.stderr_text())
                });
            got.extend_from_slice(&out);
        }
        assert!(
            bits(&got) == bits(&expected),
            "{}: worker output differs from the in-process object (first difference at sample {:?})",
            info.name,
            got.iter()
                .zip(&expected)
                .position(|(a, b)| a.to_bits() != b.to_bits())
        );
        assert!(
            got.iter().any(|&x| x != 0.0),
            "{}: produced only silence",
            info.name
        );
        let (answer, _) = host.send(Cmd::Shutdown);
        assert!(matches!(answer, Event::Ack { .. }));
        assert_eq!(worker.exit_status().code(), Some(0), "{}", info.name);
    }
    std::fs::remove_file(wav).ok();
}

#[test]
fn commands_apply_between_blocks_and_each_is_answered_by_seq() {
    let _dog = Watchdog::arm("commands", PATIENCE * 3);
    let layout = stereo(64);
    let mut host = TestHost::new("amp:0", layout);
    let _w = host.spawn_ready(exe(), &["--module", "gain"]);
    host.drain_events();
    let input = vec![0.5_f32; layout.input_samples()];
    let mut out = vec![0.0; layout.output_samples()];

    host.process(&input, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0.5), "unity gain");

    // gain to silence: glides over 20 ms (15 blocks of 64), then stays at zero
    let (a, _) = host.send(Cmd::SetParam {
        id: 0,
        value: -96.0,
    });
    assert!(matches!(a, Event::Ack { .. }), "{a:?}");
    host.process(&input, &mut out).unwrap();
    assert!(
        out[0] < 0.5 && out[63] > 0.0,
        "ramping: {} .. {}",
        out[0],
        out[63]
    );
    for _ in 0..15 {
        host.process(&input, &mut out).unwrap();
    }
    assert!(out.iter().all(|&x| x == 0.0), "silent after the ramp");

    // bypass: one crossfade block, then the input passes
    let (a, _) = host.send(Cmd::Bypass { on: true });
    assert!(matches!(a, Event::Ack { .. }), "{a:?}");
    host.process(&input, &mut out).unwrap();
    assert!(out[0] > 0.0 && out[0] < 0.5 && out[63] == 0.5, "crossfade");
    host.process(&input, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 0.5), "bypassed");

    // ping is acked by its own seq; unknown ids and NaN are refused by seq
    let seq = host.end.commands.push(Cmd::Ping { token: 77 }).unwrap();
    host.end.bell.ring(host.cycle);
    let (a, before) = host.send(Cmd::Reset);
    let acked: Vec<u64> = before
        .into_iter()
        .chain(std::iter::once(a))
        .filter_map(|e| match e {
            Event::Ack { seq } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(acked, vec![seq, seq + 1], "ping then reset, acked in order");
    let (e, _) = host.send(Cmd::SetParam { id: 9, value: 1.0 });
    assert!(
        matches!(e, Event::Error { code, .. } if code == error_code::UNKNOWN_PARAM),
        "{e:?}"
    );
}

/// With `SLOTPOOL_PREWAKE_US`, a worker rung at a steady period wakes before the ring and
/// polls for it: the ring finds it awake and makes no futex wake. Without, it sleeps until
/// it is rung. Generous on purpose (a 5 ms window, rings every 40 ms, and a majority, not
/// all), so a loaded machine's late timers do not fail it; a worker that never pre-wakes
/// is found asleep at every ring and fails it.
#[test]
fn with_prewake_a_steadily_rung_worker_is_awake_when_the_ring_comes() {
    let _dog = Watchdog::arm("prewake", PATIENCE * 4);
    let layout = stereo(64);
    let period = Duration::from_millis(40);
    let (rings, counted_from) = (40u32, 10u32);
    let awake_at_rings = |prewake_us: Option<u32>| -> u32 {
        let mut host = TestHost::new("pw:0", layout);
        let how = Spawn {
            env: prewake_us
                .map(|us| vec![("SLOTPOOL_PREWAKE_US".to_string(), us.to_string())])
                .unwrap_or_default(),
            ..Spawn::default()
        };
        let mut w = host.spawn_with(exe(), &["--module", "passthrough"], &how);
        assert!(w.wait_ready(PATIENCE), "not ready: {}", w.stderr_text());
        let mut out = vec![0.0; layout.output_samples()];
        let t0 = Instant::now();
        let mut awake = 0;
        for k in 0..rings {
            let at = t0 + period * k;
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            host.process(&test_input(&layout, u64::from(k)), &mut out)
                .unwrap();
            if k >= counted_from && !host.last_ring_woke {
                awake += 1;
            }
        }
        awake
    };
    let counted = rings - counted_from;
    let off = awake_at_rings(None);
    let on = awake_at_rings(Some(5_000));
    eprintln!(
        "rings that found the worker awake: {off}/{counted} without pre-wake, {on}/{counted} with"
    );
    assert!(
        on * 2 > counted,
        "with pre-wake only {on} of {counted} rings found it awake"
    );
    assert!(
        off * 4 < counted,
        "without pre-wake {off} of {counted} rings found it awake"
    );
}

#[test]
fn heartbeat_advances_while_idle_and_while_processing() {
    let _dog = Watchdog::arm("heartbeat", PATIENCE * 3);
    let layout = stereo(64);
    let mut host = TestHost::new("beat:0", layout);
    let _w = host.spawn_ready(exe(), &["--module", "sine"]);
    let h0 = host.monitor.worker_heartbeat();
    std::thread::sleep(Duration::from_millis(200));
    let h1 = host.monitor.worker_heartbeat();
    assert!(h1 > h0, "idle heartbeat: {h0} -> {h1}");
    let mut out = vec![0.0; layout.output_samples()];
    for b in 0..5 {
        host.process(&test_input(&layout, b), &mut out).unwrap();
    }
    let h2 = host.monitor.worker_heartbeat();
    assert!(h2 > h1, "heartbeat while processing: {h1} -> {h2}");
    assert!(host.monitor.process_ns() > 0, "process time published");
}

#[test]
fn sigterm_stops_it_cleanly_with_status_0() {
    let _dog = Watchdog::arm("sigterm", PATIENCE * 3);
    let mut host = TestHost::new("term:0", stereo(64));
    let mut w = host.spawn_ready(exe(), &["--module", "noise"]);
    w.signal(Signal::SIGTERM);
    let status = w.exit_status();
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert_eq!(host.monitor.worker_state(), WorkerState::Stopping);
    assert!(w.stderr_text().contains("stopping on signal"));
}

#[test]
fn shutdown_command_is_acked_then_it_exits_0() {
    let _dog = Watchdog::arm("shutdown", PATIENCE * 3);
    let mut host = TestHost::new("shut:0", stereo(64));
    let mut w = host.spawn_ready(exe(), &["--module", "passthrough"]);
    let (a, _) = host.send(Cmd::Shutdown);
    assert!(matches!(a, Event::Ack { .. }), "{a:?}");
    assert_eq!(w.exit_status().code(), Some(0));
    assert_eq!(host.monitor.worker_state(), WorkerState::Stopping);
}

#[test]
fn exits_3_once_the_host_heartbeat_stops_advancing_while_it_still_rings() {
    let _dog = Watchdog::arm("host_timeout", PATIENCE * 3);
    let mut host = TestHost::new("lonely:0", stereo(64));
    let mut w = host.spawn_ready(exe(), &["--module", "sine", "--host-timeout", "500ms"]);
    // While the host beats (every 5 ms), the worker stays well past its timeout.
    assert!(
        w.wait_exit(Duration::from_millis(1500)).is_none(),
        "{}",
        w.stderr_text()
    );
    // Nudges go on, the heartbeat stands still.
    host.beater.set_beating(false);
    let status = w.exit_status();
    assert_eq!(status.code(), Some(3), "{}", describe(status));
    assert!(
        w.stderr_text().contains("host is gone"),
        "{}",
        w.stderr_text()
    );
}

/// A stopped host (SIGSTOP, a frozen cgroup) neither beats nor rings: the worker sleeps
/// in its untimed doorbell wait, judges nothing, and carries on when the host does.
#[test]
fn waits_for_a_host_that_stopped_ringing_and_carries_on_when_it_rings_again() {
    let _dog = Watchdog::arm("stopped_host", PATIENCE * 3);
    let layout = stereo(64);
    let mut host = TestHost::new("paused:0", layout);
    // A host timeout long enough that the resumed host below (rings first, then a
    // beater thread that must get going) is never judged gone on a loaded box.
    let mut w = host.spawn_ready(exe(), &["--module", "sine", "--host-timeout", "1s"]);
    let mut out = vec![0.0; layout.output_samples()];
    host.process(&test_input(&layout, 0), &mut out).unwrap();
    host.beater.stop();
    // Well past the host timeout: alive, asleep (not spinning, not exited).
    assert!(
        w.wait_exit(Duration::from_millis(2500)).is_none(),
        "{}",
        w.stderr_text()
    );
    assert_eq!(process_state(w.pid()), Some('S'));
    // The host resumes: rings come first, the heartbeat after (as on the audio thread).
    for b in 1..20 {
        host.process(&test_input(&layout, b), &mut out).unwrap();
    }
    host.beater = Beater::start(host.monitor.clone());
    assert!(
        w.wait_exit(Duration::from_millis(600)).is_none(),
        "{}",
        w.stderr_text()
    );
    w.signal(Signal::SIGTERM);
    assert_eq!(w.exit_status().code(), Some(0), "{}", w.stderr_text());
}

#[test]
fn exits_3_at_start_when_its_parent_is_not_the_host() {
    let _dog = Watchdog::arm("wrong_parent", PATIENCE * 3);
    let host = TestHost::new("orphan:0", stereo(64));
    let how = Spawn {
        parent_pid: Some(Some(1)),
        ..Spawn::default()
    };
    let mut w = host.spawn_with(exe(), &["--module", "sine"], &how);
    assert_eq!(w.exit_status().code(), Some(3));
    assert!(
        w.stderr_text().contains("already gone"),
        "{}",
        w.stderr_text()
    );
}

#[test]
fn exits_1_when_the_slot_name_does_not_match_the_region() {
    let _dog = Watchdog::arm("wrong_slot", PATIENCE * 3);
    let host = TestHost::new("right:0", stereo(64));
    let mut p = host.prepare(exe(), &["--module", "sine"], &Spawn::default());
    p.cmd.env("SLOTPOOL_SLOT", "wrong:0");
    let mut w = p.spawn();
    assert_eq!(w.exit_status().code(), Some(1));
    let text = w.stderr_text();
    assert!(
        text.contains("right:0") && text.contains("wrong:0"),
        "{text}"
    );
}

#[test]
fn dies_within_200ms_of_its_host_being_sigkilled() {
    let _dog = Watchdog::arm("host_sigkill", PATIENCE * 3);
    let host = TestHost::new("orphaned:0", stereo(64));
    // The intermediate "host" is a shell that starts the worker and waits; this test
    // process keeps the region and keeps beating its heartbeat, so only the death of the
    // worker's parent can stop the worker (the heartbeat timeout is a minute).
    let script = r#"SLOTPOOL_PARENT_PID=$$ "$0" "$@" & wait"#;
    let how = Spawn {
        parent_pid: None,
        ..Spawn::default()
    };
    let args = [
        "-c",
        script,
        exe().to_str().unwrap(),
        "--module",
        "sine",
        "--host-timeout",
        "60s",
    ];
    let mut intermediate = host.spawn_with(Path::new("/bin/sh"), &args, &how);
    assert!(
        intermediate.wait_ready(PATIENCE),
        "{}",
        intermediate.stderr_text()
    );
    let worker_pid = host.monitor.worker_pid() as i32;
    assert_ne!(worker_pid, intermediate.pid());
    assert!(!process_dead(worker_pid));

    intermediate
        .child
        .kill()
        .expect("SIGKILL the intermediate host");
    let killed_at = Instant::now();
    while !process_dead(worker_pid) && killed_at.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = killed_at.elapsed();
    intermediate.child.wait().unwrap();
    assert!(
        process_dead(worker_pid),
        "worker {worker_pid} outlived its host"
    );
    assert!(
        took < Duration::from_millis(200),
        "worker took {took:?} to die after its host"
    );
}
