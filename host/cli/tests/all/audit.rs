//! `twinguard audit verify` on a decision log written through the library (the judge flow
//! with a real guest policy, the services opened from a config file, as the Mosquitto plugin
//! does): intact across a rotation and a restart, then altered, with a record removed, and with
//! two records swapped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use twinguard::judge::Judge;
use twinguard::services::Services;
use twinguard::{ContentType, FileConfig, Message, Runtime};
use twinguard_fixtures as fixtures;

fn verify(files: &[PathBuf], json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_twinguard"));
    cmd.args(["audit", "verify"]);
    if json {
        cmd.arg("--json");
    }
    cmd.args(files).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Judges messages `range` with the services of `config` (opened and dropped here: a
/// restart each time). Every fifth message is held back, as a front end holds one no route
/// could place.
fn judge(config: &Path, range: std::ops::Range<u64>) {
    let file = FileConfig::from_file(config).unwrap();
    let services = Services::open(&file).unwrap();
    let judge = Judge::new(
        Runtime::new(file.runtime).unwrap(),
        services.store.clone(),
        Some(services.alerts.clone()),
    )
    .with_decision_log(services.decision_log.clone());
    for i in range {
        let device = format!("press-{}", i % 4);
        let message = Message::new(
            device.as_str(),
            format!("plant/{device}/telemetry"),
            ContentType::Json,
            format!(r#"{{"i":{i},"owner":{{"email":"a@example.com"}}}}"#).into_bytes(),
        );
        if i % 5 == 0 {
            judge.hold(&message, "no destination".into(), None);
        } else {
            let j = judge.judge(&message, Some("twin/telemetry"));
            assert!(j.forward().is_some());
        }
    }
    services.decision_log.as_ref().unwrap().flush().unwrap();
}

/// The log's files: the rotated ones, then the active one.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("decisions.ndjson"))
        .collect();
    files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "ndjson"), p.clone()));
    files
}

/// A copy of the log in a new folder, with the lines of its first file edited by `edit`.
fn tampered(
    files: &[PathBuf],
    edit: impl FnOnce(&mut Vec<String>),
) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let copies: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let to = dir.path().join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    let mut lines: Vec<String> = std::fs::read_to_string(&copies[0])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    edit(&mut lines);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&copies[0], text).unwrap();
    (dir, copies)
}

fn broken(files: &[PathBuf], needle: &str) {
    let out = verify(files, false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn audit_verify_passes_an_intact_log_and_names_the_first_broken_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    std::fs::write(
        &config,
        format!(
            "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nremove = \"/owner/email\"\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"pii\"]\n\
             [quarantine]\npath = \"quarantine.db\"\n\
             [decision-log]\npath = \"decisions.ndjson\"\nmax-bytes = 4096\n",
            fixtures::wasm("pii-redact").display()
        ),
    )
    .unwrap();
    judge(&config, 0..30);
    judge(&config, 30..40); // a restart: the chain continues
    let files = log_files(dir.path());
    assert!(files.len() >= 3, "a rotation or more: {files:?}");

    // Intact, across the rotations and the restart, whatever order the files are given in.
    let mut reversed = files.clone();
    reversed.reverse();
    let out = verify(&reversed, false);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("chain intact: 40 records, seq 0 to 39"),
        "{stdout}"
    );
    assert!(stdout.contains("start:     seq 0, verified"), "{stdout}");
    let out = verify(&files, true);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 40);
    assert_eq!(report["start_verified"], true);

    // What the records say: the policy's verdict, digests only, the store id of a held one.
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        !first.contains("a@example.com"),
        "no raw payload in digest mode"
    );
    let records: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["action"], "quarantine");
    assert!(
        records[0]["quarantine"]["record"].is_u64(),
        "{}",
        records[0]
    );
    assert_eq!(records[1]["action"], "redact");
    assert_eq!(records[1]["chain"][0]["policy"], "pii");
    assert_eq!(records[1]["chain"][0]["verdict"], "redact");
    assert!(records[1]["chain"][0]["fuel"].as_u64().unwrap() > 0);
    assert_ne!(
        records[1]["payload_in_sha256"],
        records[1]["payload_out_sha256"]
    );

    // An altered record: seq 2's action rewritten.
    let (_d, copies) = tampered(&files, |l| {
        l[2] = l[2].replace("\"action\":\"redact\"", "\"action\":\"allow\"");
    });
    broken(&copies, "record seq 2: altered");
    // A removed record: seq 2 deleted, seq 3 is the first to break.
    let (_d, copies) = tampered(&files, |l| {
        l.remove(2);
    });
    broken(&copies, "record seq 3: removed");
    // Two records swapped: seq 2 found where seq 1 belongs.
    let (_d, copies) = tampered(&files, |l| l.swap(1, 2));
    broken(&copies, "record seq 2: reordered");
    let out = verify(&copies, true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["broken"]["seq"], 2);
    assert_eq!(report["broken"]["kind"], "reordered");
    assert_eq!(report["broken"]["line"], 2);

    // Unreadable input is an error (1), not a broken chain (2).
    let out = verify(&[dir.path().join("missing.ndjson")], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
