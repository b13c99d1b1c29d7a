//! Writing to the host log, attributed to this policy.
//!
//! The host truncates long lines and rate-limits each policy, so logging cannot flood it; still,
//! log decisions' reasons, not every message. (`println!` and `eprintln!` also reach the host,
//! as WASI stdout and stderr, but without a level.)
//!
//! ```no_run
//! twinguard_guest::log::info("policy ready");
//! let device = "sensor-7";
//! twinguard_guest::log::warn(&format!("{device}: reading out of range"));
//! ```

use crate::bindings::{host, wit::Level};

/// Logs at trace level.
pub fn trace(text: &str) {
    host::log(Level::Trace, text);
}

/// Logs at debug level.
pub fn debug(text: &str) {
    host::log(Level::Debug, text);
}

/// Logs at info level.
pub fn info(text: &str) {
    host::log(Level::Info, text);
}

/// Logs at warn level.
pub fn warn(text: &str) {
    host::log(Level::Warn, text);
}

/// Logs at error level.
pub fn error(text: &str) {
    host::log(Level::Error, text);
}
