//! The control server over real Unix sockets: dispatch, bounds, timeouts,
//! events, tail -f with rotation, file modes, the peer-uid check.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use slotpool_host::control::ControlHandler;
use slotpool_host::control::protocol::{
    ActionResult, HostStatus, LogStream, ProgramState, ProgramStatus, Request, Response,
    StateEvent, StatusReport,
};
use slotpool_host::control::server::{ControlError, ControlServer, ServerLimits};

/// Aborts the whole test process if a test is still running after `secs`, so
/// a hang fails CI instead of stalling it.
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

/// A handler with two programs and a log directory, recording every request.
struct TestHandler {
    seen: Arc<Mutex<Vec<Request>>>,
    log_dir: PathBuf,
}

const PROGRAMS: [&str; 2] = ["sine:0", "logger"];

impl ControlHandler for TestHandler {
    fn handle(&mut self, req: Request) -> Response {
        self.seen.lock().unwrap().push(req.clone());
        let known = |n: &str| n == "all" || PROGRAMS.contains(&n) || n == "sine";
        match req {
            Request::Status => {
                let mut sine = ProgramStatus::new("sine:0", ProgramState::Running);
                sine.pid = Some(4242);
                sine.uptime_s = Some(62);
                Response::Status(StatusReport {
                    programs: vec![sine, ProgramStatus::new("logger", ProgramState::Fatal)],
                    host: HostStatus {
                        pid: std::process::id(),
                        uptime_s: 1,
                        fds: None,
                        config: "/tmp/demo.toml".into(),
                        backend: None,
                        cycle_time_us: None,
                        device_xruns: None,
                        realtime: None,
                        version: "test".into(),
                    },
                })
            }
            Request::Start { name } | Request::Stop { name } | Request::Restart { name }
                if !known(&name) =>
            {
                Response::Done {
                    results: vec![ActionResult::failed(name, "ERROR (no such process)")],
                }
            }
            Request::Start { name } => Response::done(name, "started"),
            Request::Stop { name } => Response::done(name, "stopped"),
            Request::Restart { name } => Response::done(name, "restarted"),
            Request::Reload => Response::done("host", "reloaded: 0 added, 0 removed, 0 changed"),
            Request::Shutdown => Response::done("host", "shutting down"),
            Request::Set { slot, .. } if slot != "sine:0" => {
                Response::error(format!("no slot named '{slot}'"))
            }
            Request::Set { slot, param, value } => {
                Response::done(slot, format!("{param} = {value}"))
            }
            Request::Tail { name, stream, .. } if known(&name) => Response::Log {
                path: self.log_dir.join(format!("{name}.{stream}.log")),
            },
            Request::Tail { name, .. } => Response::error(format!("no program named '{name}'")),
            Request::Events => Response::error("events reached the handler"),
        }
    }
}

/// A server polled by its own thread, with a channel to publish events.
struct Harness {
    path: PathBuf,
    seen: Arc<Mutex<Vec<Request>>>,
    events: mpsc::Sender<StateEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    log_dir: PathBuf,
}

impl Harness {
    fn start(limits: ServerLimits) -> Harness {
        let dir = private_tempdir();
        let path = dir.path().join("run").join("demo.sock");
        let log_dir = dir.path().join("logs");
        fs::create_dir(&log_dir).unwrap();
        let mut server = ControlServer::bind_with(&path, limits).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut handler = TestHandler {
            seen: seen.clone(),
            log_dir: log_dir.clone(),
        };
        let (events, rx) = mpsc::channel::<StateEvent>();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                server
                    .wait_and_service(&mut handler, Duration::from_millis(20))
                    .unwrap();
                while let Ok(ev) = rx.try_recv() {
                    server.publish(&ev);
                }
            }
        });
        Harness {
            path,
            seen,
            events,
            stop,
            thread: Some(thread),
            _dir: dir,
            log_dir,
        }
    }

    fn connect(&self) -> Conn {
        Conn::new(UnixStream::connect(&self.path).unwrap())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Send, tolerating a server that has already closed on us.
    fn try_send(&mut self, req: &Request) {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        let _ = self.writer.write_all(&line);
    }

    fn send(&mut self, req: &Request) {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next response, or None once the server has closed the connection
    /// (EOF, or ECONNRESET when it closed with some of our bytes unread).
    fn recv(&mut self) -> Option<Response> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read from server: {e}"),
        }
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad frame {line:?}: {e}")))
    }

    fn ask(&mut self, req: &Request) -> Response {
        self.send(req);
        self.recv().expect("an answer, not EOF")
    }

    /// True when the server has closed the connection (EOF after any frames).
    fn closed_after_draining(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// A temporary directory of mode 0700 (the server refuses anything looser).
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn error_message(r: Response) -> String {
    match r {
        Response::Error { message } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn done_results(r: Response) -> Vec<ActionResult> {
    match r {
        Response::Done { results } => results,
        other => panic!("expected done, got {other:?}"),
    }
}

#[test]
fn every_verb_is_dispatched_to_the_handler() {
    let _w = watchdog("every_verb_is_dispatched_to_the_handler", 60);
    let h = Harness::start(ServerLimits::default());
    let mut c = h.connect();

    match c.ask(&Request::Status) {
        Response::Status(report) => {
            assert_eq!(report.programs.len(), 2);
            assert_eq!(report.programs[0].pid, Some(4242));
        }
        other => panic!("expected status, got {other:?}"),
    }
    let r = done_results(c.ask(&Request::Start {
        name: "sine:0".into(),
    }));
    assert_eq!(r, [ActionResult::ok("sine:0", "started")]);
    let r = done_results(c.ask(&Request::Stop { name: "all".into() }));
    assert_eq!(r[0].message, "stopped");
    let r = done_results(c.ask(&Request::Restart {
        name: "nope".into(),
    }));
    assert!(!r[0].ok);
    done_results(c.ask(&Request::Reload));
    let msg = error_message(c.ask(&Request::Set {
        slot: "gain:0".into(),
        param: "gain_db".into(),
        value: -3.0,
    }));
    assert!(msg.contains("gain:0"), "{msg}");
    let r = done_results(c.ask(&Request::Set {
        slot: "sine:0".into(),
        param: "freq".into(),
        value: 440.0,
    }));
    assert_eq!(r[0].message, "freq = 440");
    done_results(c.ask(&Request::Shutdown));

    // Pipelined: three requests in one write, three answers in order.
    c.send_raw(b"{\"verb\":\"start\",\"name\":\"a1\"}\n{\"verb\":\"status\"}\n{\"verb\":\"stop\",\"name\":\"logger\"}\n");
    assert!(!done_results(c.recv().unwrap())[0].ok);
    assert!(matches!(c.recv().unwrap(), Response::Status(_)));
    assert!(done_results(c.recv().unwrap())[0].ok);

    let seen = h.seen.lock().unwrap().clone();
    let verbs: Vec<&str> = seen.iter().map(Request::verb).collect();
    assert_eq!(
        verbs,
        [
            "status", "start", "stop", "restart", "reload", "set", "set", "shutdown", "start",
            "status", "stop"
        ]
    );
}

#[test]
fn malformed_json_gets_an_error_and_the_connection_goes_on() {
    let _w = watchdog(
        "malformed_json_gets_an_error_and_the_connection_goes_on",
        60,
    );
    let h = Harness::start(ServerLimits::default());
    let mut c = h.connect();
    c.send_raw(b"this is not json\n");
    let msg = error_message(c.recv().unwrap());
    assert!(msg.starts_with("malformed request"), "{msg}");
    c.send_raw(b"{\"verb\":\"launch\"}\n");
    let msg = error_message(c.recv().unwrap());
    assert!(msg.contains("launch"), "{msg}");
    c.send_raw(b"{\"verb\":\"start\"}\r\n");
    let msg = error_message(c.recv().unwrap());
    assert!(msg.contains("name"), "{msg}");
    c.send_raw(b"\xff\xfe\x00garbage\n\n");
    error_message(c.recv().unwrap());
    // Still usable.
    assert!(matches!(c.ask(&Request::Status), Response::Status(_)));
    assert_eq!(h.seen.lock().unwrap().len(), 1);
}

#[test]
fn oversized_frame_is_refused_without_affecting_other_clients() {
    let _w = watchdog(
        "oversized_frame_is_refused_without_affecting_other_clients",
        60,
    );
    let h = Harness::start(ServerLimits::default());
    let mut big = h.connect();
    let mut other = h.connect();
    assert!(matches!(other.ask(&Request::Status), Response::Status(_)));

    // 70 KiB without a newline, written by a thread (the server may stop
    // reading before all of it is taken).
    let mut writer = big.writer.try_clone().unwrap();
    let t = thread::spawn(move || {
        let blob = vec![b'x'; 70 * 1024];
        let _ = writer.write_all(&blob);
    });
    let msg = error_message(big.recv().expect("an error before the close"));
    assert!(msg.contains("too large"), "{msg}");
    assert!(big.recv().is_none(), "the server closes the connection");
    t.join().unwrap();

    assert!(matches!(other.ask(&Request::Status), Response::Status(_)));
    let mut fresh = h.connect();
    assert!(matches!(fresh.ask(&Request::Status), Response::Status(_)));
}

#[test]
fn stalled_client_is_dropped_while_another_is_served() {
    let _w = watchdog("stalled_client_is_dropped_while_another_is_served", 60);
    let limits = ServerLimits {
        idle_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let h = Harness::start(limits);
    let mut stalled = h.connect();
    stalled.send_raw(b"{\"verb\":"); // and nothing more
    let mut silent = h.connect(); // sends nothing at all

    // Meanwhile another client is answered, again and again (it never idles
    // long enough to be dropped itself).
    let mut busy = h.connect();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1000) {
        assert!(matches!(busy.ask(&Request::Status), Response::Status(_)));
        answered += 1;
        thread::sleep(Duration::from_millis(10));
    }
    assert!(answered >= 2);

    // The stalled ones were told and closed (our read would time out after 20 s
    // instead, and fail, if they were not).
    let msg = error_message(stalled.recv().expect("a timeout notice"));
    assert!(msg.contains("timed out"), "{msg}");
    assert!(stalled.recv().is_none());
    let msg = error_message(silent.recv().expect("a timeout notice"));
    assert!(msg.contains("timed out"), "{msg}");
    assert!(silent.recv().is_none());
    assert!(matches!(busy.ask(&Request::Status), Response::Status(_)));
}

#[test]
fn client_that_never_reads_is_dropped_while_others_are_served() {
    let _w = watchdog(
        "client_that_never_reads_is_dropped_while_others_are_served",
        90,
    );
    let limits = ServerLimits {
        max_output: 64 * 1024,
        write_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let h = Harness::start(limits);
    let hog = UnixStream::connect(&h.path).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Pipeline status requests forever and never read an answer.
    let mut w = hog.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let line = b"{\"verb\":\"status\"}\n".repeat(64);
        loop {
            if w.write_all(&line).is_err() {
                return true; // the server closed on us
            }
        }
    });
    let mut other = h.connect();
    for _ in 0..5 {
        assert!(matches!(other.ask(&Request::Status), Response::Status(_)));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(writer.join().unwrap(), "the hog is disconnected");
    assert!(matches!(other.ask(&Request::Status), Response::Status(_)));
    drop(hog);
}

#[test]
fn published_events_reach_every_subscriber() {
    let _w = watchdog("published_events_reach_every_subscriber", 60);
    let h = Harness::start(ServerLimits::default());
    let mut a = h.connect();
    let mut b = h.connect();
    assert_eq!(a.ask(&Request::Events), Response::Subscribed);
    assert_eq!(b.ask(&Request::Events), Response::Subscribed);
    let mut plain = h.connect();

    let mut ev = StateEvent::now("sine:0", ProgramState::Starting, ProgramState::Running);
    ev.pid = Some(77);
    h.events.send(ev.clone()).unwrap();
    let ev2 = StateEvent::now("sine:0", ProgramState::Running, ProgramState::Stopping);
    h.events.send(ev2.clone()).unwrap();

    for sub in [&mut a, &mut b] {
        assert_eq!(sub.recv(), Some(Response::Event(ev.clone())));
        assert_eq!(sub.recv(), Some(Response::Event(ev2.clone())));
    }
    // Not to request/response clients, and the handler never saw `events`.
    assert!(matches!(plain.ask(&Request::Status), Response::Status(_)));
    assert!(!h.seen.lock().unwrap().contains(&Request::Events));
}

fn read_tail(c: &mut Conn, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        match c.recv() {
            Some(Response::TailData { data }) => got.push_str(&data),
            other => panic!("expected tail data, got {other:?} after {got:?}"),
        }
    }
    got
}

#[test]
fn tail_shows_the_end_of_the_log_then_closes() {
    let _w = watchdog("tail_shows_the_end_of_the_log_then_closes", 60);
    let h = Harness::start(ServerLimits::default());
    let log = h.log_dir.join("sine:0.stderr.log");
    fs::write(&log, "first line\nsecond line\nthird line\n").unwrap();
    let mut c = h.connect();
    c.send(&Request::Tail {
        name: "sine:0".into(),
        stream: LogStream::Stderr,
        follow: false,
        bytes: 11,
    });
    let mut got = String::new();
    loop {
        match c.recv() {
            Some(Response::TailData { data }) => got.push_str(&data),
            Some(Response::TailEnd) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, "third line\n");
    assert!(c.recv().is_none());

    // A log that does not exist is an error, not a hang.
    let mut c = h.connect();
    c.send(&Request::Tail {
        name: "logger".into(),
        stream: LogStream::Stdout,
        follow: false,
        bytes: 100,
    });
    let msg = error_message(c.recv().unwrap());
    assert!(msg.contains("logger.stdout.log"), "{msg}");
    // An unknown name is the handler's error.
    let msg = error_message(c.ask(&Request::Tail {
        name: "nope".into(),
        stream: LogStream::Stdout,
        follow: true,
        bytes: 100,
    }));
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn tail_follow_follows_appends_and_survives_rotation() {
    let _w = watchdog("tail_follow_follows_appends_and_survives_rotation", 60);
    let limits = ServerLimits {
        tail_poll: Duration::from_millis(20),
        ..ServerLimits::default()
    };
    let h = Harness::start(limits);
    let log = h.log_dir.join("sine:0.stdout.log");
    fs::write(&log, "old history\none\n").unwrap();
    let mut c = h.connect();
    c.send(&Request::Tail {
        name: "sine:0".into(),
        stream: LogStream::Stdout,
        follow: true,
        bytes: 4,
    });
    assert_eq!(read_tail(&mut c, "one\n"), "one\n");

    let append = |path: &Path, text: &str| {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(&log, "two\n");
    assert_eq!(read_tail(&mut c, "two\n"), "two\n");

    // Rotation as the supervisor does it: last writes to the old file, rename,
    // create the new file, write there.
    append(&log, "three\n");
    fs::rename(&log, h.log_dir.join("sine:0.stdout.log.1")).unwrap();
    fs::write(&log, "four\n").unwrap();
    assert_eq!(read_tail(&mut c, "four\n"), "three\nfour\n");

    append(&log, "five ünïcode\n");
    assert_eq!(read_tail(&mut c, "five"), "five ünïcode\n");

    // Truncation in place restarts from the beginning.
    fs::write(&log, "").unwrap();
    thread::sleep(Duration::from_millis(200));
    append(&log, "six\n");
    assert_eq!(read_tail(&mut c, "six\n"), "six\n");

    // The follower goes away when the client does.
    drop(c);
    let mut other = h.connect();
    assert!(matches!(other.ask(&Request::Status), Response::Status(_)));
}

#[test]
fn tail_follow_waits_for_a_log_that_does_not_exist_yet() {
    let _w = watchdog("tail_follow_waits_for_a_log_that_does_not_exist_yet", 60);
    let limits = ServerLimits {
        tail_poll: Duration::from_millis(20),
        ..ServerLimits::default()
    };
    let h = Harness::start(limits);
    let mut c = h.connect();
    c.send(&Request::Tail {
        name: "logger".into(),
        stream: LogStream::Stdout,
        follow: true,
        bytes: 1600,
    });
    thread::sleep(Duration::from_millis(100));
    fs::write(h.log_dir.join("logger.stdout.log"), "hello\n").unwrap();
    assert_eq!(read_tail(&mut c, "hello\n"), "hello\n");
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh").join("x.sock");
    let server = ControlServer::bind(&path).unwrap();
    let sock_mode = fs::symlink_metadata(&path).unwrap().mode() & 0o7777;
    let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o7777;
    assert_eq!(sock_mode, 0o600);
    assert_eq!(dir_mode, 0o700);
    drop(server);
    assert!(!path.exists(), "drop removes the socket");
}

#[test]
fn an_unsafe_directory_is_refused() {
    let dir = private_tempdir();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let err = ControlServer::bind(&open.join("x.sock")).unwrap_err();
    assert!(matches!(err, ControlError::UnsafeDir { .. }), "{err}");
    assert!(err.to_string().contains("0755"), "{err}");

    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let err = ControlServer::bind(&link.join("x.sock")).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // Someone else's directory (e.g. a squatted /tmp/slotpool-UID).
    if nix::unistd::geteuid().is_root() {
        let squatted = dir.path().join("squatted");
        fs::create_dir(&squatted).unwrap();
        fs::set_permissions(&squatted, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&squatted, Some(65534), Some(65534)).unwrap();
        let err = ControlServer::bind(&squatted.join("x.sock")).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    let long = private.join("x".repeat(120));
    let err = ControlServer::bind(&long).unwrap_err();
    assert!(matches!(err, ControlError::PathTooLong { .. }), "{err}");
}

#[test]
fn a_second_host_is_refused_and_a_stale_socket_replaced() {
    let dir = private_tempdir();
    let path = dir.path().join("x.sock");
    let first = ControlServer::bind(&path).unwrap();
    let err = ControlServer::bind(&path).unwrap_err();
    assert!(matches!(err, ControlError::AlreadyRunning { .. }), "{err}");
    assert!(err.to_string().contains("x.sock"), "{err}");
    // The refused attempt left the live socket alone.
    UnixStream::connect(&path).unwrap();
    drop(first);

    // A host that died without cleaning up leaves a socket nobody answers.
    let dead = UnixListener::bind(&path).unwrap();
    drop(dead);
    assert!(path.exists());
    let second = ControlServer::bind(&path).unwrap();
    UnixStream::connect(&path).unwrap();
    drop(second);

    // A listener that is not ours (no lock) but answers: refused too.
    let foreign = UnixListener::bind(&path).unwrap();
    let err = ControlServer::bind(&path).unwrap_err();
    assert!(matches!(err, ControlError::AlreadyRunning { .. }), "{err}");
    drop(foreign);
    fs::remove_file(&path).unwrap();

    // Never deletes a file that is not a socket.
    fs::write(&path, "precious").unwrap();
    let err = ControlServer::bind(&path).unwrap_err();
    assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
}

const CHILD_SOCKET_ENV: &str = "SLOTPOOL_TEST_CONNECT_SOCKET";

/// Not a test on its own: the client that `client_of_another_uid_is_refused`
/// runs under another uid. Connects, sends `shutdown`, prints what comes back.
#[test]
#[ignore = "helper process for client_of_another_uid_is_refused"]
fn child_connect_and_print_reply() {
    let Some(path) = std::env::var_os(CHILD_SOCKET_ENV) else {
        println!("helper only: client_of_another_uid_is_refused runs it");
        return;
    };
    let mut c = Conn::new(UnixStream::connect(path).expect("connect"));
    c.try_send(&Request::Shutdown);
    let reply = c.recv();
    println!("REPLY {}", serde_json::to_string(&reply).unwrap());
    println!("UID {}", nix::unistd::getuid());
    let closed = c.recv().is_none();
    println!("CLOSED {closed}");
}

#[test]
fn client_of_another_uid_is_refused() {
    let _w = watchdog("client_of_another_uid_is_refused", 60);
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(setpriv) = setpriv else {
        println!("SKIPPED client_of_another_uid_is_refused: setpriv (util-linux) is not installed");
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 {
        println!(
            "SKIPPED client_of_another_uid_is_refused: only root can run a client as another uid"
        );
        return;
    }
    let other = 65534;
    let h = Harness::start(ServerLimits::default());
    // Open the file modes so that only the SO_PEERCRED check stands between
    // the other uid and the host (the 0700 dir and 0600 socket would stop it
    // first otherwise; here we prove the check itself refuses).
    let run_dir = h.path.parent().unwrap();
    for d in [h._dir.path(), run_dir] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&h.path, fs::Permissions::from_mode(0o666)).unwrap();

    let exe = std::env::current_exe().unwrap();
    let out = Command::new(setpriv)
        .args([
            format!("--reuid={other}"),
            format!("--regid={other}"),
            "--clear-groups".into(),
        ])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "child_connect_and_print_reply",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET_ENV, &h.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(stdout.contains(&format!("UID {other}")), "{stdout}");
    let reply = stdout
        .lines()
        .find_map(|l| l.split_once("REPLY ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no reply line in {stdout}"));
    let reply: Option<Response> = serde_json::from_str(reply).unwrap();
    let msg = error_message(reply.expect("an error line before the close"));
    assert!(
        msg.contains(&format!("you are uid {other}")) && msg.contains("refused"),
        "{msg}"
    );
    assert!(stdout.contains("CLOSED true"), "{stdout}");
    // The request never reached the handler; our own uid is still served.
    assert!(h.seen.lock().unwrap().is_empty());
    let mut c = h.connect();
    assert!(matches!(c.ask(&Request::Status), Response::Status(_)));
}

#[test]
fn closed_connections_are_released() {
    let _w = watchdog("closed_connections_are_released", 60);
    let h = Harness::start(ServerLimits::default());
    for _ in 0..200 {
        let mut c = h.connect();
        assert!(matches!(c.ask(&Request::Status), Response::Status(_)));
    }
    // Half-close: the answer still comes, then the server closes.
    let mut c = h.connect();
    c.send_raw(b"{\"verb\":\"status\"}");
    c.writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(c.recv(), Some(Response::Status(_))));
    assert!(c.closed_after_draining());
}

#[test]
fn an_events_subscriber_that_never_reads_is_dropped_and_others_keep_up() {
    let _w = watchdog(
        "an_events_subscriber_that_never_reads_is_dropped_and_others_keep_up",
        90,
    );
    let limits = ServerLimits {
        max_output: 16 * 1024,
        ..ServerLimits::default()
    };
    let h = Harness::start(limits);
    let mut lazy = h.connect();
    let mut keen = h.connect();
    assert_eq!(lazy.ask(&Request::Events), Response::Subscribed);
    assert_eq!(keen.ask(&Request::Events), Response::Subscribed);
    // Paced batches: the keen subscriber reads each batch before the next, the
    // lazy one reads nothing, so only the lazy one falls behind.
    let mut sent = Vec::new();
    for batch in 0..40 {
        for i in 0..100 {
            let mut ev = StateEvent::now("sine:0", ProgramState::Running, ProgramState::Exited);
            ev.message = Some(format!("batch {batch} event {i}: {}", "x".repeat(100)));
            h.events.send(ev.clone()).unwrap();
            sent.push(ev);
        }
        for ev in &sent[batch * 100..] {
            assert_eq!(keen.recv(), Some(Response::Event(ev.clone())));
        }
    }
    // The lazy one got some events, then the server closed on it.
    let mut got = 0;
    while let Some(r) = lazy.recv() {
        assert!(matches!(r, Response::Event(_)));
        got += 1;
    }
    assert!(got < sent.len(), "lazy subscriber was never dropped");
    // The keen one is still subscribed.
    let last = StateEvent::now("sine:0", ProgramState::Exited, ProgramState::Starting);
    h.events.send(last.clone()).unwrap();
    assert_eq!(keen.recv(), Some(Response::Event(last)));
}
