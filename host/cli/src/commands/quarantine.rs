//! `twinguard quarantine list|show|purge --store F`: the operator's view of the quarantine
//! store the gateway writes. Safe next to a running gateway: SQLite's WAL lets both work on
//! the file at once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use twinguard::store::{Purge, QuarantineStore, Query, Record, Status};
use twinguard::ContentType;

/// Arguments of `quarantine`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// List quarantined messages, oldest first.
    List(ListArgs),
    /// Show one quarantined message in full, payload included.
    Show(ShowArgs),
    /// Delete quarantined messages: by id, by age, by status (criteria combine with "and").
    Purge(PurgeArgs),
    /// Publish held messages to their destination as they are (an operator's override).
    Release(ActArgs),
    /// Judge held messages again with the current policies and act on the new outcome.
    Replay(ActArgs),
}

/// What `release` and `replay` need: the gateway's config (broker, store, policies).
#[derive(clap::Args)]
struct ActArgs {
    /// The config `twinguard serve` runs with: its [gateway], [quarantine] and policies.
    #[arg(long)]
    config: PathBuf,
    /// The records (held ones only).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<u64>,
    /// A note kept with each record's new status.
    #[arg(long)]
    note: Option<String>,
}

/// The store every subcommand works on.
#[derive(clap::Args)]
struct StoreArg {
    /// The quarantine store (the SQLite file the gateway writes).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
}

impl StoreArg {
    fn open(&self) -> Result<QuarantineStore> {
        // `open_existing`: a mistyped path must be an error, not a new empty store.
        Ok(QuarantineStore::open_existing(&self.store)?)
    }
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Only records in this status: held, released or replayed.
    #[arg(long)]
    status: Option<Status>,
    /// Only records of this device.
    #[arg(long)]
    device: Option<String>,
    /// Only records quarantined by this policy.
    #[arg(long)]
    policy: Option<String>,
    /// Only records after this id (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<u64>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// One JSON object per record (NDJSON), payload included.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The record's id.
    id: u64,
    /// Print the record as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true)))]
struct PurgeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// These records (repeat, or list several); each must exist, or nothing is purged.
    #[arg(long = "id", value_name = "ID", num_args = 1.., group = "which")]
    ids: Vec<u64>,
    /// Records stored longer ago than this: a number and a unit (ms, s, m, h, d, w), e.g. 7d.
    #[arg(long, value_name = "AGE", value_parser = parse_duration_ms, group = "which")]
    older_than: Option<u64>,
    /// Records in this status: held, released or replayed.
    #[arg(long, group = "which")]
    status: Option<Status>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Sub::List(a) => list(a),
        Sub::Show(a) => show(a),
        Sub::Purge(a) => purge(a),
        Sub::Release(a) => act(a, false),
        Sub::Replay(a) => act(a, true),
    }
}

/// Release (as is) or replay (judged again) held records, then forward what passes. A record
/// is marked only after the broker acknowledged its publish, so a failure leaves it held.
fn act(args: &ActArgs, replay: bool) -> Result<ExitCode> {
    let config = twinguard::FileConfig::from_file(&args.config)?;
    let gateways = config.gateways.clone();
    // Records `serve` kept from a NATS cluster go back there: the last target.
    let nats = config.nats.clone();
    let targets = gateways.len() + usize::from(nats.is_some());
    if targets == 0 {
        anyhow::bail!(
            "{}: no [gateway] or [nats] table: nowhere to publish",
            args.config.display()
        );
    }
    let Some(quarantine) = config.quarantine.clone() else {
        anyhow::bail!("{}: no [quarantine] table", args.config.display());
    };
    let store = QuarantineStore::open_existing(&quarantine.path)?;
    let runtime = if replay {
        let runtime = twinguard::Runtime::new(config.runtime)?;
        // Judged with the devices' current state, read from the file `serve` keeps (read
        // only: what replays teach the policies is not written back beside a running serve).
        let state = twinguard::state::StateConfig::file(config.state.as_ref(), &quarantine.path);
        match &nats {
            // Scaled out, the state is the partitions' checkpoints in the cluster.
            Some(n) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                rt.block_on(twinguard::nats::restore_checkpoints(
                    n,
                    &runtime,
                    std::time::Duration::from_secs(30),
                ))
                .context("the partitions' checkpoints")?;
            }
            None => {
                if let Some(path) = state.filter(|p| p.exists()) {
                    twinguard::state::restore_from(&path, &runtime)?;
                }
            }
        }
        Some(runtime)
    } else {
        None
    };
    // Per target (index into `gateways`, then `nats`): what to publish there, and the marks
    // it earns.
    let mut publish: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); targets];
    let mut marks: Vec<Vec<(u64, Status, String)>> = vec![Vec::new(); targets];
    let mut refused = 0;
    for &id in &args.ids {
        let Some(r) = store.get(id)? else {
            errln!("#{id}: no such record");
            refused += 1;
            continue;
        };
        if r.status != Status::Held {
            errln!("#{id}: is {}, not held", r.status.as_str());
            refused += 1;
            continue;
        }
        let Some(destination) = r.destination.clone() else {
            errln!("#{id}: has no destination (its topic fit no input)");
            refused += 1;
            continue;
        };
        // Back to the broker (or cluster) it came from.
        let gw = match (&r.source, targets) {
            (Some(source), _) => gateways
                .iter()
                .position(|g| g.name() == source)
                .or_else(|| {
                    nats.as_ref()
                        .filter(|n| n.instance == *source)
                        .map(|_| gateways.len())
                }),
            (None, 1) => Some(0),
            (None, _) => None,
        };
        let Some(gw) = gw else {
            match &r.source {
                Some(source) => errln!(
                    "#{id}: came from gateway (or NATS instance) {source:?}, which {} does not configure",
                    args.config.display()
                ),
                None => errln!(
                    "#{id}: records no gateway and {} configures several: release it with a config that has only its broker",
                    args.config.display()
                ),
            }
            refused += 1;
            continue;
        };
        match &runtime {
            None => {
                // What the chain left: a release must not undo an earlier redaction.
                let payload = r
                    .redacted_payload
                    .clone()
                    .unwrap_or_else(|| r.payload.clone());
                publish[gw].push((destination.clone(), payload));
                marks[gw].push((id, Status::Released, format!("released to {destination}")));
            }
            Some(runtime) => {
                let mut message = twinguard::Message::new(
                    r.device_id.clone(),
                    r.topic.clone(),
                    r.content_type,
                    r.payload.clone(),
                );
                message.received_at_ms = r.received_at_ms;
                message.attributes = r.attributes.clone();
                let outcome = runtime.evaluate(&message);
                match &outcome.action {
                    twinguard::Action::Quarantine { policy, reason } => {
                        let by = policy.as_deref().unwrap_or("(unrouted)");
                        report(format_args!("#{id}: still quarantined by {by}: {reason}"));
                        store.set_status(
                            id,
                            Status::Held,
                            Some(&format!("replayed: still quarantined by {by}: {reason}")),
                        )?;
                    }
                    action => {
                        publish[gw].push((destination.clone(), outcome.payload.to_vec()));
                        marks[gw].push((
                            id,
                            Status::Replayed,
                            format!("replayed: {} to {destination}", action.name()),
                        ));
                    }
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut failed: Option<anyhow::Error> = None;
    for (target, (publish, marks)) in publish.into_iter().zip(marks).enumerate() {
        if publish.is_empty() {
            continue;
        }
        let within = std::time::Duration::from_secs(30);
        // A broker that fails leaves its records held; the others' are marked.
        let (name, sent) = match (gateways.get(target), &nats) {
            (Some(gateway), _) => (
                format!("gateway {:?}", gateway.name()),
                rt.block_on(twinguard::gateway::publish_all(gateway, publish, within))
                    .map_err(anyhow::Error::from),
            ),
            (None, Some(n)) => (
                format!("nats {:?}", n.instance),
                rt.block_on(twinguard::nats::publish_all(n, publish, within))
                    .map_err(anyhow::Error::from),
            ),
            (None, None) => continue,
        };
        if let Err(e) = sent {
            errln!("{name}: {e:#}");
            failed.get_or_insert(e);
            continue;
        }
        for (id, status, what) in marks {
            let note = args
                .note
                .clone()
                .map_or(what.clone(), |n| format!("{what}; {n}"));
            store.set_status(id, status, Some(&note))?;
            report(format_args!("#{id}: {what}"));
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(if refused > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A line of `release`/`replay`'s report, written if stdout still listens. Best effort: a
/// closed stdout must not stop the run between a publish and its mark (the record would stay
/// held and a later release would publish it again).
fn report(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn list(args: &ListArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    // One more than asked tells whether there is a next page without counting.
    let mut records = store.list(&Query {
        status: args.status,
        device: args.device.clone(),
        policy: args.policy.clone(),
        after_id: args.after,
        limit: Some(args.limit.saturating_add(1)),
    })?;
    let more = records.len() as u64 > args.limit;
    records.truncate(usize::try_from(args.limit).unwrap_or(usize::MAX));
    // A closed stdout (`list --json | head -1`) stops the listing quietly: `crate::OutputClosed`.
    let mut out = crate::Out::stdout();
    if args.json {
        for r in &records {
            writeln!(out, "{}", record_json(r))?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        writeln!(out, "no quarantined messages match")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                utc(r.stored_at_ms, false),
                r.status.to_string(),
                trimmed(&r.device_id, 48),
                r.policy.clone().unwrap_or_else(|| "(unrouted)".into()),
                trimmed(&r.reason, 60),
            ]
        })
        .collect();
    let header = ["ID", "STORED (UTC)", "STATUS", "DEVICE", "POLICY", "REASON"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        writeln!(out, "{}", line(&row.each_ref().map(String::as_str)))?;
    }
    if more {
        if let Some(last) = records.last() {
            writeln!(out, "(more: --after {})", last.id)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn show(args: &ShowArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let record = store.get(args.id)?.with_context(|| {
        format!(
            "quarantine store {}: no record {}",
            args.store.store.display(),
            args.id
        )
    })?;
    let mut out = crate::Out::stdout();
    if args.json {
        writeln!(out, "{}", record_json(&record))?;
    } else {
        write!(out, "{}", record_text(&record))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn purge(args: &PurgeArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let n = store.purge(&Purge {
        ids: args.ids.clone(),
        older_than_ms: args.older_than,
        status: args.status,
    })?;
    // The purge is done; a closed stdout only loses this line.
    let mut out = crate::Out::stdout();
    writeln!(
        out,
        "purged {n} record{} from {}",
        if n == 1 { "" } else { "s" },
        args.store.store.display()
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `7d`, `36h`, `90m`, `45s`, `1500ms`, `2w` → milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid duration {s:?}: expected a whole number and a unit (ms, s, m, h, d, w), e.g. 7d or 12h")
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The payload as JSON where it can be read: JSON as is, CBOR decoded, text as a string.
fn readable(ct: ContentType, bytes: &[u8]) -> Option<Value> {
    super::eval::payload_json(ct, bytes).get("payload").cloned()
}

fn record_json(r: &Record) -> Value {
    let mut v = json!({
        "id": r.id,
        "status": r.status,
        "status_at_ms": r.status_at_ms,
        "note": r.note,
        "stored_at_ms": r.stored_at_ms,
        "received_at_ms": r.received_at_ms,
        "device_id": r.device_id,
        "topic": r.topic,
        "destination": r.destination,
        "source": r.source,
        "quarantined_by": r.policy,
        "reason": r.reason,
        "generation": r.generation,
        "versions": r.versions,
        "alerts": r.alerts,
        "attributes": r.attributes,
        "content_type": r.content_type,
        "payload_bytes": r.payload.len(),
    });
    if let Some(p) = readable(r.content_type, &r.payload) {
        v["payload"] = p;
    }
    // Always there: the exact bytes, whatever the payload is.
    v["payload_base64"] = json!(b64(&r.payload));
    if let Some(redacted) = &r.redacted_payload {
        if let Some(p) = readable(r.content_type, redacted) {
            v["redacted_payload"] = p;
        }
        v["redacted_payload_base64"] = json!(b64(redacted));
    }
    v
}

fn record_text(r: &Record) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "id:           {}", r.id);
    let _ = writeln!(
        s,
        "status:       {} (since {})",
        r.status,
        utc(r.status_at_ms, true)
    );
    if let Some(note) = &r.note {
        let _ = writeln!(s, "note:         {note}");
    }
    let _ = writeln!(s, "stored:       {}", utc(r.stored_at_ms, true));
    let _ = writeln!(s, "received:     {}", utc(r.received_at_ms, true));
    let _ = writeln!(s, "device:       {}", trimmed(&r.device_id, 512));
    let _ = writeln!(s, "topic:        {}", trimmed(&r.topic, 512));
    let _ = writeln!(
        s,
        "destination:  {}",
        trimmed(r.destination.as_deref().unwrap_or("(none)"), 512)
    );
    if let Some(source) = &r.source {
        let _ = writeln!(s, "gateway:      {source}");
    }
    let _ = writeln!(
        s,
        "policy:       {}",
        r.policy
            .as_deref()
            .unwrap_or("(unrouted: no route matched the topic)")
    );
    let _ = writeln!(s, "reason:       {}", trimmed(&r.reason, 4096));
    let _ = writeln!(s, "generation:   {}", r.generation);
    for (i, v) in r.versions.iter().enumerate() {
        let label = if i == 0 { "chain:" } else { "" };
        let _ = writeln!(
            s,
            "{label:<14}{} {} -> {}",
            v.policy,
            short(&v.version),
            v.verdict
        );
    }
    for (i, a) in r.alerts.iter().enumerate() {
        let label = if i == 0 { "alerts:" } else { "" };
        let _ = writeln!(
            s,
            "{label:<14}{} {} ({}): {}",
            json!(a.severity).as_str().unwrap_or_default(),
            trimmed(&a.code, 128),
            a.policy,
            trimmed(&a.detail, 4096)
        );
    }
    for (i, (k, v)) in r.attributes.iter().enumerate() {
        let label = if i == 0 { "attributes:" } else { "" };
        let _ = writeln!(s, "{label:<14}{} = {}", trimmed(k, 256), trimmed(v, 1024));
    }
    let _ = writeln!(
        s,
        "content type: {} ({} bytes)",
        r.content_type,
        r.payload.len()
    );
    payload_text(&mut s, "payload", r.content_type, &r.payload);
    if let Some(redacted) = &r.redacted_payload {
        // What a release forwards: the payload as the policies before the quarantining one
        // left it.
        payload_text(&mut s, "redacted payload", r.content_type, redacted);
    }
    s
}

fn payload_text(s: &mut String, name: &str, ct: ContentType, bytes: &[u8]) {
    match (ct, readable(ct, bytes)) {
        (ContentType::Text, Some(Value::String(text))) => {
            let _ = writeln!(s, "{name} (text):\n{text}");
        }
        (_, Some(v)) => {
            let how = if ct == ContentType::Cbor {
                " (CBOR, decoded to JSON)"
            } else {
                ""
            };
            let pretty = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
            let _ = writeln!(s, "{name}{how}:\n{pretty}");
        }
        (_, None) if ct != ContentType::Binary => {
            let _ = writeln!(s, "{name}: does not parse as {ct}");
        }
        (_, None) => {}
    }
    let _ = writeln!(s, "{name} (base64):\n{}", b64(bytes));
}

/// A digest shortened for a table (`sha256` hex is 64 characters).
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// At most `max` characters, on one line.
/// `text` made safe to print on one line of a terminal, at most `max` characters: control
/// characters become spaces, and characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width characters) are shown escaped, `\u{202e}`, so a device id
/// cannot make a row read as something else. Device ids, topics and reasons come from devices.
fn trimmed(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars() {
        if count >= max {
            out.pop();
            out.push('…');
            return out;
        }
        if c.is_control() {
            out.push(' ');
            count += 1;
        } else if matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
        {
            let escaped = format!("\\u{{{:x}}}", u32::from(c));
            count += escaped.len();
            out.push_str(&escaped);
        } else {
            out.push(c);
            count += 1;
        }
    }
    out
}

/// Milliseconds since the epoch as `2026-11-25 21:48:03` (UTC), with milliseconds when
/// `millis`.
fn utc(ms: u64, millis: bool) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if millis {
        let _ = write!(out, ".{:03} UTC", ms % 1000);
    }
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
