//! sd_notify against a fake NOTIFY_SOCKET: a datagram socket the test binds,
//! as systemd would.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use slotpool_host::control::notify::{Notifier, NotifyError};

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

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn fake_systemd() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    (dir, path, sock)
}

fn vars(pairs: Vec<(&'static str, OsString)>) -> impl Fn(&str) -> Option<OsString> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn fake_notify_socket_receives_ready_watchdog_and_stopping() {
    let _w = watchdog(
        "fake_notify_socket_receives_ready_watchdog_and_stopping",
        60,
    );
    let (_dir, path, sock) = fake_systemd();
    let mut n = Notifier::from_lookup(vars(vec![
        ("NOTIFY_SOCKET", path.clone().into()),
        ("WATCHDOG_USEC", "2000000".into()),
        ("WATCHDOG_PID", std::process::id().to_string().into()),
    ]))
    .unwrap();
    assert!(n.is_enabled());
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));

    n.ready().unwrap();
    assert_eq!(recv(&sock), "READY=1");

    // Paced at half the timeout: due at once, then not again for 1 s.
    let t0 = Instant::now();
    assert!(n.watchdog_if_due(t0).unwrap());
    assert_eq!(recv(&sock), "WATCHDOG=1");
    let sent_at = Instant::now();
    assert!(!n.watchdog_if_due(sent_at).unwrap());
    assert!(n.watchdog_due_in(sent_at).unwrap() <= Duration::from_secs(1));
    assert!(
        n.watchdog_if_due(sent_at + Duration::from_millis(1001))
            .unwrap()
    );
    assert_eq!(recv(&sock), "WATCHDOG=1");

    n.status("2 programs\nrunning").unwrap();
    assert_eq!(recv(&sock), "STATUS=2 programs running");
    n.reloading().unwrap();
    let msg = recv(&sock);
    assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
    n.stopping().unwrap();
    assert_eq!(recv(&sock), "STOPPING=1");
}

#[test]
fn abstract_notify_socket_is_supported() {
    let _w = watchdog("abstract_notify_socket_is_supported", 60);
    let name = format!("slotpool-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let n =
        Notifier::from_lookup(vars(vec![("NOTIFY_SOCKET", format!("@{name}").into())])).unwrap();
    n.ready().unwrap();
    assert_eq!(recv(&sock), "READY=1");
}

#[test]
fn watchdog_meant_for_another_pid_is_not_armed() {
    let (_dir, path, _sock) = fake_systemd();
    let mut n = Notifier::from_lookup(vars(vec![
        ("NOTIFY_SOCKET", path.into()),
        ("WATCHDOG_USEC", "2000000".into()),
        ("WATCHDOG_PID", "1".into()),
    ]))
    .unwrap();
    assert_eq!(n.watchdog_interval(), None);
    assert!(!n.watchdog_if_due(Instant::now()).unwrap());
}

#[test]
fn a_full_notify_socket_gives_an_error_instead_of_blocking() {
    let _w = watchdog(
        "a_full_notify_socket_gives_an_error_instead_of_blocking",
        60,
    );
    let (_dir, path, _sock) = fake_systemd();
    let n = Notifier::from_lookup(vars(vec![("NOTIFY_SOCKET", path.into())])).unwrap();
    // Nobody reads: the receive queue fills and a send must fail, not wait.
    let mut failed = None;
    for _ in 0..1_000_000 {
        if let Err(e) = n.notify("WATCHDOG=1") {
            failed = Some(e);
            break;
        }
    }
    match failed {
        Some(NotifyError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock, "{source}")
        }
        other => panic!("expected EAGAIN once the queue is full, got {other:?}"),
    }
}

const CHILD_ENV: &str = "SLOTPOOL_TEST_NOTIFY_CHILD";

/// Not a test on its own: the process `notifier_reads_the_real_environment`
/// starts with NOTIFY_SOCKET set, as systemd starts the host.
#[test]
#[ignore = "helper process for notifier_reads_the_real_environment"]
fn child_notify_from_env() {
    if std::env::var_os(CHILD_ENV).is_none() {
        println!("helper only: notifier_reads_the_real_environment runs it");
        return;
    }
    let mut n = Notifier::from_env().unwrap();
    n.ready().unwrap();
    assert!(n.watchdog_if_due(Instant::now()).unwrap());
    n.stopping().unwrap();
}

#[test]
fn notifier_reads_the_real_environment() {
    let _w = watchdog("notifier_reads_the_real_environment", 60);
    let (_dir, path, sock) = fake_systemd();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_notify_from_env",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "30000000")
        .env_remove("WATCHDOG_PID")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(recv(&sock), "READY=1");
    assert_eq!(recv(&sock), "WATCHDOG=1");
    assert_eq!(recv(&sock), "STOPPING=1");
}
