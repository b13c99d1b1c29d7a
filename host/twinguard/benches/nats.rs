//! Scale-out on a real 3-node NATS JetStream cluster (loopback, `nats-server` as
//! `scripts/test.sh` installs it), `serve`'s NATS front end in-process:
//! - **throughput** with 1, 2 and 3 instances sharing 6 partitions: the instances settle
//!   their partitions first, then [`MESSAGES`] messages of [`DEVICES`] devices are published
//!   through JetStream (acknowledged by the stream) and timed until every one is judged and
//!   its outcome checkpointed; replay-guard and range-guard, as in the kill test;
//! - **checkpoint cost**: one instance with a checkpoint after every message against the
//!   default (every 256 messages or 200 ms), per message;
//! - **takeover**: two instances; one is stopped without handing anything back (as a
//!   `kill -9`: its leases are left to expire) and the time until the other owns every
//!   partition is taken, with `lease-ms = 3000`.
//!
//! On a 2-core machine the instances, the three servers and the publisher share the cores:
//! the ratios between runs of the same process matter, not the absolute rates. Each round
//! first times the publisher alone (no instance), the ceiling of every rate after it.
//!
//! Run: `cargo bench -p twinguard --bench nats` (`BENCH_MESSAGES` overrides the count).

use std::path::Path;
use std::time::{Duration, Instant};

use twinguard::nats::{NatsFront, PartitionJournal};
use twinguard::store::QuarantineStore;
use twinguard::{FileConfig, Runtime};
use twinguard_fixtures as fixtures;
use twinguard_fixtures::nats::NatsCluster;

const PARTITIONS: u32 = 6;
const DEVICES: usize = 60;
const MESSAGES: usize = 20_000;

fn config(urls: &[String], instance: &str, checkpoint_messages: usize) -> FileConfig {
    let servers = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    FileConfig::from_toml(
        &format!(
            r#"
[[policy]]
name = "replay"
path = "{replay}"
[policy.config]
max-age-ms = 86400000
[[policy]]
name = "range"
path = "{range}"
[policy.config]
"/v" = "min=0,max=100,max-step=20"
[[route]]
filter = "plant/+/telemetry"
chain = ["replay", "range"]

[nats]
servers = [{servers}]
instance = "{instance}"
partitions = {PARTITIONS}
replicas = 3
lease-ms = 3000
checkpoint-messages = {checkpoint_messages}
[nats.device-budget]
rate = 0
[[nats.input]]
filter = "plant/+/telemetry"
template = "plant/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"
"#,
            replay = fixtures::wasm("replay-guard").display(),
            range = fixtures::wasm("range-guard").display(),
        ),
        ".",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

struct Instance {
    front: NatsFront,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(dir: &Path, urls: &[String], name: &str, checkpoint_messages: usize) -> Instance {
    let file = config(urls, name, checkpoint_messages);
    let runtime = Runtime::builder(file.runtime)
        .journal(PartitionJournal::new())
        .build()
        .unwrap();
    let store = QuarantineStore::open(dir.join(format!("{name}.db"))).unwrap();
    let front = NatsFront::new(runtime, file.nats.unwrap(), store, None).unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let run = front.clone();
    let task = tokio::spawn(async move {
        run.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .unwrap();
    });
    Instance { front, stop, task }
}

fn owned(instances: &[Instance]) -> u64 {
    instances.iter().map(|i| i.front.partitions_owned()).sum()
}

/// Waits until the instances own every partition between them, each its share, twice 1.5 s
/// apart.
async fn settled(instances: &[Instance]) {
    let share = u64::from(PARTITIONS) / instances.len() as u64;
    let mut streak = 0;
    while streak < 2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let fair = instances
            .iter()
            .all(|i| i.front.partitions_owned() >= share);
        streak = if fair && owned(instances) == u64::from(PARTITIONS) {
            streak + 1
        } else {
            0
        };
    }
}

/// Removes the stream and buckets a previous run left.
async fn reset(js: &async_nats::jetstream::Context) {
    for s in [
        "TWINGUARD_DEVICES",
        "KV_twinguard-leases",
        "KV_twinguard-checkpoints",
        "TWINS",
    ] {
        let _ = js.delete_stream(s).await;
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut r = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "TWINS".into(),
                subjects: vec!["twin.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .map(drop);
        if r.is_ok() {
            // As `serve` creates it, so the publisher can run alone.
            r = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "TWINGUARD_DEVICES".into(),
                    subjects: vec!["part.*.>".into()],
                    num_replicas: 3,
                    max_age: Duration::from_secs(86_400),
                    ..Default::default()
                })
                .await
                .map(drop);
        }
        match r {
            Ok(()) => return,
            Err(e) if Instant::now() < end => {
                eprintln!("twins stream: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Publishes `n` readings (each device's sequence numbers go up from `from`), acknowledged by
/// the stream; returns when every publish is acknowledged.
async fn publish(js: &async_nats::jetstream::Context, n: usize, from: usize) {
    let ts = twinguard::now_ms();
    let mut acks = Vec::with_capacity(1024);
    for i in 0..n {
        let d = i % DEVICES;
        let seq = from + i / DEVICES + 1;
        let payload = format!(r#"{{"seq":{seq},"ts":{ts},"v":{}}}"#, 40 + seq % 5);
        let ack = loop {
            match js
                .publish(format!("plant.d{d}.telemetry"), payload.clone().into())
                .await
            {
                Ok(a) => break a,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        acks.push(ack);
        if acks.len() == 1024 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Messages per second with `k` instances: from the first publish until every message is
/// judged and the stream's twin copies are in.
async fn throughput(
    dir: &Path,
    urls: &[String],
    js: &async_nats::jetstream::Context,
    k: usize,
    checkpoint_messages: usize,
    n: usize,
) -> f64 {
    reset(js).await;
    let instances: Vec<Instance> = (0..k)
        .map(|i| {
            start(
                dir,
                urls,
                &format!("b{k}-{checkpoint_messages}-{i}"),
                checkpoint_messages,
            )
        })
        .collect();
    settled(&instances).await;
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish(&js, n, 0).await })
    };
    loop {
        let judged: u64 = instances
            .iter()
            .map(|i| {
                let s = i.front.stats();
                s.forwarded.load(std::sync::atomic::Ordering::Relaxed)
                    + s.quarantined.load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        if judged >= n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    publisher.await.unwrap();
    let events = |f: fn(&twinguard::nats::NatsStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        instances
            .iter()
            .map(|i| f(&i.front.partition_stats()).load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    println!(
        "    (partitions during the run: {} taken, {} handed back, {} fenced, {} restarted; {} checkpoints)",
        events(|s| &s.taken),
        events(|s| &s.handed_back),
        events(|s| &s.fenced),
        events(|s| &s.restarted),
        events(|s| &s.checkpoints),
    );
    for i in &instances {
        let _ = i.stop.send(true);
    }
    for i in instances {
        let _ = i.task.await;
    }
    n as f64 / elapsed.as_secs_f64()
}

/// Seconds from stopping one of two instances without a hand-over until the other owns every
/// partition.
async fn takeover(dir: &Path, urls: &[String], js: &async_nats::jetstream::Context) -> f64 {
    reset(js).await;
    let mut both = vec![
        start(dir, urls, "take-a", 256),
        start(dir, urls, "take-b", 256),
    ];
    settled(&both).await;
    let (b, a) = (both.pop().unwrap(), both.pop().unwrap());
    // As a kill -9: nothing is handed back, its leases are left to expire.
    b.task.abort();
    let killed = Instant::now();
    while a.front.partitions_owned() < u64::from(PARTITIONS) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = killed.elapsed().as_secs_f64();
    let _ = a.stop.send(true);
    let _ = a.task.await;
    t
}

fn main() {
    let n = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let tmp = tempfile::tempdir().unwrap();
    let _cluster = NatsCluster::start(tmp.path(), 3, PARTITIONS, "plant.*.telemetry");
    let urls = _cluster.urls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connect(
                urls.iter()
                    .map(|u| u.parse::<async_nats::ServerAddr>().unwrap())
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        println!("{n} messages, {DEVICES} devices, {PARTITIONS} partitions, 3 nodes (R3)");
        let mut base = Vec::new();
        for round in 1..=2 {
            // The publisher alone, no instance: what bounds every rate below on this machine.
            reset(&js).await;
            let started = Instant::now();
            publish(&js, n, 0).await;
            println!(
                "round {round}: publishing alone: {:>8.0} msg/s",
                n as f64 / started.elapsed().as_secs_f64()
            );
            for k in 1..=3 {
                let rate = throughput(tmp.path(), &urls, &js, k, 256, n).await;
                if k == 1 {
                    base.push(rate);
                }
                println!(
                    "round {round}: {k} instance(s): {rate:>8.0} msg/s ({:.2}x one)",
                    rate / base[round - 1]
                );
            }
            let every = throughput(tmp.path(), &urls, &js, 1, 1, n).await;
            println!(
                "round {round}: 1 instance, checkpoint every message: {every:>8.0} msg/s; +{:.1} us per message over every 256",
                (1.0 / every - 1.0 / base[round - 1]) * 1e6
            );
            let t = takeover(tmp.path(), &urls, &js).await;
            println!("round {round}: takeover after a kill (lease 3 s): {t:.2} s");
        }
    });
}
