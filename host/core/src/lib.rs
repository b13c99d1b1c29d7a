//! twinguard-core: the evaluation core of twinguard, a policy runtime for the digital-twin
//! data path. It holds no storage, transport or CLI: the `twinguard` crate adds those services
//! behind cargo features and re-exports everything here, so integrators usually depend on it.
//!
//! Every device message is judged by **policies**, sandboxed WebAssembly components written
//! against one WIT contract (`wit/policy.wit`, package `twinguard:policy@0.2.0`). Each policy
//! answers **allow**, **redact** (fields removed or masked by JSON Pointer, applied by the host
//! to JSON and CBOR), **quarantine** (held back, with a reason) or **alert** (forwarded, with a
//! security event), under its own limits: fuel, wall-clock deadline, memory, state size and
//! decision size. A policy that breaks a limit, traps or panics *faults*: the message gets the
//! policy's on-fault action and an alert names the policy, its version and the cause; the host
//! and every other policy go on.
//!
//! # Core concepts
//!
//! Described by how long each lives:
//!
//! - [`Runtime`]: one per process. Owns the wasmtime engine (pooling allocator, fuel and epoch
//!   interruption), the epoch ticker thread, and the active [`PolicySet`]. Cheap to clone.
//! - [`Policy`]: compiled once from a component file and shared by every thread; identified by
//!   its name and its version (the SHA-256 of the file). It keeps a lock-free pool of idle
//!   instances (`reuse` isolation) or instantiates per message (`fresh`).
//! - [`PolicySet`]: one immutable generation of policies and routes, swapped atomically by
//!   [`Runtime::reload`]. A message is evaluated entirely within one generation.
//! - Evaluation, per message: [`Runtime::evaluate`] routes the topic to a chain, runs it, and
//!   returns an [`Outcome`]: the final [`Action`], the payload to forward, all alerts, and a
//!   per-policy trace (verdict, fuel, time). The payload is parsed at most once per message,
//!   lazily, and every policy of the chain reads fields through host lookups.
//!
//! # Example
//!
//! ```no_run
//! use twinguard_core::{Action, Config, ContentType, Message, Runtime};
//!
//! let config = Config::from_toml(
//!     r#"
//!     [[policy]]
//!     name = "pii"
//!     path = "pii_redact.wasm"
//!     [policy.config]
//!     remove = "/owner/email"
//!
//!     [[route]]
//!     filter = "plant/+/telemetry"
//!     chain = ["pii"]
//!     "#,
//!     "policies",
//! )?;
//! let runtime = Runtime::new(config)?;
//! let message = Message::new(
//!     "press-7",
//!     "plant/press-7/telemetry",
//!     ContentType::Json,
//!     br#"{"temp": 21.5, "owner": {"email": "a@example.com"}}"#.to_vec(),
//! );
//! let outcome = runtime.evaluate(&message);
//! assert_eq!(outcome.action, Action::Redact);
//! # Ok::<(), twinguard_core::Error>(())
//! ```
//!
//! # Semantics worth knowing
//!
//! - Routes are tried in order; the first whose MQTT filter matches the topic runs its chain.
//!   A message matching no route is quarantined (configurable: `[defaults] unrouted`).
//! - In a chain each policy sees the message as redacted by those before it; quarantine stops
//!   the chain; alerts accumulate. The final action is quarantine if any policy quarantined,
//!   else alert if any alert was raised, else redact if the payload changed, else allow.
//! - A redaction pointer that matches nothing is not an error. A redaction of a text or binary
//!   payload, or of a payload that does not parse, is a fault of the policy that asked.
//! - Faults are accounted per device first ([`breaker`]): a device whose messages keep making
//!   a policy fault is held (its messages get the on-fault action without a run) while every
//!   other device is judged as before; the policy-wide breaker opens only on a fault rate
//!   across devices. Both close after a cool-down or by [`Runtime::reset_breaker`] /
//!   [`Runtime::release_device`].
//! - With `[signing]` trusted keys, a module's ed25519 signature (`<module>.sig`) is checked
//!   on the bytes read, before anything compiles them ([`signing`]). With `[engine] cache-dir`,
//!   compiled components are kept on disk and reused after a check of their digest
//!   ([`CacheStats`], [`Runtime::cache_stats`]).

// Denied, not forbidden: the compile cache's one `Component::deserialize` (`cache.rs`) and
// the lean lowering of `evaluate`'s record (`call.rs`: an empty list without a guest
// allocation) are the only `unsafe` in the host, allowed there alone with their SAFETY
// arguments.
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod breaker;
mod cache;
mod call;
pub mod cases;
mod compile;
mod config;
pub mod convert;
mod error;
pub mod input;
mod limits;
mod message;
pub mod metrics;
mod output;
mod payload;
#[cfg(test)]
mod payload_differential;
mod pipeline;
mod policy;
pub mod registry;
mod runtime;
mod selftest;
pub mod shadow;
pub mod signing;
mod snapshot;
mod state;
pub mod telemetry;
pub mod text;
mod twin;
pub mod wasi;

/// The payload type of [`Message`] and [`Outcome`] (the `bytes` crate's): a message's bytes
/// are shared, not copied, by its evaluation and by an outcome that forwards them unchanged.
pub use bytes::Bytes;
pub use cache::CacheStats;
pub use compile::CompileLimits;
pub use config::{
    Config, ConfigValue, Defaults, EngineConfig, LimitsOverride, PolicyConfig, Profiler,
    RouteConfig, Unrouted,
};
pub use error::{chain as error_chain, BoxError, Error, Invalid, LoadError};
pub use limits::{Fault, Isolation, Limits, OnFault};
pub use message::{
    now_ms, Action, Alert, ContentType, Device, Message, Outcome, PolicyTrace, Severity, Verdict,
};
pub use payload::Pointer;

/// The payload index and redaction, for the fuzz targets in `fuzz/` only: not a stable API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::payload::{
        redact, Document, Edit, EditAction, FieldError, FieldValue, Format, RedactError,
    };
}
pub use pipeline::{FilterError, TopicFilter};
pub use policy::{ComponentInfo, Policy, PolicyStatus, WIT_VERSION};
pub use runtime::{PolicySet, Runtime, RuntimeBuilder};
pub use state::{Scope, StateChange, StateJournal};
