//! The same policy written in Rust, Python and JavaScript: load time (compile, with and without
//! the compile cache) and per-message cost, in one process, rounds interleaved. pii-redact is the
//! Rust policy and its Python port; schema-guard and its JavaScript port. Every outcome is
//! checked to agree with the Rust policy's before anything is timed.
//!
//! Run: `cargo bench -p twinguard-tests --bench languages` (release). It builds the ports with
//! `scripts/build-python-policy.sh` and `scripts/build-js-policy.sh` (after
//! `scripts/python-tools.sh` and `scripts/js-tools.sh`); `PY_WASM` / `JS_WASM` name prebuilt
//! components instead. A port whose tools are missing is reported and left out.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Map};
use twinguard::{Config, ContentType, Message, Runtime};
use twinguard_fixtures as fixtures;

const ROUNDS: usize = 15;
const PER_ROUND: usize = 2_000;

/// A ~1 KB telemetry document with personal data in it (the evaluate bench's).
fn payload(with_pii: bool) -> Vec<u8> {
    let mut readings = Map::new();
    for i in 0..36 {
        readings.insert(format!("sensor_{i:02}"), json!(20.0 + f64::from(i) * 0.37));
    }
    let mut doc = json!({
        "device": "press-07",
        "seq": 184_467,
        "ts": 1_764_000_000_123_u64,
        "site": {"plant": "north", "line": 3, "cell": "c-12"},
        "status": "running",
        "fw": "2.14.1",
        "readings": readings,
    });
    if with_pii {
        doc["owner"] = json!({"name": "Ada Lovelace", "email": "ada@example.com", "badge": 4711});
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn message(with_pii: bool) -> Message {
    Message::new(
        "press-07",
        "plant/press-07/telemetry",
        ContentType::Json,
        payload(with_pii),
    )
}

/// One policy, in one language.
struct Subject {
    policy: &'static str,
    lang: &'static str,
    wasm: PathBuf,
    config: &'static str,
}

fn config(s: &Subject, cache: Option<&Path>) -> Config {
    let engine = cache.map_or(String::new(), |dir| {
        format!("[engine]\ncache-dir = \"{}\"\n", dir.display())
    });
    Config::from_toml(
        &format!(
            "{engine}[[policy]]\nname = \"p\"\npath = \"{}\"\n[policy.config]\n{}\n\
             [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
            s.wasm.display(),
            s.config
        ),
        ".",
    )
    .expect("bench config")
}

/// A port's component: `env` when set, else built by `script` (skipped, saying why, when the
/// build fails: its tools are missing).
fn port(env: &str, script: &str, src: &str, out: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    let root = fixtures::workspace();
    let script = root.join("scripts").join(script);
    let out = root.join("target").join(out);
    match Command::new(&script).arg(root.join(src)).arg(&out).output() {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            eprintln!(
                "{} failed, its language is left out: {}",
                script.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!(
                "cannot run {}: {e}; its language is left out",
                script.display()
            );
            None
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn main() {
    let mut subjects = vec![
        Subject {
            policy: "pii-redact",
            lang: "Rust",
            wasm: fixtures::wasm("pii-redact"),
            config: "remove = \"/owner/email\"\nmask = \"/owner/name\"\n",
        },
        Subject {
            policy: "schema-guard",
            lang: "Rust",
            wasm: fixtures::wasm("schema-guard"),
            config: "required = \"/device:string,/seq:integer,/ts:integer,/readings:object\"\n",
        },
    ];
    if let Some(wasm) = port(
        "PY_WASM",
        "build-python-policy.sh",
        "policies/pii-redact-py",
        "bench-ports/pii_redact_py.wasm",
    ) {
        subjects.push(Subject {
            policy: "pii-redact",
            lang: "Python",
            wasm,
            config: subjects[0].config,
        });
    }
    if let Some(wasm) = port(
        "JS_WASM",
        "build-js-policy.sh",
        "policies/schema-guard-js",
        "bench-ports/schema_guard_js.wasm",
    ) {
        subjects.push(Subject {
            policy: "schema-guard",
            lang: "JavaScript",
            wasm,
            config: subjects[1].config,
        });
    }

    // Load: a new runtime compiles (no cache), fills a cache, then reads it.
    println!("| policy | language | component | compile | cache fill | cache hit |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut runtimes = Vec::new();
    for s in &subjects {
        let size = std::fs::metadata(&s.wasm).map_or(0, |m| m.len());
        let time = |cache: Option<&Path>| {
            let t = Instant::now();
            let rt = Runtime::new(config(s, cache)).expect("the policy loads");
            (t.elapsed(), rt)
        };
        let (cold, rt) = time(None);
        let dir = tempfile::tempdir().expect("cache dir");
        let (fill, _) = time(Some(dir.path()));
        let (hit, _) = time(Some(dir.path()));
        println!(
            "| {} | {} | {:.1} MB | {} | {} | {} |",
            s.policy,
            s.lang,
            size as f64 / 1e6,
            secs(cold),
            secs(fill),
            secs(hit)
        );
        runtimes.push(rt);
    }

    // Agreement first: a timing of wrong answers means nothing.
    let messages = [message(true), message(false)];
    for (s, rt) in subjects.iter().zip(&runtimes) {
        let reference = subjects
            .iter()
            .zip(&runtimes)
            .find(|(r, _)| r.policy == s.policy && r.lang == "Rust")
            .map(|(_, rt)| rt)
            .expect("the Rust policy");
        for m in &messages {
            let (a, b) = (reference.evaluate(m), rt.evaluate(m));
            assert_eq!(
                (a.action.name(), &a.payload),
                (b.action.name(), &b.payload),
                "{} in {} disagrees with Rust",
                s.policy,
                s.lang
            );
        }
    }

    // Per message: rounds interleaved across languages, the median round reported.
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    for _ in 0..ROUNDS {
        for (i, rt) in runtimes.iter().enumerate() {
            let t = Instant::now();
            for n in 0..PER_ROUND {
                std::hint::black_box(rt.evaluate(&messages[n % 2]));
            }
            rounds[i].push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
    }
    println!();
    println!("| policy | language | per message (median of {ROUNDS} rounds) | × Rust |");
    println!("|---|---|---:|---:|");
    let medians: Vec<f64> = rounds.into_iter().map(median).collect();
    for (i, s) in subjects.iter().enumerate() {
        let rust = subjects
            .iter()
            .position(|r| r.policy == s.policy && r.lang == "Rust")
            .map_or(medians[i], |j| medians[j]);
        println!(
            "| {} | {} | {:.2} µs | {:.1} |",
            s.policy,
            s.lang,
            medians[i] / 1e3,
            medians[i] / rust
        );
    }
}
