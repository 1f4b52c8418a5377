//! supervisord side by side: real supervisord (PyPI `supervisor`, installed into a
//! temporary venv) and the real `slotpool` run the same two programs at the same time:
//!
//! - `crash`: `sh -c 'exit 1'` (exits at once), default startsecs = 1, startretries = 3;
//! - `slow`: sleeps 2 s then exits 1, with startsecs = 3 (it never counts as started).
//!
//! Each side's spawn count and time from the first spawn to FATAL is read from its own
//! log and printed side by side. slotpool must match supervisord's documented semantics
//! (startretries = 3: 4 spawns, then FATAL); supervisord's own figures are recorded. Skipped with a printed reason where python3,
//! venv or pip (network to PyPI) is unavailable.

mod chaos_common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaos_common::*;
use nix::sys::signal::Signal;

const PROGRAMS: &[(&str, &str)] = &[
    ("crash", "sh -c 'exit 1'"),
    ("slow", "sh -c 'sleep 2; exit 1'"),
];

fn startsecs(name: &str) -> u32 {
    if name == "slow" { 3 } else { 1 }
}

/// A venv with supervisord, or the reason there is none.
fn install_supervisord(dir: &Path) -> Result<std::path::PathBuf, String> {
    let venv = dir.join("venv");
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !st.success() {
        return Err("python3 -m venv failed (python3-venv missing?)".into());
    }
    let out = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "supervisor",
        ])
        .output()
        .map_err(|e| format!("pip not runnable: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install supervisor failed (no network to PyPI?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(venv.join("bin/supervisord"))
}

/// `2026-05-16 10:11:12,345` → seconds of the day.
fn supervisord_time(line: &str) -> Option<f64> {
    let t = line.get(11..23)?;
    let (hms, ms) = t.split_once(',')?;
    let mut p = hms.split(':').map(|x| x.parse::<f64>().ok());
    let (h, m, s) = (p.next()??, p.next()??, p.next()??);
    Some(h * 3600.0 + m * 60.0 + s + ms.parse::<f64>().ok()? / 1e3)
}

#[test]
fn slotpool_spawns_and_gives_up_like_supervisord_side_by_side() {
    // ~45 s with the pip install: too long for CI's budget, so it runs in `make soak`
    // (or with SLOTPOOL_SUPERVISORD=1).
    if !soak() && std::env::var_os("SLOTPOOL_SUPERVISORD").is_none() {
        println!(
            "supervisord_compare: SKIP: runs under `make soak` (SLOTPOOL_SOAK=1) or SLOTPOOL_SUPERVISORD=1"
        );
        return;
    }
    let _dog = watchdog(Duration::from_secs(180));
    let tmp = tempfile::tempdir().unwrap();
    let supervisord = match install_supervisord(tmp.path()) {
        Ok(p) => p,
        Err(reason) => {
            println!("supervisord_compare: SKIP: {reason}");
            return;
        }
    };
    // supervisord
    let sv_dir = tmp.path().join("sv");
    fs::create_dir_all(&sv_dir).unwrap();
    let mut conf = format!(
        "[supervisord]\nnodaemon=true\nlogfile={0}/supervisord.log\npidfile={0}/supervisord.pid\nchildlogdir={0}\n",
        sv_dir.display()
    );
    for (name, cmd) in PROGRAMS {
        conf += &format!(
            "[program:{name}]\ncommand={cmd}\nstartsecs={}\nstartretries=3\nautorestart=unexpected\n",
            startsecs(name)
        );
    }
    fs::write(sv_dir.join("supervisord.conf"), conf).unwrap();
    let mut sv = Command::new(&supervisord)
        .arg("-c")
        .arg(sv_dir.join("supervisord.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // slotpool, at the same time
    let sp_dir = tmp.path().join("sp");
    fs::create_dir_all(&sp_dir).unwrap();
    let mut body = String::new();
    for (name, cmd) in PROGRAMS {
        body += &format!(
            "[program.{name}]\ncommand = \"{}\"\nstartsecs = {}\nstartretries = 3\n",
            cmd,
            startsecs(name)
        );
    }
    write_config(&sp_dir, "", &body);
    let mut sp = Host::start_in(&sp_dir);

    // Both give up on both programs.
    let start = Instant::now();
    let sv_log = sv_dir.join("supervisord.log");
    loop {
        let text = fs::read_to_string(&sv_log).unwrap_or_default();
        let sv_done = PROGRAMS
            .iter()
            .all(|(n, _)| text.contains(&format!("gave up: {n} entered FATAL")));
        let sp_done = PROGRAMS.iter().all(|(n, _)| {
            !sp.lines_with(&format!("gave up: {n}:0 entered FATAL"))
                .is_empty()
        });
        if sv_done && sp_done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not FATAL after 90 s; supervisord log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sv.id() as i32), Signal::SIGTERM);
    let _ = sv.wait();
    sp.signal(Signal::SIGTERM);
    assert_eq!(sp.wait_exit(Duration::from_secs(30)), Some(0));

    let sv_text = fs::read_to_string(&sv_log).unwrap();
    let mut rows = Vec::new();
    for (name, _) in PROGRAMS {
        let sv_spawns: Vec<f64> = sv_text
            .lines()
            .filter(|l| l.contains(&format!("spawned: '{name}' with pid")))
            .filter_map(supervisord_time)
            .collect();
        let sv_fatal = sv_text
            .lines()
            .find(|l| l.contains(&format!("gave up: {name} entered FATAL")))
            .and_then(supervisord_time)
            .unwrap();
        let sp_spawns = sp.lines_with(&format!("spawned: '{name}:0'"));
        let sp_fatal = sp.lines_with(&format!("gave up: {name}:0 entered FATAL"))[0].0;
        let sv_t = span(sv_spawns[0], sv_fatal);
        let sp_t = span(sp_spawns[0].0, sp_fatal);
        let row = format!(
            "{name}: supervisord {} spawns, FATAL after {sv_t:.2} s | slotpool {} spawns, FATAL after {sp_t:.2} s",
            sv_spawns.len(),
            sp_spawns.len()
        );
        println!("supervisord_compare: {row}");
        // slotpool must do what supervisord's documentation specifies: startretries = 3
        // → 4 spawns, then FATAL. supervisord itself is recorded, not asserted: it judges
        // "exited too quickly" at the time it reaps the child, so on a loaded machine
        // a late reap makes a crash count as a run and resets its backoff (seen: 14
        // spawns while a fuzz build loaded both cores).
        assert_eq!(sp_spawns.len(), 4, "{name}: slotpool spawns: {row}");
        assert!(sv_spawns.len() >= 4, "{name}: supervisord spawns: {row}");
        rows.push(row);
    }
    record("supervisord_compare.txt", &rows);
}
