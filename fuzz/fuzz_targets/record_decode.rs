//! The command/event record decoders on arbitrary 64-byte records: never panic, and a
//! decoded record re-encodes to a record that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotpool_ring::{Command, Event, RECORD_SIZE};

fuzz_target!(|data: &[u8]| {
    // 8 bytes of ring position, then the record (zero-padded).
    let (pos_bytes, rest) = data.split_at(data.len().min(8));
    let mut p = [0u8; 8];
    p[..pos_bytes.len()].copy_from_slice(pos_bytes);
    let pos = u64::from_le_bytes(p);
    let mut w = [0u8; RECORD_SIZE];
    let n = rest.len().min(RECORD_SIZE);
    w[..n].copy_from_slice(&rest[..n]);

    if let Ok((seq, c)) = Command::decode(&w, pos) {
        assert_eq!(
            seq,
            pos.wrapping_add(1),
            "accepted a command out of sequence"
        );
        let again = Command::decode(&c.encode(seq), pos).expect("re-encoded command refused");
        assert_eq!(again, (seq, c));
        let _ = format!("{c:?}");
    }
    if let Ok((seq, e)) = Event::decode(&w, pos) {
        assert_eq!(
            seq,
            pos.wrapping_add(1),
            "accepted an event out of sequence"
        );
        let again = Event::decode(&e.encode(seq), pos).expect("re-encoded event refused");
        assert_eq!(again, (seq, e));
        let _ = format!("{e:?}");
    }
});
