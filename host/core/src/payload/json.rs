//! A validating JSON scanner that records where values lie instead of building them, and the
//! redaction overlay on its tape.
//!
//! JSON redaction marks removed and masked values over the same tape and writes the result
//! compact, copying every untouched value verbatim. When the payload has no whitespace between
//! its tokens (as devices usually send it), a container with no edit inside is one copy of its
//! bytes; only the containers on an edit's path are written member by member.

use std::borrow::Cow;

use super::pointer::{array_index, split_last, tokens};
use super::tape::{
    offset, twice_message, Builder, Entry, EntryKey, Kind, Span, Tape, Twice, KEY_OWNED,
    MAX_INDEXED_LEN,
};
use super::{Edit, EditAction, FieldRef, FieldValue, RedactError, MAX_DEPTH};

/// What is wrong with a JSON payload, and at which byte.
#[derive(Debug)]
pub(super) struct SyntaxError {
    what: &'static str,
    at: usize,
}

/// The error as serde_json words positions: line and column, both from 1, columns in bytes.
pub(super) fn describe(bytes: &[u8], error: &SyntaxError) -> String {
    let before = bytes.get(..error.at).unwrap_or(bytes);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = before.len().saturating_sub(line_start) + 1;
    format!("JSON: {} at line {line} column {column}", error.what)
}

/// Validates the whole payload, as strictly as serde_json (depth limit included), and
/// records every value. Iterative, so that nesting cannot exhaust the stack.
pub(super) fn tape(b: &[u8]) -> Result<Tape, SyntaxError> {
    if b.len() >= MAX_INDEXED_LEN {
        return Err(SyntaxError {
            what: "payload too large (4 GiB or more)",
            at: 0,
        });
    }
    let mut s = Scanner {
        b,
        pos: 0,
        spaced: false,
    };
    let mut tape = Builder::new(b.len());
    // The innermost open container, kept in registers because every value's end reads it:
    // its entry's index in `tape.pending` and whether it is an object. An open container's
    // `first` is not set until it closes, so until then it holds the index of the container
    // around it: closing one finds its parent with no stack of its own.
    let mut inner = 0usize;
    let mut in_object = false;
    let mut depth = 0usize;
    let mut key = EntryKey::NONE;
    s.skip_ws();
    s.spaced = false;
    loop {
        let start = s.pos;
        let kind = match s.peek() {
            Some(b'"') => {
                s.string()?;
                Kind::Scalar
            }
            Some(b'-' | b'0'..=b'9') => {
                s.number()?;
                Kind::Scalar
            }
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b't') => {
                s.literal(b"true")?;
                Kind::Scalar
            }
            Some(b'f') => {
                s.literal(b"false")?;
                Kind::Scalar
            }
            Some(b'n') => {
                s.literal(b"null")?;
                Kind::Scalar
            }
            Some(_) => return s.fail("expected value"),
            None => return s.fail("EOF while parsing a value"),
        };
        let mut entry = Entry::new(key, kind, start, s.pos);
        if kind != Kind::Scalar {
            if depth >= MAX_DEPTH {
                return s.fail("recursion limit exceeded");
            }
            s.pos += 1;
            s.skip_ws();
            let close = if kind == Kind::Object { b'}' } else { b']' };
            if s.peek() == Some(close) {
                s.pos += 1;
                entry.end = offset(s.pos);
            } else {
                // The container around this one (none at the root: never read back).
                entry.first = offset(inner);
                inner = tape.pending.len();
                in_object = kind == Kind::Object;
                depth += 1;
                tape.pending.push(entry);
                key = if in_object {
                    s.key(&mut tape.owned_keys)?
                } else {
                    EntryKey::NONE
                };
                continue;
            }
        }
        tape.pending.push(entry);
        // A value ended: close the containers it completes, or go on to the next one.
        loop {
            let Some(top) = depth.checked_sub(1) else {
                tape.compact = !s.spaced;
                s.skip_ws();
                if s.pos < b.len() {
                    return s.fail("trailing characters");
                }
                return tape.finish().map_or_else(|| s.fail("internal error"), Ok);
            };
            let next = match s.peek() {
                Some(ws) if is_ws(ws) => {
                    s.skip_ws();
                    s.peek()
                }
                next => next,
            };
            match next {
                Some(b',') => {
                    s.pos += 1;
                    s.skip_ws();
                    key = if in_object {
                        s.key(&mut tape.owned_keys)?
                    } else {
                        EntryKey::NONE
                    };
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                Some(_) if in_object => return s.fail("expected ',' or '}'"),
                Some(_) => return s.fail("expected ',' or ']'"),
                None if in_object => return s.fail("EOF while parsing an object"),
                None => return s.fail("EOF while parsing a list"),
            }
            s.pos += 1;
            // The container around the closed one comes back into the registers.
            let around = tape.pending.get(inner).map_or(0, |e| e.first as usize);
            tape.close(inner, s.pos);
            depth = top;
            inner = around;
            in_object = tape
                .pending
                .get(around)
                .is_some_and(|e| e.kind == Kind::Object);
        }
    }
}

/// Decodes the scalar at `value` of a payload `tape` accepted.
pub(super) fn leaf(bytes: &[u8], value: Span) -> Result<FieldRef<'_>, SyntaxError> {
    let raw = bytes.get(value.start..value.end).unwrap_or_default();
    let bad = |what| SyntaxError {
        what,
        at: value.start,
    };
    match raw.first() {
        Some(b'n') => Ok(FieldRef::Other(FieldValue::Null)),
        Some(b't') => Ok(FieldRef::Other(FieldValue::Bool(true))),
        Some(b'f') => Ok(FieldRef::Other(FieldValue::Bool(false))),
        Some(b'"') => {
            let inner = raw
                .strip_prefix(b"\"")
                .and_then(|r| r.strip_suffix(b"\""))
                .ok_or_else(|| bad("EOF while parsing a string"))?;
            let text = if inner.contains(&b'\\') {
                Cow::Owned(unescape(inner).map_err(bad)?)
            } else {
                Cow::Borrowed(std::str::from_utf8(inner).map_err(|_| bad("invalid UTF-8"))?)
            };
            Ok(FieldRef::Text(text))
        }
        // serde_json refuses numbers that overflow f64 too.
        _ => number(raw)
            .map(FieldRef::Other)
            .ok_or_else(|| bad("number out of range")),
    }
}

/// [`super::redact`] of a JSON payload.
pub(super) fn redact(bytes: &[u8], edits: &[Edit]) -> Result<Option<Vec<u8>>, RedactError> {
    let tape = Tape::build(super::Format::Json, bytes).map_err(|e| match e {
        super::FieldError::Malformed(why) => RedactError::Malformed(why),
        other => RedactError::Malformed(other.to_string()),
    })?;
    redact_tape(&tape, bytes, edits)
}

/// Applies `edits` over the tape of a JSON payload: the redacted payload, or `None` if no edit
/// matched anything. An edit through (or of) a key that an object has twice is refused, as a
/// lookup of it is (see `Tape::child`).
pub(super) fn redact_tape(
    tape: &Tape,
    bytes: &[u8],
    edits: &[Edit],
) -> Result<Option<Vec<u8>>, RedactError> {
    let mut overlay = Overlay::new(tape, bytes, edits);
    let mut changed = false;
    for (k, edit) in edits.iter().enumerate() {
        changed |= overlay
            .apply(k, &edit.pointer)
            .map_err(|key| RedactError::Malformed(twice_message((true, key.as_bytes()))))?;
    }
    Ok(changed.then(|| overlay.write()))
}

thread_local! {
    /// The marks buffer of the thread's last overlay: a redaction in the chain of every message
    /// would otherwise allocate one per message.
    static MARKS: std::cell::Cell<Vec<Mark>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Edits applied over a tape, without touching it: which entries are gone and which are
/// masked. Writing it out copies every untouched scalar verbatim, so a redaction changes
/// nothing else (no number is re-formatted, no escape rewritten).
struct Overlay<'a> {
    tape: &'a Tape,
    bytes: &'a [u8],
    edits: &'a [Edit],
    /// By entry.
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Live,
    /// A container with an edit somewhere inside: written piece by piece.
    Holds,
    Removed,
    /// Masked by the edit at this index of `edits`; a later mask of the entry replaces it.
    Masked(usize),
}

impl<'a> Overlay<'a> {
    fn new(tape: &'a Tape, bytes: &'a [u8], edits: &'a [Edit]) -> Self {
        let mut marks = MARKS.take();
        marks.clear();
        marks.resize(tape.entries.len(), Mark::Live);
        Self {
            tape,
            bytes,
            edits,
            marks,
        }
    }

    fn mark(&self, i: usize) -> Mark {
        self.marks.get(i).copied().unwrap_or(Mark::Removed)
    }

    fn live(&self, i: usize) -> bool {
        self.mark(i) != Mark::Removed
    }

    fn mask(&self, k: usize) -> &'a str {
        match self.edits.get(k).map(|e| &e.action) {
            Some(EditAction::Mask(text)) => text,
            _ => "",
        }
    }

    /// The entries of `container`'s children that are still there, with their index.
    fn children(&self, container: &Entry) -> impl Iterator<Item = (usize, &'a Entry)> + '_ {
        let first = container.first as usize;
        self.tape
            .children(container)
            .iter()
            .enumerate()
            .map(move |(i, entry)| (first + i, entry))
            .filter(|&(i, _)| self.live(i))
    }

    /// The child a token names, as a lookup in the edited document would find it; `Err` when
    /// the object has the key twice.
    fn find(&self, container: &Entry, token: &str) -> Result<Option<usize>, Twice> {
        match container.kind {
            Kind::Scalar => Ok(None),
            Kind::Array => Ok(array_index(token)
                .and_then(|n| self.children(container).nth(n))
                .map(|(i, _)| i)),
            Kind::Object if token.len() >= MAX_INDEXED_LEN => Ok(None),
            Kind::Object => {
                let mut found = None;
                for (i, entry) in self.children(container) {
                    if self.tape.key_is(self.bytes, entry, token) {
                        if found.is_some() {
                            return Err(Twice);
                        }
                        found = Some(i);
                    }
                }
                Ok(found)
            }
        }
    }

    /// Applies edit `k`, whose pointer is `pointer`; whether it matched anything, or the key an
    /// object it goes through has twice.
    fn apply(&mut self, k: usize, pointer: &str) -> Result<bool, String> {
        let Some((parent, last)) = split_last(pointer) else {
            return Ok(false);
        };
        let mut container = self.tape.root;
        for token in tokens(parent) {
            let Some(i) = self
                .find(&container, &token)
                .map_err(|Twice| token.to_string())?
            else {
                return Ok(false);
            };
            // A masked value is a string now: there is nothing inside it.
            match self.marks.get_mut(i) {
                Some(Mark::Masked(_)) => return Ok(false),
                // On an edit's path, so written piece by piece. If the edit then matches
                // nothing, that costs only speed: the same document comes out (its escaped
                // keys written unescaped, as in any container written piece by piece).
                Some(mark @ Mark::Live) => *mark = Mark::Holds,
                _ => {}
            }
            let Some(&entry) = self.tape.entries.get(i) else {
                return Ok(false);
            };
            container = entry;
        }
        let Some(i) = self
            .find(&container, &last)
            .map_err(|Twice| last.to_string())?
        else {
            return Ok(false);
        };
        let mark = match self.edits.get(k).map(|e| &e.action) {
            Some(EditAction::Mask(_)) => Mark::Masked(k),
            _ => Mark::Removed,
        };
        if let Some(slot) = self.marks.get_mut(i) {
            *slot = mark;
        }
        Ok(true)
    }

    /// The edited document, compact.
    fn write(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len());
        let root = self.tape.root;
        self.write_entry(&root, &mut out);
        out
    }

    /// Recursive, but only as deep as the payload, which the tape limits to MAX_DEPTH.
    fn write_entry(&self, entry: &Entry, out: &mut Vec<u8>) {
        match entry.kind {
            Kind::Scalar => out.extend_from_slice(
                self.bytes
                    .get(entry.start as usize..entry.end as usize)
                    .unwrap_or_default(),
            ),
            Kind::Array => {
                out.push(b'[');
                for (n, (i, child)) in self.children(entry).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    self.write_value(i, child, out);
                }
                out.push(b']');
            }
            Kind::Object => {
                out.push(b'{');
                // Indexed payloads have unique keys (`Tape::build` refuses the rest).
                for (n, (i, member)) in self.children(entry).enumerate() {
                    self.write_member(n, member, i, member, out);
                }
                out.push(b'}');
            }
        }
    }

    fn write_member(&self, n: usize, name: &Entry, i: usize, value: &Entry, out: &mut Vec<u8>) {
        if n > 0 {
            out.push(b',');
        }
        if name.key_len == KEY_OWNED {
            write_string(self.tape.owned_key(name.key_start).unwrap_or_default(), out);
        } else {
            // The key as it was written.
            let start = name.key_start as usize;
            let key = self
                .bytes
                .get(start..start.saturating_add(name.key_len as usize));
            out.push(b'"');
            out.extend_from_slice(key.unwrap_or_default());
            out.push(b'"');
        }
        out.push(b':');
        self.write_value(i, value, out);
    }

    fn write_value(&self, i: usize, entry: &Entry, out: &mut Vec<u8>) {
        match self.mark(i) {
            Mark::Masked(k) => write_string(self.mask(k), out),
            // Untouched and already compact: its bytes as they are, in one copy.
            Mark::Live if self.tape.compact => out.extend_from_slice(
                self.bytes
                    .get(entry.start as usize..entry.end as usize)
                    .unwrap_or_default(),
            ),
            _ => self.write_entry(entry, out),
        }
    }
}

impl Drop for Overlay<'_> {
    fn drop(&mut self) {
        // Marks are 16 bytes: a tape's largest spare (4,096 entries) is 64 KiB of them.
        if self.marks.capacity() <= 4096 {
            MARKS.set(std::mem::take(&mut self.marks));
        }
    }
}

/// Writes `text` as a JSON string.
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

fn number(raw: &[u8]) -> Option<FieldValue> {
    let text = std::str::from_utf8(raw).ok()?;
    if !raw.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        if let Ok(i) = text.parse::<i64>() {
            // `-0` is the float -0.0, as serde_json reads it, not the integer 0.
            if i == 0 && raw.first() == Some(&b'-') {
                return Some(FieldValue::Float(-0.0));
            }
            return Some(FieldValue::Integer(i));
        }
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(FieldValue::Float)
}

/// Decodes the inside of a JSON string with escapes.
fn unescape(raw: &[u8]) -> Result<String, &'static str> {
    const LONE: &str = "lone surrogate in hex escape";
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&b| b == b'\\') {
        let (plain, escape) = rest.split_at_checked(i).ok_or("invalid escape")?;
        out.extend_from_slice(plain);
        let Some((&kind, after)) = escape.get(1..).and_then(<[u8]>::split_first) else {
            return Err("EOF while parsing a string");
        };
        rest = after;
        let simple = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (high, after) = hex4(rest)?;
                rest = after;
                let code = if (0xD800..0xDC00).contains(&high) {
                    let after = rest.strip_prefix(b"\\u").ok_or(LONE)?;
                    let (low, after) = hex4(after)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(LONE);
                    }
                    rest = after;
                    0x1_0000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
                } else {
                    u32::from(high)
                };
                // A trailing surrogate on its own is no char.
                let c = char::from_u32(code).ok_or(LONE)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err("invalid escape"),
        };
        out.push(simple);
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).map_err(|_| "invalid UTF-8")
}

fn hex4(b: &[u8]) -> Result<(u16, &[u8]), &'static str> {
    let (digits, rest) = b.split_at_checked(4).ok_or("EOF while parsing a string")?;
    let mut value = 0u16;
    for &d in digits {
        value = value << 4 | u16::from(hex_digit(d).ok_or("invalid escape")?);
    }
    Ok((value, rest))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// JSON's whitespace (RFC 8259, section 2).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// How many bytes of `rest` a string can take as they are (up to a quote, a backslash or
/// a control character), whether some of them may be non-ASCII, and the byte that stops
/// them. Eight bytes a step.
#[inline(always)]
fn plain_prefix(rest: &[u8]) -> (usize, bool, Option<u8>) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut taken = 0;
    let mut high = 0u64;
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let w = u64::from_le_bytes(word);
        // Per byte, "is zero" and "is below 0x20": the lowest flagged byte is always a true
        // match (borrows only make false matches above a true one), which is all we need.
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let special = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        // May count bytes past the end of the string: that only costs a UTF-8 check.
        high |= w & HIGH;
        if special != 0 {
            let shift = special.trailing_zeros() & !7;
            let stop = (w >> shift) as u8;
            return (taken + (shift / 8) as usize, high != 0, Some(stop));
        }
        taken += 8;
    }
    for &b in words.remainder() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return (taken, high != 0, Some(b));
        }
        high |= u64::from(b & 0x80);
        taken += 1;
    }
    (taken, high != 0, None)
}

struct Scanner<'a> {
    b: &'a [u8],
    /// Never beyond `b.len()`: it only moves past bytes that `peek` or `get` saw.
    pos: usize,
    /// Whether whitespace was skipped since it was last cleared.
    spaced: bool,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
        Err(SyntaxError { what, at: self.pos })
    }

    fn skip_ws(&mut self) {
        // A compact payload never enters the loop: recording the whitespace costs it nothing.
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
            self.spaced = true;
        }
    }

    /// Reads `"key" :` and the whitespace after it.
    #[inline(always)]
    fn key(&mut self, owned: &mut Vec<Box<str>>) -> Result<EntryKey, SyntaxError> {
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return self.fail("key must be a string"),
            None => return self.fail("EOF while parsing an object"),
        }
        let start = self.pos + 1;
        let escaped = self.string()?;
        let end = self.pos.saturating_sub(1);
        self.skip_ws();
        match self.peek() {
            Some(b':') => self.pos += 1,
            Some(_) => return self.fail("expected ':'"),
            None => return self.fail("EOF while parsing an object"),
        }
        self.skip_ws();
        if !escaped {
            return Ok(EntryKey {
                start: offset(start),
                len: offset(end.saturating_sub(start)),
            });
        }
        let raw = self.b.get(start..end).unwrap_or_default();
        let text = unescape(raw).map_err(|what| SyntaxError { what, at: start })?;
        owned.push(text.into_boxed_str());
        Ok(EntryKey {
            start: offset(owned.len() - 1),
            len: KEY_OWNED,
        })
    }

    /// Moves past the string at `pos`; whether it has escapes. Checks its UTF-8, which
    /// covers the whole payload: outside strings, JSON is ASCII.
    ///
    /// Inlined for the common case, a plain ASCII string; the rest is `string_slow`.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, SyntaxError> {
        let content = self.pos + 1;
        let rest = self.b.get(content..).unwrap_or_default();
        let (plain, non_ascii, stop) = plain_prefix(rest);
        let end = content + plain;
        if !non_ascii && stop == Some(b'"') {
            self.pos = end + 1;
            return Ok(false);
        }
        self.pos = end;
        self.string_slow(content, non_ascii)
    }

    /// The rest of a string from `pos`, which is not a plain character: a quote (with
    /// non-ASCII before it), an escape, a control character or the end of the payload.
    #[cold]
    #[inline(never)]
    fn string_slow(&mut self, content: usize, mut non_ascii: bool) -> Result<bool, SyntaxError> {
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => {
                    if non_ascii {
                        let text = self.b.get(content..self.pos).unwrap_or_default();
                        if let Err(e) = std::str::from_utf8(text) {
                            return Err(SyntaxError {
                                what: "invalid UTF-8",
                                at: content + e.valid_up_to(),
                            });
                        }
                    }
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    escaped = true;
                    self.escape()?;
                }
                Some(_) => {
                    return self
                        .fail("control character (\\u0000-\\u001F) found while parsing a string")
                }
                None => return self.fail("EOF while parsing a string"),
            }
            let rest = self.b.get(self.pos..).unwrap_or_default();
            let (plain, high, _) = plain_prefix(rest);
            self.pos += plain;
            non_ascii |= high;
        }
    }

    /// Checks the escape after a backslash, surrogate pairs included, as serde_json does
    /// when it decodes a string.
    fn escape(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                self.pos += 1;
                match self.hex4()? {
                    0xD800..=0xDBFF => {
                        let pair = self
                            .b
                            .get(self.pos..)
                            .is_some_and(|r| r.starts_with(b"\\u"));
                        if !pair {
                            return self.fail("unexpected end of hex escape");
                        }
                        self.pos += 2;
                        if (0xDC00..=0xDFFF).contains(&self.hex4()?) {
                            Ok(())
                        } else {
                            self.fail("lone leading surrogate in hex escape")
                        }
                    }
                    0xDC00..=0xDFFF => self.fail("lone trailing surrogate in hex escape"),
                    _ => Ok(()),
                }
            }
            Some(_) => self.fail("invalid escape"),
            None => self.fail("EOF while parsing a string"),
        }
    }

    fn hex4(&mut self) -> Result<u16, SyntaxError> {
        let mut value = 0u16;
        for _ in 0..4 {
            let Some(c) = self.peek() else {
                return self.fail("EOF while parsing a string");
            };
            let Some(d) = hex_digit(c) else {
                return self.fail("invalid escape");
            };
            value = value << 4 | u16::from(d);
            self.pos += 1;
        }
        Ok(value)
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.fail("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.fail("invalid number");
            }
            return self.in_range(start);
        }
        // Only an exponent or more than 308 digits can leave f64's range.
        if self.pos - start > 300 {
            return self.in_range(start);
        }
        Ok(())
    }

    /// A number beyond f64's range (`1e400`) is malformed, as serde_json has it: a lookup of
    /// it and a redaction of its payload must agree, so the whole payload is refused.
    fn in_range(&mut self, start: usize) -> Result<(), SyntaxError> {
        let finite = std::str::from_utf8(self.b.get(start..self.pos).unwrap_or_default())
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(f64::is_finite);
        if finite {
            Ok(())
        } else {
            self.pos = start;
            self.fail("number out of range")
        }
    }

    /// Moves past a run of ASCII digits; its length. Eight bytes a step: telemetry is full of
    /// long runs (millisecond timestamps, floats printed to 17 digits).
    fn digits(&mut self) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let start = self.pos;
        while let Some(word) = self.b.get(self.pos..self.pos + 8) {
            let Ok(word) = <[u8; 8]>::try_from(word) else {
                break;
            };
            // Per byte, a digit is 0x30..=0x39: its high nibble is 3, and adding 6 to its low
            // nibble does not carry into it. A carry out of a non-digit byte only changes the
            // bytes above it, and the lowest flagged byte is all that is read.
            let a = u64::from_le_bytes(word) ^ (ONES * 0x30);
            let flagged = (a | a.wrapping_add(ONES * 0x06)) & (ONES * 0xF0);
            if flagged != 0 {
                self.pos += (flagged.trailing_zeros() / 8) as usize;
                return self.pos - start;
            }
            self.pos += 8;
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        if self.b.get(self.pos..).is_some_and(|r| r.starts_with(word)) {
            self.pos += word.len();
            Ok(())
        } else {
            self.fail("expected value")
        }
    }
}
