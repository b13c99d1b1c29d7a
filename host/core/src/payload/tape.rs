//! The index of a payload that field lookups walk: a flat "tape" recording where every value
//! lies, in which each container's children sit side by side, so that finding a member is a scan
//! of a short slice and finding an element is an index. One validating pass of the JSON or CBOR
//! scanner builds it (through [`Builder`]); a lookup then touches the payload again only to
//! compare keys and to decode the scalar it ends on.

use super::pointer::array_index;
use super::{cbor, json, FieldError, FieldRef, FieldValue, Format};

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

/// [`small`] for what a scan records (offsets, indexes, counts) in a payload it accepted,
/// which is shorter than [`MAX_INDEXED_LEN`] (checked before the scan): they fit, and the cast
/// saves `small`'s check on every value.
#[inline(always)]
pub(super) fn offset(n: usize) -> u32 {
    n as u32
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
    /// The builder's stack, empty: kept with the tape to be reused with its entries.
    pending: Vec<Entry>,
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
    /// A container's children: `count` entries from `first`. While the JSON scanner has the
    /// container open, `first` holds instead the index in `Builder::pending` of the container
    /// around it (see `json::tape`).
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
            start: offset(start),
            end: offset(end),
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

/// Entries kept for the thread's next tape: each message builds one and drops it, and buffers
/// of a few KiB are past the allocator's per-thread cache.
struct Spare {
    entries: Vec<Entry>,
    pending: Vec<Entry>,
}

thread_local! {
    static SPARE: std::cell::Cell<Option<Spare>> = const { std::cell::Cell::new(None) };
}

/// Buffers larger than this (in entries, 28 bytes each) go back to the allocator: one huge
/// payload must not pin its index's memory to the thread.
const SPARE_MAX: usize = 4096;

/// An empty buffer for at least `want` entries, the spare one if it is there.
fn spare_or_new(spare: Option<Vec<Entry>>, want: usize) -> Vec<Entry> {
    match spare {
        Some(mut v) => {
            v.clear();
            v.reserve(want);
            v
        }
        None => Vec::with_capacity(want),
    }
}

/// Hands a buffer back for the thread's next tape.
fn keep(entries: Vec<Entry>, pending: Vec<Entry>) {
    let fits = |v: &Vec<Entry>| v.capacity() <= SPARE_MAX;
    if fits(&entries) && fits(&pending) {
        SPARE.set(Some(Spare { entries, pending }));
    }
}

impl Builder {
    pub(super) fn new(payload_len: usize) -> Self {
        let spare = SPARE.take();
        let (entries, pending) = spare.map_or((None, None), |s| (Some(s.entries), Some(s.pending)));
        Self {
            // About one value per 8 to 16 bytes in telemetry; a guess too high costs little.
            entries: spare_or_new(entries, (payload_len / 8).clamp(4, 4096)),
            pending: spare_or_new(pending, (payload_len / 16).clamp(4, 1024)),
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
            container.first = offset(first);
            container.count = offset(count);
            container.end = offset(end);
        }
    }

    /// The tape, once the root is complete (and is the only entry pending).
    pub(super) fn finish(mut self) -> Option<Tape> {
        let root = self.pending.pop().filter(|_| self.pending.is_empty())?;
        Some(Tape {
            root,
            entries: std::mem::take(&mut self.entries),
            pending: std::mem::take(&mut self.pending),
            owned_keys: std::mem::take(&mut self.owned_keys),
            non_text_keys: std::mem::take(&mut self.non_text_keys),
            compact: self.compact,
        })
    }
}

impl Drop for Builder {
    /// A payload that failed to scan hands its buffers back too.
    fn drop(&mut self) {
        if self.entries.capacity() > 0 {
            keep(
                std::mem::take(&mut self.entries),
                std::mem::take(&mut self.pending),
            );
        }
    }
}

impl Drop for Tape {
    fn drop(&mut self) {
        keep(
            std::mem::take(&mut self.entries),
            std::mem::take(&mut self.pending),
        );
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

    /// A key two of `members` share: asked when a lookup returns an object. Up to 256 members
    /// (any telemetry object) go through a hash table on the stack: one hash per key, bytes
    /// compared only when two hashes agree, no allocation. The hash is seeded per process
    /// (foldhash), so a device cannot craft keys that collide. Larger objects are sorted:
    /// O(n log n), not the quadratic seconds a pairwise check took on 40,000 keys.
    pub(super) fn duplicate_in<'a>(
        &'a self,
        bytes: &'a [u8],
        members: &[Entry],
    ) -> Option<(bool, &'a [u8])> {
        match members.len() {
            0..=1 => None,
            2..=32 => self.duplicate_by_hash::<64>(bytes, members),
            33..=64 => self.duplicate_by_hash::<128>(bytes, members),
            65..=256 => self.duplicate_by_hash::<512>(bytes, members),
            _ => {
                let mut keys: Vec<(bool, &[u8])> = members
                    .iter()
                    .map(|m| self.key_identity(bytes, m))
                    .collect();
                keys.sort_unstable();
                keys.iter()
                    .zip(keys.iter().skip(1))
                    .find(|(a, b)| a == b)
                    .map(|(a, _)| *a)
            }
        }
    }

    /// [`duplicate_in`](Self::duplicate_in) for at most `SLOTS / 2` members (`SLOTS` a power
    /// of two of at most 2^16): open addressing, each slot the member's index + 1 in its low 16
    /// bits and its hash's high bits above.
    fn duplicate_by_hash<'a, const SLOTS: usize>(
        &'a self,
        bytes: &'a [u8],
        members: &[Entry],
    ) -> Option<(bool, &'a [u8])> {
        use std::hash::BuildHasher;
        const LOW: u64 = 0xFFFF;
        let state = foldhash::fast::RandomState::default();
        let mut slots = [0_u64; SLOTS];
        for (i, member) in members.iter().enumerate().take(SLOTS / 2) {
            let key = self.key_identity(bytes, member);
            // The bytes alone, not the tuple: hashing it costs a length prefix and a flag byte
            // more, and keys that differ only in the flag (a CBOR text and byte string with the
            // same bytes) are told apart by the comparison below.
            let hash = state.hash_one(key.1);
            let mut at = hash as usize;
            loop {
                at &= SLOTS - 1;
                let slot = slots.get_mut(at)?;
                if *slot == 0 {
                    *slot = hash & !LOW | (i as u64 + 1);
                    break;
                }
                if (*slot ^ hash) & !LOW == 0 {
                    let other = ((*slot & LOW) as usize).wrapping_sub(1);
                    let same = members
                        .get(other)
                        .is_some_and(|m| self.key_identity(bytes, m) == key);
                    if same {
                        return Some(key);
                    }
                }
                at += 1;
            }
        }
        None
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

    /// [`child`](Self::child) for several tokens in one pass over `parent`'s members: a
    /// policy's declared fields mostly end in the same object (the root), and a pass each cost
    /// more than the lookups' other work together. `lengths` has bit `n` set when some token is
    /// `n` bytes long (bit 63: 63 or more), so that most members are passed over on their key's
    /// length alone. `found[i]` (which the caller sets to `Ok(None)`) becomes what `child` would
    /// return for `tokens[i]`.
    pub(super) fn children_named<'a>(
        &'a self,
        bytes: &[u8],
        parent: &Entry,
        tokens: &[Box<str>],
        lengths: u64,
        found: &mut [Result<Option<&'a Entry>, Twice>],
    ) {
        match parent.kind {
            Kind::Scalar => {}
            Kind::Array => {
                let elements = self.children(parent);
                for (token, slot) in tokens.iter().zip(found.iter_mut()) {
                    *slot = Ok(array_index(token).and_then(|i| elements.get(i)));
                }
            }
            Kind::Object => {
                for entry in self.children(parent) {
                    let len = entry.key_len;
                    if len != KEY_OWNED && lengths & (1 << len.min(63)) == 0 {
                        continue;
                    }
                    for (token, slot) in tokens.iter().zip(found.iter_mut()) {
                        // No key is that long, and a longer token could pass for a marker.
                        if token.len() < MAX_INDEXED_LEN && self.key_is(bytes, entry, token) {
                            *slot = match slot {
                                Ok(None) => Ok(Some(entry)),
                                _ => Err(Twice),
                            };
                        }
                    }
                }
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
    pub(super) fn value<'b>(
        &self,
        format: Format,
        bytes: &'b [u8],
        entry: &Entry,
    ) -> Result<FieldRef<'b>, FieldError> {
        Ok(match entry.kind {
            Kind::Array => FieldRef::Other(FieldValue::Array(entry.count)),
            Kind::Object => {
                if let Some(key) = self.duplicate_in(bytes, self.children(entry)) {
                    return Err(FieldError::Malformed(twice_message(key)));
                }
                FieldRef::Other(FieldValue::Object(entry.count))
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
