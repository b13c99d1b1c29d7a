//! Quarantine store throughput: durable puts per second from one thread (one fsync each) and
//! from 8 and 32 threads (group commit: the puts queued while the writer was fsyncing share
//! the next commit). 1 KB JSON payload, a two-policy trace and one alert per record.
//!
//! Run: `cargo bench -p twinguard --bench store`. The file lives under the target directory,
//! on the real disk: a tmpfs would make every fsync free and the figures meaningless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use twinguard::store::QuarantineStore;
use twinguard::{Action, Alert, ContentType, Message, Outcome, PolicyTrace, Severity, Verdict};

const PUTS_PER_THREAD_SINGLE: usize = 1_000;
const PUTS_PER_THREAD_MANY: usize = 500;

fn message(i: usize) -> Message {
    let mut doc = format!(r#"{{"seq":{i},"device":"press-07","readings":{{"#);
    for s in 0..36 {
        doc.push_str(&format!(
            r#""sensor_{s:02}":{:.2},"#,
            20.0 + f64::from(s) * 0.37
        ));
    }
    doc.push_str(r#""status":"running"},"owner":{"name":"Ada Lovelace","badge":4711}}"#);
    Message::new(
        "press-07",
        "plant/press-07/telemetry",
        ContentType::Json,
        doc.into_bytes(),
    )
    .with_attribute("fw", "2.14.1")
}

fn outcome(message: &Message) -> Outcome {
    let policy: Arc<str> = "range-guard".into();
    let version: Arc<str> =
        "3f7a9c0d1e2b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5".into();
    {
        let mut outcome = Outcome::new(
            Action::Quarantine {
                policy: Some("range-guard".into()),
                reason: "sensor_07 out of range: 412.0 > 150.0".into(),
            },
            message.payload.clone(),
            1,
        );
        outcome.alerts = vec![Alert::new(
            Arc::clone(&policy),
            Arc::clone(&version),
            Severity::High,
            "out-of-range",
            "sensor_07 = 412.0",
        )];
        outcome.trace = vec![
            PolicyTrace {
                policy: "identity-guard".into(),
                version: Arc::clone(&version),
                verdict: Verdict::Allow,
                fuel_used: 1_200,
                elapsed: Duration::from_micros(3),
            },
            PolicyTrace {
                policy,
                version,
                verdict: Verdict::Quarantine,
                fuel_used: 2_400,
                elapsed: Duration::from_micros(4),
            },
        ];
        outcome
    }
}

/// Runs `threads × per_thread` puts on a fresh store; returns puts/s and the mean latency.
fn run(dir: &std::path::Path, threads: usize, per_thread: usize) -> (f64, Duration) {
    let path = dir.join(format!("bench-{threads}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = match QuarantineStore::open(&path) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let work: Vec<(Message, Outcome)> = (0..threads * per_thread)
        .map(|i| {
            let m = message(i);
            let o = outcome(&m);
            (m, o)
        })
        .collect();
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                let mut latency = Duration::ZERO;
                for (m, o) in &work[t * per_thread..(t + 1) * per_thread] {
                    let began = Instant::now();
                    if let Err(e) = store.put(m, o, Some("twin/press-07/telemetry")) {
                        panic!("{e}");
                    }
                    latency += began.elapsed();
                }
                latency
            })
        })
        .collect();
    let mut latency = Duration::ZERO;
    for h in handles {
        latency += h.join().unwrap_or_default();
    }
    let elapsed = start.elapsed();
    let total = threads * per_thread;
    assert_eq!(
        store.count(None).ok(),
        u64::try_from(total).ok(),
        "every put is in the store"
    );
    let rate = total as f64 / elapsed.as_secs_f64();
    (rate, latency / u32::try_from(total).unwrap_or(u32::MAX))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing that matters
    // either: this bench always runs in full, it is short.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    println!("quarantine store, durable puts (WAL, synchronous = FULL), 1 KB JSON payload");
    println!(
        "{:>8}  {:>8}  {:>10}  {:>13}",
        "threads", "puts", "puts/s", "mean latency"
    );
    for (threads, per_thread) in [
        (1, PUTS_PER_THREAD_SINGLE),
        (8, PUTS_PER_THREAD_MANY),
        (32, PUTS_PER_THREAD_MANY / 4),
    ] {
        let (rate, latency) = run(&dir, threads, per_thread);
        println!(
            "{threads:>8}  {:>8}  {rate:>10.0}  {:>10.2} ms",
            threads * per_thread,
            latency.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
