//! Device-supplied text in reasons and alert details.
//!
//! Device ids, topics, payload strings and the host's parser errors all come from devices you do
//! not control. Written into a [`Decision`](crate::Decision) as they are, a long one would take
//! the decision past the host's `decision-bytes` limit and fault the policy instead of
//! quarantining the message. These wrappers cut such text short when they are formatted, and
//! only then: clean traffic, which writes no reason, allocates nothing.
//!
//! ```
//! use twinguard_guest::text::{Clipped, Quoted};
//!
//! assert_eq!(format!("device {}", Quoted("temp-0007")), "device \"temp-0007\"");
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
/// topics and payload strings.
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
