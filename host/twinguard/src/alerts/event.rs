//! The [`SecurityEvent`] every alert becomes (its JSON schema is in `docs/alerts.md`), and the
//! [`Clock`] that dates it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Action, Alert, Message, Outcome, Severity};

/// The version of the [`SecurityEvent`] schema; raised on any change a consumer could notice
/// other than a new field. 2: `action` may be `shed` (a device over its budget).
pub const SCHEMA_VERSION: u32 = 2;

/// The action taken on the message that raised the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the names say it; see Action
pub enum EventAction {
    Allow,
    Redact,
    Alert,
    Quarantine,
    /// Acknowledged and dropped before judgement: the device was over its budget.
    Shed,
}

impl From<&Action> for EventAction {
    fn from(action: &Action) -> Self {
        match action {
            Action::Allow => Self::Allow,
            Action::Redact => Self::Redact,
            Action::Alert => Self::Alert,
            Action::Quarantine { .. } => Self::Quarantine,
            // An action added later holds the message back unless it says otherwise: an
            // event that under-states it would be the worse error.
            _ if !action.forwards() => Self::Quarantine,
            _ => Self::Alert,
        }
    }
}

impl EventAction {
    /// `allow`, `redact`, `alert`, `quarantine` or `shed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Alert => "alert",
            Self::Quarantine => "quarantine",
            Self::Shed => "shed",
        }
    }
}

/// One security event as every sink sends it. The schema is documented in `docs/alerts.md`;
/// fields are only ever added within a [`SCHEMA_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    /// Unique id (a UUIDv7, so ids sort by time); a summary of repeats gets its own.
    pub id: String,
    /// When the (last) alert this event stands for was raised, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `time` as milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The device the message came from.
    pub device_id: String,
    /// The message's topic.
    pub topic: String,
    /// What was done with the message.
    pub action: EventAction,
    /// The policy that raised the alert (`twinguard` for the host's own events).
    pub policy: String,
    /// That policy's version (content digest).
    pub policy_version: String,
    /// How serious.
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `device-spoofing`.
    pub code: String,
    /// Detail for the analyst.
    pub detail: String,
    /// The generation of the policy set that evaluated the message.
    pub generation: u64,
    /// How many identical alerts this event stands for (1 unless repeats were rate-limited).
    pub count: u64,
    /// When the first of those `count` alerts was raised (RFC 3339).
    pub first_seen: String,
    /// When the last of them was raised (RFC 3339); equals `time`.
    pub last_seen: String,
}

impl SecurityEvent {
    /// The event for one alert raised at `time_ms`, standing for itself alone.
    pub fn from_alert(
        device_id: &str,
        topic: &str,
        action: EventAction,
        generation: u64,
        alert: &Alert,
        time_ms: u64,
    ) -> Self {
        let time = rfc3339(time_ms);
        Self {
            schema_version: SCHEMA_VERSION,
            id: new_id(),
            time: time.clone(),
            time_ms,
            device_id: device_id.to_owned(),
            topic: topic.to_owned(),
            action,
            policy: alert.policy.to_string(),
            policy_version: alert.version.to_string(),
            severity: alert.severity,
            code: alert.code.clone(),
            detail: alert.detail.clone(),
            generation,
            count: 1,
            first_seen: time.clone(),
            last_seen: time,
        }
    }

    /// One event per alert of `outcome`, raised now. Not rate-limited: hand them to
    /// [`Alerts::send_all`](super::Alerts::send_all) for that.
    pub fn from_outcome(message: &Message, outcome: &Outcome) -> Vec<Self> {
        events_at(message, outcome, SystemClock.now_ms())
    }

    /// The event as one line of JSON (no trailing newline). JSON escapes every control
    /// character itself; U+2028 and U+2029, which JSON allows raw but JavaScript readers of
    /// JSON lines take as line ends, are escaped too.
    pub fn to_json(&self) -> String {
        // Cannot fail: a SecurityEvent holds only strings and integers.
        let json = serde_json::to_string(self).unwrap_or_default();
        if json.contains(['\u{2028}', '\u{2029}']) {
            json.replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029")
        } else {
            json
        }
    }

    /// The event as a JSON payload, e.g. for an MQTT alerts topic (as [`to_json`](Self::to_json)).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        self.to_json().into_bytes()
    }

    pub(super) fn set_span(&mut self, count: u64, first_ms: u64) {
        self.count = count;
        self.first_seen = rfc3339(first_ms.min(self.time_ms));
    }
}

pub(super) fn events_at(message: &Message, outcome: &Outcome, time_ms: u64) -> Vec<SecurityEvent> {
    let action = EventAction::from(&outcome.action);
    outcome
        .alerts
        .iter()
        .map(|alert| {
            SecurityEvent::from_alert(
                &message.device_id,
                &message.topic,
                action,
                outcome.generation,
                alert,
                time_ms,
            )
        })
        .collect()
}

pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RFC 3339 UTC with milliseconds. Times past year 9999 (a broken clock) are clamped: the
/// formatter cannot write them, and an alert must still go out.
pub(super) fn rfc3339(ms: u64) -> String {
    const LAST_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Where the dispatcher reads the time. Injectable so rate limiting can be tested without
/// sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a misconfigured host; 0 is as good an answer as any.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An event of a replayed message, for the tests of this module and of the sinks.
    pub(in crate::alerts) fn event(device: &str, detail: &str) -> SecurityEvent {
        let alert = Alert::new("replay-guard", "abc123", Severity::High, "replay", detail);
        SecurityEvent::from_alert(
            device,
            "plant/x/telemetry",
            EventAction::Quarantine,
            3,
            &alert,
            1_700_000_000_123,
        )
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn events_serialize_in_schema_order() {
        let json = event("d", "x").to_json();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
                .unwrap()
                .keys()
                .cloned()
                .collect();
        assert_eq!(
            keys,
            [
                "schema_version",
                "id",
                "time",
                "time_ms",
                "device_id",
                "topic",
                "action",
                "policy",
                "policy_version",
                "severity",
                "code",
                "detail",
                "generation",
                "count",
                "first_seen",
                "last_seen"
            ]
        );
        assert_ne!(event("d", "x").id, event("d", "x").id);
    }
}
