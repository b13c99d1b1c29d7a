//! The decision log's cost at full rate: messages per second through the judge flow (the
//! four-policy pack of the Mosquitto bench, 1 KB JSON, every message allowed or redacted)
//! without a decision log, with one recording digests, and with one recording the redacted
//! payload; on 1 and 2 threads, the three variants interleaved in rounds in one process. Each
//! logged run ends with a flush (every record written and fsynced) inside the timed part, and
//! the chain is verified after.
//!
//! Run: `cargo bench -p twinguard --bench decision_log`.

mod support;
use twinguard_fixtures as fixtures;

use std::time::Instant;

use twinguard::decision_log::{self, DecisionLog, DecisionLogConfig};
use twinguard::judge::Judge;
use twinguard::store::QuarantineStore;
use twinguard::{Config, ContentType, Message, Runtime};

const PER_THREAD: usize = 40_000;
const ROUNDS: usize = 3;

fn payload(device: &str, seq: u64) -> Vec<u8> {
    support::telemetry(&format!(
        r#""device":"{device}","seq":{seq},"ts":{},"#,
        1_764_000_000_000 + seq
    ))
}

fn runtime() -> Runtime {
    let text = format!(
        "[[policy]]\nname = \"schema\"\npath = \"{schema}\"\n[policy.config]\n\
         required = \"/device:string,/seq:integer,/ts:integer,/readings:object\"\n\
         [[policy]]\nname = \"identity\"\npath = \"{identity}\"\n[policy.config]\n\
         topic-segment = 1\ninventory = \"press-07,press-08\"\npayload-field = \"/device\"\n\
         [[policy]]\nname = \"range\"\npath = \"{range}\"\n[policy.config]\n\
         \"/readings/sensor_01\" = \"min=-40,max=150\"\n\
         [[policy]]\nname = \"pii\"\npath = \"{pii}\"\n[policy.config]\nmask = \"/owner/name\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"schema\", \"identity\", \"range\", \"pii\"]\n",
        schema = fixtures::wasm("schema-guard").display(),
        identity = fixtures::wasm("identity-guard").display(),
        range = fixtures::wasm("range-guard").display(),
        pii = fixtures::wasm("pii-redact").display(),
    );
    Runtime::new(Config::from_toml(&text, ".").unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn log(dir: &std::path::Path, name: &str, payload: &str) -> DecisionLog {
    let path = dir.join(name);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let config: DecisionLogConfig = toml::from_str(&format!(
        "path = \"{}\"\npayload = \"{payload}\"\n",
        path.display()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    DecisionLog::open(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// Messages per second through `judge` on `threads` threads (flushing `log` inside the timing).
fn run(judge: &Judge, log: Option<&DecisionLog>, threads: usize, round: usize) -> f64 {
    let base = (round * 8 + threads) as u64 * 1_000_000;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let judge = judge.clone();
            std::thread::spawn(move || {
                let device = if t == 0 { "press-07" } else { "press-08" };
                for i in 0..PER_THREAD {
                    let m = Message::new(
                        device,
                        format!("plant/{device}/telemetry"),
                        ContentType::Json,
                        payload(device, base + i as u64),
                    );
                    let j = judge.judge(&m, None);
                    assert!(j.forward().is_some(), "{:?}", j.outcome.action);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
    if let Some(l) = log {
        l.flush().unwrap_or_else(|e| panic!("{e}"));
    }
    (threads * PER_THREAD) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("decision-log-bench");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(dir.join("q.db"));
    let store = QuarantineStore::open(dir.join("q.db")).unwrap_or_else(|e| panic!("{e}"));
    let runtime = runtime();
    let plain = Judge::new(runtime, store, None);
    let digest_log = log(&dir, "digest.ndjson", "digest");
    let redacted_log = log(&dir, "redacted.ndjson", "redacted");
    let digest = plain.clone().with_decision_log(Some(digest_log.clone()));
    let redacted = plain.clone().with_decision_log(Some(redacted_log.clone()));
    println!("judge flow, 4-policy pack, 1 KB JSON; {PER_THREAD} messages per thread per run");
    println!(
        "{:>7}  {:>12}  {:>12}  {:>8}  {:>12}  {:>8}",
        "threads", "no log/s", "digest/s", "ratio", "redacted/s", "ratio"
    );
    for threads in [1, 2] {
        let mut best = [0f64; 3];
        for round in 0..ROUNDS {
            for (k, (judge, log)) in [
                (&plain, None),
                (&digest, Some(&digest_log)),
                (&redacted, Some(&redacted_log)),
            ]
            .into_iter()
            .enumerate()
            {
                best[k] = best[k].max(run(judge, log, threads, round * 3 + k));
            }
        }
        println!(
            "{threads:>7}  {:>12.0}  {:>12.0}  {:>8.3}  {:>12.0}  {:>8.3}",
            best[0],
            best[1],
            best[1] / best[0],
            best[2],
            best[2] / best[0]
        );
    }
    drop((digest, redacted));
    for (name, log) in [("digest", digest_log), ("redacted", redacted_log)] {
        log.flush().unwrap_or_else(|e| panic!("{e}"));
        let files: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(&format!("{name}.ndjson")))
            .collect();
        let report = decision_log::verify(&files).unwrap_or_else(|e| panic!("{e}"));
        let bytes: u64 = files
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "{name}: {} records verified, {:.0} bytes per record",
            report.records,
            bytes as f64 / report.records as f64
        );
    }
}
