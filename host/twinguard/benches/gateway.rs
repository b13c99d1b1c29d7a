//! End to end through a real Mosquitto: device → broker → twin directly (Mosquitto alone), and
//! device → broker → twinguard → broker → twin, with a pass-through policy and with a
//! two-policy chain (schema + redaction). Same broker, same load, same run.
//!
//! Messages cycle over 50 devices. For each path: throughput with the device publishing as fast as QoS 1 allows (100 in
//! flight), and device→twin latency at a steady 1,000 messages/s (p50, p99).
//!
//! Run: `cargo bench -p twinguard --bench gateway` (needs mosquitto; `scripts/test.sh`
//! installs it).

use twinguard_fixtures as fixtures;
use twinguard_fixtures::broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use twinguard::gateway::{Gateway, GatewayConfig};
use twinguard::store::QuarantineStore;
use twinguard::{FileConfig, Runtime};

const SATURATION_MESSAGES: u64 = 20_000;
const PACED_RATE: u64 = 1_000;
const PACED_SECONDS: u64 = 5;
/// Messages cycle over this many devices (one topic each), as a plant's do: the gateway judges
/// different devices in parallel, one device's messages in order.
const DEVICES: u64 = 50;

/// A ~1 KB telemetry document carrying its sequence number and send time.
fn payload(seq: u64, sent_ns: u64) -> Vec<u8> {
    let mut doc = format!(r#"{{"seq":{seq},"sent_ns":{sent_ns},"device":"press-07","readings":{{"#);
    for s in 0..36 {
        doc.push_str(&format!(
            r#""sensor_{s:02}":{:.2},"#,
            20.0 + f64::from(s) * 0.37
        ));
    }
    doc.push_str(r#""status":"running"},"owner":{"name":"Ada Lovelace","badge":4711}}"#);
    doc.into_bytes()
}

fn sent_ns(p: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
    v["sent_ns"].as_u64()
}

async fn client(
    id: &str,
    port: u16,
    subscribe: Option<&str>,
) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut eventloop) = AsyncClient::new(o, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let sub = subscribe.map(str::to_owned);
    let cc = c.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => match &sub {
                    Some(t) => {
                        let _ = cc.subscribe(t.clone(), QoS::AtLeastOnce).await;
                    }
                    None => {
                        let _ = ready_tx.send(());
                    }
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let _ = ready_rx.recv().await;
    (c, rx)
}

/// Ends a stopped gateway's persistent session. Left in place, the broker queues every later
/// case's messages for it and saves them all at each autosave: the later rows then showed
/// periodic stalls of 100-340 ms every ~2 s that had nothing to do with the gateway under test.
async fn forget_session(port: u16, client_id: &str) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_clean_session(true);
    let (c, mut eventloop) = AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = c.disconnect().await;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs both loads from `topic` (device side) to the twin subscription's receiver.
async fn measure(
    port: u16,
    topic: fn(u64) -> String,
    twin_filter: &str,
    tag: &str,
    base: Instant,
) -> Figures {
    let (_twin, mut rx) = client(&format!("twin-{tag}"), port, Some(twin_filter)).await;
    let (device, _) = client(&format!("device-{tag}"), port, None).await;
    let now = || u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);

    // Throughput: as fast as the client's 100-in-flight window lets it.
    let start = Instant::now();
    for seq in 0..SATURATION_MESSAGES {
        device
            .publish(topic(seq), QoS::AtLeastOnce, false, payload(seq, now()))
            .await
            .unwrap();
    }
    let mut got = 0;
    while got < SATURATION_MESSAGES {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(_)) => got += 1,
            _ => {
                panic!("{tag}: only {got} of {SATURATION_MESSAGES} arrived within 30 s of the last")
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let per_second = SATURATION_MESSAGES as f64 / start.elapsed().as_secs_f64();
    eprintln!("{tag}: {per_second:.0} messages/s; paced run…");

    // Latency at a steady rate.
    let total = PACED_RATE * PACED_SECONDS;
    let pace = Duration::from_nanos(1_000_000_000 / PACED_RATE);
    let sender = tokio::spawn(async move {
        let mut next = Instant::now();
        for seq in 0..total {
            tokio::time::sleep_until(next.into()).await;
            let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            device
                .publish(topic(seq), QoS::AtLeastOnce, false, payload(seq, sent))
                .await
                .unwrap();
            next += pace;
        }
    });
    let mut latencies = Vec::with_capacity(total as usize);
    // (latency, seq): with TG_BENCH_TAILS set, the slowest are printed with when they were
    // sent (seq = milliseconds into the paced run), to tell a periodic stall from noise.
    let mut tails = Vec::new();
    while (latencies.len() as u64) < total {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(p)) => {
                if let Some(s) = sent_ns(&p) {
                    let l = now().saturating_sub(s);
                    latencies.push(l);
                    let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
                    tails.push((l, v["seq"].as_u64().unwrap_or(0)));
                }
            }
            _ => panic!("{tag}: paced run stalled at {}", latencies.len()),
        }
    }
    let _ = sender.await;
    if std::env::var_os("TG_BENCH_TAILS").is_some() {
        tails.sort_unstable_by(|a, b| b.cmp(a));
        let worst: Vec<String> = tails
            .iter()
            .take(12)
            .map(|(l, seq)| format!("{:.1}ms@{seq}", *l as f64 / 1e6))
            .collect();
        eprintln!("{tag}: slowest {}", worst.join(" "));
    }
    latencies.sort_unstable();
    let pct = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((latencies.len() as f64 - 1.0) * q) as usize;
        latencies[i] as f64 / 1e6
    };
    Figures {
        per_second,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn gateway_config(
    port: u16,
    chain: &str,
    policies: &str,
    client_id: &str,
    extra: &str,
) -> FileConfig {
    let text = format!(
        r#"{policies}
[[route]]
filter = "devices/+/telemetry"
chain = {chain}

[gateway]
broker = "mqtt://127.0.0.1:{port}"
client-id = "{client_id}"
inflight = 100
{extra}
[[gateway.input]]
filter = "devices/+/telemetry"
template = "devices/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"
"#
    );
    FileConfig::from_toml(&text, ".").unwrap()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = broker::Broker::start(tmp.path(), None);
    let port = broker.port;
    let allow = fixtures::wasm("allow-all");
    let schema = fixtures::wasm("schema-guard");
    let pii = fixtures::wasm("pii-redact");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = Instant::now();

    let mut rows = Vec::new();
    let direct = rt.block_on(measure(
        port,
        |seq| format!("bench/direct/d{}", seq % DEVICES),
        "bench/direct/#",
        "direct",
        base,
    ));
    rows.push(("Mosquitto alone (device → twin)", direct));

    let pass = format!(
        "[[policy]]\nname = \"pass\"\npath = \"{}\"\n",
        allow.display()
    );
    let schema_pii = format!(
        "[[policy]]\nname = \"schema\"\npath = \"{}\"\n[policy.config]\nrequired = \"/seq:integer,/readings:object\"\n\
         [[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nmask = \"/owner/name\"\n",
        schema.display(),
        pii.display()
    );
    let cases = [
        (
            "twinguard 3.1.1, allow-all, 1 worker",
            &pass,
            "[\"pass\"]",
            "workers = 1",
        ),
        (
            "twinguard 3.1.1, allow-all, 2 workers",
            &pass,
            "[\"pass\"]",
            "workers = 2",
        ),
        (
            "twinguard 3.1.1, schema + pii-redact, 1 worker",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 1",
        ),
        (
            "twinguard 3.1.1, schema + pii-redact, 2 workers",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 2",
        ),
        (
            "twinguard 5, schema + pii-redact, 2 workers",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 2\nprotocol = \"5\"",
        ),
    ];
    for (i, (name, policies, chain, extra)) in cases.iter().enumerate() {
        let config = gateway_config(port, chain, policies, &format!("bench-gw-{i}"), extra);
        let gateway_config: GatewayConfig = config.gateways[0].clone();
        let store = QuarantineStore::open(tmp.path().join(format!("q{i}.db"))).unwrap();
        let gateway = Arc::new(
            Gateway::new(
                Runtime::new(config.runtime).unwrap(),
                gateway_config,
                store,
                None,
            )
            .unwrap(),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let g = Arc::clone(&gateway);
        let running = rt.spawn(async move {
            let _ = g
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        });
        // Let it connect and subscribe.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
        let f = rt.block_on(measure(
            port,
            |seq| format!("devices/d{}/telemetry", seq % DEVICES),
            "twin/#",
            &format!("gw{i}"),
            base,
        ));
        let _ = stop_tx.send(());
        let _ = rt.block_on(running);
        rt.block_on(forget_session(port, &format!("bench-gw-{i}")));
        rows.push((name, f));
    }

    println!("\n| path | messages/s (QoS 1, 100 in flight) | p50 latency at {PACED_RATE}/s | p99 latency at {PACED_RATE}/s |");
    println!("|---|---|---|---|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms |",
            f.per_second, f.p50_ms, f.p99_ms
        );
    }
}
