//! What goes into an evaluation ([`Message`]) and what comes out ([`Outcome`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::limits::Fault;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// JSON: field lookups and redaction apply.
    Json,
    /// CBOR: field lookups and redaction apply.
    Cbor,
    /// Text: no fields.
    Text,
    /// Opaque bytes: no fields.
    Binary,
}

impl ContentType {
    /// The lowercase name, as in configs and NDJSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Cbor => "cbor",
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContentType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" | "application/json" => Ok(Self::Json),
            "cbor" | "application/cbor" => Ok(Self::Cbor),
            "text" | "text/plain" => Ok(Self::Text),
            "binary" | "application/octet-stream" => Ok(Self::Binary),
            other => Err(format!(
                "unknown content type {other:?} (expected json, cbor, text or binary)"
            )),
        }
    }
}

/// One device message to evaluate.
///
/// ```
/// use twinguard_core::{ContentType, Message};
/// let m = Message::new("press-7", "plant/press-7/telemetry", ContentType::Json, br#"{"t":21.5}"#.to_vec())
///     .with_attribute("fw", "2.1.0");
/// assert_eq!(m.attributes.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The device's authenticated identity where the transport knows it.
    pub device_id: String,
    /// The MQTT topic.
    pub topic: String,
    /// How `payload` is encoded.
    pub content_type: ContentType,
    /// The payload bytes. Shared, not copied, by the evaluation and by an outcome that
    /// forwards them unchanged.
    pub payload: Bytes,
    /// When the host received it, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// Transport attributes (MQTT 5 user properties), in order.
    pub attributes: Vec<(String, String)>,
    /// The device as the registry (or the embedding application) knows it; handed to policies
    /// that ask for it (manifest envelope `device`).
    pub device: Option<Arc<Device>>,
}

/// A device's registry entry: its class and attributes, as policies see them.
///
/// ```
/// use std::sync::Arc;
/// use twinguard_core::{ContentType, Device, Message};
/// let meter = Arc::new(Device::new("power-meter").with_attribute("period-s", "5"));
/// let m = Message::new("m-1", "plant/m-1/telemetry", ContentType::Json, b"{}".to_vec())
///     .with_device(meter);
/// assert_eq!(m.device.as_ref().unwrap().class, "power-meter");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Device {
    /// The device's class, e.g. `badge-reader`; empty when none is recorded.
    pub class: String,
    /// Its attributes (line, location, reporting period, owner, ...), in order.
    pub attributes: Vec<(String, String)>,
}

impl Device {
    /// A device of `class`, without attributes.
    pub fn new(class: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            attributes: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }
}

impl Message {
    /// A message received now, without attributes.
    pub fn new(
        device_id: impl Into<String>,
        topic: impl Into<String>,
        content_type: ContentType,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            device_id: device_id.into(),
            topic: topic.into(),
            content_type,
            payload: payload.into(),
            received_at_ms: now_ms(),
            attributes: Vec::new(),
            device: None,
        }
    }

    /// Sets the device's registry entry.
    pub fn with_device(mut self, device: Arc<Device>) -> Self {
        self.device = Some(device);
        self
    }

    /// The seed of the policies' random sources for this message: a function of the device
    /// id, topic, received time and payload length only, so a replay of the message (same
    /// fields) gets the same one. FNV-1a over those fields, finished with SplitMix64's mixer;
    /// stable across host versions, since replays may cross them.
    pub fn seed(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(PRIME);
            }
            // A separator, so ("ab", "c") and ("a", "bc") differ.
            h = (h ^ 0xff).wrapping_mul(PRIME);
        };
        eat(self.device_id.as_bytes());
        eat(self.topic.as_bytes());
        eat(&self.received_at_ms.to_le_bytes());
        eat(&(self.payload.len() as u64).to_le_bytes());
        let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Adds a transport attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }
}

/// Milliseconds since the Unix epoch: the unit of `received_at_ms` and of every timestamp
/// the services keep.
pub fn now_ms() -> u64 {
    // A clock before 1970 is a misconfigured host; 0 is as good an answer as any.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Severity of a security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the names say it
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// A security event raised on a message, attributed to the policy that raised it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The policy's configured name (or `twinguard` for the host's own events).
    pub policy: Arc<str>,
    /// The policy's version: its content digest.
    pub version: Arc<str>,
    /// How serious.
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `device-spoofing`; `policy-fault` for faults.
    pub code: String,
    /// Detail for the analyst.
    pub detail: String,
}

impl Alert {
    /// An alert raised by `policy` at `version` (use `twinguard` for the host's own events).
    pub fn new(
        policy: impl Into<Arc<str>>,
        version: impl Into<Arc<str>>,
        severity: Severity,
        code: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            policy: policy.into(),
            version: version.into(),
            severity,
            code: code.into(),
            detail: detail.into(),
        }
    }
}

/// The final action on a message, by precedence: quarantine, then alert, then redact, then
/// allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// Forward unchanged.
    Allow,
    /// Forward with redactions applied (the outcome's payload).
    Redact,
    /// Forward (redacted where a policy redacted) and raise the outcome's alerts.
    Alert,
    /// Do not forward; hold for review.
    Quarantine {
        /// The policy that quarantined it; `None` when no route matched the topic.
        policy: Option<String>,
        /// Why.
        reason: String,
    },
}

impl Action {
    /// `allow`, `redact`, `alert` or `quarantine`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Alert => "alert",
            Self::Quarantine { .. } => "quarantine",
        }
    }

    /// Whether the message is forwarded.
    pub fn forwards(&self) -> bool {
        !matches!(self, Self::Quarantine { .. })
    }
}

/// What one policy did with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Redacted with this many edits (some may have matched nothing).
    Redact(usize),
    /// Quarantined.
    Quarantine,
    /// Raised an alert and allowed.
    Alert,
    /// Faulted; the message got the policy's on-fault action.
    Fault(Fault),
}

impl Verdict {
    /// `allow`, `redact`, `quarantine`, `alert` or `fault`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact(_) => "redact",
            Self::Quarantine => "quarantine",
            Self::Alert => "alert",
            Self::Fault(_) => "fault",
        }
    }
}

/// One step of a chain, for the operator's eyes and for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTrace {
    /// The policy's name.
    pub policy: Arc<str>,
    /// Its version (content digest).
    pub version: Arc<str>,
    /// What it decided.
    pub verdict: Verdict,
    /// Fuel it consumed on this message.
    pub fuel_used: u64,
    /// Wall-clock time of the step, instantiation included in `fresh` mode, and the host's
    /// handling of the previous step's decision (one clock read per step).
    pub elapsed: Duration,
}

/// The result of evaluating one message through its chain.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The final action.
    pub action: Action,
    /// The payload to forward, redactions applied. For a quarantined message, the payload as
    /// it stood when it was quarantined. Unredacted, it is the message's own bytes, shared.
    pub payload: Bytes,
    /// Whether a redaction edit matched a field, so `payload` was rewritten.
    pub redacted: bool,
    /// Every alert raised, in chain order, fault alerts included.
    pub alerts: Vec<Alert>,
    /// One entry per policy that ran (or was skipped by an open breaker).
    pub trace: Vec<PolicyTrace>,
    /// The generation of the policy set that evaluated the message.
    pub generation: u64,
}

impl Outcome {
    /// An outcome with `action` and the payload to forward (or the one held), decided by
    /// `generation`: no redaction, no alert, no trace. For front ends and stores that build
    /// outcomes of their own; set the public fields for the rest.
    pub fn new(action: Action, payload: impl Into<Bytes>, generation: u64) -> Self {
        Self {
            action,
            payload: payload.into(),
            redacted: false,
            alerts: Vec::new(),
            trace: Vec::new(),
            generation,
        }
    }

    /// A quarantine decided by the host or a front end itself, before or instead of any
    /// policy (a message no route or template could place, a forward the broker refused):
    /// `reason` says why, `generation` is the policy set that was active.
    pub fn held(message: &Message, reason: String, generation: u64) -> Self {
        let action = Action::Quarantine {
            policy: None,
            reason,
        };
        Self::new(action, message.payload.clone(), generation)
    }
}
