//! `slotpool run` end to end, with real worker processes, real signals and the null
//! backend's real-time clock, judged from the `--record` WAV and `ctl status --json`:
//!
//! 2. SIGKILL one slot's worker: the other slots' channels are unbroken, the killed
//!    slot produces again (restart time measured in periods and printed).
//! 3. SIGSTOP a worker: its fallback starts in the same cycle, late blocks are counted
//!    from then, status shows a hang and a restart at about hang_timeout.
//! 4. A scribbling worker is quarantined, killed and restarted; the host keeps going.
//! 5. A reload that moves a route swaps the patch without a late block.
//!
//! Each slot is a sine on its own output channel (`channels = 3`, channel maps), so a
//! channel of the recording is one slot's contribution. The tests run one at a time (a
//! 2-core box) and each arms a watchdog.

mod chaos_common;

mod live_host;

use std::sync::Mutex;
use std::time::Duration;

use chaos_common::watchdog;
use live_host::{Host, bins, signal};
use serde_json::Value;

const RATE: u32 = 48_000;
const FRAMES: usize = 512;
const CHANNELS: usize = 3;
const AMP: f64 = 0.5;
/// RMS of a full sine block of amplitude AMP.
const FULL_RMS: f64 = AMP * std::f64::consts::FRAC_1_SQRT_2;

static SERIAL: Mutex<()> = Mutex::new(());

/// `slotpool run --backend null --record` on `config`, recording CHANNELS channels.
fn start_host(config: &str) -> Host {
    Host::start(config, CHANNELS)
}

/// `[engine]` and one sine slot per `(name, freq, channel)`, each routed to its own
/// output channel; `extra` goes into every program table.
fn config(slots: &[(&str, f64, u32)], extra: &str) -> String {
    // SCHED_FIFO where permitted: other load on the box must not make a cycle late.
    let mut c = format!(
        "[engine]\nsample_rate = {RATE}\nblock_frames = {FRAMES}\nchannels = {CHANNELS}\ndeadline = 0.9\nrealtime = true\n"
    );
    for (name, freq, ch) in slots {
        c.push_str(&format!(
            "[program.{name}]\nmodule = \"sine\"\nparams = {{ freq = {freq}, amp = {AMP} }}\nfallback = \"silence\"\nhang_timeout = \"300ms\"\n{extra}\n\
             [[route]]\nfrom = \"{name}\"\nto = \"output\"\nchannels = [[0, {ch}]]\n"
        ));
    }
    c
}

/// Per block, the RMS of channel `ch`.
fn block_rms(samples: &[f32], ch: usize) -> Vec<f64> {
    live_host::block_rms(samples, FRAMES, CHANNELS, ch)
}

fn full(r: f64) -> bool {
    (r - FULL_RMS).abs() < FULL_RMS * 0.1
}
fn silent(r: f64) -> bool {
    r < FULL_RMS * 0.01
}

/// The first block from which every listed channel carries its full sine.
fn steady_from(rms: &[Vec<f64>]) -> usize {
    (0..rms[0].len())
        .find(|&b| rms.iter().all(|c| full(c[b])))
        .expect("the slots never all produced")
}

fn period_ms() -> f64 {
    FRAMES as f64 * 1e3 / f64::from(RATE)
}

/// The outage of one channel after `from`: the first run of blocks that are not a
/// full sine and contain a silent one (a lone late block is a fade out and a fade in,
/// never silent), as (first block of the run, first full block after it).
fn outage(rms: &[f64], from: usize) -> (usize, usize) {
    let mut b = from;
    while b < rms.len() {
        if full(rms[b]) {
            b += 1;
            continue;
        }
        let back = (b..rms.len())
            .find(|&k| full(rms[k]))
            .expect("the channel never came back");
        if (b..back).any(|k| silent(rms[k])) {
            return (b, back);
        }
        b = back;
    }
    panic!("the channel never dropped out");
}

/// The first run of blocks that are not a full sine at or after `from`, as (first
/// block of the run, first full block after it). A restart faster than two periods has
/// no silent block (a fade out, then a fade in), so the kill is located by time.
fn first_outage(rms: &[f64], from: usize) -> (usize, usize) {
    let down = (from..rms.len())
        .find(|&b| !full(rms[b]))
        .expect("the channel never dropped");
    let back = (down..rms.len())
        .find(|&k| full(rms[k]))
        .expect("the channel never came back");
    (down, back)
}

/// Blocks around an event on another channel: from 20 blocks before `down` to 20
/// after `back`.
fn around(down: usize, back: usize, len: usize) -> std::ops::Range<usize> {
    down.saturating_sub(20)..(back + 20).min(len)
}

/// Blocks of `rms` in `range` that are not a full sine.
fn broken_in(rms: &[f64], range: std::ops::Range<usize>) -> Vec<(usize, f64)> {
    range
        .filter(|&b| !full(rms[b]))
        .map(|b| (b, rms[b]))
        .collect()
}

#[test]
fn sigkill_of_one_worker_leaves_the_others_unbroken_and_it_comes_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let host = start_host(&config(
        &[("a", 300.0, 0), ("b", 500.0, 1), ("c", 700.0, 2)],
        "",
    ));
    for n in ["a:0", "b:0", "c:0"] {
        host.wait_up(n);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let before = host.status().unwrap();
    let late = |s: &Value, n: &str| {
        s["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()["late_blocks"]
            .as_u64()
            .unwrap()
    };
    let victim = host.program("b:0").unwrap();
    let pid = victim["pid"].as_u64().unwrap();
    let killed_at = host.started.elapsed();
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    host.wait_for("b:0", "restarted and up", |p| {
        p["restarts"] == 1 && p["link"] == "up" && p["pid"].as_u64() != Some(pid)
    });
    std::thread::sleep(Duration::from_millis(1000));
    let after = host.status().unwrap();
    let (rec, _) = host.finish();

    let rms: Vec<Vec<f64>> = (0..CHANNELS).map(|c| block_rms(&rec, c)).collect();
    let steady = steady_from(&rms);
    // The recording starts after the host process did: the kill is at or before this
    // block; look from 0.5 s earlier.
    let est = (killed_at.as_secs_f64() * 1e3 / period_ms()) as usize;
    let from = steady.max(est.saturating_sub((500.0 / period_ms()) as usize));
    let (down, back) = first_outage(&rms[1], from);
    // The other slots' contribution is unbroken around the kill (20 blocks each side).
    for ch in [0, 2] {
        assert_eq!(
            broken_in(&rms[ch], around(down, back, rms[ch].len())),
            vec![],
            "channel {ch} broke (block, rms); the kill was at block {down}; late before {} after {}",
            late(&before, if ch == 0 { "a:0" } else { "c:0" }),
            late(&after, if ch == 0 { "a:0" } else { "c:0" }),
        );
    }
    // From the drop: at most one fade-out block, then silence until the fade-in.
    let fades = (down..back).filter(|&b| !silent(rms[1][b])).count();
    assert!(
        fades <= 2,
        "the killed slot's outage has {fades} non-silent blocks"
    );
    let periods = back - down;
    let ms = periods as f64 * period_ms();
    println!(
        "restart after SIGKILL: the killed slot produced again after {periods} periods ({ms:.1} ms at {FRAMES} frames, {RATE} Hz); late blocks of a/c across the kill: {}/{}",
        late(&after, "a:0") - late(&before, "a:0"),
        late(&after, "c:0") - late(&before, "c:0"),
    );
    assert!(
        ms <= 1000.0,
        "the killed slot took {ms:.1} ms to come back (target 100 ms)"
    );
}

#[test]
fn sigstop_falls_back_in_the_same_cycle_and_is_killed_as_a_hang() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let host = start_host(&config(&[("a", 300.0, 0), ("b", 500.0, 1)], ""));
    host.wait_up("a:0");
    let victim = host.wait_up("b:0");
    std::thread::sleep(Duration::from_millis(1000));
    let late_before = host.program("b:0").unwrap()["late_blocks"]
        .as_u64()
        .unwrap();
    let pid = victim["pid"].as_u64().unwrap();
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    let p = host.wait_for("b:0", "restarted after a hang", |p| {
        p["hangs"] == 1 && p["restarts"] == 1 && p["link"] == "up"
    });
    assert_eq!(p["exit_status"]["kind"], "hung", "{p}");
    std::thread::sleep(Duration::from_millis(500));
    let late_after = host.program("b:0").unwrap()["late_blocks"]
        .as_u64()
        .unwrap();
    let (rec, log) = host.finish();
    assert!(log.contains("has not advanced"), "{log}");

    let rms: Vec<Vec<f64>> = (0..2).map(|c| block_rms(&rec, c)).collect();
    let steady = steady_from(&rms);
    let (down, back) = outage(&rms[1], steady);
    assert_eq!(
        broken_in(&rms[0], around(down, back, rms[0].len())),
        vec![],
        "the other slot broke"
    );
    // The fallback starts in the cycle the worker missed: one fade-out block at most,
    // then silence — never a stale or garbage block.
    let fades = (down..back).filter(|&b| !silent(rms[1][b])).count();
    assert!(fades <= 2, "{fades} non-silent blocks in the outage");
    let late = late_after - late_before;
    let outage_ms = (back - down) as f64 * period_ms();
    let late_ms = late as f64 * period_ms();
    println!(
        "SIGSTOP: {late} late blocks ({late_ms:.0} ms) before the hang kill, outage {} periods ({outage_ms:.0} ms), hang_timeout 300 ms",
        back - down
    );
    // Late from the stopped cycle until the kill: about hang_timeout worth of blocks.
    assert!(
        (250.0..1500.0).contains(&late_ms),
        "late for {late_ms:.0} ms, hang_timeout 300 ms"
    );
    assert!(
        (300.0..3000.0).contains(&outage_ms),
        "outage {outage_ms:.0} ms, hang_timeout 300 ms"
    );
}

#[test]
fn a_scribbling_worker_is_quarantined_and_restarted_while_the_host_plays_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let mut c = config(&[("a", 300.0, 0)], "");
    // A custom worker command: the sine, scribbling over its region after 2 s.
    c.push_str(&format!(
        "[program.bad]\ncommand = \"{} --module sine --param freq=500 --param amp={AMP} --fault scribble --fault-after 375\"\nfallback = \"silence\"\nstartsecs = 0\n\
         [[route]]\nfrom = \"bad\"\nto = \"output\"\nchannels = [[0, 1]]\n",
        bins().1.display()
    ));
    let host = start_host(&c);
    host.wait_up("a:0");
    let p = host.wait_for("bad:0", "quarantined and restarted", |p| {
        p["quarantines"].as_u64() >= Some(1)
            && p["restarts"].as_u64() >= Some(1)
            && p["link"] == "up"
    });
    println!("scribbler: {p}");
    // Every restart so far followed a ring break (or, on a loaded box, a hang kill):
    // the quarantine counts also when the worker died of its own garbage before the
    // host read the engine's report.
    let count = |k: &str| p[k].as_u64().unwrap();
    assert_eq!(
        count("quarantines") + count("hangs"),
        count("restarts"),
        "quarantines + hangs vs restarts: {p}"
    );
    // The host's own kill of a quarantined worker is reported as a quarantine, never as
    // a crash by SIGKILL (the worker may still have crashed on its garbage first).
    assert_ne!(
        p["exit_status"],
        serde_json::json!({"kind": "signaled", "signal": libc::SIGKILL}),
        "a quarantine kill reported as a crash: {p}"
    );
    // The host still answers and plays.
    std::thread::sleep(Duration::from_millis(300));
    let a = host.program("a:0").unwrap();
    assert_eq!(a["state"], "RUNNING");
    let (rec, log) = host.finish();
    assert!(log.contains("broke its ring"), "{log}");
    for line in log.lines().filter(|l| l.contains("bad:0")) {
        println!("host: {line}");
    }
    let rms: Vec<Vec<f64>> = (0..2).map(|c| block_rms(&rec, c)).collect();
    let steady = steady_from(&rms);
    // It scribbles after 375 blocks of its own: look there (a restart within two
    // periods leaves no silent block to find it by).
    let (down, back) = first_outage(&rms[1], steady + 370);
    assert_eq!(
        broken_in(&rms[0], around(down, back, rms[0].len())),
        vec![],
        "the other slot broke"
    );
    println!(
        "scribbler quarantined at block {down}, producing again after {} periods",
        back - down
    );
}

#[test]
fn a_quarantine_kill_is_reported_as_a_quarantine_not_as_a_crash() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let mut c = config(&[("a", 300.0, 0)], "");
    // Scribbles after ~1 s, then SIGSTOPs itself: it cannot exit on its own garbage, so
    // the host's kill of the quarantined slot is what ends it, every time.
    c.push_str(&format!(
        "[program.bad]\ncommand = \"{} --module sine --param freq=500 --param amp={AMP} --fault scribble-stop --fault-after 100\"\nfallback = \"silence\"\nstartsecs = 0\n\
         [[route]]\nfrom = \"bad\"\nto = \"output\"\nchannels = [[0, 1]]\n",
        bins().1.display()
    ));
    let host = start_host(&c);
    host.wait_up("a:0");
    let first = host.wait_up("bad:0")["pid"].as_u64().unwrap();
    let p = host.wait_for("bad:0", "quarantined, killed and restarted", |p| {
        p["restarts"].as_u64() >= Some(1) && p["pid"].as_u64() != Some(first) && p["link"] == "up"
    });
    println!("after the quarantine kill: {p}");
    assert_eq!(
        p["exit_status"],
        serde_json::json!({"kind": "quarantined"}),
        "{p}"
    );
    assert_eq!(
        (
            p["quarantines"].as_u64(),
            p["crashes"].as_u64(),
            p["hangs"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{p}"
    );
    let (_, log) = host.finish();
    assert!(log.contains("broke its ring"), "{log}");
    assert!(
        log.contains("exited: bad:0 (quarantined: the worker broke its region's rings, killed)"),
        "the exit is logged as a quarantine:\n{log}"
    );
}

#[test]
fn a_reload_that_moves_a_route_swaps_the_patch_without_a_late_block() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let host = start_host(&config(&[("a", 300.0, 0), ("b", 500.0, 1)], ""));
    host.wait_up("a:0");
    host.wait_up("b:0");
    std::thread::sleep(Duration::from_millis(1000));
    let late = |h: &Host| -> Vec<u64> {
        ["a:0", "b:0"]
            .iter()
            .map(|n| h.program(n).unwrap()["late_blocks"].as_u64().unwrap())
            .collect()
    };
    let before = late(&host);
    // b moves from output channel 1 to channel 2.
    let path = host.dir().join("p.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("channels = [[0, 1]]", "channels = [[0, 2]]");
    std::fs::write(&path, text).unwrap();
    let o = host.ctl(&["reload"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The swap happens at the next cycle boundary; read the counters right after.
    std::thread::sleep(Duration::from_millis(100));
    let after = late(&host);
    let b = host.program("b:0").unwrap();
    assert_eq!(b["restarts"], 0, "a route change must not restart a worker");
    let (rec, _) = host.finish();
    assert_eq!(before, after, "late blocks across the patch swap");

    let rms: Vec<Vec<f64>> = (0..CHANNELS).map(|c| block_rms(&rec, c)).collect();
    let steady = steady_from(&rms[..2]);
    // The swap: channel 1 carries b up to one block, channel 2 from the next — no
    // block where b is on neither (or both).
    let swap = (steady..rms[1].len())
        .find(|&k| !full(rms[1][k]))
        .expect("b never left channel 1");
    assert!(
        silent(rms[1][swap]),
        "channel 1 at the swap: {}",
        rms[1][swap]
    );
    assert!(
        full(rms[2][swap]),
        "channel 2 at the swap: {}",
        rms[2][swap]
    );
    assert!(silent(rms[2][swap - 1]) && full(rms[1][swap - 1]));
    let near = swap.saturating_sub(20)..(swap + 20).min(rms[0].len());
    assert_eq!(broken_in(&rms[0], near.clone()), vec![], "slot a broke");
    assert!(
        near.clone()
            .filter(|&k| k >= swap)
            .all(|k| silent(rms[1][k]))
    );
    assert!(near.filter(|&k| k >= swap).all(|k| full(rms[2][k])));
    println!("reload: patch swapped at block {swap}, late blocks {before:?} -> {after:?}");
}
