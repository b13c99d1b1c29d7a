//! RFC 6901 JSON Pointers, as lookups and redactions take them: checked once, then split into
//! unescaped reference tokens without allocating unless a token has escapes.

use std::borrow::Cow;
use std::fmt;

/// Checks `pointer` against RFC 6901; the error names the pointer and the problem.
pub(super) fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(format!(
            "pointer {} is not an RFC 6901 JSON Pointer: it must be empty or start with '/'",
            Shown(pointer)
        ));
    }
    let bytes = pointer.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'~') {
        if !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            // '~' is ASCII, so the next byte starts a character.
            let found = match pointer.get(i + 1..).and_then(|rest| rest.chars().next()) {
                Some(c) => format!("{c:?}"),
                None => "the end of the pointer".to_owned(),
            };
            return Err(format!(
                "pointer {} is not an RFC 6901 JSON Pointer: the '~' at byte {i} must be \
                 followed by '0' or '1' (an escaped '~' or '/'), not {found}",
                Shown(pointer)
            ));
        }
    }
    Ok(())
}

/// The unescaped reference tokens of a pointer that passed [`check_pointer`].
pub(super) fn tokens(pointer: &str) -> Tokens<'_> {
    Tokens {
        rest: pointer.strip_prefix('/'),
    }
}

/// The parent of a pointer that passed [`check_pointer`], and its last token unescaped; `None`
/// for the empty pointer (the whole document). A redaction walks to the parent and edits the
/// last token there, without collecting the tokens on the way.
pub(super) fn split_last(pointer: &str) -> Option<(&str, Cow<'_, str>)> {
    // An escaped '/' is "~1": the last '/' always starts the last token.
    let slash = pointer.rfind('/')?;
    let (parent, last) = pointer.split_at_checked(slash)?;
    Some((parent, tokens(last).next()?))
}

/// Splits on '/' by hand: `str::split` costs more than the rest of a short lookup.
pub(super) struct Tokens<'a> {
    /// What follows the '/' that starts the next token; `None` after the last one.
    rest: Option<&'a str>,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Cow<'a, str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let token = match rest.bytes().position(|b| b == b'/') {
            Some(slash) => {
                // '/' is ASCII: both sides of it are char boundaries.
                self.rest = rest.get(slash + 1..);
                rest.get(..slash).unwrap_or_default()
            }
            None => {
                self.rest = None;
                rest
            }
        };
        if !token.contains('~') {
            return Some(Cow::Borrowed(token));
        }
        let mut out = String::with_capacity(token.len());
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            match (c, chars.clone().next()) {
                ('~', Some('1')) => {
                    out.push('/');
                    chars.next();
                }
                ('~', Some('0')) => {
                    out.push('~');
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        Some(Cow::Owned(out))
    }
}

/// The array index a token names, if it is one: `0` or digits without a leading zero. `-` (the
/// element after the last) never exists, so it is not an index here.
pub(super) fn array_index(token: &str) -> Option<usize> {
    match token.as_bytes() {
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => token.parse().ok(),
        _ => None,
    }
}

/// A pointer quoted for an error message, cut short so that a huge pointer cannot bloat the
/// message (it goes back to the guest and into the host log).
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 120;
        if self.0.len() <= MAX {
            return write!(f, "{:?}", self.0);
        }
        let cut = (0..=MAX)
            .rev()
            .find(|&i| self.0.is_char_boundary(i))
            .unwrap_or(0);
        let head = self.0.get(..cut).unwrap_or_default();
        write!(f, "{head:?}... ({} bytes)", self.0.len())
    }
}
