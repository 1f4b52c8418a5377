//! The handover between two real threads: the audio thread always runs the newest
//! schedule it has been given, never goes back to an older one, and never drops
//! one; every published schedule is dropped exactly once, on the control side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use slotpool_router::{Busy, handover};

/// Stands in for a schedule: a sequence number, and a drop that counts where it ran.
struct Plan {
    seq: u64,
    drops: Arc<Drops>,
}

#[derive(Default)]
struct Drops {
    total: AtomicUsize,
    on_audio_thread: AtomicUsize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // Relaxed: counters read after the threads are joined (join synchronises).
        self.drops.total.fetch_add(1, Ordering::Relaxed);
        if thread::current().name() == Some("audio") {
            self.drops.on_audio_thread.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Aborts the process if the test is not done in time, so a hang fails CI.
fn watchdog(done: Arc<AtomicBool>) {
    thread::spawn(move || {
        for _ in 0..600 {
            thread::sleep(Duration::from_millis(100));
            // Acquire pairs with the Release store at the end of the test.
            if done.load(Ordering::Acquire) {
                return;
            }
        }
        eprintln!("handover test hung for 60 s; aborting");
        std::process::abort();
    });
}

#[test]
fn audio_thread_follows_the_newest_plan_and_never_drops_one() {
    const PLANS: u64 = 2000;
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone());
    let drops = Arc::new(Drops::default());
    let plan = |seq| {
        Box::new(Plan {
            seq,
            drops: drops.clone(),
        })
    };
    let (mut publisher, mut receiver) = handover(plan(0), 3);

    let audio = thread::Builder::new()
        .name("audio".into())
        .spawn(move || {
            let mut last = 0;
            let mut changes = 0u64;
            while last < PLANS {
                if receiver.pickup() {
                    changes += 1;
                }
                let seq = receiver.current().seq;
                assert!(seq >= last, "went back from plan {last} to {seq}");
                last = seq;
                thread::yield_now();
            }
            (receiver, changes)
        })
        .unwrap();

    for seq in 1..=PLANS {
        let mut next = plan(seq);
        loop {
            match publisher.publish(next) {
                Ok(()) => break,
                Err(Busy(back)) => {
                    next = back;
                    thread::yield_now();
                }
            }
        }
    }
    let (receiver, changes) = audio.join().unwrap();
    assert_eq!(receiver.current().seq, PLANS);
    assert!(changes >= 1);
    publisher.collect();
    assert_eq!(publisher.in_flight(), 1, "only the current plan is out");
    drop(receiver);
    drop(publisher);
    // Relaxed loads are fine: the audio thread has been joined.
    assert_eq!(drops.total.load(Ordering::Relaxed), PLANS as usize + 1);
    assert_eq!(drops.on_audio_thread.load(Ordering::Relaxed), 0);
    // Release pairs with the watchdog's Acquire load.
    done.store(true, Ordering::Release);
}
