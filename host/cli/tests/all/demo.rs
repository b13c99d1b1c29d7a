//! `twinguard demo` end to end: the real binary, the real pack built from source, the simulator.
//! A short, attack-dense run; the full-size figures are in the README and BENCHMARKS.md.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use twinguard_fixtures as fixtures;

fn demo(out: &Path, extra: &[&str]) -> Output {
    let dir = fixtures::wasm("identity-guard")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args([
            "demo",
            "--devices",
            "40",
            "--hours",
            "8",
            "--attack-intensity",
            "3",
        ])
        .arg("--policy-dir")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "demo failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_scenario_is_caught_and_clean_traffic_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = summary(&demo(tmp.path(), &["--json", "--seed", "11"]));
    let scenarios = s["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 19);
    for row in scenarios {
        let name = &row["scenario"];
        assert!(row["sent"].as_u64().unwrap() > 0, "{name} not injected");
        // Each scenario has its policy: remove one and its row drops to (near) zero.
        assert!(
            row["caught_rate"].as_f64().unwrap() >= 0.95,
            "{name}: {row}"
        );
    }
    let clean = &s["clean"];
    assert!(clean["messages"].as_u64().unwrap() > 10_000);
    assert!(
        clean["false_alarm_rate"].as_f64().unwrap() <= 0.002,
        "{clean}"
    );

    // Each pack policy ran, none faulted.
    let policies = s["policies"].as_array().unwrap();
    // identity, replay, rate, range, anomaly, two pii, commands, and a schema per class.
    assert_eq!(policies.len(), 12, "{policies:?}");
    for p in policies {
        assert!(p["evaluations"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["faults"], 0, "{p}");
    }

    // The output folder holds what the summary names, readable.
    let quarantined = lines(&tmp.path().join("quarantine.ndjson"));
    assert_eq!(
        quarantined.len() as u64,
        s["totals"]["quarantined"].as_u64().unwrap()
    );
    assert!(quarantined.iter().all(|q| q["reason"].is_string()));
    let alerts = lines(&tmp.path().join("alerts.ndjson"));
    assert!(alerts.len() as u64 >= s["totals"]["alerted"].as_u64().unwrap());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(written["scenarios"], s["scenarios"]);
}

#[test]
fn same_seed_same_score_and_clean_traffic_alone() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let args = [
        "--json",
        "--seed",
        "5",
        "--workers",
        "2",
        "--messages",
        "8000",
    ];
    let x = summary(&demo(a.path(), &args));
    let y = summary(&demo(b.path(), &args));
    assert_eq!(x["scenarios"], y["scenarios"]);
    assert_eq!(x["clean"], y["clean"]);

    let c = tempfile::tempdir().unwrap();
    let z = summary(&demo(
        c.path(),
        &["--json", "--no-attacks", "--messages", "8000"],
    ));
    assert!(z["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["sent"] == 0));
    assert_eq!(z["clean"]["messages"], 8000);
}

#[test]
fn quarantined_messages_replay_through_eval() {
    // The quarantine file is `eval` input: an operator can re-judge what was held back.
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(tmp.path(), &["--json", "--messages", "6000"]);
    summary(&out);
    let dir = fixtures::wasm("identity-guard")
        .parent()
        .unwrap()
        .to_path_buf();
    let config = Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args(["demo", "--devices", "40", "--print-config", "--policy-dir"])
        .arg(&dir)
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(config.status.success());
    // Generated from the plant's registry: routes by class, no device named anywhere.
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(
        text.contains("[registry]") && text.contains("devices.csv"),
        "{text}"
    );
    for class in [
        "climate-sensor",
        "vibration-sensor",
        "power-meter",
        "badge-reader",
    ] {
        assert!(
            text.contains(&format!("class = \"{class}\"")),
            "{class}: {text}"
        );
    }
    assert!(!text.contains("temp-0"), "{text}");
    let registry = std::fs::read_to_string(tmp.path().join("devices.csv")).unwrap();
    assert_eq!(registry.lines().count(), 41, "{registry}");
    let config_path = tmp.path().join("demo.toml");
    std::fs::write(&config_path, &config.stdout).unwrap();
    let held = lines(&tmp.path().join("quarantine.ndjson"));
    assert!(!held.is_empty());
    let input: String = held.iter().map(|q| format!("{}\n", q["message"])).collect();
    let input_path = tmp.path().join("held.ndjson");
    std::fs::write(&input_path, input).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args(["eval", "--config"])
        .arg(&config_path)
        .arg("--input")
        .arg(&input_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let judged: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(judged.len(), held.len());
    // A spoofer is still a spoofer on a second look.
    for (q, j) in held.iter().zip(&judged) {
        if q["message"]["device_id"]
            .as_str()
            .unwrap()
            .starts_with("rogue-")
        {
            assert_eq!(j["action"], "quarantine", "{j}");
        }
    }
}

#[test]
fn a_missing_pack_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args(["demo", "--policy-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity_guard.wasm")
            && err.contains("cargo build --release --target wasm32-wasip2"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args(["demo", "--hours", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hours"));
}
