//! `twinguard eval --config F [--input messages.ndjson]`: NDJSON messages in, NDJSON
//! outcomes out, one output line per input line: a line that cannot be judged (blank, not
//! UTF-8, not a message) gets an `error` line, the run goes on, and the exit code is 2.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
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

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// One input line (without its `\n`; a trailing `\r` is dropped) as a message, or why not.
fn to_message(line: &[u8]) -> Result<Message, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| {
        let at = e.valid_up_to();
        format!(
            "not UTF-8 at byte {} of the line (0x{:02x}); eval reads UTF-8 NDJSON",
            at + 1,
            line[at]
        )
    })?;
    if text.trim().is_empty() {
        return Err("blank line: expected one JSON message per line".into());
    }
    let parsed = twinguard::input::parse_line(text).map_err(String::from)?;
    // An expectation eval would ignore reads as checked when it is not: refused instead.
    let test = parsed.test_fields();
    if !test.is_empty() {
        return Err(format!(
            "{} belong{} to test cases, which eval does not check: run them with \
             `twinguard test --config <config> <file.ndjson>`",
            test.join(", "),
            if test.len() == 1 { "s" } else { "" }
        ));
    }
    Ok(parsed.message)
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
    let runtime = Runtime::new(twinguard::FileConfig::from_file(&args.config)?.runtime)?;
    let reader: Box<dyn BufRead> = match &args.input {
        Some(path) => {
            Box::new(BufReader::new(File::open(path).with_context(|| {
                format!("cannot open input {}", path.display())
            })?))
        }
        None => Box::new(BufReader::new(io::stdin())),
    };
    let mut out = crate::Out::stdout();
    let mut bad = 0usize;
    // Bytes, not `lines()`: a line that is not UTF-8 is that line's error, not the run's end.
    for (i, line) in reader.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("cannot read input line {n}"))?;
        let value = match to_message(&line) {
            Ok(message) => render(n, message.content_type, &runtime.evaluate(&message)),
            Err(e) => {
                bad += 1;
                json!({ "line": n, "error": e })
            }
        };
        // A closed stdout (`eval | head`) ends the run here, quietly (see `crate::OutputClosed`).
        writeln!(out, "{value}")?;
    }
    out.flush()?;
    if bad > 0 {
        errln!("{bad} input line(s) could not be read; see their \"error\" lines");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
