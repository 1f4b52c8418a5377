//! Hostile-peer property tests: arbitrary values in every peer-writable word and
//! arbitrary bytes anywhere in the region, interleaved with both ends operating.
//! Each end must only ever see data or a fault value (never a panic, an out-of-bounds
//! access — ASan checks that in scripts/ring-asan.sh — or a hang), faults must be
//! sticky until reset, and while nobody scribbled since the last reset both ends must
//! agree exactly with a simple queue model. After a reset everything works again.
#![cfg(not(loom))]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Watchdog, block_matches, fill_block};
use proptest::prelude::*;
use slotpool_ring::testing::PeerAccess;
use slotpool_ring::{
    Command, Event, HostEnd, HostRegion, MonoTime, OutputStatus, PushError, RecordError, RingFault,
    SlotLayout, WaitOutcome, WorkerEnd, WorkerRegion,
};

const LAYOUT: SlotLayout = SlotLayout {
    channels_in: 1,
    channels_out: 2,
    block_frames: 8,
    audio_capacity: 4,
    command_capacity: 4,
    event_capacity: 2,
};

#[derive(Clone, Debug)]
enum Op {
    HostPush,
    HostPop,
    HostWaitOutput { back: u8 },
    HostCommand,
    HostEvent,
    HostStatus,
    WorkerEcho,
    WorkerPushOut { ahead: u8 },
    WorkerCommand,
    WorkerEvent,
    Word { idx: usize, value: u64 },
    Bytes { offset: usize, bytes: Vec<u8> },
    Reset,
}

fn word_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 63),
        Just(u32::MAX as u64),
    ]
}

fn op(region_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::HostPush),
        3 => Just(Op::HostPop),
        2 => (0u8..6).prop_map(|back| Op::HostWaitOutput { back }),
        2 => Just(Op::HostCommand),
        2 => Just(Op::HostEvent),
        1 => Just(Op::HostStatus),
        4 => Just(Op::WorkerEcho),
        1 => (0u8..3).prop_map(|ahead| Op::WorkerPushOut { ahead }),
        2 => Just(Op::WorkerCommand),
        2 => Just(Op::WorkerEvent),
        2 => (0usize..64, word_value()).prop_map(|(idx, value)| Op::Word { idx, value }),
        2 => (0..region_len, prop::collection::vec(any::<u8>(), 1..96))
            .prop_map(|(offset, bytes)| Op::Bytes { offset, bytes }),
        1 => Just(Op::Reset),
    ]
}

/// The two ends plus the model of what an honest pair would hold.
struct Rig<'a> {
    host: HostEnd,
    worker: WorkerEnd,
    reopen: &'a dyn Fn() -> WorkerRegion,
    _worker_region: WorkerRegion,
    peer: PeerAccess,
    tainted: bool,
    next_cycle: u64,
    in_q: VecDeque<u64>,
    out_q: VecDeque<u64>,
    cmd_q: VecDeque<(u64, Command)>,
    evt_q: VecDeque<(u64, Event)>,
    last_in: Option<u64>,
}

const CMDS: [Command; 4] = [
    Command::SetParam { id: 3, value: 0.5 },
    Command::Bypass { on: true },
    Command::Ping { token: 7 },
    Command::Reset,
];

fn is_fault_push(r: &Result<(), PushError>) -> bool {
    matches!(r, Err(PushError::Fault(_)))
}

impl<'a> Rig<'a> {
    fn new(host: HostEnd, reopen: &'a dyn Fn() -> WorkerRegion, peer: PeerAccess) -> Self {
        let wr = reopen();
        let worker = wr.worker_end().expect("worker end");
        Self {
            host,
            worker,
            reopen,
            _worker_region: wr,
            peer,
            tainted: false,
            next_cycle: 0,
            in_q: VecDeque::new(),
            out_q: VecDeque::new(),
            cmd_q: VecDeque::new(),
            evt_q: VecDeque::new(),
            last_in: None,
        }
    }

    /// Faults are sticky: a handle that reported one keeps reporting it.
    fn check_sticky(before: Option<RingFault>, after: Option<RingFault>, got: Option<RingFault>) {
        if let Some(f) = before {
            assert_eq!(got, Some(f), "a faulted ring handed out something else");
            assert_eq!(after, Some(f));
        }
        if let Some(g) = got {
            assert_eq!(after, Some(g), "fault not recorded as sticky");
        }
    }

    fn step(&mut self, op: &Op) {
        let cap = LAYOUT.audio_capacity as usize;
        let mut inb = vec![0.0f32; LAYOUT.input_samples()];
        let mut outb = vec![0.0f32; LAYOUT.output_samples()];
        match op {
            Op::HostPush => {
                let c = self.next_cycle;
                fill_block(c, &mut inb);
                let before = self.host.audio_in.fault();
                let r = self.host.audio_in.push(c, &inb);
                let got = match r {
                    Err(PushError::Fault(f)) => Some(f),
                    _ => None,
                };
                Self::check_sticky(before, self.host.audio_in.fault(), got);
                assert!(!matches!(r, Err(PushError::WrongLength { .. })));
                if r.is_ok() {
                    self.next_cycle += 1;
                }
                if !self.tainted {
                    assert_eq!(r.is_ok(), self.in_q.len() < cap, "push vs model: {r:?}");
                    if r.is_ok() {
                        self.in_q.push_back(c);
                    } else {
                        assert_eq!(r, Err(PushError::Full));
                    }
                }
            }
            Op::HostPop => {
                let before = self.host.audio_out.fault();
                let r = self.host.audio_out.pop(&mut outb);
                Self::check_sticky(before, self.host.audio_out.fault(), r.err());
                if !self.tainted {
                    let want = self.out_q.pop_front();
                    assert_eq!(r, Ok(want));
                    if let Some(c) = want {
                        assert!(block_matches(c + 1000, &outb));
                    }
                }
            }
            Op::HostWaitOutput { back } => {
                let cycle = self.next_cycle.saturating_sub(*back as u64);
                let before = self.host.audio_out.fault();
                // An already-passed deadline: one look, never a sleep.
                let r = self.host.wait_output(cycle, &mut outb, MonoTime::now());
                Self::check_sticky(before, self.host.audio_out.fault(), r.err());
                if !self.tainted {
                    while self.out_q.front().is_some_and(|&c| c < cycle) {
                        self.out_q.pop_front();
                    }
                    let want = if self.out_q.front() == Some(&cycle) {
                        self.out_q.pop_front();
                        OutputStatus::Ready
                    } else {
                        OutputStatus::Late
                    };
                    assert_eq!(r, Ok(want));
                    if want == OutputStatus::Ready {
                        assert!(block_matches(cycle + 1000, &outb));
                    }
                }
            }
            Op::HostCommand => {
                let c = CMDS[(self.next_cycle % 4) as usize];
                let before = self.host.commands.fault();
                let r = self.host.commands.push(c);
                let got = match r {
                    Err(PushError::Fault(f)) => Some(f),
                    _ => None,
                };
                Self::check_sticky(before, self.host.commands.fault(), got);
                if !self.tainted {
                    let full = self.cmd_q.len() >= LAYOUT.command_capacity as usize;
                    match r {
                        Ok(seq) => {
                            assert!(!full);
                            if let Some(&(last, _)) = self.cmd_q.back() {
                                assert_eq!(seq, last + 1);
                            }
                            self.cmd_q.push_back((seq, c));
                        }
                        Err(e) => assert!(full && e == PushError::Full, "{e:?}"),
                    }
                }
            }
            Op::HostEvent => {
                let before = self.host.events.fault();
                let r = self.host.events.pop();
                let got = match r {
                    Err(RecordError::Fault(f)) => Some(f),
                    _ => None,
                };
                Self::check_sticky(before, self.host.events.fault(), got);
                if !self.tainted {
                    assert_eq!(r, Ok(self.evt_q.pop_front()));
                }
            }
            Op::HostStatus => {
                let mon_region_values = (
                    self.host.bell.done_count(),
                    self.host.audio_out.available(),
                    self.host.audio_in.free_slots(),
                    self.host.commands.free_slots(),
                    self.host.events.available(),
                );
                if let Ok(n) = mon_region_values.1 {
                    assert!(n as usize <= cap);
                }
                if let Ok(n) = mon_region_values.2 {
                    assert!(n as usize <= cap);
                }
                self.host.bell.beat();
                self.host.bell.ring(self.next_cycle);
                let seen = self.host.bell.done_count();
                let w = self
                    .host
                    .bell
                    .wait_done(seen.wrapping_add(1), MonoTime::now());
                assert!(matches!(w, WaitOutcome::Signalled | WaitOutcome::TimedOut));
            }
            Op::WorkerEcho => {
                let before = self.worker.audio_in.fault();
                let r = self.worker.audio_in.pop(&mut inb);
                Self::check_sticky(before, self.worker.audio_in.fault(), r.err());
                if !self.tainted {
                    let want = self.in_q.pop_front();
                    assert_eq!(r, Ok(want));
                    if let Some(c) = want {
                        assert!(block_matches(c, &inb));
                    }
                }
                if let Ok(Some(c)) = r {
                    self.last_in = Some(c);
                    self.worker_push_out(c);
                }
            }
            Op::WorkerPushOut { ahead } => {
                let c = self.last_in.map_or(0, |c| c + *ahead as u64);
                self.worker_push_out(c);
            }
            Op::WorkerCommand => {
                let before = self.worker.commands.fault();
                let r = self.worker.commands.pop();
                let got = match r {
                    Err(RecordError::Fault(f)) => Some(f),
                    _ => None,
                };
                Self::check_sticky(before, self.worker.commands.fault(), got);
                if !self.tainted {
                    assert_eq!(r, Ok(self.cmd_q.pop_front()));
                }
            }
            Op::WorkerEvent => {
                let e = Event::Telemetry {
                    cycle: self.next_cycle,
                    process_ns: 5,
                    late: 0,
                };
                let before = self.worker.events.fault();
                let r = self.worker.events.push(e);
                let got = match r {
                    Err(PushError::Fault(f)) => Some(f),
                    _ => None,
                };
                Self::check_sticky(before, self.worker.events.fault(), got);
                if !self.tainted {
                    let full = self.evt_q.len() >= LAYOUT.event_capacity as usize;
                    match r {
                        Ok(seq) => {
                            assert!(!full);
                            self.evt_q.push_back((seq, e));
                        }
                        Err(err) => assert!(full && err == PushError::Full, "{err:?}"),
                    }
                }
            }
            Op::Word { idx, value } => {
                let words = self.peer.words();
                let w = words[idx % words.len()];
                self.peer.write_word(w, *value);
                self.tainted = true;
            }
            Op::Bytes { offset, bytes } => {
                self.peer.write_bytes(*offset, bytes);
                self.tainted = true;
            }
            Op::Reset => {
                self.host.reset();
                for f in [self.host.audio_in.fault(), self.host.commands.fault()] {
                    assert_eq!(f, None);
                }
                assert_eq!(self.host.audio_out.fault(), None);
                assert_eq!(self.host.events.fault(), None);
                // A reset rewrites the header: the fresh worker must open, whatever was scribbled.
                let wr = (self.reopen)();
                self.worker = wr.worker_end().expect("worker end after reset");
                self._worker_region = wr;
                self.tainted = false;
                self.in_q.clear();
                self.out_q.clear();
                self.cmd_q.clear();
                self.evt_q.clear();
                self.last_in = None;
            }
        }
    }

    fn worker_push_out(&mut self, c: u64) {
        let mut outb = vec![0.0f32; LAYOUT.output_samples()];
        fill_block(c + 1000, &mut outb);
        let before = self.worker.audio_out.fault();
        let r = self.worker.audio_out.push(c, &outb);
        let got = match r {
            Err(PushError::Fault(f)) => Some(f),
            _ => None,
        };
        Self::check_sticky(before, self.worker.audio_out.fault(), got);
        if !self.tainted {
            let full = self.out_q.len() >= LAYOUT.audio_capacity as usize;
            assert_eq!(r.is_ok(), !full, "{r:?}");
            if r.is_ok() {
                self.out_q.push_back(c);
            }
        } else {
            assert!(r.is_ok() || r == Err(PushError::Full) || is_fault_push(&r));
        }
    }
}

fn run_ops_heap(ops: &[Op]) {
    let _wd = Watchdog::arm("run_ops_heap", Duration::from_secs(120));
    let region = HostRegion::create_heap("hostile:0", LAYOUT).unwrap();
    let reopen = || region.open_worker().expect("open after create/reset");
    let mut rig = Rig::new(region.host_end().unwrap(), &reopen, region.peer_access());
    for op in ops {
        rig.step(op);
    }
    // Whatever happened, a reset brings back a pair that agrees with the model.
    rig.step(&Op::Reset);
    for op in [
        Op::HostPush,
        Op::WorkerEcho,
        Op::HostPop,
        Op::HostCommand,
        Op::WorkerCommand,
        Op::WorkerEvent,
        Op::HostEvent,
    ] {
        rig.step(&op);
    }
}

fn run_ops_memfd(ops: &[Op]) {
    let _wd = Watchdog::arm("run_ops_memfd", Duration::from_secs(120));
    let region = HostRegion::create("hostile:0", LAYOUT).unwrap();
    let reopen = || {
        let fd = region.fd().try_clone_to_owned().unwrap();
        WorkerRegion::open(fd).expect("open after create/reset")
    };
    let mut rig = Rig::new(region.host_end().unwrap(), &reopen, region.peer_access());
    for op in ops {
        rig.step(op);
    }
    rig.step(&Op::Reset);
    for op in [Op::HostPush, Op::WorkerEcho, Op::HostPop] {
        rig.step(&op);
    }
}

/// A deterministic stream of bytes from a seed (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary words and byte runs interleaved with honest operation (heap region).
    #[test]
    fn ends_see_only_data_or_faults_heap(ops in prop::collection::vec(op(LAYOUT.region_len()), 1..80)) {
        run_ops_heap(&ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The same over a real memfd with two mappings (host's and the worker's).
    #[test]
    fn ends_see_only_data_or_faults_memfd(ops in prop::collection::vec(op(LAYOUT.region_len()), 1..60)) {
        run_ops_memfd(&ops);
    }

    /// The whole region overwritten with noise (including the header ident): the host
    /// only sees data or faults, a worker opening it gets data, faults or a typed open
    /// error, and a reset makes the region usable again.
    #[test]
    fn whole_region_of_noise(seed in any::<u64>(), ops in prop::collection::vec(op(LAYOUT.region_len()), 0..30)) {
        let _wd = Watchdog::arm("whole_region_of_noise", Duration::from_secs(120));
        let region = HostRegion::create("noise:0", LAYOUT).unwrap();
        let peer = region.peer_access();
        let mut h = region.host_end().unwrap();
        peer.write_bytes(0, &noise(seed, peer.len()));
        if let Ok(w) = WorkerRegion::open(region.fd().try_clone_to_owned().unwrap()) {
            // Only possible if the noise happened to be a valid header: then the worker
            // end must work like any other.
            let mut we = w.worker_end().unwrap();
            let _ = we.audio_in.pop(&mut [0.0; 8]);
            let _ = we.commands.pop();
        }
        let mut out = vec![0.0f32; LAYOUT.output_samples()];
        for _ in 0..8 {
            let _ = h.audio_in.push(1, &[0.0; 8]);
            let _ = h.wait_output(1, &mut out, MonoTime::now());
            let _ = h.events.pop();
            let _ = h.commands.push(Command::Reset);
            let _ = h.audio_out.available();
        }
        let mon = region.monitor();
        let _ = (mon.worker_state(), mon.worker_pid(), mon.fault_code(), mon.worker_heartbeat(), mon.process_ns());
        // Reset rewrites the header from the host's private copies: a worker opens again.
        h.reset();
        let reopen = || WorkerRegion::open(region.fd().try_clone_to_owned().unwrap()).expect("open after reset");
        let mut rig = Rig::new(h, &reopen, peer);
        for op in &ops {
            rig.step(op);
        }
        rig.step(&Op::Reset);
        for op in [Op::HostPush, Op::WorkerEcho, Op::HostPop, Op::HostCommand, Op::WorkerCommand] {
            rig.step(&op);
        }
    }
}

/// A scribbler thread hammers every word with atomic garbage (spurious futex values,
/// wild counters, toggled waiting flags) while the host runs cycles with deadlines and
/// the worker echoes: both only ever see data or faults, and every bounded wait
/// returns (the watchdog turns a hang into a failure).
#[test]
fn concurrent_word_scribbler_cannot_hang_or_crash_either_end() {
    let _wd = Watchdog::arm("concurrent_word_scribbler", Duration::from_secs(120));
    let region = HostRegion::create("race:0", LAYOUT).unwrap();
    let peer = region.peer_access();
    let mut h = region.host_end().unwrap();
    let w = WorkerRegion::open(region.fd().try_clone_to_owned().unwrap()).unwrap();
    let mut we = w.worker_end().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let words = peer.words();
            let mut x = 0x1234_5678_9abc_def1u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let wd = words[(x % words.len() as u64) as usize];
                let v = if x & 1 == 0 { x >> 60 } else { x };
                peer.write_word(wd, v);
                std::hint::spin_loop();
            }
        });
        let worker = s.spawn(|| {
            let mut buf = vec![0.0f32; LAYOUT.input_samples()];
            let mut out = vec![0.0f32; LAYOUT.output_samples()];
            while !stop.load(Ordering::Relaxed) {
                let seen = we.bell.doorbell();
                if let Ok(Some(c)) = we.audio_in.pop(&mut buf) {
                    let _ = we.audio_out.push(c, &out);
                    we.bell.signal_done();
                } else {
                    let _ = we.commands.pop();
                    we.bell
                        .wait_doorbell(seen, MonoTime::now() + Duration::from_millis(1));
                }
                out[0] += 1.0;
            }
        });
        let mut inb = vec![0.0f32; LAYOUT.input_samples()];
        let mut out = vec![0.0f32; LAYOUT.output_samples()];
        let mut faults = 0u32;
        for cycle in 0..3000u64 {
            fill_block(cycle, &mut inb);
            if let Err(PushError::Fault(_)) = h.audio_in.push(cycle, &inb) {
                faults += 1;
            }
            h.bell.ring(cycle);
            let deadline = MonoTime::now() + Duration::from_micros(200);
            match h.wait_output(cycle, &mut out, deadline) {
                Ok(OutputStatus::Ready | OutputStatus::Late) => {}
                Err(_) => faults += 1,
            }
            let _ = h.events.pop();
            if cycle % 256 == 255 {
                h.reset();
            }
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        assert!(faults > 0, "wild counters went unnoticed");
    });
}

/// A worker taking its end from a region whose counters the host (or a previous
/// worker) left inconsistent starts with those rings faulted instead of trusting them.
#[test]
fn worker_end_from_inconsistent_counters_starts_faulted() {
    let region = HostRegion::create_heap("p:0", LAYOUT).unwrap();
    let peer = region.peer_access();
    let tail = peer
        .words()
        .into_iter()
        .find(|w| w.name == "audio_out.tail")
        .unwrap();
    peer.write_word(tail, 1 << 40); // consumer "ahead" of the worker's head (0)
    let mut we = region.open_worker().unwrap().worker_end().unwrap();
    let block = vec![0.0f32; LAYOUT.output_samples()];
    assert!(matches!(
        we.audio_out.push(0, &block),
        Err(PushError::Fault(RingFault::CounterAhead { .. }))
    ));
    // The other rings are unaffected.
    assert_eq!(we.events.push(Event::Ack { seq: 1 }), Ok(1));
}
