//! Declared fields in one validating pass: the JSON scan that builds the tape, reporting to a
//! visitor that records only the values at the declared pointers. Nothing is recorded for the
//! other values, so a payload is validated as strictly as ever (the same scan, the same errors)
//! at the cost of the scan alone.
//!
//! Each open container carries the set of pointers (a bit mask) whose tokens match the path to
//! it; a value whose container has none is only validated. Duplicate keys: a later match of a
//! key clears what an earlier one found below it, so the last one wins, as in the tape and in
//! serde_json.

use super::json::Visit;
use super::pointer::array_index;
use super::tape::{small, EntryKey, Kind, Span, KEY_OWNED};
use super::{FieldValue, Pointer};

/// Pointers one pass can look for (one bit each).
pub(super) const MAX_POINTERS: usize = 64;

/// What a pass found at a pointer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Found {
    Absent,
    Scalar(Span),
    /// An array or object, counted as the index counts it.
    Container(FieldValue),
}

/// A member's key, to count an object's distinct members.
#[derive(Clone, Copy)]
enum KeyRef {
    Raw(u32, u32),
    Owned(u32),
}

struct Frame {
    /// Pointers that match the path to this container and go on below it.
    active: u64,
    /// Pointers that name this container (its count is worked out when it closes).
    ends: u64,
    is_array: bool,
    /// Children seen so far: the next element's index, in an array.
    next: usize,
    /// The members' keys, kept only for an object some pointer names.
    keys: Vec<KeyRef>,
}

pub(super) struct Extract<'a> {
    bytes: &'a [u8],
    pointers: &'a [Pointer],
    stack: Vec<Frame>,
    owned: Vec<Box<str>>,
    pub(super) found: Vec<Found>,
}

impl<'a> Extract<'a> {
    /// A visitor for at most [`MAX_POINTERS`] pointers (the caller checks).
    pub(super) fn new(bytes: &'a [u8], pointers: &'a [Pointer]) -> Self {
        Self {
            bytes,
            pointers,
            stack: Vec::with_capacity(8),
            owned: Vec::new(),
            found: vec![Found::Absent; pointers.len()],
        }
    }

    /// The pointers that name the value now seen (`ends`) and those that go on below it
    /// (`below`), with what earlier matches found under them cleared.
    #[inline(always)]
    fn matches(&mut self, key: EntryKey) -> (u64, u64) {
        let Some(top) = self.stack.last_mut() else {
            // The root: every pointer starts here.
            let mut ends = 0;
            let mut below = 0;
            for (i, p) in self.pointers.iter().enumerate().take(MAX_POINTERS) {
                if p.tokens.is_empty() {
                    ends |= 1 << i;
                } else {
                    below |= 1 << i;
                }
            }
            return (ends, below);
        };
        let element = top.is_array.then_some(top.next);
        top.next += 1;
        if top.ends != 0 && !top.is_array {
            top.keys.push(if key.len == KEY_OWNED {
                KeyRef::Owned(key.start)
            } else {
                KeyRef::Raw(key.start, key.len)
            });
        }
        let candidates = top.active;
        if candidates == 0 {
            return (0, 0);
        }
        let depth = self.stack.len() - 1;
        let key_text: &[u8] = match (element, key.len) {
            (Some(_), _) => &[],
            (None, KEY_OWNED) => self
                .owned
                .get(key.start as usize)
                .map_or(&[][..], |k| k.as_bytes()),
            (None, len) => {
                let start = key.start as usize;
                self.bytes
                    .get(start..start.saturating_add(len as usize))
                    .unwrap_or_default()
            }
        };
        let (mut ends, mut below) = (0, 0);
        let mut bits = candidates;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(p) = self.pointers.get(i) else {
                continue;
            };
            let Some(token) = p.tokens.get(depth) else {
                continue;
            };
            let hit = match element {
                Some(index) => array_index(token) == Some(index),
                None => token.as_bytes() == key_text,
            };
            if !hit {
                continue;
            }
            // A later duplicate key replaces what an earlier one held.
            if let Some(f) = self.found.get_mut(i) {
                *f = Found::Absent;
            }
            if p.tokens.len() == depth + 1 {
                ends |= 1 << i;
            } else {
                below |= 1 << i;
            }
        }
        (ends, below)
    }

    fn record(&mut self, ends: u64, found: &Found) {
        let mut bits = ends;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(f) = self.found.get_mut(i) {
                f.clone_from(found);
            }
        }
    }

    fn key_bytes(&self, key: KeyRef) -> &[u8] {
        match key {
            KeyRef::Raw(start, len) => {
                let start = start as usize;
                self.bytes
                    .get(start..start.saturating_add(len as usize))
                    .unwrap_or_default()
            }
            KeyRef::Owned(i) => self.owned.get(i as usize).map_or(&[], |k| k.as_bytes()),
        }
    }

    /// Distinct keys among `keys`, as a parser that keeps the last of duplicates counts them:
    /// sorted by a hash, and only keys of equal hash compared.
    fn distinct(&self, keys: &[KeyRef]) -> usize {
        if keys.len() < 2 {
            return keys.len();
        }
        let hash = |b: &[u8]| {
            b.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &x| {
                (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let mut hashed: Vec<(u64, KeyRef)> =
            keys.iter().map(|&k| (hash(self.key_bytes(k)), k)).collect();
        hashed.sort_unstable_by_key(|&(h, _)| h);
        let mut distinct = 0;
        for (i, &(h, k)) in hashed.iter().enumerate() {
            // A key counts unless an earlier key of the same hash is the same key.
            let earlier = hashed.get(..i).unwrap_or_default();
            let seen = earlier
                .iter()
                .rev()
                .take_while(|&&(eh, _)| eh == h)
                .any(|&(_, ek)| self.key_bytes(ek) == self.key_bytes(k));
            distinct += usize::from(!seen);
        }
        distinct
    }
}

impl Visit for Extract<'_> {
    #[inline(always)]
    fn leaf(&mut self, key: EntryKey, kind: Kind, start: usize, end: usize) {
        let (ends, _) = self.matches(key);
        if ends != 0 {
            let found = match kind {
                Kind::Scalar => Found::Scalar(Span { start, end }),
                Kind::Array => Found::Container(FieldValue::Array(0)),
                Kind::Object => Found::Container(FieldValue::Object(0)),
            };
            self.record(ends, &found);
        }
    }

    #[inline(always)]
    fn open(&mut self, key: EntryKey, kind: Kind, _start: usize) {
        let (ends, below) = self.matches(key);
        self.stack.push(Frame {
            active: below,
            ends,
            is_array: kind == Kind::Array,
            next: 0,
            keys: Vec::new(),
        });
    }

    #[inline(always)]
    fn close(&mut self, _end: usize) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if frame.ends != 0 {
            let value = if frame.is_array {
                FieldValue::Array(small(frame.next))
            } else {
                FieldValue::Object(small(self.distinct(&frame.keys)))
            };
            self.record(frame.ends, &Found::Container(value));
        }
    }

    fn owned_keys(&mut self) -> &mut Vec<Box<str>> {
        &mut self.owned
    }
}
