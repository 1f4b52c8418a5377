//! `slotpool ctl` as a real process against a real control server: output,
//! `status --json` key names, the interactive shell, and exit codes.
//!
//! The client process is this test binary re-run with `--ignored --exact
//! child_ctl`; it parses its arguments from an environment variable exactly as
//! `slotpool ctl` parses its command line, runs `run_ctl` and exits with its
//! code.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use slotpool_host::control::ControlHandler;
use slotpool_host::control::client::{CtlArgs, exit, run_ctl};
use slotpool_host::control::protocol::{
    ActionResult, HostStatus, ProgramState, ProgramStatus, Request, Response, StateEvent,
    StatusReport,
};
use slotpool_host::control::server::{ControlServer, ServerLimits};

struct Watchdog(Arc<AtomicBool>);

fn watchdog(name: &'static str, secs: u64) -> Watchdog {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("watchdog: test {name} still running after {secs} s; aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Relaxed: a plain stop flag, no data is published through it.
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Host {
    log_dir: PathBuf,
}

impl ControlHandler for Host {
    fn handle(&mut self, req: Request) -> Response {
        let known = |n: &str| ["all", "sine", "sine:0", "logger"].contains(&n);
        match req {
            Request::Status => {
                let mut sine = ProgramStatus::new("sine:0", ProgramState::Running);
                sine.pid = Some(4242);
                sine.uptime_s = Some(62);
                sine.restarts = 3;
                sine.late_blocks = 5;
                sine.hangs = 1;
                sine.load = Some(0.25);
                sine.fds = Some(6);
                Response::Status(StatusReport {
                    programs: vec![sine, ProgramStatus::new("logger", ProgramState::Fatal)],
                    host: HostStatus {
                        pid: 99,
                        uptime_s: 3600,
                        fds: Some(17),
                        config: "/etc/slotpool/demo.toml".into(),
                        backend: None,
                        cycle_time_us: None,
                        device_xruns: None,
                        realtime: None,
                        version: "test".into(),
                    },
                })
            }
            Request::Start { name } if known(&name) => Response::done(name, "started"),
            Request::Stop { name } if known(&name) => Response::done(name, "stopped"),
            Request::Start { name } | Request::Stop { name } | Request::Restart { name } => {
                Response::Done {
                    results: vec![ActionResult::failed(name, "ERROR (no such process)")],
                }
            }
            Request::Set { slot, param, value } if slot == "sine:0" => {
                Response::done(slot, format!("{param} = {value}"))
            }
            Request::Set { slot, .. } => Response::error(format!("no slot named '{slot}'")),
            Request::Tail { name, stream, .. } if known(&name) => Response::Log {
                path: self.log_dir.join(format!("{name}.{stream}.log")),
            },
            other => Response::error(format!("{} not supported here", other.verb())),
        }
    }
}

struct Harness {
    path: PathBuf,
    dir: tempfile::TempDir,
    events: mpsc::Sender<StateEvent>,
    subscribers: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Harness {
    /// A server at `<tmp>/slotpool/demo.sock` (the default layout for
    /// XDG_RUNTIME_DIR=<tmp> and a config named demo.toml).
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("slotpool").join("demo.sock");
        let log_dir = dir.path().join("logs");
        fs::create_dir(&log_dir).unwrap();
        let mut server = ControlServer::bind_with(&path, ServerLimits::default()).unwrap();
        let mut host = Host { log_dir };
        let (events, rx) = mpsc::channel::<StateEvent>();
        let subscribers = Arc::new(AtomicUsize::new(0));
        let subs = subscribers.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            loop {
                // Read the flag first: events sent before stop() are still
                // published by this last round.
                let stopping = stop2.load(Ordering::Relaxed);
                server
                    .wait_and_service(&mut host, Duration::from_millis(20))
                    .unwrap();
                while let Ok(ev) = rx.try_recv() {
                    server.publish(&ev);
                }
                subs.store(server.subscriber_count(), Ordering::Relaxed);
                if stopping {
                    break;
                }
            }
            // Dropping the server closes every connection.
        });
        Harness {
            path,
            dir,
            events,
            subscribers,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wrapper that parses `slotpool ctl`'s arguments as the real binary does.
#[derive(Parser)]
#[command(name = "slotpool-ctl")]
struct Cli {
    #[command(flatten)]
    ctl: CtlArgs,
}

const ARGS_ENV: &str = "SLOTPOOL_TEST_CTL_ARGS";
const MARK: &str = "\n=== ctl output ===\n";

/// Not a test on its own: the `slotpool ctl` process the tests below run.
#[test]
#[ignore = "helper process for the ctl tests"]
fn child_ctl() {
    let Some(args) = std::env::var_os(ARGS_ENV) else {
        println!("helper only: the ctl tests run it");
        return;
    };
    let args: Vec<String> = serde_json::from_str(args.to_str().unwrap()).unwrap();
    print!("{MARK}");
    std::io::stdout().flush().unwrap();
    let cli = Cli::try_parse_from(std::iter::once("slotpool-ctl".to_owned()).chain(args))
        .unwrap_or_else(|e| e.exit());
    std::process::exit(run_ctl(cli.ctl));
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl_with(args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "child_ctl",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ARGS_ENV, serde_json::to_string(args).unwrap())
    .env_remove("SLOTPOOL_SOCKET")
    .env_remove("XDG_RUNTIME_DIR")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout = match stdout.split_once(MARK) {
        Some((_, rest)) => rest.to_owned(),
        None => panic!("the child did not run ctl: {stdout}"),
    };
    Run {
        code: out.status.code().expect("ctl exits, not killed"),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(h: &Harness, args: &[&str]) -> Run {
    let socket = h.path.to_str().unwrap();
    let mut all = vec!["--socket", socket];
    all.extend_from_slice(args);
    ctl_with(&all, &[], None)
}

#[test]
fn status_prints_the_table_and_exits_4_when_a_program_is_not_running() {
    let _w = watchdog("status_table", 120);
    let h = Harness::start();
    let r = ctl(&h, &["status"]);
    assert_eq!(r.code, exit::NOT_RUNNING, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "LATE",
            "HANGS",
            "LOAD",
            "FDS",
            "DESCRIPTION"
        ]
    );
    let sine: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        sine,
        [
            "sine:0", "RUNNING", "4242", "0:01:02", "3", "5", "1", "25.0%", "6", "pid", "4242,",
            "uptime", "0:01:02"
        ]
    );
    assert!(lines[2].starts_with("logger "), "{}", lines[2]);
    assert!(lines[2].contains(" FATAL "), "{}", lines[2]);
    assert!(
        lines[2].ends_with("Exited too quickly (process log may have details)"),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[3],
        "host: pid 99, uptime 1:00:00, fds 17, config /etc/slotpool/demo.toml"
    );

    let r = ctl(&h, &["status", "sine"]);
    assert_eq!(r.code, exit::OK, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.lines().count(), 3);
    let r = ctl(&h, &["status", "nope"]);
    assert_eq!(r.code, exit::FAILED);
    assert!(
        r.stderr.contains("nope: ERROR (no such process)"),
        "{}",
        r.stderr
    );
}

#[test]
fn status_json_has_exactly_the_documented_keys() {
    let _w = watchdog("status_json", 120);
    let h = Harness::start();
    let r = ctl(&h, &["status", "--json"]);
    assert_eq!(r.code, exit::NOT_RUNNING, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut top: Vec<&String> = v.as_object().unwrap().keys().collect();
    top.sort();
    assert_eq!(top, ["host", "programs"]);
    let programs = v["programs"].as_array().unwrap();
    assert_eq!(programs.len(), 2);
    for p in programs {
        let p = p.as_object().unwrap();
        for key in [
            "name",
            "state",
            "pid",
            "uptime_s",
            "restarts",
            "crashes",
            "hangs",
            "late_blocks",
            "load",
            "fds",
            "exit_status",
            "limits",
        ] {
            assert!(p.contains_key(key), "program lacks {key:?}: {p:?}");
        }
    }
    assert_eq!(v["programs"][0]["name"], "sine:0");
    assert_eq!(v["programs"][0]["state"], "RUNNING");
    assert_eq!(v["programs"][0]["pid"], 4242);
    assert_eq!(v["programs"][0]["uptime_s"], 62);
    assert_eq!(v["programs"][0]["late_blocks"], 5);
    assert_eq!(v["programs"][1]["pid"], serde_json::Value::Null);
    assert_eq!(v["host"]["pid"], 99);
    assert_eq!(v["host"]["config"], "/etc/slotpool/demo.toml");
}

#[test]
fn verbs_print_results_and_exit_1_on_failure() {
    let _w = watchdog("verbs", 120);
    let h = Harness::start();
    let r = ctl(&h, &["start", "sine:0", "logger"]);
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    assert_eq!(r.stdout, "sine:0: started\nlogger: started\n");

    let r = ctl(&h, &["stop", "sine", "nope"]);
    assert_eq!(r.code, exit::FAILED);
    assert_eq!(r.stdout, "sine: stopped\n");
    assert!(
        r.stderr.contains("nope: ERROR (no such process)"),
        "{}",
        r.stderr
    );

    let r = ctl(&h, &["set", "sine:0", "freq", "-440.5"]);
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    assert_eq!(r.stdout, "sine:0: freq = -440.5\n");
    let r = ctl(&h, &["set", "gain:0", "gain_db", "3"]);
    assert_eq!(r.code, exit::FAILED);
    assert!(r.stderr.contains("no slot named 'gain:0'"), "{}", r.stderr);

    let r = ctl(&h, &["reload"]);
    assert_eq!(r.code, exit::FAILED);
    assert!(
        r.stderr.contains("reload not supported here"),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let _w = watchdog("usage", 120);
    let h = Harness::start();
    let r = ctl(&h, &["start"]);
    assert_eq!(r.code, exit::USAGE, "{}", r.stderr);
    let r = ctl(&h, &["frobnicate"]);
    assert_eq!(r.code, exit::USAGE, "{}", r.stderr);
    let r = ctl(&h, &["--timeout", "0", "status"]);
    assert_eq!(r.code, exit::USAGE, "{}", r.stderr);
    // --help documents the exit codes.
    let r = ctl_with(&["--help"], &[], None);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit status:"), "{}", r.stdout);
    assert!(
        r.stdout.contains("4  status: at least one program"),
        "{}",
        r.stdout
    );
}

#[test]
fn an_absent_or_silent_host_exits_3() {
    let _w = watchdog("unreachable", 120);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    let r = ctl_with(
        &["--socket", missing.to_str().unwrap(), "status"],
        &[],
        None,
    );
    assert_eq!(r.code, exit::UNREACHABLE);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert!(r.stderr.contains("nobody.sock"), "{}", r.stderr);

    // Something listens but never answers.
    let silent = dir.path().join("silent.sock");
    let _listener = UnixListener::bind(&silent).unwrap();
    let r = ctl_with(
        &[
            "--socket",
            silent.to_str().unwrap(),
            "--timeout",
            "0.3",
            "status",
        ],
        &[],
        None,
    );
    assert_eq!(r.code, exit::UNREACHABLE);
    assert!(r.stderr.contains("did not answer in time"), "{}", r.stderr);

    // No socket given, none in the default directory.
    let r = ctl_with(&["status"], &[("XDG_RUNTIME_DIR", dir.path())], None);
    assert_eq!(r.code, exit::UNREACHABLE);
    assert!(
        r.stderr.contains("no slotpool host seems to be running"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_socket_is_found_from_the_config_name_or_the_default_directory() {
    let _w = watchdog("discovery", 120);
    let h = Harness::start();
    let xdg = [("XDG_RUNTIME_DIR", h.dir.path())];
    let r = ctl_with(
        &["--config", "/somewhere/else/demo.toml", "status", "sine"],
        &xdg,
        None,
    );
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    // The only socket in $XDG_RUNTIME_DIR/slotpool.
    let r = ctl_with(&["status", "sine"], &xdg, None);
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    let r = ctl_with(&["status", "sine"], &[("SLOTPOOL_SOCKET", &h.path)], None);
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    // A config of another name has no host.
    let r = ctl_with(&["--config", "other.toml", "status"], &xdg, None);
    assert_eq!(r.code, exit::UNREACHABLE, "{}", r.stderr);
}

#[test]
fn tail_prints_the_end_of_the_log() {
    let _w = watchdog("tail", 120);
    let h = Harness::start();
    fs::write(
        h.dir.path().join("logs").join("sine:0.stderr.log"),
        "boot\nwarming up\nready\n",
    )
    .unwrap();
    let r = ctl(&h, &["tail", "sine:0", "--stderr", "-n", "6"]);
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    assert_eq!(r.stdout, "ready\n");
    let r = ctl(&h, &["tail", "sine:0"]);
    assert_eq!(r.code, exit::FAILED);
    assert!(r.stderr.contains("no log yet"), "{}", r.stderr);
}

#[test]
fn events_streams_json_lines_until_the_host_exits() {
    let _w = watchdog("events", 120);
    let mut h = Harness::start();
    let socket = h.path.to_str().unwrap().to_owned();
    let child = thread::spawn(move || ctl_with(&["--socket", &socket, "events"], &[], None));
    while h.subscribers.load(Ordering::Relaxed) == 0 {
        thread::sleep(Duration::from_millis(10));
    }
    let mut ev = StateEvent::now("sine:0", ProgramState::Running, ProgramState::Exited);
    ev.pid = Some(4242);
    h.events.send(ev.clone()).unwrap();
    let ev2 = StateEvent::now("sine:0", ProgramState::Exited, ProgramState::Starting);
    h.events.send(ev2.clone()).unwrap();
    // Shut the host down once both are written; the client reports it.
    thread::sleep(Duration::from_millis(200));
    h.stop();
    let r = child.join().unwrap();
    assert_eq!(r.code, exit::UNREACHABLE, "{}", r.stderr);
    assert!(r.stderr.contains("closed the connection"), "{}", r.stderr);
    let got: Vec<StateEvent> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, [ev, ev2]);
    let first: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["from"], "RUNNING");
    assert_eq!(first["to"], "EXITED");
}

#[test]
fn interactive_shell_runs_verbs_and_help_until_quit() {
    let _w = watchdog("shell", 120);
    let h = Harness::start();
    let socket = h.path.to_str().unwrap();
    let r = ctl_with(
        &["--socket", socket],
        &[],
        Some("help\nhelp start\nstart sine:0\n\nbogus\nset sine:0 'gain' -1\nquit\nstatus\n"),
    );
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    // Greets with the status table, like supervisorctl.
    assert!(r.stdout.starts_with("NAME "), "{}", r.stdout);
    assert!(r.stdout.contains("verbs (help VERB"), "{}", r.stdout);
    assert!(r.stdout.contains("Start programs"), "{}", r.stdout);
    assert!(r.stdout.contains("sine:0: started\n"), "{}", r.stdout);
    assert!(r.stdout.contains("sine:0: gain = -1\n"), "{}", r.stdout);
    assert!(r.stderr.contains("bogus"), "{}", r.stderr);
    // Nothing after quit ran: the table appears once.
    assert_eq!(r.stdout.matches("DESCRIPTION").count(), 1, "{}", r.stdout);

    // End of input leaves the shell too.
    let r = ctl_with(&["--socket", socket], &[], Some("stop logger\n"));
    assert_eq!(r.code, exit::OK, "{}", r.stderr);
    assert!(r.stdout.contains("logger: stopped\n"), "{}", r.stdout);
}
