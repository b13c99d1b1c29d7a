//! End to end through a real Mosquitto: device → broker → twin directly (Mosquitto alone), and
//! device → broker → twinguard → broker → twin, with a pass-through policy and with a
//! two-policy chain (schema + redaction). Same broker, same load, same run.
//!
//! Messages cycle over 50 devices. For each path: throughput with the device publishing as fast as QoS 1 allows (100 in
//! flight), and device→twin latency at a steady 1,000 messages/s (p50, p99).
//!
//! A last case measures the same good route (schema + pii-redact) beside a hostile one: a
//! looping policy (deadline 20 ms) on `hostile/+/telemetry`, flooded at a steady rate from a
//! background publisher, once with the default breaker and once with the breaker off. Each is
//! compared with a run of the same good route without hostile traffic, in the same process.
//!
//! Run: `cargo bench -p twinguard --bench gateway` (needs mosquitto; `scripts/test.sh`
//! installs it). `BENCH_ONLY=paths` runs only the table of paths, `BENCH_ONLY=hostile` only
//! the hostile-route case; `BENCH_HOSTILE_RATE` (messages/s, default 10) and
//! `BENCH_HOSTILE_WORKERS` (default 1) tune that case, and `BENCH_HOSTILE_MODE` (default
//! `loop`) swaps the hostile guest's mode, e.g. `allow` or `probe-file` (a cheap quarantine),
//! to tell the cost of the policy from the cost of what happens to its messages.
//! `BENCH_NODELAY=1` starts the broker with `set_tcp_nodelay true` (Mosquitto's default is
//! false: Nagle on its sends), for every case. `BENCH_BROKER` appends settings to the broker's
//! config, `;` between lines (e.g. `BENCH_BROKER="max_inflight_messages 100"`).
//!
//! `BENCH_ONLY=flood` measures the good route beside one device of the same route flooding
//! (issue 19: one device must not starve the others), at a steady `BENCH_FLOOD_RATE` (default
//! 10,000/s) and as fast as it can: without the flood, with it under the default
//! `[gateway.device-budget]`, with it and the budget off, and a control flooding a topic the
//! gateway does not read.

mod support;
use twinguard_fixtures as fixtures;
use twinguard_fixtures::broker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use twinguard::gateway::{Gateway, GatewayConfig, GatewayStats};
use twinguard::state::StateDb;
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
    support::telemetry(&format!(
        r#""seq":{seq},"sent_ns":{sent_ns},"device":"press-07","#
    ))
}

fn sent_ns(p: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
    v["sent_ns"].as_u64()
}

/// The sequence number of a [`payload`]: read from its fixed prefix (cheap enough for the
/// saturated run), or from the parsed document should a policy have reordered it.
fn seq_of(p: &[u8]) -> Option<u64> {
    let prefix = br#"{"seq":"#;
    if let Some(rest) = p.strip_prefix(prefix.as_slice()) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            return std::str::from_utf8(&rest[..digits]).ok()?.parse().ok();
        }
    }
    let v: serde_json::Value = serde_json::from_slice(p).ok()?;
    v["seq"].as_u64()
}

/// Which of `0..n` arrived, duplicates (at-least-once) counted once.
struct Arrivals {
    seen: Vec<bool>,
    distinct: u64,
}

impl Arrivals {
    fn new(n: u64) -> Self {
        Self {
            seen: vec![false; usize::try_from(n).unwrap()],
            distinct: 0,
        }
    }

    /// Records `seq`; whether it is its first arrival.
    fn first(&mut self, seq: Option<u64>) -> bool {
        let Some(slot) = seq
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|i| self.seen.get_mut(i))
        else {
            return false;
        };
        if *slot {
            return false;
        }
        *slot = true;
        self.distinct += 1;
        true
    }

    fn lost(&self) -> u64 {
        self.seen.len() as u64 - self.distinct
    }
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
    /// Messages of both runs that never arrived (counted by sequence number, so a duplicate
    /// does not hide a loss).
    lost: u64,
    /// Packets per write of the gateway's connection during the saturated run.
    per_write: Option<f64>,
}

/// A gateway's writes and the packets they carried so far.
fn written(stats: &GatewayStats) -> (u64, u64) {
    (
        stats.writes.load(Ordering::Relaxed),
        stats.packets_sent.load(Ordering::Relaxed),
    )
}

/// Runs both loads from `topic` (device side) to the twin subscription's receiver.
async fn measure(
    port: u16,
    topic: fn(u64) -> String,
    twin_filter: &str,
    tag: &str,
    base: Instant,
    gateway: Option<Arc<GatewayStats>>,
) -> Figures {
    let (_twin, mut rx) = client(&format!("twin-{tag}"), port, Some(twin_filter)).await;
    let (device, _) = client(&format!("device-{tag}"), port, None).await;
    let now = || u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);

    // Throughput: as fast as the client's 100-in-flight window lets it.
    let before = gateway.as_deref().map(written);
    let start = Instant::now();
    for seq in 0..SATURATION_MESSAGES {
        device
            .publish(topic(seq), QoS::AtLeastOnce, false, payload(seq, now()))
            .await
            .unwrap();
    }
    let mut saturated = Arrivals::new(SATURATION_MESSAGES);
    let mut last = start;
    // Gives up 30 s after the last new arrival (not the last message: a flood's own messages,
    // which are not counted, would keep it waiting for lost ones forever).
    while saturated.distinct < SATURATION_MESSAGES {
        let until = last.max(start) + Duration::from_secs(30);
        match tokio::time::timeout_at(until.into(), rx.recv()).await {
            Ok(Some(p)) => {
                if saturated.first(seq_of(&p)) {
                    last = Instant::now();
                }
            }
            Ok(None) => break,
            _ => {
                eprintln!(
                    "{tag}: only {} of {SATURATION_MESSAGES} arrived within 30 s of the last",
                    saturated.distinct
                );
                break;
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let per_second = saturated.distinct as f64 / last.duration_since(start).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_write = gateway
        .as_deref()
        .map(written)
        .zip(before)
        .map(|(after, before)| (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64);
    eprintln!("{tag}: {per_second:.0} messages/s; paced run…");
    // Let the gateway catch up first: what the burst left queued behind it (e.g. slow
    // messages of another route) would otherwise land on the paced run's first messages.
    tokio::time::sleep(Duration::from_secs(1)).await;

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
    let mut paced = Arrivals::new(total);
    let mut progress = Instant::now();
    while paced.distinct < total {
        match tokio::time::timeout_at((progress + Duration::from_secs(30)).into(), rx.recv()).await
        {
            Ok(Some(p)) => {
                let l = sent_ns(&p).map(|s| now().saturating_sub(s));
                let seq = seq_of(&p);
                if let (Some(l), true) = (l, paced.first(seq)) {
                    latencies.push(l);
                    tails.push((l, seq.unwrap_or(0)));
                    progress = Instant::now();
                }
            }
            Ok(None) => break,
            _ => {
                eprintln!("{tag}: paced run stalled at {} of {total}", paced.distinct);
                break;
            }
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
        latencies.get(i).map_or(f64::NAN, |l| *l as f64 / 1e6)
    };
    Figures {
        per_second,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        lost: saturated.lost() + paced.lost(),
        per_write,
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

/// A gateway running on `rt` until [`Running::stop`].
struct Running {
    gateway: Arc<Gateway>,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    client_id: String,
}

/// `state`: keep policies' state in a file beside `store`, as `serve` does.
fn start_gateway(
    rt: &tokio::runtime::Runtime,
    config: FileConfig,
    store: &std::path::Path,
    client_id: &str,
    state: bool,
) -> Running {
    let gateway_config: GatewayConfig = config.gateways[0].clone();
    let db = state.then(|| StateDb::open(store.with_extension("state.db")).unwrap());
    let store = QuarantineStore::open(store).unwrap();
    let mut runtime = Runtime::builder(config.runtime);
    if let Some(db) = &db {
        runtime = runtime.journal(Arc::new(db.clone()));
    }
    let gateway = Arc::new(
        Gateway::new(runtime.build().unwrap(), gateway_config, store, None)
            .unwrap()
            .with_state(db),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let g = Arc::clone(&gateway);
    let task = rt.spawn(async move {
        let _ = g
            .run(async {
                let _ = stop_rx.await;
            })
            .await;
    });
    // Let it connect and subscribe.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    Running {
        gateway,
        stop_tx,
        task,
        client_id: client_id.to_owned(),
    }
}

impl Running {
    fn stop(self, rt: &tokio::runtime::Runtime, port: u16) {
        let _ = self.stop_tx.send(());
        let _ = rt.block_on(self.task);
        rt.block_on(forget_session(port, &self.client_id));
    }
}

/// The table of paths: Mosquitto alone, then twinguard with each chain and worker count.
fn paths(rt: &tokio::runtime::Runtime, port: u16, tmp: &std::path::Path, base: Instant) {
    let allow = fixtures::wasm("allow-all");
    let mut rows = Vec::new();
    let direct = rt.block_on(measure(
        port,
        |seq| format!("bench/direct/d{}", seq % DEVICES),
        "bench/direct/#",
        "direct",
        base,
        None,
    ));
    rows.push(("Mosquitto alone (device → twin)", direct));

    let pass = format!(
        "[[policy]]\nname = \"pass\"\npath = \"{}\"\n",
        allow.display()
    );
    let schema_pii = schema_pii();
    // rate-guard writes the device's bucket on every message: what a state file has to keep.
    let stateful = format!(
        "{schema_pii}[[policy]]\nname = \"rate\"\npath = \"{}\"\n[policy.config]\n\
         rate = 1000000.0\nburst = 1000000\n",
        fixtures::wasm("rate-guard").display()
    );
    let with_rate = "[\"schema\", \"rate\", \"pii\"]";
    let cases = [
        (
            "twinguard 3.1.1, allow-all, 1 worker",
            &pass,
            "[\"pass\"]",
            "workers = 1",
            false,
        ),
        (
            "twinguard 3.1.1, allow-all, 2 workers",
            &pass,
            "[\"pass\"]",
            "workers = 2",
            false,
        ),
        (
            "twinguard 3.1.1, schema + pii-redact, 1 worker",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 1",
            false,
        ),
        (
            "twinguard 3.1.1, schema + pii-redact, 2 workers",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 2",
            false,
        ),
        (
            "twinguard 5, schema + pii-redact, 2 workers",
            &schema_pii,
            "[\"schema\", \"pii\"]",
            "workers = 2\nprotocol = \"5\"",
            false,
        ),
        (
            "twinguard 3.1.1, schema + rate-guard + pii-redact, 1 worker, state in memory",
            &stateful,
            with_rate,
            "workers = 1",
            false,
        ),
        (
            "twinguard 3.1.1, schema + rate-guard + pii-redact, 1 worker, state file",
            &stateful,
            with_rate,
            "workers = 1",
            true,
        ),
    ];
    for (i, (name, policies, chain, extra, state)) in cases.iter().enumerate() {
        let client_id = format!("bench-gw-{i}");
        let config = gateway_config(port, chain, policies, &client_id, extra);
        let running = start_gateway(
            rt,
            config,
            &tmp.join(format!("q{i}.db")),
            &client_id,
            *state,
        );
        let f = rt.block_on(measure(
            port,
            |seq| format!("devices/d{}/telemetry", seq % DEVICES),
            "twin/#",
            &format!("gw{i}"),
            base,
            Some(running.gateway.stats()),
        ));
        running.stop(rt, port);
        rows.push((name, f));
    }

    println!("\n| path | messages/s (QoS 1, 100 in flight) | p50 latency at {PACED_RATE}/s | p99 latency at {PACED_RATE}/s | gateway's packets per write, saturated |");
    println!("|---|---|---|---|---|");
    for (name, f) in &rows {
        let per_write = f
            .per_write
            .map_or_else(|| "—".to_owned(), |w| format!("{w:.1}"));
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {per_write} |",
            f.per_second, f.p50_ms, f.p99_ms
        );
    }
    for (name, f) in &rows {
        if f.lost > 0 {
            println!("LOST: {name}: {} messages never arrived", f.lost);
        }
    }
}

fn schema_pii() -> String {
    format!(
        "[[policy]]\nname = \"schema\"\npath = \"{}\"\n[policy.config]\nrequired = \"/seq:integer,/readings:object\"\n\
         [[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nmask = \"/owner/name\"\n",
        fixtures::wasm("schema-guard").display(),
        fixtures::wasm("pii-redact").display()
    )
}

/// Devices on the hostile route (`hostile/h{n}/telemetry`).
const HOSTILE_DEVICES: u64 = 10;

/// The good route (schema + pii-redact) beside a route whose policy loops until its 20 ms
/// deadline (or does what `BENCH_HOSTILE_MODE` says). `breaker` goes into the hostile policy's
/// table. Its output topic is one nobody reads: were a hostile message ever forwarded, it could
/// not pass for a good one on the twin (the gateway's counters show it instead).
fn hostile_config(port: u16, client_id: &str, workers: u64, breaker: &str) -> FileConfig {
    let text = format!(
        r#"{schema_pii}
[[policy]]
name = "hostile"
path = "{hostile}"
{breaker}
[policy.config]
mode = "{mode}"
[policy.limits]
deadline-ms = 20
fuel = 100_000_000_000

[[route]]
filter = "devices/+/telemetry"
chain = ["schema", "pii"]

[[route]]
filter = "hostile/+/telemetry"
chain = ["hostile"]

[gateway]
broker = "mqtt://127.0.0.1:{port}"
client-id = "{client_id}"
inflight = 100
workers = {workers}

[[gateway.input]]
filter = "devices/+/telemetry"
template = "devices/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"

[[gateway.input]]
filter = "hostile/+/telemetry"
template = "hostile/{{device}}/telemetry"
output = "held/{{device}}/telemetry"
"#,
        schema_pii = schema_pii(),
        hostile = fixtures::wasm("hostile").display(),
        mode = std::env::var("BENCH_HOSTILE_MODE").unwrap_or_else(|_| "loop".into()),
    );
    FileConfig::from_toml(&text, ".").unwrap()
}

/// A stop flag and a task publishing `message(n)` for n = 0, 1, … (QoS 1) from client
/// `client_id`, at `rate` messages/s or, without one, as fast as 100 in flight allow; the task
/// says how many it sent.
fn publish_until_stopped(
    rt: &tokio::runtime::Runtime,
    port: u16,
    client_id: &str,
    rate: Option<u64>,
    message: impl Fn(u64) -> (String, Vec<u8>) + Send + 'static,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let (c, _) = rt.block_on(client(client_id, port, None));
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let task = rt.spawn(async move {
        let mut tick = rate.map(|r| {
            let mut t = tokio::time::interval(Duration::from_nanos(1_000_000_000 / r));
            // Tokio's timer ticks in milliseconds: above 1,000/s a rate is kept on average by
            // catching up on missed ticks at once.
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let mut sent = 0_u64;
        while !stopped.load(Ordering::Relaxed) {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let (topic, body) = message(sent);
            c.publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
            sent += 1;
        }
        sent
    });
    (stop, task)
}

/// Publishes to the hostile route at `rate` messages/s until stopped.
fn flood(
    rt: &tokio::runtime::Runtime,
    port: u16,
    tag: &str,
    rate: u64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    publish_until_stopped(rt, port, &format!("hostile-{tag}"), Some(rate), |sent| {
        let sent_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        (
            format!("hostile/h{}/telemetry", sent % HOSTILE_DEVICES),
            format!(r#"{{"seq":{sent},"side":"hostile","sent_ms":{sent_ms}}}"#).into_bytes(),
        )
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The good route measured alone, then beside a flooded hostile route (default breaker, and
/// breaker off), then alone again (to show the run's drift), each on a fresh gateway.
fn hostile(rt: &tokio::runtime::Runtime, port: u16, tmp: &std::path::Path, base: Instant) {
    let rate = env_u64("BENCH_HOSTILE_RATE", 10);
    let workers = env_u64("BENCH_HOSTILE_WORKERS", 1);
    // (name, the hostile policy's breaker settings when flooded, whether to measure only once
    // the breaker holds every hostile device)
    let off = "breaker-threshold = 0\nbreaker-rate = 0";
    let cases: [(&str, Option<&str>, bool); 5] = [
        ("no hostile traffic (baseline)", None, false),
        (
            "flooded, default breaker, from the flood's start",
            Some(""),
            false,
        ),
        (
            "flooded, default breaker, once it holds every hostile device",
            Some(""),
            true,
        ),
        ("flooded, breaker off", Some(off), false),
        ("no hostile traffic (again)", None, false),
    ];
    let mut rows = Vec::new();
    for (i, (name, hostile, warm)) in cases.iter().enumerate() {
        let client_id = format!("bench-hostile-{i}");
        let config = hostile_config(port, &client_id, workers, hostile.unwrap_or(""));
        let store = tmp.join(format!("h{i}.db"));
        let running = start_gateway(rt, config, &store, &client_id, false);
        let stats = running.gateway.stats();
        let tag = format!("hostile{i}");
        let flooding = hostile.map(|_| flood(rt, port, &tag, rate));
        if *warm {
            // A device is held after 5 faults among its last 16 messages: once 6 messages of
            // each have been judged, every hostile device is held.
            let end = Instant::now() + Duration::from_secs(120);
            let judged = || {
                stats.quarantined.load(Ordering::Relaxed) + stats.forwarded.load(Ordering::Relaxed)
            };
            while judged() < 6 * HOSTILE_DEVICES && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let f = rt.block_on(measure(
            port,
            |seq| format!("devices/d{}/telemetry", seq % DEVICES),
            "twin/#",
            &tag,
            base,
            None,
        ));
        // Hostile messages sent, and those the gateway committed to its store (all of them
        // once it has caught up: waited for, up to a bound).
        let (sent, quarantined) = match flooding {
            Some((stop, task)) => {
                stop.store(true, Ordering::Relaxed);
                let sent = rt.block_on(task).unwrap();
                let end = Instant::now() + Duration::from_secs(60);
                while stats.quarantined.load(Ordering::Relaxed) < sent && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(50));
                }
                (sent, stats.quarantined.load(Ordering::Relaxed))
            }
            None => (0, stats.quarantined.load(Ordering::Relaxed)),
        };
        // Why they were held: the policy ran into its deadline, or its breaker held them
        // without running it (or, in another BENCH_HOSTILE_MODE, the policy's own verdict).
        let records = QuarantineStore::open_existing(&store)
            .and_then(|q| q.list(&Default::default()))
            .unwrap_or_default();
        let count = |what: &[&str]| {
            records
                .iter()
                .filter(|r| what.iter().any(|w| r.reason.contains(w)))
                .count()
        };
        // Where a hostile message's time went, from the store's records: publish → the gateway
        // has it (`received_at_ms`), → judged (`stored_at_ms`, taken before the commit).
        if !records.is_empty() {
            let mut delivery = Vec::new();
            let mut judging = Vec::new();
            for r in &records {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
                if let Some(sent) = v["sent_ms"].as_u64() {
                    delivery.push(r.received_at_ms.saturating_sub(sent));
                }
                judging.push(r.stored_at_ms.saturating_sub(r.received_at_ms));
            }
            delivery.sort_unstable();
            judging.sort_unstable();
            let at = |v: &[u64], q: f64| {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                v.get(((v.len() as f64 - 1.0) * q) as usize)
                    .copied()
                    .unwrap_or(0)
            };
            eprintln!(
                "{tag}: hostile publish → gateway p50 {} ms p99 {} ms max {} ms; judged in p50 {} ms p99 {} ms",
                at(&delivery, 0.5),
                at(&delivery, 0.99),
                at(&delivery, 1.0),
                at(&judging, 0.5),
                at(&judging, 0.99)
            );
        }
        let why = (
            count(&["deadline exceeded"]),
            count(&["device held", "circuit breaker open"]),
        );
        running.stop(rt, port);
        rows.push((name, f, sent, quarantined, why));
    }

    let (_, baseline, _, _, _) = &rows[0];
    println!(
        "\nGood route devices/+/telemetry (schema + pii-redact, {workers} worker(s)) beside \
         hostile/+/telemetry (hostile `{mode}`, deadline 20 ms) flooded at {rate}/s over \
         {HOSTILE_DEVICES} devices",
        mode = std::env::var("BENCH_HOSTILE_MODE").unwrap_or_else(|_| "loop".into()),
    );
    println!(
        "\n| good route | messages/s (QoS 1, 100 in flight) | p50 at {PACED_RATE}/s | p99 at {PACED_RATE}/s | \
         throughput vs baseline | p99 vs baseline | good lost | hostile sent / quarantined (deadline / breaker) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, f, sent, quarantined, (deadline, breaker)) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2}× | {:.2}× | {} | {sent} / {quarantined} ({deadline} / {breaker}) |",
            f.per_second,
            f.p50_ms,
            f.p99_ms,
            f.per_second / baseline.per_second,
            f.p99_ms / baseline.p99_ms,
            f.lost,
        );
    }
    for (name, f, _, _, _) in rows.iter().skip(1) {
        let slower = baseline.per_second / f.per_second;
        let p99 = f.p99_ms / baseline.p99_ms;
        let met = slower <= 2.0 && p99 <= 2.0 && f.lost == 0;
        println!(
            "{name}: throughput {slower:.2}× slower, p99 {p99:.2}× the baseline, {} lost: target (within 2×, none lost) {}",
            f.lost,
            if met { "met" } else { "NOT met" }
        );
    }
}

/// One device on the good route publishing until stopped: at `rate` messages/s, or as fast as
/// QoS 1 with 100 in flight allows. Its payloads carry no `sent_ns` and a sequence number
/// beyond any measured one, so [`measure`] never counts them; says how many it sent.
fn flood_device(
    rt: &tokio::runtime::Runtime,
    port: u16,
    tag: &str,
    topic: &'static str,
    rate: Option<u64>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    publish_until_stopped(rt, port, &format!("flood-{tag}"), rate, move |sent| {
        let body = format!(
            r#"{{"seq":{},"readings":{{"flood":true}}}}"#,
            1_000_000_000 + sent
        );
        (topic.to_owned(), body.into_bytes())
    })
}

/// A flood's topic, and its rate in messages/s (`None`: as fast as it can).
type Flood = (&'static str, Option<u64>);

/// The good route without a flood, then beside one device flooding it, at a steady rate (the
/// issue's 10,000 messages/s; `BENCH_FLOOD_RATE`) and as fast as it can: under the default
/// device budget, with the budget off, and a control flooding a topic the gateway does not
/// read (what the broker and the machine's shared cores alone cost the good route). Each case
/// on a fresh gateway.
fn flooded(rt: &tokio::runtime::Runtime, port: u16, tmp: &std::path::Path, base: Instant) {
    let steady = env_u64("BENCH_FLOOD_RATE", 10_000);
    let on = "devices/flooder/telemetry";
    let off = "[gateway.device-budget]\nrate = 0\n";
    let elsewhere = "elsewhere/flooder/telemetry";
    // (name, the flood's topic and rate, gateway extra)
    let cases: Vec<(String, Option<Flood>, &str)> = vec![
        ("no flood (baseline)".into(), None, ""),
        (
            format!("{steady}/s from one device, default budget (1,000/s)"),
            Some((on, Some(steady))),
            "",
        ),
        (
            format!("{steady}/s from one device, budget off"),
            Some((on, Some(steady))),
            off,
        ),
        (
            format!("control: {steady}/s on a topic twinguard does not read"),
            Some((elsewhere, Some(steady))),
            "",
        ),
        (
            "as fast as it can, default budget (1,000/s)".into(),
            Some((on, None)),
            "",
        ),
        (
            "as fast as it can, budget off".into(),
            Some((on, None)),
            off,
        ),
        (
            "control: as fast as it can on a topic twinguard does not read".into(),
            Some((elsewhere, None)),
            "",
        ),
    ];
    let mut rows = Vec::new();
    for (i, (name, flood, extra)) in cases.iter().enumerate() {
        let client_id = format!("bench-flood-{i}");
        let config = gateway_config(
            port,
            r#"["schema", "pii"]"#,
            &schema_pii(),
            &client_id,
            extra,
        );
        let running = start_gateway(rt, config, &tmp.join(format!("f{i}.db")), &client_id, false);
        let stats = running.gateway.stats();
        let tag = format!("flood{i}");
        let flooding = flood.map(|(topic, rate)| flood_device(rt, port, &tag, topic, rate));
        let started = Instant::now();
        let f = rt.block_on(measure(
            port,
            |seq| format!("devices/d{}/telemetry", seq % DEVICES),
            "twin/#",
            &tag,
            base,
            None,
        ));
        let sent = flooding.map_or(0, |(stop, task)| {
            stop.store(true, Ordering::Relaxed);
            rt.block_on(task).unwrap()
        });
        #[allow(clippy::cast_precision_loss)]
        let flood_rate = sent as f64 / started.elapsed().as_secs_f64();
        let shed = stats.shed.load(Ordering::Relaxed);
        running.stop(rt, port);
        rows.push((name, f, sent, flood_rate, shed));
    }
    let (_, baseline, _, _, _) = &rows[0];
    println!(
        "\nGood route devices/+/telemetry (schema + pii-redact, {DEVICES} devices) beside one \
         flooding device"
    );
    println!(
        "\n| case | messages/s (QoS 1, 100 in flight) | p50 at {PACED_RATE}/s | p99 at {PACED_RATE}/s | \
         p99 vs baseline | good lost | flood sent (per second) / shed |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, f, sent, rate, shed) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2}× | {} | {sent} ({rate:.0}/s) / {shed} |",
            f.per_second,
            f.p50_ms,
            f.p99_ms,
            f.p99_ms / baseline.p99_ms,
            f.lost,
        );
    }
}

fn main() {
    let only = std::env::var("BENCH_ONLY").ok();
    let (run_paths, run_hostile, run_flood) = match only.as_deref() {
        None | Some("") => (true, true, true),
        Some("paths") => (true, false, false),
        Some("hostile") => (false, true, false),
        Some("flood") => (false, false, true),
        Some(other) => panic!("BENCH_ONLY={other}: expected `paths`, `hostile` or `flood`"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut extra = String::new();
    if std::env::var_os("BENCH_NODELAY").is_some() {
        extra.push_str("set_tcp_nodelay true\n");
    }
    if let Ok(lines) = std::env::var("BENCH_BROKER") {
        // `;` separates lines, so one variable can carry several settings.
        for line in lines.split(';') {
            extra.push_str(line.trim());
            extra.push('\n');
        }
    }
    let broker = broker::Broker::start_with(tmp.path(), None, &extra);
    let port = broker.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = Instant::now();
    if run_paths {
        paths(&rt, port, tmp.path(), base);
    }
    if run_hostile {
        hostile(&rt, port, tmp.path(), base);
    }
    if run_flood {
        flooded(&rt, port, tmp.path(), base);
    }
}
