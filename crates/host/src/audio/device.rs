//! The `cpal` backend: a real output device, through ALSA by default or through a running
//! JACK server (cargo feature `jack`, [`HostChoice::Jack`]; the server is the one
//! `JACK_DEFAULT_SERVER` names, as for every JACK client).
//!
//! cpal hands the callback interleaved f32 buffers of whatever size the device runs
//! (JACK's period, ALSA's period); the processor wants planar blocks of `block_frames`.
//! The callback runs the processor into a preallocated planar block and copies frames out
//! of it, running the next block whenever the current one is used up — a FIFO of one
//! block, so a device period equal to `block_frames` (or a multiple of it) costs no
//! added latency, and any other size at most one block.
//!
//! The processor is handed to the callback through a one-slot wait-free ring only after
//! the stream opened, so a failed open gives it back to the caller (that is how `auto`
//! falls back to `null` with the same processor). Device xruns are the stream errors
//! cpal reports as [`cpal::ErrorKind::Xrun`] (ALSA EPIPE, JACK's xrun callback).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::{AudioStats, BlockProcessor, RtState, StreamFormat, guarded_process, rt};

/// How long to wait for a device to open before giving up (and, for `auto`, using null).
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);

/// Which cpal host to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostChoice {
    /// cpal's default host (ALSA on Linux).
    #[default]
    Default,
    /// ALSA explicitly.
    Alsa,
    /// A running JACK server (needs the `jack` cargo feature).
    Jack,
}

impl HostChoice {
    /// Parses `alsa`, `jack` or `default`.
    pub fn parse(s: &str) -> Result<HostChoice, String> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(HostChoice::Default),
            "alsa" => Ok(HostChoice::Alsa),
            "jack" => Ok(HostChoice::Jack),
            _ => Err(format!(
                "unknown audio host `{s}`; expected `alsa`, `jack` or `default`"
            )),
        }
    }

    fn label(self) -> &'static str {
        match self {
            HostChoice::Default => "default host",
            HostChoice::Alsa => "ALSA",
            HostChoice::Jack => "JACK",
        }
    }

    fn host(self) -> Result<cpal::Host, String> {
        match self {
            HostChoice::Default => Ok(cpal::default_host()),
            HostChoice::Alsa => {
                cpal::host_from_id(cpal::HostId::Alsa).map_err(|e| e.to_string())
            }
            #[cfg(feature = "jack")]
            HostChoice::Jack => cpal::host_from_id(cpal::HostId::Jack).map_err(|e| {
                format!(
                    "{e} (is a JACK server running under the name JACK_DEFAULT_SERVER gives, or `default`?)"
                )
            }),
            #[cfg(not(feature = "jack"))]
            HostChoice::Jack => Err(
                "this slotpool was built without JACK support; rebuild with `--features jack`"
                    .into(),
            ),
        }
    }
}

/// Why a device stream did not open: which host, which device, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} output device {device}: {reason}")]
pub struct DeviceError {
    /// `ALSA`, `JACK`, …
    pub host: String,
    /// The device asked for (`"default"` for the host's default output device).
    pub device: String,
    /// What failed, in words.
    pub reason: String,
}

/// A running cpal output stream. Dropping it stops the stream and drops the processor.
pub struct DeviceStream {
    // Field order matters: the stream (and the processor in its callback) goes first.
    stream: cpal::Stream,
    description: String,
    stats: Arc<AudioStats>,
    other_errors: Arc<AtomicU64>,
}

impl fmt::Debug for DeviceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceStream")
            .field("description", &self.description)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DeviceStream {
    /// Opens `device` (a name or id as `slotpool devices` lists them; `None` for the
    /// default output device) on `host` with `format` in f32, starts it, and hands
    /// `processor` to its callback. On failure the processor comes back with the error.
    pub fn open<P: BlockProcessor + 'static>(
        host: HostChoice,
        device: Option<&str>,
        format: StreamFormat,
        realtime: Option<u8>,
        processor: P,
    ) -> Result<DeviceStream, (DeviceError, P)> {
        let fail = |reason: String| DeviceError {
            host: host.label().into(),
            device: format!("\"{}\"", device.unwrap_or("default")),
            reason,
        };
        // alsa-lib writes its own diagnostics to stderr (eight lines for a missing card);
        // capture them on this thread and fold the last one into our one-line error.
        let alsa_log = AlsaLog::capture();
        let (dev, host_name) = match find_device(host, device) {
            Ok(found) => found,
            Err(reason) => return Err((fail(alsa_log.annotate(reason)), processor)),
        };
        let fail = |reason: String| DeviceError {
            host: host_name.to_string(),
            device: format!("\"{}\"", device.unwrap_or("default")),
            reason: alsa_log.annotate(reason),
        };
        if let Err(e) = format.validate() {
            return Err((fail(e), processor));
        }
        let Ok(channels) = u16::try_from(format.channels) else {
            return Err((
                fail(format!("{} channels is too many", format.channels)),
                processor,
            ));
        };
        let config = cpal::StreamConfig {
            channels,
            sample_rate: format.sample_rate,
            // The device's own period; the callback adapts it to block_frames.
            buffer_size: cpal::BufferSize::Default,
        };
        let stats = AudioStats::new();
        stats.set_rt(RtState::requested(realtime));
        let other_errors = Arc::new(AtomicU64::new(0));
        let (mut handoff, slot) = rtrb::RingBuffer::<P>::new(1);
        let mut callback = Callback {
            slot,
            processor: None,
            input: vec![0.0; format.block_len()],
            output: vec![0.0; format.block_len()],
            pos: format.block_frames,
            channels: format.channels,
            block_frames: format.block_frames,
            stats: Arc::clone(&stats),
            rt: if host_name == "JACK" {
                RtPlan::Observe
            } else {
                realtime.map_or(RtPlan::Done, RtPlan::Promote)
            },
        };
        let on_error = {
            let stats = Arc::clone(&stats);
            let other_errors = Arc::clone(&other_errors);
            move |e: cpal::Error| {
                // May run on the audio thread: count, never log or allocate here.
                if e.kind() == cpal::ErrorKind::Xrun {
                    stats.add_xrun();
                } else {
                    // Relaxed: an independent counter.
                    other_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let stream = match dev.build_output_stream::<f32, _, _>(
            config,
            move |data: &mut [f32], _: &cpal::OutputCallbackInfo| callback.fill(data),
            on_error,
            Some(OPEN_TIMEOUT),
        ) {
            Ok(s) => s,
            Err(e) => {
                return Err((
                    fail(format!(
                        "cannot open a {} Hz, {} channel f32 stream: {e}",
                        format.sample_rate, format.channels
                    )),
                    processor,
                ));
            }
        };
        if let Err(e) = stream.play() {
            return Err((fail(format!("cannot start the stream: {e}")), processor));
        }
        let period = stream
            .buffer_size()
            .map(|n| format!("{n}-frame device period"))
            .unwrap_or_else(|_| "device period unknown".into());
        if handoff.push(processor).is_err() {
            unreachable!("a fresh one-slot ring has room for one processor");
        }
        let name = device.unwrap_or("default");
        Ok(DeviceStream {
            stream,
            description: format!(
                "cpal {host_name} \"{name}\", {} Hz, {} frames × {} ch, {period}",
                format.sample_rate, format.block_frames, format.channels
            ),
            stats,
            other_errors,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        &self.stats
    }

    /// Stream errors other than xruns (a device that went away, a backend error).
    pub fn other_errors(&self) -> u64 {
        self.other_errors.load(Ordering::Relaxed)
    }

    /// One line: host, device, format, device period.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Stops the stream; the processor is dropped with it.
    pub fn stop(self) {
        // A pause error only means the stream is already stopped; dropping it closes it.
        let _ = self.stream.pause();
        drop(self);
    }
}

/// alsa-lib's diagnostics of the calling thread, captured instead of printed.
pub(crate) struct AlsaLog(Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>);

impl AlsaLog {
    /// Routes this thread's alsa-lib messages into a buffer from now on.
    pub(crate) fn capture() -> AlsaLog {
        AlsaLog(alsa::Output::local_error_handler().ok())
    }

    /// `reason`, plus alsa-lib's last message when there is one.
    pub(crate) fn annotate(&self, reason: String) -> String {
        let Some(out) = &self.0 else { return reason };
        let text = out.borrow().to_string();
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => format!("{reason} (alsa-lib: {})", last.trim()),
            None => reason,
        }
    }
}

/// The device named `name` (by description name or id) on `choice`, and the host's name.
fn find_device(
    choice: HostChoice,
    name: Option<&str>,
) -> Result<(cpal::Device, &'static str), String> {
    let host = choice.host()?;
    let host_name = host.id().name();
    let dev = match name {
        None => host
            .default_output_device()
            .ok_or_else(|| "the host has no default output device (no sound card?)".to_string())?,
        Some(wanted) => {
            let devices = host
                .output_devices()
                .map_err(|e| format!("cannot list output devices: {e}"))?;
            let mut seen = Vec::new();
            let mut found = None;
            for d in devices {
                let label = device_label(&d);
                if label == wanted || d.id().is_ok_and(|id| id.id() == wanted) {
                    found = Some(d);
                    break;
                }
                seen.push(label);
            }
            found.ok_or_else(|| {
                format!(
                    "no output device of that name; `slotpool devices` lists them (seen: {})",
                    if seen.is_empty() {
                        "none".into()
                    } else {
                        seen.join(", ")
                    }
                )
            })?
        }
    };
    Ok((dev, host_name))
}

/// A device's human name, or its id, or `?`.
pub(crate) fn device_label(d: &cpal::Device) -> String {
    d.description()
        .map(|desc| desc.name().to_string())
        .or_else(|_| d.id().map(|id| id.id().to_string()))
        .unwrap_or_else(|_| "?".into())
}

/// What the first callback does about scheduling.
#[derive(Clone, Copy, Debug)]
enum RtPlan {
    /// Nothing (not requested, or already done).
    Done,
    /// Ask for SCHED_FIFO at this priority.
    Promote(u8),
    /// JACK schedules its process thread: record what it chose.
    Observe,
}

/// The state the audio callback owns. Everything is allocated before the stream starts.
struct Callback<P> {
    slot: rtrb::Consumer<P>,
    processor: Option<P>,
    input: Vec<f32>,
    output: Vec<f32>,
    /// Frames of `output` already copied to the device; `block_frames` = used up.
    pos: usize,
    channels: usize,
    block_frames: usize,
    stats: Arc<AudioStats>,
    rt: RtPlan,
}

impl<P: BlockProcessor> Callback<P> {
    fn fill(&mut self, data: &mut [f32]) {
        match self.rt {
            RtPlan::Done => {}
            RtPlan::Promote(priority) => self.stats.set_rt(rt::promote_current_thread(priority)),
            RtPlan::Observe => self.stats.set_rt(rt::current_thread_as_server()),
        }
        self.rt = RtPlan::Done;
        if self.processor.is_none() {
            // The processor arrives once the stream is open; until then, silence.
            self.processor = self.slot.pop().ok();
        }
        let Some(processor) = self.processor.as_mut() else {
            data.fill(0.0);
            return;
        };
        let (ch, bf) = (self.channels, self.block_frames);
        let frames = data.len() / ch;
        let mut done = 0;
        while done < frames {
            if self.pos == bf {
                guarded_process(processor, &self.input, &mut self.output);
                self.stats.add_block();
                self.pos = 0;
            }
            let n = (bf - self.pos).min(frames - done);
            let out = &mut data[done * ch..(done + n) * ch];
            for (i, frame) in out.chunks_exact_mut(ch).enumerate() {
                for (c, sample) in frame.iter_mut().enumerate() {
                    *sample = self.output[c * bf + self.pos + i];
                }
            }
            self.pos += n;
            done += n;
        }
        // A trailing partial frame (never produced by cpal) stays silent.
        data[frames * ch..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a ramp: sample value = global frame index + channel / 10.
    struct Ramp {
        next: usize,
        frames: usize,
    }
    impl BlockProcessor for Ramp {
        fn process(&mut self, _input: &[f32], output: &mut [f32]) {
            let ch = output.len() / self.frames;
            for c in 0..ch {
                for i in 0..self.frames {
                    output[c * self.frames + i] = (self.next + i) as f32 + c as f32 / 10.0;
                }
            }
            self.next += self.frames;
        }
    }

    fn callback(block_frames: usize, channels: usize) -> Callback<Ramp> {
        let (mut tx, slot) = rtrb::RingBuffer::new(1);
        tx.push(Ramp {
            next: 0,
            frames: block_frames,
        })
        .expect("room");
        Callback {
            slot,
            processor: None,
            input: vec![0.0; block_frames * channels],
            output: vec![0.0; block_frames * channels],
            pos: block_frames,
            channels,
            block_frames,
            stats: AudioStats::new(),
            rt: RtPlan::Done,
        }
    }

    #[test]
    fn device_periods_of_any_size_get_a_continuous_interleaved_stream() {
        for (block, periods) in [
            (128, vec![256, 256]),
            (128, vec![100, 37, 300, 1, 90]),
            (64, vec![64; 5]),
        ] {
            let mut cb = callback(block, 2);
            let mut frame = 0usize;
            for p in periods {
                let mut data = vec![-1.0f32; p * 2];
                cb.fill(&mut data);
                for (i, f) in data.chunks_exact(2).enumerate() {
                    assert_eq!(f[0], (frame + i) as f32, "period {p} frame {i}");
                    assert_eq!(f[1], (frame + i) as f32 + 0.1);
                }
                frame += p;
            }
            assert_eq!(cb.stats.blocks() as usize, frame.div_ceil(block));
        }
    }

    #[test]
    fn silence_until_the_processor_arrives() {
        let (_tx, slot) = rtrb::RingBuffer::<Ramp>::new(1);
        let mut cb = Callback {
            slot,
            processor: None,
            input: vec![0.0; 8],
            output: vec![0.0; 8],
            pos: 4,
            channels: 2,
            block_frames: 4,
            stats: AudioStats::new(),
            rt: RtPlan::Done,
        };
        let mut data = vec![1.0f32; 16];
        cb.fill(&mut data);
        assert!(data.iter().all(|&s| s == 0.0));
        assert_eq!(cb.stats.blocks(), 0);
    }

    #[test]
    fn host_names_parse() {
        assert_eq!(HostChoice::parse("JACK"), Ok(HostChoice::Jack));
        assert_eq!(HostChoice::parse("alsa"), Ok(HostChoice::Alsa));
        assert!(HostChoice::parse("coreaudio").is_err());
    }
}
