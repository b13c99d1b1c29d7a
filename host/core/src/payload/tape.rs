//! The index of a payload that field lookups walk: a flat "tape" recording where every value
//! lies, in which each container's children sit side by side, so that finding a member is a scan
//! of a short slice and finding an element is an index. One validating pass of the JSON or CBOR
//! scanner builds it (through [`Builder`]); a lookup then touches the payload again only to
//! compare keys and to decode the scalar it ends on.

use super::pointer::array_index;
use super::{cbor, json, FieldError, FieldValue, Format};

/// Payloads of 4 GiB or more are refused (as malformed): the tape keeps offsets in 32 bits,
/// which keeps it small, and MQTT caps payloads at 256 MiB anyway. A little under `u32::MAX`, so
/// that no key length can be mistaken for one of the `KEY_*` markers.
pub(super) const MAX_INDEXED_LEN: usize = u32::MAX as usize - 8;

/// `Entry::key_len` of an array element or the root.
const KEY_NONE: u32 = u32::MAX;
/// `Entry::key_len` of a key whose text is `Tape::owned_keys[key_start]`.
pub(super) const KEY_OWNED: u32 = u32::MAX - 1;
/// `Entry::key_len` of a CBOR key that is not text (no pointer token names it), encoded at
/// `Tape::non_text_keys[key_start]`.
pub(super) const KEY_NON_TEXT: u32 = u32::MAX - 2;

/// An object with a key more than once, met by a lookup or an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Twice;

/// Why a payload with a key twice in one object is refused, naming the key (clipped).
pub(super) fn twice_message((text, key): (bool, &[u8])) -> String {
    let key = if text {
        let key = String::from_utf8_lossy(key);
        let clipped: String = key.chars().take(64).collect();
        let more = if clipped.len() < key.len() { "…" } else { "" };
        format!("{clipped:?}{more}")
    } else {
        "(a non-text key)".to_owned()
    };
    format!(
        "duplicate key {key} in one object: which copy counts differs between parsers, so \
         the payload is refused"
    )
}

/// An offset, index or count within a payload shorter than [`MAX_INDEXED_LEN`]: they all fit.
pub(super) fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Where a value lies in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) end: usize,
}

/// What the first lookup learnt about a payload: every value, and where it lies. One validating
/// pass builds it; a lookup then walks it and touches the payload again only to compare keys and
/// to decode the scalar asked for.
///
/// Each container's direct children sit side by side in `entries`, so that finding a member is
/// a scan of a short slice and finding an element is an index.
#[derive(Debug)]
pub(super) struct Tape {
    pub(super) root: Entry,
    pub(super) entries: Vec<Entry>,
    /// Keys whose text is not verbatim in the payload (JSON escapes, CBOR text in chunks).
    owned_keys: Vec<Box<str>>,
    /// Where CBOR keys that are not text are encoded, to tell them apart.
    non_text_keys: Vec<(u32, u32)>,
    /// JSON with no whitespace between its tokens (around the root does not count): any
    /// value's bytes are already its compact form, so a redaction copies an untouched
    /// container in one piece.
    pub(super) compact: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Scalar,
    Array,
    Object,
}

/// One value of the payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// The member's key is the `key_len` payload bytes at `key_start`, unless `key_len` is one
    /// of the `KEY_*` markers.
    pub(super) key_start: u32,
    pub(super) key_len: u32,
    /// The value's bytes (JSON: without whitespace around; CBOR: after any tags).
    pub(super) start: u32,
    pub(super) end: u32,
    /// A container's children: `count` entries from `first`.
    pub(super) first: u32,
    count: u32,
    pub(super) kind: Kind,
}

/// The key of the next entry, while a tape is built.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryKey {
    pub(super) start: u32,
    pub(super) len: u32,
}

impl EntryKey {
    pub(super) const NONE: Self = Self {
        start: 0,
        len: KEY_NONE,
    };
}

impl Entry {
    pub(super) fn new(key: EntryKey, kind: Kind, start: usize, end: usize) -> Self {
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
pub(super) struct Builder {
    entries: Vec<Entry>,
    /// The containers open around the scanner, each followed by its children so far.
    pub(super) pending: Vec<Entry>,
    pub(super) owned_keys: Vec<Box<str>>,
    pub(super) non_text_keys: Vec<(u32, u32)>,
    /// See [`Tape::compact`].
    pub(super) compact: bool,
}

impl Builder {
    pub(super) fn new(payload_len: usize) -> Self {
        Self {
            // About one value per 8 to 16 bytes in telemetry; a guess too high costs little.
            entries: Vec::with_capacity((payload_len / 8).clamp(4, 4096)),
            pending: Vec::with_capacity((payload_len / 16).clamp(4, 1024)),
            owned_keys: Vec::new(),
            non_text_keys: Vec::new(),
            compact: false,
        }
    }

    /// Closes the container whose entry is `pending[at]`: its children, the entries after it,
    /// move to a block of their own.
    pub(super) fn close(&mut self, at: usize, end: usize) {
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
    pub(super) fn finish(mut self) -> Option<Tape> {
        let root = self.pending.pop().filter(|_| self.pending.is_empty())?;
        Some(Tape {
            root,
            entries: self.entries,
            owned_keys: self.owned_keys,
            non_text_keys: self.non_text_keys,
            compact: self.compact,
        })
    }
}

impl Tape {
    /// Indexes a payload for lookups.
    pub(super) fn build(format: Format, bytes: &[u8]) -> Result<Self, FieldError> {
        match format {
            Format::Json => {
                json::tape(bytes).map_err(|e| FieldError::Malformed(json::describe(bytes, &e)))
            }
            Format::Cbor => cbor::tape(bytes).map_err(|e| FieldError::Malformed(e.to_string())),
        }
    }

    /// A key two of `members` share: asked when a lookup returns an object. The usual object
    /// (a few dozen members at most) costs a comparison of one word per pair and no
    /// allocation: a fingerprint of each key (length, first and last byte) on the stack,
    /// bytes compared only when two fingerprints agree. Larger objects are sorted, so keys
    /// crafted to share their fingerprint cost O(n log n), not the quadratic seconds a pairwise
    /// check took on 40,000 of them.
    pub(super) fn duplicate_in<'a>(
        &'a self,
        bytes: &'a [u8],
        members: &[Entry],
    ) -> Option<(bool, &'a [u8])> {
        const PAIRWISE: usize = 32;
        let key = |member: &Entry| self.key_identity(bytes, member);
        if members.len() <= PAIRWISE {
            let mut prints = [0_u64; PAIRWISE];
            for (print, member) in prints.iter_mut().zip(members) {
                let (text, k) = key(member);
                *print = (k.len() as u64) << 17
                    | u64::from(k.first().copied().unwrap_or(0)) << 9
                    | u64::from(k.last().copied().unwrap_or(0)) << 1
                    | u64::from(text);
            }
            let prints = prints.get(..members.len()).unwrap_or_default();
            for (i, (a, x)) in prints.iter().zip(members).enumerate() {
                for (b, y) in prints.iter().zip(members).skip(i + 1) {
                    if a == b && key(x) == key(y) {
                        return Some(key(x));
                    }
                }
            }
            return None;
        }
        let mut keys: Vec<(bool, &[u8])> = members.iter().map(key).collect();
        keys.sort_unstable();
        keys.iter()
            .zip(keys.iter().skip(1))
            .find(|(a, b)| a == b)
            .map(|(a, _)| *a)
    }

    pub(super) fn children(&self, container: &Entry) -> &[Entry] {
        let first = container.first as usize;
        self.entries
            .get(first..first.saturating_add(container.count as usize))
            .unwrap_or_default()
    }

    /// The entry a token names inside `parent`, or [`Twice`] when `parent` is an object that
    /// has the key more than once: parsers disagree on which copy counts (serde_json keeps the
    /// last, others the first, a log keeps both), so a field a policy checked or removed in one
    /// copy could reach a consumer through the other. Only the objects a lookup goes through
    /// are checked, at the cost of scanning all their members instead of stopping at the match.
    pub(super) fn child(
        &self,
        bytes: &[u8],
        parent: &Entry,
        token: &str,
    ) -> Result<Option<&Entry>, Twice> {
        match parent.kind {
            Kind::Scalar => Ok(None),
            Kind::Array => Ok(array_index(token).and_then(|i| self.children(parent).get(i))),
            Kind::Object => {
                // No key is that long, and a longer token could pass for a marker.
                if token.len() >= MAX_INDEXED_LEN {
                    return Ok(None);
                }
                let mut found = None;
                for entry in self.children(parent) {
                    if self.key_is(bytes, entry, token) {
                        if found.is_some() {
                            return Err(Twice);
                        }
                        found = Some(entry);
                    }
                }
                Ok(found)
            }
        }
    }

    /// Whether `entry`'s key is `token`, which is shorter than [`MAX_INDEXED_LEN`].
    #[inline]
    pub(super) fn key_is(&self, bytes: &[u8], entry: &Entry, token: &str) -> bool {
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

    pub(super) fn owned_key(&self, i: u32) -> Option<&str> {
        self.owned_keys.get(i as usize).map(|key| &**key)
    }

    /// What makes two keys the same key: whether it is text, and its text or encoding.
    pub(super) fn key_identity<'a>(&'a self, bytes: &'a [u8], entry: &Entry) -> (bool, &'a [u8]) {
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
    pub(super) fn value(
        &self,
        format: Format,
        bytes: &[u8],
        entry: &Entry,
    ) -> Result<FieldValue, FieldError> {
        Ok(match entry.kind {
            Kind::Array => FieldValue::Array(entry.count),
            Kind::Object => {
                if let Some(key) = self.duplicate_in(bytes, self.children(entry)) {
                    return Err(FieldError::Malformed(twice_message(key)));
                }
                FieldValue::Object(entry.count)
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
}
