//! Helpers shared by the ring crate's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slotpool_ring::SlotLayout;

/// Aborts the whole test process if the guard is not dropped within `limit`: a test
/// that hangs fails CI instead of stalling it.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn arm(name: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::Builder::new()
            .name(format!("watchdog:{name}"))
            .spawn(move || {
                let start = std::time::Instant::now();
                while start.elapsed() < limit {
                    if d.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                eprintln!("watchdog: test `{name}` still running after {limit:?}: aborting");
                std::process::abort();
            })
            .expect("spawn watchdog");
        Self { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

/// Small mono layout for streaming tests.
pub fn mono16(audio_capacity: u32) -> SlotLayout {
    SlotLayout {
        channels_in: 1,
        channels_out: 1,
        block_frames: 16,
        audio_capacity,
        command_capacity: 8,
        event_capacity: 8,
    }
}

/// A stereo-in, 3-channel-out layout so in/out shapes differ.
pub fn odd_shape() -> SlotLayout {
    SlotLayout {
        channels_in: 2,
        channels_out: 3,
        block_frames: 64,
        audio_capacity: 4,
        command_capacity: 4,
        event_capacity: 4,
    }
}

/// Deterministic block content for `cycle`: every sample encodes cycle and index.
pub fn fill_block(cycle: u64, buf: &mut [f32]) {
    for (i, s) in buf.iter_mut().enumerate() {
        *s = ((cycle % 65_521) as f32) + (i as f32) / 1024.0;
    }
}

/// Whether `buf` is exactly `fill_block(cycle)`.
pub fn block_matches(cycle: u64, buf: &[f32]) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &s)| s == ((cycle % 65_521) as f32) + (i as f32) / 1024.0)
}
