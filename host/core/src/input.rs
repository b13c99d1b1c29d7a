//! The NDJSON message format of `twinguard eval` and of policy self-tests: one JSON object per
//! line, naming the device, topic and content type, with the payload as JSON or base64.
//!
//! ```
//! let line = r#"{"device":"press-7","topic":"plant/press-7/telemetry","payload":{"t":21.5}}"#;
//! let parsed = twinguard_core::input::parse_line(line)?;
//! assert_eq!(parsed.message.device_id, "press-7");
//! assert_eq!(parsed.message.payload, br#"{"t":21.5}"#);
//! # Ok::<(), String>(())
//! ```
//!
//! A line may carry the device's registry entry, for policies that ask for it:
//! `"registry": {"class": "power-meter", "attributes": {"period-s": "5"}}`.

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
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// The device's registry entry, as a policy asking for it sees it.
    registry: Option<RegistryEntry>,
    /// Self-tests: the verdict the policy must give.
    expect: Option<String>,
    /// Self-tests: the policy's config for this case (the configured one when absent).
    config: Option<BTreeMap<String, Value>>,
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

/// A parsed line: the message, and for a self-test case what it expects.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The message.
    pub message: Message,
    /// `expect`: the verdict a self-test case requires.
    pub expect: Option<String>,
    /// `config`: the policy settings a self-test case runs with, as `init` receives them.
    pub config: Option<Vec<(String, String)>>,
}

/// Parses one line; the error says which field is wrong.
pub fn parse_line(line: &str) -> Result<Parsed, crate::Invalid> {
    parse(line).map_err(crate::Invalid::from)
}

fn parse(line: &str) -> Result<Parsed, String> {
    let input: InputLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
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
    if let Some(t) = input.received_at_ms {
        message.received_at_ms = t;
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
    })
}
