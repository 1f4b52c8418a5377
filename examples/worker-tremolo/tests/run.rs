//! The example worker builds (cargo builds it for this test) and runs under a host: the
//! start-up contract, its parameter, processing and a clean stop come from the SDK.

// The worker crate's in-test host, shared by path so both test suites drive workers alike.
#[path = "../../../crates/worker/tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use slotpool_ring::{Command as Cmd, Event, ShortStr};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_worker-tremolo"))
}

#[test]
fn by_hand_it_exits_2_like_every_worker() {
    let _dog = Watchdog::arm("by_hand", PATIENCE * 2);
    let out = std::process::Command::new(exe())
        .env_remove("SLOTPOOL_REGION_FD")
        .env_remove("SLOTPOOL_SLOT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLOTPOOL_REGION_FD"));
}

#[test]
fn under_a_host_it_announces_depth_modulates_and_stops_on_sigterm() {
    let _dog = Watchdog::arm("tremolo", PATIENCE * 3);
    let layout = stereo(480);
    let mut host = TestHost::new("tremolo:0", layout);
    let mut w = host.spawn_ready(exe(), &[]);
    let events = host.drain_events();
    assert_eq!(
        events,
        [Event::Param {
            id: 0,
            default: 0.5,
            name: ShortStr::new("depth")
        }]
    );

    // 0.2 s of a constant: one full 5 Hz LFO cycle between 1.0 and 1 - depth.
    let input = vec![1.0_f32; layout.input_samples()];
    let mut out = vec![0.0; layout.output_samples()];
    let mut left = Vec::new();
    for _ in 0..20 {
        host.process(&input, &mut out).unwrap();
        left.extend_from_slice(&out[..480]);
        assert_eq!(out[..480], out[480..], "both channels get the same LFO");
    }
    assert_eq!(left[0], 1.0, "LFO starts at full level");
    let min = left.iter().copied().fold(f32::MAX, f32::min);
    assert!(
        (min - 0.5).abs() < 1e-3,
        "depth 0.5 dips to half level, got {min}"
    );

    let (a, _) = host.send(Cmd::SetParam { id: 0, value: 0.0 });
    assert!(matches!(a, Event::Ack { .. }), "{a:?}");
    host.process(&input, &mut out).unwrap();
    assert!(out.iter().all(|&x| x == 1.0), "depth 0 passes the input");

    w.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(w.wait_exit(PATIENCE).and_then(|s| s.code()), Some(0));
}
