//! The twin's last view of each device: the last forwarded value of every field some policy
//! asked for in its manifest's `keep-last`. Kept once by the runtime for every policy (not one
//! copy per policy), across reloads, and bounded: devices, fields per device and value sizes.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use crate::payload::{FieldValue, Pointer};

/// Devices whose last values are kept; a new device past it is not recorded (its policies see
/// no last value), so a flood of made-up ids cannot grow the host's memory.
pub const MAX_DEVICES: usize = 100_000;
/// Text and byte values longer than this are not kept (the field reads as unknown): a last
/// value is for comparing readings, not for holding documents.
pub const MAX_VALUE_BYTES: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct LastValues {
    devices: DashMap<String, HashMap<Arc<str>, FieldValue>>,
}

impl LastValues {
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
                    entry.insert(pointer, v);
                }
                None => {
                    entry.remove(&pointer);
                }
            }
        }
    }
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
}
