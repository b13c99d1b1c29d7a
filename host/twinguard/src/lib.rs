//! twinguard: a policy runtime for the digital-twin data path.
//!
//! Every device message is judged by **policies**, sandboxed WebAssembly components written
//! against one WIT contract (`wit/policy.wit`, package `twinguard:policy@0.2.0`). Each policy
//! answers **allow**, **redact**, **quarantine** or **alert**, under its own limits.
//!
//! This crate is what an integrator depends on. It re-exports the evaluation core
//! ([`twinguard_core`]: [`Runtime`], [`Policy`], [`PolicySet`], [`Message`], [`Outcome`], …, so
//! `use twinguard::Runtime` works) and adds the services, each behind a cargo feature:
//!
//! | feature   | what it adds                                                            |
//! |-----------|-------------------------------------------------------------------------|
//! | `store`   | [`store`]: the crash-safe quarantine store (SQLite, WAL); [`state`]: policies' state kept across restarts |
//! | `alerts`  | [`alerts`]: security events to an NDJSON file or syslog, rate-limited   |
//! | `watch`   | [`watch`]: hot reload when the config file or a policy file changes      |
//! | `admin`   | [`admin`], [`lifecycle`]: the HTTPS admin API and signed policy changes |
//! | `gateway` | [`gateway`]: the MQTT gateway of `twinguard serve` (store, alerts, watch)|
//! | `telemetry` | [`telemetry`]: Prometheus `/metrics`, `/healthz`, `/readyz` on a meter provider |
//! | `otlp`    | `[telemetry] otlp-endpoint`: metrics and message spans over OTLP/HTTP     |
//!
//! With `store` and `alerts`, [`judge`] is the one flow every front end calls: evaluate, hand
//! the alerts to the sinks, commit a quarantined message to the store, with one rule for a
//! store write that fails. [`FileConfig`] reads the whole config file (the runtime's part is
//! the core's [`Config`]).
//!
//! Without features, this crate is the core: no SQLite, MQTT, HTTP or TLS in the tree.
//!
//! # Example
//!
//! ```no_run
//! use twinguard::{Action, Config, ContentType, Message, Runtime};
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
//! # Ok::<(), twinguard::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub use twinguard_core::*;

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "alerts")]
pub mod alerts;
pub mod budget;
mod config;
#[cfg(all(feature = "store", feature = "alerts"))]
pub mod decision_log;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(all(feature = "store", feature = "alerts"))]
pub mod judge;
#[cfg(feature = "admin")]
pub mod lifecycle;
#[cfg(any(feature = "admin", feature = "telemetry"))]
mod listener;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(all(feature = "store", feature = "alerts"))]
pub mod services;
#[cfg(feature = "store")]
pub mod state;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "watch")]
pub mod watch;

pub use config::FileConfig;
