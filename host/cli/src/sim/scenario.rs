//! The attack scenarios the simulator injects, and how a message is tampered with.

use rand::Rng;
use serde_json::{json, Value};

use super::device::{person, Kind};
use twinguard::ContentType;

/// An injected attack, as labelled for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// A device that is not in the inventory publishes.
    SpoofUnknown,
    /// A real device publishes on another real device's topic.
    SpoofIdentity,
    /// A captured message is re-sent later.
    Replay,
    /// One reading jumps out of range or by more than a sensor can change.
    Spike,
    /// One metric is pushed away from the truth slowly, then back.
    Drift,
    /// One reading is repeated exactly, message after message.
    Frozen,
    /// A device sends far faster than it should.
    Flood,
    /// A sensor sends personal data it should not carry.
    PiiLeak,
    /// A payload that does not parse, or breaks the schema.
    Malformed,
    /// A payload far larger than any device sends.
    Oversized,
    /// A device's own message names another device in its payload's `device` field.
    SpoofField,
    /// A message whose sequence counter starts again from (nearly) zero.
    SeqReset,
    /// A message whose timestamp lies far in the future or long ago.
    ClockSkew,
    /// A device sends just above its normal rate (twice as often, not a hundred times).
    SlowFlood,
    /// Personal data under a field name no policy lists, alone or inside free text.
    PiiHidden,
    /// A drift at half the pace of `drift`, over three times as many messages.
    SlowDrift,
    /// Several devices report impossible readings at the same moment.
    Coordinated,
    /// The twin sends a device a setpoint outside the device's bounds.
    CommandBounds,
    /// The twin sends a device a command its class does not take.
    CommandUnknown,
}

/// What a scenario is scored by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Every attack message must be caught.
    Message,
    /// An episode is caught when any of its messages is: its first messages are
    /// indistinguishable from clean traffic.
    Episode,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Self; 19] = [
        Self::SpoofUnknown,
        Self::SpoofIdentity,
        Self::Replay,
        Self::Spike,
        Self::Drift,
        Self::Frozen,
        Self::Flood,
        Self::PiiLeak,
        Self::Malformed,
        Self::Oversized,
        Self::SpoofField,
        Self::SeqReset,
        Self::ClockSkew,
        Self::SlowFlood,
        Self::PiiHidden,
        Self::SlowDrift,
        Self::Coordinated,
        Self::CommandBounds,
        Self::CommandUnknown,
    ];

    /// The scenario's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::SpoofUnknown => "spoof-unknown",
            Self::SpoofIdentity => "spoof-identity",
            Self::Replay => "replay",
            Self::Spike => "spike",
            Self::Drift => "drift",
            Self::Frozen => "frozen",
            Self::Flood => "flood",
            Self::PiiLeak => "pii-leak",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::SpoofField => "spoof-field",
            Self::SeqReset => "seq-reset",
            Self::ClockSkew => "clock-skew",
            Self::SlowFlood => "slow-flood",
            Self::PiiHidden => "pii-hidden",
            Self::SlowDrift => "slow-drift",
            Self::Coordinated => "coordinated",
            Self::CommandBounds => "cmd-out-of-bounds",
            Self::CommandUnknown => "cmd-unknown",
        }
    }

    /// How the scenario is scored.
    pub fn unit(self) -> Unit {
        match self {
            Self::Drift | Self::Frozen | Self::Flood | Self::SlowFlood | Self::SlowDrift => {
                Unit::Episode
            }
            _ => Unit::Message,
        }
    }

    /// Chance that a device's message, once attacks have started, starts this attack.
    pub(super) fn probability(self) -> f64 {
        match self {
            Self::Drift | Self::Frozen | Self::SlowDrift => 0.001,
            Self::Flood | Self::SlowFlood => 0.0006,
            Self::Coordinated => 0.0004,
            // Per command the twin sends, not per device message.
            Self::CommandBounds | Self::CommandUnknown => 0.02,
            Self::Oversized | Self::SpoofIdentity | Self::SpoofUnknown => 0.002,
            _ => 0.0025,
        }
    }

    /// Whether a device of `kind` can be the vehicle of this attack.
    pub(super) fn applies_to(self, kind: Kind) -> bool {
        match self {
            Self::Spike
            | Self::Drift
            | Self::Frozen
            | Self::PiiLeak
            | Self::SlowFlood
            | Self::PiiHidden
            | Self::SlowDrift
            | Self::Coordinated => kind.is_sensor(),
            // Drawn on the command path, never for a device's own message.
            Self::CommandBounds | Self::CommandUnknown => false,
            _ => true,
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The ground truth of an attack message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The attack.
    pub scenario: Scenario,
    /// Which occurrence: every message of one episode shares it.
    pub episode: u32,
    /// Personal data the message carries that must not be forwarded (pii-leak).
    pub secrets: Vec<String>,
}

impl Label {
    pub(super) fn new(scenario: Scenario, episode: u32) -> Self {
        Self {
            scenario,
            episode,
            secrets: Vec::new(),
        }
    }

    pub(super) fn with_secrets(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets;
        self
    }
}

/// Applies a one-message attack to a reading's document; returns the secrets it planted.
pub(super) fn tamper_document<R: Rng>(
    scenario: Scenario,
    kind: Kind,
    doc: &mut Value,
    rng: &mut R,
) -> Vec<String> {
    match scenario {
        Scenario::Spike | Scenario::Coordinated => {
            if let Some(m) = kind.metrics().iter().find(|m| m.primary) {
                let value = doc["metrics"][m.name].as_f64().unwrap_or(m.level);
                // 40 to 200 standard deviations of the sensor's noise: far beyond anything it
                // does in a minute, sometimes beyond physics. Vibration cannot be negative, so
                // it spikes upwards.
                let jump = m.noise * rng.random_range(40.0..200.0);
                let up = kind == Kind::Vibration || rng.random_bool(0.5);
                let spiked = if up { value + jump } else { value - jump };
                doc["metrics"][m.name] = json!((spiked * 100.0).round() / 100.0);
            }
            Vec::new()
        }
        Scenario::PiiLeak => {
            let (name, email) = person(rng);
            let phone = format!(
                "+49 151 {:04} {:04}",
                rng.random_range(0..10_000),
                rng.random_range(0..10_000)
            );
            doc["operator"] = json!({"name": name, "email": email, "phone": phone});
            vec![name, email, phone]
        }
        Scenario::PiiHidden => {
            let (name, email) = person(rng);
            let phone = format!(
                "+49 170 {:03} {:04}",
                rng.random_range(100..1_000),
                rng.random_range(0..10_000)
            );
            // Field names an operator's tooling might add, none of them in any policy's list.
            const KEYS: [&str; 6] = [
                "contact",
                "tech_note",
                "maintainer",
                "remark",
                "x_user",
                "shift_lead",
            ];
            let key = KEYS[rng.random_range(0..KEYS.len())];
            let (value, secrets) = match rng.random_range(0..4) {
                0 => (email.clone(), vec![email]),
                1 => (phone.clone(), vec![phone]),
                2 => (
                    format!("recalibrated by {name}, call {phone} if it drifts"),
                    vec![name, phone],
                ),
                _ => (format!("{name} <{email}> on shift"), vec![name, email]),
            };
            doc[key] = json!(value);
            secrets
        }
        Scenario::SeqReset => {
            doc["seq"] = json!(rng.random_range(0..4));
            Vec::new()
        }
        Scenario::ClockSkew => {
            let ts = doc["ts"].as_u64().unwrap_or(0);
            let skewed = if rng.random_bool(0.5) {
                ts + rng.random_range(600_000..2 * 86_400_000)
            } else {
                ts.saturating_sub(rng.random_range(300_000..30 * 86_400_000))
            };
            doc["ts"] = json!(skewed);
            Vec::new()
        }
        Scenario::Oversized => {
            doc["blob"] = json!("A".repeat(64 * 1024));
            Vec::new()
        }
        Scenario::Malformed => {
            // One variant in three breaks the schema rather than the syntax.
            if rng.random_range(0..3) == 0 {
                let seq = doc["seq"].clone();
                doc["seq"] = json!(seq.to_string());
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// Breaks the encoding of a payload (unless the document was already made invalid).
pub(super) fn corrupt<R: Rng>(payload: &mut Vec<u8>, content_type: ContentType, rng: &mut R) {
    if payload_is_schema_broken(payload, content_type) {
        return;
    }
    let len = payload.len();
    match (content_type, rng.random_range(0..2)) {
        (_, 0) if len > 2 => payload.truncate(rng.random_range(1..len - 1)),
        (ContentType::Cbor, _) => {
            // A map header claiming more entries than follow, then garbage.
            payload.clear();
            payload.push(0xbf);
            for _ in 0..rng.random_range(4..32) {
                payload.push(rng.random_range(0xe0..=0xff));
            }
        }
        _ => {
            // A stray byte in the middle of the text.
            let at = rng.random_range(1..len.max(2));
            payload.insert(at.min(len), b'}');
            payload.insert(0, b'{');
        }
    }
}

/// Whether the document was made invalid by schema (a text `seq`), not by syntax.
fn payload_is_schema_broken(payload: &[u8], content_type: ContentType) -> bool {
    match content_type {
        ContentType::Json => serde_json::from_slice::<Value>(payload)
            .is_ok_and(|v| v.get("seq").is_some_and(Value::is_string)),
        ContentType::Cbor => twinguard::convert::cbor_to_json(payload)
            .is_ok_and(|v| v.get("seq").is_some_and(Value::is_string)),
        _ => false,
    }
}
