//! `eval`/`test` input lines (NDJSON): any text gives a message or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = twinguard_core::input::parse_line(line);
    }
});
