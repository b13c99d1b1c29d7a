//! Device-supplied text in reasons and alert details.
//!
//! Device ids, topics, payload strings and the host's parser errors all come from devices you do
//! not control. Written into a [`Decision`](crate::Decision) as they are, a long one would take
//! the decision past the host's `decision-bytes` limit and fault the policy instead of
//! quarantining the message. These wrappers cut such text short when they are formatted, and
//! only then: clean traffic, which writes no reason, allocates nothing.
//!
//! Payload values are another matter: reasons and alerts go to the alerts topic, the alert log
//! and the quarantine store, past every redacting policy of the chain, so a value quoted there
//! leaks what the chain removes from the payload. [`Described`] (and
//! [`Value::describe`](crate::Value::describe)) say what a value is without saying what it holds.
//!
//! ```
//! use twinguard_guest::text::{Clipped, Described, Quoted};
//!
//! assert_eq!(format!("device {}", Quoted("temp-0007")), "device \"temp-0007\"");
//! assert_eq!(
//!     Described("ada.lovelace@example.com").to_string(),
//!     "a string (24 characters, \"…@…\")",
//! );
//! let long = "x".repeat(100);
//! assert_eq!(
//!     Quoted(&long).to_string(),
//!     format!("{:?}... (100 bytes)", "x".repeat(80)),
//! );
//! assert_eq!(Clipped("expected `:` at line 1").to_string(), "expected `:` at line 1");
//! ```

use std::fmt;

/// Text quoted (Rust string syntax, so control characters and quotes are escaped) and cut to
/// [`MAX_CHARS`](Self::MAX_CHARS) characters, followed by `... (N bytes)` when cut. For ids,
/// topics and names; a payload value goes through [`Described`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted<'a>(pub &'a str);

impl Quoted<'_> {
    /// How many characters are kept.
    pub const MAX_CHARS: usize = 80;
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        match cut(text, Self::MAX_CHARS) {
            None => write!(f, "{text:?}"),
            Some(head) => write!(f, "{head:?}... ({} bytes)", text.len()),
        }
    }
}

/// Text as it is, cut to [`MAX_CHARS`](Self::MAX_CHARS) characters and followed by `...` when
/// cut. For longer, already readable text such as a parser error from the host, which may quote
/// the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clipped<'a>(pub &'a str);

impl Clipped<'_> {
    /// How many characters are kept.
    pub const MAX_CHARS: usize = 320;
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut(self.0, Self::MAX_CHARS) {
            None => f.write_str(self.0),
            Some(head) => write!(f, "{head}..."),
        }
    }
}

/// A payload string described instead of quoted: its length in characters and a masked form,
/// the first character then `…`. A string with an `@` (an e-mail address, most likely) shows
/// `…@…`, no character of its local part or domain; one of fewer than
/// [`MIN_SHOWN`](Self::MIN_SHOWN) characters shows `…` alone, since its first character would
/// be much of the value.
///
/// Enough for an analyst to tell a wrong type or a stray unit from a missing field, nothing a
/// redacting policy would have removed.
///
/// ```
/// use twinguard_guest::text::Described;
///
/// assert_eq!(Described("1042").to_string(), "a string (4 characters, \"1…\")");
/// assert_eq!(Described("ok").to_string(), "a string (2 characters, \"…\")");
/// assert_eq!(Described("ada@example.com").to_string(), "a string (15 characters, \"…@…\")");
/// assert_eq!(Described("").to_string(), "an empty string");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Described<'a>(pub &'a str);

impl Described<'_> {
    /// The shortest string whose first character is shown.
    pub const MIN_SHOWN: usize = 4;
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let chars = text.chars().count();
        let mut masked = String::new();
        match text.chars().next() {
            None => return f.write_str("an empty string"),
            Some(_) if text.contains('@') => masked.push_str("…@…"),
            Some(first) if chars >= Self::MIN_SHOWN => {
                masked.push(first);
                masked.push('…');
            }
            Some(_) => masked.push('…'),
        }
        let plural = if chars == 1 { "" } else { "s" };
        // Debug: a control or bidirectional character shown first is escaped.
        write!(f, "a string ({chars} character{plural}, {masked:?})")
    }
}

/// The first `max_chars` characters of `text`, or `None` when it is no longer than that.
fn cut(text: &str, max_chars: usize) -> Option<&str> {
    let (end, _) = text.char_indices().nth(max_chars)?;
    Some(text.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_and_cuts_on_characters() {
        assert_eq!(Quoted("a\"b\n").to_string(), r#""a\"b\n""#);
        let exact = "é".repeat(80);
        assert_eq!(Quoted(&exact).to_string(), format!("{exact:?}"));
        let long = "é".repeat(100);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("{:?}... (200 bytes)", "é".repeat(80))
        );
    }

    #[test]
    fn described_never_shows_more_than_a_first_character() {
        for (text, described) in [
            (
                "ada.lovelace@example.com",
                "a string (24 characters, \"…@…\")",
            ),
            ("@handle", "a string (7 characters, \"…@…\")"),
            ("Ada Lovelace", "a string (12 characters, \"A…\")"),
            ("éèêë", "a string (4 characters, \"é…\")"),
            ("abc", "a string (3 characters, \"…\")"),
            ("x", "a string (1 character, \"…\")"),
            ("\u{202e}evil", "a string (5 characters, \"\\u{202e}…\")"),
            ("\nline", "a string (5 characters, \"\\n…\")"),
        ] {
            assert_eq!(Described(text).to_string(), described, "{text:?}");
        }
        let long = "y".repeat(100_000);
        assert_eq!(
            Described(&long).to_string(),
            "a string (100000 characters, \"y…\")"
        );
    }

    #[test]
    fn clipped_keeps_text_as_is_up_to_the_limit() {
        assert_eq!(Clipped("").to_string(), "");
        let exact = "ü".repeat(320);
        assert_eq!(Clipped(&exact).to_string(), exact);
        let long = "ü".repeat(400);
        assert_eq!(
            Clipped(&long).to_string(),
            format!("{}...", "ü".repeat(320))
        );
    }
}
