//! A validating CBOR scanner for lookups, and a tree decoder and encoder for redaction.
//!
//! Hand-written rather than cbor4ii's `Value` because that one refuses half-precision floats
//! (without its `half` feature), loses float widths and tags' places on re-encoding, and cannot
//! say at which byte a payload is malformed.
//!
//! CBOR redaction decodes a tree, which keeps tags and float widths, and re-encodes it.

use std::borrow::Cow;
use std::fmt;

use super::pointer::{array_index, split_last, tokens};
use super::tape::{small, Builder, Entry, EntryKey, Kind, Tape};
use super::tape::{twice_message, Twice, KEY_NON_TEXT, KEY_OWNED, MAX_INDEXED_LEN};
use super::{Edit, EditAction, FieldRef, FieldValue, RedactError, MAX_DEPTH};

/// What is wrong with a CBOR payload, and at which byte.
#[derive(Debug)]
pub(super) struct DecodeError {
    what: &'static str,
    at: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CBOR: {} at byte {}", self.what, self.at)
    }
}

fn fail<T>(what: &'static str, at: usize) -> Result<T, DecodeError> {
    Err(DecodeError { what, at })
}

const BREAK: u8 = 0xff;
const TOO_DEEP: &str = "nesting deeper than 127 levels";

/// The initial byte of an item and its argument.
#[derive(Debug, Clone, Copy)]
struct Head {
    major: u8,
    info: u8,
    /// The length, count, tag number, integer or float bits (0 if `info` is 31).
    arg: u64,
    /// Where the item's content starts.
    next: usize,
}

impl Head {
    /// Indefinite length (majors 2 to 5) or break (major 7).
    fn indefinite(self) -> bool {
        self.info == 31
    }
}

#[inline]
fn head(b: &[u8], at: usize) -> Result<Head, DecodeError> {
    let Some(&initial) = b.get(at) else {
        return fail("unexpected end of input", at);
    };
    let (major, info) = (initial >> 5, initial & 0x1f);
    let p = at + 1;
    let (arg, next) = match info {
        0..=23 => (u64::from(info), p),
        24..=27 => {
            let width = 1usize << (info - 24);
            let Some(bytes) = p.checked_add(width).and_then(|end| b.get(p..end)) else {
                return fail("unexpected end of input", at);
            };
            let arg = bytes.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
            (arg, p + width)
        }
        28..=30 => return fail("reserved additional information (28 to 30)", at),
        _ => (0, p),
    };
    Ok(Head {
        major,
        info,
        arg,
        next,
    })
}

/// Walks the byte or text string whose head `h` is at `at`, handing `each` its chunks;
/// returns where it ends. Text chunks must each be valid UTF-8, as RFC 8949 requires.
fn string_chunks<'a>(
    b: &'a [u8],
    h: Head,
    at: usize,
    each: &mut dyn FnMut(&'a [u8]),
) -> Result<usize, DecodeError> {
    if !h.indefinite() {
        let (chunk, end) = definite(b, h, at)?;
        each(chunk);
        return Ok(end);
    }
    let mut pos = h.next;
    loop {
        if b.get(pos) == Some(&BREAK) {
            return Ok(pos + 1);
        }
        let chunk = head(b, pos)?;
        if chunk.major != h.major || chunk.indefinite() {
            return fail("invalid chunk in an indefinite-length string", pos);
        }
        let (bytes, end) = definite(b, chunk, pos)?;
        each(bytes);
        pos = end;
    }
}

#[inline]
fn definite(b: &[u8], h: Head, at: usize) -> Result<(&[u8], usize), DecodeError> {
    let end = usize::try_from(h.arg)
        .ok()
        .and_then(|len| h.next.checked_add(len));
    let Some((chunk, end)) = end.and_then(|end| Some((b.get(h.next..end)?, end))) else {
        return fail("string longer than the input", at);
    };
    // `is_ascii` first: `from_utf8` costs more than short keys are worth.
    if h.major == 3 && !chunk.is_ascii() && std::str::from_utf8(chunk).is_err() {
        return fail("invalid UTF-8 in a text string", at);
    }
    Ok((chunk, end))
}

fn collect<'a>(b: &'a [u8], h: Head, at: usize) -> Result<(Cow<'a, [u8]>, usize), DecodeError> {
    let mut out: Option<Cow<'a, [u8]>> = None;
    let end = string_chunks(b, h, at, &mut |chunk| match &mut out {
        Some(joined) => joined.to_mut().extend_from_slice(chunk),
        None => out = Some(Cow::Borrowed(chunk)),
    })?;
    Ok((out.unwrap_or_default(), end))
}

fn text(bytes: Cow<'_, [u8]>, at: usize) -> Result<Cow<'_, str>, DecodeError> {
    let text = match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).map(Cow::Borrowed).ok(),
        Cow::Owned(v) => String::from_utf8(v).map(Cow::Owned).ok(),
    };
    text.map_or_else(|| fail("invalid UTF-8 in a text string", at), Ok)
}

/// Checks a simple value or float head; the ones `FieldValue` cannot carry are refused.
fn simple(h: Head, at: usize) -> Result<(), DecodeError> {
    match h.info {
        20..=23 | 25..=27 => Ok(()),
        24 if h.arg < 32 => fail("invalid two-byte simple value", at),
        _ => fail("unsupported simple value", at),
    }
}

/// Skips tags; returns where the tagged item starts, its head and how many tags there were.
#[inline]
fn untag_head(b: &[u8], mut at: usize) -> Result<(usize, Head, usize), DecodeError> {
    let mut tags = 0usize;
    loop {
        let h = head(b, at)?;
        if h.major != 6 {
            return Ok((at, h, tags));
        }
        // Not well-formed (RFC 8949 3.2.4): refused here, where lookups and redaction meet.
        if h.indefinite() {
            return fail("indefinite length on a tag", at);
        }
        at = h.next;
        tags = tags.saturating_add(1);
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Items still to come in a definite-length frame (never 0 while on the stack).
    left: u64,
    indefinite: bool,
    map: bool,
    /// An indefinite map has seen a key but not its value yet.
    odd: bool,
}

struct Scanner<'a> {
    b: &'a [u8],
    /// Reused by every `skip`, so that skipping keys allocates once per tape at most.
    stack: Vec<Frame>,
}

impl Scanner<'_> {
    /// Validates the item at `at`, inside `outer` containers or tags; returns where it ends.
    /// Iterative, so that nesting cannot exhaust the stack.
    fn skip(&mut self, mut at: usize, outer: usize) -> Result<usize, DecodeError> {
        self.stack.clear();
        loop {
            let h = head(self.b, at)?;
            let mut complete = true;
            match h.major {
                0 | 1 => {
                    if h.indefinite() {
                        return fail("indefinite length on an integer", at);
                    }
                    at = h.next;
                }
                2 | 3 => at = string_chunks(self.b, h, at, &mut |_| {})?,
                4..=6 => {
                    if outer + self.stack.len() >= MAX_DEPTH {
                        return fail(TOO_DEEP, at);
                    }
                    let map = h.major == 5;
                    if h.indefinite() {
                        if h.major == 6 {
                            return fail("indefinite length on a tag", at);
                        }
                        self.stack.push(Frame {
                            left: 0,
                            indefinite: true,
                            map,
                            odd: false,
                        });
                        complete = false;
                    } else {
                        let left = match h.major {
                            4 => h.arg,
                            5 => match h.arg.checked_mul(2) {
                                Some(n) => n,
                                None => return fail("map longer than the input", at),
                            },
                            _ => 1,
                        };
                        if left > 0 {
                            self.stack.push(Frame {
                                left,
                                indefinite: false,
                                map,
                                odd: false,
                            });
                            complete = false;
                        }
                    }
                    at = h.next;
                }
                _ => {
                    if h.indefinite() {
                        match self.stack.last() {
                            Some(f) if f.indefinite && !(f.map && f.odd) => {
                                self.stack.pop();
                            }
                            Some(f) if f.indefinite => {
                                return fail("map key without a value", at);
                            }
                            _ => return fail("unexpected break", at),
                        }
                    } else {
                        simple(h, at)?;
                    }
                    at = h.next;
                }
            }
            if complete {
                // Count the finished item in the frames around it.
                loop {
                    let Some(top) = self.stack.last_mut() else {
                        return Ok(at);
                    };
                    if top.indefinite {
                        top.odd = !top.odd;
                        break;
                    }
                    top.left = top.left.saturating_sub(1);
                    if top.left > 0 {
                        break;
                    }
                    self.stack.pop();
                }
            }
        }
    }
}

/// A container open around the current item while the tape is built.
struct Open {
    /// Where its entry is in `Builder::pending`.
    entry: usize,
    /// Elements or members still to come, if definite.
    left: u64,
    indefinite: bool,
    map: bool,
    /// Its nesting depth, counting tags.
    level: usize,
}

/// Validates the whole payload and records every item but map keys. Iterative, so that
/// nesting cannot exhaust the stack; the depth limit still applies, as in `decode`.
pub(super) fn tape(b: &[u8]) -> Result<Tape, DecodeError> {
    if b.len() >= MAX_INDEXED_LEN {
        return fail("payload too large (4 GiB or more)", 0);
    }
    let mut tape = Builder::new(b.len());
    let mut open: Vec<Open> = Vec::new();
    let mut scanner = Scanner {
        b,
        stack: Vec::new(),
    };
    let mut key = EntryKey::NONE;
    let mut at = 0;
    loop {
        let level = open.last().map_or(0, |o| o.level);
        let (item, h, tags) = untag_head(b, at)?;
        if is_container(h) {
            if level + tags >= MAX_DEPTH {
                return fail(TOO_DEEP, item);
            }
            let kind = if h.major == 4 {
                Kind::Array
            } else {
                Kind::Object
            };
            at = h.next;
            let empty = if h.indefinite() {
                b.get(at) == Some(&BREAK)
            } else {
                h.arg == 0
            };
            if empty && h.indefinite() {
                at += 1;
            }
            let entry = Entry::new(key, kind, item, at);
            if !empty {
                let map = h.major == 5;
                let level = level + tags + 1;
                open.push(Open {
                    entry: tape.pending.len(),
                    left: h.arg,
                    indefinite: h.indefinite(),
                    map,
                    level,
                });
                tape.pending.push(entry);
                key = if map {
                    map_key(&mut scanner, &mut at, level, &mut tape)?
                } else {
                    EntryKey::NONE
                };
                continue;
            }
            tape.pending.push(entry);
        } else {
            // Tag k is at depth level + k - 1, which must stay below the limit.
            if level + tags > MAX_DEPTH {
                return fail(TOO_DEEP, item);
            }
            let end = match h.major {
                0 | 1 if h.indefinite() => return fail("indefinite length on an integer", item),
                0 | 1 => h.next,
                2 | 3 if !h.indefinite() => definite(b, h, item)?.1,
                2 | 3 => string_chunks(b, h, item, &mut |_| {})?,
                _ if h.indefinite() => {
                    let in_map = open.last().is_some_and(|o| o.map && o.indefinite);
                    let what = if in_map {
                        "map key without a value"
                    } else {
                        "unexpected break"
                    };
                    return fail(what, item);
                }
                _ => {
                    simple(h, item)?;
                    h.next
                }
            };
            tape.pending.push(Entry::new(key, Kind::Scalar, item, end));
            at = end;
        }
        // An item ended: close the containers it completes, or go on to the next one.
        loop {
            let Some(top) = open.last_mut() else {
                if at != b.len() {
                    return fail("trailing bytes after the top-level item", at);
                }
                return tape.finish().map_or_else(|| fail("internal error", at), Ok);
            };
            let done = if top.indefinite {
                let done = b.get(at) == Some(&BREAK);
                if done {
                    at += 1;
                }
                done
            } else {
                top.left = top.left.saturating_sub(1);
                top.left == 0
            };
            if done {
                tape.close(top.entry, at);
                open.pop();
                continue;
            }
            key = if top.map {
                let level = top.level;
                map_key(&mut scanner, &mut at, level, &mut tape)?
            } else {
                EntryKey::NONE
            };
            break;
        }
    }
}

/// Reads the key of the next member of a map at nesting depth `level`.
fn map_key(
    scanner: &mut Scanner<'_>,
    at: &mut usize,
    level: usize,
    keys: &mut Builder,
) -> Result<EntryKey, DecodeError> {
    let b = scanner.b;
    let start = *at;
    let h = head(b, start)?;
    if h.major == 3 && !h.indefinite() {
        // The common case, read directly.
        let (_, end) = definite(b, h, start)?;
        *at = end;
        return Ok(EntryKey {
            start: small(h.next),
            len: small(end.saturating_sub(h.next)),
        });
    }
    let end = scanner.skip(start, level)?;
    *at = end;
    let (item, h, _) = untag_head(b, start)?;
    if h.major != 3 {
        keys.non_text_keys.push((small(start), small(end)));
        return Ok(EntryKey {
            start: small(keys.non_text_keys.len() - 1),
            len: KEY_NON_TEXT,
        });
    }
    if !h.indefinite() {
        return Ok(EntryKey {
            start: small(h.next),
            len: small(end.saturating_sub(h.next)),
        });
    }
    let (bytes, _) = collect(b, h, item)?;
    keys.owned_keys
        .push(text(bytes, item)?.into_owned().into_boxed_str());
    Ok(EntryKey {
        start: small(keys.owned_keys.len() - 1),
        len: KEY_OWNED,
    })
}

fn is_container(h: Head) -> bool {
    h.major == 4 || h.major == 5
}

/// Decodes the scalar at `at` (after its tags) of a payload `tape` accepted.
pub(super) fn leaf(b: &[u8], at: usize) -> Result<FieldRef<'_>, DecodeError> {
    let h = head(b, at)?;
    Ok(FieldRef::Other(match h.major {
        0 => i64::try_from(h.arg).map_or(FieldValue::Float(h.arg as f64), FieldValue::Integer),
        // -1 - n cannot overflow for n <= i64::MAX.
        1 => i64::try_from(h.arg).map_or(FieldValue::Float(-1.0 - h.arg as f64), |n| {
            FieldValue::Integer(-1 - n)
        }),
        2 => return Ok(FieldRef::Bytes(collect(b, h, at)?.0)),
        3 => return Ok(FieldRef::Text(text(collect(b, h, at)?.0, at)?)),
        7 => match h.info {
            20 => FieldValue::Bool(false),
            21 => FieldValue::Bool(true),
            22 | 23 => FieldValue::Null,
            25 => FieldValue::Float(f16_to_f64(h.arg)),
            26 => match u32::try_from(h.arg) {
                Ok(bits) => FieldValue::Float(f64::from(f32::from_bits(bits))),
                Err(_) => return fail("invalid float", at),
            },
            27 => FieldValue::Float(f64::from_bits(h.arg)),
            _ => return fail("unsupported simple value", at),
        },
        _ => return fail("unexpected item", at),
    }))
}

/// IEEE 754 half precision (RFC 8949 appendix D), from the low 16 bits.
fn f16_to_f64(bits: u64) -> f64 {
    let exponent = (bits >> 10) & 0x1f;
    let mantissa = (bits & 0x3ff) as f64;
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if bits & 0x3ff == 0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mantissa + 1024.0) * 2f64.powi(e as i32 - 25),
    };
    if bits & 0x8000 == 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// [`super::redact`] of a CBOR payload.
pub(super) fn redact(bytes: &[u8], edits: &[Edit]) -> Result<Option<Vec<u8>>, RedactError> {
    let mut root = decode(bytes).map_err(|e| RedactError::Malformed(e.to_string()))?;
    let mut changed = false;
    for edit in edits {
        changed |= apply(&mut root, &edit.pointer, &edit.action)?;
    }
    if !changed {
        return Ok(None);
    }
    // Checked on the result, not the input: an edit may have removed the offending map.
    if has_non_text_key(&root) {
        return Err(RedactError::NonTextKey);
    }
    let mut out = Vec::with_capacity(bytes.len());
    encode(&root, &mut out);
    Ok(Some(out))
}

/// A decoded CBOR item, as much of it as redaction needs to re-encode it faithfully.
#[derive(Debug)]
enum Node<'a> {
    Unsigned(u64),
    /// The value is -1 - n.
    Negative(u64),
    Bytes(Cow<'a, [u8]>),
    /// UTF-8, checked when decoded: kept as bytes so as not to check it twice.
    Text(Cow<'a, [u8]>),
    Array(Vec<Self>),
    Map(Vec<(Self, Self)>),
    Tag(u64, Box<Self>),
    /// false, true, null, undefined (additional information 20 to 23), or a float kept at
    /// its width (25 to 27) with its bits. Wider than they need be: a `u8` field would put
    /// the payload of every variant at an odd offset, and moving nodes would stall.
    Simple {
        info: u64,
        bits: u64,
    },
}

/// Decodes a whole payload into a tree.
fn decode(b: &[u8]) -> Result<Node<'_>, DecodeError> {
    let mut at = 0;
    let node = decode_item(b, &mut at, 0)?;
    if at != b.len() {
        return fail("trailing bytes after the top-level item", at);
    }
    Ok(node)
}

/// Decodes the item at `at`, inside `outer` containers or tags. Recursive, but only
/// `MAX_DEPTH` deep.
fn decode_item<'a>(b: &'a [u8], at: &mut usize, outer: usize) -> Result<Node<'a>, DecodeError> {
    let start = *at;
    let h = head(b, start)?;
    *at = h.next;
    match h.major {
        0 | 1 if h.indefinite() => fail("indefinite length on an integer", start),
        0 => Ok(Node::Unsigned(h.arg)),
        1 => Ok(Node::Negative(h.arg)),
        2 | 3 => {
            let (bytes, end) = collect(b, h, start)?;
            *at = end;
            // Text chunks were checked as UTF-8 by `collect`.
            if h.major == 2 {
                Ok(Node::Bytes(bytes))
            } else {
                Ok(Node::Text(bytes))
            }
        }
        4..=6 if outer >= MAX_DEPTH => fail(TOO_DEEP, start),
        4 | 5 => {
            let count = (!h.indefinite()).then_some(h.arg);
            let room = b.len().saturating_sub(h.next);
            let capacity = count
                .map_or(8, |n| usize::try_from(n).unwrap_or(usize::MAX).min(room))
                .min(1024);
            let mut seen = 0u64;
            let finished = |at: &mut usize, seen: u64| match count {
                Some(n) => seen >= n,
                None if b.get(*at) == Some(&BREAK) => {
                    *at += 1;
                    true
                }
                None => false,
            };
            if h.major == 4 {
                let mut items = Vec::with_capacity(capacity);
                while !finished(at, seen) {
                    items.push(decode_item(b, at, outer + 1)?);
                    seen += 1;
                }
                return Ok(Node::Array(items));
            }
            let mut entries = Vec::with_capacity(capacity);
            while !finished(at, seen) {
                let key = decode_item(b, at, outer + 1)?;
                if b.get(*at) == Some(&BREAK) {
                    return fail("map key without a value", *at);
                }
                let value = decode_item(b, at, outer + 1)?;
                entries.push((key, value));
                seen += 1;
            }
            Ok(Node::Map(entries))
        }
        6 if h.indefinite() => fail("indefinite length on a tag", start),
        6 => Ok(Node::Tag(h.arg, Box::new(decode_item(b, at, outer + 1)?))),
        _ if h.indefinite() => fail("unexpected break", start),
        _ => {
            simple(h, start)?;
            Ok(Node::Simple {
                info: u64::from(h.info),
                bits: h.arg,
            })
        }
    }
}

/// The text of a key, through any tags.
fn key_text<'n>(key: &'n Node<'_>) -> Option<&'n [u8]> {
    match untag_ref(key) {
        Node::Text(text) => Some(text),
        _ => None,
    }
}

fn untag_ref<'n, 'a>(mut node: &'n Node<'a>) -> &'n Node<'a> {
    while let Node::Tag(_, inner) = node {
        node = inner;
    }
    node
}

fn untag_mut<'n, 'a>(node: &'n mut Node<'a>) -> &'n mut Node<'a> {
    match node {
        Node::Tag(_, inner) => untag_mut(inner),
        other => other,
    }
}

/// The one member of a map with the text key `key`: `Err` when it has the key more than once,
/// which a lookup refuses too (see `Tape::child`).
fn member<'m, 'a>(
    entries: &'m mut [(Node<'a>, Node<'a>)],
    key: &str,
) -> Result<Option<&'m mut Node<'a>>, Twice> {
    let mut found = None;
    for (k, v) in entries.iter_mut() {
        if key_text(k) == Some(key.as_bytes()) {
            if found.is_some() {
                return Err(Twice);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Applies one edit; whether it matched anything.
fn apply(root: &mut Node<'_>, pointer: &str, action: &EditAction) -> Result<bool, RedactError> {
    let twice = |key: &str| RedactError::Malformed(twice_message((true, key.as_bytes())));
    let Some((parent, last)) = split_last(pointer) else {
        return Ok(false);
    };
    let mut node = untag_mut(root);
    for token in tokens(parent) {
        let next = match node {
            Node::Map(entries) => member(entries, &token).map_err(|Twice| twice(&token))?,
            Node::Array(items) => array_index(&token).and_then(|i| items.get_mut(i)),
            _ => None,
        };
        match next {
            Some(next) => node = untag_mut(next),
            None => return Ok(false),
        }
    }
    Ok(match (node, action) {
        (Node::Map(entries), EditAction::Remove) => {
            if member(entries, &last)
                .map_err(|Twice| twice(&last))?
                .is_none()
            {
                return Ok(false);
            }
            entries.retain(|(k, _)| key_text(k) != Some(last.as_bytes()));
            true
        }
        (Node::Map(entries), EditAction::Mask(mask)) => {
            match member(entries, &last).map_err(|Twice| twice(&last))? {
                Some(value) => {
                    *value = Node::Text(Cow::Owned(mask.clone().into_bytes()));
                    true
                }
                None => false,
            }
        }
        (Node::Array(items), EditAction::Remove) => match array_index(&last) {
            Some(i) if i < items.len() => {
                // In bounds: checked by the guard.
                items.remove(i);
                true
            }
            _ => false,
        },
        (Node::Array(items), EditAction::Mask(mask)) => {
            match array_index(&last).and_then(|i| items.get_mut(i)) {
                Some(value) => {
                    *value = Node::Text(Cow::Owned(mask.clone().into_bytes()));
                    true
                }
                None => false,
            }
        }
        _ => false,
    })
}

/// Whether any map in the tree has a key that is not text (through tags).
fn has_non_text_key(node: &Node<'_>) -> bool {
    match node {
        Node::Array(items) => items.iter().any(has_non_text_key),
        Node::Map(entries) => entries
            .iter()
            .any(|(k, v)| key_text(k).is_none() || has_non_text_key(k) || has_non_text_key(v)),
        Node::Tag(_, inner) => has_non_text_key(inner),
        _ => false,
    }
}

fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let major = major << 5;
    if let Ok(small) = u8::try_from(arg) {
        if small < 24 {
            out.push(major | small);
        } else {
            out.extend_from_slice(&[major | 24, small]);
        }
    } else if let Ok(v) = u16::try_from(arg) {
        out.push(major | 25);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(arg) {
        out.push(major | 26);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Encodes with definite lengths and minimal heads. Recursive, as deep as the decoder went.
fn encode(node: &Node<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Unsigned(n) => put_head(out, 0, *n),
        Node::Negative(n) => put_head(out, 1, *n),
        Node::Bytes(bytes) => {
            put_head(out, 2, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        Node::Text(text) => {
            put_head(out, 3, text.len() as u64);
            out.extend_from_slice(text);
        }
        Node::Array(items) => {
            put_head(out, 4, items.len() as u64);
            for item in items {
                encode(item, out);
            }
        }
        Node::Map(entries) => {
            put_head(out, 5, entries.len() as u64);
            for (key, value) in entries {
                encode(key, out);
                encode(value, out);
            }
        }
        Node::Tag(tag, inner) => {
            put_head(out, 6, *tag);
            encode(inner, out);
        }
        Node::Simple { info, bits } => {
            let width = match info {
                25 => 2,
                26 => 4,
                27 => 8,
                _ => 0,
            };
            // `info` is at most 27: the head fits a byte.
            out.push(0xe0 | (*info as u8));
            let bytes = bits.to_be_bytes();
            out.extend_from_slice(bytes.get(8 - width..).unwrap_or_default());
        }
    }
}
