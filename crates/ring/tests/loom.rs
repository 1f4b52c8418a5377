//! Loom models of the ring algorithms (run by scripts/ring-loom.sh with
//! `RUSTFLAGS="--cfg loom"`). Under loom the region's counters are loom atomics and
//! every slot access goes through a loom cell (src/sync.rs, src/mapping.rs), so loom
//! checks that the Release/Acquire pairs on head and tail order the slot copies: a
//! weakened ordering shows up as a causality violation, a wrong index as wrong data.
#![cfg(loom)]

use loom::thread;
use slotpool_ring::{Command, HostRegion, PushError, SlotLayout};

const LAYOUT: SlotLayout = SlotLayout {
    channels_in: 1,
    channels_out: 1,
    block_frames: 2,
    audio_capacity: 2,
    command_capacity: 2,
    event_capacity: 2,
};

fn block(cycle: u64) -> [f32; 2] {
    [cycle as f32, -(cycle as f32)]
}

/// Producer pushes 3 blocks through a 2-slot ring (one wrap-around); the consumer pops
/// all three. Every block arrives once, in order, intact, with its tag.
#[test]
fn audio_wraps_around_in_order() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let consumer = thread::spawn(move || {
            let mut buf = [0.0f32; 2];
            let mut next = 0u64;
            while next < 3 {
                match worker.audio_in.pop(&mut buf).unwrap() {
                    Some(c) => {
                        assert_eq!(c, next);
                        assert_eq!(buf, block(c));
                        next += 1;
                    }
                    None => thread::yield_now(),
                }
            }
        });
        let mut c = 0u64;
        while c < 3 {
            match host.audio_in.push(c, &block(c)) {
                Ok(()) => c += 1,
                Err(PushError::Full) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        consumer.join().unwrap();
    });
}

/// A full ring refuses the push (Full, nothing overwritten) until the consumer frees a
/// slot; pushes that succeeded are exactly the blocks popped, in order.
#[test]
fn full_ring_refuses_then_accepts() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        host.audio_in.push(0, &block(0)).unwrap();
        host.audio_in.push(1, &block(1)).unwrap();
        let consumer = thread::spawn(move || {
            let mut buf = [0.0f32; 2];
            assert_eq!(worker.audio_in.pop(&mut buf).unwrap(), Some(0));
            assert_eq!(buf, block(0));
            let second = worker.audio_in.pop(&mut buf).unwrap();
            assert_eq!(second, Some(1));
            assert_eq!(buf, block(1));
            // Block 2 may or may not have been pushed yet.
            match worker.audio_in.pop(&mut buf).unwrap() {
                Some(c) => {
                    assert_eq!(c, 2);
                    assert_eq!(buf, block(2));
                    true
                }
                None => false,
            }
        });
        let third = host.audio_in.push(2, &block(2));
        let got_third = consumer.join().unwrap();
        match third {
            Ok(()) => {}
            Err(PushError::Full) => assert!(!got_third, "a refused block was delivered"),
            Err(e) => panic!("{e}"),
        }
    });
}

/// Popping an empty ring while the first block is being pushed: either nothing or the
/// whole block, never a partial one.
#[test]
fn empty_ring_yields_nothing_or_a_whole_block() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let producer = thread::spawn(move || {
            host.audio_in.push(7, &block(7)).unwrap();
        });
        let mut buf = [0.0f32; 2];
        match worker.audio_in.pop(&mut buf).unwrap() {
            Some(c) => {
                assert_eq!(c, 7);
                assert_eq!(buf, block(7));
            }
            None => assert_eq!(buf, [0.0; 2]),
        }
        producer.join().unwrap();
    });
}

/// A producer that stops mid-way (loom explores every point where it can be
/// descheduled forever from the consumer's point of view: the consumer never waits for
/// it) leaves the consumer with an intact prefix of what was pushed, then nothing.
#[test]
fn producer_stopping_mid_way_leaves_an_intact_prefix() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let producer = thread::spawn(move || {
            for c in 0..2 {
                host.audio_in.push(c, &block(c)).unwrap();
            }
        });
        let mut buf = [0.0f32; 2];
        let mut seen = Vec::new();
        for _ in 0..3 {
            if let Some(c) = worker.audio_in.pop(&mut buf).unwrap() {
                assert_eq!(buf, block(c));
                seen.push(c);
            }
        }
        assert!(
            seen.iter().copied().eq(0..seen.len() as u64),
            "not a prefix: {seen:?}"
        );
        producer.join().unwrap();
    });
}

/// A consumer that stops mid-way: the producer fills the ring, never overwrites an
/// unread block, and whatever the consumer did read was intact.
#[test]
fn consumer_stopping_mid_way_never_loses_unread_blocks() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let consumer = thread::spawn(move || {
            let mut buf = [0.0f32; 2];
            let r = worker.audio_in.pop(&mut buf).unwrap();
            if let Some(c) = r {
                assert_eq!(buf, block(c));
            }
            (r, worker)
        });
        let mut pushed = 0u64;
        for c in 0..3 {
            if host.audio_in.push(c, &block(c)).is_ok() {
                pushed += 1;
            }
        }
        let (first, mut worker) = consumer.join().unwrap();
        let popped_first = u64::from(first.is_some());
        // At most capacity unread blocks, and all of them still readable in order.
        assert!(pushed - popped_first <= 2);
        let mut buf = [0.0f32; 2];
        for c in popped_first..pushed {
            assert_eq!(worker.audio_in.pop(&mut buf).unwrap(), Some(c));
            assert_eq!(buf, block(c));
        }
        assert_eq!(worker.audio_in.pop(&mut buf).unwrap(), None);
    });
}

/// Command records across a wrap-around: every record decodes, with consecutive seqs.
#[test]
fn command_records_wrap_around_with_seq() {
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let consumer = thread::spawn(move || {
            let mut next = 1u64;
            while next <= 3 {
                match worker.commands.pop().unwrap() {
                    Some((seq, cmd)) => {
                        assert_eq!(seq, next);
                        assert_eq!(cmd, Command::Ping { token: seq * 10 });
                        next += 1;
                    }
                    None => thread::yield_now(),
                }
            }
        });
        let mut sent = 0u64;
        while sent < 3 {
            match host.commands.push(Command::Ping {
                token: (sent + 1) * 10,
            }) {
                Ok(seq) => {
                    sent += 1;
                    assert_eq!(seq, sent);
                }
                Err(PushError::Full) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        consumer.join().unwrap();
    });
}

/// The doorbell/done futex protocol with the waiting flags: the host pushes, rings and
/// sleeps on `done`; the worker sleeps on the doorbell, echoes, signals done. Neither
/// ever sleeps through the other's wake-up (a lost wake-up is a loom deadlock), even
/// though wakes skip the syscall whenever the waiting flag is clear.
#[test]
fn futex_round_trip_never_loses_a_wake_up() {
    use slotpool_ring::{MonoTime, WaitOutcome};
    let never = MonoTime::from_nanos(u64::MAX);
    loom::model(move || {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        let seen_bell = worker.bell.doorbell();
        let w = thread::spawn(move || {
            assert_eq!(
                worker.bell.wait_doorbell(seen_bell, never),
                WaitOutcome::Signalled
            );
            let mut buf = [0.0f32; 2];
            let c = worker
                .audio_in
                .pop(&mut buf)
                .unwrap()
                .expect("block pushed before the ring");
            worker.audio_out.push(c, &buf).unwrap();
            worker.bell.signal_done();
        });
        let seen_done = host.bell.done_count();
        host.audio_in.push(5, &block(5)).unwrap();
        host.bell.ring(5);
        assert_eq!(
            host.bell.wait_done(seen_done, never),
            WaitOutcome::Signalled
        );
        let mut out = [0.0f32; 2];
        assert_eq!(host.audio_out.pop(&mut out).unwrap(), Some(5));
        assert_eq!(out, block(5));
        w.join().unwrap();
    });
}

/// The idle-ring rule (docs/ABI.md "Idle rings"): the worker sleeps without a timeout
/// and two host threads bump the doorbell, the audio thread with a block (`ring`) and
/// the supervisor with nothing (`nudge`). Whatever the interleaving, the worker is never
/// left asleep (a lost wake-up is a loom deadlock) and never misses the block: when the
/// value it reads is the nudge's, bumped after the ring, the nudge's RMW continues the
/// ring's release sequence, so the pushed block is visible too.
#[test]
fn untimed_worker_wait_survives_concurrent_ring_and_nudge() {
    use slotpool_ring::UntimedOutcome;
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let mut host = region.host_end().unwrap();
        let monitor = region.monitor();
        let mut worker = region.open_worker().unwrap().worker_end().unwrap();
        // Loom creates a header word on its first use (src/mapping.rs), and the doorbell
        // is not among the words the region's creation writes: create it here, before
        // three threads race on it, as a real region has it from the start.
        let _ = worker.bell.doorbell();
        let w = thread::spawn(move || {
            let mut buf = [0.0f32; 2];
            // At most one wait per doorbell bump: two bumps, so three looks at most.
            for _ in 0..3 {
                let seen = worker.bell.doorbell();
                if let Some(c) = worker.audio_in.pop(&mut buf).unwrap() {
                    assert_eq!((c, buf), (5, block(5)));
                    return;
                }
                assert_eq!(
                    worker.bell.wait_doorbell_untimed(seen),
                    UntimedOutcome::Signalled
                );
            }
            panic!("the block pushed before the ring was never seen");
        });
        let supervisor = thread::spawn(move || monitor.nudge());
        host.audio_in.push(5, &block(5)).unwrap();
        host.bell.ring(5);
        supervisor.join().unwrap();
        w.join().unwrap();
    });
}

/// The supervisor beats the host heartbeat, then nudges: a worker woken by that nudge
/// sees the beat (the nudge's Release RMW of the doorbell, the wait's Acquire load), so
/// its host watch never judges a live, idle host by a stale heartbeat.
#[test]
fn a_nudge_wakes_an_untimed_worker_and_publishes_the_beat_before_it() {
    use slotpool_ring::UntimedOutcome;
    loom::model(|| {
        let region = HostRegion::create_heap("loom:0", LAYOUT).unwrap();
        let monitor = region.monitor();
        let worker = region.open_worker().unwrap().worker_end().unwrap();
        // Read here, before the threads start: this also creates both words in the model
        // (see the model above).
        let seen = worker.bell.doorbell();
        let beat = worker.bell.host_heartbeat();
        let w = thread::spawn(move || {
            assert_eq!(
                worker.bell.wait_doorbell_untimed(seen),
                UntimedOutcome::Signalled
            );
            assert_eq!(worker.bell.host_heartbeat(), beat + 1);
        });
        monitor.beat_host();
        monitor.nudge();
        w.join().unwrap();
    });
}
