//! Field lookups and redaction for JSON and CBOR message payloads.
//!
//! Lookups are on the hot path: every policy of a chain asks for a few fields of every message,
//! and building a value tree of a 1 KB JSON message (serde_json: about 9 µs) costs more than the
//! whole budget of such a chain. So a [`Document`] builds no tree. Its first lookup validates the
//! payload in one pass and records where every value lies in a flat "tape", in which each
//! container's children sit side by side; a lookup then walks the tape (one short slice scan per
//! pointer token) and decodes only the scalar it ends on.
//!
//! JSON redaction marks removed and masked values over the same tape and writes the result
//! compact, copying every untouched value verbatim. CBOR redaction decodes a tree, which keeps
//! tags and float widths, and re-encodes it.
//!
//! Hostile payloads: nothing recurses on the payload's nesting except code that runs behind the
//! depth limit (the CBOR tree, the JSON writer), and every length a payload declares is checked
//! against the input before use.

// The host must not panic on a device's payload, whatever it holds.
#![deny(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// The deepest nesting of arrays and objects (and, in CBOR, tags) a payload may have. It is the
/// deepest serde_json accepts, so field lookups and redaction agree on which payloads are too
/// deep; it also bounds the recursion of the CBOR redaction code.
const MAX_DEPTH: usize = 127;

// The JSON scanner tracks open containers in the bits of a u128.
const _: () = assert!(MAX_DEPTH <= 128);

/// Payload formats with fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 JSON (RFC 8259).
    Json,
    /// CBOR (RFC 8949).
    Cbor,
}

/// A typed field value (mirrors WIT `value`).
///
/// Arrays and objects carry only their element or member count: deeper values are looked up
/// with a longer pointer.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// JSON `null`, CBOR `null` or `undefined`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 signed bits.
    Integer(i64),
    /// Any other number: JSON numbers with a fraction or exponent or beyond `i64`, CBOR floats
    /// and CBOR integers beyond `i64`.
    Float(f64),
    /// A text string.
    Text(String),
    /// A CBOR byte string.
    Bytes(Vec<u8>),
    /// An array, with its number of elements (saturated at `u32::MAX`).
    Array(u32),
    /// An object (CBOR map), with its number of distinct members (saturated at `u32::MAX`).
    Object(u32),
}

/// Why a field lookup failed (mirrors WIT `field-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The payload is text or binary: it has no fields.
    Unstructured,
    /// The payload does not parse as its format; the text says what is wrong and where (JSON:
    /// line and column; CBOR: byte offset).
    Malformed(String),
    /// The pointer is not an RFC 6901 JSON Pointer; the text names it and says why.
    BadPointer(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unstructured => f.write_str("the payload is text or binary: it has no fields"),
            Self::Malformed(why) => write!(f, "malformed payload: {why}"),
            Self::BadPointer(why) => write!(f, "field {why}"),
        }
    }
}

impl std::error::Error for FieldError {}

/// What a redaction does to the field it names (mirrors WIT `edit-action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditAction {
    /// Remove the field: an object member, or an array element (later elements shift down).
    Remove,
    /// Replace the field's value, whatever its type, with this text.
    Mask(String),
}

/// One redaction (mirrors WIT `edit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The field, as an RFC 6901 JSON Pointer; it must not be empty.
    pub pointer: String,
    /// What to do with it.
    pub action: EditAction,
}

/// Why [`redact`] could not apply a list of edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedactError {
    /// The payload does not parse as its format; the text says what is wrong and where.
    Malformed(String),
    /// An edit's pointer is not an RFC 6901 JSON Pointer; the text names it and says why.
    BadPointer(String),
    /// An edit names the whole document (the empty pointer).
    WholeDocument,
    /// The CBOR payload has a map key that is not a text string, so it cannot be re-encoded
    /// with text keys.
    NonTextKey,
}

impl fmt::Display for RedactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "cannot redact a malformed payload: {why}"),
            Self::BadPointer(why) => write!(f, "redaction {why}"),
            Self::WholeDocument => f.write_str(
                "redaction pointer \"\" names the whole document, which cannot be redacted \
                 (remove or mask its fields instead)",
            ),
            Self::NonTextKey => f.write_str(
                "cannot redact the CBOR payload: a map key is not a text string, so the payload \
                 cannot be re-encoded with text keys",
            ),
        }
    }
}

impl std::error::Error for RedactError {}

/// A lazily parsed view of one payload.
///
/// The host creates one per message and every policy of a chain looks fields up through it, so
/// the payload is parsed at most once per message: the first lookup validates it and records
/// where every value lies; later lookups, from any policy, walk that record.
pub struct Document {
    bytes: Vec<u8>,
    format: Option<Format>,
    /// Built by the first lookup. A malformed payload is remembered as such, so later lookups
    /// report it without parsing again.
    index: Option<Result<Tape, FieldError>>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload itself may be sensitive and large: show its shape only.
        f.debug_struct("Document")
            .field("format", &self.format)
            .field("len", &self.bytes.len())
            .field("parsed", &self.index.is_some())
            .finish()
    }
}

impl Document {
    /// A view of `bytes` in `format`; `None` is a text or binary payload, on which every lookup
    /// fails with [`FieldError::Unstructured`]. Parses nothing yet.
    pub fn new(format: Option<Format>, bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            format,
            index: None,
        }
    }

    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The payload format; `None` for text or binary.
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Looks a field up by RFC 6901 JSON Pointer; the empty pointer is the whole document.
    ///
    /// `Ok(None)` means the field is absent, including when the pointer goes through a scalar or
    /// names an array element that does not exist or with a token that is not an array index
    /// (`01`, `-`). With duplicate object keys the last one wins, as in serde_json.
    pub fn field(&mut self, pointer: &str) -> Result<Option<FieldValue>, FieldError> {
        let Some(format) = self.format else {
            return Err(FieldError::Unstructured);
        };
        check_pointer(pointer).map_err(FieldError::BadPointer)?;
        let bytes = self.bytes.as_slice();
        let tape = match self.index.get_or_insert_with(|| Tape::build(format, bytes)) {
            Ok(tape) => tape,
            Err(error) => return Err(error.clone()),
        };
        let mut entry = &tape.root;
        for token in tokens(pointer) {
            match tape.child(bytes, entry, &token) {
                Some(child) => entry = child,
                None => return Ok(None),
            }
        }
        let entry = *entry;
        tape.value(format, bytes, &entry).map(Some)
    }

    /// Applies `edits` as [`redact`] does, in place: `Ok(true)` when some edit matched and the
    /// payload was rewritten. A JSON payload that a lookup has already indexed is not parsed
    /// again. Text and binary payloads are left alone (`Ok(false)`).
    pub fn redact(&mut self, edits: &[Edit]) -> Result<bool, RedactError> {
        let Some(format) = self.format else {
            return Ok(false);
        };
        let redacted = match (format, &self.index) {
            (Format::Json, Some(Ok(tape))) => {
                check_edits(edits)?;
                apply_json(tape, &self.bytes, edits)
            }
            _ => redact(format, &self.bytes, edits)?,
        };
        Ok(redacted.map(|bytes| self.replace(bytes)).is_some())
    }

    /// Replaces the payload (after a redaction) and drops everything parsed from the old one.
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
        self.index = None;
    }

    /// The payload bytes, giving up the document.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Applies `edits` in order to a `format` payload and re-encodes it.
///
/// An edit whose pointer matches nothing is skipped. Remove deletes an object member, or an
/// array element (later indices shift, which later edits see); Mask replaces the value, whatever
/// its type, with the text. JSON output is compact, keeps member order and copies untouched
/// values verbatim (numbers and string escapes as they were written). CBOR output uses definite
/// lengths and minimal heads, keeps tags and float widths, and needs text map keys. Duplicate
/// keys are merged, the last value at the first key's place (as serde_json does), so an edit
/// reaches every copy of a duplicated field.
///
/// Returns `Ok(None)` if no edit matched anything, so the caller can keep the original bytes
/// untouched, and `Ok(Some(bytes))` otherwise. Every pointer is checked before the payload is
/// parsed.
pub fn redact(
    format: Format,
    bytes: &[u8],
    edits: &[Edit],
) -> Result<Option<Vec<u8>>, RedactError> {
    check_edits(edits)?;
    if edits.is_empty() {
        return Ok(None);
    }
    match format {
        Format::Json => redact_json(bytes, edits),
        Format::Cbor => redact_cbor(bytes, edits),
    }
}

/// Every pointer checked before the payload is touched.
fn check_edits(edits: &[Edit]) -> Result<(), RedactError> {
    for edit in edits {
        if edit.pointer.is_empty() {
            return Err(RedactError::WholeDocument);
        }
        check_pointer(&edit.pointer).map_err(RedactError::BadPointer)?;
    }
    Ok(())
}

fn redact_json(bytes: &[u8], edits: &[Edit]) -> Result<Option<Vec<u8>>, RedactError> {
    let tape = json::tape(bytes).map_err(|e| RedactError::Malformed(json::describe(bytes, &e)))?;
    Ok(apply_json(&tape, bytes, edits))
}

fn apply_json(tape: &Tape, bytes: &[u8], edits: &[Edit]) -> Option<Vec<u8>> {
    let mut overlay = json::Overlay::new(tape, bytes);
    let mut changed = false;
    for edit in edits {
        changed |= overlay.apply(&edit.pointer, &edit.action);
    }
    changed.then(|| overlay.write())
}

fn redact_cbor(bytes: &[u8], edits: &[Edit]) -> Result<Option<Vec<u8>>, RedactError> {
    let mut root = cbor::decode(bytes).map_err(|e| RedactError::Malformed(e.to_string()))?;
    let mut changed = false;
    for edit in edits {
        changed |= cbor::apply(&mut root, &edit.pointer, &edit.action);
    }
    if !changed {
        return Ok(None);
    }
    // Checked on the result, not the input: an edit may have removed the offending map.
    if cbor::has_non_text_key(&root) {
        return Err(RedactError::NonTextKey);
    }
    let mut out = Vec::with_capacity(bytes.len());
    cbor::encode(&root, &mut out);
    Ok(Some(out))
}

/// Checks `pointer` against RFC 6901; the error names the pointer and the problem.
fn check_pointer(pointer: &str) -> Result<(), String> {
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
fn tokens(pointer: &str) -> Tokens<'_> {
    Tokens {
        rest: pointer.strip_prefix('/'),
    }
}

/// Splits on '/' by hand: `str::split` costs more than the rest of a short lookup.
struct Tokens<'a> {
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
fn array_index(token: &str) -> Option<usize> {
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

/// Payloads of 4 GiB or more are refused (as malformed): the tape keeps offsets in 32 bits,
/// which keeps it small, and MQTT caps payloads at 256 MiB anyway. A little under `u32::MAX`, so
/// that no key length can be mistaken for one of the `KEY_*` markers.
const MAX_INDEXED_LEN: usize = u32::MAX as usize - 8;

/// `Entry::key_len` of an array element or the root.
const KEY_NONE: u32 = u32::MAX;
/// `Entry::key_len` of a key whose text is `Tape::owned_keys[key_start]`.
const KEY_OWNED: u32 = u32::MAX - 1;
/// `Entry::key_len` of a CBOR key that is not text (no pointer token names it), encoded at
/// `Tape::non_text_keys[key_start]`.
const KEY_NON_TEXT: u32 = u32::MAX - 2;

/// An offset, index or count within a payload shorter than [`MAX_INDEXED_LEN`]: they all fit.
fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where a value lies in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

/// What the first lookup learnt about a payload: every value, and where it lies. One validating
/// pass builds it; a lookup then walks it and touches the payload again only to compare keys and
/// to decode the scalar asked for.
///
/// Each container's direct children sit side by side in `entries`, so that finding a member is
/// a scan of a short slice and finding an element is an index.
#[derive(Debug)]
struct Tape {
    root: Entry,
    entries: Vec<Entry>,
    /// Keys whose text is not verbatim in the payload (JSON escapes, CBOR text in chunks).
    owned_keys: Vec<Box<str>>,
    /// Where CBOR keys that are not text are encoded, to tell them apart.
    non_text_keys: Vec<(u32, u32)>,
    /// Distinct key counts worked out so far, by `Entry::first` of the object: counting takes
    /// a sort, which a policy asking again and again must not repeat.
    distinct: HashMap<u32, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scalar,
    Array,
    Object,
}

/// One value of the payload.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The member's key is the `key_len` payload bytes at `key_start`, unless `key_len` is one
    /// of the `KEY_*` markers.
    key_start: u32,
    key_len: u32,
    /// The value's bytes (JSON: without whitespace around; CBOR: after any tags).
    start: u32,
    end: u32,
    /// A container's children: `count` entries from `first`.
    first: u32,
    count: u32,
    kind: Kind,
}

/// The key of the next entry, while a tape is built.
#[derive(Debug, Clone, Copy)]
struct EntryKey {
    start: u32,
    len: u32,
}

impl EntryKey {
    const NONE: Self = Self {
        start: 0,
        len: KEY_NONE,
    };
}

impl Entry {
    fn new(key: EntryKey, kind: Kind, start: usize, end: usize) -> Self {
        Self {
            key_start: key.start,
            key_len: key.len,
            start: small(start),
            end: small(end),
            first: 0,
            count: 0,
            kind,
        }
    }
}

/// A tape under construction, shared by the JSON and CBOR scanners.
struct Builder {
    entries: Vec<Entry>,
    /// The containers open around the scanner, each followed by its children so far.
    pending: Vec<Entry>,
    owned_keys: Vec<Box<str>>,
    non_text_keys: Vec<(u32, u32)>,
}

impl Builder {
    fn new(payload_len: usize) -> Self {
        Self {
            // About one value per 8 to 16 bytes in telemetry; a guess too high costs little.
            entries: Vec::with_capacity((payload_len / 8).clamp(4, 4096)),
            pending: Vec::with_capacity((payload_len / 16).clamp(4, 1024)),
            owned_keys: Vec::new(),
            non_text_keys: Vec::new(),
        }
    }

    /// Closes the container whose entry is `pending[at]`: its children, the entries after it,
    /// move to a block of their own.
    fn close(&mut self, at: usize, end: usize) {
        let first = self.entries.len();
        let children = self.pending.get(at + 1..).unwrap_or_default();
        self.entries.extend_from_slice(children);
        let count = children.len();
        self.pending.truncate(at + 1);
        if let Some(container) = self.pending.get_mut(at) {
            container.first = small(first);
            container.count = small(count);
            container.end = small(end);
        }
    }

    /// The tape, once the root is complete (and is the only entry pending).
    fn finish(mut self) -> Option<Tape> {
        let root = self.pending.pop().filter(|_| self.pending.is_empty())?;
        Some(Tape {
            root,
            entries: self.entries,
            owned_keys: self.owned_keys,
            non_text_keys: self.non_text_keys,
            distinct: HashMap::new(),
        })
    }
}

impl Tape {
    fn build(format: Format, bytes: &[u8]) -> Result<Self, FieldError> {
        match format {
            Format::Json => {
                json::tape(bytes).map_err(|e| FieldError::Malformed(json::describe(bytes, &e)))
            }
            Format::Cbor => cbor::tape(bytes).map_err(|e| FieldError::Malformed(e.to_string())),
        }
    }

    fn children(&self, container: &Entry) -> &[Entry] {
        let first = container.first as usize;
        self.entries
            .get(first..first.saturating_add(container.count as usize))
            .unwrap_or_default()
    }

    /// The entry a token names inside `parent`.
    fn child(&self, bytes: &[u8], parent: &Entry, token: &str) -> Option<&Entry> {
        match parent.kind {
            Kind::Scalar => None,
            Kind::Array => self.children(parent).get(array_index(token)?),
            Kind::Object => {
                // No key is that long, and a longer token could pass for a marker.
                if token.len() >= MAX_INDEXED_LEN {
                    return None;
                }
                // Backwards: the last of duplicate keys wins, as in serde_json.
                self.children(parent)
                    .iter()
                    .rev()
                    .find(|entry| self.key_is(bytes, entry, token))
            }
        }
    }

    /// Whether `entry`'s key is `token`, which is shorter than [`MAX_INDEXED_LEN`].
    #[inline]
    fn key_is(&self, bytes: &[u8], entry: &Entry, token: &str) -> bool {
        let wanted = token.as_bytes();
        if entry.key_len == small(wanted.len()) {
            let key = bytes
                .get(entry.key_start as usize..)
                .and_then(|rest| rest.get(..wanted.len()))
                .unwrap_or_default();
            // Most keys of the same length differ at one end: check those bytes before
            // calling memcmp.
            key.first() == wanted.first() && key.last() == wanted.last() && key == wanted
        } else {
            entry.key_len == KEY_OWNED && self.owned_key(entry.key_start) == Some(token)
        }
    }

    fn owned_key(&self, i: u32) -> Option<&str> {
        self.owned_keys.get(i as usize).map(|key| &**key)
    }

    /// What makes two keys the same key: whether it is text, and its text or encoding.
    fn key_identity<'a>(&'a self, bytes: &'a [u8], entry: &Entry) -> (bool, &'a [u8]) {
        let slice =
            |start: u32, end: u32| bytes.get(start as usize..end as usize).unwrap_or_default();
        match entry.key_len {
            KEY_NONE => (false, &[]),
            KEY_OWNED => (
                true,
                self.owned_key(entry.key_start)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            KEY_NON_TEXT => {
                let (start, end) = self
                    .non_text_keys
                    .get(entry.key_start as usize)
                    .copied()
                    .unwrap_or_default();
                (false, slice(start, end))
            }
            len => (
                true,
                slice(entry.key_start, entry.key_start.saturating_add(len)),
            ),
        }
    }

    /// The value of `entry`: decoded if it is a scalar, counted if it is a container.
    fn value(
        &mut self,
        format: Format,
        bytes: &[u8],
        entry: &Entry,
    ) -> Result<FieldValue, FieldError> {
        Ok(match entry.kind {
            Kind::Array => FieldValue::Array(entry.count),
            Kind::Object if entry.count < 2 => FieldValue::Object(entry.count),
            Kind::Object => {
                let count = match self.distinct.get(&entry.first) {
                    Some(&count) => count,
                    None => {
                        let count = small(self.distinct_keys(bytes, entry));
                        self.distinct.insert(entry.first, count);
                        count
                    }
                };
                FieldValue::Object(count)
            }
            Kind::Scalar => match format {
                Format::Json => {
                    let span = Span {
                        start: entry.start as usize,
                        end: entry.end as usize,
                    };
                    json::leaf(bytes, span)
                        .map_err(|e| FieldError::Malformed(json::describe(bytes, &e)))?
                }
                Format::Cbor => cbor::leaf(bytes, entry.start as usize)
                    .map_err(|e| FieldError::Malformed(e.to_string()))?,
            },
        })
    }

    /// Counts the members of `object` with distinct keys, as a parser that keeps the last of
    /// duplicates would.
    fn distinct_keys(&self, bytes: &[u8], object: &Entry) -> usize {
        let members = self.children(object);
        if members.len() < 2 {
            return members.len();
        }
        let mut keys: Vec<_> = members
            .iter()
            .map(|member| self.key_identity(bytes, member))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len()
    }
}

/// A validating JSON scanner that records where values lie instead of building them, and the
/// redaction overlay on its tape.
mod json {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use super::{array_index, small, tokens, Builder, EditAction, Entry, EntryKey, FieldValue};
    use super::{Kind, Span, Tape, KEY_OWNED, MAX_DEPTH, MAX_INDEXED_LEN};

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
        let mut s = Scanner { b, pos: 0 };
        let mut tape = Builder::new(b.len());
        // Where the containers open around the current value are in `tape.pending`, and (bit
        // `depth` of `objects`) whether each is an object: a register, not a load per value.
        let mut open = [0u32; MAX_DEPTH];
        let mut objects = 0u128;
        let mut depth = 0usize;
        let mut key = EntryKey::NONE;
        s.skip_ws();
        loop {
            let start = s.pos;
            let kind = match s.peek() {
                Some(b'{') => Kind::Object,
                Some(b'[') => Kind::Array,
                Some(b'"') => {
                    s.string()?;
                    Kind::Scalar
                }
                Some(b'-' | b'0'..=b'9') => {
                    s.number()?;
                    Kind::Scalar
                }
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
                let Some(slot) = open.get_mut(depth) else {
                    return s.fail("recursion limit exceeded");
                };
                s.pos += 1;
                s.skip_ws();
                let close = if kind == Kind::Object { b'}' } else { b']' };
                if s.peek() == Some(close) {
                    s.pos += 1;
                    entry.end = small(s.pos);
                } else {
                    *slot = small(tape.pending.len());
                    // `depth` < MAX_DEPTH <= 128: `slot` exists.
                    let bit = 1u128 << depth;
                    if kind == Kind::Object {
                        objects |= bit;
                    } else {
                        objects &= !bit;
                    }
                    depth += 1;
                    tape.pending.push(entry);
                    key = if kind == Kind::Object {
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
                    s.skip_ws();
                    if s.pos < b.len() {
                        return s.fail("trailing characters");
                    }
                    return tape.finish().map_or_else(|| s.fail("internal error"), Ok);
                };
                let container = open.get(top).map_or(usize::MAX, |&i| i as usize);
                let is_object = objects & (1u128 << top) != 0;
                s.skip_ws();
                match s.peek() {
                    Some(b',') => {
                        s.pos += 1;
                        s.skip_ws();
                        key = if is_object {
                            s.key(&mut tape.owned_keys)?
                        } else {
                            EntryKey::NONE
                        };
                        break;
                    }
                    Some(b'}') if is_object => {}
                    Some(b']') if !is_object => {}
                    Some(_) if is_object => return s.fail("expected ',' or '}'"),
                    Some(_) => return s.fail("expected ',' or ']'"),
                    None if is_object => return s.fail("EOF while parsing an object"),
                    None => return s.fail("EOF while parsing a list"),
                }
                s.pos += 1;
                tape.close(container, s.pos);
                depth = top;
            }
        }
    }

    /// Decodes the scalar at `value` of a payload `tape` accepted.
    pub(super) fn leaf(bytes: &[u8], value: Span) -> Result<FieldValue, SyntaxError> {
        let raw = bytes.get(value.start..value.end).unwrap_or_default();
        let bad = |what| SyntaxError {
            what,
            at: value.start,
        };
        match raw.first() {
            Some(b'n') => Ok(FieldValue::Null),
            Some(b't') => Ok(FieldValue::Bool(true)),
            Some(b'f') => Ok(FieldValue::Bool(false)),
            Some(b'"') => {
                let inner = raw
                    .strip_prefix(b"\"")
                    .and_then(|r| r.strip_suffix(b"\""))
                    .ok_or_else(|| bad("EOF while parsing a string"))?;
                let text = if inner.contains(&b'\\') {
                    unescape(inner).map_err(bad)?
                } else {
                    std::str::from_utf8(inner)
                        .map_err(|_| bad("invalid UTF-8"))?
                        .to_owned()
                };
                Ok(FieldValue::Text(text))
            }
            // serde_json refuses numbers that overflow f64 too.
            _ => number(raw).ok_or_else(|| bad("number out of range")),
        }
    }

    /// Edits applied over a tape, without touching it: which entries are gone and which are
    /// masked. Writing it out copies every untouched scalar verbatim, so a redaction changes
    /// nothing else (no number is re-formatted, no escape rewritten).
    pub(super) struct Overlay<'a> {
        tape: &'a Tape,
        bytes: &'a [u8],
        /// By entry.
        marks: Vec<Mark>,
        /// The texts of masked entries; the last one for an entry wins.
        masks: Vec<(usize, &'a str)>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mark {
        Live,
        Removed,
        Masked,
    }

    impl<'a> Overlay<'a> {
        pub(super) fn new(tape: &'a Tape, bytes: &'a [u8]) -> Self {
            Self {
                tape,
                bytes,
                marks: vec![Mark::Live; tape.entries.len()],
                masks: Vec::new(),
            }
        }

        fn mark(&self, i: usize) -> Mark {
            self.marks.get(i).copied().unwrap_or(Mark::Removed)
        }

        fn live(&self, i: usize) -> bool {
            self.mark(i) != Mark::Removed
        }

        fn mask(&self, i: usize) -> Option<&'a str> {
            if self.mark(i) != Mark::Masked {
                return None;
            }
            self.masks
                .iter()
                .rev()
                .find(|(j, _)| *j == i)
                .map(|&(_, text)| text)
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

        /// The child a token names, as a lookup in the edited document would find it.
        fn find(&self, container: &Entry, token: &str) -> Option<usize> {
            match container.kind {
                Kind::Scalar => None,
                Kind::Array => self
                    .children(container)
                    .nth(array_index(token)?)
                    .map(|(i, _)| i),
                Kind::Object if token.len() >= MAX_INDEXED_LEN => None,
                Kind::Object => self
                    .children(container)
                    .filter(|(_, entry)| self.tape.key_is(self.bytes, entry, token))
                    .last()
                    .map(|(i, _)| i),
            }
        }

        /// Applies one edit; whether it matched anything.
        pub(super) fn apply(&mut self, pointer: &str, action: &'a EditAction) -> bool {
            let mut path: Vec<Cow<'_, str>> = tokens(pointer).collect();
            let Some(last) = path.pop() else {
                return false;
            };
            let mut container = self.tape.root;
            for token in &path {
                let Some(i) = self.find(&container, token) else {
                    return false;
                };
                // A masked value is a string now: there is nothing inside it.
                if self.mark(i) == Mark::Masked {
                    return false;
                }
                let Some(&entry) = self.tape.entries.get(i) else {
                    return false;
                };
                container = entry;
            }
            match action {
                EditAction::Remove if container.kind == Kind::Object => {
                    // Every copy of a duplicated key goes: writing would keep one otherwise.
                    let gone: Vec<usize> = self
                        .children(&container)
                        .filter(|(_, entry)| self.tape.key_is(self.bytes, entry, &last))
                        .map(|(i, _)| i)
                        .collect();
                    for &i in &gone {
                        self.remove(i);
                    }
                    !gone.is_empty()
                }
                EditAction::Remove => match self.find(&container, &last) {
                    Some(i) => {
                        self.remove(i);
                        true
                    }
                    None => false,
                },
                EditAction::Mask(text) => match self.find(&container, &last) {
                    Some(i) => {
                        if let Some(mark) = self.marks.get_mut(i) {
                            *mark = Mark::Masked;
                        }
                        self.masks.push((i, text));
                        true
                    }
                    None => false,
                },
            }
        }

        fn remove(&mut self, i: usize) {
            if let Some(mark) = self.marks.get_mut(i) {
                *mark = Mark::Removed;
            }
        }

        /// The edited document, compact.
        pub(super) fn write(&self) -> Vec<u8> {
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
                    // Checked on all members, removed ones too: no allocation in the usual case.
                    if !self.has_duplicates(self.tape.children(entry)) {
                        for (n, (i, member)) in self.children(entry).enumerate() {
                            self.write_member(n, member, i, member, out);
                        }
                        out.push(b'}');
                        return;
                    }
                    // As serde_json: each key once, where it first came, with its last value.
                    let members: Vec<(usize, &Entry)> = self.children(entry).collect();
                    let keys: Vec<(bool, &[u8])> = members
                        .iter()
                        .map(|(_, member)| self.tape.key_identity(self.bytes, member))
                        .collect();
                    let mut last: HashMap<(bool, &[u8]), usize> = HashMap::new();
                    for (n, key) in keys.iter().enumerate() {
                        last.insert(*key, n);
                    }
                    let mut written = 0;
                    for (first, key) in keys.iter().enumerate() {
                        // Present only until the key's first place has been written.
                        let Some(at) = last.remove(key) else {
                            continue;
                        };
                        if let (Some(&(_, name)), Some(&(i, value))) =
                            (members.get(first), members.get(at))
                        {
                            self.write_member(written, name, i, value, out);
                            written += 1;
                        }
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

        /// Whether some members have the same key. Keys are told apart by a fingerprint first
        /// (length, first and last byte); only keys with the same one have their bytes compared.
        fn has_duplicates(&self, members: &[Entry]) -> bool {
            let key = |member: &Entry| self.tape.key_identity(self.bytes, member);
            let fingerprint = |member: &Entry| {
                let (text, key) = key(member);
                (key.len() as u64) << 24
                    | u64::from(key.first().copied().unwrap_or(0)) << 16
                    | u64::from(key.last().copied().unwrap_or(0)) << 8
                    | u64::from(text)
            };
            let same = |a: &Entry, b: &Entry| fingerprint(a) == fingerprint(b) && key(a) == key(b);
            if members.len() <= 8 {
                return members
                    .iter()
                    .enumerate()
                    .any(|(n, a)| members.iter().skip(n + 1).any(|b| same(a, b)));
            }
            let mut order: Vec<(u64, usize)> = members
                .iter()
                .enumerate()
                .map(|(n, member)| (fingerprint(member), n))
                .collect();
            order.sort_unstable();
            // Within each run of equal fingerprints (short), compare every pair.
            order.chunk_by(|a, b| a.0 == b.0).any(|run| {
                run.iter().enumerate().any(|(n, &(_, a))| {
                    run.iter()
                        .skip(n + 1)
                        .any(|&(_, b)| members.get(a).map(key) == members.get(b).map(key))
                })
            })
        }

        fn write_value(&self, i: usize, entry: &Entry, out: &mut Vec<u8>) {
            match self.mask(i) {
                Some(text) => write_string(text, out),
                None => self.write_entry(entry, out),
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
                return Some(FieldValue::Integer(i));
            }
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(FieldValue::Float)
    }

    /// Decodes the inside of a JSON string with escapes.
    pub(super) fn unescape(raw: &[u8]) -> Result<String, &'static str> {
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
    }

    impl Scanner<'_> {
        fn peek(&self) -> Option<u8> {
            self.b.get(self.pos).copied()
        }

        fn fail<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
            Err(SyntaxError { what, at: self.pos })
        }

        fn skip_ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
                self.pos += 1;
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
                    start: small(start),
                    len: small(end.saturating_sub(start)),
                });
            }
            let raw = self.b.get(start..end).unwrap_or_default();
            let text = unescape(raw).map_err(|what| SyntaxError { what, at: start })?;
            owned.push(text.into_boxed_str());
            Ok(EntryKey {
                start: small(owned.len() - 1),
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
        fn string_slow(
            &mut self,
            content: usize,
            mut non_ascii: bool,
        ) -> Result<bool, SyntaxError> {
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
                        return self.fail(
                            "control character (\\u0000-\\u001F) found while parsing a string",
                        )
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
            }
            Ok(())
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
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
}

/// A validating CBOR scanner for lookups, and a tree decoder and encoder for redaction.
///
/// Hand-written rather than cbor4ii's `Value` because that one refuses half-precision floats
/// (without its `half` feature), loses float widths and tags' places on re-encoding, and cannot
/// say at which byte a payload is malformed.
mod cbor {
    use std::borrow::Cow;
    use std::collections::HashMap;
    use std::fmt;

    use super::{array_index, small, tokens, Builder, EditAction, Entry, EntryKey, FieldValue};
    use super::{Kind, Tape};
    use super::{KEY_NON_TEXT, KEY_OWNED, MAX_DEPTH, MAX_INDEXED_LEN};

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
                    0 | 1 if h.indefinite() => {
                        return fail("indefinite length on an integer", item)
                    }
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
    pub(super) fn leaf(b: &[u8], at: usize) -> Result<FieldValue, DecodeError> {
        let h = head(b, at)?;
        Ok(match h.major {
            0 => i64::try_from(h.arg).map_or(FieldValue::Float(h.arg as f64), FieldValue::Integer),
            // -1 - n cannot overflow for n <= i64::MAX.
            1 => i64::try_from(h.arg).map_or(FieldValue::Float(-1.0 - h.arg as f64), |n| {
                FieldValue::Integer(-1 - n)
            }),
            2 => FieldValue::Bytes(collect(b, h, at)?.0.into_owned()),
            3 => FieldValue::Text(text(collect(b, h, at)?.0, at)?.into_owned()),
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
        })
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

    /// A decoded CBOR item, as much of it as redaction needs to re-encode it faithfully.
    #[derive(Debug)]
    pub(super) enum Node<'a> {
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
    pub(super) fn decode(b: &[u8]) -> Result<Node<'_>, DecodeError> {
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
                dedupe(&mut entries);
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

    /// Merges members with the same text key as serde_json does (the last value, at the first
    /// one's place), so that redacting a key reaches every copy of it.
    fn dedupe(entries: &mut Vec<(Node<'_>, Node<'_>)>) {
        if !has_duplicate_keys(entries) {
            return;
        }
        let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut merged: Vec<(Node<'_>, Node<'_>)> = Vec::with_capacity(entries.len());
        for (key, value) in entries.drain(..) {
            if let Some(text) = key_text(&key) {
                if let Some(&i) = first.get(text) {
                    if let Some(slot) = merged.get_mut(i) {
                        slot.1 = value;
                    }
                    continue;
                }
                first.insert(text.to_vec(), merged.len());
            }
            merged.push((key, value));
        }
        *entries = merged;
    }

    /// Whether two members have the same text key. Keys are told apart by a fingerprint first
    /// (length, first and last byte); only keys with the same one have their bytes compared.
    fn has_duplicate_keys(entries: &[(Node<'_>, Node<'_>)]) -> bool {
        let fingerprint = |key: &[u8]| {
            (key.len() as u64) << 16
                | u64::from(key.first().copied().unwrap_or(0)) << 8
                | u64::from(key.last().copied().unwrap_or(0))
        };
        let keys = entries.iter().filter_map(|(key, _)| key_text(key));
        if entries.len() <= 8 {
            return keys.clone().enumerate().any(|(n, a)| {
                keys.clone()
                    .skip(n + 1)
                    .any(|b| fingerprint(a) == fingerprint(b) && a == b)
            });
        }
        let mut order: Vec<(u64, &[u8])> = keys.map(|key| (fingerprint(key), key)).collect();
        order.sort_unstable_by_key(|&(print, _)| print);
        // Within each run of equal fingerprints (short), compare every pair.
        order.chunk_by(|a, b| a.0 == b.0).any(|run| {
            run.iter()
                .enumerate()
                .any(|(n, a)| run.iter().skip(n + 1).any(|b| a.1 == b.1))
        })
    }

    /// Applies one edit; whether it matched anything.
    pub(super) fn apply(root: &mut Node<'_>, pointer: &str, action: &EditAction) -> bool {
        let mut path: Vec<Cow<'_, str>> = tokens(pointer).collect();
        let Some(last) = path.pop() else {
            return false;
        };
        let mut node = untag_mut(root);
        for token in &path {
            let next = match node {
                // Maps have no duplicate text keys left (see `dedupe`).
                Node::Map(entries) => entries
                    .iter_mut()
                    .find(|(k, _)| key_text(k) == Some(token.as_bytes()))
                    .map(|(_, v)| v),
                Node::Array(items) => array_index(token).and_then(|i| items.get_mut(i)),
                _ => None,
            };
            match next {
                Some(next) => node = untag_mut(next),
                None => return false,
            }
        }
        match (node, action) {
            (Node::Map(entries), EditAction::Remove) => {
                let before = entries.len();
                entries.retain(|(k, _)| key_text(k) != Some(last.as_bytes()));
                entries.len() != before
            }
            (Node::Map(entries), EditAction::Mask(mask)) => {
                match entries
                    .iter_mut()
                    .find(|(k, _)| key_text(k) == Some(last.as_bytes()))
                {
                    Some((_, value)) => {
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
        }
    }

    /// Whether any map in the tree has a key that is not text (through tags).
    pub(super) fn has_non_text_key(node: &Node<'_>) -> bool {
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
    pub(super) fn encode(node: &Node<'_>, out: &mut Vec<u8>) {
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
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use cbor4ii::core::dec::Decode;
    use cbor4ii::core::enc::Encode;
    use cbor4ii::core::utils::{BufWriter, SliceReader};
    use cbor4ii::core::Value as Cv;
    use serde_json::Value as JsonValue;

    fn json(text: &str) -> Document {
        Document::new(Some(Format::Json), text.as_bytes().to_vec())
    }

    fn cbor(value: &Cv) -> Document {
        Document::new(Some(Format::Cbor), cbor_bytes(value))
    }

    fn cbor_bytes(value: &Cv) -> Vec<u8> {
        let mut writer = BufWriter::new(Vec::new());
        value.encode(&mut writer).unwrap();
        writer.into_inner()
    }

    fn cbor_value(bytes: &[u8]) -> Cv {
        Cv::decode(&mut SliceReader::new(bytes)).unwrap()
    }

    fn get(doc: &mut Document, pointer: &str) -> Option<FieldValue> {
        doc.field(pointer)
            .unwrap_or_else(|e| panic!("lookup of {pointer:?} failed: {e}"))
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.to_owned())
    }

    fn t(s: &str) -> Cv {
        Cv::Text(s.to_owned())
    }

    fn malformed(result: Result<Option<FieldValue>, FieldError>) -> String {
        match result {
            Err(FieldError::Malformed(why)) => why,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn edit(pointer: &str, action: EditAction) -> Edit {
        Edit {
            pointer: pointer.to_owned(),
            action,
        }
    }

    #[test]
    fn document_redaction_agrees_with_redact_with_and_without_an_index() {
        let input = br#"{"a":{"b":1,"c":"x"},"a":{"b":2},"l":[1,2,3],"s":"t\u00e9"}"#;
        let cases: [&[Edit]; 4] = [
            &[remove("/a/b")],
            &[mask("/a", "***"), remove("/l/1")],
            &[remove("/missing")],
            &[mask("/s", "\"q\""), remove("/l/0"), remove("/l/0")],
        ];
        for edits in cases {
            let expected = redact(Format::Json, input, edits).unwrap();
            for looked_up in [false, true] {
                let mut doc = Document::new(Some(Format::Json), input.to_vec());
                if looked_up {
                    assert!(get(&mut doc, "/l/2").is_some());
                }
                let changed = doc.redact(edits).unwrap();
                assert_eq!(changed, expected.is_some(), "{edits:?}");
                let bytes = expected.clone().unwrap_or_else(|| input.to_vec());
                assert_eq!(
                    doc.bytes(),
                    &bytes[..],
                    "{edits:?}, looked up first: {looked_up}"
                );
                // The index of the old payload is gone: lookups see the redacted one.
                let mut fresh = Document::new(Some(Format::Json), bytes.clone());
                for pointer in ["/a", "/a/b", "/l/0", "/l/1", "/s"] {
                    assert_eq!(
                        get(&mut doc, pointer),
                        get(&mut fresh, pointer),
                        "{pointer}"
                    );
                }
            }
        }
        // A lookup that found the payload malformed does not make redaction succeed.
        let mut doc = Document::new(Some(Format::Json), b"{\"a\":".to_vec());
        assert!(doc.field("/a").is_err());
        assert!(matches!(
            doc.redact(&[remove("/a")]),
            Err(RedactError::Malformed(_))
        ));
        // Pointers are checked even when the index exists.
        let mut doc = Document::new(Some(Format::Json), b"{\"a\":1}".to_vec());
        assert!(get(&mut doc, "/a").is_some());
        assert_eq!(doc.redact(&[remove("")]), Err(RedactError::WholeDocument));
        assert!(matches!(
            doc.redact(&[remove("a")]),
            Err(RedactError::BadPointer(_))
        ));
        // Text and binary payloads have nothing to redact.
        let mut doc = Document::new(None, b"hello".to_vec());
        assert_eq!(doc.redact(&[remove("/a")]), Ok(false));
    }

    fn remove(pointer: &str) -> Edit {
        edit(pointer, EditAction::Remove)
    }

    fn mask(pointer: &str, with: &str) -> Edit {
        edit(pointer, EditAction::Mask(with.to_owned()))
    }

    fn redacted_json(input: &str, edits: &[Edit]) -> Option<String> {
        redact(Format::Json, input.as_bytes(), edits)
            .unwrap()
            .map(|out| String::from_utf8(out).unwrap())
    }

    const TELEMETRY: &str = r#"{
        "device": "sensor-7",
        "seq": 42,
        "temp": 21.5,
        "ok": true,
        "error": null,
        "gps": {"lat": 48.85, "lon": 2.35, "fix": {"sats": 9}},
        "readings": [10, 11, {"peak": 12}],
        "empty": {},
        "none": []
    }"#;

    #[test]
    fn json_every_kind_and_depth() {
        let mut doc = json(TELEMETRY);
        assert_eq!(get(&mut doc, "/device"), Some(text("sensor-7")));
        assert_eq!(get(&mut doc, "/seq"), Some(FieldValue::Integer(42)));
        assert_eq!(get(&mut doc, "/temp"), Some(FieldValue::Float(21.5)));
        assert_eq!(get(&mut doc, "/ok"), Some(FieldValue::Bool(true)));
        assert_eq!(get(&mut doc, "/error"), Some(FieldValue::Null));
        assert_eq!(get(&mut doc, "/gps/lat"), Some(FieldValue::Float(48.85)));
        assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
        assert_eq!(get(&mut doc, "/readings/1"), Some(FieldValue::Integer(11)));
        assert_eq!(
            get(&mut doc, "/readings/2/peak"),
            Some(FieldValue::Integer(12))
        );
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(9)));
        assert_eq!(get(&mut doc, "/gps"), Some(FieldValue::Object(3)));
        assert_eq!(get(&mut doc, "/readings"), Some(FieldValue::Array(3)));
        assert_eq!(get(&mut doc, "/empty"), Some(FieldValue::Object(0)));
        assert_eq!(get(&mut doc, "/none"), Some(FieldValue::Array(0)));
        // Memoized nested indexes give the same answers the second time.
        assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
        assert_eq!(get(&mut doc, "/gps/lon"), Some(FieldValue::Float(2.35)));
    }

    #[test]
    fn json_root_of_any_kind() {
        assert_eq!(get(&mut json(" [1, 2] "), ""), Some(FieldValue::Array(2)));
        assert_eq!(
            get(&mut json("[1, [2, 3]]"), "/1/0"),
            Some(FieldValue::Integer(2))
        );
        assert_eq!(get(&mut json("\"hi\""), ""), Some(text("hi")));
        assert_eq!(get(&mut json(" 7 "), ""), Some(FieldValue::Integer(7)));
        assert_eq!(get(&mut json("null"), ""), Some(FieldValue::Null));
        assert_eq!(get(&mut json("false"), ""), Some(FieldValue::Bool(false)));
        assert_eq!(get(&mut json("7"), "/x"), None);
    }

    #[test]
    fn json_numbers() {
        let mut doc = json(
            r#"{"max": 9223372036854775807, "min": -9223372036854775808,
                "big": 9223372036854775808, "small": -9223372036854775809,
                "exp": 1e3, "frac": -0.25, "zero": 0, "huge": 1e400}"#,
        );
        assert_eq!(get(&mut doc, "/max"), Some(FieldValue::Integer(i64::MAX)));
        assert_eq!(get(&mut doc, "/min"), Some(FieldValue::Integer(i64::MIN)));
        assert_eq!(
            get(&mut doc, "/big"),
            Some(FieldValue::Float(9_223_372_036_854_775_808.0))
        );
        assert_eq!(
            get(&mut doc, "/small"),
            Some(FieldValue::Float(-9_223_372_036_854_775_809.0))
        );
        assert_eq!(get(&mut doc, "/exp"), Some(FieldValue::Float(1000.0)));
        assert_eq!(get(&mut doc, "/frac"), Some(FieldValue::Float(-0.25)));
        assert_eq!(get(&mut doc, "/zero"), Some(FieldValue::Integer(0)));
        // Like serde_json, a number beyond f64 is an error, with its position.
        let why = malformed(doc.field("/huge"));
        assert!(
            why.contains("number out of range at line 3 column"),
            "{why}"
        );
    }

    #[test]
    fn json_strings_with_escapes() {
        let mut doc = json(r#"{"s": "a\"b\\c\/d\n\u00e9\ud83d\ude00", "plain": "héllo"}"#);
        assert_eq!(get(&mut doc, "/s"), Some(text("a\"b\\c/d\né😀")));
        assert_eq!(get(&mut doc, "/plain"), Some(text("héllo")));
    }

    #[test]
    fn json_escaped_keys() {
        let mut doc =
            json(r#"{"a/b": 1, "m~n": 2, "\u0041BC": 3, "q\"k": 4, "x\/y": 5, "": 6, "é": 7}"#);
        assert_eq!(get(&mut doc, "/a~1b"), Some(FieldValue::Integer(1)));
        assert_eq!(get(&mut doc, "/m~0n"), Some(FieldValue::Integer(2)));
        assert_eq!(get(&mut doc, "/ABC"), Some(FieldValue::Integer(3)));
        assert_eq!(get(&mut doc, "/q\"k"), Some(FieldValue::Integer(4)));
        assert_eq!(get(&mut doc, "/x~1y"), Some(FieldValue::Integer(5)));
        assert_eq!(get(&mut doc, "/"), Some(FieldValue::Integer(6)));
        assert_eq!(get(&mut doc, "/é"), Some(FieldValue::Integer(7)));
        // "~01" is "~" then "1", not "/".
        assert_eq!(
            get(&mut json(r#"{"~1": 8}"#), "/~01"),
            Some(FieldValue::Integer(8))
        );
        assert_eq!(get(&mut doc, "/\\u0041BC"), None);
    }

    #[test]
    fn json_absent_fields() {
        let mut doc = json(TELEMETRY);
        assert_eq!(get(&mut doc, "/nope"), None);
        assert_eq!(get(&mut doc, "/gps/alt"), None);
        assert_eq!(get(&mut doc, "/readings/3"), None);
        assert_eq!(get(&mut doc, "/readings/01"), None);
        assert_eq!(get(&mut doc, "/readings/-"), None);
        assert_eq!(get(&mut doc, "/readings/+1"), None);
        assert_eq!(get(&mut doc, "/readings/99999999999999999999999"), None);
        assert_eq!(get(&mut doc, "/gps/0"), None);
        // Through scalars: a number, a string, null.
        assert_eq!(get(&mut doc, "/seq/0"), None);
        assert_eq!(get(&mut doc, "/device/x"), None);
        assert_eq!(get(&mut doc, "/error/x"), None);
        assert_eq!(get(&mut doc, "/readings/0/x"), None);
        assert_eq!(get(&mut doc, "/Device"), None);
        assert_eq!(get(&mut doc, "/device/"), None);
    }

    #[test]
    fn json_duplicate_keys_last_wins() {
        let mut doc = json(r#"{"a": 1, "b": 2, "a": 3, "\u0061": 4}"#);
        assert_eq!(get(&mut doc, "/a"), Some(FieldValue::Integer(4)));
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(2)));
        // serde_json agrees on both.
        let value: JsonValue = serde_json::from_slice(doc.bytes()).unwrap();
        assert_eq!(value["a"], 4);
        assert_eq!(value.as_object().unwrap().len(), 2);
    }

    #[test]
    fn json_malformed_payloads_say_where() {
        let cases = [
            ("{\"a\": 1,}", "key must be a string at line 1 column 9"),
            (
                "{\n  \"a\": 1\n  \"b\": 2\n}",
                "expected ',' or '}' at line 3 column 3",
            ),
            ("[1, 2", "EOF while parsing a list at line 1 column 6"),
            ("", "EOF while parsing a value at line 1 column 1"),
            ("{\"a\": tru}", "expected value at line 1 column 7"),
            ("{\"a\": 01}", "expected ',' or '}' at line 1 column 8"),
            ("{\"a\": 1.}", "invalid number at line 1 column 9"),
            ("{\"a\": \"x\u{1}\"}", "control character"),
            ("{\"a\": \"\\x\"}", "invalid escape at line 1 column 9"),
            ("{\"a\": \"\\ud800\"}", "unexpected end of hex escape"),
            ("{\"a\": \"\\udc00\"}", "lone trailing surrogate"),
            ("{} {}", "trailing characters at line 1 column 4"),
            ("{\"a\" 1}", "expected ':' at line 1 column 6"),
            ("\u{feff}{}", "expected value at line 1 column 1"),
        ];
        for (input, expected) in cases {
            let mut doc = json(input);
            let why = malformed(doc.field("/a"));
            assert!(why.starts_with("JSON: "), "{input:?}: {why}");
            assert!(why.contains(expected), "{input:?}: {why}");
            // Remembered: the same answer again, for any pointer.
            assert_eq!(malformed(doc.field("")), why);
            // serde_json refuses them too.
            assert!(
                serde_json::from_str::<JsonValue>(input).is_err(),
                "{input:?}"
            );
        }
        let mut doc = Document::new(Some(Format::Json), b"{\"a\": \"\xff\"}".to_vec());
        let why = malformed(doc.field("/a"));
        assert!(why.contains("invalid UTF-8 at line 1 column 8"), "{why}");
        let error = doc.field("/a").unwrap_err();
        assert!(
            error.to_string().starts_with("malformed payload: JSON: "),
            "{error}"
        );
    }

    #[test]
    fn json_validity_agrees_with_serde_json() {
        let corpus = [
            "{}",
            "[]",
            "[[]]",
            "{\"a\":[{}]}",
            "0",
            "-0",
            "-",
            "1.5e+3",
            "1E-2",
            ".5",
            "1.e2",
            "[1,]",
            "[,1]",
            "{,}",
            "{\"a\":}",
            "{\"a\"}",
            "{1:2}",
            "[\"\\u12\"]",
            "\"\\uD83D\\uDE00\"",
            "\"\\uDE00\\uD83D\"",
            "\"\\uD83Dx\"",
            "[true false]",
            "nul",
            "[1] x",
            " \t\r\n[] \n",
            "\"abc",
            "[\"a\",\"b\"",
            "{\"a\":1}}",
            "[-01]",
            "[1e]",
            "[--1]",
            "\"\\/\"",
            "[1,2]]",
        ];
        for input in corpus {
            let ours = json(input).field("").is_ok();
            let theirs = serde_json::from_str::<JsonValue>(input).is_ok();
            assert_eq!(ours, theirs, "{input:?}");
        }
    }

    #[test]
    fn bad_pointers() {
        let mut doc = json(TELEMETRY);
        for (pointer, expected) in [
            ("abc", "pointer \"abc\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"),
            ("/a~2b", "the '~' at byte 2 must be followed by '0' or '1' (an escaped '~' or '/'), not '2'"),
            ("/a~", "the '~' at byte 2 must be followed by '0' or '1' (an escaped '~' or '/'), not the end of the pointer"),
            ("/ok/~é", "not 'é'"),
        ] {
            match doc.field(pointer) {
                Err(FieldError::BadPointer(why)) => assert!(why.contains(expected), "{why}"),
                other => panic!("{pointer:?}: {other:?}"),
            }
        }
        let error = doc.field("x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "field pointer \"x\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"
        );
        // A huge pointer is cut short in the message.
        let long = "x".repeat(10_000);
        let why = doc.field(&long).unwrap_err().to_string();
        assert!(why.len() < 400 && why.contains("(10000 bytes)"), "{why}");
        // The pointer is checked before the payload is parsed.
        let mut broken = json("{");
        assert!(matches!(broken.field("a"), Err(FieldError::BadPointer(_))));
    }

    #[test]
    fn text_and_binary_have_no_fields() {
        let mut doc = Document::new(None, b"{\"a\": 1}".to_vec());
        assert_eq!(doc.field("/a"), Err(FieldError::Unstructured));
        assert_eq!(doc.field(""), Err(FieldError::Unstructured));
        assert_eq!(doc.field("bad"), Err(FieldError::Unstructured));
        assert_eq!(doc.format(), None);
        assert_eq!(doc.bytes(), b"{\"a\": 1}");
        assert_eq!(
            FieldError::Unstructured.to_string(),
            "the payload is text or binary: it has no fields"
        );
    }

    #[test]
    fn replace_drops_the_cache() {
        let mut doc = json(r#"{"a": {"b": 1}, "c": 2}"#);
        assert_eq!(get(&mut doc, "/a/b"), Some(FieldValue::Integer(1)));
        doc.replace(br#"{"c": 3, "a": {"x": 0, "b": "masked"}}"#.to_vec());
        assert_eq!(get(&mut doc, "/a/b"), Some(text("masked")));
        assert_eq!(get(&mut doc, "/c"), Some(FieldValue::Integer(3)));
        assert_eq!(doc.format(), Some(Format::Json));
        doc.replace(b"{".to_vec());
        assert!(matches!(doc.field("/c"), Err(FieldError::Malformed(_))));
        doc.replace(b"{\"c\": 4}".to_vec());
        assert_eq!(get(&mut doc, "/c"), Some(FieldValue::Integer(4)));
    }

    #[test]
    fn json_depth_limit_matches_serde_json() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let ok = nested(MAX_DEPTH);
        assert!(serde_json::from_str::<JsonValue>(&ok).is_ok());
        let mut doc = json(&ok);
        let deepest = "/0".repeat(MAX_DEPTH - 1);
        assert_eq!(get(&mut doc, &deepest), Some(FieldValue::Array(0)));
        assert_eq!(get(&mut doc, &format!("{deepest}/0")), None);
        let too_deep = nested(MAX_DEPTH + 1);
        assert!(serde_json::from_str::<JsonValue>(&too_deep).is_err());
        let why = malformed(json(&too_deep).field(""));
        assert!(why.contains("recursion limit exceeded"), "{why}");
        // The limit holds inside objects too.
        let objects = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(malformed(json(&objects).field("/a")).contains("recursion limit exceeded"));
    }

    #[test]
    fn hostile_nesting_does_not_overflow_the_stack() {
        let open = "[".repeat(100_000);
        let balanced = format!("{open}{}", "]".repeat(100_000));
        let objects = "{\"a\":".repeat(100_000);
        for input in [&open, &balanced, &objects] {
            let why = malformed(json(input).field("/0/0"));
            assert!(why.contains("recursion limit exceeded"), "{why}");
            let error = redact(Format::Json, input.as_bytes(), &[remove("/0")]).unwrap_err();
            assert!(matches!(error, RedactError::Malformed(_)), "{error:?}");
        }
        let depth_error = |bytes: Vec<u8>| {
            let why = malformed(Document::new(Some(Format::Cbor), bytes.clone()).field("/0"));
            assert!(why.contains("nesting deeper than 127 levels"), "{why}");
            let error = redact(Format::Cbor, &bytes, &[remove("/0")]).unwrap_err();
            assert!(
                matches!(&error, RedactError::Malformed(why) if why.contains("nesting deeper")),
                "{error:?}"
            );
        };
        // Arrays of one element, indefinite arrays, maps, tags: 100 000 deep, with or without
        // an end.
        let mut arrays = vec![0x81; 100_000];
        arrays.push(0x00);
        depth_error(arrays);
        depth_error(vec![0x9f; 100_000]);
        depth_error([0xa1, 0x61, b'a'].repeat(100_000));
        let mut tags = vec![0xc1; 100_000];
        tags.push(0x00);
        depth_error(tags);
    }

    #[test]
    fn cbor_every_kind() {
        let value = Cv::Map(vec![
            (t("device"), t("sensor-7")),
            (t("seq"), Cv::Integer(42)),
            (t("neg"), Cv::Integer(-5)),
            (t("max"), Cv::Integer(i64::MAX.into())),
            (t("min"), Cv::Integer(i64::MIN.into())),
            (t("big"), Cv::Integer(u64::MAX.into())),
            (t("small"), Cv::Integer(-1 - i128::from(u64::MAX))),
            (t("temp"), Cv::Float(21.5)),
            (t("ok"), Cv::Bool(true)),
            (t("error"), Cv::Null),
            (t("raw"), Cv::Bytes(vec![1, 2, 3])),
            (t("when"), Cv::Tag(1, Box::new(Cv::Integer(1_700_000_000)))),
            (
                t("gps"),
                Cv::Map(vec![
                    (t("lat"), Cv::Float(48.85)),
                    (t("fix"), Cv::Map(vec![(t("sats"), Cv::Integer(9))])),
                ]),
            ),
            (
                t("readings"),
                Cv::Array(vec![
                    Cv::Integer(10),
                    Cv::Map(vec![(t("peak"), Cv::Integer(12))]),
                ]),
            ),
            (
                t("tagged"),
                Cv::Tag(55799, Box::new(Cv::Map(vec![(t("in"), Cv::Bool(false))]))),
            ),
        ]);
        let mut doc = cbor(&value);
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(15)));
        assert_eq!(get(&mut doc, "/device"), Some(text("sensor-7")));
        assert_eq!(get(&mut doc, "/seq"), Some(FieldValue::Integer(42)));
        assert_eq!(get(&mut doc, "/neg"), Some(FieldValue::Integer(-5)));
        assert_eq!(get(&mut doc, "/max"), Some(FieldValue::Integer(i64::MAX)));
        assert_eq!(get(&mut doc, "/min"), Some(FieldValue::Integer(i64::MIN)));
        assert_eq!(
            get(&mut doc, "/big"),
            Some(FieldValue::Float(u64::MAX as f64))
        );
        assert_eq!(
            get(&mut doc, "/small"),
            Some(FieldValue::Float(-(u64::MAX as f64) - 1.0))
        );
        assert_eq!(get(&mut doc, "/temp"), Some(FieldValue::Float(21.5)));
        assert_eq!(get(&mut doc, "/ok"), Some(FieldValue::Bool(true)));
        assert_eq!(get(&mut doc, "/error"), Some(FieldValue::Null));
        assert_eq!(
            get(&mut doc, "/raw"),
            Some(FieldValue::Bytes(vec![1, 2, 3]))
        );
        assert_eq!(
            get(&mut doc, "/when"),
            Some(FieldValue::Integer(1_700_000_000))
        );
        assert_eq!(get(&mut doc, "/gps"), Some(FieldValue::Object(2)));
        assert_eq!(get(&mut doc, "/gps/lat"), Some(FieldValue::Float(48.85)));
        assert_eq!(get(&mut doc, "/gps/fix/sats"), Some(FieldValue::Integer(9)));
        assert_eq!(get(&mut doc, "/readings"), Some(FieldValue::Array(2)));
        assert_eq!(get(&mut doc, "/readings/0"), Some(FieldValue::Integer(10)));
        assert_eq!(
            get(&mut doc, "/readings/1/peak"),
            Some(FieldValue::Integer(12))
        );
        assert_eq!(get(&mut doc, "/tagged"), Some(FieldValue::Object(1)));
        assert_eq!(get(&mut doc, "/tagged/in"), Some(FieldValue::Bool(false)));
        // Absent, and through scalars.
        assert_eq!(get(&mut doc, "/nope"), None);
        assert_eq!(get(&mut doc, "/readings/2"), None);
        assert_eq!(get(&mut doc, "/readings/01"), None);
        assert_eq!(get(&mut doc, "/readings/-"), None);
        assert_eq!(get(&mut doc, "/seq/0"), None);
        assert_eq!(get(&mut doc, "/device/x"), None);
        assert_eq!(get(&mut doc, "/raw/0"), None);
        assert_eq!(get(&mut doc, "/when/x"), None);
    }

    #[test]
    fn cbor_encodings_cbor4ii_does_not_produce() {
        // {"h": 1.5 as f16, "f": 0.25 as f32, "u": undefined, "i": indefinite array [1, 2],
        //  (_ "k", "ey"): indefinite text key, "s": (_ "ab", "c"), "b": (_ h'01', h'02'),
        //  1: "int key", "m": indefinite map {"x": 7}}
        let bytes = [
            0xbf, // map, indefinite
            0x61, b'h', 0xf9, 0x3e, 0x00, //
            0x61, b'f', 0xfa, 0x3e, 0x80, 0x00, 0x00, //
            0x61, b'u', 0xf7, //
            0x61, b'i', 0x9f, 0x01, 0x02, 0xff, //
            0x7f, 0x61, b'k', 0x62, b'e', b'y', 0xff, 0x18, 0x2a, //
            0x61, b's', 0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff, //
            0x61, b'b', 0x5f, 0x41, 0x01, 0x41, 0x02, 0xff, //
            0x01, 0x67, b'i', b'n', b't', b' ', b'k', b'e', b'y', //
            0x61, b'm', 0xbf, 0x61, b'x', 0x07, 0xff, //
            0xff,
        ];
        let mut doc = Document::new(Some(Format::Cbor), bytes.to_vec());
        assert_eq!(get(&mut doc, "/h"), Some(FieldValue::Float(1.5)));
        assert_eq!(get(&mut doc, "/f"), Some(FieldValue::Float(0.25)));
        assert_eq!(get(&mut doc, "/u"), Some(FieldValue::Null));
        assert_eq!(get(&mut doc, "/i"), Some(FieldValue::Array(2)));
        assert_eq!(get(&mut doc, "/i/1"), Some(FieldValue::Integer(2)));
        assert_eq!(get(&mut doc, "/key"), Some(FieldValue::Integer(42)));
        assert_eq!(get(&mut doc, "/s"), Some(text("abc")));
        assert_eq!(get(&mut doc, "/b"), Some(FieldValue::Bytes(vec![1, 2])));
        assert_eq!(get(&mut doc, "/m/x"), Some(FieldValue::Integer(7)));
        // The integer key counts as a member, but no pointer names it.
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(9)));
        assert_eq!(get(&mut doc, "/1"), None);
        // Half floats beyond the normal range.
        for (half, expected) in [
            ([0x00, 0x01], 5.960_464_477_539_063e-8),
            ([0x7b, 0xff], 65504.0),
            ([0xc4, 0x00], -4.0),
            ([0x7c, 0x00], f64::INFINITY),
        ] {
            let mut doc = Document::new(Some(Format::Cbor), vec![0xf9, half[0], half[1]]);
            assert_eq!(get(&mut doc, ""), Some(FieldValue::Float(expected)));
        }
        let mut nan = Document::new(Some(Format::Cbor), vec![0xf9, 0x7e, 0x00]);
        assert!(matches!(get(&mut nan, ""), Some(FieldValue::Float(f)) if f.is_nan()));
    }

    #[test]
    fn cbor_escaped_pointers_and_duplicates() {
        let value = Cv::Map(vec![
            (t("a/b"), Cv::Integer(1)),
            (t("m~n"), Cv::Integer(2)),
            (t("d"), Cv::Integer(3)),
            (t("d"), Cv::Integer(4)),
        ]);
        let mut doc = cbor(&value);
        assert_eq!(get(&mut doc, "/a~1b"), Some(FieldValue::Integer(1)));
        assert_eq!(get(&mut doc, "/m~0n"), Some(FieldValue::Integer(2)));
        assert_eq!(get(&mut doc, "/d"), Some(FieldValue::Integer(4)));
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Object(3)));
    }

    #[test]
    fn cbor_malformed_payloads_say_where() {
        let cases: [(&[u8], &str); 10] = [
            (&[0xa1, 0x61, b'a'], "unexpected end of input at byte 3"),
            (&[0x82, 0x01], "unexpected end of input at byte 2"),
            (
                &[0x1c],
                "reserved additional information (28 to 30) at byte 0",
            ),
            (
                &[0x01, 0x02],
                "trailing bytes after the top-level item at byte 1",
            ),
            (&[0x81, 0xff], "unexpected break at byte 1"),
            (
                &[0x62, 0xff, 0xfe],
                "invalid UTF-8 in a text string at byte 0",
            ),
            (
                &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                "string longer than the input at byte 0",
            ),
            (
                &[0x5f, 0x61, b'a', 0xff],
                "invalid chunk in an indefinite-length string at byte 1",
            ),
            (
                &[0xbf, 0x61, b'a', 0xff],
                "map key without a value at byte 3",
            ),
            (&[0xf8, 0x10], "invalid two-byte simple value at byte 0"),
        ];
        for (input, expected) in cases {
            let mut doc = Document::new(Some(Format::Cbor), input.to_vec());
            let why = malformed(doc.field("/a"));
            assert_eq!(why, format!("CBOR: {expected}"), "{input:x?}");
            assert_eq!(malformed(doc.field("")), why);
            let redacted = redact(Format::Cbor, input, &[remove("/a")]);
            assert!(
                matches!(redacted, Err(RedactError::Malformed(_))),
                "{input:x?}: {redacted:?}"
            );
        }
        // An array claiming 2^64 - 1 elements only costs what the input holds.
        let huge = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let why = malformed(Document::new(Some(Format::Cbor), huge.to_vec()).field(""));
        assert!(why.contains("unexpected end of input"), "{why}");
        let why = malformed(Document::new(Some(Format::Cbor), vec![0xf0]).field(""));
        assert!(why.contains("unsupported simple value"), "{why}");
    }

    #[test]
    fn redact_json_members_elements_nested() {
        let input = r#"{"id": "s-1", "owner": {"name": "Ann", "email": "a@x.io", "phone": "123"},
                        "readings": [1, 2, 3, 4], "z": 0}"#;
        assert_eq!(
            redacted_json(
                input,
                &[mask("/owner/email", "***"), remove("/owner/phone")]
            )
            .unwrap(),
            r#"{"id":"s-1","owner":{"name":"Ann","email":"***"},"readings":[1,2,3,4],"z":0}"#
        );
        // Removing a member keeps the order of the others.
        assert_eq!(
            redacted_json(input, &[remove("/id")]).unwrap(),
            r#"{"owner":{"name":"Ann","email":"a@x.io","phone":"123"},"readings":[1,2,3,4],"z":0}"#
        );
        // Elements shift: the second edit sees the array the first one left.
        assert_eq!(
            redacted_json(
                input,
                &[
                    remove("/readings/0"),
                    remove("/readings/0"),
                    mask("/readings/1", "x")
                ]
            )
            .unwrap(),
            r#"{"id":"s-1","owner":{"name":"Ann","email":"a@x.io","phone":"123"},"readings":[3,"x"],"z":0}"#
        );
        // Mask replaces containers whole.
        assert_eq!(
            redacted_json(input, &[mask("/owner", "-"), mask("/readings", "-")]).unwrap(),
            r#"{"id":"s-1","owner":"-","readings":"-","z":0}"#
        );
        assert_eq!(
            redacted_json("[1, [2, 3]]", &[remove("/1/0")]).unwrap(),
            "[1,[3]]"
        );
        assert_eq!(
            redacted_json(r#"{"a/b": {"~": 1}}"#, &[mask("/a~1b/~0", "m")]).unwrap(),
            r#"{"a/b":{"~":"m"}}"#
        );
        // Duplicates merge, so removing the key leaves no copy behind.
        assert_eq!(
            redacted_json(r#"{"k": 1, "a": 2, "k": 3}"#, &[remove("/k")]).unwrap(),
            r#"{"a":2}"#
        );
    }

    #[test]
    fn redact_json_nothing_matched() {
        let input = r#"{"a": {"b": [1]}, "s": "x"}"#;
        for pointer in [
            "/nope", "/a/c", "/a/b/1", "/a/b/01", "/a/b/-", "/s/0", "/a/b/0/x", "/a/0",
        ] {
            assert_eq!(redacted_json(input, &[remove(pointer)]), None, "{pointer}");
            assert_eq!(
                redacted_json(input, &[mask(pointer, "m")]),
                None,
                "{pointer}"
            );
        }
        assert_eq!(redact(Format::Json, input.as_bytes(), &[]), Ok(None));
        // One edit matching is enough for new bytes.
        assert_eq!(
            redacted_json(input, &[remove("/nope"), remove("/s")]).unwrap(),
            r#"{"a":{"b":[1]}}"#
        );
    }

    #[test]
    fn redact_errors() {
        let input = br#"{"a": 1}"#;
        assert_eq!(
            redact(Format::Json, input, &[remove("")]),
            Err(RedactError::WholeDocument)
        );
        assert_eq!(
            redact(Format::Cbor, &[0xa0], &[mask("", "x")]),
            Err(RedactError::WholeDocument)
        );
        let error = redact(Format::Json, input, &[remove("/a"), remove("abc")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "redaction pointer \"abc\" is not an RFC 6901 JSON Pointer: it must be empty or start with '/'"
        );
        let error = redact(Format::Json, input, &[remove("/a~")]).unwrap_err();
        assert!(
            matches!(&error, RedactError::BadPointer(why) if why.contains("\"/a~\"")),
            "{error:?}"
        );
        // Pointers are checked before the payload.
        assert!(matches!(
            redact(Format::Json, b"{", &[remove("x")]),
            Err(RedactError::BadPointer(_))
        ));
        let error = redact(Format::Json, b"{\"a\": 1,}", &[remove("/a")]).unwrap_err();
        assert!(
            matches!(&error, RedactError::Malformed(why) if why.contains("line 1 column 9")),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .starts_with("cannot redact a malformed payload: JSON: "));
        assert!(RedactError::WholeDocument
            .to_string()
            .contains("whole document"));
    }

    #[test]
    fn redact_json_output_is_compact_and_reparses() {
        let input = "{\n  \"b\": 1,\n  \"a\": [ 1.5 , true, null ],\n  \"c\": \"\\u00e9\" \n}";
        let out = redacted_json(input, &[mask("/b", "x\"y\\z\n\u{1}")]).unwrap();
        assert_eq!(
            out,
            r#"{"b":"x\"y\\z\n\u0001","a":[1.5,true,null],"c":"\u00e9"}"#
        );
        let mut doc = json(&out);
        assert_eq!(get(&mut doc, "/a/0"), Some(FieldValue::Float(1.5)));
        assert_eq!(get(&mut doc, "/b"), Some(text("x\"y\\z\n\u{1}")));
        assert_eq!(get(&mut doc, "/c"), Some(text("é")));
    }

    #[test]
    fn redact_json_leaves_the_rest_verbatim() {
        // Numbers serde_json would re-format or round, escapes it would rewrite: untouched.
        let input = r#"{"big": 123456789012345678901234567890, "f": 8337637642.049805,
                        "z": -0, "e": 1E+2, "s": "\u00e9\/", "k\u0041": 1, "drop": 0}"#;
        assert_eq!(
            redacted_json(input, &[remove("/drop")]).unwrap(),
            r#"{"big":123456789012345678901234567890,"f":8337637642.049805,"z":-0,"e":1E+2,"s":"\u00e9\/","kA":1}"#
        );
        // Duplicates: one key, at its first place, with its last value; masks reach it.
        assert_eq!(
            redacted_json(
                r#"{"k": 1, "a": {"x": 1, "x": 2}, "k": 3}"#,
                &[mask("/a/x", "m")]
            )
            .unwrap(),
            r#"{"k":3,"a":{"x":"m"}}"#
        );
        // Nothing inside a masked value any more.
        assert_eq!(
            redacted_json(r#"{"a": {"b": 1}}"#, &[mask("/a", "m"), remove("/a/b")]).unwrap(),
            r#"{"a":"m"}"#
        );
        // A removed then re-masked index names the element that moved into its place.
        assert_eq!(
            redacted_json(
                "[[0], [1], [2]]",
                &[remove("/0"), mask("/0", "m"), remove("/1/0")]
            )
            .unwrap(),
            r#"["m",[]]"#
        );
    }

    #[test]
    fn redact_cbor_round_trip() {
        let value = Cv::Map(vec![
            (t("id"), t("s-1")),
            (
                t("owner"),
                Cv::Map(vec![(t("email"), t("a@x.io")), (t("phone"), t("123"))]),
            ),
            (
                t("readings"),
                Cv::Array(vec![Cv::Integer(1), Cv::Integer(-2), Cv::Integer(3)]),
            ),
            (t("when"), Cv::Tag(1, Box::new(Cv::Integer(1_700_000_000)))),
            (t("raw"), Cv::Bytes(vec![0; 30])),
            (t("big"), Cv::Integer(u64::MAX.into())),
            (t("f"), Cv::Float(0.1)),
            (t("n"), Cv::Null),
        ]);
        let bytes = cbor_bytes(&value);
        let out = redact(
            Format::Cbor,
            &bytes,
            &[
                mask("/owner/email", "***"),
                remove("/owner/phone"),
                remove("/readings/0"),
                mask("/when", "?"),
            ],
        )
        .unwrap()
        .unwrap();
        let expected = Cv::Map(vec![
            (t("id"), t("s-1")),
            (t("owner"), Cv::Map(vec![(t("email"), t("***"))])),
            (
                t("readings"),
                Cv::Array(vec![Cv::Integer(-2), Cv::Integer(3)]),
            ),
            (t("when"), t("?")),
            (t("raw"), Cv::Bytes(vec![0; 30])),
            (t("big"), Cv::Integer(u64::MAX.into())),
            (t("f"), Cv::Float(0.1)),
            (t("n"), Cv::Null),
        ]);
        assert_eq!(cbor_value(&out), expected);
        // Nothing else changed: re-encoding the expected value gives the same bytes.
        assert_eq!(out, cbor_bytes(&expected));
        // Lookups work on the result.
        let mut doc = Document::new(Some(Format::Cbor), out);
        assert_eq!(get(&mut doc, "/owner/email"), Some(text("***")));
        assert_eq!(get(&mut doc, "/readings/0"), Some(FieldValue::Integer(-2)));
        // Tags stay where they were; a root array works too.
        let tagged = cbor_bytes(&Cv::Tag(55799, Box::new(Cv::Array(vec![t("a"), t("b")]))));
        let out = redact(Format::Cbor, &tagged, &[remove("/0")])
            .unwrap()
            .unwrap();
        assert_eq!(
            cbor_value(&out),
            Cv::Tag(55799, Box::new(Cv::Array(vec![t("b")])))
        );
        // Lookups go through the root's tag, and see the redacted payload after `replace`.
        let mut doc = Document::new(Some(Format::Cbor), tagged);
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Array(2)));
        assert_eq!(get(&mut doc, "/1"), Some(text("b")));
        doc.replace(out);
        assert_eq!(get(&mut doc, ""), Some(FieldValue::Array(1)));
        assert_eq!(get(&mut doc, "/0"), Some(text("b")));
    }

    #[test]
    fn redact_cbor_definite_output_and_widths_kept() {
        // {_ "h": 1.5 as f16, "s": (_ "a", "b"), "l": [_ 1, 2], "x": 0}
        let input = [
            0xbf, 0x61, b'h', 0xf9, 0x3e, 0x00, 0x61, b's', 0x7f, 0x61, b'a', 0x61, b'b', 0xff,
            0x61, b'l', 0x9f, 0x01, 0x02, 0xff, 0x61, b'x', 0x00, 0xff,
        ];
        let out = redact(Format::Cbor, &input, &[remove("/x")])
            .unwrap()
            .unwrap();
        let expected = [
            0xa3, 0x61, b'h', 0xf9, 0x3e, 0x00, 0x61, b's', 0x62, b'a', b'b', 0x61, b'l', 0x82,
            0x01, 0x02,
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn redact_cbor_nothing_matched_and_keys() {
        let bytes = cbor_bytes(&Cv::Map(vec![
            (t("a"), Cv::Array(vec![Cv::Integer(1)])),
            (t("s"), t("x")),
        ]));
        for pointer in ["/nope", "/a/1", "/a/01", "/a/-", "/s/0", "/a/0/x"] {
            assert_eq!(
                redact(Format::Cbor, &bytes, &[remove(pointer)]),
                Ok(None),
                "{pointer}"
            );
            assert_eq!(
                redact(Format::Cbor, &bytes, &[mask(pointer, "m")]),
                Ok(None),
                "{pointer}"
            );
        }
        // A non-text key makes re-encoding impossible, unless nothing has to be re-encoded or
        // the edit removed it.
        let mixed = cbor_bytes(&Cv::Map(vec![
            (t("a"), Cv::Integer(1)),
            (t("m"), Cv::Map(vec![(Cv::Integer(1), t("one"))])),
        ]));
        assert_eq!(
            redact(Format::Cbor, &mixed, &[remove("/a")]),
            Err(RedactError::NonTextKey)
        );
        assert_eq!(redact(Format::Cbor, &mixed, &[remove("/x")]), Ok(None));
        let out = redact(Format::Cbor, &mixed, &[mask("/m", "gone")])
            .unwrap()
            .unwrap();
        assert_eq!(
            cbor_value(&out),
            Cv::Map(vec![(t("a"), Cv::Integer(1)), (t("m"), t("gone"))])
        );
        assert!(RedactError::NonTextKey
            .to_string()
            .contains("not a text string"));
        // Duplicate keys merge: the last value at the first place, and the edit reaches it.
        let dup = cbor_bytes(&Cv::Map(vec![
            (t("k"), Cv::Integer(1)),
            (t("a"), Cv::Integer(2)),
            (t("k"), Cv::Integer(3)),
        ]));
        let out = redact(Format::Cbor, &dup, &[mask("/k", "m")])
            .unwrap()
            .unwrap();
        assert_eq!(
            cbor_value(&out),
            Cv::Map(vec![(t("k"), t("m")), (t("a"), Cv::Integer(2))])
        );
        let out = redact(Format::Cbor, &dup, &[remove("/k")])
            .unwrap()
            .unwrap();
        assert_eq!(cbor_value(&out), Cv::Map(vec![(t("a"), Cv::Integer(2))]));
    }
}
