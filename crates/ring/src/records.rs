//! Command and event records: 64-byte POD, versioned, with sequence numbers.
//!
//! ```text
//! kind u16, version u16 (= 1), reserved u32 (= 0), seq u64, payload [u8; 48]
//! ```
//!
//! `seq` is the record's ring position + 1 (so the first record has seq 1 and the
//! sequence continues across worker restarts). Decoding never panics: an unknown kind,
//! another version, a non-zero reserved word, a wrong seq or a bad field is a
//! [`DecodeError`], and the bad record is consumed so the ring keeps moving.

use thiserror::Error;

use crate::audio::PushError;
use crate::layout::RECORD_SIZE;
use crate::ring::{ConsumerCore, ProducerCore, RingFault};

/// Encoding version written into every record.
pub const RECORD_VERSION: u16 = 1;

/// A UTF-8 string of at most 32 bytes, stored inline (`Copy`, no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShortStr {
    len: u8,
    bytes: [u8; ShortStr::CAPACITY],
}

impl ShortStr {
    /// Maximum length in bytes.
    pub const CAPACITY: usize = 32;

    /// `s`, truncated at a char boundary to at most 32 bytes.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(Self::CAPACITY);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; Self::CAPACITY];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Self {
            len: end as u8,
            bytes,
        }
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // Built only from a &str prefix at a char boundary or from validated UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// NUL-padded wire form.
    fn to_wire(self) -> [u8; Self::CAPACITY] {
        self.bytes
    }

    /// Parses the NUL-padded wire form: UTF-8 up to the first NUL, only NULs after it.
    fn from_wire(w: &[u8; Self::CAPACITY]) -> Option<Self> {
        let len = w.iter().position(|&b| b == 0).unwrap_or(Self::CAPACITY);
        if w[len..].iter().any(|&b| b != 0) {
            return None;
        }
        std::str::from_utf8(&w[..len]).ok()?;
        Some(Self {
            len: len as u8,
            bytes: *w,
        })
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Host → worker records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// Set parameter `id` to `value` (finite).
    SetParam {
        /// Parameter id (as announced by [`Event::Param`]).
        id: u32,
        /// New value; must be finite.
        value: f32,
    },
    /// Reset the DSP state (clear delay lines, etc.).
    Reset,
    /// Bypass on or off.
    Bypass {
        /// `true` = pass the input through.
        on: bool,
    },
    /// Answer with `Event::Ack` of this record's seq.
    Ping {
        /// Opaque token.
        token: u64,
    },
    /// Stop cleanly.
    Shutdown,
}

/// Worker → host records.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// The command with this seq was applied.
    Ack {
        /// Seq of the command.
        seq: u64,
    },
    /// The command with this seq failed (seq 0: not tied to a command).
    Error {
        /// Seq of the command, or 0.
        seq: u64,
        /// Module-defined error code.
        code: u32,
        /// Short description.
        message: ShortStr,
    },
    /// Per-block statistics.
    Telemetry {
        /// Cycle of the block.
        cycle: u64,
        /// Time the process call took.
        process_ns: u64,
        /// Blocks the worker knows it was late for.
        late: u32,
    },
    /// A parameter the module offers (announced at start).
    Param {
        /// Parameter id.
        id: u32,
        /// Default value; must be finite.
        default: f32,
        /// Name.
        name: ShortStr,
    },
}

/// A record the peer wrote could not be decoded. The record was consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The kind is not one this ABI version knows.
    #[error(
        "record at position {pos}: unknown kind {kind}; the peer speaks another protocol or corrupted the ring"
    )]
    UnknownKind {
        /// Ring position.
        pos: u64,
        /// The kind found.
        kind: u16,
    },
    /// The record's encoding version is not [`RECORD_VERSION`].
    #[error(
        "record at position {pos}: encoding version {version}, expected {RECORD_VERSION}; rebuild the worker against this slotpool"
    )]
    Version {
        /// Ring position.
        pos: u64,
        /// The version found.
        version: u16,
    },
    /// The seq field is not position + 1.
    #[error(
        "record at position {pos}: seq {found}, expected {expected}; the peer corrupted the ring"
    )]
    Seq {
        /// Ring position.
        pos: u64,
        /// Expected seq.
        expected: u64,
        /// Seq found.
        found: u64,
    },
    /// A field holds an impossible value.
    #[error(
        "record at position {pos}: field `{field}` of kind {kind} is invalid; the peer corrupted the ring"
    )]
    BadField {
        /// Ring position.
        pos: u64,
        /// The record kind.
        kind: u16,
        /// The field.
        field: &'static str,
    },
}

/// Why popping a record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The ring is faulted.
    #[error(transparent)]
    Fault(#[from] RingFault),
    /// One record was bad (and was consumed); the ring itself is fine.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

type Wire = [u8; RECORD_SIZE];

fn header(kind: u16, seq: u64) -> Wire {
    let mut w = [0u8; RECORD_SIZE];
    w[0..2].copy_from_slice(&kind.to_le_bytes());
    w[2..4].copy_from_slice(&RECORD_VERSION.to_le_bytes());
    w[8..16].copy_from_slice(&seq.to_le_bytes());
    w
}

fn put(w: &mut Wire, at: usize, bytes: &[u8]) {
    w[16 + at..16 + at + bytes.len()].copy_from_slice(bytes);
}

fn get<const N: usize>(w: &Wire, at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&w[16 + at..16 + at + N]);
    b
}

fn get_u32(w: &Wire, at: usize) -> u32 {
    u32::from_le_bytes(get(w, at))
}

fn get_u64(w: &Wire, at: usize) -> u64 {
    u64::from_le_bytes(get(w, at))
}

/// Checks kind-independent fields; returns (kind, seq).
fn check_header(w: &Wire, pos: u64) -> Result<(u16, u64), DecodeError> {
    let kind = u16::from_le_bytes([w[0], w[1]]);
    let version = u16::from_le_bytes([w[2], w[3]]);
    if version != RECORD_VERSION {
        return Err(DecodeError::Version { pos, version });
    }
    if w[4..8] != [0, 0, 0, 0] {
        return Err(DecodeError::BadField {
            pos,
            kind,
            field: "reserved",
        });
    }
    let seq = u64::from_le_bytes(get_arr(w, 8));
    let expected = pos.wrapping_add(1);
    if seq != expected {
        return Err(DecodeError::Seq {
            pos,
            expected,
            found: seq,
        });
    }
    Ok((kind, seq))
}

fn get_arr<const N: usize>(w: &Wire, at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&w[at..at + N]);
    b
}

fn finite(v: f32, pos: u64, kind: u16, field: &'static str) -> Result<f32, DecodeError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeError::BadField { pos, kind, field })
    }
}

mod kind {
    pub(super) const SET_PARAM: u16 = 1;
    pub(super) const RESET: u16 = 2;
    pub(super) const BYPASS: u16 = 3;
    pub(super) const PING: u16 = 4;
    pub(super) const SHUTDOWN: u16 = 5;

    pub(super) const ACK: u16 = 1;
    pub(super) const ERROR: u16 = 2;
    pub(super) const TELEMETRY: u16 = 3;
    pub(super) const PARAM: u16 = 4;
}

impl Command {
    /// The 64-byte wire form with sequence number `seq`.
    pub fn encode(&self, seq: u64) -> [u8; RECORD_SIZE] {
        match *self {
            Command::SetParam { id, value } => {
                let mut w = header(kind::SET_PARAM, seq);
                put(&mut w, 0, &id.to_le_bytes());
                put(&mut w, 4, &value.to_le_bytes());
                w
            }
            Command::Reset => header(kind::RESET, seq),
            Command::Bypass { on } => {
                let mut w = header(kind::BYPASS, seq);
                put(&mut w, 0, &[u8::from(on)]);
                w
            }
            Command::Ping { token } => {
                let mut w = header(kind::PING, seq);
                put(&mut w, 0, &token.to_le_bytes());
                w
            }
            Command::Shutdown => header(kind::SHUTDOWN, seq),
        }
    }

    /// Decodes a record found at ring position `pos`. Never panics.
    pub fn decode(w: &[u8; RECORD_SIZE], pos: u64) -> Result<(u64, Command), DecodeError> {
        let (k, seq) = check_header(w, pos)?;
        let c = match k {
            kind::SET_PARAM => Command::SetParam {
                id: get_u32(w, 0),
                value: finite(f32::from_le_bytes(get(w, 4)), pos, k, "value")?,
            },
            kind::RESET => Command::Reset,
            kind::BYPASS => match get::<1>(w, 0)[0] {
                0 => Command::Bypass { on: false },
                1 => Command::Bypass { on: true },
                _ => {
                    return Err(DecodeError::BadField {
                        pos,
                        kind: k,
                        field: "on",
                    });
                }
            },
            kind::PING => Command::Ping {
                token: get_u64(w, 0),
            },
            kind::SHUTDOWN => Command::Shutdown,
            _ => return Err(DecodeError::UnknownKind { pos, kind: k }),
        };
        Ok((seq, c))
    }
}

impl Event {
    /// The 64-byte wire form with sequence number `seq`.
    pub fn encode(&self, seq: u64) -> [u8; RECORD_SIZE] {
        match *self {
            Event::Ack { seq: acked } => {
                let mut w = header(kind::ACK, seq);
                put(&mut w, 0, &acked.to_le_bytes());
                w
            }
            Event::Error {
                seq: of,
                code,
                message,
            } => {
                let mut w = header(kind::ERROR, seq);
                put(&mut w, 0, &of.to_le_bytes());
                put(&mut w, 8, &code.to_le_bytes());
                put(&mut w, 12, &message.to_wire());
                w
            }
            Event::Telemetry {
                cycle,
                process_ns,
                late,
            } => {
                let mut w = header(kind::TELEMETRY, seq);
                put(&mut w, 0, &cycle.to_le_bytes());
                put(&mut w, 8, &process_ns.to_le_bytes());
                put(&mut w, 16, &late.to_le_bytes());
                w
            }
            Event::Param { id, default, name } => {
                let mut w = header(kind::PARAM, seq);
                put(&mut w, 0, &id.to_le_bytes());
                put(&mut w, 4, &default.to_le_bytes());
                put(&mut w, 8, &name.to_wire());
                w
            }
        }
    }

    /// Decodes a record found at ring position `pos`. Never panics.
    pub fn decode(w: &[u8; RECORD_SIZE], pos: u64) -> Result<(u64, Event), DecodeError> {
        let (k, seq) = check_header(w, pos)?;
        let bad = |field| DecodeError::BadField {
            pos,
            kind: k,
            field,
        };
        let e = match k {
            kind::ACK => Event::Ack { seq: get_u64(w, 0) },
            kind::ERROR => Event::Error {
                seq: get_u64(w, 0),
                code: get_u32(w, 8),
                message: ShortStr::from_wire(&get(w, 12)).ok_or(bad("message"))?,
            },
            kind::TELEMETRY => Event::Telemetry {
                cycle: get_u64(w, 0),
                process_ns: get_u64(w, 8),
                late: get_u32(w, 16),
            },
            kind::PARAM => Event::Param {
                id: get_u32(w, 0),
                default: finite(f32::from_le_bytes(get(w, 4)), pos, k, "default")?,
                name: ShortStr::from_wire(&get(w, 8)).ok_or(bad("name"))?,
            },
            _ => return Err(DecodeError::UnknownKind { pos, kind: k }),
        };
        Ok((seq, e))
    }
}

/// Shared producer logic: encode, one copy into the slot, publish.
fn push_record(
    core: &mut ProducerCore,
    encode: impl FnOnce(u64) -> Wire,
) -> Result<u64, PushError> {
    let Some(off) = core.reserve()? else {
        return Err(PushError::Full);
    };
    let seq = core.head().wrapping_add(1);
    let w = encode(seq);
    debug_assert!(off + RECORD_SIZE <= core.g.end());
    // SAFETY: `off` is a slot of the private geometry (RECORD_SIZE bytes in bounds); it
    // is ours until `commit` (the consumer's validated tail is past it).
    unsafe { core.map.write_bytes(off, w.as_ptr(), RECORD_SIZE) };
    core.commit();
    Ok(seq)
}

/// Shared consumer logic: one copy out of the slot, release, then decode the copy.
fn pop_record<T>(
    core: &mut ConsumerCore,
    decode: impl FnOnce(&Wire, u64) -> Result<(u64, T), DecodeError>,
) -> Result<Option<(u64, T)>, RecordError> {
    let Some(off) = core.front()? else {
        return Ok(None);
    };
    let pos = core.tail();
    let mut w = [0u8; RECORD_SIZE];
    debug_assert!(off + RECORD_SIZE <= core.g.end());
    // SAFETY: `off` is a published slot of the private geometry (RECORD_SIZE bytes in
    // bounds); `w` is a local buffer. The peer may scribble the slot meanwhile: we only
    // ever decode our private copy.
    unsafe { core.map.read_bytes(off, w.as_mut_ptr(), RECORD_SIZE) };
    core.release();
    Ok(Some(decode(&w, pos)?))
}

/// Host end of the command ring.
#[derive(Debug)]
pub struct CommandProducer {
    core: ProducerCore,
}

impl CommandProducer {
    pub(crate) fn new(core: ProducerCore) -> Self {
        Self { core }
    }

    /// Sends `c`; returns its seq. RT-safe, wait-free.
    pub fn push(&mut self, c: Command) -> Result<u64, PushError> {
        push_record(&mut self.core, |seq| c.encode(seq))
    }

    /// Free record slots, after a fresh look at the consumer. RT-safe.
    pub fn free_slots(&mut self) -> Result<u32, RingFault> {
        self.core.free()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }

    pub(crate) fn core_mut(&mut self) -> &mut ProducerCore {
        &mut self.core
    }
}

/// Worker end of the command ring.
#[derive(Debug)]
pub struct CommandConsumer {
    core: ConsumerCore,
}

impl CommandConsumer {
    pub(crate) fn new(core: ConsumerCore) -> Self {
        Self { core }
    }

    /// The next command and its seq. A bad record is consumed and reported as
    /// [`RecordError::Decode`]; call again for the next one. RT-safe, wait-free.
    pub fn pop(&mut self) -> Result<Option<(u64, Command)>, RecordError> {
        pop_record(&mut self.core, Command::decode)
    }

    /// Records ready, after a fresh look at the producer. RT-safe.
    pub fn available(&mut self) -> Result<u32, RingFault> {
        self.core.available()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }
}

/// Worker end of the event ring.
#[derive(Debug)]
pub struct EventProducer {
    core: ProducerCore,
}

impl EventProducer {
    pub(crate) fn new(core: ProducerCore) -> Self {
        Self { core }
    }

    /// Sends `e`; returns its seq. RT-safe, wait-free.
    pub fn push(&mut self, e: Event) -> Result<u64, PushError> {
        push_record(&mut self.core, |seq| e.encode(seq))
    }

    /// Free record slots, after a fresh look at the consumer. RT-safe.
    pub fn free_slots(&mut self) -> Result<u32, RingFault> {
        self.core.free()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }
}

/// Host end of the event ring.
#[derive(Debug)]
pub struct EventConsumer {
    core: ConsumerCore,
}

impl EventConsumer {
    pub(crate) fn new(core: ConsumerCore) -> Self {
        Self { core }
    }

    /// The next event and its seq. A bad record is consumed and reported as
    /// [`RecordError::Decode`]; call again for the next one. RT-safe, wait-free.
    pub fn pop(&mut self) -> Result<Option<(u64, Event)>, RecordError> {
        pop_record(&mut self.core, Event::decode)
    }

    /// Records ready, after a fresh look at the producer. RT-safe.
    pub fn available(&mut self) -> Result<u32, RingFault> {
        self.core.available()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }

    pub(crate) fn core_mut(&mut self) -> &mut ConsumerCore {
        &mut self.core
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let all = [
            Command::SetParam { id: 7, value: -0.5 },
            Command::Reset,
            Command::Bypass { on: true },
            Command::Bypass { on: false },
            Command::Ping { token: u64::MAX },
            Command::Shutdown,
        ];
        for (i, c) in all.into_iter().enumerate() {
            let pos = 100 + i as u64;
            assert_eq!(Command::decode(&c.encode(pos + 1), pos), Ok((pos + 1, c)));
        }
    }

    #[test]
    fn events_round_trip() {
        let all = [
            Event::Ack { seq: 3 },
            Event::Error {
                seq: 9,
                code: 2,
                message: ShortStr::new("filter unstable"),
            },
            Event::Telemetry {
                cycle: 1 << 40,
                process_ns: 12345,
                late: 2,
            },
            Event::Param {
                id: 1,
                default: 0.25,
                name: ShortStr::new("gain ✓"),
            },
        ];
        for (i, e) in all.into_iter().enumerate() {
            let pos = i as u64;
            assert_eq!(Event::decode(&e.encode(pos + 1), pos), Ok((pos + 1, e)));
        }
    }

    #[test]
    fn decode_rejects_bad_records() {
        let w = Command::Reset.encode(1);
        let mut bad = w;
        bad[0] = 99;
        assert_eq!(
            Command::decode(&bad, 0),
            Err(DecodeError::UnknownKind { pos: 0, kind: 99 })
        );
        bad = w;
        bad[2] = 2;
        assert_eq!(
            Command::decode(&bad, 0),
            Err(DecodeError::Version { pos: 0, version: 2 })
        );
        assert_eq!(
            Command::decode(&w, 5),
            Err(DecodeError::Seq {
                pos: 5,
                expected: 6,
                found: 1
            })
        );
        bad = w;
        bad[5] = 1;
        assert!(matches!(
            Command::decode(&bad, 0),
            Err(DecodeError::BadField {
                field: "reserved",
                ..
            })
        ));
        let mut b = Command::Bypass { on: true }.encode(1);
        b[16] = 2;
        assert!(matches!(
            Command::decode(&b, 0),
            Err(DecodeError::BadField { field: "on", .. })
        ));
        let nan = Command::SetParam {
            id: 1,
            value: f32::NAN,
        }
        .encode(1);
        assert!(matches!(
            Command::decode(&nan, 0),
            Err(DecodeError::BadField { field: "value", .. })
        ));
        let mut e = Event::Param {
            id: 1,
            default: 0.0,
            name: ShortStr::new("ab"),
        }
        .encode(1);
        e[16 + 8 + 3] = b'x'; // byte after the NUL terminator
        assert!(matches!(
            Event::decode(&e, 0),
            Err(DecodeError::BadField { field: "name", .. })
        ));
        e = Event::Error {
            seq: 0,
            code: 0,
            message: ShortStr::new(""),
        }
        .encode(1);
        e[16 + 12] = 0xff; // invalid UTF-8
        assert!(matches!(
            Event::decode(&e, 0),
            Err(DecodeError::BadField {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn short_str_truncates_at_char_boundary() {
        let s = ShortStr::new("ééééééééééééééééé"); // 34 bytes
        assert_eq!(s.as_str().len(), 32);
        let s = ShortStr::new("aéééééééééééééééé"); // 33 bytes: cut before the last é
        assert_eq!(s.as_str().len(), 31);
    }
}
