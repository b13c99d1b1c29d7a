//! One hostile policy on one route never stops the others: `serve` with a looping policy on one
//! route and steady traffic on another loses nothing on either.
//!
//! A real Mosquitto and the built `twinguard serve`. Two route families on one gateway:
//! `hostile/+/telemetry` runs the hostile guest in mode `loop` (every message spins until its
//! 20 ms deadline stops it), `devices/+/telemetry` runs schema-guard. Several hostile and
//! several good devices publish interleaved at QoS 1. Every good message must reach the twin,
//! every hostile one must be held in the quarantine store, and none may cross over.
//!
//! No assertion here depends on speed: the timeouts only bound a hung run. How much the
//! hostile route slows the other one is measured in release by `cargo bench -p twinguard
//! --bench gateway` (the "hostile route" case) and written in BENCHMARKS.md.

use twinguard_fixtures as fixtures;
use twinguard_fixtures::broker::Broker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use twinguard::store::{QuarantineStore, Query, Record};

use super::gateway::{seq_of, Peer, Serve};

/// Messages each side publishes.
const PER_SIDE: u64 = 200;
/// Devices on the hostile route (`hostile/h{n}/telemetry`).
const HOSTILE_DEVICES: u64 = 4;
/// Devices on the steady route (`devices/d{n}/telemetry`).
const GOOD_DEVICES: u64 = 5;
/// Bound on a hung run, never a speed requirement.
const BOUND: Duration = Duration::from_secs(180);

/// The config: the hostile guest looping on one route, schema-guard on the other. `breaker`
/// goes into the hostile policy's table (e.g. to turn its breaker off).
fn write_config(dir: &Path, port: u16, client_id: &str, breaker: &str) -> PathBuf {
    let text = format!(
        r#"
[[policy]]
name = "hostile"
path = "{hostile}"
{breaker}
[policy.config]
mode = "loop"
[policy.limits]
deadline-ms = 20
# Far more than 20 ms of guest work: the deadline, not the fuel, stops the loop.
fuel = 100_000_000_000

[[policy]]
name = "schema"
path = "{schema}"
[policy.config]
required = "/seq:integer"

[[route]]
filter = "hostile/+/telemetry"
chain = ["hostile"]

[[route]]
filter = "devices/+/telemetry"
chain = ["schema"]

[gateway]
broker = "mqtt://127.0.0.1:{port}"
client-id = "{client_id}"

[[gateway.input]]
filter = "devices/+/telemetry"
template = "devices/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"

[[gateway.input]]
filter = "hostile/+/telemetry"
template = "hostile/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"

[quarantine]
path = "quarantine.db"
"#,
        hostile = fixtures::wasm("hostile").display(),
        schema = fixtures::wasm("schema-guard").display(),
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The store's records, read while the gateway writes it (none yet when it does not exist).
fn records(store: &Path) -> Vec<Record> {
    QuarantineStore::open_existing(store)
        .and_then(|q| q.list(&Query::default()))
        .unwrap_or_default()
}

/// What one run saw.
struct Run {
    /// Quarantine reasons of the hostile records, by kind (`deadline`, `device held`, …).
    reasons: BTreeMap<&'static str, usize>,
}

/// Starts a broker and `serve`, publishes [`PER_SIDE`] messages on each route interleaved, and
/// asserts that nothing is lost on either and nothing crosses over.
fn hostile_beside_steady(client_id: &str, breaker: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let broker = Broker::start(dir, None);
    let config = write_config(dir, broker.port, client_id, breaker);
    let store = dir.join("quarantine.db");
    let twin = Peer::connect(
        &format!("twin-{client_id}"),
        broker.port,
        &["twin/#"],
        false,
    );
    let mut serve = Serve::subscribed(&config);
    let hostile = Peer::connect(&format!("hostile-{client_id}"), broker.port, &[], false);
    let good = Peer::connect(&format!("good-{client_id}"), broker.port, &[], false);

    // Interleaved: one hostile message, one good one, each side cycling over its devices.
    for seq in 0..PER_SIDE {
        hostile.publish(
            &format!("hostile/h{}/telemetry", seq % HOSTILE_DEVICES),
            format!(r#"{{"seq":{seq},"side":"hostile"}}"#).into_bytes(),
        );
        good.publish(
            &format!("devices/d{}/telemetry", seq % GOOD_DEVICES),
            format!(r#"{{"seq":{seq},"side":"good","temp":20.5}}"#).into_bytes(),
        );
    }

    // Every good message reaches its twin (at-least-once: a duplicate may come, none may lack).
    let mut good_seqs = BTreeSet::new();
    let mut on_twin = twin.collect(BOUND, |got| {
        if let Some((_, p)) = got.last() {
            if let Some(seq) = seq_of(p) {
                if p.windows(6).any(|w| w == b"\"good\"") {
                    good_seqs.insert(seq);
                }
            }
        }
        good_seqs.len() as u64 >= PER_SIDE
    });
    let missing: Vec<u64> = (0..PER_SIDE).filter(|s| !good_seqs.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "good messages lost beside the hostile route: {} of {PER_SIDE} arrived, missing {missing:?}\n{}",
        good_seqs.len(),
        serve.text()
    );

    // Every hostile message is held in the store.
    let end = Instant::now() + BOUND;
    let held = loop {
        let held: Vec<Record> = records(&store)
            .into_iter()
            .filter(|r| r.topic.starts_with("hostile/"))
            .collect();
        let seqs: BTreeSet<u64> = held.iter().filter_map(|r| seq_of(&r.payload)).collect();
        if seqs.len() as u64 >= PER_SIDE || Instant::now() > end {
            break held;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let held_seqs: BTreeSet<u64> = held.iter().filter_map(|r| seq_of(&r.payload)).collect();
    let missing: Vec<u64> = (0..PER_SIDE).filter(|s| !held_seqs.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "hostile messages not quarantined: {} of {PER_SIDE} held, missing {missing:?}\n{}",
        held_seqs.len(),
        serve.text()
    );

    // Nothing crossed over: no hostile message on a twin topic, no good one in the store.
    on_twin.extend(twin.collect(Duration::from_millis(500), |_| false));
    let leaked: Vec<&String> = on_twin
        .iter()
        .filter(|(t, p)| !t.starts_with("twin/d") || !p.windows(6).any(|w| w == b"\"good\""))
        .map(|(t, _)| t)
        .collect();
    assert!(
        leaked.is_empty(),
        "hostile messages reached a twin: {leaked:?}"
    );
    let all = records(&store);
    let wrongly_held: Vec<(&str, &str)> = all
        .iter()
        .filter(|r| !r.topic.starts_with("hostile/"))
        .map(|r| (r.topic.as_str(), r.reason.as_str()))
        .collect();
    assert!(
        wrongly_held.is_empty(),
        "good messages were quarantined: {wrongly_held:?}"
    );

    // Each was held for what the hostile policy did: its deadline, or its breaker after it.
    let mut reasons = BTreeMap::new();
    for r in &held {
        assert_eq!(r.policy.as_deref(), Some("hostile"), "{r:?}");
        assert_eq!(
            r.destination.as_deref(),
            Some(format!("twin/{}/telemetry", r.device_id).as_str()),
            "{r:?}"
        );
        let kind = if r.reason.contains("deadline exceeded: 20 ms") {
            "deadline"
        } else if r.reason.contains("device held") {
            "device held"
        } else if r.reason.contains("circuit breaker open") {
            "breaker open"
        } else {
            panic!("held for an unexpected reason: {:?}", r.reason)
        };
        *reasons.entry(kind).or_insert(0) += 1;
    }
    eprintln!(
        "{client_id}: {} good messages on the twin ({} distinct), {} hostile records ({} distinct): {reasons:?}",
        on_twin.len(),
        good_seqs.len(),
        held.len(),
        held_seqs.len()
    );

    // The gateway is still serving, and says it judged both sides.
    assert!(serve.running(), "serve exited:\n{}", serve.text());
    let log = serve.stop();
    assert!(log.contains("stopped; received"), "{log}");
    drop(broker);
    Run { reasons }
}

#[test]
fn a_looping_policy_on_one_route_loses_nothing_on_the_other() {
    // Default breaker: each hostile device is held after 5 faults of its last 16 messages.
    let run = hostile_beside_steady("tg-isolation", "");
    assert!(
        run.reasons.get("deadline").copied().unwrap_or(0) > 0,
        "the hostile policy ran and hit its deadline: {:?}",
        run.reasons
    );
}

#[test]
fn without_a_breaker_every_hostile_message_runs_to_its_deadline_and_the_other_route_loses_nothing()
{
    // The worst case: no breaker ever stops the looping policy, so every hostile message costs
    // its full deadline.
    let run = hostile_beside_steady(
        "tg-isolation-nobreaker",
        "breaker-threshold = 0\nbreaker-rate = 0",
    );
    assert!(
        run.reasons.keys().all(|k| *k == "deadline"),
        "only the deadline holds them: {:?}",
        run.reasons
    );
}
