//! Per-device state behind the guest's `state-get`/`state-set`, namespaced by policy and
//! device, with a byte budget per device; and the policy-wide namespace behind `global-*`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use dashmap::DashMap;

/// The state of one policy for all devices. Sharded (dashmap), so threads evaluating
/// different devices do not contend; it outlives instances, and is keyed by policy name so a
/// reload of the same policy keeps it.
#[derive(Debug, Default)]
pub(crate) struct StateStore {
    devices: DashMap<String, DeviceState>,
    /// Policy-wide state. One lock per policy, taken only by the policy's `global-*` calls:
    /// a compare-and-swap must see and replace a value in one step, whichever worker runs it.
    global: Mutex<DeviceState>,
}

#[derive(Debug, Default)]
struct DeviceState {
    entries: HashMap<String, Vec<u8>>,
    bytes: u64,
}

/// The bounds of one policy's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateLimits {
    /// Bytes per device: keys plus values plus [`ENTRY_OVERHEAD`] per entry.
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

/// What an entry costs the host beyond its key and value bytes: the map slot (a `String` and
/// a `Vec`, 48 bytes, at the map's load factor), two heap allocations' headers and rounding.
/// Measured: 27,000 one-byte entries took ~2.4 MB, ~89 bytes each; 96 is charged so that
/// `state-bytes` bounds what a device really costs, not only what the guest wrote.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
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

    /// Policy-wide state under `key`.
    pub fn global_get(&self, key: &str) -> Option<Vec<u8>> {
        self.global_lock().entries.get(key).cloned()
    }

    /// Replaces policy-wide state under `key` if it holds `expected` (`None`: absent); `new` of
    /// `None` removes it. `Ok(false)` when it held something else; refused, changing nothing,
    /// when the namespace would exceed `limit` bytes.
    pub fn global_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<bool, StateRefusal> {
        let mut state = self.global_lock();
        if state.entries.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        state.put(key, new, limit)?;
        Ok(true)
    }

    /// Stores (or with `None` removes) policy-wide state under `key`, within `limit` bytes.
    pub fn global_put(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<(), StateRefusal> {
        self.global_lock().put(key, value, limit)
    }

    fn global_lock(&self) -> std::sync::MutexGuard<'_, DeviceState> {
        // Nothing panics while holding it; a poisoned lock still holds consistent entries.
        self.global.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes charged for `device` (keys plus values plus the overhead of each entry).
    #[cfg(test)]
    pub fn bytes(&self, device: &str) -> u64 {
        self.devices.get(device).map_or(0, |s| s.bytes)
    }
}

impl DeviceState {
    fn put(&mut self, key: &str, value: Option<Vec<u8>>, limit: u64) -> Result<(), StateRefusal> {
        let old = self.entries.get(key).map_or(0, |v| cost(key, v));
        let Some(value) = value else {
            if self.entries.remove(key).is_some() {
                self.bytes -= old;
            }
            return Ok(());
        };
        let total = self.bytes - old + cost(key, &value);
        if total > limit {
            return Err(StateRefusal::OverLimit(limit));
        }
        self.bytes = total;
        self.entries.insert(key.to_string(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for ten bytes of keys and values in one entry.
    const TEN: StateLimits = StateLimits {
        bytes: 10 + ENTRY_OVERHEAD,
        devices: 2,
    };

    #[test]
    fn budget_counts_keys_values_entries_and_replacements() {
        let s = StateStore::default();
        s.set("d", "k", vec![0; 6], TEN).unwrap();
        assert_eq!(s.bytes("d"), 7 + ENTRY_OVERHEAD);
        // Replacing frees the old value first.
        s.set("d", "k", vec![0; 9], TEN).unwrap();
        // A second entry costs its overhead too, even with an empty key and value.
        assert_eq!(
            s.set("d", "", Vec::new(), TEN),
            Err(StateRefusal::OverLimit(TEN.bytes))
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

    #[test]
    fn global_swap_replaces_only_what_it_expects_within_the_budget() {
        let s = StateStore::default();
        let limit = 10 + ENTRY_OVERHEAD;
        assert_eq!(s.global_swap("n", None, Some(vec![1]), limit), Ok(true));
        // Another writer got there first: nothing changes.
        assert_eq!(s.global_swap("n", None, Some(vec![9]), limit), Ok(false));
        assert_eq!(
            s.global_swap("n", Some(&[2]), Some(vec![9]), limit),
            Ok(false)
        );
        assert_eq!(s.global_get("n"), Some(vec![1]));
        assert_eq!(
            s.global_swap("n", Some(&[1]), Some(vec![2]), limit),
            Ok(true)
        );
        assert_eq!(
            s.global_swap("n", Some(&[2]), Some(vec![0; 11]), limit),
            Err(StateRefusal::OverLimit(limit))
        );
        assert_eq!(s.global_get("n"), Some(vec![2]));
        // A second key does not fit beside the first; removing frees the budget.
        assert_eq!(
            s.global_put("m", Some(vec![]), limit),
            Err(StateRefusal::OverLimit(limit))
        );
        assert_eq!(s.global_swap("n", Some(&[2]), None, limit), Ok(true));
        assert_eq!(s.global_put("m", Some(vec![0; 9]), limit), Ok(()));
        assert_eq!(s.global_get("n"), None);
    }

    #[test]
    fn concurrent_swaps_lose_no_update() {
        let s = std::sync::Arc::new(StateStore::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        loop {
                            let old = s.global_get("n");
                            let n = old
                                .as_deref()
                                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                            let new = (n + 1).to_le_bytes().to_vec();
                            if s.global_swap("n", old.as_deref(), Some(new), 1 << 20)
                                .unwrap()
                            {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = u64::from_le_bytes(s.global_get("n").unwrap().try_into().unwrap());
        assert_eq!(n, 2000);
    }
}
