//! Per-device state that survives across messages.
//!
//! The host scopes every key to the current message's device and to this policy: a policy
//! cannot read another device's state, nor another policy's. The host also bounds each device's
//! state for this policy (keys and values count, see the policy's `state-bytes` limit); a
//! [`set`] over that bound stores nothing and returns [`StateError::OverLimit`].
//!
//! Only valid during `evaluate`, when there is a current device.
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
    /// The policy already keeps state for as many devices as its `state-devices` limit (the
    /// figure), and this device has none yet. Nothing was stored.
    TooManyDevices(u64),
    /// [`set_json`] could not encode the value as JSON (e.g. a map with non-text keys).
    Encode(String),
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
            Self::TooManyDevices(limit) => write!(
                f,
                "this policy already keeps state for its limit of {limit} devices"
            ),
            Self::Encode(why) => write!(f, "the value cannot be encoded as JSON: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<wit::StateError> for StateError {
    fn from(value: wit::StateError) -> Self {
        match value {
            wit::StateError::OverLimit(limit) => Self::OverLimit(limit),
            wit::StateError::TooManyDevices(limit) => Self::TooManyDevices(limit),
        }
    }
}
