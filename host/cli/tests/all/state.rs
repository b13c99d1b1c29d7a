//! Policies' state across a `kill -9` of `serve`: a replay sent right after the restart is
//! still caught, because the state the first message taught replay-guard was committed to the
//! state file before the message was acknowledged. The same run with `[state] persist =
//! false` lets the replay through: what the test guards could fail.

use std::path::Path;
use std::time::{Duration, Instant};

use twinguard::store::{QuarantineStore, Query};

use super::gateway::{quarantine_cmd, setup, Peer, Serve, Setup};
use twinguard_fixtures as fixtures;
use twinguard_fixtures::broker::Broker;

/// replay-guard alone on the device topics, with a window wide enough for a slow restart.
fn write_config(s: &Setup, port: u16, state: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[[policy]]
name = "replay"
path = "{replay}"
[policy.config]
max-age-ms = 600000

[[route]]
filter = "devices/+/telemetry"
chain = ["replay"]

[gateway]
broker = "mqtt://127.0.0.1:{port}"
client-id = "tg-state"

[[gateway.input]]
filter = "devices/+/telemetry"
template = "devices/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"

[quarantine]
path = "quarantine.db"
{state}
"#,
        replay = fixtures::wasm("replay-guard").display(),
    );
    let path = s.dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until the state file holds replay-guard's entry for d7.
fn wait_for_state(file: &Path, serve: &Serve) {
    let rows = || -> rusqlite::Result<i64> {
        let conn = rusqlite::Connection::open_with_flags(
            file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.query_row(
            "SELECT count(*) FROM state WHERE scope = 0 AND device = 'd7'",
            [],
            |r| r.get(0),
        )
    };
    let end = Instant::now() + Duration::from_secs(30);
    while rows().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < end,
            "the state was never committed: {}",
            serve.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids of the records held as replays of seq 7.
fn quarantined_replays(store: &Path) -> Vec<u64> {
    let Ok(store) = QuarantineStore::open(store) else {
        return Vec::new();
    };
    store
        .list(&Query::default())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.reason.contains("replay-guard: seq 7 <= last accepted 7"))
        .map(|r| r.id)
        .collect()
}

/// Sends one reading, kills `serve` with SIGKILL once the twin has it, restarts `serve`, sends
/// the same reading again. Returns whether the reading reached the twin after the restart and
/// the records held as replays, with the broker and the restarted `serve` still running.
///
/// With state kept, the kill waits for the state commit; the acknowledgement may still be in
/// flight, and the broker's redelivery of the reading is then a replay too (the twin has it).
/// Without state kept, seq 7 reaches the twin after the restart either way.
fn replay_across_a_kill(state: &str) -> Outcome {
    let (tmp, s) = setup();
    let broker = Broker::start(&s.dir, None);
    let config = write_config(&s, broker.port, state);
    let twin = Peer::connect("twin-state", broker.port, &["twin/#"], true);
    let mut serve = Serve::subscribed(&config);
    let device = Peer::connect("d-state", broker.port, &[], true);
    let now = twinguard::now_ms();
    let reading = format!(r#"{{"seq":7,"ts":{now},"v":1}}"#).into_bytes();
    device.publish("devices/d7/telemetry", reading.clone());
    let first = twin.collect(Duration::from_secs(30), |g| !g.is_empty());
    assert_eq!(first.len(), 1, "the first reading passes: {}", serve.text());
    if state.is_empty() {
        // The gateway forwards before the state commit and acknowledges after it: kill once
        // the commit is there. Killed earlier, the broker would deliver the reading again to
        // a serve that rightly never learnt it, and the twin would get it twice (at least
        // once), which is not what this test is about.
        wait_for_state(&s.dir.join("quarantine.state.db"), &serve);
    }
    serve.kill9();

    let restarted = Serve::subscribed(&config);
    device.publish("devices/d7/telemetry", reading);
    // Settled when the twin has it or the store has it; a marker after it shows the gateway
    // is past it either way.
    let marker = format!(r#"{{"seq":8,"ts":{now},"v":2}}"#).into_bytes();
    device.publish("devices/d7/telemetry", marker);
    let got = twin.collect(Duration::from_secs(30), |g| {
        g.iter().any(|(_, p)| p.starts_with(br#"{"seq":8"#))
    });
    assert!(
        got.iter().any(|(_, p)| p.starts_with(br#"{"seq":8"#)),
        "the reading after the replay passes: {}",
        restarted.text()
    );
    let replay_forwarded = got.iter().any(|(_, p)| p.starts_with(br#"{"seq":7"#));
    // The store commit precedes the acknowledgement that precedes the marker's judging.
    let end = Instant::now() + Duration::from_secs(10);
    let mut held = quarantined_replays(&s.store);
    while held.is_empty() && !replay_forwarded && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        held = quarantined_replays(&s.store);
    }
    Outcome {
        forwarded: replay_forwarded,
        held,
        config,
        serve: restarted,
        _broker: broker,
        _tmp: tmp,
    }
}

/// What [`replay_across_a_kill`] saw, with the broker and `serve` still running.
struct Outcome {
    forwarded: bool,
    held: Vec<u64>,
    config: std::path::PathBuf,
    serve: Serve,
    _broker: Broker,
    _tmp: tempfile::TempDir,
}

#[test]
fn a_replay_right_after_a_kill_9_of_serve_is_still_caught() {
    // Bound whole: the broker, serve and the folder must outlive the command below.
    let outcome = replay_across_a_kill("");
    let Outcome {
        forwarded,
        held,
        config,
        serve,
        ..
    } = &outcome;
    assert!(!*forwarded, "the replay reached the twin");
    assert!(!held.is_empty(), "the replay was not quarantined as one");
    // `quarantine replay`, beside the running serve, judges with the state serve committed:
    // the replay is still one.
    let out = quarantine_cmd(&["replay", &held[0].to_string()], config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("still quarantined by replay"),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.text()
    );
}

/// The control: with state in memory only, the restart forgot the device and the replay
/// passes, which is what persisting state is for.
#[test]
fn without_persisted_state_the_same_replay_passes() {
    let outcome = replay_across_a_kill("[state]\npersist = false\n");
    assert!(
        outcome.forwarded,
        "the replay should pass when state is not persisted"
    );
}
