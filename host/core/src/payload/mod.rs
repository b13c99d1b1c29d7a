//! Field lookups and redaction for JSON and CBOR message payloads.
//!
//! Lookups are on the hot path: every policy of a chain asks for a few fields of every message,
//! and building a value tree of a 1 KB JSON message (serde_json: about 9 µs) costs more than the
//! whole budget of such a chain. So a [`Document`] builds no tree. Its first lookup validates the
//! payload in one pass and records where every value lies in a flat "tape", in which each
//! container's children sit side by side; a lookup then walks the tape (one short slice scan per
//! pointer token) and decodes only the scalar it ends on.
//!
//! Hostile payloads: nothing recurses on the payload's nesting except code that runs behind the
//! depth limit (the CBOR tree, the JSON writer), and every length a payload declares is checked
//! against the input before use.
//!
//! The parts: `tape.rs` holds the index a lookup walks, `json.rs` and `cbor.rs` the scanners
//! that build it and each format's redaction, `pointer.rs` the JSON Pointer handling they share.

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

mod cbor;
mod json;
mod pointer;
mod tape;

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use pointer::{check_pointer, tokens};
use tape::Tape;

/// The deepest nesting of arrays and objects (and, in CBOR, tags) a payload may have. It is the
/// deepest serde_json accepts, so field lookups and redaction agree on which payloads are too
/// deep; it also bounds the recursion of the CBOR redaction code.
const MAX_DEPTH: usize = 127;

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
    /// An object (CBOR map), with its number of members (saturated at `u32::MAX`).
    Object(u32),
}

/// A value as a lookup finds it: text and bytes borrowed from the payload where they need no
/// decoding, so a caller that copies them into a buffer of its own (a reused instance's call
/// record) allocates nothing.
#[derive(Debug)]
pub(crate) enum FieldRef<'a> {
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    /// Any other value: never `Text` or `Bytes`.
    Other(FieldValue),
}

impl FieldRef<'_> {
    pub(crate) fn into_owned(self) -> FieldValue {
        match self {
            Self::Text(text) => FieldValue::Text(text.into_owned()),
            Self::Bytes(bytes) => FieldValue::Bytes(bytes.into_owned()),
            Self::Other(value) => value,
        }
    }
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

/// A JSON Pointer checked and split into its reference tokens once, for a lookup repeated on
/// every message (a policy's declared fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: std::sync::Arc<str>,
    tokens: Box<[Box<str>]>,
}

impl Pointer {
    /// Checks `text` against RFC 6901; the error names the pointer and the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        check_pointer(text)?;
        Ok(Self {
            text: text.into(),
            tokens: tokens(text)
                .map(|t| t.into_owned().into_boxed_str())
                .collect(),
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pointer as written, shared.
    pub fn text(&self) -> &std::sync::Arc<str> {
        &self.text
    }
}

/// The most pointers one pass over a container looks for; more that end in the same container
/// take another pass.
const GROUP_MAX: usize = 16;

/// Pointers looked up together on every message (a policy's declared fields), grouped by the
/// container they end in: see [`Document::get_all`].
#[derive(Debug, Clone, Default)]
pub(crate) struct PointerSet {
    len: usize,
    /// The empty pointers: the whole document.
    whole: Vec<usize>,
    groups: Vec<Group>,
}

/// Pointers that end in the same container.
#[derive(Debug, Clone)]
struct Group {
    /// The tokens to the container.
    parent: Box<[Box<str>]>,
    /// The pointers' indexes in the set, and their last tokens, in the same order.
    members: Vec<usize>,
    last: Vec<Box<str>>,
    /// Bit `n` set when some last token is `n` bytes long (63: 63 or more).
    lengths: u64,
}

impl PointerSet {
    pub(crate) fn new(pointers: &[Pointer]) -> Self {
        let mut set = Self {
            len: pointers.len(),
            ..Self::default()
        };
        for (i, pointer) in pointers.iter().enumerate() {
            let Some((last, parent)) = pointer.tokens.split_last() else {
                set.whole.push(i);
                continue;
            };
            let open = set
                .groups
                .iter_mut()
                .find(|g| *g.parent == *parent && g.members.len() < GROUP_MAX);
            let group = match open {
                Some(group) => group,
                None => {
                    set.groups.push(Group {
                        parent: parent.into(),
                        members: Vec::new(),
                        last: Vec::new(),
                        lengths: 0,
                    });
                    let Some(group) = set.groups.last_mut() else {
                        continue;
                    };
                    group
                }
            };
            group.members.push(i);
            group.last.push(last.clone());
            group.lengths |= 1 << last.len().min(63);
        }
        set
    }
}

/// A lazily parsed view of one payload.
///
/// The host creates one per message and every policy of a chain looks fields up through it, so
/// the payload is parsed at most once per message: the first lookup validates it and records
/// where every value lies; later lookups, from any policy, walk that record.
pub struct Document {
    bytes: Bytes,
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

/// An empty payload of no format: every lookup fails with [`FieldError::Unstructured`].
impl Default for Document {
    fn default() -> Self {
        Self::new(None, Bytes::new())
    }
}

impl Document {
    /// A view of `bytes` in `format`; `None` is a text or binary payload, on which every lookup
    /// fails with [`FieldError::Unstructured`]. Parses nothing yet.
    pub fn new(format: Option<Format>, bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
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
    /// (`01`, `-`). A lookup through (or of) an object that has a key twice is refused as
    /// malformed: parsers disagree on which copy counts.
    pub fn field(&mut self, pointer: &str) -> Result<Option<FieldValue>, FieldError> {
        if self.format.is_none() {
            return Err(FieldError::Unstructured);
        }
        check_pointer(pointer).map_err(FieldError::BadPointer)?;
        let (format, bytes, tape) = self.indexed()?;
        match walk(tape, bytes, tokens(pointer))? {
            Some(entry) => tape
                .value(format, bytes, entry)
                .map(|v| Some(v.into_owned())),
            None => Ok(None),
        }
    }

    /// Looks a checked pointer up, as [`field`](Self::field) does, without checking or splitting
    /// it again.
    pub fn get(&mut self, pointer: &Pointer) -> Result<Option<FieldValue>, FieldError> {
        let (format, bytes, tape) = self.indexed()?;
        match walk(tape, bytes, pointer.tokens.iter())? {
            Some(entry) => tape
                .value(format, bytes, entry)
                .map(|v| Some(v.into_owned())),
            None => Ok(None),
        }
    }

    /// The format, the bytes and their index (built by the first lookup), or why the payload
    /// has no fields.
    fn indexed(&mut self) -> Result<(Format, &[u8], &Tape), FieldError> {
        let format = self.format.ok_or(FieldError::Unstructured)?;
        let bytes = &self.bytes[..];
        match self.index.get_or_insert_with(|| Tape::build(format, bytes)) {
            Ok(tape) => Ok((format, bytes, tape)),
            Err(error) => Err(error.clone()),
        }
    }

    /// Looks every pointer of `set` up, as [`get`](Self::get) does, handing each result to
    /// `each` with the pointer's index in `set` (not in order). Pointers that end in the same
    /// container cost one pass over its members between them.
    pub(crate) fn get_all(
        &mut self,
        set: &PointerSet,
        mut each: impl FnMut(usize, Result<Option<FieldRef<'_>>, FieldError>),
    ) {
        let (format, bytes, tape) = match self.indexed() {
            Ok(indexed) => indexed,
            Err(error) => {
                (0..set.len).for_each(|i| each(i, Err(error.clone())));
                return;
            }
        };
        for &i in &set.whole {
            each(i, tape.value(format, bytes, &tape.root).map(Some));
        }
        for group in &set.groups {
            let container = match walk(tape, bytes, group.parent.iter()) {
                Ok(Some(container)) => container,
                stop => {
                    for &i in &group.members {
                        each(i, stop.clone().map(|_| None));
                    }
                    continue;
                }
            };
            let mut found = [Ok(None); GROUP_MAX];
            let found = found.get_mut(..group.last.len()).unwrap_or_default();
            tape.children_named(bytes, container, &group.last, group.lengths, found);
            for ((&i, token), found) in group.members.iter().zip(group.last.iter()).zip(found) {
                let result = match *found {
                    Ok(Some(entry)) => tape.value(format, bytes, entry).map(Some),
                    Ok(None) => Ok(None),
                    Err(tape::Twice) => Err(twice(token)),
                };
                each(i, result);
            }
        }
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
                json::redact_tape(tape, &self.bytes, edits)?
            }
            _ => redact(format, &self.bytes, edits)?,
        };
        Ok(redacted.map(|bytes| self.replace(bytes)).is_some())
    }

    /// Replaces the payload (after a redaction) and drops everything parsed from the old one.
    pub fn replace(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes.into();
        self.index = None;
    }

    /// The payload bytes, giving up the document.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Applies `edits` in order to a `format` payload and re-encodes it.
///
/// An edit whose pointer matches nothing is skipped. Remove deletes an object member, or an
/// array element (later indices shift, which later edits see); Mask replaces the value, whatever
/// its type, with the text. JSON output is compact, keeps member order and copies untouched
/// values verbatim (numbers and string escapes as they were written; keys too, inside a container
/// no edit reaches when the payload has no whitespace between its tokens). CBOR output uses definite
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
        Format::Json => json::redact(bytes, edits),
        Format::Cbor => cbor::redact(bytes, edits),
    }
}

/// The error of a lookup through an object that has `key` twice.
/// The entry `tokens` lead to from the root; `Ok(None)` when there is none, and an error naming
/// the key when an object on the way has it twice.
fn walk<'t>(
    tape: &'t Tape,
    bytes: &[u8],
    tokens: impl IntoIterator<Item = impl AsRef<str>>,
) -> Result<Option<&'t tape::Entry>, FieldError> {
    let mut entry = &tape.root;
    for token in tokens {
        match tape.child(bytes, entry, token.as_ref()) {
            Ok(Some(child)) => entry = child,
            Ok(None) => return Ok(None),
            Err(tape::Twice) => return Err(twice(token.as_ref())),
        }
    }
    Ok(Some(entry))
}

fn twice(key: &str) -> FieldError {
    FieldError::Malformed(tape::twice_message((true, key.as_bytes())))
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
