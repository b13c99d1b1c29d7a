//! Per-device state behind the guest's `state-get`/`state-set`, namespaced by policy and
//! device, with a byte budget per device.

use std::collections::HashMap;

use dashmap::DashMap;

/// The state of one policy for all devices. Sharded (dashmap), so threads evaluating
/// different devices do not contend; it outlives instances, and is keyed by policy name so a
/// reload of the same policy keeps it.
#[derive(Debug, Default)]
pub(crate) struct StateStore {
    devices: DashMap<String, DeviceState>,
}

#[derive(Debug, Default)]
struct DeviceState {
    entries: HashMap<String, Vec<u8>>,
    bytes: u64,
}

/// The bounds of one policy's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateLimits {
    /// Bytes per device, keys plus values.
    pub bytes: u64,
    /// Devices with state.
    pub devices: u64,
}

/// Why a write was refused; the figure is the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateRefusal {
    OverLimit(u64),
    TooManyDevices(u64),
}

fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl StateStore {
    pub fn get(&self, device: &str, key: &str) -> Option<Vec<u8>> {
        self.devices.get(device)?.entries.get(key).cloned()
    }

    /// Stores `value`, unless the device's total would exceed `limits.bytes` or the device is
    /// new and the store already holds `limits.devices` devices.
    pub fn set(
        &self,
        device: &str,
        key: &str,
        value: Vec<u8>,
        limits: StateLimits,
    ) -> Result<(), StateRefusal> {
        let mut state = match self.devices.get_mut(device) {
            Some(state) => state,
            None => {
                // len() visits every shard; only a device's first write pays for it.
                if self.devices.len() as u64 >= limits.devices {
                    return Err(StateRefusal::TooManyDevices(limits.devices));
                }
                self.devices.entry(device.to_string()).or_default()
            }
        };
        let old = state.entries.get(key).map_or(0, |v| cost(key, v));
        let new_total = state.bytes - old + cost(key, &value);
        if new_total > limits.bytes {
            return Err(StateRefusal::OverLimit(limits.bytes));
        }
        state.bytes = new_total;
        state.entries.insert(key.to_string(), value);
        Ok(())
    }

    pub fn delete(&self, device: &str, key: &str) {
        if let Some(mut state) = self.devices.get_mut(device) {
            if let Some(v) = state.entries.remove(key) {
                state.bytes -= cost(key, &v);
            }
        }
    }

    /// Bytes held for `device` (keys plus values).
    #[cfg(test)]
    pub fn bytes(&self, device: &str) -> u64 {
        self.devices.get(device).map_or(0, |s| s.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: StateLimits = StateLimits {
        bytes: 10,
        devices: 2,
    };

    #[test]
    fn budget_counts_keys_and_values_and_replacements() {
        let s = StateStore::default();
        s.set("d", "k", vec![0; 6], TEN).unwrap();
        assert_eq!(s.bytes("d"), 7);
        // Replacing frees the old value first.
        s.set("d", "k", vec![0; 9], TEN).unwrap();
        assert_eq!(
            s.set("d", "k2", vec![0; 1], TEN),
            Err(StateRefusal::OverLimit(10))
        );
        assert_eq!(s.get("d", "k").unwrap().len(), 9);
        // Devices have separate budgets.
        s.set("e", "k", vec![0; 9], TEN).unwrap();
        // A third device is refused, known ones still write.
        assert_eq!(
            s.set("f", "k", vec![0], TEN),
            Err(StateRefusal::TooManyDevices(2))
        );
        assert!(s.get("f", "k").is_none());
        s.set("e", "k", vec![1], TEN).unwrap();
        s.delete("d", "k");
        assert_eq!(s.bytes("d"), 0);
        assert!(s.get("d", "k").is_none());
    }
}
