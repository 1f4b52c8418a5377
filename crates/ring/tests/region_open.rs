//! Creating and opening regions: the memfd's properties, and every way an fd can fail
//! to be a valid region, each a typed error whose message says what to do.
//! Header offsets are written here from docs/ABI.md on purpose: this is also a check
//! that the document and the code agree.
#![cfg(not(loom))]

mod common;

use std::os::fd::{AsFd, OwnedFd};

use common::mono16;
use nix::fcntl::{FcntlArg, FdFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use slotpool_ring::{HostRegion, LayoutError, OpenError, RegionError, SlotLayout, WorkerRegion};

fn dup(region: &HostRegion) -> OwnedFd {
    region.fd().try_clone_to_owned().unwrap()
}

fn sealed_memfd(len: i64) -> OwnedFd {
    let fd = memfd_create("t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, len).unwrap();
    let seals = SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).unwrap();
    fd
}

#[test]
fn region_is_a_sealed_cloexec_memfd_outside_dev_shm() {
    let before: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let region = HostRegion::create("synth:0", mono16(4)).unwrap();
    let after: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        after.iter().all(|p| before.contains(p)),
        "a file appeared in /dev/shm"
    );
    let fd = region.fd();
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
    assert!(flags.contains(FdFlag::FD_CLOEXEC));
    let seals = SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap());
    assert!(
        seals.contains(SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL)
    );
    let st = nix::sys::stat::fstat(fd).unwrap();
    assert_eq!(st.st_size as usize, mono16(4).region_len());
    assert!(
        nix::unistd::ftruncate(fd, 0).is_err(),
        "shrink must be refused"
    );
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .unwrap();
    assert!(
        link.to_string_lossy()
            .starts_with("/memfd:slotpool:synth:0"),
        "{link:?}"
    );
}

#[test]
fn header_follows_abi_md() {
    let layout = mono16(4);
    let region = HostRegion::create("abi:1", layout).unwrap();
    let fd = dup(&region);
    let map = unsafe_free_read(&fd, 512);
    assert_eq!(&map[0..8], b"SLOTPOOL");
    let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap());
    assert_eq!(u32_at(8), slotpool_ring::ABI_VERSION);
    assert_eq!(u32_at(12), 512);
    assert_eq!(u64_at(16), layout.region_len() as u64);
    assert_eq!(&map[24..29], b"abi:1");
    assert!(map[29..88].iter().all(|&b| b == 0));
    assert_eq!([u32_at(88), u32_at(92), u32_at(96)], [1, 1, 16]);
    assert_eq!([u32_at(100), u32_at(104), u32_at(108)], [4, 8, 8]);
    let (ai, ao, c, e) = (u64_at(112), u64_at(120), u64_at(128), u64_at(136));
    assert_eq!(ai, 512);
    for off in [ai, ao, c, e] {
        assert_eq!(off % 128, 0);
    }
    let stride = layout.audio_stride(1) as u64;
    assert_eq!(stride % 128, 64, "the 4 KiB-aliasing skew");
    assert!(ao >= ai + 256 + 4 * stride && c >= ao + 256 + 4 * stride && e >= c + 256 + 8 * 64);
}

/// Reads the first `n` bytes of the file behind `fd` with pread (no mapping needed).
fn unsafe_free_read(fd: &OwnedFd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let got = nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).unwrap();
    assert_eq!(got, n);
    buf
}

fn open_err(fd: OwnedFd) -> OpenError {
    WorkerRegion::open(fd).expect_err("open must fail")
}

#[test]
fn open_refuses_an_unsealed_memfd() {
    let fd = memfd_create("t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, 8192).unwrap();
    let e = open_err(fd);
    assert!(matches!(e, OpenError::NotSealed { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not a sealed slotpool region"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("start the worker from the slotpool host"),
        "{e}"
    );
}

#[test]
fn open_refuses_something_that_is_not_a_memfd() {
    let (r, _w) = nix::unistd::pipe().unwrap();
    let e = open_err(r);
    assert!(
        matches!(
            e,
            OpenError::Sys {
                call: "fcntl(F_GET_SEALS)",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("SLOTPOOL_REGION_FD"), "{e}");
}

#[test]
fn open_refuses_impossible_sizes() {
    let e = open_err(sealed_memfd(100));
    assert!(matches!(e, OpenError::Size { size: 100, .. }), "{e:?}");
    assert!(e.to_string().contains("100 bytes"), "{e}");
}

#[test]
fn open_refuses_an_unpublished_region() {
    let e = open_err(sealed_memfd(8192));
    assert!(
        matches!(
            e,
            OpenError::BadMagic {
                found: [0, 0, 0, 0, 0, 0, 0, 0]
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("SLOTPOOL"), "{e}");
}

fn corrupt(offset: usize, bytes: &[u8]) -> OpenError {
    let region = HostRegion::create("p:0", mono16(4)).unwrap();
    region.peer_access().write_bytes(offset, bytes);
    open_err(dup(&region))
}

#[test]
fn open_refuses_another_abi_version() {
    // the previous version (ABI 1: samples 16 bytes into the audio slot) and a newer one
    for found in [
        slotpool_ring::ABI_VERSION - 1,
        slotpool_ring::ABI_VERSION + 1,
    ] {
        let e = corrupt(8, &found.to_le_bytes());
        assert!(
            matches!(e, OpenError::AbiVersion { found: f } if f == found),
            "{e:?}"
        );
        assert!(e.to_string().contains("rebuild the worker"), "{e}");
    }
}

#[test]
fn open_refuses_an_invalid_layout() {
    let e = corrupt(88, &0u32.to_le_bytes()); // channels_in = 0
    assert!(
        matches!(
            e,
            OpenError::Layout(LayoutError::Channels {
                field: "channels_in",
                value: 0
            })
        ),
        "{e:?}"
    );
    let e = corrupt(100, &3u32.to_le_bytes()); // audio_capacity = 3
    assert!(
        matches!(
            e,
            OpenError::Layout(LayoutError::Capacity {
                field: "audio_capacity",
                value: 3
            })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("power of two"), "{e}");
}

#[test]
fn open_refuses_inconsistent_offsets_and_lengths() {
    let e = corrupt(136, &4096u64.to_le_bytes());
    assert!(
        matches!(
            e,
            OpenError::Inconsistent {
                field: "events offset",
                found: 4096,
                ..
            }
        ),
        "{e:?}"
    );
    let e = corrupt(16, &1u64.to_le_bytes());
    assert!(
        matches!(
            e,
            OpenError::Inconsistent {
                field: "region_len",
                ..
            }
        ),
        "{e:?}"
    );
    let e = corrupt(12, &511u32.to_le_bytes());
    assert!(
        matches!(
            e,
            OpenError::Inconsistent {
                field: "header_len",
                ..
            }
        ),
        "{e:?}"
    );
    // A layout that is valid but is not the one the file was sized for.
    let e = corrupt(96, &32u32.to_le_bytes()); // block_frames 16 -> 32
    assert!(matches!(e, OpenError::Inconsistent { .. }), "{e:?}");
    assert!(e.to_string().contains("the layout implies"), "{e}");
}

#[test]
fn open_refuses_a_bad_slot_name() {
    let e = corrupt(24, &[0xff, 0xfe]);
    assert!(matches!(e, OpenError::SlotName), "{e:?}");
    let e = corrupt(30, b"x"); // a byte after the NUL padding started
    assert!(matches!(e, OpenError::SlotName), "{e:?}");
}

#[test]
fn create_refuses_bad_names_and_layouts_with_advice() {
    for (name, why) in [
        ("", "empty"),
        ("a\0b", "NUL"),
        (&"x".repeat(65), "longer than 64"),
    ] {
        let e = HostRegion::create(name, mono16(4)).unwrap_err();
        assert!(matches!(e, RegionError::SlotName { .. }), "{e:?}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let bad = SlotLayout {
        block_frames: 0,
        ..mono16(4)
    };
    let e = HostRegion::create("p:0", bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("slot p:0: invalid layout: block_frames = 0"),
        "{e}"
    );
    let e = HostRegion::create_heap(
        "p:0",
        SlotLayout {
            command_capacity: 5,
            ..mono16(4)
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("command_capacity = 5"), "{e}");
}

#[test]
fn worker_can_open_the_same_region_many_times() {
    let region = HostRegion::create("p:0", mono16(4)).unwrap();
    for _ in 0..3 {
        let w = WorkerRegion::open(dup(&region)).unwrap();
        assert_eq!(w.slot_name(), "p:0");
        assert_eq!(w.layout(), mono16(4));
    }
}
