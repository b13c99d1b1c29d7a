//! The MQTT gateway behind `twinguard serve`: reads device topics on a broker, runs every
//! message through the policies, and either forwards it to its twin topic or commits it to
//! the quarantine store — acknowledging the device's message only once that outcome is
//! durable (at-least-once: nothing lost, duplicates possible after a crash).
//!
//! How the acknowledgement is tied to durability, on one MQTT connection with manual acks and a
//! persistent session (`clean_session = false`, stable client id):
//! - forwarded: the input is acknowledged when the broker acknowledges (PUBACK) the output;
//! - quarantined: the input is acknowledged after the store's commit returns;
//! - on any connection error the connection is dropped whole, with every pending
//!   acknowledgement: the broker redelivers what was not acknowledged to the new connection.
//!   That costs duplicates, never a loss, and never acknowledges a message whose outcome was
//!   not durable.

mod config;
mod template;

pub use config::{BrokerAddr, GatewayConfig, Input, InputConfig, QuarantineConfig, TlsConfig};
pub use template::Template;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::alerts::{Alerts, SecurityEvent};
use crate::store::QuarantineStore;
use crate::{Action, Message, Outcome, Runtime};

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
    /// Security events raised.
    pub alerts: AtomicU64,
    /// Connections made (the first included).
    pub connections: AtomicU64,
    /// Store commits that failed (the message stays unacknowledged and comes back).
    pub store_errors: AtomicU64,
}

/// A gateway, ready to run.
pub struct Gateway {
    runtime: Runtime,
    config: GatewayConfig,
    broker: BrokerAddr,
    inputs: Arc<Vec<Input>>,
    store: QuarantineStore,
    alerts: Option<Alerts>,
    tls: Option<Arc<rustls::ClientConfig>>,
    stats: Arc<GatewayStats>,
}

/// Forwards waiting for the broker's PUBACK, on one connection.
#[derive(Default)]
struct Pending {
    /// One entry per publish handed to the client, in order: the input to acknowledge once
    /// that publish is acknowledged (`None` for alerts, which acknowledge nothing).
    queued: VecDeque<Option<Publish>>,
    /// Publishes on the wire, by packet id.
    by_pkid: HashMap<u16, Option<Publish>>,
}

impl Gateway {
    /// Validates the configuration and reads the TLS material; nothing touches the network.
    pub fn new(
        runtime: Runtime,
        config: GatewayConfig,
        store: QuarantineStore,
        alerts: Option<Alerts>,
    ) -> Result<Self, GatewayError> {
        let (broker, inputs) = config.validate().map_err(GatewayError::Config)?;
        let tls = match &config.tls {
            Some(tls) => Some(Arc::new(
                tls::client_config(tls).map_err(GatewayError::Config)?,
            )),
            None => None,
        };
        Ok(Self {
            runtime,
            config,
            broker,
            inputs: Arc::new(inputs),
            store,
            alerts,
            tls,
            stats: Arc::new(GatewayStats::default()),
        })
    }

    /// The gateway's counters.
    pub fn stats(&self) -> Arc<GatewayStats> {
        Arc::clone(&self.stats)
    }

    fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(&self.config.client_id, &self.broker.host, self.broker.port);
        o.set_keep_alive(self.config.keep_alive())
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(self.config.inflight)
            // Payloads up to 1 MiB each way; schema policies bound them further.
            .set_max_packet_size(1 << 20, 1 << 20);
        if let (Some(u), p) = (&self.config.username, &self.config.password) {
            o.set_credentials(u, p.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::clone(tls))));
        }
        o
    }

    /// Runs until `shutdown` resolves. Reconnects with backoff; returns an error only for a
    /// first connection that cannot succeed by retrying (TLS or refused credentials).
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), GatewayError> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut ever_connected = false;
        loop {
            let (client, mut eventloop) = AsyncClient::new(self.options(), 256);
            eventloop.set_network_options(network_options());
            let closer = client.clone();
            let outcome = tokio::select! {
                () = &mut shutdown => {
                    let _ = closer.try_disconnect();
                    return Ok(());
                }
                r = self.connection(client, eventloop, &mut ever_connected) => r,
            };
            match outcome {
                Err(e) if !ever_connected && fatal(&e) => {
                    return Err(GatewayError::Connect {
                        broker: self.config.broker.clone(),
                        cause: explain(&e),
                    })
                }
                Err(e) => {
                    tracing::warn!(broker = %self.config.broker, "connection lost: {}; reconnecting in {backoff:?}", explain(&e))
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

    /// One connection, until it fails. Every pending acknowledgement dies with it.
    async fn connection(
        &self,
        client: AsyncClient,
        mut eventloop: EventLoop,
        ever_connected: &mut bool,
    ) -> Result<(), ConnectionError> {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (tx, rx) = mpsc::unbounded_channel::<Publish>();
        let worker = tokio::spawn(process(
            self.worker(),
            client.clone(),
            Arc::clone(&pending),
            rx,
        ));
        // The worker ends with the channel; abort it if the connection ends first.
        let _guard = AbortOnDrop(worker);
        // Acknowledgements go through their own task: this task drives the event loop, so it
        // must not wait for room in the client's request queue, and a full queue must not
        // drop an acknowledgement either.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Publish>();
        let acker = client.clone();
        let _acks = AbortOnDrop(tokio::spawn(async move {
            while let Some(input) = ack_rx.recv().await {
                if acker.ack(&input).await.is_err() {
                    return;
                }
            }
        }));
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    *ever_connected = true;
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(broker = %self.config.broker, "connected");
                    for input in self.inputs.iter() {
                        // Subscriptions outlive the connection in a persistent session;
                        // renewing them is harmless and covers a broker that lost them.
                        if client
                            .try_subscribe(input.filter.clone(), QoS::AtLeastOnce)
                            .is_err()
                        {
                            return Err(ConnectionError::RequestsDone);
                        }
                    }
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    tracing::info!(broker = %self.config.broker, codes = ?ack.return_codes, "subscribed");
                }
                Event::Incoming(Packet::Publish(p)) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    if tx.send(p).is_err() {
                        return Err(ConnectionError::RequestsDone);
                    }
                }
                Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => {
                    let mut p = lock(&pending);
                    if !p.by_pkid.contains_key(&pkid) {
                        if let Some(entry) = p.queued.pop_front() {
                            p.by_pkid.insert(pkid, entry);
                        }
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    let entry = lock(&pending).by_pkid.remove(&ack.pkid);
                    if let Some(Some(input)) = entry {
                        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        if ack_tx.send(input).is_err() {
                            return Err(ConnectionError::RequestsDone);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn worker(&self) -> Worker {
        Worker {
            runtime: self.runtime.clone(),
            inputs: Arc::clone(&self.inputs),
            store: self.store.clone(),
            alerts: self.alerts.clone(),
            alerts_topic: self.config.alerts_topic.clone(),
            stats: Arc::clone(&self.stats),
        }
    }
}

/// Publishes `messages` (topic, payload) with QoS 1 on a short-lived connection of its own
/// (client id `<client-id>-cli`, clean session) and returns once the broker has acknowledged
/// every one: what `twinguard quarantine release|replay` forward with. Fails as a whole after
/// `timeout`, naming the broker.
pub async fn publish_all(
    config: &GatewayConfig,
    messages: Vec<(String, Vec<u8>)>,
    timeout: Duration,
) -> Result<(), GatewayError> {
    let (broker, _) = config.validate().map_err(GatewayError::Config)?;
    let mut o = MqttOptions::new(
        format!("{}-cli", config.client_id),
        &broker.host,
        broker.port,
    );
    o.set_keep_alive(config.keep_alive())
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), p) = (&config.username, &config.password) {
        o.set_credentials(u, p.clone().unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        let tls = tls::client_config(tls).map_err(GatewayError::Config)?;
        o.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(tls))));
    }
    let expected = messages.len();
    let (client, mut eventloop) = AsyncClient::new(o, expected.max(1) + 8);
    eventloop.set_network_options(network_options());
    let fail = |cause: String| GatewayError::Connect {
        broker: config.broker.clone(),
        cause,
    };
    let work = async {
        let mut acked = 0usize;
        let mut sent = false;
        while acked < expected {
            match eventloop.poll().await.map_err(|e| fail(explain(&e)))? {
                Event::Incoming(Packet::ConnAck(_)) if !sent => {
                    sent = true;
                    for (topic, payload) in &messages {
                        client
                            .try_publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                            .map_err(|e| {
                                fail(format!("cannot queue a publish to {topic:?}: {e}"))
                            })?;
                    }
                }
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        let _ = client.try_disconnect();
        Ok(())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        fail(format!(
            "not every publish was acknowledged within {timeout:?}"
        ))
    })?
}

/// No Nagle: an acknowledgement is a 4-byte write, and delaying it behind the peer's delayed
/// ACK stalls the whole in-flight window (measured: 125 messages/s instead of thousands).
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
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

/// What the message worker needs.
struct Worker {
    runtime: Runtime,
    inputs: Arc<Vec<Input>>,
    store: QuarantineStore,
    alerts: Option<Alerts>,
    alerts_topic: Option<String>,
    stats: Arc<GatewayStats>,
}

/// Judges messages in arrival order (per-device state sees each device's order).
async fn process(
    w: Worker,
    client: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    mut rx: mpsc::UnboundedReceiver<Publish>,
) {
    while let Some(input) = rx.recv().await {
        if handle(&w, &client, &pending, input).await.is_err() {
            // The client is gone or the store failed: stop acknowledging; the connection is
            // torn down and the broker redelivers.
            let _ = client.disconnect().await;
            return;
        }
    }
}

async fn handle(
    w: &Worker,
    client: &AsyncClient,
    pending: &Mutex<Pending>,
    input: Publish,
) -> Result<(), ()> {
    let topic = input.topic.clone();
    let fitted = w.inputs.iter().find_map(|i| {
        if !i.delivers.matches(&topic) {
            return None;
        }
        let caps = i.template.capture(&topic)?;
        Some((i, caps))
    });
    let (message, destination, outcome) = match fitted {
        Some((i, caps)) => {
            let device = caps
                .iter()
                .find(|(n, _)| n == "device")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let destination = i.output.fill(&caps);
            let message = Message::new(
                device,
                topic.clone(),
                i.content_type,
                input.payload.to_vec(),
            );
            // On the blocking pool: a policy may run up to its deadline, and the tasks that
            // drive the connection must not wait behind it.
            let outcome = w.runtime.evaluate_async(message.clone()).await;
            (message, destination, outcome)
        }
        None => {
            let message = Message::new(
                "",
                topic.clone(),
                crate::ContentType::Binary,
                input.payload.to_vec(),
            );
            let reason = format!("gateway: topic {topic:?} fits no input template");
            let outcome = Outcome {
                action: Action::Quarantine {
                    policy: None,
                    reason,
                },
                payload: message.payload.clone(),
                redacted: false,
                alerts: Vec::new(),
                trace: Vec::new(),
                generation: w.runtime.policy_set().generation(),
            };
            (message, None, outcome)
        }
    };

    if !outcome.alerts.is_empty() {
        w.stats
            .alerts
            .fetch_add(outcome.alerts.len() as u64, Ordering::Relaxed);
        // The dispatcher rate-limits repeats; what it lets through also goes to the topic.
        let events = match &w.alerts {
            Some(alerts) => alerts.handle(&message, &outcome),
            None => SecurityEvent::from_outcome(&message, &outcome),
        };
        if let Some(alerts_topic) = &w.alerts_topic {
            for event in &events {
                lock(pending).queued.push_back(None);
                client
                    .publish(
                        alerts_topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        event.to_json_bytes(),
                    )
                    .await
                    .map_err(|_| ())?;
            }
        }
    }

    match (&outcome.action, destination) {
        (Action::Quarantine { .. }, destination) | (_, destination @ None) => {
            let store = w.store.clone();
            let dest = destination.clone();
            let committed =
                tokio::task::spawn_blocking(move || store.put(&message, &outcome, dest.as_deref()))
                    .await;
            match committed {
                Ok(Ok(_)) => {
                    w.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                    client.ack(&input).await.map_err(|_| ())
                }
                Ok(Err(e)) => {
                    w.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("quarantine store: {e}; the message stays unacknowledged and will be redelivered");
                    Err(())
                }
                Err(e) => {
                    w.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("quarantine store task failed: {e}");
                    Err(())
                }
            }
        }
        (_, Some(destination)) => {
            lock(pending).queued.push_back(Some(input));
            client
                .publish(destination, QoS::AtLeastOnce, false, outcome.payload)
                .await
                .map_err(|_| ())
        }
    }
}

/// Whether a failed first connection is worth retrying.
fn fatal(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::Tls(_) | ConnectionError::ConnectionRefused(_) => true,
        // The broker accepted the TCP connection and hung up on the CONNECT: it expects TLS
        // (or speaks something else). A broker that is down refuses the TCP connection instead.
        other => hung_up(other),
    }
}

/// Whether the peer closed or reset the connection, however deep the client wrapped it.
fn hung_up(e: &ConnectionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            );
        }
        cause = c.source();
    }
    false
}

fn explain(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Tls(t) => format!(
            "TLS: {t} (check gateway.tls.ca is the CA that signed the broker's certificate, \
             the broker's name matches its certificate, and the listener speaks TLS)"
        ),
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection: {code:?} (check username, password, client id)"
            )
        }
        other if hung_up(other) => format!(
            "{other} (the broker hung up on the MQTT CONNECT: a TLS listener does this to a plain \
             client; use mqtts:// with [gateway.tls])"
        ),
        other => other.to_string(),
    }
}

mod tls {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::TlsConfig;

    /// A rustls client config from PEM files; the error names the file.
    pub(super) fn client_config(c: &TlsConfig) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&c.ca)
            .map_err(|e| format!("gateway.tls.ca {}: {e}", c.ca.display()))?;
        for ca in cas {
            let ca = ca.map_err(|e| format!("gateway.tls.ca {}: {e}", c.ca.display()))?;
            roots
                .add(ca)
                .map_err(|e| format!("gateway.tls.ca {}: {e}", c.ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "gateway.tls.ca {}: no certificate in it",
                c.ca.display()
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("gateway.tls: {e}"))?
            .with_root_certificates(roots);
        match (&c.cert, &c.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("gateway.tls.cert {}: {e}", cert.display()))?;
                if chain.is_empty() {
                    return Err(format!(
                        "gateway.tls.cert {}: no certificate in it",
                        cert.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("gateway.tls.key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("gateway.tls.cert/key: {e}"))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}
