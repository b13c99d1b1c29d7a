//! The quarantine store on real SQLite files: every field round-trips, concurrent puts,
//! reopening, a SIGKILLed writer loses no acknowledged put, retention and purge, and files it
//! must refuse.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use twinguard::store::{
    PolicyVersion, Purge, QuarantineStore, Query, Retention, Status, StoreError, SCHEMA_VERSION,
};
use twinguard::{Action, Alert, ContentType, Message, Outcome, PolicyTrace, Severity, Verdict};

fn message(device: &str, ct: ContentType, payload: &[u8]) -> Message {
    let mut m = Message::new(
        device,
        format!("plant/{device}/telemetry"),
        ct,
        payload.to_vec(),
    )
    .with_attribute("fw", "2.1.0")
    .with_attribute("trace", "a")
    .with_attribute("trace", "b");
    m.received_at_ms = 1_795_647_723_456;
    m
}

fn quarantine(m: &Message, policy: Option<&str>, reason: &str) -> Outcome {
    let version: Arc<str> = "ab12cd34".into();
    {
        let mut outcome = Outcome::new(
            Action::Quarantine {
                policy: policy.map(str::to_string),
                reason: reason.into(),
            },
            m.payload.clone(),
            7,
        );
        outcome.alerts = vec![Alert::new(
            "identity-guard",
            Arc::clone(&version),
            Severity::High,
            "device-spoofing",
            "topic names press-8",
        )];
        outcome.trace = vec![
            PolicyTrace {
                policy: "pii".into(),
                version: "ff00".into(),
                verdict: Verdict::Redact(2),
                fuel_used: 10,
                elapsed: Duration::from_micros(5),
            },
            PolicyTrace {
                policy: "identity-guard".into(),
                version,
                verdict: Verdict::Quarantine,
                fuel_used: 20,
                elapsed: Duration::from_micros(7),
            },
        ];
        outcome
    }
}

fn open(path: &Path) -> QuarantineStore {
    match QuarantineStore::open(path) {
        Ok(s) => s,
        Err(e) => panic!("{}", chain(&e)),
    }
}

/// The error and its causes on one line, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("quarantine.db")
}

#[test]
fn every_field_round_trips_json_and_cbor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let before = twinguard_now();

    // JSON with odd but valid spacing: the bytes, not a re-serialisation, must come back.
    let json_payload = br#"{ "t" : 21.50, "owner": {"email":"a@example.com"} }"#;
    let json_msg = message("press-7", ContentType::Json, json_payload);
    let mut json_outcome = quarantine(&json_msg, Some("identity-guard"), "device id mismatch");
    json_outcome.redacted = true;
    json_outcome.payload = br#"{ "t" : 21.50, "owner": {} }"#.to_vec().into();
    let a = store
        .put(&json_msg, &json_outcome, Some("twin/press-7/telemetry"))
        .unwrap();

    // CBOR: {"t": 21.5, "raw": h'00ff'} with a non-minimal length prefix SQLite must not touch.
    let cbor_payload = [
        0xa2, 0x61, b't', 0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0, 0x63, b'r', b'a', b'w', 0x58,
        0x02, 0x00, 0xff,
    ];
    let cbor_msg = message("press-8", ContentType::Cbor, &cbor_payload);
    let cbor_outcome = quarantine(&cbor_msg, None, "no route matches the topic");
    let b = store.put(&cbor_msg, &cbor_outcome, None).unwrap();
    assert!(b > a, "ids grow: {a} then {b}");

    let r = store.get(a).unwrap().expect("record a");
    assert_eq!(r.id, a);
    assert!(r.stored_at_ms >= before && r.stored_at_ms <= twinguard_now());
    assert_eq!(r.received_at_ms, 1_795_647_723_456);
    assert_eq!(r.device_id, "press-7");
    assert_eq!(r.topic, "plant/press-7/telemetry");
    assert_eq!(r.destination.as_deref(), Some("twin/press-7/telemetry"));
    assert_eq!(r.content_type, ContentType::Json);
    assert_eq!(r.payload, json_payload);
    assert_eq!(
        r.redacted_payload.as_deref(),
        Some(&br#"{ "t" : 21.50, "owner": {} }"#[..])
    );
    assert_eq!(
        r.attributes,
        [("fw", "2.1.0"), ("trace", "a"), ("trace", "b")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(r.policy.as_deref(), Some("identity-guard"));
    assert_eq!(r.reason, "device id mismatch");
    assert_eq!(
        r.versions,
        vec![
            PolicyVersion {
                policy: "pii".into(),
                version: "ff00".into(),
                verdict: "redact".into()
            },
            PolicyVersion {
                policy: "identity-guard".into(),
                version: "ab12cd34".into(),
                verdict: "quarantine".into()
            },
        ]
    );
    assert_eq!(r.alerts, json_outcome.alerts);
    assert_eq!(r.generation, 7);
    assert_eq!(r.status, Status::Held);
    assert_eq!(r.status_at_ms, r.stored_at_ms);
    assert_eq!(r.note, None);

    let r = store.get(b).unwrap().expect("record b");
    assert_eq!(r.content_type, ContentType::Cbor);
    assert_eq!(r.payload, cbor_payload);
    assert_eq!(r.redacted_payload, None);
    assert_eq!(r.policy, None, "unrouted: no quarantining policy");
    assert_eq!(r.destination, None);

    assert_eq!(store.get(b + 1000).unwrap(), None);
    assert_eq!(store.get(u64::MAX).unwrap(), None);
}

fn twinguard_now() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn an_outcome_that_is_not_quarantine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let m = message("d", ContentType::Json, b"{}");
    let mut o = quarantine(&m, Some("p"), "r");
    o.action = Action::Allow;
    let err = store.put(&m, &o, None).unwrap_err().to_string();
    assert!(
        err.contains("quarantine.db") && err.contains("allow, not quarantine"),
        "{err}"
    );
    assert_eq!(store.count(None).unwrap(), 0);
}

#[test]
fn concurrent_puts_from_8_threads_all_land_with_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let payload = format!(r#"{{"thread":{t},"i":{i}}}"#);
                        let m = message(&format!("dev-{t}"), ContentType::Json, payload.as_bytes());
                        let id = store
                            .put(&m, &quarantine(&m, Some("p"), "r"), None)
                            .unwrap();
                        (id, payload)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let mut ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 400, "distinct ids");
    assert_eq!(store.count(None).unwrap(), 400);
    assert_eq!(store.count(Some(Status::Held)).unwrap(), 400);
    for (id, payload) in &all {
        let r = store.get(*id).unwrap().expect("present");
        assert_eq!(r.payload, payload.as_bytes(), "record {id}");
    }
    // Listing by device uses its own index and keeps id order.
    let dev3 = store
        .list(&Query {
            device: Some("dev-3".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(dev3.len(), 50);
    assert!(dev3.windows(2).all(|w| w[0].id < w[1].id));
    assert!(dev3.iter().all(|r| r.device_id == "dev-3"));
}

#[test]
fn reopening_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut ids = Vec::new();
    {
        let store = open(&path);
        for i in 0..20 {
            let m = message("d", ContentType::Text, format!("line {i}").as_bytes());
            ids.push(
                store
                    .put(&m, &quarantine(&m, Some("p"), "r"), Some("out"))
                    .unwrap(),
            );
        }
        store
            .set_status(ids[3], Status::Released, Some("checked by ops"))
            .unwrap();
    }
    let store = open(&path);
    assert_eq!(store.count(None).unwrap(), 20);
    for (i, id) in ids.iter().enumerate() {
        let r = store.get(*id).unwrap().unwrap();
        assert_eq!(r.payload, format!("line {i}").as_bytes());
    }
    let r = store.get(ids[3]).unwrap().unwrap();
    assert_eq!(r.status, Status::Released);
    assert_eq!(r.note.as_deref(), Some("checked by ops"));
    assert!(r.status_at_ms >= r.stored_at_ms);
    // New ids continue after the old ones, even after the newest was purged.
    store
        .purge(&Purge {
            ids: vec![ids[19]],
            ..Purge::default()
        })
        .unwrap();
    drop(store);
    let store = open(&path);
    let m = message("d", ContentType::Text, b"after");
    let next = store.put(&m, &quarantine(&m, None, "r"), None).unwrap();
    assert!(next > ids[19], "id {next} reused after {}", ids[19]);
}

#[test]
fn list_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let mut ids = Vec::new();
    for i in 0..10 {
        let device = if i % 2 == 0 { "even" } else { "odd" };
        let policy = if i < 5 { "range-guard" } else { "rate-guard" };
        let m = message(device, ContentType::Json, b"{}");
        ids.push(
            store
                .put(&m, &quarantine(&m, Some(policy), "r"), None)
                .unwrap(),
        );
    }
    store.set_status(ids[0], Status::Released, None).unwrap();
    store
        .set_status(ids[1], Status::Replayed, Some("now allowed"))
        .unwrap();
    let q =
        |query: Query| -> Vec<u64> { store.list(&query).unwrap().iter().map(|r| r.id).collect() };
    assert_eq!(q(Query::default()), ids);
    assert_eq!(
        q(Query {
            status: Some(Status::Held),
            ..Query::default()
        }),
        ids[2..]
    );
    assert_eq!(
        q(Query {
            status: Some(Status::Held),
            device: Some("even".into()),
            policy: Some("range-guard".into()),
            ..Query::default()
        }),
        [ids[2], ids[4]]
    );
    let page1 = q(Query {
        limit: Some(4),
        ..Query::default()
    });
    let page2 = q(Query {
        after_id: page1.last().copied(),
        limit: Some(4),
        ..Query::default()
    });
    assert_eq!(page1, ids[..4]);
    assert_eq!(page2, ids[4..8]);
    assert_eq!(store.count(Some(Status::Released)).unwrap(), 1);
    assert_eq!(store.count(Some(Status::Replayed)).unwrap(), 1);

    let err = store
        .set_status(ids[9] + 100, Status::Released, None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&format!("no record {}", ids[9] + 100)));
}

#[test]
fn purge_by_id_age_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let put = |device: &str| {
        let m = message(device, ContentType::Json, b"{}");
        store
            .put(&m, &quarantine(&m, Some("p"), "r"), None)
            .unwrap()
    };
    let ids: Vec<u64> = (0..6).map(|_| put("d")).collect();
    store.set_status(ids[0], Status::Released, None).unwrap();
    store.set_status(ids[1], Status::Released, None).unwrap();

    // Nothing given: refused rather than emptying the store.
    let err = store.purge(&Purge::default()).unwrap_err().to_string();
    assert!(err.contains("no criterion"), "{err}");

    // An unknown id: nothing purged, the id named.
    let err = store
        .purge(&Purge {
            ids: vec![ids[2], 9_999],
            ..Purge::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("no record 9999"), "{err}");
    assert_eq!(store.count(None).unwrap(), 6);

    assert_eq!(
        store
            .purge(&Purge {
                status: Some(Status::Released),
                ..Purge::default()
            })
            .unwrap(),
        2
    );
    assert_eq!(store.count(None).unwrap(), 4);

    // Age: nothing is a day old; everything is older than 0 ms a moment later.
    let day = Purge {
        older_than_ms: Some(86_400_000),
        ..Purge::default()
    };
    assert_eq!(store.purge(&day).unwrap(), 0);
    assert_eq!(
        store
            .purge(&Purge {
                ids: vec![ids[2]],
                ..Purge::default()
            })
            .unwrap(),
        1
    );
    std::thread::sleep(Duration::from_millis(5));
    let fresh = put("new");
    // Ages are whole milliseconds: let this one be at least one old.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        store
            .purge(&Purge {
                older_than_ms: Some(0),
                status: Some(Status::Held),
                ..Purge::default()
            })
            .unwrap(),
        4,
        "ids 3..6 and the one just stored (stored_at < now)"
    );
    assert_eq!(store.get(fresh).unwrap(), None);
    assert_eq!(store.count(None).unwrap(), 0);
}

#[test]
fn retention_by_age_and_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let put = |i: usize| {
        let m = message("d", ContentType::Text, format!("{i}").as_bytes());
        store
            .put(&m, &quarantine(&m, Some("p"), "r"), None)
            .unwrap()
    };
    let ids: Vec<u64> = (0..30).map(put).collect();
    assert_eq!(store.apply_retention(&Retention::default()).unwrap(), 0);
    assert_eq!(
        store
            .apply_retention(&Retention {
                max_age_ms: Some(3_600_000),
                max_entries: Some(100),
            })
            .unwrap(),
        0,
        "nothing too old, not too many"
    );
    assert_eq!(
        store
            .apply_retention(&Retention {
                max_age_ms: None,
                max_entries: Some(12),
            })
            .unwrap(),
        18
    );
    let left: Vec<u64> = store
        .list(&Query::default())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ids[18..], "the newest 12 are kept");

    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        store
            .apply_retention(&Retention {
                max_age_ms: Some(0),
                max_entries: None,
            })
            .unwrap(),
        12
    );
    let id = put(99);
    assert_eq!(
        store
            .apply_retention(&Retention {
                max_age_ms: None,
                max_entries: Some(0),
            })
            .unwrap(),
        1
    );
    assert_eq!(store.get(id).unwrap(), None);
}

#[test]
fn retention_deletes_more_than_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    // Puts from several threads go in few commits, so 12,000 is quick.
    std::thread::scope(|s| {
        for t in 0..8 {
            let store = &store;
            s.spawn(move || {
                for i in 0..1_500 {
                    let m = message(
                        &format!("d{t}"),
                        ContentType::Text,
                        format!("{i}").as_bytes(),
                    );
                    store
                        .put(&m, &quarantine(&m, Some("p"), "r"), None)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.count(None).unwrap(), 12_000);
    assert_eq!(
        store
            .apply_retention(&Retention {
                max_age_ms: None,
                max_entries: Some(500),
            })
            .unwrap(),
        11_500
    );
    assert_eq!(store.count(None).unwrap(), 500);
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = QuarantineStore::open(&path).unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{text}");
    assert!(
        text.contains(&path.display().to_string())
            && text.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && text.contains(&format!(
                "version {SCHEMA_VERSION} that this twinguard knows"
            )),
        "{text}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn a_version_1_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let m = message("press-7", ContentType::Json, br#"{"t":1}"#);
    let old_id = {
        let store = open(&path);
        store
            .put(&m, &quarantine(&m, Some("schema"), "old"), Some("twin/x"))
            .unwrap()
    };
    // What a version 1 file looks like: no `source` column.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("ALTER TABLE quarantine DROP COLUMN source; PRAGMA user_version = 1")
            .unwrap();
    }
    let store = open(&path);
    let old = store.get(old_id).unwrap().unwrap();
    assert_eq!((old.reason.as_str(), old.source), ("old", None));
    let new_id = store
        .put_from(
            &m,
            &quarantine(&m, Some("schema"), "new"),
            Some("twin/x"),
            Some("plant-a"),
        )
        .unwrap();
    assert_eq!(
        store.get(new_id).unwrap().unwrap().source.as_deref(),
        Some("plant-a")
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn files_that_are_not_a_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(40)).unwrap();
    let err = QuarantineStore::open(&text).unwrap_err();
    assert!(
        matches!(err, StoreError::NotSqlite { .. }),
        "{}",
        chain(&err)
    );
    assert!(
        err.to_string().contains("notes.txt") && err.to_string().contains("not an SQLite database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&text).unwrap().len(),
        35 * 40,
        "the file is left as it was"
    );

    let other = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER);")
            .unwrap();
    }
    let err = QuarantineStore::open(&other).unwrap_err();
    assert!(
        err.to_string().contains("other.db") && err.to_string().contains("invoices"),
        "{err}"
    );

    let missing = dir.path().join("missing.db");
    let err = QuarantineStore::open_existing(&missing).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("missing.db"), "{err}");
    assert!(!missing.exists(), "open_existing creates nothing");

    let dir_as_file = QuarantineStore::open(dir.path()).unwrap_err();
    assert!(
        chain(&dir_as_file).contains(&dir.path().display().to_string()),
        "{}",
        chain(&dir_as_file)
    );
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    // As the CLI next to a running gateway: two stores, two writer threads, one file.
    let dir = tempfile::tempdir().unwrap();
    let gateway = open(&db(&dir));
    let cli = QuarantineStore::open_existing(db(&dir)).unwrap();
    let m = message("d", ContentType::Json, b"{}");
    let id = gateway
        .put(&m, &quarantine(&m, Some("p"), "r"), None)
        .unwrap();
    assert!(cli.get(id).unwrap().is_some());
    cli.set_status(id, Status::Released, Some("by cli"))
        .unwrap();
    assert_eq!(gateway.get(id).unwrap().unwrap().status, Status::Released);
}

/// Set in the child process of [`acknowledged_puts_survive_sigkill`]: the store file to write.
const CRASH_CHILD: &str = "TWINGUARD_STORE_CRASH_CHILD";

fn crash_payload(thread: usize, seq: usize) -> Vec<u8> {
    format!(
        r#"{{"thread":{thread},"seq":{seq},"pad":"{}"}}"#,
        "x".repeat(200 + seq % 300)
    )
    .into_bytes()
}

/// The writer of the crash test, run as a child process by it (a plain pass otherwise): four
/// threads put as fast as they can and print `ack <id> <thread> <seq>` for each put that
/// returned, until they are killed.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CRASH_CHILD) else {
        return;
    };
    let store = open(Path::new(&path));
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                // Bounded, so that a child whose parent died stops by itself.
                for seq in 0..100_000 {
                    if started.elapsed() > Duration::from_secs(60) {
                        return;
                    }
                    let m = message(&format!("d{t}"), ContentType::Json, &crash_payload(t, seq));
                    let id = store
                        .put(&m, &quarantine(&m, Some("p"), "r"), None)
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {id} {t} {seq}");
                    let _ = out.flush();
                }
            });
        }
    });
}

#[test]
fn acknowledged_puts_survive_sigkill() {
    if std::env::var_os(CRASH_CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = db(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "store::crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<(u64, usize, usize)> = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // libtest may print `test crash_child_writer ... ` just before the first line.
        let Some(rest) = line.find("ack ").map(|i| &line[i + 4..]) else {
            continue;
        };
        let f: Vec<usize> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
        acked.push((f[0] as u64, f[1], f[2]));
        if acked.len() == 200 {
            // SIGKILL mid-stream: the other threads have puts in flight.
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        acked.len(),
        200,
        "the child acknowledged 200 puts before dying ({status})"
    );
    assert!(!status.success(), "killed, not finished: {status}");

    let store = open(&path);
    for (id, thread, seq) in &acked {
        let r = store
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged id {id} lost"));
        assert_eq!(r.payload, crash_payload(*thread, *seq), "record {id}");
        assert_eq!(r.device_id, format!("d{thread}"));
    }
    // Everything in the file is intact too, acknowledged or not (a put may have committed
    // just before the kill without its acknowledgement being read).
    let all = store.list(&Query::default()).unwrap();
    assert!(all.len() >= acked.len());
    for r in &all {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&r.payload).is_ok(),
            "record {}",
            r.id
        );
    }
}

#[test]
fn a_new_store_and_its_journal_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quarantine.db");
    let store = QuarantineStore::open(&path).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    let wal = dir.path().join("quarantine.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    drop(store);
    // An operator's own mode on an existing store is kept.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    drop(QuarantineStore::open(&path).unwrap());
    assert_eq!(mode(&path), 0o640);
}
