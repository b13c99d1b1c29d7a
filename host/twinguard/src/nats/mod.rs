//! Scale-out on a NATS JetStream cluster: `serve` instances share a stream of device messages
//! by partition, so each device's messages, in order, reach exactly one instance, and each
//! partition's state travels with it.
//!
//! # How it fits together
//!
//! - Devices publish over the cluster's MQTT listener (or natively). A server mapping puts
//!   each device's subject into a partition, `plant.*.*` → `part.{{partition(12,1)}}.plant.…`,
//!   and one stream captures `part.*.>` (see README, "Scaling out").
//! - Instances lease partitions in the `<bucket>-leases` KV bucket: a key per partition,
//!   created by its owner and renewed with compare-and-set on its revision; a key the owner
//!   stops renewing expires with the bucket's age limit (`lease-ms`). Members announce
//!   themselves in the same bucket; partition `p`'s preferred owner is the `p mod n`-th member
//!   in name order, so a joining instance gets its share back and a leaving one hands over.
//! - A partition's owner reads it with an ordered consumer from the position of its
//!   checkpoint, judges each message in stream order with the one judge flow, forwards what
//!   passes (to a stream, which acknowledges it, deduplicated by `Nats-Msg-Id`), and after
//!   every `checkpoint-messages` messages or `checkpoint-ms` writes the partition's state
//!   and the stream sequence it reflects to `<bucket>-checkpoints`, with compare-and-set on
//!   the checkpoint's revision: a new owner rewrites the checkpoint when it takes over, so a
//!   former owner that has not noticed it lost the lease can commit nothing (fencing).
//! - The checkpoint is the acknowledgement: what it covers is never judged again; what came
//!   after it is judged again by whoever owns the partition next, from the same state and
//!   with the same stream times, so it gets the same decisions (at-least-once; a twin stream's
//!   duplicate window drops the repeated forwards).
//!
//! Policy-wide state (`global-*`) belongs to no device and so to no partition: it stays in
//! each instance's memory (see [`PartitionJournal`]).

mod checkpoint;
mod config;

pub use checkpoint::PartitionJournal;
pub use config::{Forward, NatsConfig, NatsTls};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, object_store, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use self::checkpoint::{Head, Mirror};
use crate::alerts::Alerts;
use crate::budget::{self, Budgets};
use crate::gateway::{self, GatewayStats, Input};
use crate::judge::{Judge, Stored};
use crate::store::QuarantineStore;
use crate::{ContentType, Message, Runtime};

/// Why the NATS front end stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// `[nats]` is invalid.
    #[error(transparent)]
    Config(#[from] crate::Invalid),
    /// The cluster could not be reached or refused the set-up (stream, buckets).
    #[error("nats: {0}")]
    Cluster(String),
    /// The cluster refused this instance for good: TLS (certificate, CA) or credentials.
    /// Retrying cannot help; the config must change.
    #[error("nats: {0}")]
    Refused(String),
}

/// The NATS JetStream front end of `serve`, ready to run. Clones share everything.
#[derive(Clone)]
pub struct NatsFront {
    shared: Arc<Shared>,
}

struct Shared {
    judge: Judge,
    config: NatsConfig,
    inputs: Vec<Input>,
    stats: Arc<GatewayStats>,
    partitions: Arc<NatsStats>,
}

/// What happened to this instance's partitions (exported as `twinguard_nats_*`, see
/// `docs/metrics.md`).
#[derive(Debug, Default)]
pub struct NatsStats {
    /// Partitions owned now.
    pub owned: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Partitions taken (at start, on a join's hand-over, or after another instance died).
    pub taken: AtomicU64,
    /// Partitions handed over to their preferred owner, with a last checkpoint.
    pub handed_back: AtomicU64,
    /// Partitions lost to another instance without a hand-over (lease expired, checkpoint
    /// rewritten): this instance was cut off or too slow to renew.
    pub fenced: AtomicU64,
    /// Partitions restarted from their last checkpoint after a forward, store write or
    /// stream read failed.
    pub restarted: AtomicU64,
}

impl NatsFront {
    /// Validates `config`; nothing touches the network. `runtime` must journal to a
    /// [`PartitionJournal`] (built with `Runtime::builder(…).journal(journal)`): that is how
    /// each partition's state is known.
    pub fn new(
        runtime: Runtime,
        config: NatsConfig,
        store: QuarantineStore,
        alerts: Option<Alerts>,
    ) -> Result<Self, NatsError> {
        let inputs = config.validate()?;
        let judge = Judge::new(runtime, store, alerts).with_source(config.instance.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                judge,
                config,
                inputs,
                stats: Arc::new(GatewayStats::default()),
                partitions: Arc::new(NatsStats::default()),
            }),
        })
    }

    /// Records every settled message in `log` too.
    /// Applies to this front end and every clone made from now on; clones made before keep
    /// what they had (the counters stay shared).
    pub fn with_decision_log(self, log: Option<crate::decision_log::DecisionLog>) -> Self {
        let s = &self.shared;
        Self {
            shared: Arc::new(Shared {
                judge: s.judge.clone().with_decision_log(log),
                config: s.config.clone(),
                inputs: s.inputs.clone(),
                stats: Arc::clone(&s.stats),
                partitions: Arc::clone(&s.partitions),
            }),
        }
    }

    /// The counters, as the MQTT gateway keeps them (`connected`: the cluster connection).
    pub fn stats(&self) -> Arc<GatewayStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.shared.config.instance
    }

    /// Partitions this instance owns now.
    pub fn partitions_owned(&self) -> u64 {
        self.shared.partitions.owned.load(Ordering::Relaxed)
    }

    /// What happened to this instance's partitions.
    pub fn partition_stats(&self) -> Arc<NatsStats> {
        Arc::clone(&self.shared.partitions)
    }

    /// Connects, sets up the stream and buckets, and shares the partitions with the other
    /// instances until `shutdown` resolves; then hands every partition back with a final
    /// checkpoint. Fails only when the first connection or the set-up fails.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NatsError> {
        let c = &self.shared.config;
        // A cluster that is starting (no JetStream leader yet) refuses the set-up for a few
        // seconds: retried for a minute, then the last reason is the error.
        let started = Instant::now();
        let cluster = loop {
            match set_up(c, &self.shared.stats).await {
                Ok(cluster) => break cluster,
                Err(e @ NatsError::Refused(_)) => return Err(e),
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    tracing::warn!(instance = %c.instance, "{e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.shared.stats.connected.store(true, Ordering::Relaxed);
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(instance = %c.instance, stream = %c.stream, partitions = c.partitions, servers = %c.servers.join(","), "nats: connected; sharing partitions");
        let mut coordinator = Coordinator {
            shared: Arc::clone(&self.shared),
            cluster: Arc::new(cluster),
            held: HashMap::new(),
            free_ticks: vec![0; c.partitions as usize],
        };
        tokio::pin!(shutdown);
        let tick = c.lease() / 3;
        loop {
            if let Err(e) = coordinator.round().await {
                tracing::warn!(instance = %c.instance, "nats: {e}; retrying in {tick:?}");
            }
            self.shared
                .partitions
                .owned
                .store(coordinator.held.len() as u64, Ordering::Relaxed);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(tick) => {}
            }
        }
        coordinator.leave().await;
        self.shared.partitions.owned.store(0, Ordering::Relaxed);
        self.shared.stats.connected.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// Publishes `messages` (twin topic, payload) to their subjects on the cluster `config`
/// names, as the front end forwards (`forward`: acknowledged by the stream, or flushed);
/// `quarantine release` and `replay` use it for records an instance kept. Fails on the first
/// publish not confirmed within `within`, naming it.
///
/// ```no_run
/// # async fn f(config: &twinguard::nats::NatsConfig) -> Result<(), twinguard::nats::NatsError> {
/// let held = vec![("twin/press-7/telemetry".to_owned(), br#"{"t":21.5}"#.to_vec())];
/// twinguard::nats::publish_all(config, held, std::time::Duration::from_secs(30)).await?;
/// # Ok(()) }
/// # let _ = f;
/// ```
pub async fn publish_all(
    config: &NatsConfig,
    messages: Vec<(String, Vec<u8>)>,
    within: Duration,
) -> Result<(), NatsError> {
    let timed_out = || NatsError::Cluster(format!("no answer within {within:?}"));
    let client = tokio::time::timeout(within, connect(config, None))
        .await
        .map_err(|_| timed_out())??;
    let js = jetstream::new(client.clone());
    for (topic, payload) in messages {
        let subject = subject_of(&topic);
        let sent = async {
            match config.forward {
                Forward::Jetstream => js
                    .publish(subject, payload.into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Forward::Core => client
                    .publish(subject, payload.into())
                    .await
                    .map_err(|e| e.to_string()),
            }
        };
        tokio::time::timeout(within, sent)
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| NatsError::Cluster(format!("publishing to {topic:?}: {e}")))?;
    }
    tokio::time::timeout(within, client.flush())
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| NatsError::Cluster(format!("flushing: {e}")))
}

/// Loads every partition's last checkpoint from the cluster into `runtime`: each device's
/// current state, as its partition's owner last committed it (`quarantine replay` judges
/// with it). Returns the entries restored.
pub async fn restore_checkpoints(
    config: &NatsConfig,
    runtime: &Runtime,
    within: Duration,
) -> Result<usize, NatsError> {
    let load = async {
        let client = connect(config, None).await?;
        let js = jetstream::new(client);
        let name = format!("{}-checkpoints", config.bucket);
        let bucket = js
            .get_key_value(&name)
            .await
            .map_err(|e| NatsError::Cluster(format!("KV bucket {name:?}: {e}")))?;
        // Absent where no partition's state ever outgrew one message.
        let bodies = js.get_object_store(bodies_name(config)).await.ok();
        let mut entries = 0;
        for p in 0..config.partitions {
            let key = checkpoint_key(p);
            let value = bucket
                .get(&key)
                .await
                .map_err(|e| NatsError::Cluster(format!("{key} in {name:?}: {e}")))?;
            if let Some(value) = value {
                let (_, mirror, _) = load(bodies.as_ref(), config, &value)
                    .await
                    .map_err(|e| NatsError::Cluster(format!("{key} in {name:?}: {e}")))?;
                mirror.restore_into(runtime);
                entries += mirror.len();
            }
        }
        Ok(entries)
    };
    tokio::time::timeout(within, load)
        .await
        .map_err(|_| NatsError::Cluster(format!("no answer within {within:?}")))?
}

async fn set_up(c: &NatsConfig, stats: &Arc<GatewayStats>) -> Result<Cluster, NatsError> {
    let client = connect(c, Some(Arc::clone(stats))).await?;
    let js = jetstream::new(client.clone());
    let stream = open_stream(&js, c).await?;
    let leases = bucket(&js, &format!("{}-leases", c.bucket), c.replicas, c.lease()).await?;
    let checkpoints = bucket(
        &js,
        &format!("{}-checkpoints", c.bucket),
        c.replicas,
        Duration::ZERO,
    )
    .await?;
    let bodies = bodies_store(&js, c).await?;
    Ok(Cluster {
        client,
        js,
        stream,
        leases,
        checkpoints,
        bodies,
    })
}

fn bodies_name(c: &NatsConfig) -> String {
    format!("{}-checkpoint-bodies", c.bucket)
}

/// The object store holding the states too large for a checkpoint key (see [`Head`]).
async fn bodies_store(
    js: &jetstream::Context,
    c: &NatsConfig,
) -> Result<object_store::ObjectStore, NatsError> {
    let name = bodies_name(c);
    if let Ok(store) = js.get_object_store(&name).await {
        return Ok(store);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: name.clone(),
            description: Some("twinguard: partition states too large for one message".into()),
            storage: stream::StorageType::File,
            num_replicas: c.replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another instance created it at the same moment.
        Err(e) => js
            .get_object_store(&name)
            .await
            .map_err(|_| NatsError::Cluster(format!("object store {name:?}: {e}"))),
    }
}

/// The largest partition state read back from an object (1 GiB): far above what the policies'
/// `state-devices` × `state-bytes` make of usual limits, and a bound on what one take allocates.
const MAX_STATE_OBJECT: u64 = 1 << 30;

/// Reads a checkpoint key's value: the sequence it covers, the state, and the object holding
/// the state when it is not inline. `bodies` is `None` where that store does not exist.
async fn load(
    bodies: Option<&object_store::ObjectStore>,
    c: &NatsConfig,
    value: &[u8],
) -> Result<(u64, Mirror, Option<String>), String> {
    let (seq, name) = match checkpoint::decode_head(value)? {
        Head::Inline(seq, mirror) => return Ok((seq, mirror, None)),
        Head::Body { seq, name } => (seq, name),
    };
    let store = bodies.ok_or_else(|| {
        format!(
            "its state is in object {name:?}, and the object store {:?} does not exist",
            bodies_name(c)
        )
    })?;
    let object = store.get(&name).await.map_err(|e| e.to_string())?;
    // Only twinguard instances write this store, but a damaged or foreign object must not
    // make a take allocate whatever size it claims (by its info, or by what it yields).
    let too_large = || {
        format!("its state's object {name:?} is more than the {MAX_STATE_OBJECT} bytes a checkpoint may be")
    };
    if object.info.size as u64 > MAX_STATE_OBJECT {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(object.info.size.min(1 << 26));
    object
        .take(MAX_STATE_OBJECT + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("its state's object {name:?}: {e}"))?;
    if bytes.len() as u64 > MAX_STATE_OBJECT {
        return Err(too_large());
    }
    let (covered, mirror) =
        checkpoint::decode(&bytes).map_err(|e| format!("its state's object {name:?}: {e}"))?;
    if covered != seq {
        return Err(format!(
            "its state's object {name:?} covers sequence {covered}, the checkpoint says {seq}"
        ));
    }
    Ok((seq, mirror, Some(name)))
}

/// A client for `c`'s cluster; `stats`, when given, follows the connection (`/readyz`).
async fn connect(
    c: &NatsConfig,
    stats: Option<Arc<GatewayStats>>,
) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("twinguard {}", c.instance))
        // Every request the front end makes has its own deadline below; a cluster that loses
        // a node answers within this.
        .request_timeout(Some(Duration::from_secs(5)))
        .event_callback(move |event| {
            let stats = stats.clone();
            async move {
                match (&event, &stats) {
                    (async_nats::Event::Connected, Some(s)) => {
                        s.connected.store(true, Ordering::Relaxed);
                        s.connections.fetch_add(1, Ordering::Relaxed);
                    }
                    (async_nats::Event::Disconnected | async_nats::Event::Closed, Some(s)) => {
                        s.connected.store(false, Ordering::Relaxed);
                    }
                    _ => {}
                }
                tracing::info!("nats: {event}");
            }
        });
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        options = options.user_and_password(u.clone(), p.clone());
    }
    if let Some(tls) = &c.tls {
        options = options
            .require_tls(true)
            .add_root_certificates(tls.ca.clone());
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let addrs = c
        .servers
        .iter()
        .filter_map(|s| s.parse::<async_nats::ServerAddr>().ok())
        .collect::<Vec<_>>();
    options.connect(addrs).await.map_err(|e| {
        use async_nats::ConnectErrorKind as Kind;
        let why = format!("cannot connect to {}: {e}", c.servers.join(", "));
        match e.kind() {
            Kind::Tls | Kind::Authentication | Kind::AuthorizationViolation => {
                NatsError::Refused(format!("{why} (check [nats.tls] and the credentials)"))
            }
            Kind::Io if tls_failed(&e) => {
                NatsError::Refused(format!("{why} (check [nats.tls] and the credentials)"))
            }
            _ => NatsError::Cluster(why),
        }
    })
}

/// Whether a connection failed in the TLS handshake (a certificate the other side refused):
/// the client reports it as I/O, with rustls's error inside.
fn tls_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<rustls::Error>().is_some()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            })
    })
}

async fn open_stream(js: &jetstream::Context, c: &NatsConfig) -> Result<stream::Stream, NatsError> {
    match js.get_stream(&c.stream).await {
        Ok(s) => Ok(s),
        Err(e) if c.create_stream => {
            let config = stream::Config {
                name: c.stream.clone(),
                subjects: vec![format!("{}.*.>", c.prefix)],
                num_replicas: c.replicas,
                max_age: Duration::from_secs(c.stream_max_age_s),
                storage: stream::StorageType::File,
                ..Default::default()
            };
            js.get_or_create_stream(config).await.map_err(|e2| {
                NatsError::Cluster(format!(
                    "stream {:?}: not found ({e}) and cannot be created: {e2}",
                    c.stream
                ))
            })
        }
        Err(e) => Err(NatsError::Cluster(format!(
            "stream {:?}: {e} (create-stream = false: create it as README's \"Scaling out\" shows)",
            c.stream
        ))),
    }
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // The bucket's stream as NATS's KV convention lays it out, created directly: the
    // client's own bucket creation first queries account details a 2.9 server does not send.
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_message_size: -1,
            max_age,
            // A lease bucket's keys expire with the lease; the duplicate window may not
            // outlast them.
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age
            },
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    let created = match created {
        Ok(_) => js.get_key_value(name).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match created {
        Ok(store) => Ok(store),
        // Another instance created it at the same moment.
        Err(e) => js
            .get_key_value(name)
            .await
            .map_err(|_| NatsError::Cluster(format!("KV bucket {name:?}: {e}"))),
    }
}

struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
    checkpoints: kv::Store,
    bodies: object_store::ObjectStore,
}

/// The room a KV message's subject and headers take besides its value.
const KV_OVERHEAD: usize = 4096;

impl Cluster {
    /// The checkpoint key's value for `state` (a partition's [`checkpoint::encode`]d state up to
    /// `seq`, about to be written over `revision`): the state itself when it fits in one
    /// message; else the name of an object written first, with the name it has.
    async fn stage(
        &self,
        p: u32,
        seq: u64,
        revision: u64,
        instance: &str,
        state: Vec<u8>,
    ) -> Result<(Bytes, Option<String>), String> {
        let room = self.client.max_payload().saturating_sub(KV_OVERHEAD);
        if state.len() <= room {
            return Ok((Bytes::from(state), None));
        }
        // The revision it replaces ends the name: what `sweep` reads.
        let name = format!("partition.{p}.{seq}.{instance}.{revision}");
        let meta = object_store::ObjectMetadata {
            name: name.clone(),
            chunk_size: Some(room.clamp(1024, 128 << 10)),
            ..Default::default()
        };
        self.bodies
            .put(meta, &mut state.as_slice())
            .await
            .map_err(|e| {
                format!(
                    "writing its state ({} bytes) to object {name:?}: {e}",
                    state.len()
                )
            })?;
        Ok((
            Bytes::from(checkpoint::encode_body_ref(seq, &name)),
            Some(name),
        ))
    }

    /// Deletes partition `p`'s state objects that no checkpoint can name any more: those
    /// written to replace a revision older than `fenced` (the one this instance wrote when it
    /// took the partition), except `keep`, the one the checkpoint names now. They are left by
    /// a writer killed or fenced between writing one and its checkpoint. Best effort: what it
    /// misses, a later take deletes.
    async fn sweep(&self, p: u32, fenced: u64, keep: Option<&str>) -> usize {
        let prefix = format!("partition.{p}.");
        let stale = |name: &str| {
            name.strip_prefix(&prefix).is_some()
                && Some(name) != keep
                && name
                    .rsplit('.')
                    .next()
                    .and_then(|r| r.parse::<u64>().ok())
                    .is_some_and(|r| r < fenced)
        };
        let list = async {
            let mut names = Vec::new();
            if let Ok(mut list) = self.bodies.list().await {
                while let Some(Ok(info)) = list.next().await {
                    if stale(&info.name) {
                        names.push(info.name);
                    }
                }
            }
            names
        };
        let names = tokio::time::timeout(Duration::from_secs(5), list)
            .await
            .unwrap_or_default();
        let mut deleted = 0;
        for name in names {
            if self.bodies.delete(&name).await.is_ok() {
                deleted += 1;
            }
        }
        deleted
    }

    /// Deletes partition `p`'s lease if it is still at revision `lease` (ours).
    async fn give_back(&self, p: u32, lease: u64) {
        let _ = self
            .leases
            .delete_expect_revision(lease_key(p), Some(lease))
            .await;
    }
}

/// A partition this instance holds: its lease's revision, its worker and its state.
struct Held {
    lease: u64,
    stop: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<Ended>,
    state: PartitionState,
}

/// A held partition's state, shared by its worker and the coordinator.
#[derive(Clone)]
struct PartitionState {
    mirror: Arc<Mutex<Mirror>>,
    /// Held by each judgement for as long as it runs on the blocking pool, which outlives an
    /// aborted worker: the partition's state is forgotten only once none runs.
    judging: Arc<tokio::sync::Mutex<()>>,
}

/// How a partition's worker ended.
#[derive(Debug)]
enum Ended {
    /// Asked to stop: its last checkpoint is written.
    Stopped,
    /// Its checkpoint was rewritten by another instance: it no longer owns the partition.
    Fenced,
    /// It could not go on (a forward or store write failed, the consumer broke): it is
    /// restarted from its last checkpoint.
    Failed(String),
}

struct Coordinator {
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    held: HashMap<u32, Held>,
    /// Rounds each partition has been seen free in a row.
    free_ticks: Vec<u32>,
}

impl Drop for Coordinator {
    /// A coordinator dropped without [`leave`](Self::leave) (its task aborted) takes its
    /// workers with it, as a killed process would: their leases expire and others take over.
    fn drop(&mut self) {
        for held in self.held.values() {
            held.worker.abort();
        }
    }
}

fn lease_key(p: u32) -> String {
    format!("owner.{p}")
}

fn member_key(name: &str) -> String {
    format!("member.{name}")
}

fn checkpoint_key(p: u32) -> String {
    format!("partition.{p}")
}

fn lock(m: &Mutex<Mirror>) -> std::sync::MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Coordinator {
    fn me(&self) -> &str {
        &self.shared.config.instance
    }

    /// One round: renew, announce, hand over, take.
    async fn round(&mut self) -> Result<(), String> {
        let cl = Arc::clone(&self.cluster);
        let me = Bytes::from(self.me().to_owned());
        // Renewals first, whatever else fails this round: a lease left to expire while the
        // cluster is slow would hand a healthy partition to another instance.
        let held: Vec<u32> = self.held.keys().copied().collect();
        for p in held {
            let Some(h) = self.held.get_mut(&p) else {
                continue;
            };
            if h.worker.is_finished() {
                if let Some(h) = self.held.remove(&p) {
                    self.ended(p, h).await;
                }
                continue;
            }
            match cl.leases.update(lease_key(p), me.clone(), h.lease).await {
                Ok(rev) => h.lease = rev,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(instance = %self.shared.config.instance, partition = p, "nats: lease lost (another instance holds it): stopping the partition without a checkpoint");
                    self.shared
                        .partitions
                        .fenced
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = self.held.remove(&p) {
                        h.worker.abort();
                        self.forget(&h.state).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %self.shared.config.instance, partition = p, "nats: renewing the lease: {e}");
                }
            }
        }
        cl.leases
            .put(member_key(self.me()), Bytes::new())
            .await
            .map_err(|e| format!("announcing this instance: {e}"))?;
        let mut members = Vec::new();
        let mut keys = cl
            .leases
            .keys()
            .await
            .map_err(|e| format!("listing members: {e}"))?;
        while let Some(k) = keys.next().await {
            if let Some(name) = k.ok().as_deref().and_then(|k| k.strip_prefix("member.")) {
                members.push(name.to_owned());
            }
        }
        members.sort();
        if !members.iter().any(|m| m == self.me()) {
            members.push(self.me().to_owned());
            members.sort();
        }
        for p in 0..self.shared.config.partitions {
            let preferred = &members[p as usize % members.len()];
            let mine = preferred == self.me();
            if self.held.contains_key(&p) {
                if !mine {
                    // Its preferred owner is up: hand it over, with a final checkpoint.
                    if let Some(held) = self.held.remove(&p) {
                        self.release(p, held).await;
                    }
                }
                continue;
            }
            let free = match cl.leases.entry(lease_key(p)).await {
                Ok(None) => true,
                Ok(Some(e)) => e.operation != kv::Operation::Put,
                Err(e) => return Err(format!("reading partition {p}'s lease: {e}")),
            };
            if !free {
                self.free_ticks[p as usize] = 0;
                continue;
            }
            self.free_ticks[p as usize] += 1;
            // The preferred owner takes a free partition at once; anyone else waits two rounds
            // for it (it may not have seen the partition free yet), so nothing stays unowned.
            if mine || self.free_ticks[p as usize] > 2 {
                match self.take(p).await {
                    Ok(()) => self.free_ticks[p as usize] = 0,
                    Err(e) => {
                        tracing::warn!(instance = %self.me(), partition = p, "nats: cannot take the partition: {e}")
                    }
                }
            }
        }
        Ok(())
    }

    /// Leases partition `p`, loads its checkpoint, fences any former owner and starts its
    /// worker.
    async fn take(&mut self, p: u32) -> Result<(), String> {
        let cl = Arc::clone(&self.cluster);
        let lease = match cl
            .leases
            .create(lease_key(p), Bytes::from(self.me().to_owned()))
            .await
        {
            Ok(rev) => rev,
            // Someone was quicker: not an error.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(format!("lease: {e}")),
        };
        let key = checkpoint_key(p);
        // Whatever stops the take from here gives the lease back at once, instead of leaving
        // the partition unjudged until the lease expires.
        let entry = match cl.checkpoints.entry(key.clone()).await {
            Ok(entry) => entry,
            Err(e) => {
                cl.give_back(p, lease).await;
                return Err(format!("reading its checkpoint: {e}"));
            }
        };
        let (seq, mirror, body, bytes, revision) = match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let (seq, mirror, body) =
                    match load(Some(&cl.bodies), &self.shared.config, &e.value).await {
                        Ok(read) => read,
                        Err(why) => {
                            cl.give_back(p, lease).await;
                            return Err(format!(
                                "its checkpoint ({key} in {}-checkpoints) is unreadable: {why}; \
                             delete that key to start the partition with no state",
                                self.shared.config.bucket
                            ));
                        }
                    };
                (seq, mirror, body, e.value, Some(e.revision))
            }
            _ => {
                let mirror = Mirror::default();
                let bytes = Bytes::from(checkpoint::encode(0, &mirror));
                (0, mirror, None, bytes, None)
            }
        };
        // Rewriting the checkpoint gives it a revision no former owner knows: from here on, a
        // checkpoint a former owner tries to write is refused.
        let fenced = match revision {
            Some(rev) => cl
                .checkpoints
                .update(&key, bytes, rev)
                .await
                .map_err(|e| e.to_string()),
            None => cl
                .checkpoints
                .create(&key, bytes)
                .await
                .map_err(|e| e.to_string()),
        };
        let revision = match fenced {
            Ok(rev) => rev,
            Err(e) => {
                cl.give_back(p, lease).await;
                return Err(format!("fencing its checkpoint: {e}"));
            }
        };
        // Before the worker writes any: a state object it writes is never swept.
        let swept = cl.sweep(p, revision, body.as_deref()).await;
        if swept > 0 {
            tracing::info!(instance = %self.me(), partition = p, swept, "nats: deleted state objects no checkpoint names");
        }
        mirror.restore_into(self.shared.judge.runtime());
        self.shared.partitions.taken.fetch_add(1, Ordering::Relaxed);
        tracing::info!(instance = %self.me(), partition = p, from_sequence = seq + 1, entries = mirror.len(), "nats: partition taken");
        let state = PartitionState {
            mirror: Arc::new(Mutex::new(mirror)),
            judging: Arc::new(tokio::sync::Mutex::new(())),
        };
        let (stop, stopped) = watch::channel(false);
        let done = Progress {
            seq,
            revision,
            body,
            pending: Vec::new(),
            uncovered: 0,
        };
        let worker = tokio::spawn(partition(
            Arc::clone(&self.shared),
            Arc::clone(&self.cluster),
            p,
            done,
            state.clone(),
            stopped,
        ));
        self.held.insert(
            p,
            Held {
                lease,
                stop,
                worker,
                state,
            },
        );
        Ok(())
    }

    /// Removes a partition's state from the runtime once no judgement of it runs: one already
    /// on the blocking pool runs to its end even when its worker was aborted, and its state
    /// changes must land before, not after.
    async fn forget(&self, state: &PartitionState) {
        let _idle = state.judging.lock().await;
        lock(&state.mirror).forget_in(self.shared.judge.runtime());
    }

    /// Stops `p`'s worker (it writes its last checkpoint), then gives up the lease.
    async fn release(&mut self, p: u32, held: Held) {
        let _ = held.stop.send(true);
        let lease = held.lease;
        let ended = match held.worker.await {
            Ok(e) => e,
            Err(e) => Ended::Failed(format!("worker: {e}")),
        };
        if !matches!(ended, Ended::Fenced) {
            self.cluster.give_back(p, lease).await;
        }
        self.forget(&held.state).await;
        self.shared
            .partitions
            .handed_back
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(instance = %self.me(), partition = p, ?ended, "nats: partition handed back");
    }

    /// A worker ended on its own: a fenced one's partition is gone; a failed one's lease is
    /// given up, so the partition restarts from its last checkpoint (here or elsewhere).
    async fn ended(&mut self, p: u32, held: Held) {
        let ended = match held.worker.await {
            Ok(e) => e,
            Err(e) => Ended::Failed(format!("worker: {e}")),
        };
        self.forget(&held.state).await;
        match ended {
            Ended::Fenced => {
                self.shared
                    .partitions
                    .fenced
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %self.me(), partition = p, "nats: another instance took the partition over (its checkpoint was rewritten)");
            }
            Ended::Failed(why) => {
                self.shared
                    .partitions
                    .restarted
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %self.me(), partition = p, "nats: partition stopped: {why}; it restarts from its last checkpoint");
                self.cluster.give_back(p, held.lease).await;
            }
            Ended::Stopped => {}
        }
    }

    /// Hands every partition back with a final checkpoint, and leaves the members.
    async fn leave(&mut self) {
        let held: Vec<(u32, Held)> = self.held.drain().collect();
        for (p, h) in held {
            self.release(p, h).await;
        }
        let _ = self.cluster.leases.delete(member_key(self.me())).await;
    }
}

/// NATS's MQTT listener turns topic levels into subject tokens (`/` → `.`) and a `.` inside a
/// level into `//`: this turns a partitioned subject's tail back into the device's topic.
fn topic_of(subject_tail: &str) -> String {
    // One pass, one allocation: this runs for every message.
    let mut topic = String::with_capacity(subject_tail.len());
    let mut chars = subject_tail.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => topic.push('/'),
            '/' if chars.peek() == Some(&'/') => {
                chars.next();
                topic.push('.');
            }
            c => topic.push(c),
        }
    }
    topic
}

/// The other way: a twin topic as the subject NATS's MQTT subscribers see it under.
fn subject_of(topic: &str) -> String {
    let mut subject = String::with_capacity(topic.len() + 4);
    for c in topic.chars() {
        match c {
            '/' => subject.push('.'),
            '.' => subject.push_str("//"),
            c => subject.push(c),
        }
    }
    subject
}

/// Reads partition `p` from just after `done.seq`, judges its messages in order and
/// checkpoints.
async fn partition(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    p: u32,
    mut done: Progress,
    state: PartitionState,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let c = &shared.config;
    let seq = done.seq;
    let consumer = cluster
        .stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.{p}.>", c.prefix),
            deliver_policy: if seq == 0 {
                jetstream::consumer::DeliverPolicy::All
            } else {
                jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                }
            },
            ..Default::default()
        })
        .await;
    let mut messages = match consumer {
        Ok(consumer) => match consumer.messages().await {
            Ok(m) => m,
            Err(e) => return Ended::Failed(format!("reading the stream: {e}")),
        },
        Err(e) => return Ended::Failed(format!("creating its consumer: {e}")),
    };
    let strip = format!("{}.{p}.", c.prefix);
    let mut budgets = Budgets::new(&c.device_budget);
    // Budgets run on stream time, so a replay of the partition sheds what the first pass did.
    let origin = Instant::now();
    let mut origin_ms: Option<u64> = None;
    let every = Duration::from_millis(c.checkpoint_ms);
    let mut deadline = tokio::time::Instant::now() + every;
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => None,
            () = tokio::time::sleep_until(deadline), if done.uncovered > 0 => Some(None),
            m = messages.next() => Some(Some(m)),
        };
        let next = match next {
            // Stopping: what was judged is checkpointed, so the next owner starts after it.
            None if done.uncovered == 0 => return Ended::Stopped,
            None => match done.commit(&cluster, &shared, p, &state.mirror).await {
                Ok(()) => return Ended::Stopped,
                Err(e) => return e,
            },
            // The oldest message not covered has waited `checkpoint-ms`.
            Some(None) => match done.commit(&cluster, &shared, p, &state.mirror).await {
                Ok(()) => continue,
                Err(e) => return e,
            },
            Some(Some(next)) => next,
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Ended::Failed(format!("reading the stream: {e}")),
            None => return Ended::Failed("the stream's consumer ended".into()),
        };
        let Ok(info) = message.info() else {
            return Ended::Failed("a message without JetStream metadata".into());
        };
        let at = info.stream_sequence;
        let received_ms =
            u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        let tail = message
            .subject
            .as_str()
            .strip_prefix(&strip)
            .unwrap_or(message.subject.as_str());
        let topic = topic_of(tail);
        let route = gateway::place(&shared.inputs, &topic, |_| None);
        let shed = match (budgets.as_mut(), &route) {
            (Some(b), Ok(r)) => {
                let base = *origin_ms.get_or_insert(received_ms);
                let now = origin + Duration::from_millis(received_ms.saturating_sub(base));
                match b.take(&r.device, now) {
                    budget::Verdict::Shed { first } => {
                        shared.stats.shed.fetch_add(1, Ordering::Relaxed);
                        if first {
                            tracing::warn!(partition = p, device = %budget::shown(&r.device), "{}", c.device_budget.alert(&r.device, "[nats.device-budget]").detail);
                        }
                        true
                    }
                    budget::Verdict::Resumed { shed } => {
                        tracing::info!(partition = p, device = %budget::shown(&r.device), "device back within its budget; {shed} of its messages were shed");
                        false
                    }
                    budget::Verdict::Pass => false,
                }
            }
            _ => false,
        };
        if !shed {
            match judge_one(
                &shared,
                &cluster,
                &state,
                message.payload.clone(),
                topic,
                route,
                received_ms,
                at,
            )
            .await
            {
                Ok(Some(ack)) => done.pending.push(ack),
                Ok(None) => {}
                Err(why) => return Ended::Failed(why),
            }
        }
        done.seq = at;
        if done.uncovered == 0 {
            deadline = tokio::time::Instant::now() + every;
        }
        done.uncovered += 1;
        if done.uncovered >= c.checkpoint_messages {
            if let Err(e) = done.commit(&cluster, &shared, p, &state.mirror).await {
                return e;
            }
        }
    }
}

/// Judges one message and forwards it when it passes; a JetStream forward's acknowledgement
/// is returned, to be awaited before the checkpoint that covers the message.
#[allow(clippy::too_many_arguments)]
async fn judge_one(
    shared: &Arc<Shared>,
    cluster: &Cluster,
    state: &PartitionState,
    payload: Bytes,
    topic: String,
    route: Result<gateway::Route, String>,
    received_ms: u64,
    at: u64,
) -> Result<Option<jetstream::context::PublishAckFuture>, String> {
    let c = &shared.config;
    let (message, reason, destination) = if payload.len() > c.max_message_bytes {
        let (m, reason) = gateway::oversized(c.max_message_bytes, &payload, topic, &route);
        (m, Some(reason), None)
    } else {
        match route {
            Ok(r) => (
                Message::new(r.device, topic, r.content_type, payload),
                None,
                Some(r.destination),
            ),
            Err(why) => (
                Message::new("", topic, ContentType::Binary, payload),
                Some(why),
                None,
            ),
        }
    };
    let mut message = message;
    // What policies see of time is the stream's: a replay after a takeover judges the same.
    message.received_at_ms = received_ms;
    let (s, m) = (Arc::clone(shared), Arc::clone(&state.mirror));
    let dest = destination.clone();
    // Held until the judgement ends, even if this task is aborted meanwhile (see `Held`).
    let running = Arc::clone(&state.judging).lock_owned().await;
    let judgement = tokio::task::spawn_blocking(move || {
        let _running = running;
        checkpoint::judged_into(&m, || match reason {
            None => s.judge.judge(&message, dest.as_deref()),
            Some(reason) => s.judge.hold(&message, reason, dest.as_deref()),
        })
    })
    .await
    .map_err(|e| format!("judging: {e}"))?;
    if let Stored::Failed(e) = &judgement.stored {
        shared.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        return Err(format!("quarantine store: {e}"));
    }
    if matches!(judgement.stored, Stored::Record(_)) {
        shared.stats.quarantined.fetch_add(1, Ordering::Relaxed);
    }
    shared
        .stats
        .alerts
        .fetch_add(judgement.events.len() as u64, Ordering::Relaxed);
    if let Some(subject) = &c.alerts_subject {
        for event in &judgement.events {
            // Best effort, as the MQTT gateway's alerts topic: the sinks have the event.
            let _ = cluster
                .client
                .publish(subject.clone(), Bytes::from(event.to_json_bytes()))
                .await;
        }
    }
    let (Some(destination), Some(payload)) = (destination, judgement.forward()) else {
        return Ok(None);
    };
    let subject = subject_of(&destination);
    let payload = payload.clone();
    shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    match c.forward {
        Forward::Jetstream => {
            let mut headers = async_nats::HeaderMap::new();
            // The twin stream drops a forward it has seen within its duplicate window: the
            // repeats of an at-least-once replay.
            headers.insert("Nats-Msg-Id", format!("{}:{at}", c.stream).as_str());
            headers.insert("Twinguard-Sequence", at.to_string().as_str());
            cluster
                .js
                .publish_with_headers(subject, headers, payload)
                .await
                .map(Some)
                .map_err(|e| format!("forwarding to {destination:?}: {e}"))
        }
        Forward::Core => cluster
            .client
            .publish(subject, payload)
            .await
            .map(|()| None)
            .map_err(|e| format!("forwarding to {destination:?}: {e}")),
    }
}

/// What a partition's worker has judged and not yet checkpointed.
struct Progress {
    /// The stream sequence of the last message judged.
    seq: u64,
    /// The checkpoint's revision, as this worker last wrote (or fenced) it.
    revision: u64,
    /// The object holding the state that checkpoint covers, when it is too large to be inline.
    body: Option<String>,
    /// Forwards whose stream acknowledgement is still to come.
    pending: Vec<jetstream::context::PublishAckFuture>,
    /// Messages judged since the last checkpoint.
    uncovered: usize,
}

impl Progress {
    /// Makes what the partition judged up to `seq` durable: every forward acknowledged (or
    /// flushed), then the state and `seq` written over the checkpoint at `revision`.
    async fn commit(
        &mut self,
        cluster: &Cluster,
        shared: &Shared,
        p: u32,
        mirror: &Mutex<Mirror>,
    ) -> Result<(), Ended> {
        for ack in self.pending.drain(..) {
            ack.await
                .map_err(|e| Ended::Failed(format!("a forward was not acknowledged: {e}")))?;
        }
        if shared.config.forward == Forward::Core {
            cluster
                .client
                .flush()
                .await
                .map_err(|e| Ended::Failed(format!("flushing forwards: {e}")))?;
        }
        let state = checkpoint::encode(self.seq, &lock(mirror));
        let size = state.len();
        let (head, body) = cluster
            .stage(p, self.seq, self.revision, &shared.config.instance, state)
            .await
            .map_err(Ended::Failed)?;
        match cluster
            .checkpoints
            .update(checkpoint_key(p), head, self.revision)
            .await
        {
            Ok(rev) => {
                self.revision = rev;
                self.uncovered = 0;
                if body.is_some() && self.body.is_none() {
                    tracing::info!(partition = p, bytes = size, "nats: the partition's state is larger than one message: its checkpoint now names an object in {:?}", bodies_name(&shared.config));
                }
                let old = std::mem::replace(&mut self.body, body);
                // The checkpoint no longer names it.
                if let Some(old) = old.filter(|o| Some(o) != self.body.as_ref()) {
                    let _ = cluster.bodies.delete(&old).await;
                }
                shared
                    .partitions
                    .checkpoints
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Nothing names it: the checkpoint is another instance's now.
                if let Some(body) = body {
                    let _ = cluster.bodies.delete(&body).await;
                }
                Err(Ended::Fenced)
            }
            // Kept: the write may have landed; if not, the next take sweeps it.
            Err(e) => Err(Ended::Failed(format!("writing its checkpoint: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_subjects_map_as_natss_mqtt_listener_maps_them() {
        assert_eq!(
            topic_of("plant.press-7.telemetry"),
            "plant/press-7/telemetry"
        );
        assert_eq!(topic_of("plant.v1//2.telemetry"), "plant/v1.2/telemetry");
        assert_eq!(subject_of("twin/v1.2/telemetry"), "twin.v1//2.telemetry");
        assert_eq!(topic_of(&subject_of("a/b.c/d")), "a/b.c/d");
    }
}
