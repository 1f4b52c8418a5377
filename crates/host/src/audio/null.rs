//! The `null` backend: a clock thread that calls the processor once per period and
//! discards the output.
//!
//! The thread sleeps to absolute deadlines (`clock_nanosleep(CLOCK_MONOTONIC,
//! TIMER_ABSTIME)`), deadline `k` = anchor + k × period computed exactly from the frame
//! count, so it never drifts. Its timer slack is 1 ns (the kernel's default 50 µs would be
//! a large share of a 64-frame period). A cycle that ends past the next deadline is what
//! a device would call an underrun: it is counted as a device xrun and the clock
//! re-anchors at that moment (the next block runs at once, later ones one period apart)
//! instead of bursting through the missed periods.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};

use super::{AudioStats, BlockProcessor, RtState, StreamFormat, guarded_process, rt};

/// A running null clock. Dropping it stops the thread (and drops the processor).
pub struct NullStream<P: BlockProcessor + 'static> {
    format: StreamFormat,
    stats: Arc<AudioStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<P>>,
}

impl<P: BlockProcessor + 'static> fmt::Debug for NullStream<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NullStream")
            .field("format", &self.format)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: BlockProcessor + 'static> NullStream<P> {
    /// Starts the clock thread `slotpool-audio`; the first block runs at once. With
    /// `realtime = Some(priority)` the thread asks for SCHED_FIFO first and records the
    /// answer in [`AudioStats::realtime`].
    pub fn start(
        format: StreamFormat,
        processor: P,
        realtime: Option<u8>,
    ) -> io::Result<NullStream<P>> {
        format
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stats = AudioStats::new();
        stats.set_rt(RtState::requested(realtime));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stats = Arc::clone(&stats);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("slotpool-audio".into())
                .spawn(move || clock_thread(format, processor, realtime, &stats, &stop))?
        };
        Ok(NullStream {
            format,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        &self.stats
    }

    /// `null clock, 48000 Hz, 128 frames × 2 ch (output discarded)`.
    pub fn describe(&self) -> String {
        format!(
            "null clock, {} Hz, {} frames × {} ch (output discarded)",
            self.format.sample_rate, self.format.block_frames, self.format.channels
        )
    }

    /// Stops the clock after the block in progress and hands the processor back.
    pub fn stop(mut self) -> P {
        self.stop_and_join()
            .expect("a running NullStream always has its thread")
    }

    fn stop_and_join(&mut self) -> Option<P> {
        // pairs with the Acquire load at the top of each cycle in clock_thread()
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(p) => Some(p),
            // The processor panicked on the audio thread: re-raise it here, on the
            // control thread, where it can be seen.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<P: BlockProcessor + 'static> Drop for NullStream<P> {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            drop(self.stop_and_join());
        }
    }
}

fn now() -> Duration {
    // CLOCK_MONOTONIC cannot fail on Linux; a zero would only make one deadline early.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Sleeps until `deadline` on CLOCK_MONOTONIC, resuming after signals.
fn sleep_until(deadline: Duration) {
    let ts = TimeSpec::from_duration(deadline);
    loop {
        match clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &ts,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            // Ok, or an error that cannot happen with a valid absolute timespec: either
            // way the deadline is as reached as it will get.
            _ => return,
        }
    }
}

fn clock_thread<P: BlockProcessor>(
    format: StreamFormat,
    mut processor: P,
    realtime: Option<u8>,
    stats: &AudioStats,
    stop: &AtomicBool,
) -> P {
    // Timer slack 1 ns: wake-ups as close to the deadline as the kernel can make them.
    // A failure leaves the default slack, which only costs precision.
    let _ = nix::sys::prctl::set_timerslack(1);
    if let Some(priority) = realtime {
        stats.set_rt(rt::promote_current_thread(priority));
    }
    let input = vec![0.0f32; format.block_len()];
    let mut output = vec![0.0f32; format.block_len()];

    let mut anchor = now();
    let mut k: u64 = 0;
    // pairs with the Release store in stop_and_join()
    while !stop.load(Ordering::Acquire) {
        sleep_until(anchor + format.duration_of_blocks(k));
        guarded_process(&mut processor, &input, &mut output);
        stats.add_block();
        k += 1;
        let next = anchor + format.duration_of_blocks(k);
        let end = now();
        if end > next {
            // The "device" ran dry at `next`: count it and restart the clock from here.
            stats.add_xrun();
            anchor = end;
            k = 0;
        }
    }
    processor
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(u64);
    impl BlockProcessor for Count {
        fn process(&mut self, _input: &[f32], output: &mut [f32]) {
            self.0 += 1;
            output.fill(0.0);
        }
    }

    #[test]
    fn stop_hands_the_processor_back_with_every_block_it_ran() {
        let format = StreamFormat {
            sample_rate: 48_000,
            block_frames: 64,
            channels: 2,
        };
        let s = NullStream::start(format, Count(0), None).expect("start");
        while s.stats().blocks() < 5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = Arc::clone(s.stats());
        let p = s.stop();
        assert_eq!(p.0, stats.blocks());
        assert!(p.0 >= 5);
    }

    #[test]
    fn zero_sized_formats_are_refused() {
        let format = StreamFormat {
            sample_rate: 48_000,
            block_frames: 0,
            channels: 2,
        };
        let err = NullStream::start(format, Count(0), None).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
