//! The config watcher: a changed config or policy file is reloaded, a broken one keeps the last
//! good generation, and a dropped watcher stops.

use std::path::Path;
use std::time::{Duration, Instant};

use twinguard::watch::{WatchStatus, Watcher};
use twinguard::{Action, ContentType, Message, Runtime};
use twinguard_fixtures as fixtures;

const TICK: Duration = Duration::from_millis(20);

fn write_config(path: &Path, remove: &str) {
    let text = format!(
        "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nremove = \"{remove}\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n",
        fixtures::wasm("pii-redact").display()
    );
    replace(path, &text);
}

/// Replaces the file whole (write a sibling, rename it over): the test must not depend on the
/// machine's speed, and a busy machine can stall a plain write between its truncation and its
/// bytes for longer than the watcher's debounce, which then loads an empty file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn redacted(runtime: &Runtime) -> Vec<u8> {
    let m = Message::new("d1", "t", ContentType::Json, br#"{"a":1,"b":2}"#.to_vec());
    let outcome = runtime.evaluate(&m);
    assert_eq!(outcome.action, Action::Redact);
    outcome.payload.to_vec()
}

/// Waits (without a time assertion: the bound only keeps a broken watcher from hanging
/// the suite) until `done` holds.
fn wait_for(watcher: &Watcher, done: impl Fn(&WatchStatus) -> bool) -> WatchStatus {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s = watcher.status();
        if done(&s) || Instant::now() > end {
            return s;
        }
        std::thread::sleep(TICK);
    }
}

#[test]
fn reloads_a_changed_config_and_keeps_the_last_good_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twinguard.toml");
    write_config(&path, "/a");
    let runtime = Runtime::from_config_file(&path).unwrap();
    assert_eq!(redacted(&runtime), br#"{"b":2}"#);
    let watcher = Watcher::spawn(runtime.clone(), &path, TICK).unwrap();

    write_config(&path, "/b");
    let s = wait_for(&watcher, |s| s.reloads >= 1);
    assert_eq!((s.generation, s.reloads, s.failures), (2, 1, 0), "{s:?}");
    assert_eq!(redacted(&runtime), br#"{"a":1}"#);

    // A broken file: counted, named, and the generation that works stays.
    replace(&path, "[[policy]]\nname = \"pii\"\npath = \n");
    let s = wait_for(&watcher, |s| s.failures >= 1);
    assert_eq!((s.generation, s.reloads, s.failures), (2, 1, 1), "{s:?}");
    let error = s.last_error.unwrap_or_default();
    assert!(error.contains("twinguard.toml"), "{error}");
    assert_eq!(redacted(&runtime), br#"{"a":1}"#);

    // Fixed again: reloaded.
    write_config(&path, "/a");
    let s = wait_for(&watcher, |s| s.reloads >= 2);
    assert_eq!((s.generation, s.reloads, s.failures), (3, 2, 1), "{s:?}");
    assert_eq!(redacted(&runtime), br#"{"b":2}"#);
}

#[test]
fn a_replaced_policy_file_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("policy.wasm");
    std::fs::copy(fixtures::wasm("allow-all"), &wasm).unwrap();
    let path = dir.path().join("twinguard.toml");
    std::fs::write(
        &path,
        "[[policy]]\nname = \"p\"\npath = \"policy.wasm\"\n[policy.config]\nremove = \"/a\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
    )
    .unwrap();
    let runtime = Runtime::from_config_file(&path).unwrap();
    let before = runtime.policy_set().policies()[0].version().to_string();
    let watcher = Watcher::spawn(runtime.clone(), &path, TICK).unwrap();

    // Only the component changes (allow-all ignores `remove`; pii-redact applies it).
    std::fs::copy(fixtures::wasm("pii-redact"), &wasm).unwrap();
    let s = wait_for(&watcher, |s| s.reloads >= 1);
    assert_eq!((s.generation, s.failures), (2, 0), "{s:?}");
    assert_ne!(runtime.policy_set().policies()[0].version(), before);
    assert_eq!(redacted(&runtime), br#"{"b":2}"#);
}

#[test]
fn dropping_the_watcher_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twinguard.toml");
    write_config(&path, "/a");
    let runtime = Runtime::from_config_file(&path).unwrap();
    let watcher = Watcher::spawn(runtime.clone(), &path, TICK).unwrap();
    drop(watcher);
    write_config(&path, "/b");
    // Long enough for a live watcher to have reloaded several times over.
    std::thread::sleep(TICK * 10);
    assert_eq!(runtime.policy_set().generation(), 1);
}
