//! `twinguard quarantine list|show|purge` on a store written through the library.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use twinguard::store::{QuarantineStore, Status};
use twinguard::{Action, Alert, ContentType, Message, Outcome, PolicyTrace, Severity, Verdict};

fn twinguard(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .arg("quarantine")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn put(
    store: &QuarantineStore,
    device: &str,
    ct: ContentType,
    payload: &[u8],
    policy: Option<&str>,
) -> u64 {
    let mut m = Message::new(
        device,
        format!("plant/{device}/telemetry"),
        ct,
        payload.to_vec(),
    )
    .with_attribute("fw", "2.1.0");
    m.received_at_ms = 1_795_647_723_000; // 2026-11-25 23:02:03 UTC
    let version: Arc<str> = "0123456789abcdef0123".into();
    let outcome = {
        let mut outcome = Outcome::new(
            Action::Quarantine {
                policy: policy.map(str::to_string),
                reason: format!("{} says no", policy.unwrap_or("routing")),
            },
            m.payload.clone(),
            3,
        );
        outcome.alerts = vec![Alert::new(
            "range-guard",
            Arc::clone(&version),
            Severity::Medium,
            "out-of-range",
            "t = 412",
        )];
        outcome.trace = vec![PolicyTrace {
            policy: "range-guard".into(),
            version,
            verdict: Verdict::Quarantine,
            fuel_used: 1,
            elapsed: Duration::from_micros(1),
        }];
        outcome
    };
    store
        .put(&m, &outcome, Some(&format!("twin/{device}/telemetry")))
        .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    json: u64,
    cbor: u64,
    binary: u64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let store = QuarantineStore::open(&path).unwrap();
    let json = put(
        &store,
        "press-7",
        ContentType::Json,
        br#"{"t":412,"unit":"C"}"#,
        Some("range-guard"),
    );
    // {"t": 1}
    let cbor = put(
        &store,
        "press-8",
        ContentType::Cbor,
        &[0xa1, 0x61, b't', 0x01],
        Some("range-guard"),
    );
    let binary = put(
        &store,
        "press-7",
        ContentType::Binary,
        &[0, 1, 2, 0xff],
        None,
    );
    store
        .set_status(binary, Status::Released, Some("ok"))
        .unwrap();
    Fixture {
        _dir: dir,
        path,
        json,
        cbor,
        binary,
    }
}

#[test]
fn list_prints_a_table_and_filters() {
    let f = fixture();
    let text = stdout(&twinguard(&["list"], &f.path));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("REASON"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[1].starts_with(&f.json.to_string()) && lines[1].contains("press-7"),
        "{text}"
    );
    assert!(
        lines[1].contains("held") && lines[1].contains("range-guard says no"),
        "{text}"
    );
    assert!(
        lines[3].contains("released") && lines[3].contains("(unrouted)"),
        "{text}"
    );

    let text = stdout(&twinguard(
        &["list", "--status", "held", "--device", "press-8"],
        &f.path,
    ));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("press-8"), "{text}");

    let text = stdout(&twinguard(&["list", "--limit", "2"], &f.path));
    assert!(
        text.contains(&format!("(more: --after {})", f.cbor)),
        "{text}"
    );
    let text = stdout(&twinguard(
        &["list", "--after", &f.cbor.to_string()],
        &f.path,
    ));
    assert_eq!(text.lines().count(), 2, "{text}");

    let text = stdout(&twinguard(&["list", "--device", "nobody"], &f.path));
    assert_eq!(text.trim(), "no quarantined messages match");

    let text = stdout(&twinguard(&["list", "--json"], &f.path));
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["payload"]["t"], 412);
    assert_eq!(records[2]["status"], "released");
    assert_eq!(records[2]["note"], "ok");
}

#[test]
fn show_decodes_json_and_cbor_and_always_gives_base64() {
    let f = fixture();
    let text = stdout(&twinguard(&["show", &f.json.to_string()], &f.path));
    assert!(text.contains("status:       held"), "{text}");
    assert!(
        text.contains("received:     2026-11-25 23:02:03.000 UTC"),
        "{text}"
    );
    assert!(
        text.contains("destination:  twin/press-7/telemetry"),
        "{text}"
    );
    assert!(
        text.contains("range-guard 0123456789ab -> quarantine"),
        "{text}"
    );
    assert!(
        text.contains("medium out-of-range (range-guard): t = 412"),
        "{text}"
    );
    assert!(text.contains("fw = 2.1.0"), "{text}");
    assert!(text.contains("\"t\": 412"), "pretty JSON: {text}");
    assert!(
        text.contains("payload (base64):\neyJ0Ijo0MTIsInVuaXQiOiJDIn0="),
        "{text}"
    );

    let text = stdout(&twinguard(&["show", &f.cbor.to_string()], &f.path));
    assert!(text.contains("payload (CBOR, decoded to JSON):"), "{text}");
    assert!(text.contains("\"t\": 1"), "{text}");
    assert!(text.contains("payload (base64):\noWF0AQ=="), "{text}");

    let text = stdout(&twinguard(&["show", &f.binary.to_string()], &f.path));
    assert!(text.contains("(unrouted"), "{text}");
    assert!(text.contains("status:       released"), "{text}");
    assert!(text.contains("note:         ok"), "{text}");
    assert!(text.contains("payload (base64):\nAAEC/w=="), "{text}");

    let v: Value = serde_json::from_str(&stdout(&twinguard(
        &["show", "--json", &f.cbor.to_string()],
        &f.path,
    )))
    .unwrap();
    assert_eq!(v["id"], f.cbor);
    assert_eq!(v["content_type"], "cbor");
    assert_eq!(v["payload"], serde_json::json!({"t": 1}));
    assert_eq!(v["payload_base64"], "oWF0AQ==");
    assert_eq!(v["quarantined_by"], "range-guard");
    assert_eq!(v["versions"][0]["verdict"], "quarantine");
    assert_eq!(v["alerts"][0]["code"], "out-of-range");
    assert_eq!(v["received_at_ms"], 1_795_647_723_000_u64);
}

#[test]
fn purge_by_id_status_and_age() {
    let f = fixture();
    let text = stdout(&twinguard(&["purge", "--status", "released"], &f.path));
    assert!(text.starts_with("purged 1 record from"), "{text}");
    let text = stdout(&twinguard(&["purge", "--older-than", "7d"], &f.path));
    assert!(text.starts_with("purged 0 records"), "{text}");
    let text = stdout(&twinguard(
        &["purge", "--id", &f.json.to_string(), &f.cbor.to_string()],
        &f.path,
    ));
    assert!(text.starts_with("purged 2 records"), "{text}");
    let text = stdout(&twinguard(&["list"], &f.path));
    assert_eq!(text.trim(), "no quarantined messages match");
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = fixture();

    let missing = f.path.with_file_name("nope.db");
    let err = failure(&twinguard(&["list"], &missing));
    assert!(
        err.contains("no quarantine store at") && err.contains("nope.db"),
        "{err}"
    );
    assert!(!missing.exists(), "a mistyped path creates no store");

    let not_db = f.path.with_file_name("notes.txt");
    std::fs::write(&not_db, "not a database at all\n".repeat(30)).unwrap();
    let err = failure(&twinguard(&["list"], &not_db));
    assert!(
        err.contains("notes.txt") && err.contains("not an SQLite database"),
        "{err}"
    );

    let err = failure(&twinguard(&["show", "424242"], &f.path));
    assert!(
        err.contains("no record 424242") && err.contains("q.db"),
        "{err}"
    );

    let err = failure(&twinguard(&["purge", "--id", "424242"], &f.path));
    assert!(err.contains("no record 424242"), "{err}");

    for bad in ["7", "7days", "1.5h", "-1d"] {
        let err = failure(&twinguard(
            &["purge", &format!("--older-than={bad}")],
            &f.path,
        ));
        assert!(err.contains("invalid duration"), "{bad}: {err}");
    }

    let err = failure(&twinguard(&["purge"], &f.path));
    assert!(
        err.contains("--id") && err.contains("--older-than"),
        "{err}"
    );

    let err = failure(&twinguard(&["list", "--status", "lost"], &f.path));
    assert!(err.contains("unknown status \"lost\""), "{err}");

    // Nothing was purged by the refused commands.
    let text = stdout(&twinguard(&["list"], &f.path));
    assert_eq!(text.lines().count(), 4, "{text}");
}

/// `quarantine list --json | head -1`: the reader goes away after one record while list has
/// megabytes left to write. It stops quietly (exit 0), without the panic `println!` gave.
#[test]
fn list_stops_cleanly_when_its_output_is_closed() {
    use std::io::BufRead as _;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let store = QuarantineStore::open(&path).unwrap();
    // 100 records of ~20 KB (twice over in the output: JSON and base64): far more than a
    // pipe holds, so list is still writing when the reader goes away.
    let payload = format!(r#"{{"blob":"{}"}}"#, "x".repeat(20_000));
    for i in 0..100 {
        put(
            &store,
            &format!("press-{i}"),
            ContentType::Json,
            payload.as_bytes(),
            Some("range-guard"),
        );
    }
    drop(store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_twinguard"))
        .args(["quarantine", "list", "--json", "--store"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["device_id"], "press-0");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "a closed stdout is a clean stop: {err}"
    );
}

#[test]
fn hostile_device_ids_are_bounded_and_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let store = QuarantineStore::open(&path).unwrap();
    // 60,000 characters, with a right-to-left override that would flip the rest of the row.
    let device = format!("meter-1\u{202e}{}", "x".repeat(60_000));
    let id = put(&store, &device, ContentType::Json, b"{}", Some("p"));
    drop(store);
    let list = stdout(&twinguard(&["list"], &path));
    assert!(!list.contains('\u{202e}'), "raw override printed");
    assert!(list.contains("meter-1\\u{202e}"), "{list}");
    assert!(list.lines().all(|l| l.chars().count() < 200), "{list}");
    let show = stdout(&twinguard(&["show", &id.to_string()], &path));
    assert!(!show.contains('\u{202e}'));
    assert!(show.lines().all(|l| l.chars().count() < 600));
}
