//! The config parser on arbitrary text: `Config::parse` must return a config or a
//! list of errors, never panic, and every error must point inside the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use slotpool_host::config::Config;
use slotpool_host::engine::patch::{build_patch, slot_specs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/slotpool-fuzz/fuzz.toml");
    match Config::parse(text, path) {
        Ok(config) => {
            // Parsing is a pure function of the text.
            let again = Config::parse(text, path).expect("the same text parses twice");
            assert_eq!(again, config);
            // Instance names are unique: they name regions, sockets and logs.
            let mut names = std::collections::HashSet::new();
            for p in &config.programs {
                for n in p.instance_names() {
                    assert!(names.insert(n.clone()), "instance {n} named twice");
                }
            }
            // What `check`, `render` and `run` do next with a valid config: build the
            // patch and the slot specs. They may refuse it, never panic.
            let _ = build_patch(&config).map_err(|e| e.to_string());
            let _ = slot_specs(&config).map_err(|e| e.to_string());
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err with no error in it");
            let lines = text.lines().count().max(1);
            for e in &errors.0 {
                assert!(
                    e.line <= lines + 1,
                    "error points at line {} of a {lines}-line file: {e}",
                    e.line
                );
                assert_eq!(e.file, path, "error names another file: {e}");
            }
            // The message the user sees renders.
            let _ = errors.to_string();
        }
    }
});
