//! The twin's last view of each device: the last forwarded value of every field some policy
//! asked for in its manifest's `keep-last`. Kept once by the runtime for every policy (not one
//! copy per policy), across reloads, and bounded: devices, fields per device and value sizes.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::payload::{FieldValue, Pointer};
use crate::state::{Scope, StateChange, StateJournal};

/// Devices whose last values are kept; a new device past it is not recorded (its policies see
/// no last value), so a flood of made-up ids cannot grow the host's memory.
pub const MAX_DEVICES: usize = 100_000;
/// Text and byte values longer than this are not kept (the field reads as unknown): a last
/// value is for comparing readings, not for holding documents.
pub const MAX_VALUE_BYTES: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct LastValues {
    devices: DashMap<String, HashMap<Arc<str>, FieldValue>>,
    journal: Option<Journal>,
}

/// Where changed values are reported.
#[derive(Clone)]
struct Journal(Arc<dyn StateJournal>);

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

impl LastValues {
    /// Empty, reporting every change to `sink`.
    pub(crate) fn journaled(sink: Option<Arc<dyn StateJournal>>) -> Self {
        Self {
            devices: DashMap::new(),
            journal: sink.map(Journal),
        }
    }

    /// Puts back a value read from a journal (`value` as [`encode`] wrote it). `false` when
    /// the bytes are not a value this build writes.
    pub(crate) fn restore(&self, device: &str, pointer: &str, value: Option<&[u8]>) -> bool {
        let mut entry = self.devices.entry(device.to_owned()).or_default();
        match value {
            None => {
                entry.remove(pointer);
                true
            }
            Some(bytes) => match decode(bytes) {
                Some(v) => {
                    entry.insert(pointer.into(), v);
                    true
                }
                None => false,
            },
        }
    }

    /// Forgets every device.
    pub(crate) fn clear(&self) {
        self.devices.clear();
    }

    /// The last values of `pointers` for `device`, in that order.
    pub(crate) fn get(&self, device: &str, pointers: &[Pointer]) -> Vec<Option<FieldValue>> {
        let Some(known) = self.devices.get(device) else {
            return vec![None; pointers.len()];
        };
        pointers
            .iter()
            .map(|p| known.get(p.text()).cloned())
            .collect()
    }

    /// Records what a forwarded message carried at each pointer; an absent field forgets the
    /// value (the twin no longer has it).
    pub(crate) fn record(
        &self,
        device: &str,
        values: impl IntoIterator<Item = (Arc<str>, Option<FieldValue>)>,
    ) {
        let mut entry = match self.devices.get_mut(device) {
            Some(entry) => entry,
            None => {
                if self.devices.len() >= MAX_DEVICES {
                    return;
                }
                self.devices.entry(device.to_owned()).or_default()
            }
        };
        for (pointer, value) in values {
            match value.filter(keepable) {
                Some(v) => {
                    // Reported only when it changed: most fields of a steady device do not.
                    let journal = self
                        .journal
                        .as_ref()
                        .filter(|_| entry.get(&pointer) != Some(&v));
                    if let Some(Journal(sink)) = journal {
                        let bytes = encode(&v);
                        sink.record(StateChange {
                            scope: Scope::LastValue { device },
                            key: &pointer,
                            value: Some(&bytes),
                        });
                    }
                    entry.insert(pointer, v);
                }
                None => {
                    if entry.remove(&pointer).is_some() {
                        if let Some(Journal(sink)) = &self.journal {
                            sink.record(StateChange {
                                scope: Scope::LastValue { device },
                                key: &pointer,
                                value: None,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// A value as a journal keeps it: a tag byte, then the value (little-endian numbers, UTF-8
/// text). The tags are a stored format: never renumber one.
pub(crate) fn encode(value: &FieldValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    match value {
        FieldValue::Null => out.push(0),
        FieldValue::Bool(b) => out.extend([1, u8::from(*b)]),
        FieldValue::Integer(i) => {
            out.push(2);
            out.extend(i.to_le_bytes());
        }
        FieldValue::Float(f) => {
            out.push(3);
            out.extend(f.to_bits().to_le_bytes());
        }
        FieldValue::Text(s) => {
            out.push(4);
            out.extend(s.as_bytes());
        }
        FieldValue::Bytes(b) => {
            out.push(5);
            out.extend(b);
        }
        FieldValue::Array(n) => {
            out.push(6);
            out.extend(n.to_le_bytes());
        }
        FieldValue::Object(n) => {
            out.push(7);
            out.extend(n.to_le_bytes());
        }
    }
    out
}

/// The value [`encode`] wrote, or `None` for bytes it cannot have written.
pub(crate) fn decode(bytes: &[u8]) -> Option<FieldValue> {
    let (&tag, rest) = bytes.split_first()?;
    let u64_of = |rest: &[u8]| rest.try_into().ok().map(u64::from_le_bytes);
    let u32_of = |rest: &[u8]| rest.try_into().ok().map(u32::from_le_bytes);
    Some(match tag {
        0 if rest.is_empty() => FieldValue::Null,
        1 if rest.len() == 1 && rest[0] <= 1 => FieldValue::Bool(rest[0] == 1),
        2 => FieldValue::Integer(u64_of(rest)? as i64),
        3 => FieldValue::Float(f64::from_bits(u64_of(rest)?)),
        4 => FieldValue::Text(String::from_utf8(rest.to_vec()).ok()?),
        5 => FieldValue::Bytes(rest.to_vec()),
        6 => FieldValue::Array(u32_of(rest)?),
        7 => FieldValue::Object(u32_of(rest)?),
        _ => return None,
    })
}

fn keepable(value: &FieldValue) -> bool {
    match value {
        FieldValue::Text(s) => s.len() <= MAX_VALUE_BYTES,
        FieldValue::Bytes(b) => b.len() <= MAX_VALUE_BYTES,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_value_per_device_and_forgets_absent_or_oversized_ones() {
        let t = LastValues::default();
        let both = [
            Pointer::parse("/temp").unwrap(),
            Pointer::parse("/name").unwrap(),
        ];
        let (temp, name) = (both[0].text().clone(), both[1].text().clone());
        assert_eq!(t.get("d", &both), vec![None, None]);
        t.record(
            "d",
            [
                (temp.clone(), Some(FieldValue::Float(20.5))),
                (
                    name,
                    Some(FieldValue::Text("x".repeat(MAX_VALUE_BYTES + 1))),
                ),
            ],
        );
        assert_eq!(t.get("d", &both), vec![Some(FieldValue::Float(20.5)), None]);
        assert_eq!(t.get("e", &both), vec![None, None]);
        t.record("d", [(temp, None)]);
        assert_eq!(t.get("d", &both), vec![None, None]);
    }

    #[test]
    fn every_kind_of_value_survives_its_encoding_and_garbage_is_refused() {
        for v in [
            FieldValue::Null,
            FieldValue::Bool(true),
            FieldValue::Bool(false),
            FieldValue::Integer(-5),
            FieldValue::Integer(i64::MIN),
            FieldValue::Float(-0.25),
            FieldValue::Text("Grüße".into()),
            FieldValue::Bytes(vec![0, 255]),
            FieldValue::Array(3),
            FieldValue::Object(u32::MAX),
        ] {
            assert_eq!(decode(&encode(&v)), Some(v));
        }
        for bad in [
            &[][..],
            &[8],
            &[1, 2],
            &[2, 0],
            &[4, 0xff],
            &[0, 0],
            &[6, 1, 2, 3],
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_changed_values_are_journaled() {
        #[derive(Default)]
        struct Count(std::sync::Mutex<Vec<Option<Vec<u8>>>>);
        impl StateJournal for Count {
            fn record(&self, c: StateChange<'_>) {
                self.0.lock().unwrap().push(c.value.map(<[u8]>::to_vec));
            }
        }
        let count = Arc::new(Count::default());
        let t = LastValues::journaled(Some(count.clone()));
        let temp: Arc<str> = "/temp".into();
        for v in [1, 1, 2] {
            t.record("d", [(temp.clone(), Some(FieldValue::Integer(v)))]);
        }
        t.record("d", [(temp.clone(), None)]);
        t.record("d", [(temp, None)]);
        let seen = count.0.lock().unwrap().clone();
        let enc = |v| Some(encode(&FieldValue::Integer(v)));
        assert_eq!(seen, vec![enc(1), enc(2), None]);
        // Restored values read back; unreadable bytes are refused.
        let r = LastValues::default();
        assert!(r.restore("d", "/temp", enc(7).as_deref()));
        assert!(!r.restore("d", "/x", Some(&[99])));
        let p = Pointer::parse("/temp").unwrap();
        assert_eq!(r.get("d", &[p]), vec![Some(FieldValue::Integer(7))]);
    }
}
