//! The judge flow every front end calls: evaluate → alert sinks → store on quarantine, and the
//! one rule for a store write that fails (nothing forwarded, the failure reported).

use twinguard::alerts::{Alerts, AlertsConfig};
use twinguard::judge::{Judge, Stored};
use twinguard::store::QuarantineStore;
use twinguard::{Action, Config, ContentType, Message, Runtime};
use twinguard_fixtures::faults::{
    break_store_writes as break_writes, mend_store_writes as mend_writes,
};
use twinguard_fixtures::wasm;

/// One policy from the built guest `guest`, with `config` lines, on every topic.
fn runtime(guest: &str, config: &str) -> Runtime {
    let toml = format!(
        "[[policy]]\nname = \"p\"\npath = {:?}\n[policy.config]\n{config}\n\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
        wasm(guest).display().to_string()
    );
    Runtime::new(Config::from_toml(&toml, ".").unwrap()).unwrap()
}

/// A judge that quarantines messages without an integer `t`.
fn judge(store: &QuarantineStore, alerts: Option<Alerts>) -> Judge {
    let rt = runtime("schema-guard", "required = \"/t:integer\"");
    Judge::new(rt, store.clone(), alerts)
}

fn message(payload: &str) -> Message {
    Message::new(
        "d1",
        "plant/d1/telemetry",
        ContentType::Json,
        payload.as_bytes().to_vec(),
    )
}

#[test]
fn forwards_what_passes_and_stores_what_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = QuarantineStore::open(dir.path().join("q.db")).unwrap();
    let judge = judge(&store, None);

    let passed = judge.judge(&message(r#"{"t": 1}"#), Some("twin/d1"));
    assert_eq!(passed.forward().map(|p| &p[..]), Some(&br#"{"t": 1}"#[..]));
    assert!(
        matches!(passed.stored, Stored::Nothing),
        "{:?}",
        passed.stored
    );

    let held = judge.judge(&message(r#"{"x": 1}"#), Some("twin/d1"));
    assert_eq!(held.forward(), None);
    let Stored::Record(id) = held.stored else {
        panic!("not stored: {:?}", held.stored);
    };
    let record = store.get(id).unwrap().expect("the record");
    assert_eq!(record.destination.as_deref(), Some("twin/d1"));
    assert_eq!(store.count(None).unwrap(), 1);
}

#[test]
fn a_failed_store_write_forwards_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let store = QuarantineStore::open(&path).unwrap();
    let judge = judge(&store, None);
    break_writes(&path);

    let held = judge.judge(&message(r#"{"x": 1}"#), Some("twin/d1"));
    assert!(
        matches!(held.outcome.action, Action::Quarantine { .. }),
        "{:?}",
        held.outcome.action
    );
    assert_eq!(
        held.forward(),
        None,
        "a message without a record is never forwarded"
    );
    let Stored::Failed(e) = &held.stored else {
        panic!("the write should have failed: {:?}", held.stored);
    };
    assert!(
        twinguard::error_chain(e).contains("disk on fire"),
        "{}",
        twinguard::error_chain(e)
    );
    // A message that passes needs no write, so it still flows.
    assert!(judge
        .judge(&message(r#"{"t": 1}"#), None)
        .forward()
        .is_some());

    // Mended: the same message, delivered again, is stored.
    mend_writes(&path);
    let again = judge.judge(&message(r#"{"x": 1}"#), Some("twin/d1"));
    assert!(
        matches!(again.stored, Stored::Record(_)),
        "{:?}",
        again.stored
    );
    assert_eq!(store.count(None).unwrap(), 1);
}

#[test]
fn alerts_reach_the_sinks_and_come_back_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = QuarantineStore::open(dir.path().join("q.db")).unwrap();
    let file = dir.path().join("alerts.ndjson");
    let config = AlertsConfig::from_toml(&format!(
        "[alerts]\nfile = {:?}",
        file.display().to_string()
    ))
    .unwrap();
    let alerts = Alerts::from_config(&config, dir.path()).unwrap();
    let rt = runtime("hostile", "mode = \"echo\"");
    let judge = Judge::new(rt, store, Some(alerts.clone()));

    let judged = judge.judge(&message(r#"{"t": 1}"#), Some("twin/d1"));
    assert_eq!(judged.outcome.action, Action::Alert);
    assert!(judged.forward().is_some());
    assert_eq!(judged.events.len(), judged.outcome.alerts.len());
    assert!(!judged.events.is_empty());
    assert!(alerts.flush());
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), judged.events.len(), "{written}");
}
