//! 5 and 6. The policy as a twinguard guest component (`guest/`), run by
//! `twinguard_core::Runtime` in `reuse` and `fresh` isolation.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use twinguard_core::{Action, Config, Outcome, Runtime, Verdict};

use crate::gen::Sample;
use crate::policy::{Decision, Engine, Keys, PII_KEYS};

/// The workspace root (this crate lives in `bench/compare`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("../.."), Path::to_path_buf)
}

/// Builds the guest (`cargo build --release --target wasm32-wasip2`) into its own target
/// folder, as the test fixtures do, so the inner cargo never waits on the outer build's lock.
/// `COMPARE_GUEST_WASM` names a prebuilt component instead.
pub fn build_guest() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("COMPARE_GUEST_WASM") {
        return Ok(PathBuf::from(path));
    }
    let target = workspace().join("target/compare-guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "twinguard-compare-guest",
        ])
        .env("CARGO_TARGET_DIR", &target)
        // Flags meant for the host build must not reach the guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|e| format!("cannot run cargo to build the guest: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the guest failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let wasm = target.join("wasm32-wasip2/release/twinguard_compare_guest.wasm");
    if wasm.exists() {
        Ok(wasm)
    } else {
        Err(format!("the guest built but {} is missing", wasm.display()))
    }
}

/// A runtime with the guest as its one policy, routed from every topic.
pub struct Twin {
    name: &'static str,
    runtime: Runtime,
}

impl Twin {
    /// `isolation` is `reuse` or `fresh`.
    pub fn new(
        name: &'static str,
        wasm: &Path,
        isolation: &str,
        inventory: &[String],
    ) -> Result<Self, String> {
        let toml = format!(
            "[[policy]]\nname = \"compare\"\npath = {path:?}\nisolation = \"{isolation}\"\n\
             [policy.config]\ninventory = \"{inventory}\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"compare\"]\n",
            path = wasm.display().to_string(),
            inventory = inventory.join(","),
        );
        let mut config =
            Config::from_toml(&toml, ".").map_err(|e| format!("config: {e}\n{toml}"))?;
        // Under valgrind (`scripts/instructions.sh`-style counting) the pooling allocator's
        // reservation for the default 256 instances is more address space than it can map.
        if let Ok(v) = std::env::var("COMPARE_MAX_INSTANCES") {
            config.engine.max_instances = v
                .parse()
                .map_err(|_| format!("COMPARE_MAX_INSTANCES={v:?} is not a positive integer"))?;
        }
        let runtime = Runtime::new(config).map_err(|e| format!("runtime ({isolation}): {e}"))?;
        Ok(Self { name, runtime })
    }
}

/// The top-level PII keys of a JSON payload.
fn pii_keys(payload: &[u8]) -> Option<Keys> {
    let serde_json::Value::Object(doc) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    let mut bits = 0;
    for (i, key) in PII_KEYS.iter().enumerate() {
        if doc.contains_key(*key) {
            bits |= 1 << i;
        }
    }
    Some(Keys(bits))
}

/// The outcome as a [`Decision`]: a redaction's keys are those present before and absent after.
fn decision(sample: &Sample, outcome: &Outcome) -> Decision {
    if let Some(step) = outcome
        .trace
        .iter()
        .find(|step| matches!(step.verdict, Verdict::Fault(_)))
    {
        return Decision::Unexpected(format!("fault: {:?}", step.verdict));
    }
    match &outcome.action {
        Action::Allow => Decision::Allow,
        Action::Quarantine { .. } => Decision::Quarantine,
        Action::Redact => match (pii_keys(&sample.payload), pii_keys(&outcome.payload)) {
            (Some(before), Some(after)) => Decision::Redact(Keys(before.0 & !after.0)),
            _ => Decision::Unexpected("redacted payload does not parse".into()),
        },
        other => Decision::Unexpected(format!("action {}", other.name())),
    }
}

impl Engine for Twin {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decide(&mut self, sample: &Sample) -> Decision {
        decision(sample, &self.runtime.evaluate(&sample.message))
    }

    /// Timed: the evaluation alone (the outcome carries the redacted payload; recovering the
    /// key list from it is only for the agreement check).
    fn run(&mut self, sample: &Sample) {
        black_box(self.runtime.evaluate(black_box(&sample.message)));
    }
}
