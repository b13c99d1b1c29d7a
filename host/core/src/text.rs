//! Text a guest wrote, made safe for the sinks that show it to people and parsers.
//!
//! A policy's log lines, panic message, quarantine reasons and alert codes and details are the
//! guest's text. Passed on raw, a CR or LF forges a log line or a syslog record, an ESC
//! sequence rewrites an operator's terminal, a NUL truncates a C reader's string, and U+2028
//! or U+2029 end a line for JavaScript readers of JSON lines. Every sink therefore escapes:
//! the host log through [`escape_controls`], the alert sinks likewise for syslog, and JSON
//! writers for U+2028/U+2029 on top of what JSON escapes itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a log line or a record as is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with every control character (C0, DEL, C1) and U+2028/U+2029 written as a visible
/// escape: `\r`, `\n`, `\t`, `\0`, or `\u{1b}`. Text without any is returned as is.
///
/// ```
/// use twinguard_core::text::escape_controls;
/// assert_eq!(escape_controls("ok\r\nforged\x1b[2J"), "ok\\r\\nforged\\u{1b}[2J");
/// assert_eq!(escape_controls("plain"), "plain");
/// ```
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` for one line of a log: controls escaped as by [`escape_controls`], and cut after
/// `max` characters with its full length in bytes appended, so that a 64 KiB device id
/// (MQTT's topic and client-id limit) does not make every line that names it 64 KiB wide.
///
/// ```
/// use twinguard_core::text::bounded;
/// assert_eq!(bounded("press-7", 16), "press-7");
/// assert_eq!(bounded(&"x".repeat(70_000), 4), "xxxx… (70000 bytes)");
/// assert_eq!(bounded("a\nb", 16), "a\\nb");
/// ```
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => escape_controls(text),
        Some((cut, _)) => Cow::Owned(format!(
            "{}… ({} bytes)",
            escape_controls(&text[..cut]),
            text.len()
        )),
    }
}
