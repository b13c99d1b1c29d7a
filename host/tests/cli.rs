//! The `twinguard` binary: `check` and `eval`, exactly as the README shows them.

use std::io::Write;
use std::process::{Command, Stdio};

#[path = "../../tests/src/fixtures.rs"]
mod fixtures;

fn twinguard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinguard"))
}

#[test]
fn check_prints_contract_and_digest() {
    let path = fixtures::wasm("pii-redact");
    let out = twinguard().arg("check").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("contract:  twinguard:policy@0.1.0"), "{text}");
    assert!(text.contains("digest:    sha256:"), "{text}");
    assert!(text.contains("twinguard:policy/handler@0.1.0"), "{text}");

    let out = twinguard()
        .args(["check", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wit_version"], "0.1.0");
    assert_eq!(v["ok"], true);
}

#[test]
fn check_refuses_other_versions_and_garbage() {
    let out = twinguard()
        .arg("check")
        .arg(fixtures::wasm("wrong-version"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("twinguard:policy@0.2.0") && err.contains("0.1.0"),
        "{err}"
    );
    let out = twinguard().args(["check", "Cargo.toml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not WebAssembly"));
}

#[test]
fn eval_reads_ndjson_and_writes_one_outcome_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nremove = \"/owner/email\"\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"pii\"]\n",
            fixtures::wasm("pii-redact").display()
        ),
    )
    .unwrap();
    let input = [
        r#"{"device_id":"d1","topic":"plant/d1/telemetry","payload":{"t":1,"owner":{"email":"a@b"}}}"#,
        r#"{"device_id":"d1","topic":"plant/d1/telemetry","content_type":"cbor","payload":{"owner":{"email":"a@b"}}}"#,
        r#"{"device_id":"d1","topic":"elsewhere","content_type":"text","payload":"hello"}"#,
        r#"{"device_id":"d1","topic":"plant/x","content_type":"binary","payload_base64":"AAEC"}"#,
        r#"{"topic":"no device"}"#,
    ]
    .join("\n");
    let mut child = twinguard()
        .args(["eval", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad line makes exit code 2");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "one output line per input line");
    assert_eq!(lines[0]["action"], "redact");
    assert_eq!(
        lines[0]["payload"],
        serde_json::json!({"t": 1, "owner": {}})
    );
    assert_eq!(lines[0]["trace"][0]["policy"], "pii");
    assert_eq!(lines[1]["action"], "redact");
    assert_eq!(lines[1]["payload"], serde_json::json!({"owner": {}}));
    assert!(lines[1]["payload_base64"].is_string());
    assert_eq!(lines[2]["action"], "quarantine");
    assert!(lines[2]["reason"].as_str().unwrap().contains("no route"));
    assert_eq!(lines[3]["action"], "allow");
    assert_eq!(lines[3]["payload_base64"], "AAEC");
    assert_eq!(lines[4]["line"], 5);
    assert!(
        lines[4]["error"].as_str().unwrap().contains("device_id"),
        "{}",
        lines[4]
    );
}

#[test]
fn eval_with_a_bad_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[policy]]\nname = \"x\"\n").unwrap();
    let out = twinguard()
        .args(["eval", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("path"), "{err}");
}
