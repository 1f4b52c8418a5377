//! Supervisor-level chaos with the real `slotpool` binary, real processes and real
//! signals: restart storm (crash-loop breaker, global spawn-rate cap), host kill loop
//! (no orphans, no stale shared memory, clean next start) and a leak run (fd count
//! exact, RSS growth bounded, no zombies).
//!
//! Short by default (CI); `SLOTPOOL_SOAK=1` runs the long version (`make soak`). Every
//! test prints its figures (`cargo test -- --nocapture`) and, with
//! `SLOTPOOL_CHAOS_OUT=DIR`, writes them to DIR for docs/RELIABILITY.md.

mod chaos_common;

use std::fs;
use std::time::{Duration, Instant};

use chaos_common::*;
use nix::sys::signal::Signal;

#[test]
fn crash_looping_program_reaches_fatal_through_the_breaker() {
    let _dog = watchdog(Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    // startsecs = 0: every spawn is RUNNING at once, so every exit is a crash after
    // RUNNING: supervisord's startretries never applies, only the breaker does.
    write_config(
        dir.path(),
        "",
        "[program.c]\ncommand = \"sh -c 'sleep 0.1; exit 1'\"\nstartsecs = 0\n\
         crashloop_exits = 5\ncrashloop_window = 60\n",
    );
    let mut host = Host::start_in(dir.path());
    let fatal = host.wait_for(
        "gave up: c:0 entered FATAL state",
        1,
        Duration::from_secs(60),
    );
    assert!(
        fatal[0]
            .1
            .contains("crash loop: 5 unexpected exits within 60 s"),
        "{fatal:?}"
    );
    let spawns = host.lines_with("spawned: 'c:0'");
    assert_eq!(spawns.len(), 5, "{spawns:?}");
    let took = span(spawns[0].0, fatal[0].0);
    println!(
        "breaker: {} spawns, FATAL {took:.2} s after the first spawn",
        spawns.len()
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(host.lines_with("spawned: 'c:0'").len(), 5, "FATAL is final");
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn global_spawn_rate_cap_holds_across_many_crash_looping_programs() {
    let secs = pick(4.0, 30.0);
    let _dog = watchdog(Duration::from_secs(60 + 2 * secs as u64));
    let (rate, burst, procs) = (20.0, 10.0, 24);
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("spawn_rate = {rate}\nspawn_burst = {burst}\n"),
        &format!(
            "[program.storm]\ncommand = \"sh -c 'exit 1'\"\nnumprocs = {procs}\nstartsecs = 0\n\
             crashloop_exits = 1000000\n"
        ),
    );
    let mut host = Host::start_in(dir.path());
    host.wait_for("spawned: 'storm:", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs_f64(secs));
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
    let t: Vec<f64> = host
        .lines_with("spawned: 'storm:")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let elapsed = span(t[0], *t.last().unwrap());
    // Token bucket: in any window of length w there are at most burst + rate·w spawns
    // (+1 for the token refilled at the window's edge).
    let mut worst_1s = 0usize;
    for (i, &a) in t.iter().enumerate() {
        let n = t[i..].iter().take_while(|&&b| span(a, b) < 1.0).count();
        worst_1s = worst_1s.max(n);
    }
    let mean = (t.len() as f64 - burst) / elapsed.max(1e-3);
    println!(
        "spawn cap: {} programs crash-looping, {} spawns in {elapsed:.2} s, worst 1 s window {worst_1s} \
         (cap {rate}/s, burst {burst}), sustained {mean:.1}/s",
        procs,
        t.len()
    );
    record(
        "spawn_cap.txt",
        &[format!(
            "programs {procs} spawns {} elapsed_s {elapsed:.2} worst_1s {worst_1s} rate {rate} burst {burst} sustained {mean:.1}",
            t.len()
        )],
    );
    assert!(
        worst_1s as f64 <= burst + rate + 1.0,
        "{worst_1s} spawns within 1 s, cap {rate}/s + burst {burst}"
    );
    assert!(
        (t.len() as f64) <= burst + rate * elapsed + 1.0,
        "{} spawns in {elapsed:.2} s",
        t.len()
    );
    // The storm really saturated the cap (24 programs want far more than 20/s).
    assert!(
        mean >= rate * 0.5,
        "only {mean:.1} spawns/s: the storm did not reach the cap"
    );
}

#[test]
fn host_killed_at_random_moments_leaves_no_orphan_no_shm_and_restarts_clean() {
    let rounds = pick(20, 100);
    let _dog = watchdog(Duration::from_secs(60 + rounds * 6));
    let mut rng = Rng::from_env("host_kill_loop");
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("CHAOS_MARK={}-{}", std::process::id(), rng.next());
    let mark_value = marker.split_once('=').unwrap().1.to_string();
    let shm_before = shm_entries();
    // Long-lived programs, a crash-looping one (so kills land mid-spawn) and a routed
    // slot (a memfd region per instance), all carrying the marker in their environment.
    write_config(
        dir.path(),
        "spawn_rate = 1000\nspawn_burst = 1000\n",
        &format!(
            "[program.s]\ncommand = \"sleep 1000\"\nnumprocs = 3\nenv = {{ CHAOS_MARK = \"{mark_value}\" }}\n\
             [program.loop]\ncommand = \"sh -c 'sleep 0.01; exit 1'\"\nstartsecs = 0\ncrashloop_exits = 1000000\n\
             env = {{ CHAOS_MARK = \"{mark_value}\" }}\n\
             [program.w]\ncommand = \"sleep 1000\"\nhang_timeout = \"600s\"\n\
             env = {{ CHAOS_MARK = \"{mark_value}\" }}\n\
             [[route]]\nfrom = \"input\"\nto = \"w\"\n"
        ),
    );
    let mut mid_spawn = 0;
    for round in 0..rounds {
        let mut host = Host::start_in(dir.path());
        // 0..600 ms: before the first spawn, during startup, or in the crash loop.
        let at = Duration::from_millis(rng.below(600));
        std::thread::sleep(at);
        let spawned_before = host.lines_with("spawned: 'loop:0'").len();
        host.signal(Signal::SIGKILL);
        assert_eq!(host.wait_exit(Duration::from_secs(10)), None, "killed");
        if host.lines_with("spawned: 'loop:0'").len() > spawned_before {
            mid_spawn += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
        let orphans = marked_processes(&marker);
        assert!(
            orphans.is_empty(),
            "round {round} (kill at {at:?}): orphans alive 1 s after SIGKILL of the host: {orphans:?}"
        );
        assert_eq!(
            shm_entries(),
            shm_before,
            "round {round}: stale /dev/shm entries"
        );
        drop(host);
    }
    // The next start is clean: same directory, same (stale) socket path, everything
    // comes up, `ctl` answers, and a TERM stops it with exit 0.
    let mut host = Host::start_in(dir.path());
    let before = host.lines_with("ready:").len();
    host.wait_for("ready:", before + 1, Duration::from_secs(30));
    host.ctl(&["status"]);
    let kids = marked_processes(&marker);
    assert!(kids.len() >= 4, "after the loop only {kids:?} came up");
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    assert!(marked_processes(&marker).is_empty());
    println!(
        "host kill loop: {rounds} SIGKILLs ({mid_spawn} while the crash loop was spawning), \
         0 orphans after 1 s, 0 /dev/shm entries, clean restart"
    );
    record(
        "host_kill.txt",
        &[format!(
            "rounds {rounds} mid_spawn {mid_spawn} orphans 0 shm 0 clean_restart yes"
        )],
    );
}

#[test]
fn restart_run_keeps_fd_count_exact_rss_bounded_and_no_zombie() {
    let restarts: u64 = pick(1000, 10_000);
    let _dog = watchdog(Duration::from_secs(120 + restarts / 10));
    let dir = tempfile::tempdir().unwrap();
    // Exits 1 (unexpected) `restarts` times, then 0 (expected: stays EXITED).
    write_config(
        dir.path(),
        "spawn_rate = 100000\nspawn_burst = 100000\n",
        &format!(
            "[program.t]\ncommand = \"sh -c 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge {restarts} ] && exit 0; exit 1'\"\n\
             autostart = false\nstartsecs = 0\ncrashloop_exits = 100000000\n"
        ),
    );
    let mut host = Host::start_in(dir.path());
    host.wait_for("ready:", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let fd_base = fd_count(host.pid());
    let rss_base = rss_kib(host.pid());
    host.ctl(&["start", "t"]);
    // Sample RSS while it runs (for the plot and the bound).
    let mut rss_samples = vec![(0u64, rss_base)];
    let start = Instant::now();
    let count_file = dir.path().join("count");
    loop {
        let n: u64 = fs::read_to_string(&count_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        rss_samples.push((n, rss_kib(host.pid())));
        if n > restarts {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60 + restarts / 10),
            "only {n} restarts"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    host.wait_for(
        "exited: t:0 (exit status 0; expected)",
        1,
        Duration::from_secs(60),
    );
    let took = start.elapsed();
    let spawns = host.lines_with("spawned: 't:0'");
    assert_eq!(spawns.len() as u64, restarts + 1);
    // Restart latency: the host's own timestamps from "exited" to the next "spawned".
    let exits = host.lines_with("exited: t:0");
    let mut lat_ms: Vec<f64> = exits
        .iter()
        .zip(spawns.iter().skip(1))
        .map(|(e, s)| span(e.0, s.0) * 1e3)
        .collect();
    let raw_lat = lat_ms.clone();
    let (p50, p99, max) = (
        quantile(&mut lat_ms, 0.5),
        quantile(&mut lat_ms, 0.99),
        quantile(&mut lat_ms, 1.0),
    );
    // fds back to baseline (pipes of the last child are closed once it is reaped).
    let settle = Instant::now();
    let fd_end = loop {
        let now = fd_count(host.pid());
        if now == fd_base || settle.elapsed() > Duration::from_secs(10) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let rss_end = rss_kib(host.pid());
    let zombies = children_of(host.pid());
    println!(
        "leak run: {restarts} restarts in {:.1} s; host fds {fd_base} -> {fd_end}; RSS {rss_base} KiB -> {rss_end} KiB \
         ({:+} KiB); children left {}; restart latency (exit -> spawn) p50 {p50:.2} ms p99 {p99:.2} ms max {max:.2} ms",
        took.as_secs_f64(),
        rss_end as i64 - rss_base as i64,
        zombies.len()
    );
    let mut rec = vec![format!(
        "restarts {restarts} secs {:.1} fd_base {fd_base} fd_end {fd_end} rss_base_kib {rss_base} rss_end_kib {rss_end} \
         zombies {} p50_ms {p50:.3} p99_ms {p99:.3} max_ms {max:.3}",
        took.as_secs_f64(),
        zombies.len()
    )];
    rec.extend(rss_samples.iter().map(|(n, r)| format!("rss {n} {r}")));
    rec.extend(raw_lat.iter().map(|l| format!("lat_ms {l:.3}")));
    record("leak_run.txt", &rec);
    assert_eq!(fd_end, fd_base, "host fd count after {restarts} restarts");
    assert!(zombies.is_empty(), "children (zombies?) left: {zombies:?}");
    assert!(
        rss_end <= rss_base + 1024,
        "RSS grew {} KiB over {restarts} restarts (bound 1 MiB)",
        rss_end - rss_base
    );
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}
