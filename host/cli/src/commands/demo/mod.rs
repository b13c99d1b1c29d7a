//! `twinguard demo`: the simulated plant, attacks included, through the shipped policy pack, in
//! process; scored against the simulator's labels.

mod pack;
mod score;

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::sim::{SimConfig, SimMessage, Simulator, START_MS};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use twinguard::{Action, Config, Outcome, Runtime};

use score::{Scored, Tally};

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Devices in the simulated plant.
    #[arg(long, default_value_t = 200)]
    devices: u32,
    /// Simulated hours of plant operation (sensors report every minute or 15 s).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Stop after this many messages, whatever the simulated time.
    #[arg(long)]
    messages: Option<u64>,
    /// Seed of the simulation; the same seed gives the same traffic and attacks.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Evaluation threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Multiplies how often attacks are injected.
    #[arg(long, default_value_t = 1.0)]
    attack_intensity: f64,
    /// Clean traffic only (measures false alarms alone).
    #[arg(long)]
    no_attacks: bool,
    /// Folder for quarantined messages, alerts, misses and false alarms.
    #[arg(long, default_value = "twinguard-demo")]
    out: PathBuf,
    /// Folder holding the pack's built components (see `--help` of the README's build).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Your own runtime config instead of the pack's default (see `--print-config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the default config and exit (it reads the plant's registry, written to
    /// `OUT/devices.csv`).
    #[arg(long)]
    print_config: bool,
    /// Print the summary as JSON on standard output instead of tables.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a detection or false-alarm target is missed.
    #[arg(long)]
    check: bool,
}

/// Output files, shared by the workers (file I/O, off the evaluation path).
struct Sinks {
    quarantine: Mutex<BufWriter<File>>,
    alerts: Mutex<BufWriter<File>>,
    missed: Mutex<BufWriter<File>>,
    false_alarms: Mutex<BufWriter<File>>,
}

impl Sinks {
    fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
        let open = |name: &str| -> Result<Mutex<BufWriter<File>>> {
            let path = dir.join(name);
            let f =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            Ok(Mutex::new(BufWriter::new(f)))
        };
        Ok(Self {
            quarantine: open("quarantine.ndjson")?,
            alerts: open("alerts.ndjson")?,
            missed: open("missed.ndjson")?,
            false_alarms: open("false-alarms.ndjson")?,
        })
    }

    fn write(sink: &Mutex<BufWriter<File>>, line: &Value) -> Result<()> {
        // A worker that panicked while writing leaves a usable writer behind.
        let mut w = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(w, "{line}")?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        for s in [
            &self.quarantine,
            &self.alerts,
            &self.missed,
            &self.false_alarms,
        ] {
            s.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .flush()?;
        }
        Ok(())
    }
}

/// The message as an `eval` input line, so quarantined messages can be fed back to
/// `twinguard eval`: exactly one of `payload` (JSON) and `payload_base64` (anything else).
fn message_json(sim: &SimMessage) -> Value {
    let m = &sim.message;
    let mut v = json!({
        "device_id": m.device_id,
        "topic": m.topic,
        "content_type": m.content_type.as_str(),
        "received_at_ms": m.received_at_ms,
    });
    let mut payload = super::eval::payload_json(m.content_type, &m.payload);
    if payload.get("payload_base64").is_some() {
        if let Some(p) = payload.as_object_mut() {
            p.remove("payload");
        }
    }
    if let (Value::Object(o), Value::Object(p)) = (&mut v, payload) {
        o.extend(p);
    }
    v
}

/// A readable view of a payload that is not JSON text (CBOR as JSON), for the output files.
fn payload_view(sim: &SimMessage) -> Value {
    let m = &sim.message;
    match m.content_type {
        twinguard::ContentType::Json => Value::Null,
        ct => super::eval::payload_json(ct, &m.payload)
            .get("payload")
            .cloned()
            .unwrap_or(Value::Null),
    }
}

fn record_outputs(
    sinks: &Sinks,
    sim: &SimMessage,
    outcome: &Outcome,
    scored: Scored,
) -> Result<()> {
    if let Action::Quarantine { policy, reason } = &outcome.action {
        // `message` is an `eval` input line: `jq -c .message` feeds it back for a second look.
        let line = json!({
            "quarantined_by": policy,
            "reason": reason,
            "alerts": outcome.alerts,
            "message": message_json(sim),
            "payload_decoded": payload_view(sim),
        });
        Sinks::write(&sinks.quarantine, &line)?;
    }
    for alert in &outcome.alerts {
        Sinks::write(
            &sinks.alerts,
            &json!({
                "device_id": sim.message.device_id,
                "topic": sim.message.topic,
                "received_at_ms": sim.message.received_at_ms,
                "action": outcome.action.name(),
                "alert": alert,
            }),
        )?;
    }
    let verdict = || {
        json!({
            "action": outcome.action.name(),
            "alerts": outcome.alerts.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(),
            "culprits": score::culprits(outcome),
        })
    };
    match scored {
        Scored::Fine => {}
        Scored::Missed => {
            let mut line = message_json(sim);
            if let Some(label) = &sim.label {
                line["scenario"] = json!(label.scenario.name());
                line["episode"] = json!(label.episode);
            }
            line["outcome"] = verdict();
            Sinks::write(&sinks.missed, &line)?;
        }
        Scored::FalseAlarm => {
            let mut line = message_json(sim);
            line["outcome"] = verdict();
            if let Action::Quarantine { reason, .. } = &outcome.action {
                line["reason"] = json!(reason);
            }
            line["alerts"] = json!(outcome.alerts);
            Sinks::write(&sinks.false_alarms, &line)?;
        }
    }
    Ok(())
}

fn shard(device: &str, workers: usize) -> usize {
    // Every message of a device goes to one worker, in order: per-device state (sequence
    // numbers, token buckets, baselines) sees the device's stream as the device sent it.
    let mut h = std::hash::DefaultHasher::new();
    device.hash(&mut h);
    usize::try_from(h.finish() % workers as u64).unwrap_or(0)
}

struct Progress {
    done: AtomicU64,
    flagged: AtomicU64,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if !(args.hours > 0.0 && args.hours.is_finite()) {
        bail!("--hours must be a positive number, got {}", args.hours);
    }
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if !(args.attack_intensity >= 0.0 && args.attack_intensity.is_finite()) {
        bail!(
            "--attack-intensity must be 0 or more, got {}",
            args.attack_intensity
        );
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked positive above
    let duration_ms = (args.hours * 3_600_000.0) as u64;
    let sim_config = SimConfig {
        devices: args.devices,
        duration_ms,
        max_messages: args.messages,
        seed: args.seed,
        attacks: !args.no_attacks,
        attack_intensity: args.attack_intensity,
        ..SimConfig::default()
    };
    let sim = Simulator::new(sim_config);

    let config = match &args.config {
        Some(path) => twinguard::FileConfig::from_file(path)?.runtime,
        None => {
            let dir = pack::policy_dir(args.policy_dir.as_deref())?;
            // The default config is generated from the plant's registry, which it reads.
            fs::create_dir_all(&args.out).with_context(|| {
                format!("cannot create the output folder {}", args.out.display())
            })?;
            let registry = std::path::absolute(args.out.join("devices.csv"))
                .with_context(|| format!("cannot resolve {}", args.out.display()))?;
            fs::write(&registry, sim.registry())
                .with_context(|| format!("cannot write the registry {}", registry.display()))?;
            let names = crate::sim::staff();
            let text = pack::config(
                &dir,
                &pack::Plant {
                    registry: &registry,
                    classes: &sim.classes(),
                    names: &names,
                },
            );
            if args.print_config {
                let mut out = crate::Out::stdout();
                write!(out, "{text}")?;
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            Config::from_toml(&text, ".").context("the demo's default config")?
        }
    };
    if args.print_config {
        bail!("--print-config prints the default config; drop --config");
    }
    let load = Instant::now();
    let runtime = Runtime::new(config)?;
    let load_time = load.elapsed();
    let sinks = Sinks::create(&args.out)?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .max(1);

    let progress = Progress {
        done: AtomicU64::new(0),
        flagged: AtomicU64::new(0),
    };
    let bar = progress_bar(args.json, duration_ms);
    let started = Instant::now();
    let tally = std::thread::scope(|scope| -> Result<Tally> {
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for _ in 0..workers {
            // Bounded: the simulator waits for the workers instead of filling memory.
            let (tx, rx) = mpsc::sync_channel::<Vec<SimMessage>>(8);
            senders.push(tx);
            let (runtime, sinks, progress) = (&runtime, &sinks, &progress);
            handles.push(scope.spawn(move || -> Result<Tally> {
                let mut tally = Tally::default();
                for batch in rx {
                    let mut flagged = 0;
                    for sim in &batch {
                        let outcome = runtime.evaluate(&sim.message);
                        let scored = tally.record(sim.label.as_ref(), &outcome);
                        if score::flagged(&outcome) {
                            flagged += 1;
                        }
                        record_outputs(sinks, sim, &outcome, scored)?;
                    }
                    progress
                        .done
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    progress.flagged.fetch_add(flagged, Ordering::Relaxed);
                }
                Ok(tally)
            }));
        }
        const BATCH: usize = 256;
        let mut batches: Vec<Vec<SimMessage>> =
            (0..workers).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut last_draw = Instant::now();
        for sim in sim {
            let w = shard(&sim.message.device_id, workers);
            let at = sim.message.received_at_ms;
            batches[w].push(sim);
            if batches[w].len() == BATCH {
                let full = std::mem::replace(&mut batches[w], Vec::with_capacity(BATCH));
                if senders[w].send(full).is_err() {
                    break; // the worker failed; its error is reported below
                }
                if last_draw.elapsed() > Duration::from_millis(100) {
                    last_draw = Instant::now();
                    bar.set_position(at.saturating_sub(START_MS) / 60_000);
                    bar.set_message(format!(
                        "{} messages judged, {} flagged",
                        progress.done.load(Ordering::Relaxed),
                        progress.flagged.load(Ordering::Relaxed)
                    ));
                }
            }
        }
        for (w, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                let _ = senders[w].send(batch);
            }
        }
        drop(senders);
        let mut total = Tally::default();
        for h in handles {
            let t = h
                .join()
                .map_err(|_| anyhow::anyhow!("a demo worker panicked"))??;
            total.merge(t);
        }
        Ok(total)
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    sinks.flush()?;

    let run = json!({
        "devices": args.devices,
        "simulated_hours": args.hours,
        "seed": args.seed,
        "workers": workers,
        "attacks": !args.no_attacks,
        "attack_intensity": args.attack_intensity,
        "policy_load_ms": load_time.as_secs_f64() * 1e3,
        "output": args.out.display().to_string(),
    });
    let summary = tally.summary(run, elapsed);
    let path = args.out.join("summary.json");
    fs::write(&path, format!("{summary:#}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    // summary.json is written by now; a closed stdout (`demo | head`) only loses the report,
    // quietly (`crate::OutputClosed`), and `--check` still decides the exit code.
    let printed = (|| {
        let mut out = crate::Out::stdout();
        if args.json {
            writeln!(out, "{summary:#}")?;
        } else {
            write!(out, "{}", render(&summary))?;
        }
        out.flush()
    })();
    match printed {
        Err(e) if !e.is::<crate::OutputClosed>() => return Err(e),
        _ => {}
    }
    if args.check && summary["targets_met"] != json!(true) {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(quiet: bool, duration_ms: u64) -> ProgressBar {
    let bar =
        ProgressBar::with_draw_target(Some(duration_ms / 60_000), ProgressDrawTarget::stderr());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("simulated {pos}/{len} min [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The human summary.
fn render(s: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let run = &s["run"];
    let totals = &s["totals"];
    let _ = writeln!(
        o,
        "twinguard demo: {} devices, {} simulated hours, seed {}, {} workers",
        run["devices"], run["simulated_hours"], run["seed"], run["workers"]
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<17} {:<8} {:>7} {:>7} {:>7} {:>8}  note",
        "scenario", "unit", "sent", "caught", "missed", "caught%"
    );
    for row in s["scenarios"].as_array().into_iter().flatten() {
        let sent = u(&row["sent"]);
        if sent == 0 {
            let _ = writeln!(
                o,
                "{:<17} (none injected)",
                row["scenario"].as_str().unwrap_or("")
            );
            continue;
        }
        let mark = if row["target_met"] == json!(true) {
            ""
        } else {
            "  BELOW TARGET"
        };
        let mut note = String::new();
        if row["unit"] == "episode" {
            let _ = write!(
                note,
                "{} of {} messages; caught after {:.1} messages on average",
                u(&row["messages_caught"]),
                u(&row["messages"]),
                f(&row["mean_detection_delay_messages"]) + 1.0,
            );
        }
        let _ = writeln!(
            o,
            "{:<17} {:<8} {:>7} {:>7} {:>7} {:>7.2}%  {note}{mark}",
            row["scenario"].as_str().unwrap_or(""),
            row["unit"].as_str().unwrap_or(""),
            sent,
            u(&row["caught"]),
            u(&row["missed"]),
            f(&row["caught_rate"]) * 100.0,
        );
    }
    let clean = &s["clean"];
    let by: Vec<String> = clean["by_policy"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        o,
        "\nclean traffic: {} messages, {} false alarms ({:.3}%){}{}",
        u(&clean["messages"]),
        u(&clean["false_alarms"]),
        f(&clean["false_alarm_rate"]) * 100.0,
        if by.is_empty() {
            String::new()
        } else {
            format!(" by {}", by.join(", "))
        },
        if clean["target_met"] == json!(true) {
            ""
        } else {
            "  ABOVE TARGET"
        },
    );
    let _ = writeln!(
        o,
        "\n{:<23} {:>11} {:>7} {:>11} {:>8} {:>9} {:>8} {:>8}",
        "policy",
        "evaluations",
        "faults",
        "quarantined",
        "alerted",
        "redacted",
        "mean µs",
        "p99 µs"
    );
    for p in s["policies"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<23} {:>11} {:>7} {:>11} {:>8} {:>9} {:>8.2} {:>8.2}",
            p["policy"].as_str().unwrap_or(""),
            u(&p["evaluations"]),
            u(&p["faults"]),
            u(&p["quarantined"]),
            u(&p["alerted"]),
            u(&p["redacted"]),
            f(&p["mean_us"]),
            f(&p["p99_us"]),
        );
    }
    let _ = writeln!(
        o,
        "\n{} messages in {:.2} s: {:.0} messages/s ({} forwarded, {} quarantined, {} with alerts, {} redacted)",
        u(&totals["messages"]),
        f(&totals["seconds"]),
        f(&totals["messages_per_second"]),
        u(&totals["forwarded"]),
        u(&totals["quarantined"]),
        u(&totals["alerted"]),
        u(&totals["redacted"]),
    );
    let out = run["output"].as_str().unwrap_or("");
    let _ = writeln!(
        o,
        "written to {out}/: quarantine.ndjson, alerts.ndjson, missed.ndjson, false-alarms.ndjson, summary.json"
    );
    let _ = writeln!(
        o,
        "targets (every scenario >= {:.0}% caught, false alarms <= {:.1}%): {}",
        score::CATCH_TARGET * 100.0,
        score::FALSE_ALARM_TARGET * 100.0,
        if s["targets_met"] == json!(true) {
            "met"
        } else {
            "NOT met"
        }
    );
    let mut trimmed = o.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    trimmed.push('\n');
    trimmed
}
