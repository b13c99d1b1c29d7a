//! The `twinguard` binary: `check` and `eval`, exactly as the README shows them.

use std::io::Write;
use std::process::{Command, Stdio};

use twinguard_fixtures as fixtures;

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
    assert!(text.contains("contract:  twinguard:policy@0.2.0"), "{text}");
    assert!(text.contains("digest:    sha256:"), "{text}");
    assert!(text.contains("twinguard:policy/handler@0.2.0"), "{text}");

    let out = twinguard()
        .args(["check", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["wit_version"], "0.2.0");
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
        err.contains("built for twinguard:policy@0.1.0")
            && err.contains("speaks twinguard:policy@0.2.0"),
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

/// A guest's text never reaches the host log raw: its log line, its alert, its panic message
/// and its stdout are full of CR, LF, ESC, NUL and U+2028, and the log shows them escaped.
#[test]
fn a_guests_control_characters_never_reach_the_log_raw() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    let hostile = fixtures::wasm("hostile").display().to_string();
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"chars\"\npath = {hostile:?}\n[policy.config]\nmode = \"control-chars\"\n\
             [[policy]]\nname = \"panics\"\npath = {hostile:?}\n[policy.config]\nmode = \"panic-control\"\n\
             [[route]]\nfilter = \"a/#\"\nchain = [\"chars\"]\n\
             [[route]]\nfilter = \"b/#\"\nchain = [\"panics\"]\n"
        ),
    )
    .unwrap();
    let input = "{\"device_id\":\"d1\",\"topic\":\"a/x\",\"payload\":{}}\n\
                 {\"device_id\":\"d1\",\"topic\":\"b/x\",\"payload\":{}}\n";
    let mut child = twinguard()
        .args(["eval", "--config"])
        .arg(&config)
        .env("TWINGUARD_LOG", "debug")
        .env("RUST_LOG", "debug")
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
    let log = String::from_utf8_lossy(&out.stderr);
    // The guest did speak (its line and its panic are in the log, escaped)...
    assert!(
        log.contains("forged line\\u{1b}[2J\\0\\u{2028}end"),
        "{log}"
    );
    // ...and no forged line, raw escape, NUL or line separator made it through.
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-04T00:00:00Z")),
        "{log}"
    );
    for bad in ['\r', '\0', '\u{2028}'] {
        assert!(!log.contains(bad), "{bad:?} in the log: {log:?}");
    }
    // ANSI colour codes of the log itself aside, no ESC from the guest: the guest's one
    // follows "forged line".
    assert!(!log.contains("forged line\x1b"), "{log:?}");
}

/// A config with one allow-all policy on `plant/#`.
fn allow_all_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("twinguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"allow\"\npath = {:?}\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"allow\"]\n",
            fixtures::wasm("allow-all").display().to_string()
        ),
    )
    .unwrap();
    config
}

/// Blank, whitespace-only and non-UTF-8 lines each get their own error line, with their line
/// number, and the lines after them are still judged (a trailing `\r` is no error).
#[test]
fn eval_gives_blank_and_non_utf8_lines_an_error_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = allow_all_config(dir.path());
    let good = |n: u32| format!(r#"{{"device_id":"d1","topic":"plant/d1","payload":{{"n":{n}}}}}"#);
    let mut input = Vec::new();
    input.extend_from_slice(good(1).as_bytes()); // line 1
    input.extend_from_slice(b"\n\n"); // line 2: blank
    input.extend_from_slice(b"{\"device_id\":\"d\xff1\",\"topic\":\"plant/x\",\"payload\":{}}\n"); // line 3
    input.extend_from_slice(good(4).as_bytes()); // line 4, CRLF
    input.extend_from_slice(b"\r\n \t\r\n"); // line 5: whitespace only
    input.extend_from_slice(good(6).as_bytes()); // line 6, no final newline
    let mut child = twinguard()
        .args(["eval", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad lines make exit code 2: {err}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "one output line per input line: {lines:#?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["line"], i + 1, "{line}");
    }
    for (i, n) in [(0, 1), (3, 4), (5, 6)] {
        assert_eq!(lines[i]["action"], "allow", "{}", lines[i]);
        assert_eq!(lines[i]["payload"], serde_json::json!({ "n": n }));
        assert!(lines[i].get("error").is_none(), "{}", lines[i]);
    }
    for i in [1, 4] {
        let e = lines[i]["error"].as_str().unwrap();
        assert!(e.contains("blank line"), "{e}");
    }
    let e = lines[2]["error"].as_str().unwrap();
    assert!(e.contains("not UTF-8 at byte 16 of the line (0xff)"), "{e}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `twinguard eval … | head -1`: the reader goes away after one line while eval still has
/// thousands to write. eval stops quietly (exit 0, nothing on stderr), no panic, no error.
#[test]
fn eval_stops_cleanly_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = allow_all_config(dir.path());
    // ~200 bytes of output per line, megabytes in all: far more than a pipe holds, so eval
    // is still writing when the reader goes away.
    let line = r#"{"device_id":"d1","topic":"plant/d1","payload":{"n":1}}"#;
    let input = format!("{line}\n").repeat(20_000);
    let mut child = twinguard()
        .args(["eval", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Fed from a thread: eval may stop reading once its output is gone (then this write
    // fails, which is fine).
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["line"], 1);
    drop(stdout);
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "a closed stdout is a clean stop: {err}"
    );
    assert!(err.trim().is_empty(), "nothing to report: {err}");
}
