//! `twinguard eval --config F [--input messages.ndjson]`: NDJSON messages in, NDJSON
//! outcomes out, one output line per input line (an unreadable line gets an `error` line).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use twinguard::{Action, ContentType, Message, Outcome, Runtime, Verdict};

/// Arguments of `eval`.
#[derive(clap::Args)]
pub struct Args {
    /// The runtime config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// NDJSON messages; standard input when absent.
    #[arg(long)]
    input: Option<PathBuf>,
}

/// One input line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMessage {
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
}

fn default_content_type() -> String {
    "json".into()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn to_message(line: &str) -> Result<Message, String> {
    let input: InputMessage = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let ct: ContentType = input.content_type.parse()?;
    let payload = match (input.payload, input.payload_base64) {
        (Some(_), Some(_)) => return Err("give either payload or payload_base64, not both".into()),
        (None, None) => return Err("missing payload (or payload_base64)".into()),
        (None, Some(b)) => b64()
            .decode(b.as_bytes())
            .map_err(|e| format!("payload_base64: {e}"))?,
        (Some(v), None) => match ct {
            ContentType::Json => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
            ContentType::Cbor => twinguard::convert::json_to_cbor(&v),
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
    Ok(message)
}

/// The payload as JSON fields: `payload` (readable) and/or `payload_base64` (exact bytes).
pub fn payload_json(ct: ContentType, bytes: &[u8]) -> Value {
    let readable = match ct {
        ContentType::Json => serde_json::from_slice::<Value>(bytes).ok(),
        ContentType::Cbor => twinguard::convert::cbor_to_json(bytes).ok(),
        ContentType::Text => std::str::from_utf8(bytes)
            .ok()
            .map(|s| Value::String(s.into())),
        ContentType::Binary => None,
    };
    let mut out = json!({});
    if let Some(v) = readable {
        out["payload"] = v;
    }
    if ct != ContentType::Json || out.get("payload").is_none() {
        out["payload_base64"] = Value::String(b64().encode(bytes));
    }
    out
}

fn render(line: usize, ct: ContentType, outcome: &Outcome) -> Value {
    let mut out = json!({ "line": line, "action": outcome.action.name() });
    if let Action::Quarantine { policy, reason } = &outcome.action {
        out["quarantined_by"] = json!(policy);
        out["reason"] = json!(reason);
    }
    if let (Value::Object(p), Some(o)) = (payload_json(ct, &outcome.payload), out.as_object_mut()) {
        o.extend(p);
    }
    out["redacted"] = json!(outcome.redacted);
    out["alerts"] = json!(outcome.alerts);
    out["trace"] = outcome
        .trace
        .iter()
        .map(|t| {
            let mut step = json!({
                "policy": t.policy,
                "version": t.version,
                "verdict": t.verdict.name(),
                "fuel_used": t.fuel_used,
                "micros": t.elapsed.as_secs_f64() * 1e6,
            });
            if let Verdict::Fault(f) = &t.verdict {
                step["fault"] = json!({ "kind": f.code(), "detail": f.to_string() });
            }
            step
        })
        .collect();
    out["generation"] = json!(outcome.generation);
    out
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let runtime = Runtime::from_config_file(&args.config)?;
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).with_context(|| {
                format!("cannot open input {}", path.display())
            })?))
        }
        None => Box::new(BufReader::new(io::stdin())),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut bad = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("cannot read input line {n}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = match to_message(&line) {
            Ok(message) => render(n, message.content_type, &runtime.evaluate(&message)),
            Err(e) => {
                bad += 1;
                json!({ "line": n, "error": e })
            }
        };
        writeln!(out, "{value}")?;
    }
    out.flush()?;
    if bad > 0 {
        eprintln!("{bad} input line(s) could not be read; see their \"error\" lines");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
