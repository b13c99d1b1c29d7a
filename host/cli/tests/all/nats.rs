//! Scale-out on a real NATS JetStream cluster: three `nats-server` nodes on loopback, three
//! `serve` instances sharing the stream's partitions, devices publishing over each node's
//! MQTT listener. Mid-stream one node and one instance are killed with SIGKILL and started
//! again later. What must hold: every message the stream got has an outcome; each device's
//! forwards keep its order; and every decision equals the one a single process makes on the
//! same messages in stream order: the state a killed instance's partitions had moved with
//! them (replays it had seen are still caught by whoever judges the partition next).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use twinguard::judge::Judge;
use twinguard::store::{QuarantineStore, Query};
use twinguard::{ContentType, FileConfig, Message, Runtime};
use twinguard_fixtures as fixtures;
use twinguard_fixtures::nats::NatsCluster;

use super::gateway::{quarantine_cmd, setup, Peer, Serve};

const PARTITIONS: u32 = 6;
const DEVICES: usize = 12;
const ROUNDS: usize = 48;

/// What every instance reads, and where what passes goes (the subject `twin.<device>.telemetry`).
const INPUT: &str = r#"
[[nats.input]]
filter = "plant/+/telemetry"
template = "plant/{device}/telemetry"
output = "twin/{device}/telemetry"
"#;

/// replay-guard and range-guard: both keep per-device state (the last sequence; the last
/// accepted value and how often it repeated), so a partition that lost its state on a
/// takeover would decide otherwise: a frozen sensor's readings after the takeover would pass
/// until the repeats were counted again.
fn policies() -> String {
    format!(
        r#"
[[policy]]
name = "replay"
path = "{replay}"
[policy.config]
max-age-ms = 600000

[[policy]]
name = "range"
path = "{range}"
[policy.config]
"/v" = "min=0,max=100,max-step=20,stuck-after=4"
on-stuck = "quarantine"

[[route]]
filter = "plant/+/telemetry"
chain = ["replay", "range"]
"#,
        replay = fixtures::wasm("replay-guard").display(),
        range = fixtures::wasm("range-guard").display(),
    )
}

fn write_config(dir: &Path, urls: &[String], instance: &str, metrics: u16) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let servers = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"{policies}
[nats]
servers = [{servers}]
instance = "{instance}"
partitions = {PARTITIONS}
replicas = 3
lease-ms = 3000
checkpoint-messages = 16
checkpoint-ms = 100
{INPUT}
[quarantine]
path = "quarantine.db"

[telemetry]
listen = "127.0.0.1:{metrics}"
"#,
        policies = policies(),
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One message as the device stream holds it.
struct Stored {
    subject: String,
    payload: Vec<u8>,
    received_ms: u64,
}

fn id_of(payload: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["id"].as_u64().unwrap()
}

/// Every message of `stream` from its start, with its sequence, subject, headers' sequence and
/// stream time. A cluster that has just lost or regained a node may time a request out:
/// retried for a minute.
async fn read_all(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(u64, Stored, Option<u64>)> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match read_once(js, stream).await {
            Ok(all) => return all,
            Err(e) if Instant::now() < end => {
                eprintln!("reading {stream}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("reading {stream}: {e}"),
        }
    }
}

async fn read_once(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<Vec<(u64, Stored, Option<u64>)>, async_nats::Error> {
    let mut stream = js.get_stream(stream).await?;
    let mut out = Vec::new();
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(out);
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| "no message for 10 s")?
            .ok_or("the consumer ended")??;
        let info = m.info()?;
        let seq = info.stream_sequence;
        let received_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)?;
        let source = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Twinguard-Sequence"))
            .and_then(|v| v.as_str().parse().ok());
        out.push((
            seq,
            Stored {
                subject: m.subject.to_string(),
                payload: m.payload.to_vec(),
                received_ms,
            },
            source,
        ));
        if seq >= last {
            return Ok(out);
        }
    }
}

/// The ids each instance's quarantine store holds.
fn quarantined(dirs: &[PathBuf]) -> Vec<u64> {
    dirs.iter()
        .filter_map(|d| QuarantineStore::open_existing(d.join("quarantine.db")).ok())
        .flat_map(|q| q.list(&Query::default()).unwrap_or_default())
        .map(|r| id_of(&r.payload))
        .collect()
}

#[test]
fn three_instances_share_a_three_node_cluster_through_node_and_instance_kills_deciding_as_one_process(
) {
    let (_tmp, s) = setup();
    let mut cluster = NatsCluster::start(&s.dir, 3, PARTITIONS, "plant.*.telemetry");
    let urls = cluster.urls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connect(
                urls.iter()
                    .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        // The twins' stream: it acknowledges forwards and drops repeats by Nats-Msg-Id. A
        // cluster that has just started has no JetStream leader for a few seconds.
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let created = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "TWINS".into(),
                    subjects: vec!["twin.>".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => break,
                Err(e) if Instant::now() < end => {
                    eprintln!("twin stream: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("twin stream: {e}"),
            }
        }
        js
    });

    let dirs: Vec<PathBuf> = (0..3).map(|i| s.dir.join(format!("tg-{i}"))).collect();
    let metrics: Vec<u16> = (0..3).map(|_| fixtures::broker::free_port()).collect();
    let configs: Vec<PathBuf> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| write_config(d, &urls, &format!("tg-{i}"), metrics[i]))
        .collect();
    let mut serves: Vec<Serve> = configs.iter().map(|c| Serve::start(c)).collect();
    for serve in &serves {
        assert!(
            serve.wait_for("sharing partitions", Duration::from_secs(120)),
            "{}",
            serve.text()
        );
    }

    // Devices on every node: device d speaks MQTT to node d mod 3, with a persistent session
    // (what a device that must not lose a reading uses: its unacknowledged publishes are sent
    // again when it reconnects to a node that was killed).
    let devices: Vec<Peer> = (0..DEVICES)
        .map(|d| Peer::connect(&format!("dev-{d}"), cluster.nodes[d % 3].mqtt, &[], true))
        .collect();
    // The node killed is one that does not lead the device stream: nats-server 2.9
    // acknowledges an MQTT QoS 1 publish before the stream has stored it, so a publish
    // arriving while the stream elects a new leader is lost by NATS itself (README,
    // "Scaling out"). Killing a follower keeps the test about twinguard.
    let leader = rt.block_on(async {
        let mut stream = js.get_stream("TWINGUARD_DEVICES").await.unwrap();
        let info = stream.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .unwrap_or_default()
    });
    let victim = (0..3).rev().find(|i| leader != format!("n{i}")).unwrap();
    let mut sent: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_device = [0_u64; DEVICES];
    let mut id = 0_u64;
    let mut publish = |d: usize, seq: usize, v: u32, sent: &mut BTreeMap<u64, usize>| {
        id += 1;
        let payload = format!(
            r#"{{"id":{id},"seq":{seq},"ts":{},"v":{v}}}"#,
            twinguard::now_ms()
        );
        devices[d].publish(&format!("plant/d{d}/telemetry"), payload.into_bytes());
        per_device[d] += 1;
        sent.insert(id, d);
    };
    for round in 0..ROUNDS {
        match round {
            // Over the lease (3 s) between the kill of the instance and its restart: the
            // others take its partitions over from their checkpoints, mid-stream, and hand
            // them back when it returns.
            8 => cluster.kill9(victim),
            12 => serves[1].kill9(),
            30 => cluster.restart(victim),
            44 => serves[1] = Serve::start(&configs[1]),
            _ => {}
        }
        for d in 0..DEVICES {
            let seq = round + 1;
            // A spike now and then: quarantined by range-guard, and it must not become the
            // last accepted value.
            let v = if round % 11 == 6 && d % 3 == 0 {
                95
            } else if d % 4 == 1 {
                // A frozen sensor: from its 4th reading on, every one is held, which only
                // an instance that knows how many came before can tell.
                33
            } else {
                40 + (round % 5) as u32
            };
            publish(d, seq, v, &mut sent);
            // Replays of a reading two rounds old: replay-guard remembers the last sequence.
            if round % 9 == 4 && d % 2 == 0 {
                publish(d, seq - 2, 40, &mut sent);
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    for (d, device) in devices.iter().enumerate() {
        assert!(
            device.wait_acked(per_device[d], Duration::from_secs(120)),
            "device d{d}: the cluster acknowledged {} of its {} publishes",
            device.acked(),
            per_device[d]
        );
    }

    // Every acknowledged publish is in the device stream, once.
    let stored = rt.block_on(read_all(&js, "TWINGUARD_DEVICES"));
    let in_stream: BTreeSet<u64> = stored.iter().map(|(_, m, _)| id_of(&m.payload)).collect();
    let lost: Vec<u64> = sent
        .keys()
        .filter(|i| !in_stream.contains(i))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in the stream: {lost:?}"
    );

    // Every message of the stream gets an outcome: forwarded to the twins' stream or held in
    // some instance's quarantine.
    let seq_to_id: HashMap<u64, u64> = stored
        .iter()
        .map(|(seq, m, _)| (*seq, id_of(&m.payload)))
        .collect();
    let end = Instant::now() + Duration::from_secs(180);
    let (twins, held) = loop {
        let twins = rt.block_on(read_all(&js, "TWINS"));
        let held = quarantined(&dirs);
        let mut covered: BTreeSet<u64> = twins.iter().map(|(_, m, _)| id_of(&m.payload)).collect();
        covered.extend(held.iter().copied());
        if covered.len() >= in_stream.len() || Instant::now() > end {
            break (twins, held);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for (seq, _, source) in &twins {
        let source =
            source.unwrap_or_else(|| panic!("twin message {seq} has no Twinguard-Sequence"));
        assert!(
            seq_to_id.contains_key(&source),
            "twin message {seq} names sequence {source}, not in the device stream"
        );
    }
    let forwarded: BTreeSet<u64> = twins.iter().map(|(_, m, _)| id_of(&m.payload)).collect();
    let held_set: BTreeSet<u64> = held.iter().copied().collect();
    let missing: Vec<u64> = in_stream
        .iter()
        .filter(|i| !forwarded.contains(i) && !held_set.contains(i))
        .copied()
        .collect();
    let logs = || {
        serves
            .iter()
            .map(Serve::text)
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert!(missing.is_empty(), "no outcome for {missing:?}\n{}", logs());

    // What one process decides on the same messages, in stream order, at the same times.
    let file = FileConfig::from_toml(
        &format!("{}\n[quarantine]\npath = \"expected.db\"\n", policies()),
        &s.dir,
    )
    .unwrap();
    let judge = Judge::new(
        Runtime::new(file.runtime).unwrap(),
        QuarantineStore::open(s.dir.join("expected.db")).unwrap(),
        None,
    );
    let mut expect_forward = BTreeSet::new();
    let mut expect_held = BTreeSet::new();
    for (_, m, _) in &stored {
        // part.<p>.plant.<device>.telemetry
        let device = m.subject.split('.').nth(3).unwrap().to_owned();
        let mut message = Message::new(
            device.clone(),
            format!("plant/{device}/telemetry"),
            ContentType::Json,
            m.payload.clone(),
        );
        message.received_at_ms = m.received_ms;
        let judgement = judge.judge(&message, Some(&format!("twin/{device}/telemetry")));
        if judgement.forward().is_some() {
            expect_forward.insert(id_of(&m.payload));
        } else {
            expect_held.insert(id_of(&m.payload));
        }
    }
    assert!(
        expect_held.len() >= 20,
        "the traffic must carry attacks the policies catch: {} held",
        expect_held.len()
    );
    let wrongly_held: Vec<_> = held_set.difference(&expect_held).collect();
    let wrongly_forwarded: Vec<_> = forwarded.difference(&expect_forward).collect();
    assert!(
        wrongly_held.is_empty() && wrongly_forwarded.is_empty(),
        "decisions differ from one process: held but should pass {wrongly_held:?}, passed but should be held {wrongly_forwarded:?}\n{}",
        logs()
    );

    // Each device's forwards reach the twins in its order (repeats of a replayed partition
    // aside: the first time each reading arrives is what a twin acts on).
    let mut seen = BTreeSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut repeats = 0;
    for (_, m, source) in &twins {
        let source = source.unwrap_or_default();
        if !seen.insert(source) {
            repeats += 1;
            continue;
        }
        if let Some(before) = last.insert(m.subject.clone(), source) {
            assert!(
                before < source,
                "{}: sequence {source} forwarded after {before}",
                m.subject
            );
        }
    }
    // A held message goes back to the cluster it came from on `quarantine release`.
    let (dir, record) = dirs
        .iter()
        .find_map(|d| {
            let q = QuarantineStore::open_existing(d.join("quarantine.db")).ok()?;
            let r = q.list(&Query::default()).ok()?.into_iter().next()?;
            Some((d, r))
        })
        .expect("some instance holds a message");
    let out = quarantine_cmd(
        &["release", &record.id.to_string()],
        &dir.join("serve.toml"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let released = id_of(&record.payload);
    let twins = rt.block_on(read_all(&js, "TWINS"));
    assert!(
        twins
            .iter()
            .any(|(_, m, source)| source.is_none() && id_of(&m.payload) == released),
        "released #{} (id {released}) is not on the twins' stream",
        record.id
    );

    // `quarantine replay` judges with the devices' current state, read from the partitions'
    // checkpoints: a frozen sensor's reading is still held, by replay-guard (its sequence is
    // behind the device's last) or range-guard (the value is still stuck). Without that state
    // it would be the device's first reading, and pass both.
    let (dir, stuck) = dirs
        .iter()
        .find_map(|d| {
            let q = QuarantineStore::open_existing(d.join("quarantine.db")).ok()?;
            let r = q.list(&Query::default()).ok()?.into_iter().find(|r| {
                r.reason.contains("stuck") && r.status == twinguard::store::Status::Held
            })?;
            Some((d, r))
        })
        .expect("a frozen sensor's reading is held");
    let out = quarantine_cmd(&["replay", &stuck.id.to_string()], &dir.join("serve.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("still quarantined by"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each instance's partitions, as Prometheus scrapes them: settled, every partition is
    // owned once.
    let scrape = || {
        metrics.iter().fold((0.0, 0.0), |(o, c), port| {
            let (status, text) =
                fixtures::prometheus::http_get(&format!("127.0.0.1:{port}"), "/metrics").unwrap();
            assert_eq!(status, 200, "{text}");
            let value = |name: &str| -> f64 {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            };
            (
                o + value("twinguard_nats_partitions{"),
                c + value("twinguard_nats_checkpoints_total{"),
            )
        })
    };
    let end = Instant::now() + Duration::from_secs(60);
    let (owned, checkpoints) = loop {
        let (owned, checkpoints) = scrape();
        if owned == f64::from(PARTITIONS) || Instant::now() > end {
            break (owned, checkpoints);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(owned, f64::from(PARTITIONS), "every partition owned once");
    assert!(checkpoints > 0.0);

    let takeovers = logs()
        .lines()
        .filter(|l| l.contains("partition taken") && !l.contains("from_sequence=1 "))
        .count();
    assert!(
        takeovers > 0,
        "no partition was taken over from a checkpoint\n{}",
        logs()
    );
    eprintln!(
        "{} messages, {} forwarded, {} held, {} repeated forwards, {takeovers} takeovers from a checkpoint",
        in_stream.len(),
        forwarded.len(),
        held_set.len(),
        repeats
    );
}

/// `<dir>/<name>/serve.toml` for instance `name` of a 2-partition single node at `url`,
/// forwarding with core publishes; `nats` goes on in the `[nats]` table (keys, then
/// sub-tables such as `[nats.tls]`).
fn single_node_config(dir: &Path, name: &str, url: &str, nats: &str) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        r#"{policies}
[quarantine]
path = "quarantine.db"

[nats]
servers = ["{url}"]
instance = "{name}"
partitions = 2
forward = "core"
{nats}
{INPUT}"#,
        policies = policies(),
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `[nats.tls]`: with the CA that signed the server and a client certificate, a message goes
/// through a server that requires both; with another CA, `serve` stops at once with an error
/// that names TLS, instead of retrying a set-up that cannot succeed.
#[test]
fn serve_speaks_mutual_tls_to_the_cluster_and_a_wrong_ca_stops_it_with_a_clear_error() {
    let (_tmp, s) = setup();
    let pki = fixtures::broker::Pki::generate(&s.dir);
    let tls = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca.display().to_string(),
    );
    let cluster = NatsCluster::start_with(&s.dir, 1, 2, "plant.*.telemetry", &tls);
    let url = format!("tls://127.0.0.1:{}", cluster.nodes[0].client);
    let write = |name: &str, ca: &Path| {
        let tls = format!(
            "lease-ms = 3000\n[nats.tls]\nca = {:?}\ncert = {:?}\nkey = {:?}",
            ca.display().to_string(),
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string(),
        );
        single_node_config(&s.dir, name, &url, &tls)
    };

    let mut wrong = Serve::start(&write("tg-wrong", &pki.other_ca));
    let end = Instant::now() + Duration::from_secs(60);
    while wrong.running() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !wrong.running(),
        "a wrong CA must stop serve: {}",
        wrong.text()
    );
    let text = wrong.text();
    assert!(
        text.contains("[nats.tls]") && text.contains(&url),
        "the error names the server and TLS: {text}"
    );

    let serve = Serve::start(&write("tg-tls", &pki.ca));
    assert!(
        serve.wait_for("partition taken", Duration::from_secs(60)),
        "{}",
        serve.text()
    );
    let twin = Peer::connect("twin-tls", cluster.nodes[0].mqtt, &["twin/#"], false);
    let device = Peer::connect("dev-tls", cluster.nodes[0].mqtt, &[], true);
    // Published until one arrives: the twin's subscription and the partitions settle
    // independently of this test's clock.
    let mut seq = 0;
    let got = loop {
        seq += 1;
        let payload = format!(
            r#"{{"id":{seq},"seq":{seq},"ts":{},"v":40}}"#,
            twinguard::now_ms()
        );
        device.publish("plant/d1/telemetry", payload.into_bytes());
        let got = twin.collect(Duration::from_secs(2), |g| !g.is_empty());
        if !got.is_empty() || seq == 30 {
            break got;
        }
    };
    assert_eq!(
        got.first().map(|(t, _)| t.as_str()),
        Some("twin/d1/telemetry"),
        "{}",
        serve.text()
    );
}

/// A device that mints ids (one per message) grows its partition's state past what one NATS
/// message may carry. The checkpoint must keep being written (the state goes to an object the
/// checkpoint names), not fail and restart the partition for every device in it, over and
/// over. An instance that takes the partition after a SIGKILL starts from that state, and
/// deletes the state objects no checkpoint names.
#[test]
fn a_partition_state_larger_than_one_message_is_checkpointed_and_moves_with_the_partition() {
    let (_tmp, s) = setup();
    // 16 KiB messages: a few hundred devices' state is more.
    let cluster = NatsCluster::start_with(&s.dir, 1, 2, "plant.*.telemetry", "max_payload: 16384");
    let url = format!("nats://127.0.0.1:{}", cluster.nodes[0].client);
    let write = |name: &str| {
        let nats = "lease-ms = 2000\ncheckpoint-messages = 64\ncheckpoint-ms = 100";
        single_node_config(&s.dir, name, &url, nats)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let client = rt
        .block_on(async_nats::connect(url.as_str()))
        .expect("connect to nats");
    let js = async_nats::jetstream::new(client);
    let publish = |device: &str, id: u64, seq: u64| {
        let payload = format!(
            r#"{{"id":{id},"seq":{seq},"ts":{},"v":40}}"#,
            twinguard::now_ms()
        );
        rt.block_on(async {
            js.publish(format!("plant.{device}.telemetry"), payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    };

    let mut a = Serve::start(&write("tg-a"));
    assert!(
        a.wait_for("sharing partitions", Duration::from_secs(60)),
        "{}",
        a.text()
    );
    const MINTED: u64 = 600;
    for i in 0..MINTED {
        publish(&format!("m{i}"), i + 1, 1);
    }
    assert!(
        a.wait_for(
            "its checkpoint now names an object",
            Duration::from_secs(120)
        ),
        "the state never went to an object:\n{}",
        a.text()
    );
    // Once nothing is left to judge, a checkpoint covers every message, and none failed.
    let head = |p: u32| -> Option<Vec<u8>> {
        rt.block_on(async {
            let kv = js.get_key_value("twinguard-checkpoints").await.ok()?;
            kv.get(format!("partition.{p}"))
                .await
                .ok()
                .flatten()
                .map(|b| b.to_vec())
        })
    };
    let covered = |p: u32| head(p).map_or(0, |h| u64::from_le_bytes(h[5..13].try_into().unwrap()));
    // Each partition's last message, from the stream's mapped subjects (`part.<p>.…`): both
    // checkpoints must reach theirs, however the load spreads the commits out in time.
    let stored = rt.block_on(read_all(&js, "TWINGUARD_DEVICES"));
    assert_eq!(stored.len() as u64, MINTED);
    let last = |p: u32| {
        stored
            .iter()
            .filter(|(_, m, _)| m.subject.starts_with(&format!("part.{p}.")))
            .map(|(seq, _, _)| *seq)
            .max()
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(120);
    while (0..2).any(|p| covered(p) < last(p)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in 0..2 {
        assert_eq!(covered(p), last(p), "partition {p}\n{}", a.text());
    }
    let text = a.text();
    assert!(
        !text.contains("partition stopped"),
        "a checkpoint failed and the partition restarted:\n{text}"
    );
    // Both partitions' checkpoints name an object (TGCP, format 2).
    for p in 0..2 {
        let h = head(p).unwrap();
        assert_eq!((&h[..4], h[4]), (&b"TGCP"[..], 2), "partition {p}");
    }

    // A state object left by a writer killed before its checkpoint: no checkpoint names it.
    let bodies = rt
        .block_on(js.get_object_store("twinguard-checkpoint-bodies"))
        .unwrap();
    let names = || -> Vec<String> {
        rt.block_on(async {
            let mut list = bodies.list().await.unwrap();
            let mut names = Vec::new();
            while let Some(info) = list.next().await {
                names.push(info.unwrap().name);
            }
            names.sort();
            names
        })
    };
    // The object a checkpoint named before is deleted just after the checkpoint moves on.
    let end = Instant::now() + Duration::from_secs(60);
    while names().len() > 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    rt.block_on(bodies.put("partition.0.1.ghost.1", &mut &b"not a state"[..]))
        .unwrap();
    let before = names();
    assert_eq!(before.len(), 3, "{before:?}");

    a.kill9();
    let b = Serve::start(&write("tg-b"));
    // Taken from the checkpoint (not from the stream's start), with every minted device's
    // state: 2 entries each (replay-guard's last sequence, range-guard's last value).
    assert!(
        b.wait_for("partition taken", Duration::from_secs(60)),
        "{}",
        b.text()
    );
    let end = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let taken: Vec<String> = b
            .text()
            .lines()
            .filter(|l| l.contains("partition taken"))
            .map(str::to_owned)
            .collect();
        if taken.len() == 2 || Instant::now() > end {
            break taken;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entries.len(), 2, "{}", b.text());
    let restored: usize = entries
        .iter()
        .map(|l| {
            assert!(!l.contains("from_sequence=1 "), "{l}");
            l.split("entries=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no entries in {l}"))
        })
        .sum();
    assert!(
        restored >= 2 * MINTED as usize,
        "{restored} entries restored"
    );
    let after = names();
    assert!(
        !after.iter().any(|n| n.contains("ghost")),
        "the orphan is swept: {after:?}"
    );
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|n| !n.contains("ghost"))
            .collect::<Vec<_>>(),
        "the objects the checkpoints name are kept"
    );

    // Replays of minted devices' first readings: caught by the state B restored.
    for i in 0..8 {
        publish(&format!("m{i}"), MINTED + 1 + i, 1);
    }
    let end = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held: Vec<u64> = quarantined(&[s.dir.join("tg-b")])
            .into_iter()
            .filter(|id| *id > MINTED)
            .collect();
        if held.len() == 8 || Instant::now() > end {
            break held;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(held.len(), 8, "replays held by B: {held:?}\n{}", b.text());
}
