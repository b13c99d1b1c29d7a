//! Evaluation latency while the policy set is reloaded without pause, against the same
//! threads evaluating with no reloads; and how long a reload takes when its components come
//! from the compile cache.
//!
//! Run: `cargo bench -p twinguard --bench reload`. With `BENCH_NO_CACHE=1` there is no compile
//! cache: a reload then reuses the active generation's compiled components.
//! `BENCH_RELOAD_EVERY_MS=N` paces the reloads (default: one after the other, without pause).

use twinguard_fixtures as fixtures;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use twinguard::{Action, Config, ContentType, Message, Runtime};

const THREADS: usize = 2;
const PHASE: Duration = Duration::from_secs(4);

fn no_cache() -> bool {
    std::env::var("BENCH_NO_CACHE").is_ok_and(|v| v == "1")
}

fn config(kind: &str, cache: &std::path::Path) -> Config {
    let pii = fixtures::wasm("pii-redact");
    let schema = fixtures::wasm("schema-guard");
    let engine = if no_cache() {
        String::new()
    } else {
        format!("[engine]\ncache-dir = \"{}\"\n", cache.display())
    };
    Config::from_toml(
        &format!(
            "{engine}\
             [[policy]]\nname = \"schema\"\npath = \"{}\"\n[policy.config]\nrequired = \"/seq:integer\"\n\
             [[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\n{kind} = \"/owner/name\"\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"schema\", \"pii\"]\n",
            schema.display(),
            pii.display()
        ),
        ".",
    )
    .unwrap()
}

/// Evaluates on THREADS threads for PHASE; returns the latency histogram (µs) and the count
/// of messages whose outcome was not the redaction every generation here makes.
fn evaluate_for(runtime: &Runtime) -> (Histogram<u64>, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let runtime = runtime.clone();
            let stop = Arc::clone(&stop);
            let wrong = Arc::clone(&wrong);
            std::thread::spawn(move || {
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut i = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let m = Message::new(
                        format!("d{t}-{}", i % 64),
                        format!("plant/d{t}/telemetry"),
                        ContentType::Json,
                        format!(r#"{{"seq":{i},"t":21.5,"owner":{{"name":"Ada"}}}}"#).into_bytes(),
                    );
                    let start = Instant::now();
                    let outcome = runtime.evaluate(&m);
                    let _ =
                        h.record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                    if outcome.action != Action::Redact {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                h
            })
        })
        .collect();
    std::thread::sleep(PHASE);
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in threads {
        all.add(t.join().unwrap()).unwrap();
    }
    let n = all.len();
    (all, n, wrong.load(Ordering::Relaxed))
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let runtime = Runtime::new(config("mask", cache.path())).unwrap();
    let cold = started.elapsed();
    // Warm the cache with the other configuration too.
    runtime.reload(&config("remove", cache.path())).unwrap();

    let (steady, steady_n, steady_wrong) = evaluate_for(&runtime);

    // One reload every BENCH_RELOAD_EVERY_MS (default 0: without pause).
    let pace = Duration::from_millis(
        std::env::var("BENCH_RELOAD_EVERY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let runtime = runtime.clone();
        let stop = Arc::clone(&stop);
        let dir = cache.path().to_path_buf();
        std::thread::spawn(move || {
            let configs = [config("mask", &dir), config("remove", &dir)];
            let mut times = Histogram::<u64>::new(3).unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                runtime.reload(&configs[i % 2]).unwrap();
                let _ =
                    times.record(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                i += 1;
                std::thread::sleep(pace.saturating_sub(start.elapsed()));
            }
            times
        })
    };
    let (busy, busy_n, busy_wrong) = evaluate_for(&runtime);
    stop.store(true, Ordering::Relaxed);
    let reloads = reloader.join().unwrap();

    println!(
        "\nfirst build (compile, 2 policies): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "reloads during the run: {} ({}, 2 policies each): p50 {:.2} ms, p99 {:.2} ms",
        reloads.len(),
        if no_cache() {
            "no compile cache"
        } else {
            "compile cache set"
        },
        reloads.value_at_quantile(0.5) as f64 / 1e3,
        reloads.value_at_quantile(0.99) as f64 / 1e3
    );
    let reloading = if pace.is_zero() {
        "reloading without pause".to_string()
    } else {
        format!("reloading every {} ms", pace.as_millis())
    };
    println!("\n| {THREADS} threads, schema + pii chain | messages | not redacted | p50 µs | p99 µs | p99.9 µs |");
    println!("|---|---|---|---|---|---|");
    for (name, h, n, wrong) in [
        ("steady", &steady, steady_n, steady_wrong),
        (reloading.as_str(), &busy, busy_n, busy_wrong),
    ] {
        println!(
            "| {name} | {n} | {wrong} | {} | {} | {} |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }
}
