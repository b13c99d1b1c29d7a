//! The plugin in a real Mosquitto on an ephemeral port: the four outcomes as a subscriber
//! sees them (and the store and alerts file behind them), a faulting policy that leaves
//! everyone else served, hot reload while a client publishes, identity from the username,
//! a broker that refuses to start on a bad `plugin_opt_config`, the plugin's metrics
//! listener (`plugin_opt_metrics_listen`) scraped while the broker judges, and a flooding
//! client held to its device budget while another loses nothing.

use twinguard_fixtures::broker;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use broker::Broker;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use support::{plugin_so, policy, route};
use twinguard::store::{QuarantineStore, Query};

/// Bounds every wait, so that a broken plugin fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A broker with the plugin, its twinguard config, store and alerts file in one folder.
struct Rig {
    dir: tempfile::TempDir,
    broker: Broker,
    config: PathBuf,
}

impl Rig {
    /// `policies`: `[[policy]]`/`[[route]]` TOML; `options`: extra `plugin_opt_*` lines.
    fn start(policies: &str, options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("twinguard.toml");
        write_config(&config, policies);
        let extra = format!(
            "plugin {}\nplugin_opt_config {}\n{options}\n",
            plugin_so().display(),
            config.display()
        );
        let broker = Broker::start_with(dir.path(), None, &extra);
        Self {
            dir,
            broker,
            config,
        }
    }

    fn client(&self, id: &str, username: Option<&str>, subscribe: &[&str]) -> Mqtt {
        Mqtt::connect(self.broker.port, id, username, subscribe)
    }

    /// The quarantine store's records (read while the broker holds the store open).
    fn quarantined(&self) -> Vec<twinguard::store::Record> {
        let store = QuarantineStore::open_existing(self.dir.path().join("quarantine.db")).unwrap();
        store.list(&Query::default()).unwrap()
    }
}

/// The policies plus the store and the alerts file, relative to the config's folder.
fn write_config(path: &Path, policies: &str) {
    let text = format!(
        "{policies}\n[quarantine]\npath = \"quarantine.db\"\n\n[alerts]\nfile = \"alerts.ndjson\"\n\
         dedup-window-ms = 0\n"
    );
    std::fs::write(path, text).unwrap();
}

/// What a client's event loop reports.
#[derive(Debug)]
enum Got {
    Message(String, Vec<u8>),
    PubAck,
}

/// An MQTT 3.1.1 client with its event loop on a thread.
struct Mqtt {
    client: Client,
    rx: Receiver<Got>,
}

impl Mqtt {
    /// Connects and subscribes (QoS 1); returns once every subscription is acknowledged.
    fn connect(port: u16, id: &str, username: Option<&str>, subscribe: &[&str]) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some(u) = username {
            o.set_credentials(u, "");
        }
        let (client, connection) = Client::new(o, 1000);
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let filters: Vec<String> = subscribe.iter().map(|s| (*s).to_string()).collect();
        let subscriber = client.clone();
        std::thread::spawn(move || run(connection, &subscriber, &filters, &tx, &ready_tx));
        ready_rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("client {id} did not connect and subscribe"));
        Self { client, rx }
    }

    fn publish(&self, topic: &str, payload: &Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .unwrap();
    }

    /// The next message delivered to this client.
    fn next(&self) -> (String, Value) {
        let end = Instant::now() + PATIENCE;
        loop {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(Got::Message(topic, payload)) => {
                    return (topic, serde_json::from_slice(&payload).unwrap());
                }
                Ok(Got::PubAck) => {}
                Err(e) => panic!("no message: {e}"),
            }
        }
    }

    /// Whether a PUBACK of this client's publishes arrives within `wait`.
    fn ack_within(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        loop {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(Got::PubAck) => return true,
                Ok(Got::Message(..)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Waits for `n` PUBACKs of this client's publishes.
    fn acks(&self, n: usize) {
        let end = Instant::now() + PATIENCE;
        let mut seen = 0;
        while seen < n {
            match self
                .rx
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(Got::PubAck) => seen += 1,
                Ok(Got::Message(..)) => {}
                Err(e) => panic!("{seen} of {n} PUBACKs: {e}"),
            }
        }
    }
}

fn run(
    mut connection: Connection,
    client: &Client,
    filters: &[String],
    tx: &mpsc::Sender<Got>,
    ready: &mpsc::Sender<()>,
) {
    let mut pending = filters.len();
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for f in filters {
                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                }
                if pending == 0 {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                pending = pending.saturating_sub(1);
                if pending == 0 {
                    let _ = ready.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Got::Message(p.topic, p.payload.to_vec()));
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let _ = tx.send(Got::PubAck);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Waits until `path` contains `needle`, and returns its text.
fn file_with(path: &Path, needle: &str) -> String {
    let end = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Schema (quarantines what has no integer /seq), a silent mask of the owner's name (redact),
/// and identity-guard reporting a payload that names another device (alert).
fn pack() -> String {
    [
        policy("schema", "schema-guard", &["required = \"/seq:integer\""]),
        policy("pii", "pii-redact", &["mask = \"/owner/name\""]),
        policy(
            "identity",
            "identity-guard",
            &["payload-field = \"/device\"", "on-mismatch = \"alert\""],
        ),
        route("devices/+/telemetry", &["schema", "pii", "identity"]),
    ]
    .concat()
}

#[test]
fn a_subscriber_sees_each_outcome() {
    each_outcome("");
}

#[test]
fn a_subscriber_sees_each_outcome_judged_by_workers() {
    each_outcome("plugin_opt_workers 2");
}

/// The four outcomes, judged inline or by workers (`options`).
fn each_outcome(options: &str) {
    let options = format!("plugin_opt_alerts_topic twinguard/alerts\n{options}");
    let rig = Rig::start(&pack(), &options);
    let twin = rig.client("twin", None, &["devices/#", "twinguard/alerts"]);
    let device = rig.client("press-7", None, &[]);
    let topic = "devices/press-7/telemetry";

    // allow
    device.publish(topic, &json!({"seq": 1, "temp": 20.5}));
    assert_eq!(twin.next(), (topic.into(), json!({"seq": 1, "temp": 20.5})));
    // redact: the payload the subscriber gets is not the one published
    device.publish(
        topic,
        &json!({"seq": 2, "owner": {"name": "Ada", "badge": 7}}),
    );
    assert_eq!(
        twin.next(),
        (
            topic.into(),
            json!({"seq": 2, "owner": {"name": "***", "badge": 7}})
        )
    );
    // quarantine: never delivered, its alert published
    device.publish(topic, &json!({"temp": 99}));
    // alert: forwarded, and the event on the alerts topic
    device.publish(topic, &json!({"seq": 4, "device": "press-8"}));
    let got = [twin.next(), twin.next(), twin.next()];
    let (events, forwarded): (Vec<_>, Vec<_>) =
        got.into_iter().partition(|(t, _)| t == "twinguard/alerts");
    let forward = (topic.to_string(), json!({"seq": 4, "device": "press-8"}));
    assert_eq!(forwarded, [forward]);
    let codes: Vec<&Value> = events.iter().map(|(_, e)| &e["code"]).collect();
    let expected = [&json!("schema"), &json!("spoofed-identity")];
    assert_eq!(codes, expected, "{events:?}");
    let devices: Vec<&Value> = events.iter().map(|(_, e)| &e["device_id"]).collect();
    assert_eq!(devices, [&json!("press-7"), &json!("press-7")]);
    assert_eq!(events[1].1["policy"], "identity");
    // A last allowed message: everything before it has been judged.
    device.publish(topic, &json!({"seq": 5}));
    assert_eq!(twin.next(), (topic.into(), json!({"seq": 5})));

    let records = rig.quarantined();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.device_id.as_str(), r.topic.as_str()), ("press-7", topic));
    assert_eq!(r.policy.as_deref(), Some("schema"));
    assert_eq!(
        serde_json::from_slice::<Value>(&r.payload).unwrap(),
        json!({"temp": 99})
    );

    let alerts = file_with(&rig.dir.path().join("alerts.ndjson"), "spoofed-identity");
    let codes: Vec<Value> = alerts
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["code"].clone())
        .collect();
    // The same two events went to the file.
    assert_eq!(
        codes,
        [json!("schema"), json!("spoofed-identity")],
        "{alerts}"
    );
}

#[test]
fn a_faulting_policy_does_not_stop_the_broker() {
    faulting_policy("");
}

#[test]
fn a_faulting_policy_does_not_stop_the_broker_or_its_workers() {
    faulting_policy("plugin_opt_workers 1");
}

fn faulting_policy(options: &str) {
    let policies = [
        policy("spin", "hostile", &["mode = \"loop\""]),
        policy("crash", "hostile", &["mode = \"panic\""]),
        policy("pass", "allow-all", &[]),
        route("bad/loop", &["spin"]),
        route("bad/panic", &["crash"]),
        route("ok/#", &["pass"]),
    ]
    .concat();
    let rig = Rig::start(&policies, options);
    let watcher = rig.client("watcher", None, &["#"]);
    let attacker = rig.client("attacker", None, &[]);
    let other = rig.client("other", None, &[]);
    for i in 0..3 {
        attacker.publish("bad/loop", &json!({ "i": i }));
        attacker.publish("bad/panic", &json!({ "i": i }));
    }
    // The broker answered every one of them (QoS 1 PUBACK) and kept the attacker connected.
    attacker.acks(6);
    other.publish("ok/1", &json!({"from": "other"}));
    attacker.publish("ok/2", &json!({"from": "attacker"}));
    // Two connections: no order between them.
    let mut got = [watcher.next(), watcher.next()];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("ok/1".into(), json!({"from": "other"})),
            ("ok/2".into(), json!({"from": "attacker"}))
        ]
    );

    // Each faulted message was quarantined (the default on-fault action), with the fault.
    let records = rig.quarantined();
    assert_eq!(records.len(), 6, "{records:?}");
    for r in &records {
        assert_eq!(r.device_id, "attacker");
        assert!(r.versions.iter().all(|v| v.verdict == "fault"), "{r:?}");
    }
    assert!(records.iter().any(|r| r.policy.as_deref() == Some("spin")));
    assert!(records.iter().any(|r| r.policy.as_deref() == Some("crash")));
}

#[test]
fn workers_keep_each_devices_order_and_lose_nothing() {
    let rig = Rig::start(&masking("***"), "plugin_opt_workers 2");
    let twin = rig.client("twin", None, &["devices/#"]);
    let devices: Vec<Mqtt> = (0..4)
        .map(|d| rig.client(&format!("press-{d}"), None, &[]))
        .collect();
    let per_device = 500;
    for seq in 0..per_device {
        for (d, device) in devices.iter().enumerate() {
            device.publish(
                &format!("devices/press-{d}/telemetry"),
                &json!({"seq": seq, "owner": {"name": "Ada"}}),
            );
        }
    }
    let mut next = [0u64; 4];
    for _ in 0..4 * per_device {
        let (topic, v) = twin.next();
        let d: usize = topic["devices/press-".len()..]
            .split('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected topic {topic}"));
        assert_eq!(v["seq"], next[d], "press-{d} out of order or lost: {v}");
        assert_eq!(v["owner"]["name"], "***", "not judged: {v}");
        next[d] += 1;
    }
    assert!(rig.quarantined().is_empty());
}

#[test]
fn workers_hold_what_the_broker_stopped_before_publishing() {
    // A policy that runs to its 300 ms deadline on every message, and lets it through.
    let policies = format!(
        "[[policy]]\nname = \"slow\"\npath = \"{}\"\non-fault = \"allow\"\n\
         [policy.config]\nmode = \"loop\"\n[policy.limits]\ndeadline-ms = 300\n\
         fuel = 1_000_000_000_000\n\n{}",
        twinguard_fixtures::wasm("hostile").display(),
        route("devices/#", &["slow"])
    );
    let mut rig = Rig::start(&policies, "plugin_opt_workers 1");
    let device = rig.client("press-7", None, &[]);
    for seq in 0..5 {
        device.publish("devices/press-7/telemetry", &json!({ "seq": seq }));
    }
    // Acknowledged at once: the worker judges them later.
    device.acks(5);
    rig.broker.stop();
    let store = QuarantineStore::open_existing(rig.dir.path().join("quarantine.db")).unwrap();
    let records = store.list(&Query::default()).unwrap();
    let seqs: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.payload).unwrap()["seq"].clone())
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4], "{records:?}");
    for r in &records {
        assert!(r.reason.contains("broker stopped"), "{r:?}");
        assert_eq!(r.topic, "devices/press-7/telemetry");
    }
}

fn masking(with: &str) -> String {
    let mask = format!("mask-with = \"{with}\"");
    policy("pii", "pii-redact", &["mask = \"/owner/name\"", &mask]) + &route("devices/#", &["pii"])
}

#[test]
fn reload_inside_the_broker_loses_no_publish() {
    let rig = Rig::start(&masking("old"), "plugin_opt_reload_ms 50");
    let twin = rig.client("twin", None, &["devices/#"]);
    let device = rig.client("press-7", None, &[]);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let publisher = std::thread::spawn(move || {
        let mut sent = 0u64;
        // Publishes until told to stop; keeps no more than 100 unacknowledged.
        while stop_rx.try_recv().is_err() {
            device.publish(
                "devices/press-7/telemetry",
                &json!({"seq": sent, "owner": {"name": "Ada"}}),
            );
            sent += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        device.acks(usize::try_from(sent).unwrap());
        sent
    });

    let mut masks = Vec::new();
    let mut edited = false;
    let end = Instant::now() + PATIENCE;
    loop {
        let (_, v) = twin.next();
        assert_eq!(v["seq"], masks.len(), "out of order or lost: {v}");
        masks.push(v["owner"]["name"].as_str().unwrap_or_default().to_string());
        if masks.len() == 50 && !edited {
            write_config(&rig.config, &masking("new"));
            edited = true;
        }
        // Keep publishing a while after the new policy shows up.
        let first_new = masks.iter().position(|m| m == "new");
        if first_new.is_some_and(|i| masks.len() > i + 50) || Instant::now() > end {
            break;
        }
    }
    stop_tx.send(()).unwrap();
    let sent = publisher.join().unwrap();
    // Drain what the publisher sent after we stopped looking.
    while (masks.len() as u64) < sent {
        let (_, v) = twin.next();
        assert_eq!(v["seq"], masks.len(), "out of order or lost: {v}");
        masks.push(v["owner"]["name"].as_str().unwrap_or_default().to_string());
    }
    let first_new = masks
        .iter()
        .position(|m| m == "new")
        .expect("the reload never took effect");
    assert!(first_new >= 50, "changed before the edit: {first_new}");
    assert!(masks[..first_new].iter().all(|m| m == "old"), "{masks:?}");
    assert!(masks[first_new..].iter().all(|m| m == "new"), "{masks:?}");
    assert_eq!(masks.len() as u64, sent);
}

/// The broker's log, read until a line containing `want` shows up (within [`PATIENCE`]).
fn log_until(log: &Path, want: &str) -> String {
    let end = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(want) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "no {want:?} in the broker's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reloads_and_failed_reloads_reach_the_brokers_log_once_each() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("broker.log");
    let rig = Rig::start(
        &masking("old"),
        &format!(
            "plugin_opt_reload_ms 50\nlog_dest file {}\nlog_type notice\n",
            log.display()
        ),
    );
    // Traffic keeps the broker's loop (and its ticks) turning, as in production.
    let device = rig.client("press-7", None, &[]);
    device.publish("devices/press-7/telemetry", &json!({"seq": 0}));
    write_config(&rig.config, &masking("new"));
    log_until(&log, "policies reloaded: generation 2 active");
    std::fs::write(&rig.config, "[[policy]]\nname = \"broken\"\n").unwrap();
    device.publish("devices/press-7/telemetry", &json!({"seq": 1}));
    let text = log_until(&log, "generation 2 stays active");
    assert_eq!(
        text.matches("policies reloaded").count(),
        1,
        "each reload is reported once:\n{text}"
    );
}

#[test]
fn identity_from_the_username() {
    let policies = policy(
        "identity",
        "identity-guard",
        &["topic-segment = 1", "inventory = \"sensor-7\""],
    ) + &route("devices/+/telemetry", &["identity"]);
    let rig = Rig::start(&policies, "plugin_opt_identity username");
    let twin = rig.client("twin", None, &["devices/#"]);
    let topic = "devices/sensor-7/telemetry";
    // The username is in the inventory and names the topic; the client id does neither.
    let genuine = rig.client("any-client-id", Some("sensor-7"), &[]);
    // The client id would pass; the username does not.
    let impostor = rig.client("sensor-7", Some("intruder"), &[]);
    impostor.publish(topic, &json!({"from": "impostor"}));
    genuine.publish(topic, &json!({"from": "genuine"}));
    assert_eq!(twin.next(), (topic.into(), json!({"from": "genuine"})));
    impostor.acks(1);
    let records = rig.quarantined();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].device_id, "intruder");
    assert_eq!(records[0].alerts[0].code, "unknown-device");
}

/// Sends a reading, SIGKILLs the broker once the reading is acknowledged, restarts it, and
/// sends the same reading again. Returns whether the replay reached the subscriber, and the
/// quarantine records that name it a replay. With `committed`, the kill waits until the state
/// file holds the device's entry (the plugin's default acknowledges without waiting for the
/// commit; the writer commits within 5 ms).
fn replay_across_a_broker_kill(state: &str, committed: bool) -> (bool, usize) {
    let policies = policy("replay", "replay-guard", &["max-age-ms = 600000"])
        + &route("devices/+/telemetry", &["replay"])
        + state;
    let mut rig = Rig::start(&policies, "");
    let topic = "devices/d7/telemetry";
    let reading = json!({"seq": 7, "ts": twinguard::now_ms(), "v": 1});
    {
        let twin = rig.client("twin", None, &["devices/#"]);
        let device = rig.client("d7", None, &[]);
        device.publish(topic, &reading);
        device.acks(1);
        assert_eq!(twin.next(), (topic.into(), reading.clone()));
    }
    if committed {
        let file = rig.dir.path().join("quarantine.state.db");
        let end = Instant::now() + PATIENCE;
        let rows = || -> rusqlite::Result<i64> {
            let conn = rusqlite::Connection::open_with_flags(
                &file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.query_row(
                "SELECT count(*) FROM state WHERE scope = 0 AND device = 'd7'",
                [],
                |r| r.get(0),
            )
        };
        while rows().unwrap_or(0) == 0 {
            assert!(Instant::now() < end, "the state was never committed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    rig.broker.kill9();
    rig.broker.restart();
    let twin = rig.client("twin", None, &["devices/#"]);
    let device = rig.client("d7", None, &[]);
    device.publish(topic, &reading);
    let marker = json!({"seq": 8, "ts": twinguard::now_ms(), "v": 2});
    device.publish(topic, &marker);
    device.acks(2);
    // The broker delivers in order: the replay, if it passed, comes before the marker.
    let (_, first) = twin.next();
    let replays = rig
        .quarantined()
        .iter()
        .filter(|r| r.reason.contains("seq 7 <= last accepted 7"))
        .count();
    (first == reading, replays)
}

/// `ack-after-commit = true`: the PUBACK waits for the commit, so the broker can be killed the
/// moment it is sent.
#[test]
fn a_replay_right_after_a_kill_9_of_the_broker_is_still_caught() {
    let (forwarded, held) =
        replay_across_a_broker_kill("[state]\nack-after-commit = true\n", false);
    assert!(!forwarded, "the replay reached the subscriber");
    assert_eq!(held, 1);
}

/// The plugin's default: the state is committed just after the PUBACK, and restored.
#[test]
fn with_the_default_state_file_a_replay_after_a_broker_kill_is_caught() {
    let (forwarded, held) = replay_across_a_broker_kill("", true);
    assert!(!forwarded, "the replay reached the subscriber");
    assert_eq!(held, 1);
}

/// Whether the PUBACK of a message that changes state arrives, within `wait`, while another
/// connection holds the state file's write lock (the writer's commit waits for it), and
/// whether it arrives once the lock is released.
fn puback_while_the_state_file_is_locked(state: &str, wait: Duration) -> (bool, bool) {
    let policies = policy("replay", "replay-guard", &["max-age-ms = 600000"])
        + &route("devices/+/telemetry", &["replay"])
        + state;
    let rig = Rig::start(&policies, "");
    let topic = "devices/d7/telemetry";
    let device = rig.client("d7", None, &[]);
    device.publish(topic, &json!({"seq": 7, "ts": twinguard::now_ms()}));
    device.acks(1);
    let lock = rusqlite::Connection::open(rig.dir.path().join("quarantine.state.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    device.publish(topic, &json!({"seq": 8, "ts": twinguard::now_ms()}));
    let while_locked = device.ack_within(wait);
    lock.execute_batch("ROLLBACK").unwrap();
    let after = while_locked || device.ack_within(PATIENCE);
    (while_locked, after)
}

/// With `ack-after-commit = true` the PUBACK waits for the state commit (what makes the kill
/// test above hold at any speed); by default it does not.
#[test]
fn ack_after_commit_holds_the_puback_until_the_state_is_committed() {
    // Absence, asserted only where no speed makes the PUBACK come: 1.5 s, which the writer's
    // busy timeout (5 s) outlasts, so its commit is still pending when the lock goes.
    assert_eq!(
        puback_while_the_state_file_is_locked(
            "[state]\nack-after-commit = true\n",
            Duration::from_millis(1500)
        ),
        (false, true)
    );
    // Presence: as long as a slow machine needs, the lock held throughout.
    assert_eq!(
        puback_while_the_state_file_is_locked("", PATIENCE),
        (true, true)
    );
}

/// The control: state in memory only, so the restarted broker's plugin forgot the device.
#[test]
fn without_persisted_state_the_brokers_restart_lets_the_replay_pass() {
    let (forwarded, held) = replay_across_a_broker_kill("[state]\npersist = false\n", false);
    assert!(
        forwarded,
        "the replay should pass when state is not persisted"
    );
    assert_eq!(held, 0);
}

/// Runs mosquitto on a config whose plugin cannot start; returns its exit status and stderr.
fn failed_start(dir: &Path, plugin_opts: &str) -> (std::process::ExitStatus, String) {
    let port = broker::free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nper_listener_settings false\nallow_anonymous true\nlog_dest stderr\n\
             listener {port} 127.0.0.1\nplugin {}\n{plugin_opts}\n",
            plugin_so().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(broker::mosquitto())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("mosquitto kept running with {plugin_opts:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_stops_the_broker_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/twinguard.toml");
    let (status, stderr) = failed_start(
        dir.path(),
        &format!("plugin_opt_config {}", missing.display()),
    );
    assert!(!status.success());
    assert!(stderr.contains("twinguard: cannot start"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    // A config that parses but names a policy a route cannot find.
    let config = dir.path().join("broken.toml");
    std::fs::write(&config, "[[route]]\nfilter = \"a/#\"\nchain = [\"nope\"]\n").unwrap();
    let (status, stderr) = failed_start(
        dir.path(),
        &format!("plugin_opt_config {}", config.display()),
    );
    assert!(!status.success());
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("\"nope\", which is not defined"),
        "{stderr}"
    );

    // No config option at all.
    let (status, stderr) = failed_start(dir.path(), "");
    assert!(!status.success());
    assert!(stderr.contains("plugin_opt_config is missing"), "{stderr}");
}

/// Workers take MQTT 3.1.1 publishers only: an MQTT 5 publisher's refused QoS 1 PUBLISH would
/// get reason code 135, so its messages are judged inline and acknowledged with success.
#[test]
fn mqtt5_publishers_are_judged_inline_even_with_workers() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS as Q5;

    let rig = Rig::start(&masking("***"), "plugin_opt_workers 1");
    let twin = rig.client("twin", None, &["devices/#"]);
    let o = rumqttc::v5::MqttOptions::new("press-5", "127.0.0.1", rig.broker.port);
    let (client, mut connection) = rumqttc::v5::Client::new(o, 100);
    let (tx, acks) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(rumqttc::v5::Event::Incoming(P5::PubAck(a))) => {
                    let _ = tx.send(a.reason);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    for seq in 0..3 {
        let payload = json!({"seq": seq, "owner": {"name": "Ada"}}).to_string();
        client
            .publish("devices/press-5/telemetry", Q5::AtLeastOnce, false, payload)
            .unwrap();
    }
    for seq in 0..3 {
        assert_eq!(acks.recv_timeout(PATIENCE).unwrap(), PubAckReason::Success);
        let (topic, v) = twin.next();
        assert_eq!(topic, "devices/press-5/telemetry");
        assert_eq!(v, json!({"seq": seq, "owner": {"name": "***"}}));
    }
}

/// The judge flow's rule for a store write that fails, inside the broker: the held message is
/// neither routed nor acknowledged (the publisher is disconnected before its PUBACK), the
/// client sends it again on reconnect, and once the store works it is recorded. The gateway's
/// test of the same rule is `a_failed_store_write_is_delivered_again_not_lost` in
/// `host/cli/tests/all/gateway.rs`.
#[test]
fn a_failed_store_write_is_delivered_again_not_lost() {
    use twinguard_fixtures::faults::{break_store_writes, mend_store_writes, store_records};

    let rig = Rig::start(&pack(), "");
    let store = rig.dir.path().join("quarantine.db");
    let twin = rig.client("twin", None, &["devices/#"]);
    break_store_writes(&store);

    // A device with a persistent session that keeps reconnecting, as a real one does.
    let mut o = MqttOptions::new("press-7", "127.0.0.1", rig.broker.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    let (client, mut connection) = Client::new(o, 100);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            let _ = tx.send(match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => "puback",
                Ok(_) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    "disconnected"
                }
            });
        }
    });
    let topic = "devices/press-7/telemetry";
    client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            json!({"temp": 99}).to_string(),
        )
        .unwrap();
    // Disconnected, not acknowledged.
    let first = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(first, "disconnected");
    assert_eq!(store_records(&store), 0);

    mend_store_writes(&store);
    // Resent on a reconnect, stored, and only then acknowledged.
    let end = Instant::now() + PATIENCE;
    while rx.recv_timeout(PATIENCE).unwrap() != "puback" {
        assert!(Instant::now() < end, "never acknowledged");
    }
    assert_eq!(store_records(&store), 1);
    // The held message never reached the twin; the next one does.
    client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            json!({"seq": 1}).to_string(),
        )
        .unwrap();
    assert_eq!(twin.next(), (topic.into(), json!({"seq": 1})));
}

/// The value of the Prometheus sample `name{…}` whose labels include every `labels` pair.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// A sample's name, some of its labels, and its value.
type Expected<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// `plugin_opt_metrics_listen`: the plugin's own listener counts what the broker judged (per
/// route and action, per policy and verdict), the store's depth, and answers the health
/// endpoints, scraped over HTTP as Prometheus does.
#[test]
fn the_plugins_metrics_count_what_the_broker_judged() {
    use twinguard_fixtures::prometheus::http_get;

    let addr = format!("127.0.0.1:{}", broker::free_port());
    let options =
        format!("plugin_opt_metrics_listen {addr}\nplugin_opt_metrics_service_name broker-a");
    let rig = Rig::start(&pack(), &options);
    let twin = rig.client("twin", None, &["devices/#"]);
    let device = rig.client("press-7", None, &[]);
    let topic = "devices/press-7/telemetry";
    let messages = [
        json!({"seq": 1}),                           // allow
        json!({"seq": 2, "owner": {"name": "Ada"}}), // redact
        json!({"temp": 99}),                         // quarantine (no /seq)
        json!({"seq": 4, "device": "press-8"}),      // alert
        json!({"seq": "five"}),                      // quarantine (/seq not an integer)
        json!({"seq": 6}),                           // allow
    ];
    for m in &messages {
        device.publish(topic, m);
    }
    // Judged inline: each PUBACK follows its judgement. The subscriber gets the four routed.
    device.acks(messages.len());
    for _ in 0..4 {
        twin.next();
    }

    let route = ("twinguard_route", "devices/+/telemetry");
    let expected: Vec<Expected> = vec![
        (
            "twinguard_messages_total",
            vec![route, ("twinguard_action", "allow")],
            2.0,
        ),
        (
            "twinguard_messages_total",
            vec![route, ("twinguard_action", "redact")],
            1.0,
        ),
        (
            "twinguard_messages_total",
            vec![route, ("twinguard_action", "alert")],
            1.0,
        ),
        (
            "twinguard_messages_total",
            vec![route, ("twinguard_action", "quarantine")],
            2.0,
        ),
        (
            "twinguard_policy_evaluations_total",
            vec![
                ("twinguard_policy_name", "schema"),
                ("twinguard_verdict", "allow"),
            ],
            4.0,
        ),
        (
            "twinguard_policy_evaluations_total",
            vec![
                ("twinguard_policy_name", "schema"),
                ("twinguard_verdict", "quarantine"),
            ],
            2.0,
        ),
        ("twinguard_quarantine_held", vec![], 2.0),
        ("target_info", vec![("service_name", "broker-a")], 1.0),
    ];
    // The counts are final once the last message was forwarded; the wait only covers a slow
    // broker or listener.
    let end = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = match http_get(&addr, "/metrics") {
            Ok((200, body)) => body,
            other => format!("# no scrape yet: {other:?}"),
        };
        let matches = expected
            .iter()
            .all(|(name, labels, want)| sample(&body, name, labels) == Some(*want));
        if matches {
            break body;
        }
        if Instant::now() > end {
            let got: Vec<_> = expected
                .iter()
                .map(|(name, labels, want)| (name, labels, want, sample(&body, name, labels)))
                .collect();
            panic!("the metrics never matched: {got:#?}\n{body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every verdict's series exists from load.
    let fault = [
        ("twinguard_policy_name", "schema"),
        ("twinguard_verdict", "fault"),
    ];
    assert_eq!(
        sample(&body, "twinguard_policy_evaluations_total", &fault),
        Some(0.0),
        "{body}"
    );
    assert_eq!(rig.quarantined().len(), 2);

    let (status, body) = http_get(&addr, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    // A clean stop (SIGTERM) runs the plugin's cleanup, which stops the listener and joins
    // its thread: the broker exits.
    let (tx, rx) = mpsc::channel();
    let mut rig = rig;
    std::thread::spawn(move || {
        rig.broker.stop();
        let _ = tx.send(());
    });
    rx.recv_timeout(PATIENCE)
        .expect("the broker did not stop with the metrics listener running");
}

#[test]
fn a_bad_or_taken_metrics_listen_stops_the_broker_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinguard.toml");
    write_config(&config, &masking("***"));

    let (status, stderr) = failed_start(
        dir.path(),
        &format!(
            "plugin_opt_config {}\nplugin_opt_metrics_listen localhost",
            config.display()
        ),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("plugin_opt_metrics_listen \"localhost\": an IP address and a port"),
        "{stderr}"
    );

    // Someone else holds the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, stderr) = failed_start(
        dir.path(),
        &format!(
            "plugin_opt_config {}\nplugin_opt_metrics_listen {addr}",
            config.display()
        ),
    );
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("plugin_opt_metrics_listen {addr}: cannot listen")),
        "{stderr}"
    );
    drop(taken);
}

/// Messages one client floods past its budget, and how many of them reached the twin.
struct Flooded {
    passed: usize,
    /// Seconds from the first flood message to the last acknowledgement: a bucket refills one
    /// token a second, so a slow machine lets a few more through.
    seconds: f64,
    /// `device-over-budget` events on the alerts topic.
    events: Vec<Value>,
    rig: Rig,
}

const FLOOD: usize = 400;
const CALM: usize = 50;
/// The budget's burst: room for every calm message (and the marker), not for the flood.
const BURST: usize = 60;

/// `flood-1` publishes [`FLOOD`] messages as fast as QoS 1 allows while `press-2` publishes
/// [`CALM`]; a subscriber of both and of the alerts topic collects what the broker passes,
/// up to a marker `press-2` sends after every acknowledgement (the broker delivers to one
/// subscriber in the order it judged, so nothing judged before the marker arrives after it).
fn flood_past(budget: &str, metrics: &str) -> Flooded {
    let options = format!("plugin_opt_alerts_topic twinguard/alerts\n{budget}\n{metrics}");
    let rig = Rig::start(&pack(), &options);
    let twin = rig.client("twin", None, &["devices/#", "twinguard/alerts"]);
    let flooder = rig.client("flood-1", None, &[]);
    let calm = rig.client("press-2", None, &[]);
    let started = Instant::now();
    for seq in 0..FLOOD {
        flooder.publish("devices/flood-1/telemetry", &json!({ "seq": seq }));
        if seq % (FLOOD / CALM) == 0 {
            calm.publish("devices/press-2/telemetry", &json!({ "seq": seq }));
        }
    }
    flooder.acks(FLOOD);
    calm.acks(CALM);
    let seconds = started.elapsed().as_secs_f64();
    calm.publish("devices/press-2/telemetry", &json!({"seq": -1}));
    let (mut passed, mut calm_seqs, mut events) = (0, Vec::new(), Vec::new());
    loop {
        let (topic, v) = twin.next();
        match topic.as_str() {
            "devices/flood-1/telemetry" => passed += 1,
            "devices/press-2/telemetry" if v["seq"] == -1 => break,
            "devices/press-2/telemetry" => calm_seqs.push(v["seq"].as_u64().unwrap()),
            "twinguard/alerts" => events.push(v),
            other => panic!("unexpected topic {other}"),
        }
    }
    // Every message of the other client was judged and delivered, in order.
    let sent: Vec<u64> = (0..FLOOD as u64).step_by(FLOOD / CALM).collect();
    assert_eq!(calm_seqs, sent);
    Flooded {
        passed,
        seconds,
        events,
        rig,
    }
}

#[test]
fn a_flooding_client_is_held_to_its_budget_and_others_lose_nothing() {
    let addr = format!("127.0.0.1:{}", broker::free_port());
    let f = flood_past(
        &format!(
            "plugin_opt_device_budget_rate 1\nplugin_opt_device_budget_burst {BURST}\n\
             plugin_opt_device_budget_exempt bridge-1"
        ),
        &format!("plugin_opt_metrics_listen {addr}"),
    );
    // The burst, plus what one token a second brought back while the flood lasted.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let refilled = f.seconds.ceil() as usize;
    assert!(
        (BURST..=BURST + refilled).contains(&f.passed),
        "{} of {FLOOD} flood messages passed in {:.1} s",
        f.passed,
        f.seconds
    );
    // One event for the episode, naming the device and the setting; none per message.
    assert_eq!(f.events.len(), 1, "{:?}", f.events);
    let e = &f.events[0];
    assert_eq!(e["code"], "device-over-budget", "{e}");
    assert_eq!(e["action"], "shed", "{e}");
    assert_eq!(e["device_id"], "flood-1", "{e}");
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("plugin_opt_device_budget_rate")),
        "{e}"
    );
    let sinks = file_with(
        &f.rig.dir.path().join("alerts.ndjson"),
        "device-over-budget",
    );
    assert_eq!(sinks.matches("device-over-budget").count(), 1, "{sinks}");
    // The shed messages were never judged: nothing of them is in the store or the counts.
    assert!(f.rig.quarantined().is_empty());
    let shed = (FLOOD - f.passed) as f64;
    let end = Instant::now() + PATIENCE;
    loop {
        let body = twinguard_fixtures::prometheus::http_get(&addr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let counted = sample(&body, "twinguard_device_budget_shed_total", &[]);
        let judged = sample(
            &body,
            "twinguard_messages_total",
            &[
                ("twinguard_route", "devices/+/telemetry"),
                ("twinguard_action", "allow"),
            ],
        );
        if counted == Some(shed) && judged == Some((f.passed + CALM + 1) as f64) {
            break;
        }
        assert!(
            Instant::now() < end,
            "shed {counted:?} (want {shed}), judged {judged:?}\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // An exempt identity (a bridge carrying many devices) is judged whole.
    let twin = f.rig.client("twin-2", None, &["devices/#"]);
    let bridge = f.rig.client("bridge-1", None, &[]);
    for seq in 0..2 * BURST {
        bridge.publish("devices/bridge-1/telemetry", &json!({ "seq": seq }));
    }
    bridge.acks(2 * BURST);
    for seq in 0..2 * BURST {
        let (topic, v) = twin.next();
        assert_eq!(
            (topic.as_str(), v["seq"].as_u64()),
            ("devices/bridge-1/telemetry", Some(seq as u64))
        );
    }
}

#[test]
fn with_the_budget_off_a_flood_is_judged_whole() {
    let f = flood_past("plugin_opt_device_budget_rate 0", "");
    assert_eq!(f.passed, FLOOD);
    assert!(f.events.is_empty(), "{:?}", f.events);
}
