//! Creating, publishing and opening slot regions; the host and worker ends.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use nix::errno::Errno;
use thiserror::Error;

use crate::audio::{AudioConsumer, AudioProducer};
use crate::bell::{HostBell, Monitor, WaitOutcome, Words, WorkerBell};
use crate::layout::{
    ABI_VERSION, LayoutError, MAGIC, MAX_REGION_LEN, MAX_SLOT_NAME, Offsets, RECORD_SIZE,
    SlotLayout, hdr,
};
use crate::mapping::Mapping;
use crate::records::{CommandConsumer, CommandProducer, EventConsumer, EventProducer};
use crate::ring::{ConsumerCore, ProducerCore, RingFault, RingGeom, RingId};
use crate::sync::Ordering;
use crate::sys;
use crate::time::MonoTime;

/// What a region's memory is: see [`Memfd`] and [`Heap`].
pub trait Backing: sealed::Sealed + Send + Sync + 'static {}

/// A sealed memfd shared with a worker process (production).
#[derive(Debug)]
pub struct Memfd(());
/// A heap block shared only between threads of this process (tests, loom).
#[derive(Debug)]
pub struct Heap(());
impl Backing for Memfd {}
impl Backing for Heap {}
mod sealed {
    /// What a region of this backing keeps besides the mapping.
    pub trait Sealed {
        type Handle: Send + Sync + 'static;
    }
    impl Sealed for super::Memfd {
        /// The memfd itself (handed to each new worker).
        type Handle = std::os::fd::OwnedFd;
    }
    impl Sealed for super::Heap {
        type Handle = ();
    }
}

/// Creating a region failed.
#[derive(Debug, Error)]
pub enum RegionError {
    /// The layout is out of bounds.
    #[error("slot {slot}: invalid layout: {source}")]
    Layout {
        /// Slot name.
        slot: String,
        /// What is wrong.
        source: LayoutError,
    },
    /// The slot name cannot be stored in the header.
    #[error(
        "slot name {name:?}: {why}; use 1..={MAX_SLOT_NAME} bytes of UTF-8 without NUL, like `program:0`"
    )]
    SlotName {
        /// The name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A system call failed.
    #[error(
        "slot {slot}: {call} failed: {errno}; check the memory limits (ulimit -l, RLIMIT_AS, memfd support in the kernel)"
    )]
    Sys {
        /// Slot name.
        slot: String,
        /// The call.
        call: &'static str,
        /// The error.
        errno: Errno,
    },
    /// Mapping the memfd failed.
    #[error(
        "slot {slot}: mmap of the {len}-byte region failed: {source}; check RLIMIT_AS and free memory"
    )]
    Map {
        /// Slot name.
        slot: String,
        /// Bytes.
        len: usize,
        /// The error.
        source: std::io::Error,
    },
    /// `host_end` was already taken from this region.
    #[error(
        "slot {slot}: the host end was already taken; keep the one HostEnd and call reset() on it"
    )]
    AlreadyTaken {
        /// Slot name.
        slot: String,
    },
}

/// Opening a region from an inherited fd failed. Each variant says what was wrong;
/// every one of them means the worker was not started by a compatible slotpool host.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The fd cannot be inspected (not open, not a file).
    #[error(
        "region fd: {call} failed: {errno}; start the worker from the slotpool host, which passes the region in SLOTPOOL_REGION_FD"
    )]
    Sys {
        /// The call.
        call: &'static str,
        /// The error.
        errno: Errno,
    },
    /// The fd is not sealed against grow, shrink and further sealing.
    #[error(
        "region fd is not a sealed slotpool region (seals {found:#x}, need grow|shrink|seal = {need:#x}); start the worker from the slotpool host"
    )]
    NotSealed {
        /// Seals found.
        found: i32,
        /// Seals needed.
        need: i32,
    },
    /// The file size is impossible for a region.
    #[error(
        "region fd has {size} bytes, a slot region has {min}..={max}; start the worker from the slotpool host"
    )]
    Size {
        /// fstat size.
        size: u64,
        /// Smallest possible.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// Mapping failed.
    #[error("mmap of the {len}-byte region failed: {source}; check RLIMIT_AS and free memory")]
    Map {
        /// Bytes.
        len: usize,
        /// The error.
        source: std::io::Error,
    },
    /// The header does not start with `SLOTPOOL`.
    #[error(
        "region header magic is {found:?}, expected \"SLOTPOOL\": the fd is not a slot region or the host has not published it yet"
    )]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Another ABI version.
    #[error(
        "region ABI version {found}, this worker speaks {ABI_VERSION}: rebuild the worker against the host's slotpool version"
    )]
    AbiVersion {
        /// Found.
        found: u32,
    },
    /// The layout stored in the header is out of bounds.
    #[error(
        "region header holds an invalid layout: {0}; the host and worker disagree on the ABI, rebuild the worker"
    )]
    Layout(LayoutError),
    /// A header field disagrees with what the layout implies.
    #[error(
        "region header field {field} = {found}, the layout implies {expected}; the region is corrupt or from another ABI"
    )]
    Inconsistent {
        /// Field.
        field: &'static str,
        /// Value found.
        found: u64,
        /// Value the layout implies.
        expected: u64,
    },
    /// The slot name is not NUL-padded UTF-8.
    #[error("region header slot name is not NUL-padded UTF-8; the region is corrupt")]
    SlotName,
    /// `worker_end` was already taken from this region.
    #[error(
        "slot {slot}: the worker end was already taken from this WorkerRegion; keep the one WorkerEnd"
    )]
    AlreadyTaken {
        /// Slot name.
        slot: String,
    },
}

/// The geometry both sides derive from the same validated layout.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    layout: SlotLayout,
    off: Offsets,
    audio_in: RingGeom,
    audio_out: RingGeom,
    commands: RingGeom,
    events: RingGeom,
}

impl Geometry {
    fn new(layout: SlotLayout) -> Self {
        let off = layout.offsets();
        let ring = |id, ctrl, capacity: u32, stride| RingGeom {
            id,
            ctrl,
            capacity: capacity as u64,
            stride,
        };
        Self {
            layout,
            off,
            audio_in: ring(
                RingId::AudioIn,
                off.audio_in,
                layout.audio_capacity,
                layout.audio_stride(layout.channels_in),
            ),
            audio_out: ring(
                RingId::AudioOut,
                off.audio_out,
                layout.audio_capacity,
                layout.audio_stride(layout.channels_out),
            ),
            commands: ring(
                RingId::Commands,
                off.commands,
                layout.command_capacity,
                RECORD_SIZE,
            ),
            events: ring(
                RingId::Events,
                off.events,
                layout.event_capacity,
                RECORD_SIZE,
            ),
        }
    }
}

/// The slot region as the host owns it: the mapping, the memfd (for [`Memfd`]) and
/// private copies of the layout and name. `Send + Sync`.
///
/// Build with [`HostRegion::create`] (memfd) or [`HostRegion::create_heap`] (heap).
pub struct HostRegion<B: Backing = Memfd> {
    slot: String,
    geo: Geometry,
    map: Arc<Mapping>,
    handle: <B as sealed::Sealed>::Handle,
    host_end_taken: AtomicBool,
    _backing: PhantomData<B>,
}

impl<B: Backing> std::fmt::Debug for HostRegion<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRegion")
            .field("slot", &self.slot)
            .field("layout", &self.geo.layout)
            .field("map", &self.map)
            .finish()
    }
}

fn check_slot_name(name: &str) -> Result<(), RegionError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_SLOT_NAME {
        "longer than 64 bytes"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(RegionError::SlotName {
        name: name.to_owned(),
        why,
    })
}

/// Writes the whole header from private values and publishes it (magic last, Release).
/// Also stores all ring counters (host's, and worker's equal to them) and clears the
/// worker words. Used at creation and at reset.
fn write_header(map: &Mapping, geo: &Geometry, slot: &str, counters: [u64; 4]) {
    let l = &geo.layout;
    let o = &geo.off;
    // All offsets below are header fields or ring counters of the private layout, inside
    // the mapping (map.len() == region_len >= hdr::LEN); the checked accessors assert it.
    // No worker is attached (creation, or reset after the worker was reaped), so nothing
    // else in this process touches the header bytes concurrently.
    //
    // Unpublish first so a reader racing a reset never trusts a half-written header.
    // Relaxed is enough: the Release store of the magic at the end orders everything.
    map.word64(hdr::MAGIC).store(0, Ordering::Relaxed);
    map.put(hdr::ABI_VERSION, &ABI_VERSION.to_le_bytes());
    map.put(hdr::HEADER_LEN, &(hdr::LEN as u32).to_le_bytes());
    map.put(hdr::REGION_LEN, &(o.region_len as u64).to_le_bytes());
    let mut name = [0u8; MAX_SLOT_NAME];
    name[..slot.len()].copy_from_slice(slot.as_bytes());
    map.put(hdr::SLOT_NAME, &name);
    for (off, v) in [
        (hdr::CHANNELS_IN, l.channels_in),
        (hdr::CHANNELS_OUT, l.channels_out),
        (hdr::BLOCK_FRAMES, l.block_frames),
        (hdr::AUDIO_CAPACITY, l.audio_capacity),
        (hdr::COMMAND_CAPACITY, l.command_capacity),
        (hdr::EVENT_CAPACITY, l.event_capacity),
    ] {
        map.put(off, &v.to_le_bytes());
    }
    for (off, v) in [
        (hdr::OFF_AUDIO_IN, o.audio_in),
        (hdr::OFF_AUDIO_OUT, o.audio_out),
        (hdr::OFF_COMMANDS, o.commands),
        (hdr::OFF_EVENTS, o.events),
    ] {
        map.put(off, &(v as u64).to_le_bytes());
    }
    // Relaxed stores: all published by the Release store of the magic below (and the fd
    // handover to the worker is an exec, a full barrier, after it).
    for (ring, pos) in [geo.audio_in, geo.audio_out, geo.commands, geo.events]
        .iter()
        .zip(counters)
    {
        map.word64(ring.head_off()).store(pos, Ordering::Relaxed);
        map.word64(ring.tail_off()).store(pos, Ordering::Relaxed);
    }
    for off in [hdr::WORKER_HEARTBEAT, hdr::PROCESS_NS] {
        map.word64(off).store(0, Ordering::Relaxed);
    }
    for off in [
        hdr::DONE,
        hdr::WORKER_WAITING,
        hdr::STATE,
        hdr::PID,
        hdr::FAULT_CODE,
        hdr::HOST_WAITING,
    ] {
        map.word32(off).store(0, Ordering::Relaxed);
    }
    // Release pairs with the Acquire load of the magic in `read_header`: a reader that
    // sees "SLOTPOOL" sees every field written above.
    map.word64(hdr::MAGIC).store(MAGIC, Ordering::Release);
}

impl HostRegion<Memfd> {
    /// Creates the region of `slot_name` for `layout`: a sealed memfd (close-on-exec,
    /// nothing in /dev/shm), mapped shared with MAP_POPULATE, mlock'ed where permitted,
    /// header initialised and published. Allocates: call off the audio thread.
    pub fn create(slot_name: &str, layout: SlotLayout) -> Result<Self, RegionError> {
        check_slot_name(slot_name)?;
        let slot = || slot_name.to_owned();
        layout.validate().map_err(|source| RegionError::Layout {
            slot: slot(),
            source,
        })?;
        let geo = Geometry::new(layout);
        let len = geo.off.region_len;
        let fd = sys::sealed_memfd(slot_name, len).map_err(|(call, errno)| RegionError::Sys {
            slot: slot(),
            call,
            errno,
        })?;
        let raw = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&fd)
            .map_err(|source| RegionError::Map {
                slot: slot(),
                len,
                source,
            })?;
        // mlock where permitted; without CAP_IPC_LOCK or a big enough RLIMIT_MEMLOCK the
        // pages stay populated but swappable, which is acceptable.
        let _ = raw.lock();
        let map = Mapping::from_mmap(raw);
        Ok(Self::finish(slot_name, geo, map, fd))
    }

    /// The memfd, close-on-exec. The spawner `dup2`s it into the child (which clears
    /// close-on-exec on the duplicate) and passes its number in `SLOTPOOL_REGION_FD`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.handle.as_fd()
    }
}

impl HostRegion<Heap> {
    /// A region on the heap, for in-process tests and loom models: same header, same
    /// rings, same validation; open its worker side with [`HostRegion::open_worker`].
    pub fn create_heap(slot_name: &str, layout: SlotLayout) -> Result<Self, RegionError> {
        check_slot_name(slot_name)?;
        layout.validate().map_err(|source| RegionError::Layout {
            slot: slot_name.to_owned(),
            source,
        })?;
        let geo = Geometry::new(layout);
        let map = Mapping::heap(geo.off.region_len);
        Ok(Self::finish(slot_name, geo, map, ()))
    }

    /// The worker's view of this heap region, opened through the same header
    /// validation as [`WorkerRegion::open`] (minus the fd checks).
    pub fn open_worker(&self) -> Result<WorkerRegion, OpenError> {
        WorkerRegion::from_mapping(self.map.clone())
    }
}

impl<B: Backing> HostRegion<B> {
    fn finish(
        slot_name: &str,
        geo: Geometry,
        map: Mapping,
        handle: <B as sealed::Sealed>::Handle,
    ) -> Self {
        debug_assert_eq!(map.len(), geo.off.region_len);
        write_header(&map, &geo, slot_name, [0; 4]);
        Self {
            slot: slot_name.to_owned(),
            geo,
            map: Arc::new(map),
            handle,
            host_end_taken: AtomicBool::new(false),
            _backing: PhantomData,
        }
    }

    /// The layout (private copy, never re-read from the region).
    pub fn layout(&self) -> SlotLayout {
        self.geo.layout
    }

    /// The slot's name, `<program>:<index>`.
    pub fn slot_name(&self) -> &str {
        &self.slot
    }

    /// The host's end of every ring and of the bell. Once per region: a second call is
    /// [`RegionError::AlreadyTaken`] (the end survives worker restarts: use
    /// [`HostEnd::reset`]).
    pub fn host_end(&self) -> Result<HostEnd, RegionError> {
        if self
            .host_end_taken
            // Relaxed: the flag guards only itself (one taker), it publishes nothing.
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(RegionError::AlreadyTaken {
                slot: self.slot.clone(),
            });
        }
        let m = &self.map;
        let g = &self.geo;
        let l = g.layout;
        Ok(HostEnd {
            audio_in: AudioProducer::new(
                ProducerCore::new(m.clone(), g.audio_in, 0, 0),
                l.channels_in,
                l.block_frames,
            ),
            audio_out: AudioConsumer::new(
                ConsumerCore::new(m.clone(), g.audio_out, 0),
                l.channels_out,
                l.block_frames,
            ),
            commands: CommandProducer::new(ProducerCore::new(m.clone(), g.commands, 0, 0)),
            events: EventConsumer::new(ConsumerCore::new(m.clone(), g.events, 0)),
            bell: HostBell::new(Words::new(m.clone())),
            private: HostPrivate {
                name: slot_bytes(&self.slot),
                geo: *g,
                map: m.clone(),
            },
        })
    }

    /// A read-only view of the worker words for the supervisor. Any number, cheap.
    pub fn monitor(&self) -> Monitor {
        Monitor::new(Words::new(self.map.clone()))
    }

    /// Raw peer-write access for hostile-peer tests.
    #[cfg(feature = "testing")]
    pub fn peer_access(&self) -> crate::testing::PeerAccess {
        crate::testing::PeerAccess::new(self.map.clone(), self.geo.layout)
    }
}

fn slot_bytes(s: &str) -> [u8; MAX_SLOT_NAME] {
    let mut b = [0u8; MAX_SLOT_NAME];
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

/// What `reset` needs to rewrite the header without allocating: private copies.
#[derive(Debug)]
struct HostPrivate {
    name: [u8; MAX_SLOT_NAME],
    geo: Geometry,
    map: Arc<Mapping>,
}

/// Whether `wait_output` got the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStatus {
    /// The block tagged with the requested cycle was copied out.
    Ready,
    /// It did not arrive by the deadline (or a later cycle is already at the front):
    /// use the slot's fallback. A block arriving later is discarded by its tag.
    Late,
}

/// Everything the engine needs for one slot. `Send`; owned by the audio thread.
/// The fields are public so parts can be borrowed independently.
#[derive(Debug)]
pub struct HostEnd {
    /// Audio host → worker.
    pub audio_in: AudioProducer,
    /// Audio worker → host.
    pub audio_out: AudioConsumer,
    /// Commands host → worker.
    pub commands: CommandProducer,
    /// Events worker → host.
    pub events: EventConsumer,
    /// Doorbell/done.
    pub bell: HostBell,
    private: HostPrivate,
}

impl HostEnd {
    /// Makes the region fresh for a new worker, keeping the host's positions: the
    /// worker-side counters are stored equal to the host's private ones (pending input
    /// and commands are dropped, unread output and events too), the worker words are
    /// cleared, the header ident is rewritten from the private copy (a dead worker may
    /// have scribbled it) and re-published, and every ring fault is cleared.
    ///
    /// Call only while no worker is attached (after it was reaped). Atomic stores and
    /// plain stores only, no allocation: RT-safe.
    pub fn reset(&mut self) {
        let ap = self.audio_in.core_mut();
        let ac = self.audio_out.core_mut();
        let cp = self.commands.core_mut();
        let ec = self.events.core_mut();
        let counters = [ap.head(), ac.tail(), cp.head(), ec.tail()];
        ap.reset();
        ac.reset();
        cp.reset();
        ec.reset();
        let p = &self.private;
        let name_len = p.name.iter().position(|&b| b == 0).unwrap_or(MAX_SLOT_NAME);
        let name = std::str::from_utf8(&p.name[..name_len]).unwrap_or("");
        write_header(&p.map, &p.geo, name, counters);
        self.bell.acknowledge();
    }

    /// Waits for the output block tagged `cycle`, copies it into `out` and returns
    /// [`OutputStatus::Ready`]; never waits past `deadline` ([`OutputStatus::Late`]).
    /// Blocks with older tags (late answers to earlier cycles) are discarded on the
    /// way, at most one ring's worth per look. RT-safe: the only blocking call is the
    /// bounded futex wait.
    pub fn wait_output(
        &mut self,
        cycle: u64,
        out: &mut [f32],
        deadline: MonoTime,
    ) -> Result<OutputStatus, RingFault> {
        let capacity = self.private.geo.layout.audio_capacity;
        loop {
            let seen = self.bell.done_count();
            // Bounded: at most `capacity` discards per look (the ring holds no more).
            for _ in 0..=capacity {
                match self.audio_out.peek_cycle()? {
                    Some(c) if c < cycle => {
                        self.audio_out.skip()?;
                    }
                    Some(c) if c == cycle => {
                        let got = self.audio_out.pop(out)?;
                        // The tag was read twice; a peer changing it in between gets Late.
                        return Ok(if got == Some(cycle) {
                            OutputStatus::Ready
                        } else {
                            OutputStatus::Late
                        });
                    }
                    // A later cycle at the front: ours will not come.
                    Some(_) => return Ok(OutputStatus::Late),
                    None => break,
                }
            }
            // The supervisor saw the worker exit (`Interrupter`): its block will not
            // come. Checked after the look above, so a block it delivered before it
            // died is still taken.
            if self.bell.interrupted() {
                return Ok(OutputStatus::Late);
            }
            // Checked on every round, not only when the futex wait times out: a worker
            // that keeps bumping `done` without delivering must not keep us past it.
            if MonoTime::now() >= deadline {
                return Ok(OutputStatus::Late);
            }
            if self.bell.wait_done(seen, deadline) == WaitOutcome::TimedOut {
                // One last look: the block may have landed just before the deadline.
                if self.audio_out.peek_cycle()? == Some(cycle)
                    && self.audio_out.pop(out)? == Some(cycle)
                {
                    return Ok(OutputStatus::Ready);
                }
                return Ok(OutputStatus::Late);
            }
        }
    }
}

/// The region as a worker sees it, opened from the inherited fd.
pub struct WorkerRegion {
    slot: String,
    geo: Geometry,
    map: Arc<Mapping>,
    worker_end_taken: AtomicBool,
}

impl std::fmt::Debug for WorkerRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRegion")
            .field("slot", &self.slot)
            .field("layout", &self.geo.layout)
            .field("map", &self.map)
            .finish()
    }
}

impl WorkerRegion {
    /// Opens the region from the fd the host passed (`SLOTPOOL_REGION_FD`): checks the
    /// seals (F_GET_SEALS), the fstat size, the magic, the ABI version and that every
    /// header field matches the layout it holds. The fd is closed once mapped.
    /// Allocates: call before entering the process loop.
    pub fn open(fd: OwnedFd) -> Result<WorkerRegion, OpenError> {
        let need = sys::required_seals();
        let seals = sys::seals(&fd).map_err(|errno| OpenError::Sys {
            call: "fcntl(F_GET_SEALS)",
            errno,
        })?;
        if !seals.contains(need) {
            return Err(OpenError::NotSealed {
                found: seals.bits(),
                need: need.bits(),
            });
        }
        let size = sys::file_size(&fd).map_err(|errno| OpenError::Sys {
            call: "fstat",
            errno,
        })?;
        let size_err = || OpenError::Size {
            size,
            min: hdr::LEN,
            max: MAX_REGION_LEN,
        };
        let len = usize::try_from(size).map_err(|_| size_err())?;
        if !(hdr::LEN..=MAX_REGION_LEN).contains(&len) {
            return Err(size_err());
        }
        let raw = memmap2::MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&fd)
            .map_err(|source| OpenError::Map { len, source })?;
        let _ = raw.lock();
        drop(fd);
        Self::from_mapping(Arc::new(Mapping::from_mmap(raw)))
    }

    fn from_mapping(map: Arc<Mapping>) -> Result<WorkerRegion, OpenError> {
        let (slot, geo) = read_header(&map)?;
        Ok(WorkerRegion {
            slot,
            geo,
            map,
            worker_end_taken: AtomicBool::new(false),
        })
    }

    /// The layout read and validated at open (private copy).
    pub fn layout(&self) -> SlotLayout {
        self.geo.layout
    }

    /// The slot's name as the host wrote it.
    pub fn slot_name(&self) -> &str {
        &self.slot
    }

    /// The worker's end of every ring and of the bell; starting counters are read from
    /// the region (the host set them at creation or reset). Once per `WorkerRegion`.
    pub fn worker_end(&self) -> Result<WorkerEnd, OpenError> {
        if self
            .worker_end_taken
            // Relaxed: the flag guards only itself (one taker), it publishes nothing.
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(OpenError::AlreadyTaken {
                slot: self.slot.clone(),
            });
        }
        let m = &self.map;
        let g = &self.geo;
        let l = g.layout;
        // The worker's own counters start where the host put them: audio-in and command
        // tails, audio-out and event heads. Any value is memory-safe (masked) and the
        // other side's counter is validated against it on first use.
        // Acquire pairs with the Release stores of the counters in the host's
        // `ProducerCore::reset`/`ConsumerCore::reset` (and with the magic's Release,
        // already acquired by `read_header`, at creation).
        let start = |off: usize| m.word64(off).load(Ordering::Acquire);
        let producer = |ring: RingGeom| {
            ProducerCore::new(
                m.clone(),
                ring,
                start(ring.head_off()),
                start(ring.tail_off()),
            )
        };
        Ok(WorkerEnd {
            audio_in: AudioConsumer::new(
                ConsumerCore::new(m.clone(), g.audio_in, start(g.audio_in.tail_off())),
                l.channels_in,
                l.block_frames,
            ),
            audio_out: AudioProducer::new(producer(g.audio_out), l.channels_out, l.block_frames),
            commands: CommandConsumer::new(ConsumerCore::new(
                m.clone(),
                g.commands,
                start(g.commands.tail_off()),
            )),
            events: EventProducer::new(producer(g.events)),
            bell: WorkerBell::new(Words::new(m.clone())),
        })
    }

    /// Fault injection: writes garbage derived from `seed` over the worker-written
    /// header words and every ring counter (the worker SDK's `scribble` fault mode).
    /// The host must see a [`RingFault`] or garbage values, never anything worse.
    #[cfg(feature = "fault-injection")]
    pub fn scribble(&self, seed: u64) {
        let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: deterministic garbage from the seed.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let g = &self.geo;
        for ring in [g.audio_in, g.audio_out, g.commands, g.events] {
            for off in [ring.head_off(), ring.tail_off()] {
                // SAFETY: ring counter word of the private layout.
                // Relaxed: garbage needs no ordering.
                unsafe { self.map.u64_at(off) }.store(next(), Ordering::Relaxed);
            }
        }
        for off in [hdr::WORKER_HEARTBEAT, hdr::PROCESS_NS] {
            // SAFETY: header u64 word.
            unsafe { self.map.u64_at(off) }.store(next(), Ordering::Relaxed);
        }
        for off in [
            hdr::DONE,
            hdr::WORKER_WAITING,
            hdr::STATE,
            hdr::PID,
            hdr::FAULT_CODE,
        ] {
            // SAFETY: header u32 word.
            unsafe { self.map.u32_at(off) }.store(next() as u32, Ordering::Relaxed);
        }
    }

    /// Raw peer-write access for hostile-host tests (the worker side is validated too).
    #[cfg(feature = "testing")]
    pub fn peer_access(&self) -> crate::testing::PeerAccess {
        crate::testing::PeerAccess::new(self.map.clone(), self.geo.layout)
    }
}

/// Copies the header out of the region, validates it and derives the geometry.
fn read_header(map: &Mapping) -> Result<(String, Geometry), OpenError> {
    if map.len() < hdr::LEN {
        return Err(OpenError::Size {
            size: map.len() as u64,
            min: hdr::LEN,
            max: MAX_REGION_LEN,
        });
    }
    // Every field is copied out once (checked accessors: all offsets are below
    // hdr::LEN <= map.len()); only the copies are used.
    // Acquire pairs with the Release store of the magic in `write_header`.
    let magic = map.word64(hdr::MAGIC).load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(OpenError::BadMagic {
            found: magic.to_le_bytes(),
        });
    }
    let abi = map.get_u32(hdr::ABI_VERSION);
    if abi != ABI_VERSION {
        return Err(OpenError::AbiVersion { found: abi });
    }
    let layout = SlotLayout {
        channels_in: map.get_u32(hdr::CHANNELS_IN),
        channels_out: map.get_u32(hdr::CHANNELS_OUT),
        block_frames: map.get_u32(hdr::BLOCK_FRAMES),
        audio_capacity: map.get_u32(hdr::AUDIO_CAPACITY),
        command_capacity: map.get_u32(hdr::COMMAND_CAPACITY),
        event_capacity: map.get_u32(hdr::EVENT_CAPACITY),
    };
    layout.validate().map_err(OpenError::Layout)?;
    let geo = Geometry::new(layout);
    let o = geo.off;
    for (field, found, expected) in [
        (
            "header_len",
            map.get_u32(hdr::HEADER_LEN) as u64,
            hdr::LEN as u64,
        ),
        (
            "region_len",
            map.get_u64(hdr::REGION_LEN),
            o.region_len as u64,
        ),
        ("file size", map.len() as u64, o.region_len as u64),
        (
            "audio_in offset",
            map.get_u64(hdr::OFF_AUDIO_IN),
            o.audio_in as u64,
        ),
        (
            "audio_out offset",
            map.get_u64(hdr::OFF_AUDIO_OUT),
            o.audio_out as u64,
        ),
        (
            "commands offset",
            map.get_u64(hdr::OFF_COMMANDS),
            o.commands as u64,
        ),
        (
            "events offset",
            map.get_u64(hdr::OFF_EVENTS),
            o.events as u64,
        ),
    ] {
        if found != expected {
            return Err(OpenError::Inconsistent {
                field,
                found,
                expected,
            });
        }
    }
    let mut name = [0u8; MAX_SLOT_NAME];
    map.get(hdr::SLOT_NAME, &mut name);
    let len = name.iter().position(|&b| b == 0).unwrap_or(MAX_SLOT_NAME);
    if name[len..].iter().any(|&b| b != 0) {
        return Err(OpenError::SlotName);
    }
    let slot = std::str::from_utf8(&name[..len])
        .map_err(|_| OpenError::SlotName)?
        .to_owned();
    Ok((slot, geo))
}

/// Everything the worker's process loop needs. `Send`; owned by the process loop.
#[derive(Debug)]
pub struct WorkerEnd {
    /// Audio host → worker.
    pub audio_in: AudioConsumer,
    /// Audio worker → host.
    pub audio_out: AudioProducer,
    /// Commands host → worker.
    pub commands: CommandConsumer,
    /// Events worker → host.
    pub events: EventProducer,
    /// Doorbell/done and the worker's status words.
    pub bell: WorkerBell,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn sync<T: Sync>() {}

    #[test]
    fn handles_are_send_and_regions_sync() {
        send::<HostEnd>();
        send::<WorkerEnd>();
        send::<HostRegion>();
        sync::<HostRegion>();
        send::<HostRegion<Heap>>();
        sync::<HostRegion<Heap>>();
        send::<WorkerRegion>();
        sync::<WorkerRegion>();
        send::<Monitor>();
        sync::<Monitor>();
    }
}
