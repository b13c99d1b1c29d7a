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
use super::tape::{EntryKey, Kind, Span, KEY_OWNED};
use super::Pointer;

/// Pointers one pass can look for (one bit each).
pub(super) const MAX_POINTERS: usize = 64;

/// What a pass found at a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    Absent,
    Scalar(Span),
    /// An array or object: its count is the tape's to work out (rare in declared fields).
    Container,
}

struct Frame {
    /// Pointers that match the path to this container and go on below it.
    active: u64,
    is_array: bool,
    /// The next element's index, in an array.
    next: usize,
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
        let element = top.is_array.then(|| {
            let index = top.next;
            top.next += 1;
            index
        });
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

    fn record(&mut self, ends: u64, found: Found) {
        let mut bits = ends;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(f) = self.found.get_mut(i) {
                *f = found;
            }
        }
    }
}

impl Visit for Extract<'_> {
    #[inline(always)]
    fn leaf(&mut self, key: EntryKey, kind: Kind, start: usize, end: usize) {
        let (ends, _) = self.matches(key);
        if ends != 0 {
            let found = match kind {
                Kind::Scalar => Found::Scalar(Span { start, end }),
                Kind::Array | Kind::Object => Found::Container,
            };
            self.record(ends, found);
        }
    }

    #[inline(always)]
    fn open(&mut self, key: EntryKey, kind: Kind, _start: usize) {
        let (ends, below) = self.matches(key);
        if ends != 0 {
            self.record(ends, Found::Container);
        }
        self.stack.push(Frame {
            active: below,
            is_array: kind == Kind::Array,
            next: 0,
        });
    }

    #[inline(always)]
    fn close(&mut self, _end: usize) {
        self.stack.pop();
    }

    fn owned_keys(&mut self) -> &mut Vec<Box<str>> {
        &mut self.owned
    }
}
