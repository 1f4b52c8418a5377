//! The bad-config corpus: every file in `tests/bad-configs/` starts with
//! `# expect: TEXT`. `slotpool check` must exit 1 and print an error that contains TEXT
//! (which names the key) and points at `file:line`; `slotpool run` must refuse the file
//! the same way and start nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_slotpool");

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
}

fn corpus() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let first = text.lines().next().unwrap_or("");
            let expect = first
                .strip_prefix("# expect: ")
                .unwrap_or_else(|| panic!("{} lacks a `# expect: ` first line", p.display()))
                .to_string();
            (p, expect)
        })
        .collect()
}

#[test]
fn the_corpus_has_at_least_fifty_files() {
    assert!(corpus().len() >= 50, "only {} bad configs", corpus().len());
}

#[test]
fn check_names_file_line_and_key_for_every_bad_config() {
    watchdog(Duration::from_secs(240));
    let mut failures = Vec::new();
    for (path, expect) in corpus() {
        let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let located = stderr.lines().any(|l| {
            l.strip_prefix(&format!("{}:", path.display()))
                .and_then(|rest| rest.split(':').next())
                .is_some_and(|line| line.parse::<usize>().is_ok_and(|n| n >= 2))
        });
        if out.status.code() != Some(1)
            || !stderr.contains(&expect)
            || !located
            || !out.stdout.is_empty()
        {
            failures.push(format!(
                "{}: exit {:?}, expected {expect:?} at file:line, got:\n{stderr}",
                path.display(),
                out.status.code()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad config(s) not reported well:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn run_refuses_every_bad_config_and_starts_nothing() {
    watchdog(Duration::from_secs(240));
    let work = tempfile::tempdir().unwrap();
    for (path, expect) in corpus() {
        let out = Command::new(BIN)
            .arg("run")
            .arg(&path)
            .current_dir(work.path())
            .env("XDG_RUNTIME_DIR", work.path())
            .env("XDG_STATE_HOME", work.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", path.display());
        assert!(stderr.contains(&expect), "{}: {stderr}", path.display());
        assert!(
            stderr.contains("nothing was started"),
            "{}: {stderr}",
            path.display()
        );
        assert!(!stderr.contains("spawned"), "{}: {stderr}", path.display());
    }
    // 80-valid-program-beside-an-error.toml has a valid program that would create MARKER.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a bad config started something: {left:?}");
}

#[test]
fn a_good_config_checks_and_lists_programs_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("good.toml");
    std::fs::write(
        &cfg,
        "[program.osc]\nmodule = \"sine\"\n[program.helper]\ncommand = \"/bin/sleep 10\"\nnumprocs = 2\n\
         [[route]]\nfrom = \"osc\"\nto = \"output\"\ngain = 0.5\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("osc (slot, module sine)"), "{stdout}");
    assert!(stdout.contains("instances helper:0 helper:1"), "{stdout}");
    assert!(stdout.contains("osc:0 -> output (gain 0.5)"), "{stdout}");
}
