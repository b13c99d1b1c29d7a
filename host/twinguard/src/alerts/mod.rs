//! Alert sinks: every alert of an [`Outcome`] becomes one [`SecurityEvent`] (the JSON schema in
//! `docs/alerts.md`) and goes to every configured sink: a JSON-lines file, syslog (RFC 5424)
//! over UDP or TCP, and any [`AlertSink`] the embedder adds (the gateway's MQTT alerts topic).
//!
//! ```toml
//! [alerts]
//! file = "alerts.ndjson"           # JSON lines, appended, flushed per event; relative to the config
//! dedup-window-ms = 60000          # identical alerts within this window are sent once (0 = off)
//! dedup-max-keys = 10000           # distinct alerts tracked at once; more are sent untracked
//! queue-capacity = 1024            # events waiting per sink; beyond that they are dropped and counted
//! [[alerts.syslog]]
//! address = "127.0.0.1:514"        # host:port
//! transport = "udp"                # or "tcp" (octet-counting framing, RFC 6587)
//! facility = "local0"              # kern, user, ..., local0-local7
//! # hostname = "gw-1"              # default: this machine's name
//! # sd-id = "twinguard@32473"      # the STRUCTURED-DATA id (32473: the documentation PEN)
//! ```
//!
//! # Rate limiting
//!
//! Alerts are identical when device, policy, code and detail are equal. The first one is sent
//! and opens a window of `dedup-window-ms`; repeats inside it are only counted. The count goes
//! out in the next event for that alert after the window: the next occurrence (its `count` is the
//! repeats plus itself), or, when none comes, a summary event once the window has closed
//! (checked about every second), on [`Alerts::flush`], or at shutdown. Every occurrence is thus
//! counted exactly once: the sum of `count` over the events sent is the number of alerts raised.
//!
//! # Failure
//!
//! Each sink has its own worker thread and bounded queue, so the thread evaluating messages never
//! waits on a disk, a network or another sink: a full queue drops the event for that sink and
//! counts it. A sink that fails is counted and logged (once when it starts failing, once when it
//! recovers) and does not hold up the others; its events are not retried, so the JSON-lines file
//! is the record to keep when a SIEM may be down. [`Alerts::stats`] reports all counters.

mod config;
mod error;
mod event;
mod file;
mod syslog;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Message, Outcome};

pub use config::{AlertsConfig, Facility, SyslogConfig, Transport, DEFAULT_SD_ID};
pub use error::{AlertsError, SinkError};
pub use event::{Clock, EventAction, SecurityEvent, SystemClock, SCHEMA_VERSION};
pub use file::FileSink;
pub use syslog::{syslog_severity, SyslogSink};

use event::{events_at, new_id};

/// Somewhere events go. Called from the sink's own worker thread, one event at a time, so an
/// implementation may block (within reason: its queue fills meanwhile).
pub trait AlertSink: Send + Sync + 'static {
    /// Delivers one event. An error is counted and logged; the event is not retried.
    fn send(&self, event: &SecurityEvent) -> Result<(), SinkError>;
}

/// Counters of one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// The sink's name, e.g. `file:alerts.ndjson` or `syslog-tcp:10.0.0.5:6514`.
    pub name: String,
    /// Events delivered.
    pub sent: u64,
    /// Events the sink failed to deliver.
    pub failed: u64,
    /// Events dropped because the sink's queue was full (or its worker had stopped).
    pub dropped: u64,
}

/// Counters of the dispatcher, from [`Alerts::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts handed in (occurrences).
    pub alerts: u64,
    /// Events emitted to the sinks, summaries included.
    pub events: u64,
    /// Repeats counted instead of sent (they go out later in some event's `count`).
    pub suppressed: u64,
    /// Alerts sent without rate limiting because `dedup-max-keys` distinct alerts were tracked.
    pub untracked: u64,
    /// Per sink, in configuration order (file, syslog entries, then added sinks).
    pub sinks: Vec<SinkStats>,
}

/// The alert dispatcher: rate-limits alerts and fans the events out to every sink, each on its
/// own worker thread. Cheap to clone; the sinks shut down (pending repeats flushed, queues
/// drained for up to 5 s) when the last clone is dropped.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("sinks", &self.inner.sinks.len())
            .field("dedup_window_ms", &self.inner.window_ms)
            .finish_non_exhaustive()
    }
}

/// Sets up an [`Alerts`]: the configured sinks plus any the embedder adds, and the clock.
pub struct AlertsBuilder {
    config: AlertsConfig,
    sinks: Vec<(String, Arc<dyn AlertSink>)>,
    clock: Option<Arc<dyn Clock>>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    window_ms: u64,
    max_keys: usize,
    dedup: Mutex<Dedup>,
    sinks: Vec<SinkSlot>,
    alerts: AtomicU64,
    events: AtomicU64,
    suppressed: AtomicU64,
    untracked: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
    workers_done: Mutex<Receiver<()>>,
    /// Dropped to stop the sweeper thread.
    _stop_sweeper: Option<mpsc::Sender<()>>,
}

struct SinkSlot {
    name: String,
    tx: Option<SyncSender<Job>>,
    counters: Arc<SinkCounters>,
}

#[derive(Default)]
struct SinkCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

enum Job {
    Event(Arc<SecurityEvent>),
    /// Answered once every job queued before it is done.
    Flush(mpsc::Sender<()>),
}

#[derive(Default)]
struct Dedup {
    entries: HashMap<DedupKey, DedupEntry>,
    next_sweep_ms: u64,
}

#[derive(PartialEq, Eq, Hash)]
struct DedupKey {
    device_id: String,
    policy: String,
    code: String,
    detail: String,
}

struct DedupEntry {
    /// When the last event for this key was sent; repeats until `+ window` are counted.
    window_start_ms: u64,
    /// Repeats counted since then.
    suppressed: u64,
    first_suppressed_ms: u64,
    /// The latest repeat, the template of a summary.
    last: Option<SecurityEvent>,
}

/// How often pending repeats of closed windows are looked for, at most.
const SWEEP_EVERY_MS: u64 = 1000;
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Alerts {
    /// Starts the sinks of `config` with the system clock. A relative `file` is resolved
    /// against `base` (the config file's folder).
    pub fn from_config(config: &AlertsConfig, base: &Path) -> Result<Self, AlertsError> {
        Self::builder(config, base).build()
    }

    /// A builder with `config`'s settings and sinks, to which sinks and a clock can be added.
    pub fn builder(config: &AlertsConfig, base: &Path) -> AlertsBuilder {
        let mut config = config.clone();
        if let Some(file) = &mut config.file {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        AlertsBuilder {
            config,
            sinks: Vec::new(),
            clock: None,
        }
    }

    /// Rate-limits the alerts of `outcome` and sends the resulting events to every sink. Never
    /// blocks on a sink. Returns the events sent, e.g. to publish them on an MQTT topic (the
    /// summaries of repeats sent later by the sweeper or by [`flush`](Self::flush) reach only
    /// the sinks: add an [`AlertSink`] to receive every event).
    pub fn handle(&self, message: &Message, outcome: &Outcome) -> Vec<SecurityEvent> {
        if outcome.alerts.is_empty() {
            return Vec::new();
        }
        let events = events_at(message, outcome, self.inner.clock.now_ms());
        self.inner.process(events)
    }

    /// Like [`handle`](Self::handle), for events built elsewhere (e.g. by
    /// [`SecurityEvent::from_outcome`]). Each counts as one occurrence at its `time_ms`.
    pub fn send_all(&self, events: &[SecurityEvent]) -> Vec<SecurityEvent> {
        if events.is_empty() {
            return Vec::new();
        }
        self.inner.process(events.to_vec())
    }

    /// Sends the pending repeat counts now (as summary events) and waits until every sink has
    /// handled everything queued so far, for at most 5 s. Returns whether all sinks were done
    /// in time.
    pub fn flush(&self) -> bool {
        self.flush_timeout(SHUTDOWN_WAIT)
    }

    /// [`flush`](Self::flush) with a chosen bound on the wait.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.inner.flush_pending();
        self.inner.drain(Instant::now() + timeout)
    }

    /// The counters so far.
    pub fn stats(&self) -> AlertStats {
        let i = &self.inner;
        AlertStats {
            alerts: i.alerts.load(Ordering::Relaxed),
            events: i.events.load(Ordering::Relaxed),
            suppressed: i.suppressed.load(Ordering::Relaxed),
            untracked: i.untracked.load(Ordering::Relaxed),
            sinks: i
                .sinks
                .iter()
                .map(|s| SinkStats {
                    name: s.name.clone(),
                    sent: s.counters.sent.load(Ordering::Relaxed),
                    failed: s.counters.failed.load(Ordering::Relaxed),
                    dropped: s.counters.dropped.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

impl AlertsBuilder {
    /// Adds a sink under `name` (used in stats and logs).
    pub fn sink(mut self, name: impl Into<String>, sink: impl AlertSink) -> Self {
        self.sinks.push((name.into(), Arc::new(sink)));
        self
    }

    /// Uses `clock` instead of the system clock. Repeats are then summarised only by the next
    /// occurrence or [`Alerts::flush`]: the background sweeper, which would race a test
    /// moving the clock, is not started.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the configuration, opens the sinks and starts their workers.
    pub fn build(self) -> Result<Alerts, AlertsError> {
        let config = self.config;
        config.validate().map_err(AlertsError::Config)?;
        let mut sinks: Vec<(String, Arc<dyn AlertSink>)> = Vec::new();
        if let Some(path) = &config.file {
            sinks.push((
                format!("file:{}", path.display()),
                Arc::new(FileSink::open(path)?),
            ));
        }
        for s in &config.syslog {
            sinks.push((
                format!("syslog-{}:{}", s.transport, s.address),
                Arc::new(SyslogSink::new(s)?),
            ));
        }
        sinks.extend(self.sinks);

        let (done_tx, done_rx) = mpsc::channel();
        let mut slots = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for (i, (name, sink)) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
            let counters = Arc::new(SinkCounters::default());
            let worker = {
                let (label, counters, done) =
                    (name.clone(), Arc::clone(&counters), done_tx.clone());
                thread::Builder::new()
                    .name(format!("tg-alerts-{i}"))
                    .spawn(move || run_worker(&label, &*sink, &rx, &counters, done))
                    .map_err(|source| AlertsError::Thread {
                        sink: name.clone(),
                        source,
                    })?
            };
            workers.push(worker);
            slots.push(SinkSlot {
                name,
                tx: Some(tx),
                counters,
            });
        }
        drop(done_tx);

        let sweeper = self.clock.is_none() && config.dedup_window_ms > 0;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let inner = Arc::new(Inner {
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            window_ms: config.dedup_window_ms,
            max_keys: config.dedup_max_keys,
            dedup: Mutex::new(Dedup::default()),
            sinks: slots,
            alerts: AtomicU64::new(0),
            events: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            workers: Mutex::new(workers),
            workers_done: Mutex::new(done_rx),
            _stop_sweeper: sweeper.then_some(stop_tx),
        });
        if sweeper {
            let weak = Arc::downgrade(&inner);
            let every = Duration::from_millis(config.dedup_window_ms.clamp(1, SWEEP_EVERY_MS));
            // Detached: it holds only a weak reference and ends when the dispatcher does.
            thread::Builder::new()
                .name("tg-alerts-sweep".into())
                .spawn(move || run_sweeper(&weak, &stop_rx, every))
                .map_err(|source| AlertsError::Thread {
                    sink: "sweeper".into(),
                    source,
                })?;
        }
        Ok(Alerts { inner })
    }
}

fn run_worker(
    name: &str,
    sink: &dyn AlertSink,
    rx: &Receiver<Job>,
    counters: &SinkCounters,
    _done: mpsc::Sender<()>,
) {
    let mut failing = false;
    for job in rx {
        match job {
            Job::Event(event) => match sink.send(&event) {
                Ok(()) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        tracing::info!(sink = name, "alert sink recovered");
                    }
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        tracing::debug!(sink = name, error = %e, "alert sink failed");
                    } else {
                        failing = true;
                        tracing::warn!(
                            sink = name,
                            error = %e,
                            "alert sink failing; its events are counted as failed until it recovers"
                        );
                    }
                }
            },
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn run_sweeper(inner: &Weak<Inner>, stop: &Receiver<()>, every: Duration) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = inner.clock.now_ms();
        let mut out = Vec::new();
        inner.lock_dedup().sweep(now, inner.window_ms, &mut out);
        inner.emit_all(out);
    }
}

impl Inner {
    fn lock_dedup(&self) -> MutexGuard<'_, Dedup> {
        lock(&self.dedup)
    }

    fn process(&self, events: Vec<SecurityEvent>) -> Vec<SecurityEvent> {
        self.alerts
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if self.window_ms == 0 {
            self.emit_all(events.clone());
            return events;
        }
        let mut out = Vec::new();
        {
            let mut dedup = self.lock_dedup();
            for event in events {
                self.rate_limit(&mut dedup, event, &mut out);
            }
            let now = self.clock.now_ms();
            if now >= dedup.next_sweep_ms {
                dedup.sweep(now, self.window_ms, &mut out);
            }
        }
        self.emit_all(out.clone());
        out
    }

    fn rate_limit(
        &self,
        dedup: &mut Dedup,
        mut event: SecurityEvent,
        out: &mut Vec<SecurityEvent>,
    ) {
        let key = DedupKey {
            device_id: event.device_id.clone(),
            policy: event.policy.clone(),
            code: event.code.clone(),
            detail: event.detail.clone(),
        };
        let t = event.time_ms;
        event.set_span(1, t);
        match dedup.entries.get_mut(&key) {
            Some(entry) if t < entry.window_start_ms.saturating_add(self.window_ms) => {
                if entry.suppressed == 0 {
                    entry.first_suppressed_ms = t;
                }
                entry.suppressed += 1;
                entry.last = Some(event);
                self.suppressed.fetch_add(1, Ordering::Relaxed);
            }
            Some(entry) => {
                if entry.suppressed > 0 {
                    event.set_span(entry.suppressed + 1, entry.first_suppressed_ms);
                }
                entry.window_start_ms = t;
                entry.suppressed = 0;
                entry.last = None;
                out.push(event);
            }
            None => {
                if dedup.entries.len() >= self.max_keys {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                } else {
                    dedup.entries.insert(
                        key,
                        DedupEntry {
                            window_start_ms: t,
                            suppressed: 0,
                            first_suppressed_ms: 0,
                            last: None,
                        },
                    );
                }
                out.push(event);
            }
        }
    }

    fn flush_pending(&self) {
        let mut out = Vec::new();
        for entry in self.lock_dedup().entries.values_mut() {
            entry.take_summary(&mut out);
        }
        self.emit_all(out);
    }

    fn emit_all(&self, events: Vec<SecurityEvent>) {
        for event in events {
            self.events.fetch_add(1, Ordering::Relaxed);
            let event = Arc::new(event);
            for slot in &self.sinks {
                let Some(tx) = &slot.tx else { continue };
                if let Err(e) = tx.try_send(Job::Event(Arc::clone(&event))) {
                    let dropped = slot.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Logged at 1, 2, 4, 8, … drops: visible, but not a flood of its own.
                    if dropped.is_power_of_two() {
                        let why = match e {
                            TrySendError::Full(_) => "queue full",
                            TrySendError::Disconnected(_) => "worker stopped",
                        };
                        tracing::warn!(sink = %slot.name, dropped, why, "alert events dropped");
                    }
                }
            }
        }
    }

    /// Waits until every worker has handled what was queued before now.
    fn drain(&self, deadline: Instant) -> bool {
        let mut acks = Vec::new();
        for slot in &self.sinks {
            let Some(tx) = &slot.tx else { continue };
            let (ack_tx, ack_rx) = mpsc::channel();
            let mut job = Job::Flush(ack_tx);
            loop {
                match tx.try_send(job) {
                    Ok(()) => {
                        acks.push(ack_rx);
                        break;
                    }
                    Err(TrySendError::Full(j)) if Instant::now() < deadline => {
                        job = j;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return false,
                }
            }
        }
        acks.iter().all(|ack| {
            ack.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
        })
    }
}

impl Dedup {
    /// Forgets every alert whose window has closed, emitting the repeats it counted.
    fn sweep(&mut self, now: u64, window_ms: u64, out: &mut Vec<SecurityEvent>) {
        self.entries.retain(|_, entry| {
            if now < entry.window_start_ms.saturating_add(window_ms) {
                return true;
            }
            entry.take_summary(out);
            false
        });
        self.next_sweep_ms = now.saturating_add(window_ms.min(SWEEP_EVERY_MS));
    }
}

impl DedupEntry {
    /// The repeats counted so far, as one event (a copy of the latest repeat with a new id).
    fn take_summary(&mut self, out: &mut Vec<SecurityEvent>) {
        if let Some(mut event) = self.last.take() {
            event.id = new_id();
            event.set_span(self.suppressed, self.first_suppressed_ms);
            out.push(event);
        }
        self.suppressed = 0;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush_pending();
        // Closing the queues ends the workers once they have sent what is queued.
        for slot in &mut self.sinks {
            slot.tx = None;
        }
        // Each worker holds a sender and none sends: disconnection means all have finished.
        let _ = lock(&self.workers_done).recv_timeout(SHUTDOWN_WAIT);
        for worker in std::mem::take(&mut *lock(&self.workers)) {
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                tracing::warn!("alert sink still busy at shutdown; leaving it behind");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value stays consistent between statements; a panic elsewhere must not
    // stop the alerts.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
