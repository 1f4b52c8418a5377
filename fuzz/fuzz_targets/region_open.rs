//! The region open/validate path, as a worker meets it: an inherited fd whose bytes the
//! host (or anyone who handed the fd over) wrote. Two shapes, picked by the first byte:
//!
//! - raw: the input becomes a sealed memfd's whole content;
//! - mutated: a real region (`HostRegion::create`, a layout from the input), with
//!   (offset, byte) patches written before `WorkerRegion::open` and more patches
//!   written after the worker took its end, then a bounded run of the worker's and the
//!   host's ring calls over the scribbled region.
//!
//! Whatever the bytes, nothing may panic, read out of bounds, loop without bound or wait
//! past a deadline (libFuzzer's -timeout catches a hang).
#![no_main]

use std::os::fd::{AsFd, OwnedFd};

use libfuzzer_sys::fuzz_target;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::uio::pwrite;
use slotpool_ring::{Command, Event, HostRegion, MonoTime, SlotLayout, WorkerRegion};

fn sealed_memfd(bytes: &[u8]) -> OwnedFd {
    let fd = memfd_create(
        "slotpool-fuzz",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .expect("memfd_create");
    let mut at = 0usize;
    while at < bytes.len() {
        at += pwrite(&fd, &bytes[at..], at as i64).expect("pwrite");
    }
    let seals = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    fd
}

fn patch(fd: &impl AsFd, len: usize, patches: &[u8]) {
    for p in patches.chunks_exact(3) {
        let off = usize::from(u16::from_le_bytes([p[0], p[1]])) % len;
        pwrite(fd, &[p[2]], off as i64).expect("pwrite patch");
    }
}

/// A small valid layout from 4 input bytes (small so each run stays fast).
fn layout(b: &[u8]) -> SlotLayout {
    let g = |i: usize| b.get(i).copied().unwrap_or(0);
    SlotLayout {
        channels_in: 1 + u32::from(g(0) % 2),
        channels_out: 1 + u32::from(g(0) / 2 % 2),
        block_frames: 1 + u32::from(g(1) % 64),
        audio_capacity: 2 << (g(2) % 3),
        command_capacity: 2 << (g(3) % 3),
        event_capacity: 2 << (g(3) / 3 % 3),
    }
}

fn exercise_worker(region: &WorkerRegion) {
    let l = region.layout();
    let _ = region.slot_name();
    let Ok(mut w) = region.worker_end() else {
        return;
    };
    let mut buf = vec![0f32; (l.block_frames * l.channels_in.max(l.channels_out)) as usize];
    for _ in 0..2 * l.command_capacity {
        if !matches!(w.commands.pop(), Ok(Some(_))) {
            break;
        }
    }
    for _ in 0..2 * l.audio_capacity {
        if !matches!(
            w.audio_in.pop(&mut buf[..w.audio_in.block_samples()]),
            Ok(Some(_))
        ) {
            break;
        }
    }
    let out = w.audio_out.block_samples();
    let _ = w.audio_out.push(w.bell.cycle(), &buf[..out]);
    let _ = w.events.push(Event::Ack { seq: 1 });
    let _ = w.bell.wait_doorbell(w.bell.doorbell(), MonoTime::now());
    w.bell.signal_done();
    w.bell.beat();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(region) = WorkerRegion::open(sealed_memfd(rest)) {
            exercise_worker(&region);
        }
        return;
    }
    let (lb, patches) = rest.split_at(rest.len().min(4));
    let host = HostRegion::create("fuzz:0", layout(lb)).expect("a valid layout creates");
    let len = host.layout().region_len();
    let fd = host.fd().try_clone_to_owned().expect("dup");
    let (before, after) = patches.split_at(patches.len() / 6 * 3);
    patch(&fd, len, before);
    let Ok(mut host_end) = host.host_end() else {
        return;
    };
    let _ = host_end.commands.push(Command::Ping { token: 7 });
    let opened = WorkerRegion::open(fd.try_clone().expect("dup"));
    patch(&fd, len, after);
    if let Ok(region) = &opened {
        exercise_worker(region);
    }
    // The host's side over whatever the worker (or the patches) left behind.
    let l = host.layout();
    let mut out = vec![0f32; (l.block_frames * l.channels_out) as usize];
    let _ = host_end.wait_output(1, &mut out, MonoTime::now());
    for _ in 0..2 * l.event_capacity {
        if !matches!(host_end.events.pop(), Ok(Some(_))) {
            break;
        }
    }
    let monitor = host.monitor();
    let _ = (
        monitor.worker_heartbeat(),
        monitor.worker_state(),
        monitor.fault_code(),
    );
    host_end.reset();
    patch(&fd, len, after);
    let _ = host_end.wait_output(2, &mut out, MonoTime::now());
});
