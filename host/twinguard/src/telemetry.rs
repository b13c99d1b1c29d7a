//! What an operator watches: an OpenTelemetry meter provider whose metrics a Prometheus
//! server scrapes at `/metrics`, and the health endpoints `/healthz` (the process answers)
//! and `/readyz` (policies loaded, every broker connected, the quarantine store writable),
//! on a plain-HTTP listener of their own (`[telemetry] listen`, loopback by default).
//!
//! The runtime records its metrics through the meter ([`Runtime::with_meter`]); the front
//! ends' counters (gateways, store, alert sinks) are read when Prometheus scrapes, so they
//! cost the message path nothing. Every metric is listed in `docs/metrics.md`.
//!
//! ```toml
//! [telemetry]
//! listen = "127.0.0.1:9464"   # /metrics, /healthz, /readyz
//! service-name = "twinguard"
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::listener::Guarded;

use crate::Runtime;

/// The `[telemetry]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct TelemetryConfig {
    /// Address of the metrics and health listener (default `127.0.0.1:9464`, Prometheus's
    /// registered port for OpenTelemetry exporters). Plain HTTP: keep it on loopback or a
    /// management network; it exposes counts, never payloads or device ids.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The `service.name` resource attribute (default `twinguard`): what tells two
    /// instances apart in a shared backend.
    #[serde(default = "default_service")]
    pub service_name: String,
    /// An OpenTelemetry collector's OTLP/HTTP base address (`http://127.0.0.1:4318`): metrics
    /// are pushed to `/v1/metrics` every `otlp-interval-ms`, sampled message spans to
    /// `/v1/traces`. None (the default): no export, Prometheus only.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed over OTLP (default 10,000 ms).
    #[serde(default = "default_interval")]
    pub otlp_interval_ms: u64,
    /// The share of messages traced (0 to 1, default 0.01): each sampled message is one span
    /// tree (receive → each policy → forward or quarantine). 0 turns traces off.
    #[serde(default = "default_ratio")]
    pub trace_sample_ratio: f64,
}

fn default_interval() -> u64 {
    10_000
}

fn default_ratio() -> f64 {
    0.01
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_service() -> String {
    "twinguard".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            service_name: default_service(),
            otlp_endpoint: None,
            otlp_interval_ms: default_interval(),
            trace_sample_ratio: default_ratio(),
        }
    }
}

impl TelemetryConfig {
    /// Checks the values serde cannot: the ratio, the interval, the endpoint's scheme.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(format!(
                "[telemetry] trace-sample-ratio = {}: must be from 0 (no traces) to 1 (every message)",
                self.trace_sample_ratio
            ));
        }
        if self.otlp_interval_ms < 100 {
            return Err(format!(
                "[telemetry] otlp-interval-ms = {}: at least 100",
                self.otlp_interval_ms
            ));
        }
        if let Some(e) = &self.otlp_endpoint {
            let Some(rest) = e.strip_prefix("http://") else {
                return Err(format!(
                    "[telemetry] otlp-endpoint = {e:?}: give the collector's OTLP/HTTP address, \
                     e.g. \"http://127.0.0.1:4318\" (plain HTTP: run a collector beside twinguard \
                     for TLS onward)"
                ));
            };
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(format!("[telemetry] otlp-endpoint = {e:?}: no host"));
            }
        }
        Ok(())
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A value of `[telemetry]` is out of range.
    #[error("{0}")]
    Config(String),
    /// An exporter refused its settings.
    #[error("[telemetry]: cannot set up an exporter: {0}")]
    Exporter(String),
    /// The listener could not be bound.
    #[error("[telemetry] listen = {listen:?}: {source}")]
    Bind {
        /// As configured.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The process's meter provider and what Prometheus reads, and its tracer provider when spans
/// are exported. Cheap to clone. Call [`shutdown`](Self::shutdown) outside any async runtime
/// before exit: it pushes what the OTLP exporters still hold.
#[derive(Clone)]
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    tracing: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// A meter provider with a Prometheus reader, its resource named `service_name`.
    pub fn new(service_name: &str) -> Result<Self, TelemetryError> {
        Self::from_config(&TelemetryConfig {
            service_name: service_name.to_owned(),
            ..TelemetryConfig::default()
        })
    }

    /// What `[telemetry]` asks for: the Prometheus reader, and with `otlp-endpoint` an OTLP
    /// metrics push and (with a sample ratio above 0) a span exporter.
    pub fn from_config(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        config.validate().map_err(TelemetryError::Config)?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // One scope (ours): its labels on every series would only add noise.
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        #[cfg(feature = "otlp")]
        let span_resource = resource.clone();
        #[allow(unused_mut)] // without the `otlp` feature no reader is added
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(exporter);
        #[allow(unused_mut)] // without the `otlp` feature nothing is added
        let mut tracing = None;
        #[cfg(not(feature = "otlp"))]
        if let Some(base) = &config.otlp_endpoint {
            return Err(TelemetryError::Config(format!(
                "[telemetry] otlp-endpoint = {base:?}: this build has no OTLP exporter (the \
                 `otlp` feature of the twinguard crate; the Mosquitto plugin leaves it out)"
            )));
        }
        #[cfg(feature = "otlp")]
        if let Some(base) = &config.otlp_endpoint {
            use opentelemetry_otlp::WithExportConfig as _;
            let base = base.trim_end_matches('/');
            let otlp = |e: opentelemetry_otlp::ExporterBuildError| {
                TelemetryError::Exporter(format!("OTLP to {base}: {e}"))
            };
            let metrics = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/metrics"))
                .build()
                .map_err(otlp)?;
            builder = builder.with_reader(
                opentelemetry_sdk::metrics::PeriodicReader::builder(metrics)
                    .with_interval(std::time::Duration::from_millis(config.otlp_interval_ms))
                    .build(),
            );
            if config.trace_sample_ratio > 0.0 {
                use opentelemetry_sdk::trace::Sampler;
                let spans = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{base}/v1/traces"))
                    .build()
                    .map_err(otlp)?;
                tracing = Some(
                    opentelemetry_sdk::trace::SdkTracerProvider::builder()
                        .with_resource(span_resource)
                        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                            config.trace_sample_ratio,
                        ))))
                        .with_batch_exporter(spans)
                        .build(),
                );
            }
        }
        Ok(Self {
            provider: builder.build(),
            registry,
            tracing,
        })
    }

    /// The tracer front ends record message spans with, when spans are exported.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::SdkTracer> {
        use opentelemetry::trace::TracerProvider as _;
        self.tracing.as_ref().map(|t| t.tracer("twinguard"))
    }

    /// Pushes what the OTLP exporters hold and stops them. Blocks (up to the exporters'
    /// timeouts): call it outside any async runtime.
    pub fn shutdown(&self) {
        if let Some(t) = &self.tracing {
            if let Err(e) = t.shutdown() {
                tracing::warn!("telemetry: the span exporter did not stop cleanly: {e}");
            }
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("telemetry: the metrics exporters did not stop cleanly: {e}");
        }
    }

    /// The meter to hand to [`Runtime::with_meter`] and to the front ends.
    pub fn meter(&self) -> Meter {
        self.provider.meter("twinguard")
    }

    /// Every metric in the Prometheus text exposition format (what `/metrics` answers).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# cannot encode the metrics: {e}\n"))
    }

    /// Observes a NATS front end's partitions (`twinguard_nats_*`, see `docs/metrics.md`)
    /// under its instance name; its messages are observed with
    /// [`observe_gateway`](Self::observe_gateway).
    #[cfg(feature = "nats")]
    pub fn observe_nats(&self, name: &str, stats: Arc<crate::nats::NatsStats>) {
        use std::sync::atomic::Ordering::Relaxed;
        let meter = self.meter();
        let instance = opentelemetry::KeyValue::new("twinguard.instance", name.to_owned());
        let (s, i) = (stats.clone(), instance.clone());
        meter
            .u64_observable_gauge("twinguard.nats.partitions")
            .with_unit("{partition}")
            .with_description("Partitions of the NATS stream this instance owns now")
            .with_callback(move |o| o.observe(s.owned.load(Relaxed), std::slice::from_ref(&i)))
            .build();
        let (s, i) = (stats.clone(), instance.clone());
        meter
            .u64_observable_counter("twinguard.nats.checkpoints")
            .with_unit("{checkpoint}")
            .with_description("Partition checkpoints written to the cluster")
            .with_callback(move |o| {
                o.observe(s.checkpoints.load(Relaxed), std::slice::from_ref(&i))
            })
            .build();
        meter
            .u64_observable_counter("twinguard.nats.partition_events")
            .with_unit("{event}")
            .with_description(
                "What happened to partitions: taken, handed_back (to their preferred owner), \
                 fenced (lost without a hand-over), restarted (from the last checkpoint after a \
                 failure)",
            )
            .with_callback(move |o| {
                for (event, n) in [
                    ("taken", &stats.taken),
                    ("handed_back", &stats.handed_back),
                    ("fenced", &stats.fenced),
                    ("restarted", &stats.restarted),
                ] {
                    o.observe(
                        n.load(Relaxed),
                        &[
                            instance.clone(),
                            opentelemetry::KeyValue::new("twinguard.event", event),
                        ],
                    );
                }
            })
            .build();
    }

    /// Reports a gateway's counters and connection, read at each scrape.
    #[cfg(feature = "gateway")]
    pub fn observe_gateway(&self, name: &str, stats: Arc<crate::gateway::GatewayStats>) {
        use std::sync::atomic::Ordering::Relaxed;
        let meter = self.meter();
        let gw = opentelemetry::KeyValue::new("twinguard.gateway", name.to_owned());
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_counter("twinguard.gateway.messages")
            .with_unit("{message}")
            .with_description(
                "Gateway messages by stage: received from the broker, forwarded (acknowledged \
                 by it), quarantined (committed to the store), refused (by the broker, then \
                 quarantined), store_failed (left unacknowledged, delivered again), \
                 retained_skipped (a retained message replayed on subscribing, not judged), \
                 shed (a device over its budget, dropped before judgement)",
            )
            .with_callback(move |o| {
                for (stage, n) in [
                    ("received", &s.received),
                    ("forwarded", &s.forwarded),
                    ("quarantined", &s.quarantined),
                    ("refused", &s.refused),
                    ("store_failed", &s.store_errors),
                    ("retained_skipped", &s.retained_skipped),
                    ("shed", &s.shed),
                ] {
                    o.observe(
                        n.load(Relaxed),
                        &[
                            g.clone(),
                            opentelemetry::KeyValue::new("twinguard.stage", stage),
                        ],
                    );
                }
            })
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_counter("twinguard.gateway.alerts")
            .with_unit("{event}")
            .with_description("Security events the gateway raised")
            .with_callback(move |o| o.observe(s.alerts.load(Relaxed), std::slice::from_ref(&g)))
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_counter("twinguard.gateway.connections")
            .with_unit("{connection}")
            .with_description("Broker connections made, the first included (reconnects = this - 1)")
            .with_callback(move |o| {
                o.observe(s.connections.load(Relaxed), std::slice::from_ref(&g));
            })
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_counter("twinguard.gateway.writes")
            .with_unit("{write}")
            .with_description(
                "Writes to the broker connection that carried packets (one flush each); \
                 packets_sent / writes is how many share a write",
            )
            .with_callback(move |o| o.observe(s.writes.load(Relaxed), std::slice::from_ref(&g)))
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_counter("twinguard.gateway.packets_sent")
            .with_unit("{packet}")
            .with_description(
                "MQTT packets written to the broker: forwards, alerts, acknowledgements, \
                 subscriptions, pings",
            )
            .with_callback(move |o| {
                o.observe(s.packets_sent.load(Relaxed), std::slice::from_ref(&g));
            })
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_gauge("twinguard.gateway.in_flight")
            .with_unit("{message}")
            .with_description(
                "Publishes (forwards and alerts) handed to the broker connection and not yet \
                 acknowledged",
            )
            .with_callback(move |o| {
                o.observe(s.in_flight.load(Relaxed), std::slice::from_ref(&g));
            })
            .build();
        let (s, g) = (stats.clone(), gw.clone());
        meter
            .u64_observable_gauge("twinguard.gateway.broker_dropped")
            .with_unit("{message}")
            .with_description(
                "The broker's own count of messages it dropped on full queues since it started, \
                 all clients (gateway.broker-drops-topic)",
            )
            .with_callback(move |o| {
                o.observe(s.broker_dropped.load(Relaxed), std::slice::from_ref(&g));
            })
            .build();
        meter
            .u64_observable_gauge("twinguard.gateway.connected")
            .with_description("1 while the broker connection is up, else 0")
            .with_callback(move |o| {
                o.observe(
                    u64::from(stats.connected.load(Relaxed)),
                    std::slice::from_ref(&gw),
                );
            })
            .build();
    }

    /// Reports the quarantine store's depth, its oldest held record and its writes, read at
    /// each scrape.
    #[cfg(feature = "store")]
    pub fn observe_store(&self, store: crate::store::QuarantineStore) {
        let meter = self.meter();
        let s = store.clone();
        meter
            .u64_observable_gauge("twinguard.quarantine.held")
            .with_unit("{message}")
            .with_description("Messages held in the quarantine store, waiting for an operator")
            .with_callback(move |o| {
                if let Ok((n, _)) = s.held() {
                    o.observe(n, &[]);
                }
            })
            .build();
        let s = store.clone();
        meter
            .f64_observable_gauge("twinguard.quarantine.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest held message (0 when none is held)")
            .with_callback(move |o| {
                if let Ok((_, oldest)) = s.held() {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    let age = oldest.map_or(0, |t| now.saturating_sub(t));
                    o.observe(age as f64 / 1000.0, &[]);
                }
            })
            .build();
        let s = store.clone();
        meter
            .u64_observable_counter("twinguard.quarantine.writes")
            .with_unit("{record}")
            .with_description("Quarantine records committed (result=ok) or not (result=error)")
            .with_callback(move |o| {
                let w = s.write_stats();
                o.observe(
                    w.writes,
                    &[opentelemetry::KeyValue::new("twinguard.result", "ok")],
                );
                o.observe(
                    w.failures,
                    &[opentelemetry::KeyValue::new("twinguard.result", "error")],
                );
            })
            .build();
        meter
            .f64_observable_counter("twinguard.quarantine.write.time")
            .with_unit("s")
            .with_description(
                "Time callers waited for their quarantine commits, summed (divide its rate by \
                 the writes' rate for the mean write latency)",
            )
            .with_callback(move |o| o.observe(store.write_stats().waited.as_secs_f64(), &[]))
            .build();
    }

    /// Reports the messages a device budget shed (the Mosquitto plugin's
    /// `plugin_opt_device_budget_rate`), read at each scrape. The gateway reports its own as
    /// the `shed` stage of `twinguard.gateway.messages`.
    pub fn observe_budget(&self, shed: Arc<std::sync::atomic::AtomicU64>) {
        self.meter()
            .u64_observable_counter("twinguard.device_budget.shed")
            .with_unit("{message}")
            .with_description(
                "Messages of a device over its budget, dropped before judgement so that other \
                 devices keep their share",
            )
            .with_callback(move |o| o.observe(shed.load(std::sync::atomic::Ordering::Relaxed), &[]))
            .build();
    }

    /// Reports what the alert sinks sent, failed and dropped, per sink, read at each scrape.
    #[cfg(feature = "alerts")]
    pub fn observe_alerts(&self, alerts: crate::alerts::Alerts) {
        let meter = self.meter();
        let a = alerts.clone();
        meter
            .u64_observable_counter("twinguard.alerts.events")
            .with_unit("{event}")
            .with_description(
                "Security events per sink by result: sent, failed, dropped (queue full)",
            )
            .with_callback(move |o| {
                for sink in a.stats().sinks {
                    for (result, n) in [
                        ("sent", sink.sent),
                        ("failed", sink.failed),
                        ("dropped", sink.dropped),
                    ] {
                        o.observe(
                            n,
                            &[
                                opentelemetry::KeyValue::new("twinguard.sink", sink.name.clone()),
                                opentelemetry::KeyValue::new("twinguard.result", result),
                            ],
                        );
                    }
                }
            })
            .build();
        meter
            .u64_observable_counter("twinguard.alerts.suppressed")
            .with_unit("{alert}")
            .with_description("Repeated alerts counted by the rate limiter instead of sent")
            .with_callback(move |o| o.observe(alerts.stats().suppressed, &[]))
            .build();
    }
}

#[cfg(all(feature = "store", feature = "alerts"))]
impl Telemetry {
    /// Reports the decision log's records written and lost, read at each scrape.
    pub fn observe_decision_log(&self, log: crate::decision_log::DecisionLog) {
        self.meter()
            .u64_observable_counter("twinguard.decision_log.records")
            .with_unit("{record}")
            .with_description("Decision log records written, or lost to a write error")
            .with_callback(move |o| {
                let s = log.stats();
                for (result, n) in [("written", s.written), ("lost", s.lost)] {
                    o.observe(
                        n,
                        &[opentelemetry::KeyValue::new("twinguard.result", result)],
                    );
                }
            })
            .build();
    }
}

/// A check `/readyz` runs: `Err` says what is not ready.
pub type ReadyCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The metrics and health listener.
pub struct TelemetryServer {
    listener: Guarded,
    state: Arc<ServerState>,
}

struct ServerState {
    telemetry: Telemetry,
    runtime: Runtime,
    checks: Vec<(String, ReadyCheck)>,
    /// The last readiness answer and when it was found: the store's check is a real write
    /// (fsynced), and `/readyz` answers anyone who can connect, so a burst of probes shares
    /// one answer per [`READY_FRESH`] instead of one write each.
    ready: std::sync::Mutex<Option<(std::time::Instant, Readiness)>>,
}

/// Ready, or the reasons not.
type Readiness = Result<(), Vec<String>>;

/// Scrapers and probes connected at once: a few are normal; past it new ones wait in the
/// kernel's backlog, so the listener can never use up the process's descriptors.
const MAX_CONNECTIONS: usize = 32;

/// How long a readiness answer is reused.
const READY_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl TelemetryServer {
    /// Binds `config.listen`. `/readyz` answers 200 when `runtime` has a generation and
    /// every named check passes, else 503 naming what failed.
    pub async fn bind(
        config: &TelemetryConfig,
        telemetry: Telemetry,
        runtime: Runtime,
        checks: Vec<(String, ReadyCheck)>,
    ) -> Result<Self, TelemetryError> {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| TelemetryError::Bind {
                    listen: config.listen.clone(),
                    source,
                })?;
        Ok(Self {
            listener: Guarded::new(listener, MAX_CONNECTIONS, "telemetry listener"),
            state: Arc::new(ServerState {
                telemetry,
                runtime,
                checks,
                ready: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Where it listens (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, _, slot) = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => accepted,
            };
            let state = Arc::clone(&self.state);
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(answer(&state, &req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A scrape is small; a connection that idles past this is dropped.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
            });
        }
    }
}

async fn answer(state: &Arc<ServerState>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let state = Arc::clone(state);
            // Observed instruments read the store (SQLite): off the executor's threads.
            let body = tokio::task::spawn_blocking(move || state.telemetry.render())
                .await
                .unwrap_or_else(|e| format!("# cannot collect the metrics: {e}\n"));
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let state = Arc::clone(state);
            let report = tokio::task::spawn_blocking(move || readiness(&state))
                .await
                .unwrap_or_else(|e| Err(vec![format!("the readiness check failed: {e}")]));
            match report {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready:\n{}\n", why.join("\n")),
                ),
            }
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!("no {other}: try /metrics, /healthz or /readyz\n"),
        ),
    }
}

fn readiness(state: &ServerState) -> Readiness {
    // Held while checking: concurrent probes wait for the one check rather than repeat it.
    let mut last = state
        .ready
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, answer)) = last.as_ref() {
        if at.elapsed() < READY_FRESH {
            return answer.clone();
        }
    }
    let answer = check_ready(state);
    *last = Some((std::time::Instant::now(), answer.clone()));
    answer
}

fn check_ready(state: &ServerState) -> Readiness {
    let mut why = Vec::new();
    if state.runtime.policy_set().generation() == 0 {
        why.push("policies: no generation is loaded".to_owned());
    }
    for (name, check) in &state.checks {
        if let Err(e) = check() {
            why.push(format!("{name}: {e}"));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why)
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
