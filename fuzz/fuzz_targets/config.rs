//! The config file: the runtime's tables and the service tables (gateway, quarantine, alerts,
//! admin) parse or give an error naming the key, never a panic. Paths are not opened: only
//! parsing and validation run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = twinguard_core::Config::from_toml(text, "/nonexistent");
        let _ = twinguard::FileConfig::from_toml(text, "/nonexistent");
    }
});
