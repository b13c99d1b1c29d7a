//! Per-device state that survives across messages.
//!
//! The host scopes every key to the current message's device and to this policy: a policy
//! cannot read another device's state, nor another policy's. The host also bounds each device's
//! state for this policy (keys and values count, see the policy's `state-bytes` limit); a
//! [`set`] over that bound stores nothing and returns [`StateError::OverLimit`].
//!
//! Only valid during `evaluate`, when there is a current device: elsewhere reads find nothing
//! and writes fail with [`StateError::NoMessage`]. Policy-wide state, shared by every device,
//! is in [`global`].
//!
//! Values are bytes ([`get`], [`set`]). Two typed layers sit on top: JSON ([`get_json`],
//! [`set_json`]) for convenience, and fixed-layout binary [`Record`]s ([`get_record`],
//! [`set_record`]) for state read and written on every message, where size and speed count.
//!
//! ```no_run
//! use twinguard_guest::state;
//!
//! let seen = state::get_json::<u64>("seen").unwrap_or(0) + 1;
//! if let Err(err) = state::set_json("seen", &seen) {
//!     twinguard_guest::log::warn(&format!("cannot count messages: {err}"));
//! }
//! ```

use std::fmt;

use crate::bindings::{host, wit};

mod record;

pub use record::{decode, encode, Reader, Record, Undecodable, Writer};

/// The value stored under `key` for the current device, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::state_get(key)
}

/// Stores `value` under `key` for the current device, replacing any previous value.
pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
    host::state_set(key, value).map_err(StateError::from)
}

/// Removes the value under `key` for the current device, if any.
pub fn delete(key: &str) {
    host::state_delete(key);
}

/// The value under `key` decoded from JSON; `None` when absent or when it does not decode as `T`
/// (for example after the policy changed the type it stores).
#[cfg(feature = "serde")]
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
    serde_json::from_slice(&get(key)?).ok()
}

/// Stores `value` under `key` encoded as JSON.
#[cfg(feature = "serde")]
pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value).map_err(|err| StateError::Encode(err.to_string()))?;
    set(key, &bytes)
}

/// The [`Record`] stored under `key` for the current device: `Ok(None)` when there is none, and
/// [`Undecodable`] when the stored bytes are not such a record (for example written by another
/// version of the policy). What to do then is the policy's call: start afresh (and log it), or
/// fail closed where lost state would switch a protection off.
pub fn get_record<R: Record>(key: &str) -> Result<Option<R>, Undecodable> {
    get(key).map(|bytes| decode(&bytes)).transpose()
}

/// Stores `record` under `key` for the current device, in its fixed layout ([`encode`]).
pub fn set_record<R: Record>(key: &str, record: &R) -> Result<(), StateError> {
    set(key, &encode(record))
}

/// Why the state could not be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// Storing it would take this device's state for this policy over the policy's
    /// `state-bytes` limit; the figure is that limit in bytes. Nothing was stored.
    OverLimit(u64),
    /// [`global`]: storing it would take the policy-wide state over the policy's
    /// `global-state-bytes` limit; the figure is that limit in bytes. Nothing was stored.
    GlobalOverLimit(u64),
    /// The policy already keeps state for as many devices as its `state-devices` limit (the
    /// figure), and this device has none yet. Nothing was stored.
    TooManyDevices(u64),
    /// [`set_json`] could not encode the value as JSON (e.g. a map with non-text keys).
    Encode(String),
    /// Called outside `evaluate`, where there is no message (and no device).
    NoMessage,
    /// [`global::update`] lost the race to other workers this many times in a row.
    Contended(u32),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OverLimit(limit) => {
                write!(
                    f,
                    "over the limit of {limit} bytes of state for this device and policy"
                )
            }
            Self::GlobalOverLimit(limit) => write!(
                f,
                "over the limit of {limit} bytes of policy-wide state for this policy"
            ),
            Self::TooManyDevices(limit) => write!(
                f,
                "this policy already keeps state for its limit of {limit} devices"
            ),
            Self::Encode(why) => write!(f, "the value cannot be encoded as JSON: {why}"),
            Self::NoMessage => f.write_str("state is only reachable while evaluating a message"),
            Self::Contended(n) => write!(
                f,
                "policy-wide state changed under {n} updates in a row; nothing was stored"
            ),
        }
    }
}

impl std::error::Error for StateError {}

impl From<wit::StateError> for StateError {
    fn from(value: wit::StateError) -> Self {
        match value {
            wit::StateError::OverLimit(limit) => Self::OverLimit(limit),
            wit::StateError::TooManyDevices(limit) => Self::TooManyDevices(limit),
            wit::StateError::NoMessage => Self::NoMessage,
        }
    }
}

/// Policy-wide state: one namespace for every device, for correlations across devices (the same
/// badge at two doors within a minute). Bounded by the policy's `global-state-bytes` limit.
///
/// Several workers may run the policy at once (each device's messages stay on one), so a
/// read-modify-write must not be a [`get`](global::get) then a [`set`](global::set): use
/// [`update`](global::update), which swaps only if nobody changed the value in between, and
/// retries (at most [`MAX_ATTEMPTS`](global::MAX_ATTEMPTS) times, then
/// [`StateError::Contended`]). Outside `evaluate` reads find nothing and writes fail with
/// [`StateError::NoMessage`].
///
/// ```no_run
/// use twinguard_guest::state::global;
///
/// // Count messages across all devices, losing no increment to another worker.
/// let total = global::update("total", |old| {
///     let n = old.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
///     Some((n + 1).to_le_bytes().to_vec())
/// });
/// if let Err(err) = total {
///     twinguard_guest::log::warn(&format!("total not counted: {err}"));
/// }
/// ```
pub mod global {
    use super::StateError;
    use crate::bindings::{host, wit};

    /// Swaps attempted by [`update`] before it gives up.
    pub const MAX_ATTEMPTS: u32 = 100;

    /// The policy-wide value under `key`, if any.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::global_get(key)
    }

    /// Stores `value` under `key`, whatever it held.
    pub fn set(key: &str, value: &[u8]) -> Result<(), StateError> {
        host::global_set(key, value).map_err(policy_wide)
    }

    /// Removes the value under `key`.
    pub fn delete(key: &str) {
        host::global_delete(key);
    }

    /// Replaces the value under `key` with `new` (`None` removes it) only if it still holds
    /// `expected` (`None`: absent). `Ok(true)` when it was replaced.
    pub fn swap(
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        host::global_swap(key, expected, new).map_err(policy_wide)
    }

    /// The host's refusal, the limit named as the policy-wide one.
    fn policy_wide(err: wit::StateError) -> StateError {
        match err {
            wit::StateError::OverLimit(limit) => StateError::GlobalOverLimit(limit),
            other => other.into(),
        }
    }

    /// Computes the new value from the current one and stores it atomically, retrying when
    /// another worker changed it in between; returns what was stored. `f` may run several
    /// times, so it must not have side effects.
    pub fn update(
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        for _ in 0..MAX_ATTEMPTS {
            let old = get(key);
            let new = f(old.as_deref());
            if swap(key, old.as_deref(), new.as_deref())? {
                return Ok(new);
            }
        }
        Err(StateError::Contended(MAX_ATTEMPTS))
    }

    /// The value under `key` decoded from JSON; `None` when absent or undecodable.
    #[cfg(feature = "serde")]
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Option<T> {
        serde_json::from_slice(&get(key)?).ok()
    }

    /// Stores `value` under `key` encoded as JSON.
    #[cfg(feature = "serde")]
    pub fn set_json<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|err| StateError::Encode(err.to_string()))?;
        set(key, &bytes)
    }
}
