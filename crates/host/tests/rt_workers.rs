//! Real-time slot workers (`[engine] worker_realtime`) with the real `slotpool run
//! --backend null` binary, real worker processes and real signals:
//!
//! 1. Slot workers (and hot standbys) run SCHED_FIFO one below the audio thread, what
//!    they fork runs at normal priority (SCHED_RESET_ON_FORK), plain programs are
//!    untouched.
//! 2. A slot worker spinning at real-time priority is stopped by RLIMIT_RTTIME
//!    (SIGXCPU), restarted, and the engine cycles on its fallback meanwhile; the
//!    healthy slot next to it keeps its blocks.
//! 3. With a hang_timeout shorter than RLIMIT_RTTIME, the hang watchdog (on the
//!    supervisor thread, at normal priority) gets there first: the spinner does not
//!    starve the host on a 2-core box.
//! 4. A real-time worker that ignores SIGXCPU dies at the hard limit (SIGKILL).
//! 5. Where SCHED_FIFO is refused, the worker starts at normal priority anyway and
//!    status and the log (once) say so.
//!
//! 1–4 need the permission to use SCHED_FIFO (root with CAP_SYS_NICE, or an `rtprio`
//! limit of at least 69); without it they check the refusal instead, and say so.

mod chaos_common;

mod live_host;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chaos_common::{children_of, environment, processes, watchdog};
use live_host::{Host, worker_bin};
use serde_json::Value;

/// The tests load both cores (a spinner takes one); they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The priority the workers get below `realtime = true` (70).
const WORKER_PRIO: u32 = 69;

/// Whether this process may use SCHED_FIFO at `prio`: CAP_SYS_NICE in the effective
/// set, or an RLIMIT_RTPRIO of at least `prio`.
fn rt_permitted(prio: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let sys_nice = 1u64 << 23;
    let rtprio = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_RTPRIO)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    cap_eff & sys_nice != 0 || rtprio >= u64::from(prio)
}

/// (policy, rt_priority) of `pid` from /proc/PID/stat (fields 41 and 40); policy 0 is
/// SCHED_OTHER, 1 SCHED_FIFO.
fn sched_of(pid: i64) -> Option<(u32, u32)> {
    let (_, f) = processes()
        .into_iter()
        .find(|(p, _)| i64::from(*p) == pid)?;
    // `f` starts at field 3 (state).
    Some((f.get(38)?.parse().ok()?, f.get(37)?.parse().ok()?))
}

fn running(p: &Value) -> bool {
    p["state"] == "RUNNING" && p["link"] == "up"
}

fn engine(realtime: &str) -> String {
    format!("[engine]\nsample_rate = 48000\nblock_frames = 128\nchannels = 2\n{realtime}\n")
}

/// A slot running `command`, routed to output channel `ch`, with extra keys.
fn slot(name: &str, command: &str, ch: u32, extra: &str) -> String {
    format!(
        "[program.{name}]\ncommand = \"{command}\"\nfallback = \"silence\"\n{extra}\n\
         [[route]]\nfrom = \"{name}\"\nto = \"output\"\nchannels = [[0, {ch}]]\n"
    )
}

fn sine(freq: u32, faults: &str) -> String {
    format!(
        "{} --module sine --param freq={freq} --param amp=0.1 {faults}",
        worker_bin().display()
    )
}

#[test]
fn slot_workers_run_fifo_below_the_audio_thread_and_what_they_fork_does_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(120));
    let body = engine("realtime = true")
        + &slot("a", &sine(220, "--fault fork-child"), 0, "")
        + &slot("b", &sine(330, ""), 1, "standby = true\n")
        + "[program.helper]\ncommand = \"sleep 1000\"\n";
    let host = Host::start_wrapped(&body, &[]);
    let a = host.wait_for("a:0", "RUNNING", running);
    let helper = host.wait_for("helper:0", "RUNNING", |p| p["state"] == "RUNNING");
    let pid = a["pid"].as_i64().unwrap();
    let helper_pid = helper["pid"].as_i64().unwrap();
    let rt = a["realtime"].as_str().unwrap_or_default().to_string();
    println!("a:0 realtime: {rt}; helper: {:?}", helper["realtime"]);
    // A plain program is never touched: normal scheduling, no realtime field.
    assert_eq!(sched_of(helper_pid), Some((0, 0)));
    assert!(helper["realtime"].is_null(), "{helper}");
    if !rt_permitted(WORKER_PRIO) {
        assert!(rt.starts_with("off"), "{rt}");
        assert_eq!(sched_of(pid).map(|s| s.0), Some(0));
        println!("SCHED_FIFO is not permitted here: checked the refusal only");
        return;
    }
    assert_eq!(rt, "SCHED_FIFO 69, RLIMIT_RTTIME 200/400 ms");
    assert_eq!(sched_of(pid), Some((1, WORKER_PRIO)));
    assert!(host.log().contains(&format!(
        "spawned: 'a:0' with pid {pid}, SCHED_FIFO {WORKER_PRIO}"
    )));
    // The fork-child fault's grandchild: forked by a SCHED_RESET_ON_FORK worker, it
    // starts at normal priority.
    let until = Instant::now() + Duration::from_secs(30);
    let grandchild = loop {
        if let Some((g, _)) = children_of(pid as i32).into_iter().next() {
            break g;
        }
        assert!(
            Instant::now() < until,
            "the worker never forked its grandchild"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(sched_of(i64::from(grandchild)), Some((0, 0)));
    // A hot standby is a slot worker too: parked at SCHED_FIFO, and when it takes over
    // a killed worker, status reports its scheduling.
    let b = host.wait_for("b:0", "up with a standby", |p| {
        running(p)
            && p["standby_pid"]
                .as_i64()
                .is_some_and(|s| Some(s) != p["pid"].as_i64())
    });
    let (b_pid, standby) = (
        b["pid"].as_i64().unwrap(),
        b["standby_pid"].as_i64().unwrap(),
    );
    assert_eq!(sched_of(standby), Some((1, WORKER_PRIO)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let b = host.wait_for("b:0", "taken over by its standby", |p| {
        running(p) && p["pid"].as_i64() == Some(standby)
    });
    assert_eq!(
        b["realtime"], "SCHED_FIFO 69, RLIMIT_RTTIME 200/400 ms",
        "{b}"
    );
    assert!(host.log().contains(&format!(
        "spawned: 'b:0' with pid {standby} (the standby takes over), SCHED_FIFO {WORKER_PRIO}"
    )));
}

#[test]
fn a_spinning_rt_worker_is_stopped_by_rlimit_rttime_and_restarted_while_the_engine_cycles() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    // The spinner busy-loops after 400 blocks (about 1 s); a hang_timeout far beyond
    // RLIMIT_RTTIME leaves the stop to the kernel.
    let body = engine("realtime = true")
        + &slot("ok", &sine(220, ""), 0, "")
        + &slot(
            "spin",
            &sine(330, "--fault hang --fault-after 400"),
            1,
            "hang_timeout = \"30s\"\nstartsecs = 0\n",
        );
    let host = Host::start_wrapped(&body, &[]);
    let ok = host.wait_for("ok:0", "RUNNING", running);
    let spin = host.wait_for("spin:0", "RUNNING", running);
    let first = spin["pid"].as_i64().unwrap();
    if !rt_permitted(WORKER_PRIO) {
        assert!(
            spin["realtime"].as_str().unwrap_or("").starts_with("off"),
            "{spin}"
        );
        println!("SCHED_FIFO is not permitted here: nothing spins at real-time priority");
        return;
    }
    assert_eq!(sched_of(first), Some((1, WORKER_PRIO)));
    let before_ok = ok["late_blocks"].as_u64().unwrap();
    let before_fallback = spin["fallback_blocks"].as_u64().unwrap();
    // The kernel stops it: SIGXCPU at the soft limit; the host neither hung-killed it
    // nor had to.
    host.wait_log("exited: spin:0 (terminated by SIGXCPU");
    assert!(
        host.log()
            .contains("RLIMIT_RTTIME: it ran 200 ms at real-time priority without blocking"),
        "{}",
        host.log()
    );
    let back = host.wait_for("spin:0", "restarted and RUNNING", |p| {
        running(p) && p["pid"].as_i64() != Some(first) && p["restarts"].as_u64() >= Some(1)
    });
    let second = back["pid"].as_i64().unwrap();
    assert_eq!(back["hangs"], 0, "the watchdog was not needed: {back}");
    assert_eq!(back["crashes"].as_u64(), Some(1), "{back}");
    assert_eq!(
        sched_of(second).map(|s| s.0),
        Some(1),
        "restarted real-time"
    );
    // While it spun and came back, the engine kept cycling: every cycle of the outage
    // played the spinner's fallback (200 ms of spin alone is 75 cycles of 2.7 ms).
    let fallback = back["fallback_blocks"].as_u64().unwrap() - before_fallback;
    let ok_after = host.program("ok:0").unwrap();
    let ok_late = ok_after["late_blocks"].as_u64().unwrap() - before_ok;
    let xruns = host.status().unwrap()["host"]["device_xruns"].clone();
    println!(
        "spinner: SIGXCPU after 200 ms of CPU, {fallback} fallback blocks until its \
         replacement ran; healthy slot: {ok_late} late blocks meanwhile, restarts {}; \
         host device_xruns {xruns}",
        ok_after["restarts"]
    );
    assert!(
        fallback >= 30,
        "the engine stalled: {fallback} fallback blocks"
    );
    assert_eq!(ok_after["restarts"], 0, "{ok_after}");
    assert!(running(&ok_after), "{ok_after}");
    // The healthy slot was not starved: the spinner took one core, it had the other.
    assert!(
        ok_late * 5 < fallback,
        "healthy slot late for {ok_late} blocks against the spinner's {fallback}"
    );
}

#[test]
fn a_spinning_rt_worker_is_killed_by_the_hang_watchdog_when_hang_timeout_is_shorter() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(180));
    let body = engine("realtime = true")
        + &slot("ok", &sine(220, ""), 0, "")
        + &slot(
            "spin",
            &sine(330, "--fault hang --fault-after 400"),
            1,
            "hang_timeout = \"100ms\"\nstartsecs = 0\n",
        );
    let host = Host::start_wrapped(&body, &[]);
    host.wait_for("ok:0", "RUNNING", running);
    let spin = host.wait_for("spin:0", "RUNNING", running);
    let first = spin["pid"].as_i64().unwrap();
    let permitted = rt_permitted(WORKER_PRIO);
    if permitted {
        assert_eq!(sched_of(first), Some((1, WORKER_PRIO)));
    }
    // The supervisor thread (normal priority) judges the heartbeat while the worker
    // spins at SCHED_FIFO 69 on one of the two cores, and kills it before the kernel's
    // 200 ms.
    let back = host.wait_for("spin:0", "killed as hung and restarted", |p| {
        running(p) && p["pid"].as_i64() != Some(first) && p["hangs"].as_u64() >= Some(1)
    });
    let log = host.log();
    assert!(
        !log.contains("terminated by SIGXCPU"),
        "RLIMIT_RTTIME came first:\n{log}"
    );
    println!(
        "spinner (real-time: {permitted}) killed as hung after 100 ms: hangs {}, restarts {}",
        back["hangs"], back["restarts"]
    );
    let ok = host.program("ok:0").unwrap();
    assert_eq!(ok["restarts"], 0, "{ok}");
}

#[test]
fn an_rt_worker_that_ignores_sigxcpu_is_killed_at_the_hard_rttime_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(120));
    if !rt_permitted(WORKER_PRIO) {
        println!("SCHED_FIFO is not permitted here: nothing spins at real-time priority");
        return;
    }
    // A custom slot worker (routed, so a slot) that ignores SIGXCPU and spins from
    // the start, never writing its region; its heartbeat may stand still for a minute.
    let body = engine("realtime = true")
        + &slot(
            "spin",
            "/bin/sh -c 'trap \\\"\\\" XCPU; while :; do :; done'",
            0,
            "hang_timeout = \"60s\"\nstartsecs = 0\nautorestart = false\n",
        );
    let host = Host::start_wrapped(&body, &[]);
    host.wait_log("exited: spin:0 (terminated by SIGKILL");
    let log = host.log();
    assert!(
        log.contains("RLIMIT_RTTIME's hard limit of 400 ms"),
        "{log}"
    );
    let spin = host.program("spin:0").unwrap();
    assert_eq!(spin["hangs"], 0, "{spin}");
    assert!(!log.contains("SIGXCPU"), "{log}");
    println!("spinner ignoring SIGXCPU: {}", spin["exit_status"]);
}

#[test]
fn a_refused_rt_request_starts_the_worker_at_normal_priority_and_says_so_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(120));
    // Take the permission away: without CAP_SYS_NICE and with an rtprio limit of 0,
    // sched_setscheduler answers EPERM (root keeps no capability it lacks in both its
    // inheritable and bounding sets across the exec).
    let root = nix::unistd::geteuid().is_root();
    let wrapper: &[&str] = if root {
        &[
            "setpriv",
            "--inh-caps=-sys_nice",
            "--bounding-set=-sys_nice",
            "prlimit",
            "--rtprio=0:0",
        ]
    } else {
        &["prlimit", "--rtprio=0:0"]
    };
    let body = engine("worker_realtime = 10") + &slot("a", &sine(220, ""), 0, "");
    let host = Host::start_wrapped(&body, wrapper);
    let a = host.wait_for("a:0", "RUNNING", running);
    let first = a["pid"].as_i64().unwrap();
    let rt = a["realtime"].as_str().unwrap_or_default();
    assert!(
        rt.starts_with("off: SCHED_FIFO 10 refused: Operation not permitted"),
        "{rt}"
    );
    assert!(
        rt.contains("rtprio") && rt.contains("normal priority"),
        "{rt}"
    );
    assert!(
        a["description"]
            .as_str()
            .unwrap_or_default()
            .contains("normal priority: SCHED_FIFO 10 refused (EPERM)"),
        "{a}"
    );
    assert_eq!(sched_of(first).map(|s| s.0), Some(0));
    // The text table says it too.
    let table = host.ctl(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("SCHED_FIFO 10 refused"), "{table}");
    // A restart: same refusal, not logged again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    host.wait_for("a:0", "restarted", |p| {
        running(p) && p["pid"].as_i64() != Some(first)
    });
    let warnings = host
        .log()
        .lines()
        .filter(|l| l.contains("a:0: real-time scheduling off: SCHED_FIFO 10 refused"))
        .count();
    assert_eq!(warnings, 1, "{}", host.log());
    println!("refused: {rt}");
}

#[test]
fn a_slot_can_set_its_own_worker_scheduling_over_the_engines() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(120));
    // The engine's default (one below the audio thread) for a; b opts out; c asks for
    // a priority of its own below the audio thread's 70.
    let body = engine("realtime = 70")
        + &slot("a", &sine(220, ""), 0, "")
        + &slot("b", &sine(330, ""), 1, "realtime = false\n")
        + &slot("c", &sine(440, ""), 0, "realtime = 40\n");
    let host = Host::start_wrapped(&body, &[]);
    let [a, b, c] = ["a:0", "b:0", "c:0"].map(|n| host.wait_for(n, "RUNNING", running));
    let pid = |p: &Value| p["pid"].as_i64().unwrap();
    let rt = |p: &Value| p["realtime"].as_str().unwrap_or_default().to_string();
    println!("a: {}; b: {}; c: {}", rt(&a), rt(&b), rt(&c));
    // Opting out works whether or not this box permits SCHED_FIFO.
    assert_eq!(sched_of(pid(&b)), Some((0, 0)));
    assert!(rt(&b).starts_with("off (realtime = false"), "{b}");
    if !rt_permitted(WORKER_PRIO) {
        println!("SCHED_FIFO is not permitted here: checked the opt-out only");
        return;
    }
    assert_eq!(sched_of(pid(&a)), Some((1, WORKER_PRIO)));
    assert_eq!(sched_of(pid(&c)), Some((1, 40)));
    assert_eq!(rt(&c), "SCHED_FIFO 40, RLIMIT_RTTIME 200/400 ms");
}

/// `prewake_us` reaches the slot's worker (as `SLOTPOOL_PREWAKE_US`; the engine's
/// `worker_prewake_us` for slots without their own), and status reports it with the
/// engine's rings: how many there were and how many had to wake a sleeping worker. The
/// worker's side of pre-wake (awake when the ring comes) is checked in the worker
/// crate's `process` tests, where the ring times are the test's own.
#[test]
fn a_slots_prewake_reaches_its_worker_and_status_counts_the_rings_that_woke_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _dog = watchdog(Duration::from_secs(120));
    let body = engine("realtime = 70\nworker_prewake_us = 150")
        + &slot("a", &sine(220, ""), 0, "")
        + &slot("b", &sine(330, ""), 1, "prewake_us = 0\n");
    let host = Host::start_wrapped(&body, &[]);
    let [a, b] = ["a:0", "b:0"].map(|n| host.wait_for(n, "RUNNING", running));
    let env_of = |p: &Value| {
        environment(p["pid"].as_i64().unwrap() as i32)
            .into_iter()
            .find(|v| v.starts_with("SLOTPOOL_PREWAKE_US="))
    };
    assert_eq!(env_of(&a).as_deref(), Some("SLOTPOOL_PREWAKE_US=150"));
    assert_eq!(env_of(&b), None, "prewake_us = 0: not handed over");
    // Let the engine ring a while (2.7 ms periods), then read the counters.
    std::thread::sleep(Duration::from_millis(500));
    let status = host.status_now();
    for (name, want) in [("a:0", 150), ("b:0", 0)] {
        let p = live_host::find(&status, name).unwrap();
        let (rings, woke) = (
            p["rings"].as_u64().unwrap(),
            p["rings_woke"].as_u64().unwrap(),
        );
        println!(
            "{name}: prewake_us {}, rings {rings}, rings_woke {woke}",
            p["prewake_us"]
        );
        assert_eq!(p["prewake_us"], want, "{p}");
        assert!(rings > 50, "{name}: only {rings} rings in 0.5 s");
        assert!(woke <= rings, "{name}: {woke} wakes of {rings} rings");
        // On a real-time clock the rings are steady enough to predict: most find a
        // pre-waking worker awake, and a worker without pre-wake asleep.
        if rt_permitted(WORKER_PRIO) {
            match want {
                0 => assert!(
                    woke * 2 > rings,
                    "{name}: only {woke} of {rings} rings woke it"
                ),
                _ => assert!(woke * 2 < rings, "{name}: {woke} of {rings} rings woke it"),
            }
        }
    }
}
