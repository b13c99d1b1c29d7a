//! What keeping policies' state across restarts costs per message: messages per second through
//! the judge flow with replay-guard (it writes one state entry for every message it accepts)
//! over 1,000 devices, on 1 and 2 threads, four ways interleaved in rounds in one process:
//! - **memory**: no state file (the baseline);
//! - **pipelined**: the gateway's flow: workers judge on, an acknowledging thread waits for one
//!   commit per batch of due acknowledgements, with at most [`WINDOW`] messages judged and not
//!   yet acknowledged per thread (the broker's `max_inflight_messages` is 20);
//! - **per message**: [`Judge::with_state`], each message waits for its own commit (the
//!   plugin's inline flow with `ack-after-commit = true`);
//! - **no wait**: the state journaled and nobody waiting for the commits (the plugin's
//!   default): what the writer's own CPU costs the judging threads.
//!
//! Also the 4-policy pack plus replay-guard, where the state write is a smaller share.
//!
//! Run: `cargo bench -p twinguard --bench state`.

mod support;
use twinguard_fixtures as fixtures;

use std::sync::Arc;
use std::time::Instant;

use twinguard::judge::Judge;
use twinguard::state::StateDb;
use twinguard::store::QuarantineStore;
use twinguard::{Config, ContentType, Message, Runtime};

const PER_THREAD: usize = 20_000;
const ROUNDS: usize = 3;
const DEVICES: usize = 1_000;
/// Messages judged and not yet acknowledged, per thread, in the pipelined flow.
const WINDOW: usize = 20;

fn config(pack: bool) -> Config {
    let replay = format!(
        "[[policy]]\nname = \"replay\"\npath = \"{}\"\n[policy.config]\nmax-age-ms = 86400000\n",
        fixtures::wasm("replay-guard").display()
    );
    let text = if pack {
        format!(
            "{replay}[[policy]]\nname = \"schema\"\npath = \"{schema}\"\n[policy.config]\n\
             required = \"/seq:integer,/ts:integer,/readings:object\"\n\
             [[policy]]\nname = \"range\"\npath = \"{range}\"\n[policy.config]\n\
             \"/readings/sensor_01\" = \"min=-40,max=150\"\n\
             [[policy]]\nname = \"pii\"\npath = \"{pii}\"\n[policy.config]\nmask = \"/owner/name\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"schema\", \"replay\", \"range\", \"pii\"]\n",
            schema = fixtures::wasm("schema-guard").display(),
            range = fixtures::wasm("range-guard").display(),
            pii = fixtures::wasm("pii-redact").display(),
        )
    } else {
        format!("{replay}[[route]]\nfilter = \"#\"\nchain = [\"replay\"]\n")
    };
    Config::from_toml(&text, ".").unwrap_or_else(|e| panic!("{e}"))
}

fn payload(seq: u64, ts: u64) -> Vec<u8> {
    support::telemetry(&format!(r#""seq":{seq},"ts":{ts},"#))
}

/// Messages per second through `judge` on `threads` threads; `run` numbers the run, so every
/// run's sequence numbers are above the last run's. With `acker`, each thread's messages are
/// acknowledged by a thread of their own after a commit of `acker`, as the gateway does.
fn run(judge: &Judge, acker: Option<&StateDb>, threads: usize, run: u64) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let judge = judge.clone();
            let acker = acker.cloned().map(|db| {
                let (judged, due) = std::sync::mpsc::sync_channel::<()>(WINDOW);
                let thread = std::thread::spawn(move || {
                    while due.recv().is_ok() {
                        while due.try_recv().is_ok() {}
                        db.sync_all().unwrap_or_else(|e| panic!("{e}"));
                    }
                });
                (judged, thread)
            });
            std::thread::spawn(move || {
                let ts = twinguard::now_ms();
                for i in 0..PER_THREAD {
                    // Thread t judges devices t, t + threads, ...: one device, one thread.
                    let d = (i * threads + t) % DEVICES;
                    let device = format!("press-{d:04}");
                    let seq = run * 1_000_000 + i as u64;
                    let m = Message::new(
                        device.as_str(),
                        format!("plant/{device}/telemetry"),
                        ContentType::Json,
                        payload(seq, ts),
                    );
                    let j = judge.judge(&m, None);
                    assert!(j.forward().is_some(), "{:?}", j.outcome);
                    if let Some((judged, _)) = &acker {
                        judged.send(()).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
                if let Some((judged, thread)) = acker {
                    drop(judged);
                    thread
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
    (threads * PER_THREAD) as f64 / start.elapsed().as_secs_f64()
}

/// The writer alone: changes per second for 1,000 devices, one commit per `batch` changes.
fn writer(dir: &std::path::Path) {
    use twinguard::{Scope, StateChange, StateJournal};
    let db = StateDb::open(dir.join("writer.state.db")).unwrap_or_else(|e| panic!("{e}"));
    println!("writer alone: changes/s (µs per commit) by changes per commit");
    for batch in [1usize, 4, 16, 256] {
        let n = 40_000;
        let start = Instant::now();
        for i in 0..n {
            let device = format!("press-{:04}", i % DEVICES);
            let value = (i as u64).to_le_bytes();
            db.record(StateChange {
                scope: Scope::Device {
                    policy: "replay",
                    device: &device,
                },
                key: "last-v1",
                value: Some(&value),
            });
            if (i + 1) % batch == 0 {
                db.sync_all().unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {batch:>4} per commit: {:>9.0} changes/s ({:.1} µs per commit)",
            n as f64 / secs,
            secs * 1e6 / (n / batch) as f64
        );
    }
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let store = QuarantineStore::open(dir.join("q.db")).unwrap_or_else(|e| panic!("{e}"));
    writer(&dir);
    if std::env::var_os("BENCH_WRITER_ONLY").is_some() {
        return;
    }
    println!(
        "judge flow, 1 KB JSON over {DEVICES} devices; {PER_THREAD} messages per thread per run"
    );
    println!(
        "{:<20} {:>7}  {:>10}  {:>12}  {:>6}  {:>8}  {:>12}  {:>6}  {:>8}  {:>10}  {:>6}  {:>8}",
        "chain",
        "threads",
        "memory/s",
        "pipelined/s",
        "ratio",
        "+ns/msg",
        "per msg/s",
        "ratio",
        "+ns/msg",
        "no wait/s",
        "ratio",
        "+ns/msg"
    );
    let mut n = 0;
    for (name, pack) in [("replay-guard", false), ("pack + replay-guard", true)] {
        let plain = Judge::new(
            Runtime::new(config(pack)).unwrap_or_else(|e| panic!("{e}")),
            store.clone(),
            None,
        );
        let db =
            StateDb::open(dir.join(format!("{name}.state.db"))).unwrap_or_else(|e| panic!("{e}"));
        let journaled = Runtime::builder(config(pack))
            .journal(Arc::new(db.clone()))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let pipelined = Judge::new(journaled, store.clone(), None);
        let per_message = pipelined.clone().with_state(Some(db.clone()));
        for threads in [1, 2] {
            let mut best = [0f64; 4];
            for _ in 0..ROUNDS {
                for (k, (judge, acker)) in [
                    (&plain, None),
                    (&pipelined, Some(&db)),
                    (&per_message, None),
                    (&pipelined, None),
                ]
                .into_iter()
                .enumerate()
                {
                    n += 1;
                    best[k] = best[k].max(run(judge, acker, threads, n));
                    // Untimed: what the writer still holds (a no-wait run's last gathering,
                    // up to 5 ms) is committed before the next run starts its clock.
                    db.sync_all().unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let extra = |rate: f64| (1.0 / rate - 1.0 / best[0]) * 1e9 * threads as f64;
            println!(
                "{name:<20} {threads:>7}  {:>10.0}  {:>12.0}  {:>6.3}  {:>8.0}  {:>12.0}  {:>6.3}  {:>8.0}  {:>10.0}  {:>6.3}  {:>8.0}",
                best[0],
                best[1],
                best[1] / best[0],
                extra(best[1]),
                best[2],
                best[2] / best[0],
                extra(best[2]),
                best[3],
                best[3] / best[0],
                extra(best[3]),
            );
        }
        let s = db.stats();
        println!(
            "  {} changes in {} commits ({:.1} per commit), {} failed",
            s.changes,
            s.commits,
            s.changes as f64 / s.commits.max(1) as f64,
            s.failed_commits
        );
    }
}
