//! Mosquitto with and without the plugin, same run: throughput (QoS 1, ~1 KB JSON, one
//! publisher with 100 in flight, one subscriber) and publish→deliver latency at a steady
//! 1,000 messages/s (p50, p99). The plugin runs a four-policy pack: schema-guard,
//! identity-guard, replay-guard and pii-redact.
//!
//! Run: `cargo bench -p twinguard-mosquitto` (needs mosquitto; builds the guests first).
//! `BENCH_MESSAGES` and `BENCH_ROUNDS` override the saturated run's size and the rounds.
//! As the issue sets it up, each broker's loop runs on core 0 and the load generator (this
//! process) on the other cores; `BENCH_PIN=0` lets the scheduler place everything.
//! `BENCH_CHAIN=schema,pii` runs a part of the pack (empty: none), and
//! `BENCH_PACK_ONLY_SECONDS=N` only evaluates the pack in process for N seconds (to profile).
//! `BENCH_STATE=file|nowait|memory` sets where policies' state goes (see [`state_table`]).
//! `BENCH_ONLY=flood` measures, instead, one device flooding beside a paced one, with and
//! without the plugin's device budget (see [`flood`]).

use twinguard_fixtures::broker;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use support::{plugin_so, policy, route};

const DEVICE: &str = "press-07";
const TOPIC: &str = "devices/press-07/telemetry";
const PACED_RATE: u64 = 1_000;
const PACED_SECONDS: u64 = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// ~1 KB of telemetry that passes the whole pack: integer seq and ts (now), the device's own
/// name, forty readings, and an owner whose name pii-redact masks.
fn document(seq: u64, sent_ns: u64) -> Vec<u8> {
    document_of(DEVICE, seq, sent_ns)
}

/// [`document`] from `device`.
fn document_of(device: &str, seq: u64, sent_ns: u64) -> Vec<u8> {
    let readings: Map<String, Value> = (0..40)
        .map(|i| (format!("r{i:02}"), json!(17.25 + f64::from(i) / 8.0)))
        .collect();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    serde_json::to_vec(&json!({
        "device": device,
        "seq": seq,
        "ts": ts,
        "sent_ns": sent_ns,
        "state": "running",
        "readings": readings,
        "owner": {"name": "Ada Lovelace", "shift": "B"},
    }))
    .unwrap_or_default()
}

/// The pack's policies in chain order, or those `BENCH_CHAIN` names (comma-separated, in its
/// order; empty: no policy at all, every message allowed unrouted), to see what each costs.
fn chain() -> Vec<String> {
    match std::env::var("BENCH_CHAIN") {
        Ok(names) => names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        Err(_) => ["schema", "identity", "replay", "pii"]
            .map(String::from)
            .to_vec(),
    }
}

/// `BENCH_STATE`: `file` (the default config: policies' state in a file, each PUBACK after
/// its commit), `nowait` (the file, `ack-after-commit = false`) or `memory` (`persist =
/// false`).
fn state_table() -> String {
    match std::env::var("BENCH_STATE").as_deref() {
        Err(_) | Ok("file") => String::new(),
        Ok("nowait") => "[state]\nack-after-commit = false\n".into(),
        Ok("memory") => "[state]\npersist = false\n".into(),
        Ok(other) => panic!("BENCH_STATE={other}: expected file, nowait or memory"),
    }
}

/// The pack: every field the load carries is checked, and the owner's name is masked.
fn pack(dir: &Path) -> PathBuf {
    let chain = chain();
    let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
    let inventory = format!("inventory = \"{DEVICE},press-08,press-09\"");
    let text = [
        policy(
            "schema",
            "schema-guard",
            &[
                "max-bytes = 4096",
                "required = \"/device:string,/seq:integer,/ts:integer,/readings:object\"",
            ],
        ),
        policy(
            "identity",
            "identity-guard",
            &[
                "topic-segment = 1",
                &inventory,
                "payload-field = \"/device\"",
            ],
        ),
        policy("replay", "replay-guard", &[]),
        policy("pii", "pii-redact", &["mask = \"/owner/name\""]),
        if chain.is_empty() {
            "[defaults]\nunrouted = \"allow\"\n\n".to_string()
        } else {
            route("devices/+/telemetry", &chain)
        },
        "[quarantine]\npath = \"quarantine.db\"\n".to_string(),
        state_table(),
    ]
    .concat();
    let path = dir.join("twinguard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One broker under test, and the sequence numbers its device has used (replay-guard wants
/// them to grow across runs).
struct Target {
    name: &'static str,
    broker: broker::Broker,
    next_seq: u64,
}

struct Figures {
    per_second: f64,
    /// CPU time the broker process spent per message in the saturated run.
    broker_cpu_us: f64,
    /// Of which its main thread (the broker's loop).
    loop_cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Why the plugin's store holds what it holds (empty for the broker without it).
fn held_reasons(dir: &Path) -> Vec<String> {
    let Ok(store) = twinguard::store::QuarantineStore::open_existing(dir.join("quarantine.db"))
    else {
        return Vec::new();
    };
    let records = store
        .list(&twinguard::store::Query::default())
        .unwrap_or_default();
    records.into_iter().map(|r| r.reason).collect()
}

/// `/proc/<pid>` of the mosquitto process started with a config in `dir`.
fn broker_proc(dir: &Path) -> Option<PathBuf> {
    let config = dir.join("mosquitto.conf");
    let config = config.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline)
            .contains(&*config)
            .then(|| e.path())
    })
}

/// Restricts thread `tid` (0: the calling thread) to `cpus`.
fn pin(tid: libc::pid_t, cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The set-up on this machine: the broker's loop (its main thread, where every
/// callback of the plugin runs) on core 0, and the load generator (this process) on the other
/// cores. The plugin's own threads (epoch ticker, workers, store writer) are not the broker's
/// loop: they go to the other cores, as they would to spare cores.
fn pin_broker(dir: &Path, others: &[usize]) {
    let Some(proc) = broker_proc(dir) else { return };
    let main = proc.file_name().unwrap_or_default().to_owned();
    for task in std::fs::read_dir(proc.join("task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        pin(
            tid,
            if task.file_name() == main {
                &[0]
            } else {
                others
            },
        );
    }
}

/// User + system CPU time so far of the mosquitto process started with a config in `dir`, in
/// clock ticks (`/proc/<pid>/stat` fields 14 and 15): the whole process, and its main thread
/// (the broker's loop, where the plugin's callbacks run).
fn broker_cpu_ticks(dir: &Path) -> (u64, u64) {
    let Some(proc) = broker_proc(dir) else {
        return (0, 0);
    };
    let ticks = |stat: &Path| {
        let stat = std::fs::read_to_string(stat).unwrap_or_default();
        // The fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    let main = proc
        .join("task")
        .join(proc.file_name().unwrap_or_default())
        .join("stat");
    (ticks(&proc.join("stat")), ticks(&main))
}

/// A client whose event loop runs on a thread: returns it and a channel of
/// (payload, receive time) for every delivered message, plus a channel of PUBACK counts.
fn connect(
    port: u16,
    id: &str,
    subscribe: Option<&str>,
    base: Instant,
) -> (Client, mpsc::Receiver<(Vec<u8>, u64)>) {
    connect_as(port, id, DEVICE, subscribe, base)
}

/// [`connect`] with `user` as the device identity.
fn connect_as(
    port: u16,
    id: &str,
    user: &str,
    subscribe: Option<&str>,
    base: Instant,
) -> (Client, mpsc::Receiver<(Vec<u8>, u64)>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    // The plugin takes the identity from the username, so each run's client id can be new
    // (no session takeover between runs).
    o.set_credentials(user, "");
    o.set_keep_alive(Duration::from_secs(60))
        .set_inflight(100)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut connection) = Client::new(o, 10_000);
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let filter = subscribe.map(str::to_string);
    let sub = client.clone();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => match &filter {
                    Some(f) => sub.subscribe(f.clone(), QoS::AtLeastOnce).unwrap(),
                    None => ready_tx.send(()).unwrap(),
                },
                Ok(Event::Incoming(Packet::SubAck(_))) => ready_tx.send(()).unwrap(),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if tx.send((p.payload.to_vec(), at)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("client: {e}");
                    return;
                }
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (client, rx)
}

fn sent_ns(payload: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(payload).unwrap_or_default();
    v["sent_ns"].as_u64().unwrap_or(0)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len().saturating_sub(1)) as f64 * q) as usize;
    #[allow(clippy::cast_precision_loss)]
    let ms = sorted.get(i).copied().unwrap_or(0) as f64 / 1e6;
    ms
}

fn run(target: &mut Target, messages: u64, base: Instant) -> Figures {
    let port = target.broker.port;
    let tag = format!("{}-{}", target.name, target.next_seq);
    let (_twin, delivered) = connect(port, &format!("twin-{tag}"), Some("devices/#"), base);
    let (device, _) = connect(port, &format!("device-{tag}"), None, base);
    let now = move || u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let receive = |n: u64| -> Vec<u64> {
        (0..n)
            .map(|i| match delivered.recv_timeout(Duration::from_secs(30)) {
                Ok((p, at)) => at.saturating_sub(sent_ns(&p)),
                Err(_) => panic!(
                    "{}: {i} of {n} delivered; held: {:?}",
                    target.name,
                    held_reasons(&target.broker.dir)
                ),
            })
            .collect()
    };

    // Saturated: the publisher goes as fast as its 100-in-flight window allows.
    let first = target.next_seq;
    let cpu_before = broker_cpu_ticks(&target.broker.dir);
    let start = Instant::now();
    let publisher = {
        let device = device.clone();
        std::thread::spawn(move || {
            for seq in first..first + messages {
                let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                device
                    .publish(TOPIC, QoS::AtLeastOnce, false, document(seq, sent))
                    .unwrap();
            }
        })
    };
    let _ = receive(messages);
    #[allow(clippy::cast_precision_loss)]
    let per_second = messages as f64 / start.elapsed().as_secs_f64();
    // Clock ticks are 10 ms (USER_HZ = 100 on Linux).
    let cpu_after = broker_cpu_ticks(&target.broker.dir);
    #[allow(clippy::cast_precision_loss)]
    let per_message =
        |after: u64, before: u64| after.saturating_sub(before) as f64 * 10_000.0 / messages as f64;
    let broker_cpu_us = per_message(cpu_after.0, cpu_before.0);
    let loop_cpu_us = per_message(cpu_after.1, cpu_before.1);
    publisher.join().unwrap();
    target.next_seq += messages;

    // Paced: latency when the broker is not saturated.
    let total = PACED_RATE * PACED_SECONDS;
    let first = target.next_seq;
    let pacer = std::thread::spawn(move || {
        let pace = Duration::from_nanos(1_000_000_000 / PACED_RATE);
        let begin = Instant::now();
        for (i, seq) in (first..first + total).enumerate() {
            let due = begin + pace * u32::try_from(i).unwrap_or(u32::MAX);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            device
                .publish(TOPIC, QoS::AtLeastOnce, false, document(seq, now()))
                .unwrap();
        }
    });
    let mut latencies = receive(total);
    pacer.join().unwrap();
    target.next_seq += total;
    latencies.sort_unstable();
    Figures {
        per_second,
        broker_cpu_us,
        loop_cpu_us,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// Evaluates the pack in this process, without brokers, for `seconds`: what to run under
/// `perf record` to see where the pack's own time goes.
fn pack_only(seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = twinguard::Runtime::from_config_file(pack(dir.path())).unwrap();
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut n, start) = (0u64, Instant::now());
    while Instant::now() < end {
        let docs: Vec<Vec<u8>> = (0..1_000).map(|i| document(n + i + 1, 0)).collect();
        for d in docs {
            let m = twinguard::Message::new(DEVICE, TOPIC, twinguard::ContentType::Json, d);
            std::hint::black_box(runtime.evaluate(&m));
        }
        n += 1_000;
    }
    #[allow(clippy::cast_precision_loss)]
    let per_message_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{n} messages, {per_message_us:.1} µs/message (document generation included)");
}

/// `BENCH_ONLY=flood`: one device (`press-08`) publishing as fast as QoS 1 with 100 in flight
/// allows, beside `press-07` at a steady 1,000 messages/s whose publish→deliver latency is
/// measured: Mosquitto alone with and without the flood (what the flood costs the broker
/// itself), then the broker with the pack inline, without the flood, with it under the
/// default device budget, and with the budget off. A fresh broker for each case;
/// `BENCH_ROUNDS` rounds.
fn flood(so: &Path, pinned: Option<&[usize]>, rounds: u64, base: Instant) {
    const FLOODER: &str = "press-08";
    // (name, the plugin's extra options (None: no plugin), flood)
    let cases: [(&str, Option<&str>, bool); 5] = [
        ("mosquitto alone, no flood", None, false),
        ("mosquitto alone, flood (control)", None, true),
        ("+ twinguard (pack, inline), no flood", Some(""), false),
        (
            "+ twinguard, flood, default budget (1,000/s)",
            Some(""),
            true,
        ),
        (
            "+ twinguard, flood, budget off",
            Some("plugin_opt_device_budget_rate 0\n"),
            true,
        ),
    ];
    println!(
        "\n| round | case | p50 at {PACED_RATE}/s | p99 | p99 vs the same broker without the \
         flood | lost | flood sent (per second) | flood delivered |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        let mut baseline = f64::NAN;
        for (i, (name, plugin, flooding)) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let extra = plugin.map_or(String::new(), |options| {
                format!(
                    "plugin {}\nplugin_opt_config {}\nplugin_opt_identity username\n{options}",
                    so.display(),
                    pack(dir.path()).display()
                )
            });
            let broker = broker::Broker::start_with(dir.path(), None, &extra);
            if let Some(others) = pinned {
                pin_broker(&broker.dir, others);
            }
            let port = broker.port;
            let tag = format!("{round}-{i}");
            let (_twin, delivered) = connect(port, &format!("twin-{tag}"), Some(TOPIC), base);
            // A subscriber of the flood, as a twin would be; it only counts.
            let (_drain, drained) = connect_as(
                port,
                &format!("drain-{tag}"),
                FLOODER,
                Some("devices/press-08/telemetry"),
                base,
            );
            let drained = std::thread::spawn(move || drained.iter().count());
            let (device, _) = connect(port, &format!("device-{tag}"), None, base);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flooder = flooding.then(|| {
                let (client, _acks) =
                    connect_as(port, &format!("flood-{tag}"), FLOODER, None, base);
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    let _acks = _acks;
                    let (mut sent, start) = (0_u64, Instant::now());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sent += 1;
                        let doc = document_of(FLOODER, sent, 0);
                        if client
                            .publish("devices/press-08/telemetry", QoS::AtLeastOnce, false, doc)
                            .is_err()
                        {
                            break;
                        }
                    }
                    let _ = client.disconnect();
                    #[allow(clippy::cast_precision_loss)]
                    let rate = sent as f64 / start.elapsed().as_secs_f64();
                    (sent, rate)
                })
            });
            // The flood at full speed before the measured run starts.
            std::thread::sleep(Duration::from_secs(1));
            let total = PACED_RATE * PACED_SECONDS;
            let pacer = std::thread::spawn(move || {
                let pace = Duration::from_nanos(1_000_000_000 / PACED_RATE);
                let begin = Instant::now();
                for (i, seq) in (1..=total).enumerate() {
                    let due = begin + pace * u32::try_from(i).unwrap_or(u32::MAX);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    device
                        .publish(TOPIC, QoS::AtLeastOnce, false, document(seq, sent))
                        .unwrap();
                }
            });
            let (mut latencies, mut sent_at) = (Vec::new(), Vec::new());
            while latencies.len() < usize::try_from(total).unwrap_or(usize::MAX) {
                match delivered.recv_timeout(Duration::from_secs(30)) {
                    Ok((p, at)) => {
                        let sent = sent_ns(&p);
                        latencies.push(at.saturating_sub(sent));
                        sent_at.push(sent);
                    }
                    Err(_) => break,
                }
            }
            pacer.join().unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (sent, rate) = flooder.map_or((0, 0.0), |f| f.join().unwrap());
            drop(broker);
            let passed = drained.join().unwrap_or(0);
            if std::env::var_os("TG_BENCH_TAILS").is_some() {
                // The slowest, with when they were sent (ms into the paced run): one stall or
                // many?
                let first = sent_at.iter().copied().min().unwrap_or(0);
                let mut tails: Vec<(u64, u64)> = latencies
                    .iter()
                    .zip(&sent_at)
                    .map(|(l, s)| (*l, s - first))
                    .collect();
                tails.sort_unstable_by(|a, b| b.cmp(a));
                #[allow(clippy::cast_precision_loss)]
                let worst: Vec<String> = tails
                    .iter()
                    .take(12)
                    .map(|(l, at)| format!("{:.1}ms@{}", *l as f64 / 1e6, at / 1_000_000))
                    .collect();
                eprintln!("{name}: slowest {}", worst.join(" "));
            }
            latencies.sort_unstable();
            let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
            if !flooding {
                baseline = p99;
            }
            let lost = total - latencies.len() as u64;
            println!(
                "| {round} | {name} | {p50:.2} ms | {p99:.2} ms | {:.2}× | {lost} | {sent} \
                 ({rate:.0}/s) | {passed} |",
                p99 / baseline
            );
        }
    }
}

fn main() {
    if let Some(seconds) = std::env::var("BENCH_PACK_ONLY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return pack_only(seconds);
    }
    let so = plugin_so();
    let messages = env_or("BENCH_MESSAGES", 20_000);
    let rounds = env_or("BENCH_ROUNDS", 3);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("flood") {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let others: Vec<usize> = (1..cores).collect();
        let pinned = env_or("BENCH_PIN", 1) == 1 && cores >= 2;
        if pinned {
            pin(0, &others);
        }
        return flood(
            &so,
            pinned.then_some(others.as_slice()),
            rounds,
            Instant::now(),
        );
    }
    let plain_dir = tempfile::tempdir().unwrap();
    let plugin_dir = tempfile::tempdir().unwrap();
    let config = pack(plugin_dir.path());
    // The budget is off: the one publisher carries the load of a plant, far above one
    // device's default share, and what is measured is the judgement's cost.
    let extra = |config: &Path, workers: usize| {
        format!(
            "plugin {}\nplugin_opt_config {}\nplugin_opt_identity username\n\
             plugin_opt_workers {workers}\nplugin_opt_device_budget_rate 0\n",
            so.display(),
            config.display()
        )
    };
    let workers_dir = tempfile::tempdir().unwrap();
    let workers_config = pack(workers_dir.path());
    let mut targets = [
        Target {
            name: "mosquitto alone",
            broker: broker::Broker::start(plain_dir.path(), None),
            next_seq: 1,
        },
        Target {
            name: "mosquitto + twinguard, inline",
            broker: broker::Broker::start_with(plugin_dir.path(), None, &extra(&config, 0)),
            next_seq: 1,
        },
        Target {
            name: "mosquitto + twinguard, 1 worker",
            broker: broker::Broker::start_with(
                workers_dir.path(),
                None,
                &extra(&workers_config, 1),
            ),
            next_seq: 1,
        },
    ];
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let pinned = env_or("BENCH_PIN", 1) == 1 && cores >= 2;
    if pinned {
        let others: Vec<usize> = (1..cores).collect();
        for t in &targets {
            pin_broker(&t.broker.dir, &others);
        }
        // The clients' threads, spawned from here on, inherit this.
        pin(0, &others);
        println!("brokers' loops pinned to core 0, everything else to cores 1..{cores}");
    }
    let base = Instant::now();
    let mut ratios = Vec::new();
    let mut worker_ratios = Vec::new();
    println!("{messages} messages per saturated run, {PACED_RATE}/s for {PACED_SECONDS} s paced");
    for round in 1..=rounds {
        let mut rates = Vec::new();
        for t in &mut targets {
            let f = run(t, messages, base);
            println!(
                "round {round} | {:<32} | {:>6.0} messages/s | broker CPU {:>5.1} µs/message, \
                 loop thread {:>5.1} | p50 {:>5.2} ms | p99 {:>5.2} ms",
                t.name, f.per_second, f.broker_cpu_us, f.loop_cpu_us, f.p50_ms, f.p99_ms
            );
            rates.push(f.per_second);
        }
        ratios.push(rates[1] / rates[0]);
        worker_ratios.push(rates[2] / rates[0]);
    }
    for (how, ratios) in [("inline", &mut ratios), ("1 worker", &mut worker_ratios)] {
        ratios.sort_by(f64::total_cmp);
        println!(
            "with / without the plugin ({how}), throughput: median {:.2}x over {rounds} rounds \
             ({ratios:.2?})",
            ratios[ratios.len() / 2]
        );
    }
    // Where the time goes: the pack's cost per message on its own, in this process, on the
    // same documents (what the broker's thread spends in the plugin for each PUBLISH).
    // The whole file's runtime part: it has a [quarantine] table, which Runtime's reader refuses.
    let runtime =
        twinguard::Runtime::new(twinguard::FileConfig::from_file(&config).unwrap().runtime)
            .unwrap();
    let n = messages.min(20_000);
    let docs: Vec<Vec<u8>> = (0..n).map(|i| document(1_000_000 + i, 0)).collect();
    let start = Instant::now();
    for d in &docs {
        let m = twinguard::Message::new(DEVICE, TOPIC, twinguard::ContentType::Json, d.clone());
        let outcome = runtime.evaluate(&m);
        if chain().iter().any(|p| p == "pii") {
            assert_eq!(outcome.action, twinguard::Action::Redact, "{outcome:?}");
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let per_message_us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("the pack alone (Runtime::evaluate, same documents): {per_message_us:.1} µs/message");
    // Every message was allowed (redacted) and none quarantined: the pack judged, not refused.
    for dir in [plugin_dir.path(), workers_dir.path()] {
        let store =
            twinguard::store::QuarantineStore::open_existing(dir.join("quarantine.db")).unwrap();
        let held = store.count(None).unwrap();
        assert_eq!(
            held, 0,
            "the pack quarantined {held} messages: the bench load is wrong"
        );
    }
}
