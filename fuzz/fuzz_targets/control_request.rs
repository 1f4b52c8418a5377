//! The control protocol as the host reads it: one line from an untrusted local
//! client, parsed strictly into a `Request`; names inside go through `Target::parse`.
//! A request that parses must survive a round trip. The client side (responses and
//! `status` tables) is exercised on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotpool_host::control::client::status_table;
use slotpool_host::control::protocol::{MAX_FRAME, Request, Response, StatusReport, Target};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_FRAME {
        return;
    }
    let line = data.strip_suffix(b"\n").unwrap_or(data);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Ok(req) = serde_json::from_slice::<Request>(line) {
        let _ = req.verb();
        let text = serde_json::to_string(&req).expect("a parsed request serialises");
        assert!(!text.contains('\n'), "a request frame spans lines: {text}");
        let back: Request = serde_json::from_str(&text).expect("round trip parses");
        assert_eq!(back, req);
    }
    if let Ok(s) = std::str::from_utf8(line) {
        match Target::parse(s) {
            Ok(Target::Instance(name, _)) => assert!(!name.is_empty()),
            Ok(Target::Program(name)) => assert!(!name.is_empty()),
            Ok(Target::All) => assert_eq!(s, "all"),
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(line) {
        let _ = serde_json::to_string(&resp).expect("a parsed response serialises");
    }
    if let Ok(report) = serde_json::from_slice::<StatusReport>(line) {
        let _ = status_table(&report);
    }
});
