//! The NDJSON message format of `twinguard eval` and of policy self-tests: one JSON object per
//! line, naming the device, topic and content type, with the payload as JSON or base64.
//!
//! ```
//! let line = r#"{"device":"press-7","topic":"plant/press-7/telemetry","payload":{"t":21.5}}"#;
//! let parsed = twinguard_core::input::parse_line(line)?;
//! assert_eq!(parsed.message.device_id, "press-7");
//! assert_eq!(&parsed.message.payload[..], br#"{"t":21.5}"#);
//! # Ok::<(), String>(())
//! ```
//!
//! A line may carry the device's registry entry, for policies that ask for it:
//! `"registry": {"class": "power-meter", "attributes": {"period-s": "5"}}`.
//!
//! Test cases (module self-tests, `twinguard test`) use the same fields plus `expect`, `case`,
//! `after` and `config`: see [`crate::cases`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::{ContentType, Message};

/// One input line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    #[serde(alias = "device")]
    device_id: String,
    topic: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    /// The payload as a JSON value: embedded as is for json, encoded to CBOR for cbor, a
    /// string for text.
    payload: Option<Value>,
    /// The payload bytes, base64 (standard alphabet), for any content type.
    payload_base64: Option<String>,
    received_at_ms: Option<u64>,
    /// RFC 3339, e.g. `2026-03-29T00:59:30Z` or `2026-03-29T02:59:30+02:00`.
    received_at: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// The device's registry entry, as a policy asking for it sees it.
    registry: Option<RegistryEntry>,
    /// Tests: the outcome the message must have.
    expect: Option<crate::cases::Expect>,
    /// Tests: the policy's config for this case (the configured one when absent).
    config: Option<BTreeMap<String, Value>>,
    /// Tests: the sequence this step belongs to (steps of one case share state).
    case: Option<String>,
    /// Tests: received this long after the previous step (`61s`, `5m`, `1h 30m`, `250ms`).
    after: Option<String>,
}

/// `registry`: `{"class": "power-meter", "attributes": {"period-s": "5"}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryEntry {
    #[serde(default)]
    class: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

fn default_content_type() -> String {
    "json".into()
}

/// A parsed line: the message, and for a test step what it expects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Parsed {
    /// The message. Its received time is now unless `received_at_ms` or `received_at` says.
    pub message: Message,
    /// `expect`: the outcome a test step requires.
    pub expect: Option<crate::cases::Expect>,
    /// `config`: the policy settings a test case runs with, as `init` receives them.
    pub config: Option<Vec<(String, String)>>,
    /// `case`: the name of the sequence a test step belongs to.
    pub case: Option<String>,
    /// `after`: received this long after the previous step of its case.
    pub after: Option<std::time::Duration>,
    /// Whether the line set the received time (`received_at_ms` or `received_at`).
    pub timed: bool,
}

impl Parsed {
    /// The fields only tests use, present on this line: `eval` refuses them rather than
    /// ignore an expectation.
    pub fn test_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.expect.is_some() {
            out.push("expect");
        }
        if self.config.is_some() {
            out.push("config");
        }
        if self.case.is_some() {
            out.push("case");
        }
        if self.after.is_some() {
            out.push("after");
        }
        out
    }
}

/// Parses one line; the error says which field is wrong.
pub fn parse_line(line: &str) -> Result<Parsed, crate::Invalid> {
    serde_json::from_str(line)
        .map_err(|e| e.to_string())
        .and_then(parse)
        .map_err(crate::Invalid::from)
}

/// Parses one message given as a JSON value (a TOML test step converted): the fields of a line.
pub fn parse_value(value: Value) -> Result<Parsed, crate::Invalid> {
    serde_json::from_value(value)
        .map_err(|e| e.to_string())
        .and_then(parse)
        .map_err(crate::Invalid::from)
}

/// `after`: a duration in jiff's friendly format (`61s`, `1h 30m`, `250ms`), not negative.
fn parse_after(text: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = text.parse().map_err(|e| {
        format!("after {text:?}: not a duration like \"61s\", \"5m\" or \"1h 30m\" ({e})")
    })?;
    std::time::Duration::try_from(d).map_err(|_| format!("after {text:?}: must not be negative"))
}

/// `received_at`: an RFC 3339 instant with its offset.
fn parse_instant(text: &str) -> Result<u64, String> {
    let t: jiff::Timestamp = text.parse().map_err(|e| {
        format!("received_at {text:?}: not an RFC 3339 time like \"2026-03-29T00:59:30Z\" ({e})")
    })?;
    u64::try_from(t.as_millisecond()).map_err(|_| format!("received_at {text:?}: before 1970"))
}

fn parse(input: InputLine) -> Result<Parsed, String> {
    let ct: ContentType = input.content_type.parse()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = match (input.payload, input.payload_base64) {
        (Some(_), Some(_)) => return Err("give either payload or payload_base64, not both".into()),
        (None, None) => return Err("missing payload (or payload_base64)".into()),
        (None, Some(b)) => b64
            .decode(b.as_bytes())
            .map_err(|e| format!("payload_base64: {e}"))?,
        (Some(v), None) => match ct {
            ContentType::Json => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
            ContentType::Cbor => crate::convert::json_to_cbor(&v),
            ContentType::Text => match v {
                Value::String(s) => s.into_bytes(),
                _ => return Err("payload of a text message must be a JSON string".into()),
            },
            ContentType::Binary => {
                return Err("a binary payload must be given as payload_base64".into())
            }
        },
    };
    let mut message = Message::new(input.device_id, input.topic, ct, payload);
    let timed = match (input.received_at_ms, input.received_at.as_deref()) {
        (Some(_), Some(_)) => {
            return Err("give either received_at_ms or received_at, not both".into())
        }
        (Some(ms), None) => {
            message.received_at_ms = ms;
            true
        }
        (None, Some(text)) => {
            message.received_at_ms = parse_instant(text)?;
            true
        }
        (None, None) => false,
    };
    let after = input.after.as_deref().map(parse_after).transpose()?;
    if after.is_some() && timed {
        return Err("give either after or a received time, not both".into());
    }
    message.attributes = input.attributes.into_iter().collect();
    if let Some(entry) = input.registry {
        let mut device = crate::Device::new(entry.class);
        device.attributes = entry.attributes.into_iter().collect();
        message.device = Some(std::sync::Arc::new(device));
    }
    let config = input.config.map(|c| {
        c.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()
    });
    Ok(Parsed {
        message,
        expect: input.expect,
        config,
        case: input.case,
        after,
        timed,
    })
}
