//! The MQTT gateway behind `twinguard serve`: reads device topics on one or more brokers, runs
//! every message through the policies, and either forwards it to its twin topic or commits it
//! to the quarantine store — acknowledging the device's message only once that outcome is
//! durable (at-least-once: nothing lost, duplicates possible after a crash).
//!
//! How the acknowledgement is tied to durability, on one MQTT connection (3.1.1 or 5) with
//! manual acks and a persistent session (stable client id; MQTT 5 sessions expire after a week):
//! - forwarded: the input is acknowledged when the broker acknowledges (PUBACK) the output;
//!   an MQTT 5 broker that refuses the output in its PUBACK gets it quarantined instead;
//! - quarantined: the input is acknowledged after the store's commit returns;
//! - acknowledgements go out in the order the messages arrived (MQTT 3.1.1 and 5, §4.6);
//! - on any connection error the connection is dropped whole, with every pending
//!   acknowledgement: the broker redelivers what was not acknowledged to the new connection.
//!   That costs duplicates, never a loss, and never acknowledges a message whose outcome was
//!   not durable.
//!
//! Inside a connection, messages are judged by `workers` tasks at once, each device always on
//! the same one, so per-device order (and per-device policy state) holds. The queues between
//! are bounded by the broker's in-flight window: nothing is acknowledged before its outcome,
//! so the broker never has more than its window outstanding towards the gateway.

pub use crate::budget;
mod batched;
mod config;
mod mqtt;
mod template;

pub(crate) use config::{one_or_many, validate_inputs, DEFAULT_MAX_MESSAGE_BYTES};
pub use config::{BrokerAddr, GatewayConfig, Input, InputConfig, TlsConfig};
pub use mqtt::Protocol;
pub use template::Template;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use self::mqtt::{Client, ConnError, Event, EventLoop, OutProperties, Received};
use crate::alerts::Alerts;
use crate::judge::{Judge, Judgement, Stored};
use crate::store::QuarantineStore;
use crate::{ContentType, Message, Outcome, Runtime};
use twinguard_core::Bytes;

/// Why the gateway stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration cannot work (named key, value).
    #[error("gateway config: {0}")]
    Config(String),
    /// The first connection failed in a way retrying will not mend (TLS, refused credentials).
    #[error("cannot connect to {broker}: {cause}")]
    Connect {
        /// The broker URL.
        broker: String,
        /// What the client said, with a hint.
        cause: String,
    },
}

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Messages received from the broker (redeliveries included).
    pub received: AtomicU64,
    /// Messages published to their twin topic and acknowledged by the broker.
    pub forwarded: AtomicU64,
    /// Messages committed to the quarantine store.
    pub quarantined: AtomicU64,
    /// Forwards the broker refused (MQTT 5 PUBACK reason code), quarantined instead.
    pub refused: AtomicU64,
    /// Security events raised.
    pub alerts: AtomicU64,
    /// Connections made (the first included).
    pub connections: AtomicU64,
    /// Store commits that failed (the message stays unacknowledged and comes back).
    pub store_errors: AtomicU64,
    /// Whether the broker connection is up now (its CONNACK received, not lost since).
    pub connected: std::sync::atomic::AtomicBool,
    /// Publishes (forwards and alerts) handed to the client and not yet acknowledged by the
    /// broker, on the current connection.
    pub in_flight: AtomicU64,
    /// Retained messages the broker replayed on subscribing, acknowledged unjudged
    /// (`retained = "skip"`).
    pub retained_skipped: AtomicU64,
    /// Messages of a device over its budget (`[gateway.device-budget]`), acknowledged and
    /// dropped before any worker saw them.
    pub shed: AtomicU64,
    /// The broker's own count of messages it dropped on full queues, all clients together
    /// (`broker-drops-topic`); 0 until the broker reports it.
    pub broker_dropped: AtomicU64,
    /// Writes (one flush each) that carried packets to the broker, on every connection.
    pub writes: AtomicU64,
    /// Packets those writes carried (forwards, alerts, acknowledgements, subscriptions,
    /// pings): `packets_sent / writes` is how many share a write, 1 when nothing queues.
    pub packets_sent: AtomicU64,
}

/// A gateway to one broker, ready to run. Clones share everything, counters included.
#[derive(Clone)]
pub struct Gateway {
    judge: Judge,
    config: Arc<GatewayConfig>,
    broker: BrokerAddr,
    inputs: Arc<Vec<Input>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    stats: Arc<GatewayStats>,
    /// `messaging.process.duration` of this gateway, when telemetry is on.
    process: Option<opentelemetry::metrics::BoundHistogram<f64>>,
    /// Message spans, when they are exported.
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// Seeds the hash that places devices on workers.
    shard_seed: Arc<std::collections::hash_map::RandomState>,
    /// Policies' state, committed before acknowledging.
    state: Option<crate::state::StateDb>,
}

/// A forwarded message waiting for the broker's PUBACK.
struct Forward {
    seq: u64,
    input: Received,
    message: Message,
    destination: String,
    generation: u64,
}

/// Publishes waiting for the broker's PUBACK, on one connection.
#[derive(Default)]
struct Pending {
    /// One entry per publish handed to the client, in order: the forward to acknowledge
    /// once that publish is acknowledged (`None` for alerts, which acknowledge nothing).
    queued: VecDeque<Option<Forward>>,
    /// Publishes on the wire, by packet id.
    by_pkid: HashMap<u16, Option<Forward>>,
}

/// A message and what the router made of it.
struct Job {
    /// Arrival order on this connection: acknowledgements follow it.
    seq: u64,
    input: Received,
    route: Result<Route, String>,
}

/// Where a message fits: its device, content type and output topic.
pub(crate) struct Route {
    pub(crate) device: String,
    pub(crate) content_type: ContentType,
    pub(crate) destination: String,
}

/// A publish for the publisher task.
struct Out {
    topic: String,
    payload: Bytes,
    properties: Option<OutProperties>,
    then: Option<Forward>,
}

impl Out {
    /// A security event for the alerts topic, as JSON; nothing waits for its PUBACK.
    fn alert(topic: &str, event: &crate::alerts::SecurityEvent) -> Self {
        Self {
            topic: topic.to_owned(),
            payload: event.to_json_bytes().into(),
            properties: Some(OutProperties {
                content_type: Some("application/json".into()),
                ..OutProperties::default()
            }),
            then: None,
        }
    }
}

impl Gateway {
    /// Validates the configuration and reads the TLS material; nothing touches the network.
    pub fn new(
        runtime: Runtime,
        config: GatewayConfig,
        store: QuarantineStore,
        alerts: Option<Alerts>,
    ) -> Result<Self, GatewayError> {
        let (broker, inputs) = config
            .validate()
            .map_err(|e| GatewayError::Config(e.into()))?;
        let tls = tls_of(&config)?;
        for input in inputs.iter().filter(|i| i.is_shared()) {
            tracing::warn!(
                gateway = %config.name(),
                filter = %input.filter,
                "a $share filter: several gateways split the load; loses messages published \
                 while the broker restarts and the gateway reconnects (the broker queues \
                 nothing for a disconnected member of a shared subscription); use a plain \
                 filter where nothing may be lost"
            );
        }
        // Records carry the gateway's name: where a release or replay publishes them again.
        let judge = Judge::new(runtime, store, alerts).with_source(config.name());
        Ok(Self {
            judge,
            config: Arc::new(config),
            broker,
            inputs: Arc::new(inputs),
            tls,
            stats: Arc::new(GatewayStats::default()),
            process: None,
            tracer: None,
            shard_seed: Arc::new(std::collections::hash_map::RandomState::new()),
            state: None,
        })
    }

    /// Traces the messages `tracer`'s sampler picks: one span per message (its judge flow),
    /// a child per policy that ran (name, version, verdict, fuel), and a last child for the
    /// forward or the quarantine. Log lines written while a sampled message is judged carry
    /// its `trace_id`.
    pub fn with_tracer(mut self, tracer: opentelemetry_sdk::trace::SdkTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Records `messaging.process.duration` (the judge flow of each message: evaluation,
    /// alert sinks, the store's commit) for this gateway through `meter`.
    pub fn with_meter(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        let histogram = meter
            .f64_histogram("messaging.process.duration")
            .with_unit("s")
            .with_description(
                "Time of one message's judge flow: evaluation, alert sinks, the quarantine commit",
            )
            .with_boundaries(twinguard_core::telemetry::DURATION_BOUNDS.to_vec())
            .build();
        self.process = Some(histogram.bind(&[
            opentelemetry::KeyValue::new("twinguard.gateway", self.config.name().to_owned()),
            opentelemetry::KeyValue::new("messaging.system", "mqtt"),
        ]));
        self
    }

    /// The gateway's counters.
    pub fn stats(&self) -> Arc<GatewayStats> {
        Arc::clone(&self.stats)
    }

    /// Its configured name (records in the quarantine store carry it).
    pub fn name(&self) -> &str {
        self.config.name()
    }

    /// Acknowledges a message only once `state` has committed what judging it changed;
    /// `state` must be the runtime's journal. Unlike [`Judge::with_state`], no worker waits:
    /// the acknowledging task waits once for every acknowledgement that is due, so one
    /// commit covers as many messages as arrived meanwhile.
    pub fn with_state(mut self, state: Option<crate::state::StateDb>) -> Self {
        self.state = state;
        self
    }

    /// Records every decision of this gateway in `log` (`[decision-log]`).
    pub fn with_decision_log(mut self, log: Option<crate::decision_log::DecisionLog>) -> Self {
        self.judge = self.judge.with_decision_log(log);
        self
    }

    /// Runs until `shutdown` resolves, then lets the messages it has taken finish (up to 10 s)
    /// and disconnects. Reconnects with backoff; returns an error only for a first connection
    /// that cannot succeed by retrying (TLS or refused credentials).
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), GatewayError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut ever_connected = false;
        let _drops = (!self.config.broker_drops_topic.is_empty()).then(|| {
            AbortOnDrop(tokio::spawn(watch_broker_drops(
                Arc::clone(&self.config),
                self.broker.clone(),
                self.tls.clone(),
                Arc::clone(&self.stats),
            )))
        });
        loop {
            let mut session = settings(
                &self.config,
                &self.broker,
                &self.config.client_id,
                self.tls.clone(),
                true,
            );
            session.counts = Some(&self.stats);
            let (client, eventloop) = mqtt::client(&session, 256);
            let outcome = match self
                .connection(client, eventloop, &mut ever_connected, shutdown.as_mut())
                .await
            {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Disconnected) => Ok(()),
                Err(e) => Err(e),
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            // What was in flight died with the connection (the broker redelivers its inputs).
            self.stats.in_flight.store(0, Ordering::Relaxed);
            match outcome {
                Err(e) if !ever_connected && e.fatal() => {
                    return Err(GatewayError::Connect {
                        broker: self.config.broker.clone(),
                        cause: e.explain(),
                    })
                }
                Err(e) => {
                    tracing::warn!(gateway = %self.name(), broker = %self.config.broker, "connection lost: {}; reconnecting in {backoff:?}", e.explain());
                }
                Ok(()) => {}
            }
            if ever_connected {
                backoff = backoff.min(Duration::from_secs(5));
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection, until it fails or `shutdown` resolves. A failure takes every pending
    /// acknowledgement with it (the broker redelivers those messages). A shutdown first lets
    /// the messages already taken finish, up to [`DRAIN`]: their forwards acknowledged, then
    /// their own acknowledgements and a DISCONNECT on the wire. Cut short, a message the twin
    /// already has would come back to the next session, and replay-guard would hold it as a
    /// replay. Messages that arrive meanwhile are left to the broker to redeliver.
    async fn connection<S: std::future::Future<Output = ()>>(
        &self,
        client: Client,
        mut events: EventLoop,
        ever_connected: &mut bool,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> Result<Ended, ConnError> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        // One task hands every publish to the client, so the order of `pending.queued` is
        // the order of the packet ids the client assigns.
        let (out_tx, out_rx) = mpsc::channel::<Out>(256);
        let _publisher = AbortOnDrop(tokio::spawn(publisher(
            client.clone(),
            Arc::clone(&pending),
            out_rx,
            Arc::clone(&self.stats),
        )));
        // Acknowledgements go through their own task, in arrival order: this task drives the
        // event loop, so it must not wait for room in the client's request queue.
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<(u64, Received)>();
        let acked = Arc::new(Acked::default());
        let _acker = AbortOnDrop(tokio::spawn(acknowledger(
            client.clone(),
            ack_rx,
            self.state.clone(),
            Arc::clone(&acked),
        )));
        let progress = Arc::clone(&acked);
        let worker = Arc::new(self.worker(acked));
        let mut shards = Vec::new();
        let mut _shard_tasks = Vec::new();
        for _ in 0..self.config.workers() {
            let (tx, rx) = mpsc::unbounded_channel::<Job>();
            shards.push(tx);
            _shard_tasks.push(AbortOnDrop(tokio::spawn(shard(
                Arc::clone(&worker),
                client.clone(),
                rx,
                out_tx.clone(),
                ack_tx.clone(),
            ))));
        }
        let mut seq = 0_u64;
        let mut budgets = budget::Budgets::new(&self.config.device_budget);
        let mut connected = false;
        let mut stopping: Option<Stopping> = None;
        loop {
            // The event loop's poll is never dropped mid-way (it may be writing a packet): the
            // shutdown and the drain's checks run beside it until it yields an event.
            let polled = {
                let poll = events.poll();
                tokio::pin!(poll);
                loop {
                    if let Some(stop) = stopping.as_mut() {
                        if stop.check(&progress, &client, self.name()) {
                            return Ok(Ended::Stopped);
                        }
                    }
                    tokio::select! {
                        polled = &mut poll => break polled,
                        () = shutdown.as_mut(), if stopping.is_none() => {
                            if !connected {
                                return Ok(Ended::Stopped);
                            }
                            let in_flight = seq - progress.next.load(Ordering::Acquire);
                            if in_flight > 0 {
                                tracing::info!(gateway = %self.name(), "stopping: {in_flight} messages taken finish first (up to {DRAIN:?})");
                            }
                            stopping = Some(Stopping::new(seq));
                        }
                        () = tokio::time::sleep(Stopping::TICK), if stopping.is_some() => {}
                    }
                }
            };
            let event = match polled {
                Ok(event) => event,
                // The connection failed while draining: what was not acknowledged comes back.
                Err(_) if stopping.is_some() => return Ok(Ended::Stopped),
                Err(e) => return Err(e),
            };
            match event {
                Event::Disconnected => {
                    // Read on until the broker closes its end. Closing ours with its packets
                    // unread would reset the connection, and the broker would drop what it had
                    // not read yet: the last acknowledgements among them (measured: a stopped
                    // gateway's last 19 messages came back to the next one).
                    let _ = tokio::time::timeout(Stopping::DISCONNECT, async {
                        while events.poll().await.is_ok() {}
                    })
                    .await;
                    return Ok(if stopping.is_some() {
                        Ended::Stopped
                    } else {
                        Ended::Disconnected
                    });
                }
                // Not taken: unacknowledged, the broker redelivers it to the next session.
                Event::Message(_) if stopping.is_some() => {}
                Event::Connected => {
                    connected = true;
                    if !*ever_connected {
                        // Once per run: a broker that lets anyone in is worth one warning.
                        let (config, broker) = (Arc::clone(&self.config), self.broker.clone());
                        tokio::spawn(async move { warn_if_anonymous(&config, &broker).await });
                    }
                    *ever_connected = true;
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    self.stats.connected.store(true, Ordering::Relaxed);
                    tracing::info!(gateway = %self.name(), broker = %self.config.broker, protocol = ?self.config.protocol, "connected");
                    for input in self.inputs.iter() {
                        // Subscriptions outlive the connection in a persistent session;
                        // renewing them is harmless and covers a broker that lost them.
                        client
                            .try_subscribe(&input.filter)
                            .map_err(|_| ConnError::Closed)?;
                    }
                }
                Event::Subscribed(Ok(())) => {
                    tracing::info!(gateway = %self.name(), "subscribed");
                }
                Event::Subscribed(Err(codes)) => {
                    tracing::error!(gateway = %self.name(), broker = %self.config.broker, "the broker refused a subscription: {codes} (check its ACL for the gateway's user)");
                }
                Event::Message(input) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    if input.retained() && self.config.retained == config::Retained::Skip {
                        self.stats.retained_skipped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(gateway = %self.name(), topic = %input.topic(), "a retained message replayed on subscribing: acknowledged, not judged (retained = \"skip\")");
                        // Acknowledged in its turn, like any other.
                        ack_tx.send((seq, input)).map_err(|_| ConnError::Closed)?;
                        seq += 1;
                        continue;
                    }
                    let route = self.route(&input);
                    if let Some(budgets) = budgets.as_mut() {
                        // Unplaced messages share one budget: they have no device to own one.
                        let device = route.as_ref().map_or("\0unrouted", |r| r.device.as_str());
                        let verdict = budgets.take(device, std::time::Instant::now());
                        if let Some((devices, shed)) = budgets.swept() {
                            tracing::info!(gateway = %self.name(), "{devices} devices back within their budgets, forgotten before they sent again; their episodes shed {shed} messages");
                        }
                        match verdict {
                            budget::Verdict::Pass => {}
                            budget::Verdict::Resumed { shed } => {
                                tracing::info!(gateway = %self.name(), device = %budget::shown(device), "device back within its budget; {shed} of its messages were shed");
                            }
                            budget::Verdict::Shed { first } => {
                                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                                if first {
                                    self.over_budget(device, &input.topic(), &out_tx);
                                }
                                ack_tx.send((seq, input)).map_err(|_| ConnError::Closed)?;
                                seq += 1;
                                continue;
                            }
                        }
                    }
                    let shard = match &route {
                        Ok(r) => shard_of(&self.shard_seed, &r.device, shards.len()),
                        Err(_) => 0,
                    };
                    let job = Job { seq, input, route };
                    seq += 1;
                    shards[shard].send(job).map_err(|_| ConnError::Closed)?;
                }
                Event::Sent(pkid) => {
                    let mut p = lock(&pending);
                    if !p.by_pkid.contains_key(&pkid) {
                        if let Some(entry) = p.queued.pop_front() {
                            p.by_pkid.insert(pkid, entry);
                        }
                    }
                }
                Event::Acked(pkid, result) => {
                    let entry = lock(&pending).by_pkid.remove(&pkid);
                    if entry.is_some() {
                        let _ = self.stats.in_flight.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |n| Some(n.saturating_sub(1)),
                        );
                    }
                    match (entry, result) {
                        (Some(Some(f)), Ok(())) => {
                            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                            ack_tx
                                .send((f.seq, f.input))
                                .map_err(|_| ConnError::Closed)?;
                        }
                        (Some(Some(f)), Err(why)) => {
                            // Not delivered, and redelivering it would meet the same refusal:
                            // keep it, with the broker's reason.
                            self.stats.refused.fetch_add(1, Ordering::Relaxed);
                            tokio::spawn(refused(
                                Arc::clone(&worker),
                                client.clone(),
                                f,
                                why,
                                ack_tx.clone(),
                            ));
                        }
                        (Some(None), Err(why)) => {
                            tracing::warn!(gateway = %self.name(), "the broker refused an alert publish: {why}");
                        }
                        _ => {}
                    }
                }
                Event::Other => {}
            }
        }
    }

    /// A device went over its budget: one warning and one security event per episode (the
    /// alert sinks' dedup window folds repeats), on the alerts topic too when there is room.
    fn over_budget(&self, device: &str, topic: &str, out: &mpsc::Sender<Out>) {
        let alert = self
            .config
            .device_budget
            .alert(device, "[gateway.device-budget]");
        tracing::warn!(gateway = %self.name(), device = %budget::shown(device), "{}", alert.detail);
        let Some(alerts) = self.judge.alerts() else {
            return;
        };
        let event = crate::alerts::SecurityEvent::from_alert(
            device,
            topic,
            crate::alerts::EventAction::Shed,
            self.judge.runtime().policy_set().generation(),
            &alert,
            crate::alerts::Clock::now_ms(&crate::alerts::SystemClock),
        );
        for event in alerts.send_all(&[event]) {
            self.stats.alerts.fetch_add(1, Ordering::Relaxed);
            if let Some(alerts_topic) = &self.config.alerts_topic {
                // Never waits: the connection's task must keep reading.
                let _ = out.try_send(Out::alert(alerts_topic, &event));
            }
        }
    }

    /// Which input a message fits, its device and its output topic.
    fn route(&self, input: &Received) -> Result<Route, String> {
        place(&self.inputs, &input.topic(), |name| {
            input
                .user_properties()
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn worker(&self, acked: Arc<Acked>) -> Worker {
        Worker {
            acked,
            failed_at: AtomicU64::new(u64::MAX),
            judge: self.judge.clone(),
            alerts_topic: self.config.alerts_topic.clone(),
            max_message_bytes: self.config.max_message_bytes,
            stats: Arc::clone(&self.stats),
            process: self.process.clone(),
            tracer: self.tracer.clone(),
            gateway: self.config.name().to_owned(),
        }
    }
}

/// Which of `inputs` a message on `topic` fits, its device and its output topic;
/// `property` reads a transport attribute (an MQTT 5 user property) by name.
pub(crate) fn place(
    inputs: &[Input],
    topic: &str,
    property: impl Fn(&str) -> Option<String>,
) -> Result<Route, String> {
    for i in inputs {
        if !i.delivers.matches(topic) {
            continue;
        }
        let Some(mut caps) = i.template.capture(topic) else {
            continue;
        };
        let device = match &i.device_property {
            Some(name) => {
                let found = property(name);
                let Some(device) = found.filter(|d| !d.is_empty()) else {
                    return Err(format!(
                        "gateway: no user property {name:?} on {topic:?}: the device identity comes from it"
                    ));
                };
                if !caps.iter().any(|(n, _)| n == "device") {
                    caps.push(("device".to_owned(), device.clone()));
                }
                device
            }
            None => caps
                .iter()
                .find(|(n, _)| n == "device")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        };
        // Validation checked every output variable is captured.
        let destination = i.output.fill(&caps).unwrap_or_default();
        return Ok(Route {
            device,
            content_type: i.content_type,
            destination,
        });
    }
    Err(format!("gateway: topic {topic:?} fits no input template"))
}

/// Runs every gateway until `shutdown` resolves. If one fails for good (its first connection
/// cannot succeed), the others are stopped and that error is returned.
pub async fn run_all(
    gateways: &[Gateway],
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), GatewayError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for g in gateways {
        let g = g.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            g.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        });
    }
    tokio::pin!(shutdown);
    let mut result = Ok(());
    loop {
        tokio::select! {
            () = &mut shutdown, if !*stop_tx.borrow() => {
                let _ = stop_tx.send(true);
            }
            done = tasks.join_next() => match done {
                None => return result,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    let _ = stop_tx.send(true);
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
                Some(Err(e)) => {
                    let _ = stop_tx.send(true);
                    if result.is_ok() {
                        result = Err(GatewayError::Config(format!("a gateway task failed: {e}")));
                    }
                }
            },
        }
    }
}

/// The TLS client config `[gateway.tls]` asks for, read from its files.
fn tls_of(config: &GatewayConfig) -> Result<Option<Arc<rustls::ClientConfig>>, GatewayError> {
    config
        .tls
        .as_ref()
        .map(|t| {
            crate::tls::client_config(&t.ca, t.cert.as_deref(), t.key.as_deref(), "gateway.tls.")
                .map(Arc::new)
        })
        .transpose()
        .map_err(GatewayError::Config)
}

/// Connection settings for `config`'s broker: the gateway's own session (persistent, manual
/// acknowledgements) or a one-shot publisher's (clean session, automatic acknowledgements).
fn settings<'a>(
    config: &'a GatewayConfig,
    broker: &'a BrokerAddr,
    client_id: &'a str,
    tls: Option<Arc<rustls::ClientConfig>>,
    gateway_session: bool,
) -> mqtt::Settings<'a> {
    mqtt::Settings {
        protocol: config.protocol,
        client_id,
        host: &broker.host,
        port: broker.port,
        keep_alive: config.keep_alive(),
        persistent: gateway_session,
        inflight: config.inflight,
        credentials: config
            .username
            .as_deref()
            .map(|u| (u, config.password.as_deref().unwrap_or_default())),
        tls,
        counts: None,
    }
}

/// Follows the broker's dropped-messages counter on a connection of its own (clean session,
/// `<client-id>-sys`), so that a broker refusing the topic or going away never touches the
/// message flow. The broker counts drops for every client: a rise says some queue overflowed,
/// perhaps the gateway's (README: the broker settings that keep it from doing so).
async fn watch_broker_drops(
    config: Arc<GatewayConfig>,
    broker: BrokerAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    stats: Arc<GatewayStats>,
) {
    let client_id = format!("{}-sys", config.client_id);
    let topic = config.broker_drops_topic.as_str();
    let mut last: Option<u64> = None;
    loop {
        let (client, mut events) = mqtt::client(
            &settings(&config, &broker, &client_id, tls.clone(), false),
            8,
        );
        loop {
            match events.poll().await {
                Ok(Event::Connected) => {
                    if client.try_subscribe(topic).is_err() {
                        break;
                    }
                }
                Ok(Event::Subscribed(Err(codes))) => {
                    tracing::info!(gateway = %config.name(), %topic, "the broker does not report dropped messages here ({codes}); not watching them (gateway.broker-drops-topic)");
                    client.try_disconnect();
                    return;
                }
                Ok(Event::Message(m)) => {
                    let Some(now) = std::str::from_utf8(m.payload())
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    else {
                        continue;
                    };
                    stats.broker_dropped.store(now, Ordering::Relaxed);
                    match last {
                        Some(before) if now > before => tracing::warn!(
                            gateway = %config.name(),
                            "the broker dropped {} more messages (now {now} since it started): a \
                             client's queue overflowed; if it was the gateway's, messages were lost \
                             before judgement (raise the broker's max_queued_messages; README: \
                             \"Each device gets its share\")",
                            now - before
                        ),
                        None if now > 0 => tracing::info!(
                            gateway = %config.name(),
                            "the broker has dropped {now} messages since it started"
                        ),
                        _ => {}
                    }
                    last = Some(now);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Whether the broker lets a client in with no credentials and, over TLS, no client
/// certificate: `None` when the probe could not tell (the broker went away, a timeout).
pub async fn accepts_anonymous(config: &GatewayConfig, within: Duration) -> Option<bool> {
    let (broker, _) = config.validate().ok()?;
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(
            crate::tls::client_config(&t.ca, None, None, "gateway.tls.").ok()?,
        )),
        None => None,
    };
    let client_id = format!("{}-anonymous-probe", config.client_id);
    let mut settings = settings(config, &broker, &client_id, tls, false);
    settings.credentials = None;
    let (client, mut events) = mqtt::client(&settings, 4);
    let answer = tokio::time::timeout(within, async {
        loop {
            match events.poll().await {
                Ok(Event::Connected) => return Some(true),
                Ok(_) => {}
                // Refused at CONNECT, or no handshake without a certificate.
                Err(e) if e.fatal() => return Some(false),
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    client.try_disconnect();
    answer
}

async fn warn_if_anonymous(config: &GatewayConfig, broker: &BrokerAddr) {
    match accepts_anonymous(config, Duration::from_secs(10)).await {
        Some(true) => tracing::warn!(
            gateway = %config.name(),
            "the broker at {}:{} accepts clients without credentials: unless its ACL confines \
             each client to its own device's topics, anyone can publish as any device, and \
             straight to the twin and alert topics (README: \"The broker's ACL\"; \
             examples/mosquitto-acl)",
            broker.host,
            broker.port
        ),
        Some(false) => tracing::info!(
            gateway = %config.name(),
            "the broker refuses clients without credentials"
        ),
        None => tracing::debug!(
            gateway = %config.name(),
            "could not tell whether the broker accepts clients without credentials"
        ),
    }
}

/// Publishes `messages` (topic, payload) with QoS 1 on a short-lived connection of its own
/// (client id `<client-id>-cli`, clean session) and returns once the broker has acknowledged
/// every one: what `twinguard quarantine release|replay` forward with. Fails as a whole after
/// `timeout`, naming the broker, or when the broker refuses one (MQTT 5).
pub async fn publish_all(
    config: &GatewayConfig,
    messages: Vec<(String, Vec<u8>)>,
    timeout: Duration,
) -> Result<(), GatewayError> {
    let (broker, _) = config
        .validate()
        .map_err(|e| GatewayError::Config(e.into()))?;
    let client_id = format!("{}-cli", config.client_id);
    let settings = settings(config, &broker, &client_id, tls_of(config)?, false);
    let expected = messages.len();
    let (client, mut events) = mqtt::client(&settings, expected.max(1) + 8);
    let fail = |cause: String| GatewayError::Connect {
        broker: config.broker.clone(),
        cause,
    };
    let work = async {
        let mut acked = 0usize;
        let mut sent = false;
        while acked < expected {
            match events.poll().await.map_err(|e| fail(e.explain()))? {
                Event::Connected if !sent => {
                    sent = true;
                    for (topic, payload) in &messages {
                        client
                            .try_publish(topic.clone(), payload.clone())
                            .map_err(|e| {
                                fail(format!("cannot queue a publish to {topic:?}: {e}"))
                            })?;
                    }
                }
                Event::Acked(_, Ok(())) => acked += 1,
                Event::Acked(_, Err(why)) => {
                    client.try_disconnect();
                    return Err(fail(format!("the broker refused a publish: {why}")));
                }
                _ => {}
            }
        }
        client.try_disconnect();
        Ok(())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        fail(format!(
            "not every publish was acknowledged within {timeout:?}"
        ))
    })?
}

/// The worker a device's messages go to: the same one every time within a process, and not
/// predictable from its id from outside (`seed` is random per gateway), so nobody can pick ids
/// that share a worker with a victim.
fn shard_of(seed: &std::collections::hash_map::RandomState, device: &str, shards: usize) -> usize {
    // The remainder is below `shards`, a usize.
    (seed.hash_one(device) % shards as u64) as usize
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // The bookkeeping stays consistent under a panic elsewhere: take it as is.
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the message workers share.
struct Worker {
    judge: Judge,
    /// How far the connection's acknowledgements have gone.
    acked: Arc<Acked>,
    /// The arrival number of the first message whose quarantine write failed on this
    /// connection (`u64::MAX`: none). No message that arrived after it is judged on this
    /// connection, so none changes policies' state before the broker delivers it again.
    failed_at: AtomicU64,
    alerts_topic: Option<String>,
    /// `max-message-bytes`: a larger payload is held back unjudged.
    max_message_bytes: usize,
    stats: Arc<GatewayStats>,
    process: Option<opentelemetry::metrics::BoundHistogram<f64>>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    gateway: String,
}

/// The only task that hands publishes to the client (see `Pending`).
async fn publisher(
    client: Client,
    pending: Arc<Mutex<Pending>>,
    mut rx: mpsc::Receiver<Out>,
    stats: Arc<GatewayStats>,
) {
    while let Some(out) = rx.recv().await {
        lock(&pending).queued.push_back(out.then);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if client
            .publish(out.topic, out.payload, out.properties)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The acknowledgements a connection has sent: every message that arrived before `next` (its
/// arrival number) is acknowledged.
#[derive(Debug, Default)]
struct Acked {
    next: AtomicU64,
    moved: tokio::sync::Notify,
}

impl Acked {
    /// Waits until every message that arrived before `seq` is acknowledged, or `within`.
    async fn through(&self, seq: u64, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.next.load(Ordering::Acquire) >= seq {
                    return;
                }
                moved.await;
            }
        })
        .await
        .is_ok()
    }
}

/// How long a worker whose quarantine write failed waits for the messages before it to be
/// acknowledged before it tears the connection down, and how long a stopping gateway waits
/// for the messages it has taken: their forwards are on their way, and cutting them short
/// would bring them back as replays.
const DRAIN: Duration = Duration::from_secs(10);

/// How [`Gateway::connection`] ended without an error.
enum Ended {
    /// `shutdown` resolved: the gateway stops.
    Stopped,
    /// A DISCONNECT of ours went out (a worker or the store failed): reconnect.
    Disconnected,
}

/// A connection draining after `shutdown`: every message before `taken` is acknowledged, or
/// [`DRAIN`] passes; then a DISCONNECT goes out behind those acknowledgements.
struct Stopping {
    taken: u64,
    deadline: tokio::time::Instant,
    disconnect_sent: bool,
}

impl Stopping {
    /// How often the drain looks at the acknowledgements while nothing else happens.
    const TICK: Duration = Duration::from_millis(10);
    /// How long the DISCONNECT may take to go out before the connection is dropped anyway.
    const DISCONNECT: Duration = Duration::from_secs(2);

    fn new(taken: u64) -> Self {
        Self {
            taken,
            deadline: tokio::time::Instant::now() + DRAIN,
            disconnect_sent: false,
        }
    }

    /// Sends the DISCONNECT once the drain is over; true when the connection is to be dropped
    /// without waiting for it any longer.
    fn check(&mut self, acked: &Acked, client: &Client, gateway: &str) -> bool {
        let now = tokio::time::Instant::now();
        if self.disconnect_sent {
            return now >= self.deadline;
        }
        let done = acked.next.load(Ordering::Acquire);
        if done < self.taken && now < self.deadline {
            return false;
        }
        if done < self.taken {
            tracing::warn!(gateway = %gateway, "stopping: {} messages taken were not acknowledged within {DRAIN:?}; the broker redelivers them to the next session (replay-guard may hold those the twin already has as replays)", self.taken - done);
        }
        // Queued behind the acknowledgements, so it goes out after them.
        client.try_disconnect();
        self.disconnect_sent = true;
        self.deadline = now + Self::DISCONNECT;
        false
    }
}

/// Sends acknowledgements in arrival order: one that is ready early waits for those before it.
/// With a state file, a batch of due acknowledgements first waits for one commit covering the
/// state their judging changed (it was queued before they reached this task). `acked` follows
/// how far it has gone.
async fn acknowledger(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<(u64, Received)>,
    state: Option<crate::state::StateDb>,
    acked: Arc<Acked>,
) {
    let mut next = 0_u64;
    let mut ready = BTreeMap::new();
    let mut due = Vec::new();
    // Changes the last awaited commit covered: with none since, there is nothing to wait for.
    let mut covered = 0;
    while let Some((seq, input)) = rx.recv().await {
        ready.insert(seq, input);
        while let Ok((seq, input)) = rx.try_recv() {
            ready.insert(seq, input);
        }
        while let Some(input) = ready.remove(&next) {
            due.push(input);
            next += 1;
        }
        if due.is_empty() {
            continue;
        }
        if let Some(db) = state.as_ref().filter(|db| db.queued() != covered) {
            // Read before the barrier is sent: the barrier covers at least this many.
            covered = db.queued();
            let (done, committed) = tokio::sync::oneshot::channel();
            db.after_commit(move |result| {
                let _ = done.send(result);
            });
            // A failed commit is logged by the writer; the state is whole in memory, so the
            // messages are acknowledged (see `crate::state`).
            let _ = committed.await;
        }
        for input in due.drain(..) {
            if client.ack(&input).await.is_err() {
                return;
            }
        }
        acked.next.store(next, Ordering::Release);
        acked.moved.notify_waiters();
    }
}

/// Messages a shard takes off its queue at once: judged in order in one trip to the blocking
/// pool, so a busy shard pays the hand-over (two thread wake-ups) per batch, not per message.
const BATCH: usize = 64;

/// Judges one worker's messages in arrival order (per-device state sees each device's order).
async fn shard(
    w: Arc<Worker>,
    client: Client,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    out: mpsc::Sender<Out>,
    acks: mpsc::UnboundedSender<(u64, Received)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while jobs.recv_many(&mut batch, BATCH).await > 0 {
        if judge(&w, &mut batch, &out, &acks).await.is_err() {
            // The client is gone or the store failed: stop acknowledging; the connection is
            // torn down and the broker redelivers. After a failed store write, the messages
            // judged before it finish first (no more are judged meanwhile).
            let failed_at = w.failed_at.load(Ordering::Acquire);
            if failed_at != u64::MAX && !w.acked.through(failed_at, DRAIN).await {
                tracing::warn!(gateway = %w.gateway, "the messages before the one the quarantine store failed were not all acknowledged within {DRAIN:?}; tearing the connection down anyway (those whose forwards were cut short come back, and replay-guard may hold them as replays)");
            }
            client.disconnect().await;
            return;
        }
    }
}

/// The connection is going down: nothing more can be acknowledged on it.
struct Teardown;

/// What acting on a message's outcome needs besides the judgement.
struct Prepared {
    seq: u64,
    input: Received,
    destination: Option<String>,
}

/// A job as the judge flow takes it, and what acting on its outcome needs.
fn prepare(w: &Worker, job: Job) -> (Prepared, Asked) {
    let Job {
        seq,
        mut input,
        route,
    } = job;
    if input.payload().len() > w.max_message_bytes {
        let (mut message, reason) = oversized(
            w.max_message_bytes,
            input.payload(),
            input.topic().into_owned(),
            &route,
        );
        message.attributes = input.user_properties().to_vec();
        // Its bytes are not needed for the acknowledgement, which may wait for those before it.
        input.drop_payload();
        tracing::warn!(device = %message.device_id, topic = %message.topic, "{reason}; quarantined");
        // No destination: the record holds a truncated payload, which must never be released
        // to a twin as if it were the message.
        let prepared = Prepared {
            seq,
            input,
            destination: None,
        };
        return (prepared, (seq, message, Some(reason), None));
    }
    let topic = input.topic().into_owned();
    let (mut message, destination) = match &route {
        Ok(route) => (
            Message::new(
                route.device.clone(),
                topic,
                route.content_type,
                input.payload_shared(),
            ),
            Some(route.destination.clone()),
        ),
        Err(_) => (
            Message::new("", topic, ContentType::Binary, input.payload_shared()),
            None,
        ),
    };
    message.attributes = input.user_properties().to_vec();
    let asked = (seq, message, route.err(), destination.clone());
    let prepared = Prepared {
        seq,
        input,
        destination,
    };
    (prepared, asked)
}

/// Judges `jobs` (emptied) in order and acts on each outcome: forwards, alerts, acknowledgements.
async fn judge(
    w: &Arc<Worker>,
    jobs: &mut Vec<Job>,
    out: &mpsc::Sender<Out>,
    acks: &mpsc::UnboundedSender<(u64, Received)>,
) -> Result<(), Teardown> {
    let (prepared, mut asked): (Vec<Prepared>, Vec<Asked>) =
        jobs.drain(..).map(|job| prepare(w, job)).unzip();
    let mut prepared = prepared.into_iter();
    while !asked.is_empty() {
        let (judged, rest) = settle(w, asked).await?;
        asked = rest;
        // `judged` first: zip stops at its end without taking the next of `prepared`. It
        // ends short when a store commit failed: `account` tears down at that one.
        for ((message, judgement), p) in judged.into_iter().zip(prepared.by_ref()) {
            // A failed store write was published to the other workers by `settle`.
            if account(w, &judgement).is_err() {
                return Err(Teardown);
            }
            act(w, p, message, judgement, out, acks).await?;
        }
    }
    Ok(())
}

async fn act(
    w: &Worker,
    p: Prepared,
    message: Message,
    judgement: Judgement,
    out: &mpsc::Sender<Out>,
    acks: &mpsc::UnboundedSender<(u64, Received)>,
) -> Result<(), Teardown> {
    let Prepared {
        seq,
        input,
        destination,
    } = p;
    let Judgement {
        outcome, events, ..
    } = judgement;

    if let Some(alerts_topic) = &w.alerts_topic {
        for event in &events {
            out.send(Out::alert(alerts_topic, event))
                .await
                .map_err(|_| Teardown)?;
        }
    }

    match destination {
        // Held back (quarantined, or placed by no input): the record is durable.
        Some(destination) if outcome.action.forwards() => {
            let properties = input.forwarded_properties();
            let generation = outcome.generation;
            out.send(Out {
                topic: destination.clone(),
                payload: outcome.payload,
                properties,
                then: Some(Forward {
                    seq,
                    input,
                    message,
                    destination,
                    generation,
                }),
            })
            .await
            .map_err(|_| Teardown)
        }
        _ => acks.send((seq, input)).map_err(|_| Teardown),
    }
}

/// A message over `max-message-bytes`, as it is held back: its first `limit` bytes (a record
/// never holds more than the gateway would judge), as binary, with a reason that names its
/// size, the limit, the SHA-256 of the whole payload and where it was going.
pub(crate) fn oversized(
    limit: usize,
    payload: &[u8],
    topic: String,
    route: &Result<Route, String>,
) -> (Message, String) {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(payload));
    let (device, going) = match route {
        Ok(r) => (
            r.device.clone(),
            format!(" (its twin topic: {:?})", r.destination),
        ),
        Err(_) => (String::new(), String::new()),
    };
    let reason = format!(
        "gateway: message of {} bytes exceeds gateway.max-message-bytes = {limit}: not judged; \
         stored truncated to its first {limit} bytes, sha256 of the whole {digest}, so it \
         cannot be released{going}",
        payload.len()
    );
    let message = Message::new(
        device,
        topic,
        ContentType::Binary,
        payload[..limit].to_vec(),
    );
    (message, reason)
}

/// A message for the judge flow: its arrival number, the message, why it is held back
/// unjudged if it is (oversized, placed by no input), and its destination.
type Asked = (u64, Message, Option<String>, Option<String>);

/// How long one trip to the blocking pool judges before it hands back what it has: a slow
/// policy (up to its deadline per message) must not hold back the outcomes of the messages
/// judged before it in the batch.
const TRIP: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs the judge flow on the blocking pool for `asked`, in order (a policy may run up to its
/// deadline, and the tasks that drive the connection must not wait behind it): evaluation,
/// alert sinks, and the store's commit when a message is held back. Returns the judgements
/// and what is left unjudged: the trip ends after [`TRIP`], or at a failed commit (the
/// messages after it are not judged, so their state is not changed, and `account` tears the
/// connection down, the rule in [`crate::judge`]: the broker redelivers them).
async fn settle(
    w: &Arc<Worker>,
    asked: Vec<Asked>,
) -> Result<(Vec<(Message, Judgement)>, Vec<Asked>), Teardown> {
    let worker = Arc::clone(w);
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let mut judged = Vec::with_capacity(asked.len());
        let mut asked = asked.into_iter();
        for (seq, message, reason, destination) in asked.by_ref() {
            // A store write failed on this connection: what arrived after that message is
            // left for the broker to deliver again, its state untouched. What arrived before
            // it is still judged: it can be acknowledged.
            if seq > worker.failed_at.load(Ordering::Acquire) {
                return (judged, Vec::new());
            }
            let judgement = judge_one(&worker, &message, reason, destination.as_deref());
            let failed = matches!(judgement.stored, Stored::Failed(_));
            judged.push((message, judgement));
            if failed {
                // Said here, not once the outcome is back on the connection's task: the other
                // workers stop judging what arrived after it from this instant.
                worker.failed_at.fetch_min(seq, Ordering::AcqRel);
                return (judged, Vec::new());
            }
            if started.elapsed() >= TRIP {
                break;
            }
        }
        (judged, asked.collect())
    })
    .await
    // Only a runtime shutting down cancels the task: there is no outcome to act on.
    .map_err(|_| Teardown)
}

fn judge_one(
    worker: &Worker,
    message: &Message,
    reason: Option<String>,
    destination: Option<&str>,
) -> Judgement {
    let started = std::time::Instant::now();
    let span = worker
        .tracer
        .as_ref()
        .and_then(|t| trace::MessageSpan::start(t, &worker.gateway, message));
    let judgement = {
        let _logs = span.as_ref().map(trace::MessageSpan::enter_logs);
        match reason {
            None => worker.judge.judge(message, destination),
            Some(reason) => worker.judge.hold(message, reason, destination),
        }
    };
    if let Some(h) = &worker.process {
        h.record(started.elapsed().as_secs_f64());
    }
    if let Some(span) = span {
        span.end(&judgement, destination);
    }
    judgement
}

/// Message spans, built from the outcome's trace after the judge flow (the core records no
/// spans: its per-policy times are in the trace already, so an unsampled message costs the
/// sampler's decision and nothing more).
mod trace {
    use std::time::SystemTime;

    use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _};
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::trace::{SdkTracer, Span};

    use crate::judge::{Judgement, Stored};
    use crate::{Message, Verdict};

    pub(super) struct MessageSpan {
        tracer: SdkTracer,
        root: Span,
        started: SystemTime,
        trace_id: String,
    }

    impl MessageSpan {
        /// The message's span, if the sampler keeps it.
        pub(super) fn start(tracer: &SdkTracer, gateway: &str, message: &Message) -> Option<Self> {
            let started = SystemTime::now();
            // Sampled first, named and described after: an unsampled message (most of them)
            // costs no string copy or attribute list.
            let mut root = tracer
                .span_builder("process")
                .with_kind(SpanKind::Consumer)
                .with_start_time(started)
                .start(tracer);
            let context = root.span_context().clone();
            if !context.is_sampled() {
                return None;
            }
            root.update_name(format!("process {}", message.topic));
            root.set_attributes([
                KeyValue::new("messaging.system", "mqtt"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", message.topic.clone()),
                KeyValue::new(
                    "messaging.message.body.size",
                    i64::try_from(message.payload.len()).unwrap_or(i64::MAX),
                ),
                KeyValue::new("twinguard.gateway", gateway.to_owned()),
                KeyValue::new("twinguard.device", message.device_id.clone()),
            ]);
            let trace_id = context.trace_id().to_string();
            Some(Self {
                tracer: tracer.clone(),
                root,
                started,
                trace_id,
            })
        }

        /// Log lines written while this is entered name the trace.
        pub(super) fn enter_logs(&self) -> tracing::span::EnteredSpan {
            tracing::info_span!("message", trace_id = %self.trace_id).entered()
        }

        /// A child per policy step (laid end to end from the start: the trace's times are
        /// consecutive), then the forward or the quarantine, then the end of the whole.
        pub(super) fn end(mut self, judgement: &Judgement, destination: Option<&str>) {
            let parent = Context::new().with_remote_span_context(self.root.span_context().clone());
            let mut at = self.started;
            for step in &judgement.outcome.trace {
                let end = at + step.elapsed;
                let mut attrs = vec![
                    KeyValue::new("twinguard.policy.name", step.policy.to_string()),
                    KeyValue::new("twinguard.policy.version", step.version.to_string()),
                    KeyValue::new("twinguard.verdict", step.verdict.name()),
                    KeyValue::new(
                        "twinguard.fuel",
                        i64::try_from(step.fuel_used).unwrap_or(i64::MAX),
                    ),
                ];
                if let Verdict::Fault(f) = &step.verdict {
                    attrs.push(KeyValue::new("error.type", f.code()));
                }
                let mut span = self
                    .tracer
                    .span_builder(format!("policy {}", step.policy))
                    .with_kind(SpanKind::Internal)
                    .with_start_time(at)
                    .with_attributes(attrs)
                    .start_with_context(&self.tracer, &parent);
                span.end_with_timestamp(end);
                at = end;
            }
            let now = SystemTime::now().max(at);
            let (name, attrs) = match (&judgement.stored, judgement.forward()) {
                (Stored::Record(id), _) => (
                    "quarantine",
                    vec![KeyValue::new(
                        "twinguard.quarantine.record",
                        i64::try_from(*id).unwrap_or(i64::MAX),
                    )],
                ),
                (Stored::Failed(e), _) => (
                    "quarantine",
                    vec![KeyValue::new("error.type", crate::error_chain(e))],
                ),
                (Stored::Nothing, Some(payload)) => (
                    "forward",
                    vec![
                        KeyValue::new(
                            "messaging.destination.name",
                            destination.unwrap_or_default().to_owned(),
                        ),
                        KeyValue::new(
                            "messaging.message.body.size",
                            i64::try_from(payload.len()).unwrap_or(i64::MAX),
                        ),
                    ],
                ),
                (Stored::Nothing, None) => ("held", Vec::new()),
            };
            let mut last = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(at)
                .with_attributes(attrs)
                .start_with_context(&self.tracer, &parent);
            last.end_with_timestamp(now);
            let outcome = &judgement.outcome;
            self.root
                .set_attribute(KeyValue::new("twinguard.action", outcome.action.name()));
            self.root.set_attribute(KeyValue::new(
                "twinguard.generation",
                i64::try_from(outcome.generation).unwrap_or(i64::MAX),
            ));
            self.root.end_with_timestamp(now);
        }
    }
}

/// Counts what the flow did; a failed commit is a teardown.
fn account(w: &Worker, judgement: &Judgement) -> Result<(), Teardown> {
    let alerts = judgement.outcome.alerts.len() as u64;
    if alerts > 0 {
        w.stats.alerts.fetch_add(alerts, Ordering::Relaxed);
    }
    match judgement.stored {
        Stored::Record(_) => {
            w.stats.quarantined.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Stored::Failed(_) => {
            w.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            Err(Teardown)
        }
        _ => Ok(()),
    }
}

/// A forward the broker refused: kept in quarantine with the broker's reason, then
/// acknowledged.
async fn refused(
    w: Arc<Worker>,
    client: Client,
    f: Forward,
    why: String,
    acks: mpsc::UnboundedSender<(u64, Received)>,
) {
    tracing::warn!(destination = %f.destination, "the broker refused the forward: {why}; quarantined");
    let reason = format!(
        "gateway: the broker refused the forward to {:?}: {why}",
        f.destination
    );
    let outcome = Outcome::held(&f.message, reason, f.generation);
    let worker = Arc::clone(&w);
    let Forward {
        seq,
        input,
        message,
        destination,
        ..
    } = f;
    let judged = tokio::task::spawn_blocking(move || {
        worker.judge.settle(&message, outcome, Some(&destination))
    })
    .await;
    match judged {
        Ok(judgement) if account(&w, &judgement).is_ok() => {
            let _ = acks.send((seq, input));
        }
        _ => client.disconnect().await,
    }
}
