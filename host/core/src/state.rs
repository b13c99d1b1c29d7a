//! Per-device state behind the guest's `state-get`/`state-set`, namespaced by policy and
//! device, with a byte budget per device; and the policy-wide namespace behind `global-*`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

/// One change to what the runtime remembers between messages, as a [`StateJournal`] sees it
/// and as [`Runtime::restore_state`](crate::Runtime::restore_state) takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<'a> {
    /// Whose state.
    pub scope: Scope<'a>,
    /// The key: a policy's state key, or for [`Scope::LastValue`] the field's JSON Pointer.
    pub key: &'a str,
    /// The new value; `None` when the key was removed. For [`Scope::LastValue`], the core's
    /// own encoding of the field's value: store it as bytes and hand it back unchanged.
    pub value: Option<&'a [u8]>,
}

/// Whose state a [`StateChange`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    /// A policy's state for one device (`state-set`, `state-delete`).
    Device {
        /// The policy's configured name.
        policy: &'a str,
        /// The device.
        device: &'a str,
    },
    /// A policy's policy-wide state (`global-set`, `global-swap`, `global-delete`).
    Global {
        /// The policy's configured name.
        policy: &'a str,
    },
    /// The last forwarded value of a field some policy keeps (`keep-last`), shared by every
    /// policy.
    LastValue {
        /// The device.
        device: &'a str,
    },
}

/// Where the runtime reports every change to per-device, policy-wide and last-value state,
/// so an embedder can keep it across restarts (twinguard's `store` feature keeps it in
/// SQLite). Hand it to [`RuntimeBuilder::journal`](crate::RuntimeBuilder::journal).
///
/// `record` is called on the evaluating thread, while the changed entry is locked: for any
/// one key, calls come in the order the changes took effect. It must therefore be quick and
/// must not call back into the runtime; queue the change and write it elsewhere.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use twinguard_core::{StateChange, StateJournal};
///
/// #[derive(Default)]
/// struct Count(Mutex<u64>);
/// impl StateJournal for Count {
///     fn record(&self, _change: StateChange<'_>) {
///         *self.0.lock().unwrap() += 1;
///     }
/// }
/// let journal: Arc<dyn StateJournal> = Arc::new(Count::default());
/// # let _ = journal;
/// ```
pub trait StateJournal: Send + Sync {
    /// Called once per change, in order per key (see the trait's documentation).
    fn record(&self, change: StateChange<'_>);
}

/// A store's journal and the policy name its changes are reported under.
#[derive(Clone)]
struct Journal {
    sink: Arc<dyn StateJournal>,
    policy: Arc<str>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The state of one policy for all devices. Sharded (dashmap), so threads evaluating
/// different devices do not contend; it outlives instances, and is keyed by policy name so a
/// reload of the same policy keeps it.
#[derive(Debug, Default)]
pub(crate) struct StateStore {
    devices: DashMap<String, DeviceState>,
    /// Policy-wide state. One lock per policy, taken only by the policy's `global-*` calls:
    /// a compare-and-swap must see and replace a value in one step, whichever worker runs it.
    global: Mutex<DeviceState>,
    /// Where changes are reported, for the policy's own store (never a shadow's or a probe's).
    journal: Option<Journal>,
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
    /// An empty store whose changes are reported to `sink` under `policy`.
    pub fn journaled(policy: &str, sink: Arc<dyn StateJournal>) -> Self {
        Self {
            journal: Some(Journal {
                sink,
                policy: policy.into(),
            }),
            ..Self::default()
        }
    }

    fn note<'a>(
        &'a self,
        scope: impl FnOnce(&'a str) -> Scope<'a>,
        key: &str,
        value: Option<&[u8]>,
    ) {
        if let Some(j) = &self.journal {
            j.sink.record(StateChange {
                scope: scope(&j.policy),
                key,
                value,
            });
        }
    }

    /// Puts back a change read from a journal: neither reported again nor held to the limits
    /// (they bound what policies write; a restart must not lose what they wrote before).
    pub fn restore(&self, device: Option<&str>, key: &str, value: Option<&[u8]>) {
        let put = |state: &mut DeviceState| {
            let _ = state.put(key, value.map(<[u8]>::to_vec), u64::MAX);
        };
        match device {
            Some(device) => put(&mut self.devices.entry(device.to_owned()).or_default()),
            None => put(&mut self.global_lock()),
        }
    }

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
        // Under the device's entry lock: the journal sees changes to a key in their order.
        self.note(|policy| Scope::Device { policy, device }, key, Some(&value));
        state.bytes = new_total;
        state.insert(key, value);
        Ok(())
    }

    pub fn delete(&self, device: &str, key: &str) {
        if let Some(mut state) = self.devices.get_mut(device) {
            if let Some(v) = state.entries.remove(key) {
                state.bytes -= cost(key, &v);
                self.note(|policy| Scope::Device { policy, device }, key, None);
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
        self.note_global(&state, key);
        Ok(true)
    }

    /// Stores (or with `None` removes) policy-wide state under `key`, within `limit` bytes.
    pub fn global_put(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<(), StateRefusal> {
        let mut state = self.global_lock();
        state.put(key, value, limit)?;
        self.note_global(&state, key);
        Ok(())
    }

    /// Reports the policy-wide entry `key` as `state` now holds it; called under its lock.
    fn note_global(&self, state: &DeviceState, key: &str) {
        if self.journal.is_some() {
            let value = state.entries.get(key).map(Vec::as_slice);
            self.note(|policy| Scope::Global { policy }, key, value);
        }
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
        self.insert(key, value);
        Ok(())
    }

    /// Stores `value` under `key`; a key already there keeps its allocation (a policy that
    /// rewrites the same keys on every message copies no key).
    fn insert(&mut self, key: &str, value: Vec<u8>) {
        match self.entries.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                self.entries.insert(key.to_owned(), value);
            }
        }
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

    /// One recorded change: scope as text, key, value.
    type Recorded = (String, String, Option<Vec<u8>>);

    /// Keeps what it is told, as owned text.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Recorded>>);

    impl StateJournal for Recorder {
        fn record(&self, c: StateChange<'_>) {
            let scope = match c.scope {
                Scope::Device { policy, device } => format!("{policy}/{device}"),
                Scope::Global { policy } => format!("{policy}/*"),
                Scope::LastValue { device } => format!("last/{device}"),
            };
            let mut log = self.0.lock().unwrap();
            log.push((scope, c.key.to_owned(), c.value.map(<[u8]>::to_vec)));
        }
    }

    #[test]
    fn the_journal_sees_every_change_that_took_effect_and_restoring_replays_it() {
        let rec = Arc::new(Recorder::default());
        let s = StateStore::journaled("p", rec.clone());
        s.set("d", "k", vec![1], TEN).unwrap();
        // Refused writes change nothing, so they are not reported.
        assert!(s.set("d", "k", vec![0; 11], TEN).is_err());
        s.set("d", "k", vec![2], TEN).unwrap();
        s.set("e", "j", vec![3], TEN).unwrap();
        s.delete("e", "j");
        // Deleting what is not there changes nothing.
        s.delete("e", "j");
        s.global_put("g", Some(vec![4]), 1 << 10).unwrap();
        assert_eq!(s.global_swap("g", Some(&[9]), None, 1 << 10), Ok(false));
        assert_eq!(
            s.global_swap("g", Some(&[4]), Some(vec![5]), 1 << 10),
            Ok(true)
        );
        let log = rec.0.lock().unwrap().clone();
        let t = |scope: &str, key: &str, v: Option<u8>| {
            (scope.to_owned(), key.to_owned(), v.map(|b| vec![b]))
        };
        assert_eq!(
            log,
            vec![
                t("p/d", "k", Some(1)),
                t("p/d", "k", Some(2)),
                t("p/e", "j", Some(3)),
                t("p/e", "j", None),
                t("p/*", "g", Some(4)),
                t("p/*", "g", Some(5)),
            ]
        );
        // Replaying the journal into an empty store gives the same state, without reporting.
        let rec2 = Arc::new(Recorder::default());
        let r = StateStore::journaled("p", rec2.clone());
        for (scope, key, value) in &log {
            let device = scope.strip_prefix("p/").filter(|d| *d != "*");
            r.restore(device, key, value.as_deref());
        }
        assert!(rec2.0.lock().unwrap().is_empty());
        assert_eq!(r.get("d", "k"), Some(vec![2]));
        assert_eq!(r.get("e", "j"), None);
        assert_eq!(r.global_get("g"), Some(vec![5]));
        assert_eq!(r.bytes("d"), s.bytes("d"));
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
