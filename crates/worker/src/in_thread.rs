//! A worker loop on a thread of the host's own process, over a heap region
//! ([`HostRegion::create_heap`]): the same [`Worker`] a worker process runs, minus the
//! process. For tests and benchmarks of a host's side of the rings; slotpool itself
//! always runs slot workers as processes.
//!
//! ```
//! use std::time::Duration;
//! use slotpool_ring::{HostRegion, SlotLayout};
//! use slotpool_worker::WorkerThread;
//! use slotpool_worker::modules::ModuleSpec;
//!
//! let layout = SlotLayout {
//!     channels_in: 1,
//!     channels_out: 1,
//!     block_frames: 64,
//!     audio_capacity: 4,
//!     command_capacity: 16,
//!     event_capacity: 16,
//! };
//! let region = HostRegion::create_heap("gain:0", layout).unwrap();
//! let host = region.host_end().unwrap();
//! let module = ModuleSpec::new("passthrough").unwrap().build().unwrap();
//! // Returns once the loop reports RUNNING.
//! let worker = WorkerThread::start(&region, module, 48_000.0, Duration::from_secs(60)).unwrap();
//! // ... push blocks through `host`, ring, wait_output ...
//! # drop(host);
//! worker.stop();
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slotpool_ring::{Heap, HostRegion, Monitor, WorkerState};

use crate::fault::FaultPlan;
use crate::processor::Processor;
use crate::run::{Outcome, StartError, Worker};

/// How long [`WorkerThread::start`] waits for the loop to report RUNNING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker loop running on its own thread. Stopped (and joined) by
/// [`WorkerThread::stop`] or when dropped.
#[derive(Debug)]
pub struct WorkerThread {
    stop: Arc<AtomicBool>,
    monitor: Monitor,
    thread: Option<JoinHandle<Result<Outcome, StartError>>>,
}

impl WorkerThread {
    /// Attaches `processor` to `region`'s worker end on a new thread and runs the loop
    /// there, as a worker process does: [`Worker::new`], RUNNING, [`Worker::run`] (with
    /// `host_timeout`), then the final state. Returns once the loop reports RUNNING.
    ///
    /// # Errors
    /// The worker end cannot be taken (already taken, bad region), the worker fails to
    /// start, or it does not report RUNNING within 10 s.
    pub fn start<P: Processor + Send + 'static>(
        region: &HostRegion<Heap>,
        processor: P,
        sample_rate: f32,
        host_timeout: Duration,
    ) -> Result<WorkerThread, StartError> {
        let end = region.open_worker()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut w = Worker::new(
                processor,
                end,
                sample_rate,
                FaultPlan::default(),
                Duration::from_secs(5),
            )?;
            w.mark_running();
            let outcome = w.run(&flag, host_timeout, true);
            w.mark_finished(&outcome);
            Ok(outcome)
        });
        let monitor = region.monitor();
        let t0 = Instant::now();
        while monitor.worker_state() != WorkerState::Running {
            if thread.is_finished() {
                return match thread.join() {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(outcome)) => Err(StartError::Sys(format!(
                        "the worker loop ended before it ran: {outcome:?}"
                    ))),
                    Err(_) => Err(StartError::Sys("the worker thread panicked".into())),
                };
            }
            if t0.elapsed() > START_TIMEOUT {
                stop.store(true, Ordering::Relaxed);
                monitor.nudge();
                return Err(StartError::Sys(format!(
                    "the worker loop did not report RUNNING within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(WorkerThread {
            stop,
            monitor,
            thread: Some(thread),
        })
    }

    /// Ends the loop the way the supervisor ends a worker process: raises the stop
    /// flag, nudges the doorbell (an idle worker sleeps untimed until the host rings or
    /// nudges), and waits for the loop to return. `None` if it failed to start or
    /// panicked.
    pub fn stop(mut self) -> Option<Outcome> {
        self.finish()
    }

    fn finish(&mut self) -> Option<Outcome> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::Relaxed);
        self.monitor.nudge();
        thread.join().ok()?.ok()
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use slotpool_ring::SlotLayout;

    use super::*;
    use crate::modules::ModuleSpec;

    fn region() -> HostRegion<Heap> {
        let layout = SlotLayout {
            channels_in: 1,
            channels_out: 1,
            block_frames: 64,
            audio_capacity: 4,
            command_capacity: 16,
            event_capacity: 16,
        };
        HostRegion::create_heap("t:0", layout).unwrap()
    }

    fn passthrough() -> Box<dyn Processor> {
        ModuleSpec::new("passthrough").unwrap().build().unwrap()
    }

    #[test]
    fn start_waits_for_running_and_stop_ends_the_idle_loop() {
        // Without the nudge in `stop`, the join below would wait forever.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            eprintln!("watchdog: WorkerThread::stop did not return in 60 s; aborting");
            std::process::abort();
        });
        let r = region();
        let w = WorkerThread::start(&r, passthrough(), 48_000.0, Duration::from_secs(60)).unwrap();
        assert_eq!(r.monitor().worker_state(), WorkerState::Running);
        // A nudge counts as the host's first ring: from then on the idle loop sleeps
        // untimed on the doorbell, and only a ring or nudge wakes it.
        r.monitor().nudge();
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(w.stop(), Some(Outcome::Stopped)));
        assert_eq!(r.monitor().worker_state(), WorkerState::Stopping);
    }

    #[test]
    fn dropping_it_stops_and_joins_the_loop() {
        let r = region();
        drop(WorkerThread::start(&r, passthrough(), 48_000.0, Duration::from_secs(60)).unwrap());
        assert_eq!(r.monitor().worker_state(), WorkerState::Stopping);
    }
}
