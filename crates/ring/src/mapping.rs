//! The bytes of a region and the only ways to touch them.
//!
//! A [`Mapping`] is either a shared mapping of a memfd (the real thing) or a heap
//! allocation (in-process tests, loom). Nothing outside this module turns the base
//! pointer into anything: the rest of the crate asks for an atomic word at an offset or
//! copies bytes in or out of a slot at an offset. No `&`/`&mut` to plain bytes of the
//! region is ever formed; atomic words are reached through short-lived `&AtomicU*`
//! created from a raw pointer at each access (the atomic type is what makes a shared
//! reference to memory another process writes sound).

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::sync::{AtomicU32, AtomicU64};

enum Owner {
    /// Shared writable mapping of a memfd; unmapped on drop.
    Mmap(#[allow(dead_code)] memmap2::MmapRaw),
    /// Zeroed heap block, page aligned; freed on drop.
    Heap(Layout),
}

/// A region's bytes: base pointer, length and what keeps them alive.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    owner: Owner,
    #[cfg(loom)]
    loom: loom_side::Tables,
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.owner {
            Owner::Mmap(_) => "memfd",
            Owner::Heap(_) => "heap",
        };
        f.debug_struct("Mapping")
            .field("kind", &kind)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the mapping is plain memory valid for its whole lifetime; every access goes
// through atomics or through the SPSC protocol (a slot is written only by the producer
// that owns it until the Release store of head, read only by the consumer after the
// matching Acquire load). The raw pointer itself carries no thread affinity.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared access from several threads is exactly what the atomics and
// the ring protocol are for.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Wraps a shared writable memfd mapping.
    pub(crate) fn from_mmap(map: memmap2::MmapRaw) -> Self {
        let base = NonNull::new(map.as_mut_ptr()).unwrap_or(NonNull::dangling());
        let len = map.len();
        Self::build(base, len, Owner::Mmap(map))
    }

    /// A zeroed, page-aligned heap region of `len` bytes (`len` > 0).
    pub(crate) fn heap(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(1), 4096).unwrap_or(Layout::new::<u64>());
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self::build(base, len, Owner::Heap(layout))
    }

    #[cfg(not(loom))]
    fn build(base: NonNull<u8>, len: usize, owner: Owner) -> Self {
        Self { base, len, owner }
    }

    #[cfg(loom)]
    fn build(base: NonNull<u8>, len: usize, owner: Owner) -> Self {
        Self {
            base,
            len,
            owner,
            loom: loom_side::Tables::default(),
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to byte `off`. Safe to form (wrapping arithmetic); dereferencing it is
    /// what the unsafe methods below do, after their bounds contract.
    #[inline(always)]
    fn ptr_at(&self, off: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(off)
    }

    /// The atomic u64 at byte offset `off` (hot path: bounds checked in debug builds).
    ///
    /// # Safety
    /// `off` is 8-aligned, `off + 8 <= self.len()`, and the word at `off` is only ever
    /// accessed atomically by this process (the layout's word offsets satisfy this).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) unsafe fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "u64 word {off} outside {}",
            self.len
        );
        // SAFETY: in bounds and aligned (caller contract, checked above in debug builds);
        // the mapping outlives `&self`; all accesses of this process to the word are
        // atomic. Writes by the peer process are outside this process's memory model.
        unsafe { AtomicU64::from_ptr(self.ptr_at(off).cast::<u64>()) }
    }

    /// The atomic u32 at byte offset `off` (hot path: bounds checked in debug builds).
    ///
    /// # Safety
    /// `off` is 4-aligned, `off + 4 <= self.len()`, and the word is only ever accessed
    /// atomically by this process.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) unsafe fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "u32 word {off} outside {}",
            self.len
        );
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU32::from_ptr(self.ptr_at(off).cast::<u32>()) }
    }

    /// Loom build: the model atomic standing for the u64 word at `off`.
    ///
    /// # Safety
    /// Same contract as the real build (kept so call sites are identical).
    #[cfg(loom)]
    pub(crate) unsafe fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.loom.u64_at(off)
    }

    /// Loom build: the model atomic standing for the u32 word at `off`.
    ///
    /// # Safety
    /// Same contract as the real build.
    #[cfg(loom)]
    pub(crate) unsafe fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.loom.u32_at(off)
    }

    /// Checked form of `u64_at` for setup and status paths: an offset that is not an
    /// aligned in-bounds word is a bug of this crate (offsets come from the private,
    /// validated layout, never from the peer) and panics.
    pub(crate) fn word64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off.checked_add(8).is_some_and(|e| e <= self.len),
            "u64 word {off}"
        );
        // SAFETY: aligned and in bounds (asserted above); region words are only accessed
        // atomically by this crate.
        unsafe { self.u64_at(off) }
    }

    /// Checked form of `u32_at` (see `word64`).
    pub(crate) fn word32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off.checked_add(4).is_some_and(|e| e <= self.len),
            "u32 word {off}"
        );
        // SAFETY: aligned and in bounds (asserted above); region words are only accessed
        // atomically by this crate.
        unsafe { self.u32_at(off) }
    }

    /// Copies `len` bytes from `src` into the region at `off` (a producer filling the
    /// slot it owns). Hot path: bounds checked in debug builds only.
    ///
    /// # Safety
    /// `src` is valid for `len` bytes of reads; `off + len <= self.len()`; by the ring
    /// protocol no other thread of this process accesses those bytes concurrently.
    pub(crate) unsafe fn write_bytes(&self, off: usize, src: *const u8, len: usize) {
        debug_assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "write {off}+{len} > {}",
            self.len
        );
        let dst = self.ptr_at(off);
        self.track_write(off, || {
            // SAFETY: destination in bounds (caller contract, debug-checked above); the
            // source is caller memory, never inside the region, so they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
        });
    }

    /// Copies `len` bytes out of the region at `off` into `dst`. Hot path: bounds
    /// checked in debug builds only.
    ///
    /// # Safety
    /// `dst` is valid for `len` bytes of writes and not inside the region;
    /// `off + len <= self.len()`.
    pub(crate) unsafe fn read_bytes(&self, off: usize, dst: *mut u8, len: usize) {
        debug_assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "read {off}+{len} > {}",
            self.len
        );
        let src = self.ptr_at(off);
        self.track_read(off, || {
            // SAFETY: source in bounds (caller contract, debug-checked above); `dst` is
            // caller memory outside the region, so no overlap. The peer may be writing
            // these bytes at the same time (a hostile peer): the copy then yields
            // arbitrary bytes, which every caller treats as untrusted data.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
        });
    }

    /// Checked copy of `src` into the region at `off` (setup paths: the header).
    /// Out of bounds is a bug of this crate and panics.
    pub(crate) fn put(&self, off: usize, src: &[u8]) {
        assert!(
            off.checked_add(src.len()).is_some_and(|e| e <= self.len),
            "put {off}+{}",
            src.len()
        );
        // SAFETY: in bounds (asserted above); `src` is caller memory outside the region.
        // Callers (header writes) run while no other thread of this process reads the
        // header (creation, or reset with no worker attached).
        unsafe { self.write_bytes(off, src.as_ptr(), src.len()) }
    }

    /// Checked copy out of the region at `off` into `dst` (setup paths).
    pub(crate) fn get(&self, off: usize, dst: &mut [u8]) {
        assert!(
            off.checked_add(dst.len()).is_some_and(|e| e <= self.len),
            "get {off}+{}",
            dst.len()
        );
        // SAFETY: in bounds (asserted above); `dst` is caller memory outside the region.
        unsafe { self.read_bytes(off, dst.as_mut_ptr(), dst.len()) }
    }

    /// Checked little-endian u32 read (untrusted value).
    pub(crate) fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        self.get(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Checked little-endian u64 read (untrusted value).
    pub(crate) fn get_u64(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        self.get(off, &mut b);
        u64::from_le_bytes(b)
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track_write<R>(&self, _off: usize, f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track_read<R>(&self, _off: usize, f: impl FnOnce() -> R) -> R {
        f()
    }

    #[cfg(loom)]
    fn track_write<R>(&self, off: usize, f: impl FnOnce() -> R) -> R {
        self.loom.track_write(off, f)
    }

    #[cfg(loom)]
    fn track_read<R>(&self, off: usize, f: impl FnOnce() -> R) -> R {
        self.loom.track_read(off, f)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Owner::Heap(layout) = self.owner {
            // SAFETY: `base` came from `alloc_zeroed(layout)` in `Mapping::heap` and is
            // freed exactly once, here.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) }
        }
        // Owner::Mmap unmaps itself when dropped.
    }
}

#[cfg(loom)]
mod loom_side {
    //! Loom side tables: a model atomic per word offset and a model cell per slot,
    //! created on first use (loom objects must be created inside the model).

    use std::sync::{Arc, Mutex};

    use loom::cell::UnsafeCell;

    use crate::sync::{AtomicU32, AtomicU64};

    #[derive(Default)]
    pub(super) struct Tables {
        w64: Mutex<Vec<(usize, Arc<AtomicU64>)>>,
        w32: Mutex<Vec<(usize, Arc<AtomicU32>)>>,
        cells: Mutex<Vec<(usize, Arc<UnsafeCell<()>>)>>,
    }

    fn get_or_insert<T>(
        table: &Mutex<Vec<(usize, Arc<T>)>>,
        key: usize,
        make: impl FnOnce() -> T,
    ) -> *const T {
        let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = t.iter().find(|(k, _)| *k == key) {
            return Arc::as_ptr(v);
        }
        let v = Arc::new(make());
        let p = Arc::as_ptr(&v);
        t.push((key, v));
        p
    }

    impl Tables {
        pub(super) fn u64_at(&self, off: usize) -> &AtomicU64 {
            let p = get_or_insert(&self.w64, off, || AtomicU64::new(0));
            // SAFETY: entries are never removed before `self` drops, and the Arc keeps
            // the atomic at a stable address, so it lives as long as `&self`.
            unsafe { &*p }
        }

        pub(super) fn u32_at(&self, off: usize) -> &AtomicU32 {
            let p = get_or_insert(&self.w32, off, || AtomicU32::new(0));
            // SAFETY: as in `u64_at`.
            unsafe { &*p }
        }

        fn cell(&self, off: usize) -> &UnsafeCell<()> {
            // One cell per 64-byte granule of the access's start: every slot starts
            // 64-aligned and every access starts within the slot's first 64 bytes,
            // so this is one cell per slot.
            let p = get_or_insert(&self.cells, off & !63, || UnsafeCell::new(()));
            // SAFETY: as in `u64_at`.
            unsafe { &*p }
        }

        pub(super) fn track_write<R>(&self, off: usize, f: impl FnOnce() -> R) -> R {
            self.cell(off).with_mut(|_| f())
        }

        pub(super) fn track_read<R>(&self, off: usize, f: impl FnOnce() -> R) -> R {
            self.cell(off).with(|_| f())
        }
    }
}
