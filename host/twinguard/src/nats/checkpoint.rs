//! A partition's state: what the runtime's journal reports while the partition's messages are
//! judged, kept whole in memory and written to the cluster with the stream position it
//! reflects.
//!
//! The journal is told nothing about partitions: a partition's worker judges its messages one
//! at a time, on a thread where it has set its [`Mirror`] as the current one, and every change
//! the evaluation makes lands in that mirror. A change made with no mirror set (policy-wide
//! `global-*` state, which belongs to no device and so to no partition) is counted, not kept.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Runtime, Scope, StateChange, StateJournal};

/// Which state an entry is: a policy's for one device, or a device's kept last value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    /// 0: a policy's per-device state; 1: a last forwarded value (`keep-last`).
    kind: u8,
    policy: String,
    device: String,
    key: String,
}

impl Key {
    fn change<'a>(&'a self, value: Option<&'a [u8]>) -> StateChange<'a> {
        let scope = match self.kind {
            0 => Scope::Device {
                policy: &self.policy,
                device: &self.device,
            },
            _ => Scope::LastValue {
                device: &self.device,
            },
        };
        StateChange {
            scope,
            key: &self.key,
            value,
        }
    }
}

/// A partition's whole per-device state, as of the last message judged.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    entries: HashMap<Key, Vec<u8>>,
}

impl Mirror {
    fn apply(&mut self, key: Key, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.entries.insert(key, v.to_vec());
            }
            None => {
                self.entries.remove(&key);
            }
        }
    }

    /// Puts these entries into `runtime` (before the partition's first message is judged).
    pub(crate) fn restore_into(&self, runtime: &Runtime) {
        for (key, value) in &self.entries {
            runtime.restore_state(key.change(Some(value)));
        }
    }

    /// Removes these entries from `runtime`: the partition went to another instance, which
    /// will change them; a stale copy here must not be judged with if it comes back.
    pub(crate) fn forget_in(&self, runtime: &Runtime) {
        for key in self.entries.keys() {
            runtime.restore_state(key.change(None));
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Mutex<Mirror>>>> = const { RefCell::new(None) };
}

/// Runs `f` (a judgement) with `mirror` receiving every state change it makes on this thread.
pub(crate) fn judged_into<R>(mirror: &Arc<Mutex<Mirror>>, f: impl FnOnce() -> R) -> R {
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(mirror)));
    let _unset = Unset;
    f()
}

/// The runtime's [`StateJournal`] when `serve` reads from NATS: each change goes to the
/// partition whose message is being judged (see the module documentation). Build the runtime
/// with it ([`RuntimeBuilder::journal`](crate::RuntimeBuilder::journal)) and hand the same
/// journal to [`NatsFront::new`](super::NatsFront::new).
#[derive(Debug, Default)]
pub struct PartitionJournal {
    unplaced: AtomicU64,
}

impl PartitionJournal {
    /// A journal with nothing recorded.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Changes that belonged to no partition (policy-wide state): kept in this instance's
    /// memory only.
    pub fn unplaced(&self) -> u64 {
        self.unplaced.load(Ordering::Relaxed)
    }
}

impl StateJournal for PartitionJournal {
    fn record(&self, change: StateChange<'_>) {
        let (kind, policy, device) = match change.scope {
            Scope::Device { policy, device } => (0, policy, device),
            Scope::LastValue { device } => (1, "", device),
            Scope::Global { policy } => {
                if self.unplaced.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(policy, "policy-wide state (global-*) is kept in this instance's memory only: it belongs to no device, so to no partition, and is not checkpointed to the cluster");
                }
                return;
            }
        };
        CURRENT.with(|c| match c.borrow().as_ref() {
            Some(mirror) => mirror.lock().unwrap_or_else(PoisonError::into_inner).apply(
                Key {
                    kind,
                    policy: policy.to_owned(),
                    device: device.to_owned(),
                    key: change.key.to_owned(),
                },
                change.value,
            ),
            None => {
                self.unplaced.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

const MAGIC: &[u8; 4] = b"TGCP";
const VERSION: u8 = 1;
/// A checkpoint key's format when the state is held by an object (see [`Head`]).
const VERSION_BODY: u8 = 2;

/// What a partition's checkpoint key holds: the state itself, or, when the state is larger
/// than one NATS message may be (a device minting ids grows it), the name of the object that
/// holds it in `<bucket>-checkpoint-bodies`, in [`encode`]'s format.
#[derive(Debug)]
pub(crate) enum Head {
    /// The sequence covered and the state.
    Inline(u64, Mirror),
    /// The sequence covered and the object holding the state.
    Body { seq: u64, name: String },
}

/// A checkpoint key's bytes when `name` holds the state up to `seq`.
pub(crate) fn encode_body_ref(seq: u64, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + name.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION_BODY);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// Reads a checkpoint key's bytes: the state, or where it is.
pub(crate) fn decode_head(bytes: &[u8]) -> Result<Head, String> {
    let mut r = Reader::new(bytes)?;
    match r.version {
        VERSION_BODY => {
            let seq = r.u64()?;
            let name = r.text()?;
            r.end()?;
            Ok(Head::Body { seq, name })
        }
        _ => r.state().map(|(seq, mirror)| Head::Inline(seq, mirror)),
    }
}

/// A checkpoint's bytes: magic, version, the stream sequence of the last message it covers,
/// then each entry as kind and four length-prefixed fields, in key order (so the same state
/// gives the same bytes).
pub(crate) fn encode(seq: u64, mirror: &Mirror) -> Vec<u8> {
    let mut keys: Vec<&Key> = mirror.entries.keys().collect();
    keys.sort();
    let mut out = Vec::with_capacity(16 + mirror.entries.len() * 48);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    for key in keys {
        out.push(key.kind);
        field(&mut out, key.policy.as_bytes());
        field(&mut out, key.device.as_bytes());
        field(&mut out, key.key.as_bytes());
        field(&mut out, &mirror.entries[key]);
    }
    out
}

/// Reads [`encode`]'s bytes back: the stream sequence and the state. The error says where
/// the bytes stop making sense.
pub(crate) fn decode(bytes: &[u8]) -> Result<(u64, Mirror), String> {
    Reader::new(bytes)?.state()
}

/// Reads a checkpoint's fields in order, after its header; an error names the byte where the
/// bytes stop making sense.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    version: u8,
}

impl<'a> Reader<'a> {
    /// Past the magic and a version this build reads.
    fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let mut r = Self {
            bytes,
            at: 0,
            version: 0,
        };
        if r.take(4)? != MAGIC {
            return Err("not a twinguard checkpoint (no TGCP header)".into());
        }
        r.version = r.byte()?;
        if r.version != VERSION && r.version != VERSION_BODY {
            return Err(format!(
                "checkpoint format {}, this build reads {VERSION} and {VERSION_BODY}",
                r.version
            ));
        }
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let taken = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end));
        let Some(taken) = taken else {
            return Err(format!(
                "truncated at byte {} (wanted {n} more of {})",
                self.at,
                self.bytes.len()
            ));
        };
        self.at += n;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    fn field(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().unwrap_or([0; 4]));
        self.take(n as usize)
    }

    fn text(&mut self) -> Result<String, String> {
        let at = self.at;
        String::from_utf8(self.field()?.to_vec())
            .map_err(|_| format!("a name at byte {at} is not UTF-8"))
    }

    /// Nothing may follow the last field.
    fn end(&self) -> Result<(), String> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the last field")),
        }
    }

    /// The rest of an inline checkpoint: the sequence and the state.
    fn state(mut self) -> Result<(u64, Mirror), String> {
        if self.version != VERSION {
            return Err(format!(
                "checkpoint format {} names an object; the state itself was expected",
                self.version
            ));
        }
        let seq = self.u64()?;
        let count = self.u64()?;
        let mut mirror = Mirror::default();
        for _ in 0..count {
            let kind = self.byte()?;
            if kind > 1 {
                return Err(format!("unknown entry kind {kind} at byte {}", self.at - 1));
            }
            let key = Key {
                kind,
                policy: self.text()?,
                device: self.text()?,
                key: self.text()?,
            };
            let value = self.field()?.to_vec();
            mirror.entries.insert(key, value);
        }
        self.end()?;
        Ok((seq, mirror))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror() -> Mirror {
        let mut m = Mirror::default();
        let journal = PartitionJournal::default();
        let shared = Arc::new(Mutex::new(Mirror::default()));
        judged_into(&shared, || {
            journal.record(StateChange {
                scope: Scope::Device {
                    policy: "replay",
                    device: "d7",
                },
                key: "seq",
                value: Some(&[1, 2, 3]),
            });
            journal.record(StateChange {
                scope: Scope::LastValue { device: "d7" },
                key: "/temp_c",
                value: Some(b"\x01"),
            });
            journal.record(StateChange {
                scope: Scope::Device {
                    policy: "rate",
                    device: "d8",
                },
                key: "bucket",
                value: Some(b""),
            });
            journal.record(StateChange {
                scope: Scope::Device {
                    policy: "rate",
                    device: "d8",
                },
                key: "gone",
                value: Some(b"x"),
            });
            journal.record(StateChange {
                scope: Scope::Device {
                    policy: "rate",
                    device: "d8",
                },
                key: "gone",
                value: None,
            });
        });
        // Outside a judgement, and policy-wide: neither lands in a partition.
        journal.record(StateChange {
            scope: Scope::Device {
                policy: "replay",
                device: "d9",
            },
            key: "seq",
            value: Some(&[9]),
        });
        journal.record(StateChange {
            scope: Scope::Global { policy: "badge" },
            key: "k",
            value: Some(&[9]),
        });
        assert_eq!(journal.unplaced(), 2);
        std::mem::swap(&mut m, &mut shared.lock().unwrap());
        m
    }

    #[test]
    fn a_checkpoint_reads_back_as_written_and_the_same_state_gives_the_same_bytes() {
        let m = mirror();
        assert_eq!(m.len(), 3);
        let bytes = encode(41, &m);
        let (seq, back) = decode(&bytes).unwrap();
        assert_eq!(seq, 41);
        assert_eq!(back.entries, m.entries);
        assert_eq!(encode(41, &back), bytes);
    }

    #[test]
    fn damaged_checkpoints_are_refused_with_where() {
        let bytes = encode(7, &mirror());
        for cut in [0, 3, 5, 12, 20, bytes.len() - 1] {
            let e = decode(&bytes[..cut]).unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("TGCP"),
                "cut {cut}: {e}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long).unwrap_err().contains("1 bytes after"));
        let mut version = bytes.clone();
        version[4] = 9;
        assert!(decode(&version).unwrap_err().contains("format 9"));
        let mut kind = bytes;
        kind[21] = 7;
        assert!(decode(&kind).unwrap_err().contains("unknown entry kind 7"));
    }

    #[test]
    fn a_checkpoint_key_holds_the_state_or_names_the_object_that_does() {
        let m = mirror();
        match decode_head(&encode(41, &m)).unwrap() {
            Head::Inline(41, back) => assert_eq!(back.entries, m.entries),
            other => panic!("{other:?}"),
        }
        let head = encode_body_ref(9_000_000_000, "partition.3.9000000000.a.17");
        match decode_head(&head).unwrap() {
            Head::Body { seq, name } => {
                assert_eq!(seq, 9_000_000_000);
                assert_eq!(name, "partition.3.9000000000.a.17");
            }
            other => panic!("{other:?}"),
        }
        for cut in [6, 14, head.len() - 1] {
            let e = decode_head(&head[..cut]).unwrap_err();
            assert!(e.contains("truncated at byte"), "cut {cut}: {e}");
        }
        let mut long = head;
        long.push(b'x');
        assert_eq!(
            decode_head(&long).unwrap_err(),
            "1 bytes after the last field"
        );
        // A key naming an object is not a state.
        assert!(decode(&long[..long.len() - 1])
            .unwrap_err()
            .contains("names an object"));
    }
}
