//! A compiled policy: its component, digest, limits, instance pool and circuit breaker; and
//! the host side of the WIT contract (bindings, host imports, fault classification).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rand_chacha::rand_core::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::breaker::{Breaker, HeldDevice};
use crate::cache::Cache;
use crate::error::{boxed, Error, LoadError};
use crate::limits::{Fault, Isolation, Limits, OnFault};
use crate::message::Device;
use crate::metrics::{MetricKind, MetricReading, MetricSpec, PolicyMetrics};
use crate::output::GuestOutput;
use crate::payload::{Document, FieldError, FieldRef, FieldValue, Pointer, PointerSet};
use crate::signing::Trust;
use crate::state::{StateLimits, StateRefusal, StateStore};
use crate::text::escape_controls;
use crate::twin::LastValues;
use crate::wasi::Refused;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "policy",
        // A bad metric call faults the policy (a trap), as a bad decision does.
        imports: {
            "twinguard:policy/host.counter-add": trappable,
            "twinguard:policy/host.histogram-record": trappable,
        },
        // Every instance must answer `init` with the same manifest: compared.
        additional_derives: [PartialEq],
    });
}

use crate::call::{Call, Lean, Pre};
use bindings::twinguard::policy::host as wit_host;
pub(crate) use bindings::twinguard::policy::types as wit;

/// The contract version this host implements.
pub const WIT_VERSION: &str = "0.2.0";
pub(crate) const WIT_PACKAGE: &str = "twinguard:policy";

/// Guest `log` lines accepted per call; the rest are counted and dropped.
const LOG_LINES_PER_CALL: u32 = 32;
/// Characters of one guest log line kept.
const LOG_LINE_CHARS: usize = 1024;

/// Fields a manifest may declare.
pub const MAX_DECLARED_FIELDS: usize = 64;
/// `keep-last` pointers a manifest may declare.
pub const MAX_KEEP_LAST: usize = 16;
/// Metrics a manifest may declare.
pub const MAX_METRICS: usize = 32;
/// Bytes of one JSON Pointer in a manifest.
pub const MAX_POINTER_BYTES: usize = 1024;

/// What a message carries into a store while a policy evaluates it: everything the host
/// imports can hand out, and the payload parsed once for the whole chain.
pub(crate) struct MsgCtx {
    pub device: String,
    pub topic: String,
    pub attributes: Vec<(String, String)>,
    pub device_view: Option<Arc<Device>>,
    pub content_type: wit::ContentType,
    pub received_at_ms: u64,
    pub seed: u64,
    pub doc: Document,
}

/// A manifest the host checked: what to prepare for every call.
#[derive(Debug)]
pub(crate) struct Declared {
    fields: Vec<Pointer>,
    /// `fields`, grouped for [`Document::get_all`](crate::payload::Document::get_all).
    lookups: PointerSet,
    envelope: wit::Envelope,
    keep_last: Vec<Pointer>,
}

impl Declared {
    /// Checks a manifest; the error names the entry and what is wrong with it.
    fn check(m: &wit::Manifest) -> Result<(Self, Vec<MetricSpec>), String> {
        let over = |what: &str, n: usize, max: usize| {
            format!("the manifest declares {n} {what}; at most {max}")
        };
        if m.fields.len() > MAX_DECLARED_FIELDS {
            return Err(over("fields", m.fields.len(), MAX_DECLARED_FIELDS));
        }
        if m.keep_last.len() > MAX_KEEP_LAST {
            return Err(over("keep-last fields", m.keep_last.len(), MAX_KEEP_LAST));
        }
        if m.metrics.len() > MAX_METRICS {
            return Err(over("metrics", m.metrics.len(), MAX_METRICS));
        }
        let pointers = |list: &[String], what: &str| {
            list.iter()
                .map(|p| {
                    // Refused, not cut short: a shortened pointer would name another field.
                    if p.len() > MAX_POINTER_BYTES {
                        return Err(format!(
                            "manifest {what} {:?}…: {} bytes; at most {MAX_POINTER_BYTES}",
                            escape_controls(truncate(p, 64)),
                            p.len()
                        ));
                    }
                    Pointer::parse(p)
                        .map_err(|e| format!("manifest {what}: {}", escape_controls(&e)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let fields = pointers(&m.fields, "field")?;
        let keep_last = pointers(&m.keep_last, "keep-last field")?;
        let mut metrics: Vec<MetricSpec> = Vec::with_capacity(m.metrics.len());
        for metric in &m.metrics {
            check_metric_name(&metric.name)?;
            if metrics.iter().any(|known| known.name == metric.name) {
                return Err(format!(
                    "manifest metric {:?} is declared twice",
                    metric.name
                ));
            }
            metrics.push(MetricSpec {
                name: metric.name.clone(),
                kind: match metric.kind {
                    wit::MetricKind::Counter => MetricKind::Counter,
                    wit::MetricKind::Histogram => MetricKind::Histogram,
                },
                unit: escape_controls(truncate(&metric.unit, 32)).into_owned(),
                description: escape_controls(truncate(&metric.description, 256)).into_owned(),
            });
        }
        Ok((
            Self {
                lookups: PointerSet::new(&fields),
                fields,
                envelope: m.envelope,
                keep_last,
            },
            metrics,
        ))
    }

    /// The pointers whose last forwarded value the policy reads.
    pub(crate) fn keep_last(&self) -> &[Pointer] {
        &self.keep_last
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if ok {
        return Ok(());
    }
    Err(format!(
        "manifest metric name {:?} is not a metric name: lower-case letters, digits, '_' and          '.', starting with a letter, at most 64 characters",
        escape_controls(truncate(name, 80))
    ))
}

/// What the host keeps per store: WASI, the memory limiter, guest output, and the current
/// message while `evaluate` runs.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    output: GuestOutput,
    shared: Arc<Shared>,
    msg: Option<Box<MsgCtx>>,
    log_lines: u32,
    /// The current call's clock readings at its first epoch tick (see [`Clock`]).
    clock: Option<Clock>,
    /// What the guest's WASI clocks read during this call: the message's received time.
    now_ms: u64,
    /// The seed of the guest's WASI random sources during this call.
    seed: u64,
    /// Made from `seed` on the call's first random read.
    rng: Option<ChaCha8Rng>,
}

/// How long the current call has run, for the deadline. The deadline judges the policy, not
/// the machine: it counts the CPU time the guest's thread spent, so a loaded host (other
/// threads on every core) does not turn an honest policy's message into a fault. A wall-clock
/// backstop ([`wall_backstop`]: ten times the deadline, at least a second) still bounds a
/// guest whose thread is starved of CPU. Clocks are read from the epoch callback only, which runs once the call has
/// lasted a tick: a call that ends within its first tick costs no clock read at all.
#[derive(Clone, Copy)]
struct Clock {
    /// The thread's CPU time; `None` where the OS cannot tell (the wall clock decides).
    cpu: Option<Duration>,
    wall: Instant,
}

fn thread_cpu() -> Option<Duration> {
    cpu_time::ThreadTime::try_now()
        .ok()
        .map(|t| t.as_duration())
}

/// The wall-clock time after which a call is stopped whatever CPU time it used: ten times the
/// deadline, and at least a second, so that only a starved thread ever meets it.
pub(crate) fn wall_backstop(deadline: Duration) -> Duration {
    (deadline * 10).max(Duration::from_secs(1))
}

/// The parts of a policy its host imports need.
struct Shared {
    name: String,
    state: Arc<StateStore>,
    state_limits: StateLimits,
    global_limit: u64,
    /// Set once the first instance's manifest is checked.
    metrics: OnceLock<PolicyMetrics>,
    /// The random seed during `init`: from the module's digest.
    init_seed: u64,
}

/// Caps linear memory and records a refusal, because a failed `memory.grow` reaches the
/// host as a plain trap (the guest aborts) with no trap code saying why.
struct MemoryLimiter {
    cap: u64,
    denied: Option<u64>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.cap {
            self.denied = Some(desired as u64);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl HostState {
    fn new(shared: Arc<Shared>, memory_cap: u64) -> Self {
        let output = GuestOutput::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                denied: None,
            },
            output,
            shared,
            msg: None,
            log_lines: 0,
            clock: None,
            now_ms: 0,
            seed: 0,
            rng: None,
        }
    }

    /// What the guest's clocks read (see [`crate::wasi`]).
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The guest's random stream for this call (see [`crate::wasi`]).
    pub(crate) fn rng(&mut self) -> &mut ChaCha8Rng {
        let seed = self.seed;
        self.rng
            .get_or_insert_with(|| ChaCha8Rng::seed_from_u64(seed))
    }

    fn state_refusal(refusal: StateRefusal) -> wit::StateError {
        match refusal {
            StateRefusal::OverLimit(n) => wit::StateError::OverLimit(n),
            StateRefusal::TooManyDevices(n) => wit::StateError::TooManyDevices(n),
        }
    }

    fn metrics(&self) -> Result<&PolicyMetrics, Refused> {
        match (&self.msg, self.shared.metrics.get()) {
            (Some(_), Some(metrics)) => Ok(metrics),
            _ => Err(Refused(
                "a metric was recorded outside evaluate (metrics count messages)".into(),
            )),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for HostState {}

impl wit_host::Host for HostState {
    fn field(&mut self, pointer: String) -> Result<Option<wit::Value>, wit::FieldError> {
        let Some(ctx) = self.msg.as_mut() else {
            return Err(wit::FieldError::Unstructured);
        };
        ctx.doc
            .field(&pointer)
            .map(|v| v.map(value_to_wit))
            .map_err(field_error_to_wit)
    }

    fn payload(&mut self) -> Vec<u8> {
        self.msg
            .as_ref()
            .map(|ctx| ctx.doc.bytes().to_vec())
            .unwrap_or_default()
    }

    fn device_id(&mut self) -> String {
        self.msg
            .as_ref()
            .map(|ctx| ctx.device.clone())
            .unwrap_or_default()
    }

    fn topic(&mut self) -> String {
        self.msg
            .as_ref()
            .map(|ctx| ctx.topic.clone())
            .unwrap_or_default()
    }

    fn attributes(&mut self) -> Vec<(String, String)> {
        self.msg
            .as_ref()
            .map(|ctx| ctx.attributes.clone())
            .unwrap_or_default()
    }

    fn device_entry(&mut self) -> Option<wit::Device> {
        let dev = self.msg.as_ref()?.device_view.as_ref()?;
        Some(wit::Device {
            class: dev.class.clone(),
            attributes: dev.attributes.clone(),
        })
    }

    fn global_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.msg.as_ref()?;
        self.shared.state.global_get(&key)
    }

    fn global_set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit::StateError> {
        if self.msg.is_none() {
            return Err(wit::StateError::NoMessage);
        }
        let shared = &self.shared;
        shared
            .state
            .global_put(&key, Some(value), shared.global_limit)
            .map_err(Self::state_refusal)
    }

    fn global_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, wit::StateError> {
        if self.msg.is_none() {
            return Err(wit::StateError::NoMessage);
        }
        let shared = &self.shared;
        shared
            .state
            .global_swap(&key, expected.as_deref(), new, shared.global_limit)
            .map_err(Self::state_refusal)
    }

    fn global_delete(&mut self, key: String) {
        if self.msg.is_some() {
            // Removing never exceeds the budget.
            let _ = self.shared.state.global_put(&key, None, u64::MAX);
        }
    }

    fn counter_add(&mut self, metric: u32, value: u64) -> wasmtime::Result<()> {
        self.metrics()?
            .add(metric, value)
            .map_err(|bad| Refused(bad.0).into())
    }

    fn histogram_record(&mut self, metric: u32, value: f64) -> wasmtime::Result<()> {
        self.metrics()?
            .record(metric, value)
            .map_err(|bad| Refused(bad.0).into())
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        let device = &self.msg.as_ref()?.device;
        self.shared.state.get(device, &key)
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit::StateError> {
        let Some(ctx) = self.msg.as_ref() else {
            // Outside `evaluate` there is no device to attach state to.
            return Err(wit::StateError::NoMessage);
        };
        let shared = &self.shared;
        shared
            .state
            .set(&ctx.device, &key, value, shared.state_limits)
            .map_err(Self::state_refusal)
    }

    fn state_delete(&mut self, key: String) {
        if let Some(ctx) = self.msg.as_ref() {
            self.shared.state.delete(&ctx.device, &key);
        }
    }

    fn log(&mut self, level: wit::Level, text: String) {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(policy = %self.shared.name, "guest log limit reached; dropping lines");
            }
            return;
        }
        // Escaped: a guest's CR/LF would forge host log lines, its ESC rewrite a terminal.
        let text = escape_controls(truncate(&text, LOG_LINE_CHARS));
        let policy = &self.shared.name;
        match level {
            wit::Level::Trace => tracing::trace!(policy = %policy, "{text}"),
            wit::Level::Debug => tracing::debug!(policy = %policy, "{text}"),
            wit::Level::Info => tracing::info!(policy = %policy, "{text}"),
            wit::Level::Warn => tracing::warn!(policy = %policy, "{text}"),
            wit::Level::Error => tracing::error!(policy = %policy, "{text}"),
        }
    }
}

pub(crate) fn field_error_to_wit(e: FieldError) -> wit::FieldError {
    match e {
        FieldError::Unstructured => wit::FieldError::Unstructured,
        FieldError::Malformed(m) => wit::FieldError::Malformed(m),
        FieldError::BadPointer(m) => wit::FieldError::BadPointer(m),
    }
}

pub(crate) fn value_to_wit(v: FieldValue) -> wit::Value {
    match v {
        FieldValue::Null => wit::Value::Null,
        FieldValue::Bool(b) => wit::Value::Boolean(b),
        FieldValue::Integer(i) => wit::Value::Integer(i),
        FieldValue::Float(f) => wit::Value::Float(f),
        FieldValue::Text(s) => wit::Value::Text(s),
        FieldValue::Bytes(b) => wit::Value::Bytes(b),
        FieldValue::Array(n) => wit::Value::Array(n),
        FieldValue::Object(n) => wit::Value::Object(n),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A live instance: its store and the typed handle on its exports.
pub(crate) struct Instance {
    store: Store<HostState>,
    /// `evaluate`, called with [`Call`] (see [`crate::call`]); `init` has run.
    evaluate: wasmtime::component::Func,
    /// The record the next call lowers, kept between calls: its strings and lists keep their
    /// buffers, so a reused instance's call allocates only for the text values it carries.
    call: Call,
}

impl Instance {
    /// Boxed: an instance moves out of and back into the idle queue on every call, and a
    /// pointer moves where the whole record would be copied.
    fn new(store: Store<HostState>, evaluate: wasmtime::component::Func) -> Box<Self> {
        Box::new(Self {
            store,
            evaluate,
            call: Call::default(),
        })
    }
}

/// A device id or topic buffer larger than this is not kept for the next message: one huge
/// topic must not pin its buffer to a thread or an idle instance.
pub(crate) const NAME_KEPT_MAX: usize = 1024;

/// Writes a declared field's value into its slot of the call record, text and bytes into the
/// buffer the slot already holds if it holds one of the same kind.
fn fill(slot: &mut Option<wit::Value>, value: Option<FieldRef<'_>>) {
    match (slot.as_mut(), value) {
        (Some(wit::Value::Text(buf)), Some(FieldRef::Text(text))) => {
            buf.clear();
            buf.push_str(&text);
        }
        (Some(wit::Value::Bytes(buf)), Some(FieldRef::Bytes(bytes))) => {
            buf.clear();
            buf.extend_from_slice(&bytes);
        }
        (_, value) => *slot = value.map(|v| value_to_wit(v.into_owned())),
    }
}

/// Empties a field's slot once its call is over. A text or bytes buffer of at most
/// [`NAME_KEPT_MAX`] bytes stays for the field's next value, zeroed: nothing read from a
/// payload outlives its call, in the record or in the memory it keeps.
fn forget(slot: &mut Option<wit::Value>) {
    match slot {
        Some(wit::Value::Text(text)) if text.capacity() <= NAME_KEPT_MAX => {
            let mut bytes = std::mem::take(text).into_bytes();
            bytes.fill(0);
            bytes.clear();
            // Empty, so valid UTF-8: the buffer comes back without a copy.
            *text = String::from_utf8(bytes).unwrap_or_default();
        }
        Some(wit::Value::Bytes(bytes)) if bytes.capacity() <= NAME_KEPT_MAX => {
            bytes.fill(0);
            bytes.clear();
        }
        _ => *slot = None,
    }
}

/// Sets `slot` to `text` when `asked`, in the string it already holds if it holds one.
fn reuse_text(slot: &mut Option<String>, asked: bool, text: &str) {
    match slot {
        Some(s) if asked => {
            s.clear();
            s.push_str(text);
        }
        _ => *slot = asked.then(|| text.to_owned()),
    }
}

/// What a policy answered, or why it could not, and the fuel it spent.
pub(crate) struct Step {
    pub result: Result<wit::Decision, Fault>,
    pub fuel_used: u64,
}

/// What the runtime passes to every policy it loads.
pub(crate) struct LoadContext<'a> {
    pub engine: &'a Engine,
    pub linker: &'a Linker<HostState>,
    pub epoch_tick_ms: u64,
    pub idle_instances: usize,
    /// The compile cache, when `[engine] cache-dir` is set.
    pub cache: Option<&'a Cache>,
    /// The keys modules must be signed with; `None` checks nothing (`twinguard check`).
    pub trust: Option<&'a Trust>,
    /// Components already compiled, by digest: the active generation's, and those this load
    /// compiled. A reload of an unchanged module reuses them instead of compiling again, and a
    /// component several `[[policy]]` entries name is compiled once (a Python policy's ~20 MB
    /// took ~6 s per entry).
    pub compiled: std::sync::Mutex<HashMap<Arc<str>, Component>>,
    /// Counts the components compiled or read from the cache.
    pub compilations: &'a AtomicU64,
    /// What the host agrees to compile.
    pub compile: &'a crate::CompileLimits,
    /// The active generation's fresh-isolation snapshots, by module digest and configuration
    /// (all `init` depends on): a reload that keeps both reuses the snapshot, compiling nothing.
    pub snapshots: HashMap<SnapshotKey, Pre>,
}

/// What a fresh policy's snapshot depends on: its module's digest and its configuration.
pub(crate) type SnapshotKey = (Arc<str>, Vec<(String, String)>);

/// What a policy is loaded from.
#[derive(Clone)]
pub(crate) struct PolicySpec {
    pub name: String,
    pub path: PathBuf,
    pub config: Vec<(String, String)>,
    pub limits: Limits,
    pub isolation: Isolation,
    pub on_fault: OnFault,
    pub breaker: crate::breaker::BreakerSettings,
}

/// A compiled, validated policy, shared by every thread that evaluates with it.
pub struct Policy {
    /// The self-test cases the module ships (NDJSON).
    selftest: Option<Arc<str>>,
    spec: PolicySpec,
    /// Shared with every trace and alert, so a message costs no string copies.
    name: Arc<str>,
    version: Arc<str>,
    size: usize,
    pre: Pre,
    shared: Arc<Shared>,
    engine: Engine,
    epoch_tick: Duration,
    idle: ArrayQueue<Box<Instance>>,
    breaker: Breaker,
    faults: AtomicU64,
    evaluations: AtomicU64,
    /// The first instance's manifest, as it answered; later instances must answer the same.
    manifest: OnceLock<wit::Manifest>,
    /// That manifest, checked.
    declared: OnceLock<Declared>,
    /// Bound when the runtime has a meter.
    instruments: Option<crate::telemetry::PolicyInstruments>,
    /// Fresh isolation: the component rewritten with its memory as `init` left it, so a new
    /// instance starts initialised (see [`crate::snapshot`]).
    snapshot: Option<Pre>,
}

/// A policy's state as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Configured name.
    pub name: String,
    /// Version: SHA-256 of the component file, hex.
    pub version: String,
    /// The component file.
    pub path: PathBuf,
    /// Isolation mode.
    pub isolation: Isolation,
    /// Fault action.
    pub on_fault: OnFault,
    /// Effective limits.
    pub limits: Limits,
    /// Whether the policy-wide circuit breaker is open (the policy is not run for anyone; its
    /// on-fault action applies).
    pub breaker_open: bool,
    /// Devices the breaker holds (their messages get the on-fault action without a run).
    pub held_devices: Vec<HeldDevice>,
    /// Faults among the policy's last 64 runs (what opens its breaker).
    pub recent_faults: u32,
    /// Faults since load.
    pub faults: u64,
    /// Messages evaluated since load (breaker skips included).
    pub evaluations: u64,
    /// Fresh isolation only: new instances start from a snapshot of the memory `init` left,
    /// instead of running `init` each time (see the isolation docs for when it cannot be taken).
    pub pre_initialised: bool,
}

/// What `twinguard check` reports about a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// SHA-256 of the file, hex.
    pub digest: String,
    /// File size in bytes.
    pub size: usize,
    /// The contract version it was built against.
    pub wit_version: String,
    /// Its import names.
    pub imports: Vec<String>,
    /// Its export names.
    pub exports: Vec<String>,
    /// The self-test cases it ships (NDJSON; see the guest SDK's `selftest!`), if any.
    pub selftest: Option<String>,
}

/// Reads the component's imports and exports and checks the contract version, before any
/// linking, so a mismatch gets a precise error instead of a linker message.
fn inspect(ctx: &LoadContext<'_>, bytes: &[u8]) -> Result<(Component, ComponentInfo), LoadError> {
    let engine = ctx.engine;
    if bytes.get(..4) != Some(b"\0asm") {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8 are the version and layer: 1,0 / 0,0 for core modules.
    if bytes.get(6..8) == Some(&[0, 0]) {
        return Err(LoadError::CoreModule);
    }
    let sha: [u8; 32] = Sha256::digest(bytes).into();
    let digest = hex::encode(sha);
    let known = ctx
        .compiled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(digest.as_str())
        .cloned();
    let component = match known {
        Some(known) => known,
        None => {
            let component = compile_checked(ctx, &sha, bytes)?;
            ctx.compilations.fetch_add(1, Ordering::Relaxed);
            ctx.compiled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(digest.as_str().into(), component.clone());
            component
        }
    };
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let ours = |n: &&String| n.starts_with(&format!("{WIT_PACKAGE}/"));
    let handler = exports
        .iter()
        .find(|n| n.starts_with(&format!("{WIT_PACKAGE}/handler")));
    let found = handler
        .or_else(|| imports.iter().find(ours))
        .and_then(|n| n.split_once('@'))
        .map(|(_, v)| v.to_string());
    let Some(found) = found else {
        return Err(LoadError::WrongWorld {
            detail: format!(
                "it exports no {WIT_PACKAGE}/handler interface (its exports: {})",
                list_or_none(&exports)
            ),
            expected: WIT_VERSION,
        });
    };
    if !compatible(&found, WIT_VERSION) {
        return Err(LoadError::WrongVersion {
            found,
            expected: WIT_VERSION,
        });
    }
    if handler.is_none() {
        return Err(LoadError::WrongWorld {
            detail: format!(
                "it exports no {WIT_PACKAGE}/handler interface (its exports: {})",
                list_or_none(&exports)
            ),
            expected: WIT_VERSION,
        });
    }
    let info = ComponentInfo {
        digest,
        size: bytes.len(),
        wit_version: found,
        imports,
        exports,
        selftest: crate::selftest::cases_in(bytes),
    };
    Ok((component, info))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Semver compatibility as cargo reads it: same major, and for 0.x the same minor.
fn compatible(found: &str, expected: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(found), parse(expected)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    }
}

/// Reads, checks and links a component: everything short of instantiating it. `name` is the
/// policy's, for errors; `None` when only checking a file. The signature is checked on the
/// bytes read, before anything compiles them.
pub(crate) fn link(
    ctx: &LoadContext<'_>,
    name: Option<&str>,
    path: &Path,
) -> Result<(Pre, ComponentInfo, Vec<u8>), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        what: name.map_or_else(|| "component".into(), |n| format!("policy {n:?}")),
        path: path.to_path_buf(),
        source,
    })?;
    let fail = |cause| Error::Load {
        policy: name.unwrap_or("<check>").to_string(),
        path: path.to_path_buf(),
        cause,
    };
    let wrong_world = |e: wasmtime::Error| {
        fail(LoadError::WrongWorld {
            detail: format!("{e:#}"),
            expected: WIT_VERSION,
        })
    };
    if let Some(trust) = ctx.trust {
        let verified = trust
            .verify(path, &bytes)
            .map_err(|e| fail(LoadError::Signature(Box::new(e))))?;
        tracing::debug!(module = %path.display(), ?verified, "signature check");
    }
    let (component, info) = inspect(ctx, &bytes).map_err(fail)?;
    let instance_pre = ctx
        .linker
        .instantiate_pre(&component)
        .map_err(wrong_world)?;
    let pre = Pre::new(instance_pre).map_err(wrong_world)?;
    if name.is_none() {
        // `check` has no config to run `init` with, but the exports' signatures are only
        // type-checked when an instance is made: make one (under the default limits) and drop
        // it, so `check` refuses whatever a load would refuse before `init`.
        let shared = Arc::new(Shared {
            name: "<check>".into(),
            state: Arc::default(),
            state_limits: StateLimits {
                bytes: 0,
                devices: 0,
            },
            global_limit: 0,
            metrics: OnceLock::new(),
            init_seed: 0,
        });
        let limits = Limits::default();
        let mut store = Store::new(ctx.engine, HostState::new(shared, limits.memory_bytes));
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(copy_fuel(&limits));
        // Fuel is enabled engine-wide, so this cannot fail.
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(limits.deadline_ms.div_ceil(ctx.epoch_tick_ms.max(1)) + 1);
        let (instance, _) = pre.instantiate(&mut store).map_err(wrong_world)?;
        pre.bindings(&mut store, &instance).map_err(wrong_world)?;
    }
    Ok((pre, info, bytes))
}

/// Compiles `bytes` (SHA-256 `sha`) under the compile limits, checked before any compiler
/// (or a cached artifact of one) sees them, through the cache where there is one.
fn compile_checked(
    ctx: &LoadContext<'_>,
    sha: &[u8; 32],
    bytes: &[u8],
) -> Result<Component, LoadError> {
    crate::compile::check(bytes, ctx.compile)?;
    match ctx.cache {
        Some(cache) => cache.component(ctx.engine, sha, bytes),
        None => Component::new(ctx.engine, bytes),
    }
    .map_err(|e| LoadError::Compile(boxed(e)))
}

/// [`compile_checked`] for a component the host derived from a policy's module (instrumented
/// or pre-initialised).
fn compile_derived(ctx: &LoadContext<'_>, bytes: &[u8]) -> Result<Component, String> {
    let sha: [u8; 32] = Sha256::digest(bytes).into();
    compile_checked(ctx, &sha, bytes).map_err(|e| e.to_string())
}

impl Policy {
    /// Compiles, links and validates a policy: the version check, a first instantiation and
    /// `init` with its configuration. In `reuse` mode that first instance is kept.
    pub(crate) fn load(
        ctx: &LoadContext<'_>,
        spec: PolicySpec,
        state: Arc<StateStore>,
    ) -> Result<Self, Error> {
        let (pre, info, bytes) = link(ctx, Some(&spec.name), &spec.path)?;
        let mut policy = Self::from_pre(
            ctx,
            spec,
            state,
            pre,
            info.digest.into(),
            info.size,
            info.selftest.map(Arc::from),
        )?;
        if policy.spec.isolation == Isolation::Fresh {
            let key = (Arc::clone(&policy.version), policy.spec.config.clone());
            if let Some(snapshot) = ctx.snapshots.get(&key) {
                policy.snapshot = Some(snapshot.clone());
                return Ok(policy);
            }
            match policy.pre_initialise(ctx, &bytes) {
                Ok(snapshot) => {
                    tracing::info!(
                        policy = %policy.spec.name,
                        "fresh instances start from a snapshot taken after init"
                    );
                    policy.snapshot = Some(snapshot);
                }
                Err(why) => tracing::info!(
                    policy = %policy.spec.name,
                    "fresh instances run init each time: no snapshot ({why})"
                ),
            }
        }
        Ok(policy)
    }

    /// The same compiled module, instantiated and initialised anew with `config` and state of
    /// its own: what self-test cases run on. Nothing is read or compiled again.
    pub(crate) fn probe(
        &self,
        ctx: &LoadContext<'_>,
        config: Vec<(String, String)>,
    ) -> Result<Self, Error> {
        let mut spec = self.spec.clone();
        spec.config = config;
        Self::from_pre(
            ctx,
            spec,
            Arc::default(),
            self.pre.clone(),
            Arc::clone(&self.version),
            self.size,
            None,
        )
    }

    pub(crate) fn from_pre(
        ctx: &LoadContext<'_>,
        spec: PolicySpec,
        state: Arc<StateStore>,
        pre: Pre,
        version: Arc<str>,
        size: usize,
        selftest: Option<Arc<str>>,
    ) -> Result<Self, Error> {
        // `spec` moves into the policy; init errors still need its name and path.
        let (name, path) = (spec.name.clone(), spec.path.clone());
        let fail = |cause| Error::Load {
            policy: name,
            path,
            cause,
        };
        // The digest is hex: its first 16 digits make the seed.
        let init_seed = version
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            name: spec.name.clone(),
            state,
            state_limits: StateLimits {
                bytes: spec.limits.state_bytes,
                devices: spec.limits.state_devices,
            },
            global_limit: spec.limits.global_state_bytes,
            metrics: OnceLock::new(),
            init_seed,
        });
        let epoch_tick = Duration::from_millis(ctx.epoch_tick_ms);
        let policy = Self {
            selftest,
            name: spec.name.as_str().into(),
            version,
            size,
            pre,
            shared,
            engine: ctx.engine.clone(),
            epoch_tick,
            idle: ArrayQueue::new(ctx.idle_instances.max(1)),
            breaker: Breaker::new(spec.breaker),
            faults: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            manifest: OnceLock::new(),
            declared: OnceLock::new(),
            instruments: None,
            snapshot: None,
            spec,
        };
        let first = policy.instantiate().map_err(|e| {
            fail(match e {
                Fault::Init(text) => LoadError::Init(text),
                Fault::Instantiate(text) => LoadError::Instantiate(text.into()),
                other => LoadError::InitFault(other),
            })
        })?;
        if policy.spec.isolation == Isolation::Reuse {
            // The queue is empty and has room for at least one.
            let _ = policy.idle.push(first);
        }
        Ok(policy)
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The fresh-isolation snapshot and what it depends on, for a later generation to reuse.
    pub(crate) fn snapshot(&self) -> Option<(SnapshotKey, Pre)> {
        let snapshot = self.snapshot.clone()?;
        Some((
            (Arc::clone(&self.version), self.spec.config.clone()),
            snapshot,
        ))
    }

    /// The compiled component, for a later generation to reuse.
    pub(crate) fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }

    pub(crate) fn version_arc(&self) -> Arc<str> {
        self.version.clone()
    }

    /// The version: SHA-256 of the component, hex.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The self-test cases the module ships, if any.
    pub(crate) fn selftest(&self) -> Option<&str> {
        self.selftest.as_deref()
    }

    pub(crate) fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The component file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// Component size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn on_fault(&self) -> OnFault {
        self.spec.on_fault
    }

    /// The status the API reports.
    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            name: self.spec.name.clone(),
            version: self.version.to_string(),
            path: self.spec.path.clone(),
            isolation: self.spec.isolation,
            on_fault: self.spec.on_fault,
            limits: self.spec.limits,
            breaker_open: self.breaker.is_open(),
            held_devices: self.breaker.held(),
            recent_faults: self.breaker.recent_faults(),
            faults: self.faults.load(Ordering::Relaxed),
            evaluations: self.evaluations.load(Ordering::Relaxed),
            pre_initialised: self.snapshot.is_some(),
        }
    }

    /// The metrics the policy declared, read now.
    pub fn metrics(&self) -> Vec<MetricReading> {
        self.shared
            .metrics
            .get()
            .map(PolicyMetrics::read)
            .unwrap_or_default()
    }

    /// The checked manifest (set once the policy has loaded).
    pub(crate) fn declared(&self) -> Option<&Declared> {
        self.declared.get()
    }

    /// The policy's circuit breaker (per device, then policy-wide).
    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Binds this policy's metrics (a loaded policy of a runtime with a meter).
    pub(crate) fn instrumented(mut self, with: Option<&crate::telemetry::Instruments>) -> Self {
        self.instruments = with.map(|i| i.policy(&self.name, &self.version));
        self
    }

    pub(crate) fn instruments(&self) -> Option<&crate::telemetry::PolicyInstruments> {
        self.instruments.as_ref()
    }

    pub(crate) fn record_evaluation(&self) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, faulted: bool) {
        if faulted {
            self.faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the limits and the guest's clock and random seed for one call.
    fn arm(&self, store: &mut Store<HostState>, now_ms: u64, seed: u64) {
        // Fuel is enabled engine-wide, so this cannot fail.
        let _ = store.set_fuel(self.spec.limits.fuel);
        // The callback decides at every tick from the first one on (see `Clock`).
        store.set_epoch_deadline(1);
        let data = store.data_mut();
        data.limiter.denied = None;
        data.log_lines = 0;
        data.clock = None;
        data.now_ms = now_ms;
        data.seed = seed;
        data.rng = None;
    }

    fn fuel_used(&self, store: &Store<HostState>) -> u64 {
        let left = store.get_fuel().unwrap_or(0);
        self.spec.limits.fuel.saturating_sub(left)
    }

    /// A store under the policy's memory cap, with the deadline's epoch callback.
    fn new_store(&self) -> Store<HostState> {
        let state = HostState::new(self.shared.clone(), self.spec.limits.memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(copy_fuel(&self.spec.limits));
        let deadline = Duration::from_millis(self.spec.limits.deadline_ms);
        let tick = self.epoch_tick;
        let backstop = wall_backstop(deadline);
        store.epoch_deadline_callback(move |mut ctx| {
            let data = ctx.data_mut();
            let Some(clock) = data.clock else {
                // First tick of this call: it has run at most one tick before now.
                data.clock = Some(Clock {
                    cpu: thread_cpu(),
                    wall: Instant::now(),
                });
                return Ok(UpdateDeadline::Continue(1));
            };
            // At most one tick ran before the readings: count it as spent.
            let wall = clock.wall.elapsed() + tick;
            let cpu = match (clock.cpu, thread_cpu()) {
                (Some(then), Some(now)) => now.saturating_sub(then) + tick,
                _ => wall,
            };
            if cpu >= deadline || wall >= backstop {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store
    }

    /// A new instance ready to evaluate: from the pre-initialised snapshot where there is one
    /// (fresh isolation; `init` already ran in it), else a new instance with `init` run under
    /// the policy's limits.
    fn instantiate(&self) -> Result<Box<Instance>, Fault> {
        let mut store = self.new_store();
        self.arm(&mut store, 0, self.shared.init_seed);
        if let Some(snapshot) = self.snapshot.as_ref() {
            return match snapshot.instantiate(&mut store) {
                Ok((_, evaluate)) => Ok(Instance::new(store, evaluate)),
                Err(e) => Err(self
                    .classify_limit(&store, &e)
                    .unwrap_or_else(|| Fault::Instantiate(format!("{e:#}")))),
            };
        }
        let made = self
            .pre
            .instantiate(&mut store)
            .and_then(|(instance, evaluate)| {
                Ok((self.pre.bindings(&mut store, &instance)?, evaluate))
            });
        let (bindings, evaluate) = match made {
            Ok(made) => made,
            Err(e) => {
                if let Some(fault) = self.classify_limit(&store, &e) {
                    return Err(fault);
                }
                return Err(Fault::Instantiate(format!("{e:#}")));
            }
        };
        self.init(store, &bindings, evaluate)
    }

    /// Runs `init` in a new instance and checks its manifest.
    fn init(
        &self,
        mut store: Store<HostState>,
        bindings: &bindings::Policy,
        evaluate: wasmtime::component::Func,
    ) -> Result<Box<Instance>, Fault> {
        let result = bindings
            .twinguard_policy_handler()
            .call_init(&mut store, &self.spec.config);
        let output = self.drain_output(&store);
        match result {
            Ok(Ok(manifest)) => {
                self.accept(manifest)?;
                Ok(Instance::new(store, evaluate))
            }
            Ok(Err(text)) => Err(Fault::Init(
                escape_controls(truncate(&text, 1024)).into_owned(),
            )),
            Err(e) => Err(self.classify(&store, &e, output)),
        }
    }

    /// The component rewritten with its memory as `init` leaves it under this policy's
    /// configuration (see [`crate::snapshot`]); an error says why it cannot be taken, and the
    /// policy then runs `init` in every instance. `init` runs here under the policy's limits,
    /// and must answer the manifest the first instance answered.
    fn pre_initialise(&self, ctx: &LoadContext<'_>, bytes: &[u8]) -> Result<Pre, String> {
        let instrumented = crate::snapshot::Instrumented::new(bytes)?;
        let component = compile_derived(ctx, &instrumented.bytes)?;
        let pre = ctx
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("linking the instrumented component: {e:#}"))?;
        let mut store = self.new_store();
        self.arm(&mut store, 0, self.shared.init_seed);
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| format!("instantiating the instrumented component: {e:#}"))?;
        let bindings =
            bindings::Policy::new(&mut store, &instance).map_err(|e| format!("{e:#}"))?;
        let answered = bindings
            .twinguard_policy_handler()
            .call_init(&mut store, &self.spec.config);
        let _ = self.drain_output(&store);
        match answered {
            Ok(Ok(manifest)) if self.manifest.get() == Some(&manifest) => {}
            Ok(Ok(_)) => return Err("init answered another manifest".into()),
            Ok(Err(text)) => return Err(format!("init failed: {text}")),
            Err(e) => return Err(format!("init trapped: {e:#}")),
        }
        if !store.data().table.is_empty() {
            // A handle the guest keeps in memory would name nothing in a new instance.
            return Err("init left WASI resources open (an output stream?)".into());
        }
        let rewritten = instrumented.capture(&mut store, instance, |store| {
            self.arm(store, 0, self.shared.init_seed);
        })?;
        if rewritten.len() > crate::snapshot::MAX_SNAPSHOT_BYTES.saturating_add(bytes.len()) {
            return Err(format!(
                "the snapshot is {} bytes; at most {} more than the module",
                rewritten.len(),
                crate::snapshot::MAX_SNAPSHOT_BYTES
            ));
        }
        let component = compile_derived(ctx, &rewritten)?;
        let pre = ctx
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("linking the snapshot: {e:#}"))?;
        Pre::new(pre).map_err(|e| format!("{e:#}"))
    }

    /// Checks an instance's manifest: the first one sets what every call prepares, later
    /// ones (new instances) must match it.
    fn accept(&self, manifest: wit::Manifest) -> Result<(), Fault> {
        if let Some(first) = self.manifest.get() {
            if *first != manifest {
                return Err(Fault::Init(
                    "init answered another manifest than the policy's first instance did \
                     (a manifest must depend on the configuration only)"
                        .into(),
                ));
            }
            return Ok(());
        }
        let (declared, metrics) = Declared::check(&manifest).map_err(Fault::Init)?;
        let _ = self.shared.metrics.set(PolicyMetrics::new(&metrics));
        let _ = self.declared.set(declared);
        let _ = self.manifest.set(manifest);
        Ok(())
    }

    /// Fills the call's record for the message in `ctx`, in place (see [`Instance::call`]).
    fn wire(&self, ctx: &mut MsgCtx, twin: &LastValues, msg: &mut Call) {
        // Set by the first instance's `init`, before any call.
        let (envelope, keep_last) = self
            .declared
            .get()
            .map_or((wit::Envelope::empty(), &[][..]), |d| {
                (d.envelope, &d.keep_last[..])
            });
        reuse_text(
            &mut msg.device_id,
            envelope.contains(wit::Envelope::DEVICE_ID),
            &ctx.device,
        );
        reuse_text(
            &mut msg.topic,
            envelope.contains(wit::Envelope::TOPIC),
            &ctx.topic,
        );
        msg.content_type = ctx.content_type;
        msg.payload_len = u32::try_from(ctx.doc.bytes().len()).unwrap_or(u32::MAX);
        msg.received_at_ms = ctx.received_at_ms;
        msg.seed = ctx.seed;
        msg.last.clear();
        if !keep_last.is_empty() {
            let known = twin.get(&ctx.device, keep_last);
            msg.last
                .extend(known.into_iter().map(|v| v.map(value_to_wit)));
        }
        self.fields_into(ctx, &mut msg.fields);
    }

    /// The declared fields for the message in `ctx`, looked up in the payload's index (built
    /// once per message, shared by the whole chain) and handed over without a call per field.
    /// The first failing field, in declared order, fails them all.
    fn fields_into(&self, ctx: &mut MsgCtx, out: &mut crate::call::Fields) {
        let mut values = std::mem::replace(out, Ok(Lean::default())).unwrap_or_default();
        let Some(declared) = self.declared().filter(|d| !d.fields.is_empty()) else {
            values.clear();
            *out = Ok(values);
            return;
        };
        // The slots keep the emptied buffers of the last call; `get_all` writes every one.
        values.resize(declared.fields.len(), None);
        let mut first_error: Option<(usize, FieldError)> = None;
        ctx.doc
            .get_all(&declared.lookups, |i, result| match result {
                Ok(value) => {
                    if let Some(slot) = values.get_mut(i) {
                        fill(slot, value);
                    }
                }
                Err(e) => {
                    if first_error.as_ref().is_none_or(|(at, _)| i < *at) {
                        first_error = Some((i, e));
                    }
                }
            });
        *out = match first_error {
            Some((_, e)) => Err(field_error_to_wit(e)),
            None => Ok(values),
        };
    }

    /// Evaluates one message. `ctx` travels into the store for the host imports and comes
    /// back, so the parsed payload is shared by the whole chain.
    pub(crate) fn evaluate(&self, ctx: &mut Option<Box<MsgCtx>>, twin: &LastValues) -> Step {
        let pooled = match self.spec.isolation {
            Isolation::Reuse => self.idle.pop(),
            Isolation::Fresh => None,
        };
        let mut instance = match pooled.map_or_else(|| self.instantiate(), Ok) {
            Ok(i) => i,
            Err(fault) => {
                self.record(true);
                return Step {
                    result: Err(fault),
                    fuel_used: 0,
                };
            }
        };
        let Some(msg_ctx) = ctx.as_mut() else {
            return Step {
                result: Err(Fault::BadDecision(
                    "internal error: no message to evaluate".into(),
                )),
                fuel_used: 0,
            };
        };
        self.wire(msg_ctx, twin, &mut instance.call);
        let (received_at_ms, seed) = (msg_ctx.received_at_ms, msg_ctx.seed);
        self.arm(&mut instance.store, received_at_ms, seed);
        instance.store.data_mut().msg = ctx.take();
        let result = crate::call::evaluate(instance.evaluate, &mut instance.store, &instance.call);
        *ctx = instance.store.data_mut().msg.take();
        // The values came from this message's payload: not kept past its call. Nor is an
        // outsized name's buffer, one per idle instance.
        match &mut instance.call.fields {
            Ok(values) => values.iter_mut().for_each(forget),
            Err(_) => instance.call.fields = Ok(Lean::default()),
        }
        instance.call.last.clear();
        for name in [&mut instance.call.device_id, &mut instance.call.topic] {
            if name.as_ref().is_some_and(|s| s.capacity() > NAME_KEPT_MAX) {
                *name = None;
            }
        }
        let fuel_used = self.fuel_used(&instance.store);
        let output = self.drain_output(&instance.store);
        let result = match result {
            Ok(decision) => self.check_size(&decision).map(|()| decision),
            Err(e) => Err(self.classify(&instance.store, &e, output)),
        };
        let faulted = result.is_err();
        self.record(faulted);
        // A faulted instance is dropped, never reused: its store may be poisoned.
        if !faulted && self.spec.isolation == Isolation::Reuse {
            let _ = self.idle.push(instance);
        }
        Step { result, fuel_used }
    }

    fn check_size(&self, d: &wit::Decision) -> Result<(), Fault> {
        if let wit::Verdict::Redact(edits) = &d.verdict {
            let max = self.spec.limits.redact_edits;
            if edits.len() as u64 > max {
                return Err(Fault::BadDecision(format!(
                    "{} redaction edits; at most {max} (limits.redact-edits)",
                    edits.len()
                )));
            }
        }
        let alert = |a: &wit::Alert| a.code.len() + a.detail.len() + 1;
        let mut size = d.alerts.iter().map(alert).sum::<usize>();
        size += match &d.verdict {
            wit::Verdict::Allow => 0,
            wit::Verdict::Quarantine(r) => r.len(),
            wit::Verdict::Alert(a) => alert(a),
            wit::Verdict::Redact(edits) => edits
                .iter()
                .map(|e| {
                    e.pointer.len()
                        + match &e.action {
                            wit::EditAction::Remove => 1,
                            wit::EditAction::Mask(m) => m.len() + 1,
                        }
                })
                .sum(),
        };
        let limit = self.spec.limits.decision_bytes;
        if size as u64 > limit {
            return Err(Fault::DecisionTooLarge {
                size: size as u64,
                limit,
            });
        }
        Ok(())
    }

    fn drain_output(&self, store: &Store<HostState>) -> Option<String> {
        let (text, dropped) = store.data().output.take()?;
        tracing::info!(
            policy = %self.spec.name,
            dropped_bytes = dropped,
            "guest output: {}",
            escape_controls(text.trim_end())
        );
        Some(text)
    }

    fn classify_limit(&self, store: &Store<HostState>, e: &wasmtime::Error) -> Option<Fault> {
        if let Some(wanted) = store.data().limiter.denied {
            return Some(Fault::Memory {
                wanted,
                cap: self.spec.limits.memory_bytes,
            });
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Some(Fault::Fuel(self.spec.limits.fuel)),
            Some(Trap::Interrupt) => Some(Fault::Deadline(self.spec.limits.deadline_ms)),
            _ => None,
        }
    }

    fn classify(
        &self,
        store: &Store<HostState>,
        e: &wasmtime::Error,
        output: Option<String>,
    ) -> Fault {
        if let Some(fault) = self.classify_limit(store, e) {
            return fault;
        }
        if let Some(refused) = e
            .chain()
            .find_map(|c| c.downcast_ref::<crate::wasi::Refused>())
        {
            return Fault::HostCall(refused.0.clone());
        }
        // wasmtime's error type for it is private; its text is all there is to know it by.
        if e.chain()
            .any(|c| c.to_string().contains("fuel allocated for hostcalls"))
        {
            return Fault::HostCall(format!(
                "the policy handed the host more than {} bytes in one call (3 × limits.memory-bytes); \
                 strings or lists that point at the same bytes count each time",
                self.spec.limits.copy_bytes()
            ));
        }
        let mut text = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            // The top-level text is only "error while executing at wasm backtrace"; the
            // cause is at the end of the chain.
            None => e
                .chain()
                .last()
                .map_or_else(|| e.to_string(), ToString::to_string),
        };
        if let Some(said) = output.as_deref().and_then(last_words) {
            text.push_str(" (guest said: ");
            text.push_str(&escape_controls(truncate(&said, 300)));
            text.push(')');
        }
        Fault::Trap(text)
    }
}

/// [`Limits::copy_bytes`] as wasmtime's hostcall fuel, which bounds each crossing's copy.
fn copy_fuel(limits: &Limits) -> usize {
    usize::try_from(limits.copy_bytes()).unwrap_or(usize::MAX)
}

/// What a guest printed before trapping: a Rust panic prints "thread … panicked at
/// file:line:col:" then the message, then a note about backtraces.
fn last_words(output: &str) -> Option<String> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    if let Some(i) = lines.iter().rposition(|l| l.contains(" panicked at ")) {
        let location = lines[i].split(" panicked at ").nth(1).unwrap_or("");
        let message = lines
            .get(i + 1..)
            .map(|rest| rest.join(" "))
            .unwrap_or_default();
        return Some(format!("panicked at {location} {message}"));
    }
    lines.last().map(ToString::to_string)
}

/// Links the host imports of the contract (`twinguard:policy/host`).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    bindings::Policy::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |s| s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(fields: Vec<String>) -> wit::Manifest {
        wit::Manifest {
            fields,
            envelope: wit::Envelope::empty(),
            keep_last: Vec::new(),
            metrics: Vec::new(),
        }
    }

    #[test]
    fn an_overlong_manifest_pointer_is_refused_not_cut_short() {
        let at_limit = format!("/{}", "a".repeat(MAX_POINTER_BYTES - 1));
        assert!(Declared::check(&manifest(vec![at_limit])).is_ok());
        let over = format!("/{}", "a".repeat(MAX_POINTER_BYTES));
        let err = Declared::check(&manifest(vec![over])).unwrap_err();
        assert!(err.contains("1025 bytes; at most 1024"), "{err}");
    }
}
