//! One device-message policy implemented six ways, run on the same 10,000 generated messages:
//! checks that every implementation agrees on every message, then times them round by round,
//! interleaved in one process, and prints a markdown table. See README.md.
//!
//! Run: `cargo run --release -p twinguard-compare`
//! (`COMPARE_ROUNDS=n`, default 15; `COMPARE_SKIP_FRESH=1` leaves out twinguard fresh;
//! `COMPARE_MAX_INSTANCES=n` caps the pooling allocator, for valgrind).

mod cedar;
mod gen;
mod policy;
mod rego;
mod twin;

use std::process::{Command, ExitCode};
use std::time::Instant;

use gen::{Kind, Sample};
use policy::{Decision, Engine, Inventory, NativeFull, NativeTyped};

const MESSAGES: usize = 10_000;
const SEED: u64 = 0x7769_6e67_7561_7264;

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twinguard-compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let rounds: usize = match std::env::var("COMPARE_ROUNDS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("COMPARE_ROUNDS={v:?} is not a positive integer"))?,
        Err(_) => 15,
    };
    let skip_fresh = env_flag("COMPARE_SKIP_FRESH");

    let ids = gen::inventory();
    let samples = gen::samples(MESSAGES, SEED);
    let inventory = Inventory::new(&ids);

    eprintln!("building the guest component...");
    let wasm = twin::build_guest()?;
    let mut engines: Vec<Box<dyn Engine>> = vec![
        Box::new(NativeTyped(inventory.clone())),
        Box::new(NativeFull(inventory)),
        Box::new(rego::Rego::new(&ids)?),
        Box::new(cedar::Cedar::new(&ids)?),
        Box::new(twin::Twin::new(
            "twinguard reuse (wasm guest)",
            &wasm,
            "reuse",
            &ids,
        )?),
    ];
    if !skip_fresh {
        engines.push(Box::new(twin::Twin::new(
            "twinguard fresh (wasm guest)",
            &wasm,
            "fresh",
            &ids,
        )?));
    }

    eprintln!("checking agreement on {MESSAGES} messages...");
    check(&samples, &mut engines)?;

    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); engines.len()];
    for round in 0..rounds {
        eprint!("round {}/{rounds}\r", round + 1);
        for k in 0..engines.len() {
            let e = (round + k) % engines.len();
            let engine = &mut engines[e];
            let start = Instant::now();
            for sample in &samples {
                engine.run(sample);
            }
            #[allow(clippy::cast_precision_loss)]
            times[e].push(start.elapsed().as_nanos() as f64 / MESSAGES as f64);
        }
    }
    eprintln!();

    report(&samples, &engines, &times, rounds, skip_fresh);
    Ok(())
}

/// Every engine must give every message the decision the typed native version gives, and that
/// one must be what the generator meant. The first disagreement ends the run.
fn check(samples: &[Sample], engines: &mut [Box<dyn Engine>]) -> Result<(), String> {
    for (i, sample) in samples.iter().enumerate() {
        let decisions: Vec<Decision> = engines.iter_mut().map(|e| e.decide(sample)).collect();
        let reference = &decisions[0];
        if decisions.iter().all(|d| d == reference) && *reference == sample.expect {
            continue;
        }
        let mut text = format!(
            "message {i} ({}): engines disagree\n  device {:?}, topic {:?}\n  payload {}\n  \
             generator expects: {}\n",
            sample.kind.name(),
            sample.device,
            sample.topic,
            String::from_utf8_lossy(&sample.payload),
            sample.expect
        );
        for (engine, decision) in engines.iter().zip(&decisions) {
            text.push_str(&format!("  {:<40} {decision}\n", engine.name()));
        }
        return Err(text);
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn shell(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn ratio(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}×")
    } else if x < 100.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.0}×")
    }
}

fn report(
    samples: &[Sample],
    engines: &[Box<dyn Engine>],
    times: &[Vec<f64>],
    rounds: usize,
    skip_fresh: bool,
) {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let date = shell("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_default();
    let rustc = shell("rustc", &["--version"]).unwrap_or_default();
    let mut command = String::new();
    if std::env::var_os("COMPARE_ROUNDS").is_some() {
        command.push_str(&format!("COMPARE_ROUNDS={rounds} "));
    }
    if skip_fresh {
        command.push_str("COMPARE_SKIP_FRESH=1 ");
    }
    command.push_str("cargo run --release -p twinguard-compare");
    let bytes: usize = samples.iter().map(|s| s.payload.len()).sum();
    let mix: Vec<String> = Kind::ALL
        .iter()
        .map(|kind| {
            let n = samples.iter().filter(|s| s.kind == *kind).count();
            format!("{} {n}", kind.name())
        })
        .collect();

    println!("machine: {nproc} CPUs (nproc), {}", cpu_model());
    println!("date:    {date}");
    println!("command: {command}");
    println!("rustc:   {rustc}");
    println!(
        "messages: {} (seed {SEED:#x}), mean payload {} bytes; {}",
        samples.len(),
        bytes / samples.len().max(1),
        mix.join(", ")
    );
    println!(
        "all {} implementations agree on every message; {rounds} rounds, implementation \
         order rotated each round",
        engines.len()
    );
    println!();
    println!("| implementation | ns/msg (median of {rounds} rounds) | × native typed parse |");
    println!("|---|---:|---:|");
    let base = median(&times[0]);
    for (engine, t) in engines.iter().zip(times) {
        let m = median(t);
        println!("| {} | {m:.0} | {} |", engine.name(), ratio(m / base));
    }
}
