//! The denormal guard: flush-to-zero (FTZ) and denormals-are-zero (DAZ) around every
//! process call, as audio hosts do, so that decaying filters and feedback lines never fall
//! into slow subnormal arithmetic — and so that a worker process and the in-process
//! renderer (which both go through [`with_denormals_flushed`]) compute bit-identical
//! results.
//!
//! What the guard covers: arithmetic that reads its operands from memory and writes its
//! results to memory inside the guarded call, which is what a `process()` call does (input
//! block and state in, output block and state out). The compiler knows nothing of the
//! floating-point environment, so a register-only computation whose result leaves the call
//! by value may be scheduled outside it.
//!
//! This module holds the worker crate's only `unsafe` code: reading and writing the SSE
//! control register (MXCSR) needs `stmxcsr`/`ldmxcsr`, for which Rust offers no safe
//! wrapper. On targets other than x86_64 the guard does nothing (and
//! [`GUARD_SUPPORTED`] is `false`); porting it means one more `cfg` arm here.
#![allow(unsafe_code)]

/// Whether this target has a denormal guard.
pub const GUARD_SUPPORTED: bool = cfg!(target_arch = "x86_64");

/// Runs `f` with FTZ and DAZ set on this thread, then restores the previous flags.
#[inline]
pub fn with_denormals_flushed<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the caller's flags even if `f` unwinds.
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            imp::restore(self.0);
        }
    }
    let _restore = Restore(imp::enable());
    f()
}

/// Whether FTZ and DAZ are both set on this thread now (for tests).
pub fn denormals_flushed() -> bool {
    imp::flushed()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::asm;

    /// MXCSR bit 15: flush results that would be subnormal to zero.
    const FTZ: u32 = 1 << 15;
    /// MXCSR bit 6: treat subnormal inputs as zero.
    const DAZ: u32 = 1 << 6;

    fn read() -> u32 {
        let mut value: u32 = 0;
        // SAFETY: `stmxcsr` stores the 32-bit MXCSR of this thread to the address given,
        // which is `value`, a live, aligned, writable u32 on our stack frame; it touches no
        // other memory and no flags. SSE is part of the x86_64 baseline.
        unsafe {
            asm!("stmxcsr [{p}]", p = in(reg) &raw mut value, options(nostack, preserves_flags));
        }
        value
    }

    fn write(value: u32) {
        // SAFETY: `ldmxcsr` loads MXCSR from `value`, a live aligned u32. Every value written
        // here is one read from MXCSR by `read`, with only FTZ and DAZ possibly added; both
        // bits exist on every x86_64 CPU, so no reserved bit is set and the load cannot
        // fault. The change is per thread and is undone by `restore` before `f`'s caller
        // runs again. The asm has neither `nomem` nor `readonly`, so the compiler treats it
        // as reading and writing any memory: no load of the block being processed can be
        // moved across it. (LLVM assumes the default floating-point environment: it may
        // fold constants or move register-only arithmetic across this asm; folding never
        // produces subnormals in this crate's modules, and the worker and in-process
        // paths share this guard, so results stay identical.)
        unsafe {
            asm!("ldmxcsr [{p}]", p = in(reg) &raw const value, options(nostack, preserves_flags));
        }
    }

    pub(super) fn enable() -> u32 {
        let saved = read();
        if saved & (FTZ | DAZ) != FTZ | DAZ {
            write(saved | FTZ | DAZ);
        }
        saved
    }

    pub(super) fn restore(saved: u32) {
        if read() != saved {
            write(saved);
        }
    }

    pub(super) fn flushed() -> bool {
        read() & (FTZ | DAZ) == FTZ | DAZ
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn enable() -> u32 {
        0
    }
    pub(super) fn restore(_saved: u32) {}
    pub(super) fn flushed() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormal_results_flush_to_zero_inside_and_not_outside() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5_f32);
        assert!(!denormals_flushed());
        assert!((tiny * half).is_subnormal());
        // Like a processor: operands loaded from memory and the result stored to memory
        // (an output buffer the caller sees) inside the guarded call.
        let mut out = [1.0_f32];
        let out_ref = std::hint::black_box(&mut out);
        with_denormals_flushed(|| {
            assert!(denormals_flushed());
            out_ref[0] = std::hint::black_box(tiny) * std::hint::black_box(half);
        });
        assert_eq!(std::hint::black_box(out)[0], 0.0);
        assert!(!denormals_flushed(), "flags restored after the guard");
        assert!((tiny * half).is_subnormal());
    }
}
