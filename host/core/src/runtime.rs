//! The runtime: one engine per process, the active policy set, and evaluation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wasmtime::component::Linker;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::breaker::{Gate, Tripped};
use crate::cache::{Cache, CacheStats};
use crate::config::{Config, Profiler, Unrouted};
use crate::error::{boxed, Error};
use crate::limits::{Fault, OnFault};
use crate::message::{
    Action, Alert, ContentType, Device, Message, Outcome, PolicyTrace, Severity, Verdict,
};
use crate::payload::{Document, Edit, EditAction, Format, Pointer, RedactError};
use crate::pipeline::{self, Route, TopicFilter};
use crate::policy::{self, wit, HostState, LoadContext, MsgCtx, Policy, PolicySpec, PolicyStatus};
use crate::registry::{Registry, UnknownDevice};
use crate::shadow::{Shadow, ShadowReport, ShadowSlot};
use crate::signing::Trust;
use crate::state::{Scope, StateChange, StateJournal, StateStore};
use crate::telemetry::{Instruments, RouteInstruments};
use crate::twin::LastValues;

/// The policy runtime: build it once per process from a [`Config`], then call
/// [`evaluate`](Self::evaluate) from as many threads as you like. Cloning is cheap (it is a
/// handle) and every clone evaluates with the same policies.
///
/// ```no_run
/// use twinguard_core::{ContentType, Message, Runtime};
/// let runtime = Runtime::from_config_file("twinguard.toml")?;
/// let outcome = runtime.evaluate(&Message::new(
///     "press-7",
///     "plant/press-7/telemetry",
///     ContentType::Json,
///     br#"{"temp": 21.5}"#.to_vec(),
/// ));
/// if outcome.action.forwards() {
///     // publish outcome.payload to the twin
/// }
/// # Ok::<(), twinguard_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    active: ArcSwap<PolicySet>,
    /// State per policy name, kept across reloads of the same name.
    states: Mutex<HashMap<String, Arc<StateStore>>>,
    /// The last forwarded values policies asked for (`keep-last`), kept across reloads.
    twin: Arc<LastValues>,
    /// Where changes to policies' state and the last values are reported, if anywhere.
    journal: Option<Arc<dyn StateJournal>>,
    epoch_tick_ms: u64,
    /// What the host agrees to compile. Set at start (a reload keeps it: the engine's
    /// settings do not change while it runs).
    compile: crate::CompileLimits,
    idle_instances: usize,
    /// Compiled components on disk (`[engine] cache-dir`), for this engine.
    cache: Option<Cache>,
    /// Serialises reloads.
    reloading: Mutex<()>,
    /// A candidate judging beside the active version of one policy, if any.
    shadow: ShadowSlot,
    /// Held for its `Drop`, which stops the thread.
    /// Components compiled or read from the compile cache since start.
    compilations: AtomicU64,
    /// The embedder's metrics, when it gave a meter.
    telemetry: Option<Instruments>,
    _ticker: Ticker,
}

impl Inner {
    /// The state of the policy named `name`, created (journaled, if there is a journal) on
    /// first use.
    fn state_of(&self, name: &str) -> Arc<StateStore> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = states.get(name) {
            return s.clone();
        }
        let store = Arc::new(match &self.journal {
            Some(j) => StateStore::journaled(name, j.clone()),
            None => StateStore::default(),
        });
        states.insert(name.to_owned(), store.clone());
        store
    }

    /// What loading a policy needs; `trust` is `None` only for `check`. Every load reuses the active generation's compiled components: only a digest none of
    /// them has is compiled (or read from the cache).
    fn load_context<'a>(&'a self, trust: Option<&'a Trust>) -> LoadContext<'a> {
        let active = self.active.load();
        let compiled = active
            .policies
            .iter()
            .map(|p| (p.version_arc(), p.component().clone()))
            .collect();
        let snapshots = active
            .policies
            .iter()
            .filter_map(|p| p.snapshot())
            .collect();
        LoadContext {
            engine: &self.engine,
            linker: &self.linker,
            epoch_tick_ms: self.epoch_tick_ms,
            idle_instances: self.idle_instances,
            cache: self.cache.as_ref(),
            trust,
            compiled: Mutex::new(compiled),
            compilations: &self.compilations,
            compile: &self.compile,
            snapshots,
        }
    }
}

/// One immutable generation of policies and routes. A message is evaluated entirely within
/// the generation it started with.
pub struct PolicySet {
    generation: u64,
    policies: Vec<Arc<Policy>>,
    routes: Vec<Route>,
    unrouted: Unrouted,
    twin: Arc<LastValues>,
    /// Every pointer some policy of the set keeps the last value of, once each.
    keep_last: Vec<Pointer>,
    /// Counts messages no route matched, when the runtime has a meter.
    unrouted_instruments: Option<RouteInstruments>,
    /// The device registry of this generation, and what happens to a device it lacks.
    registry: Option<(Arc<Registry>, UnknownDevice)>,
}

impl PolicySet {
    /// A set of one policy that judges every topic: what shadow candidates and self-test
    /// probes run in.
    pub(crate) fn alone(policy: Policy, generation: u64, unrouted: Unrouted) -> Self {
        let policies = vec![Arc::new(policy)];
        Self {
            generation,
            keep_last: keep_last_of(&policies),
            policies,
            routes: vec![Route {
                filter: TopicFilter::any(),
                class: None,
                chain: vec![0],
                instruments: None,
            }],
            unrouted,
            twin: Arc::default(),
            unrouted_instruments: None,
            registry: None,
        }
    }

    /// This generation's number (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Its policies, in configuration order.
    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }
}

/// Increments the engine's epoch every tick, which is what makes deadlines fire.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("twinguard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(Box::new(e)))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes at the start of each pooled memory reset by memset rather than madvise: a guest with
/// a 64 KiB stack keeps its stack, data and first heap pages in here.
const KEEP_RESIDENT: usize = 256 << 10;

/// A configuration handed over in code (not read from a file) failed validation.
fn invalid(message: String) -> Error {
    Error::Config {
        origin: "<given>".into(),
        message,
    }
}

/// Builds the process's engine: fuel, epochs and the pooling allocator.
fn engine(config: &Config) -> Result<Engine, Error> {
    let e = &config.engine;
    let n = e.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    // A Rust component holds a few core instances (main module, shims) and usually one
    // memory; leave room for richer ones.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(usize::try_from(e.max_memory_bytes).unwrap_or(usize::MAX))
        // Reset the start of a freed memory with memset instead of madvise: the page faults
        // and TLB-flush IPIs of madvise dominated `fresh` evaluations (measured, BENCHMARKS.md).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(16 << 10);
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if e.profiler == Profiler::PerfMap {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&wasm).map_err(|e| Error::Engine(boxed(e)))
}

impl Runtime {
    /// Reads a TOML config file and builds the runtime (see [`Config`]).
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(Config::from_file(path)?)
    }

    /// Builds the runtime: the engine, the epoch ticker, and the first generation with every
    /// policy compiled, instantiated and initialised. Any failure names the policy and file.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::builder(config).build()
    }

    /// A runtime with more than a config: a meter, a state journal. See [`RuntimeBuilder`].
    pub fn builder(config: Config) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            meter: None,
            journal: None,
        }
    }

    /// Puts back one change a [`StateJournal`] recorded earlier (typically before a
    /// restart), before traffic flows: nothing is reported to the journal again, and the
    /// state limits are not applied (they bound what policies write, and they wrote it).
    /// State of a policy not in the current config is kept for when it is loaded. A last
    /// value whose bytes this build cannot read is skipped; the result says so.
    ///
    /// ```no_run
    /// use twinguard_core::{Runtime, Scope, StateChange};
    /// let runtime = Runtime::from_config_file("twinguard.toml")?;
    /// runtime.restore_state(StateChange {
    ///     scope: Scope::Device { policy: "replay", device: "press-7" },
    ///     key: "seq",
    ///     value: Some(&41u64.to_le_bytes()),
    /// });
    /// # Ok::<(), twinguard_core::Error>(())
    /// ```
    pub fn restore_state(&self, change: StateChange<'_>) -> bool {
        let (policy, device) = match change.scope {
            Scope::LastValue { device } => {
                return self.inner.twin.restore(device, change.key, change.value)
            }
            Scope::Device { policy, device } => (policy, Some(device)),
            Scope::Global { policy } => (policy, None),
        };
        self.inner
            .state_of(policy)
            .restore(device, change.key, change.value);
        true
    }

    /// [`new`](Self::new), recording the runtime's metrics through `meter` (see
    /// [`telemetry`](crate::telemetry) and `docs/metrics.md`): per policy its verdicts,
    /// faults, step time and fuel; per route its messages by action and chain time; set
    /// builds by result and time; and, observed when the meter's reader collects, the active
    /// generation, the policies loaded, breakers and compilations. Nothing global is read or
    /// installed: the embedder owns the meter provider and its exporters.
    ///
    /// ```no_run
    /// use opentelemetry::metrics::MeterProvider as _;
    /// use twinguard_core::{Config, Runtime};
    /// # fn provider() -> opentelemetry_sdk::metrics::SdkMeterProvider { unimplemented!() }
    /// let provider = provider(); // with the readers and exporters the embedder chose
    /// let runtime = Runtime::with_meter(
    ///     Config::from_file("twinguard.toml")?,
    ///     provider.meter("twinguard"),
    /// )?;
    /// // Every evaluation from here on is counted; the provider's readers export it.
    /// assert_eq!(runtime.policy_set().generation(), 1);
    /// # Ok::<(), twinguard_core::Error>(())
    /// ```
    pub fn with_meter(config: Config, meter: opentelemetry::metrics::Meter) -> Result<Self, Error> {
        Self::builder(config).meter(meter).build()
    }

    fn build(
        config: Config,
        meter: Option<opentelemetry::metrics::Meter>,
        journal: Option<Arc<dyn StateJournal>>,
    ) -> Result<Self, Error> {
        config.validate().map_err(|e| invalid(e.into()))?;
        let engine = engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| Error::Engine(boxed(e)))?;
        crate::wasi::bound(&mut linker).map_err(|e| Error::Engine(boxed(e)))?;
        policy::add_to_linker(&mut linker).map_err(|e| Error::Engine(boxed(e)))?;
        let tick = Duration::from_millis(config.engine.epoch_tick_ms);
        let ticker = Ticker::start(engine.clone(), tick)?;
        let idle_instances = match config.engine.idle_instances {
            0 => std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
            n => n as usize,
        };
        let cache = config
            .engine
            .cache_dir
            .as_deref()
            .map(|dir| Cache::open(dir, config.engine.cache_key_file.as_deref(), &engine));
        let inner = Inner {
            cache,
            engine,
            linker,
            active: ArcSwap::from_pointee(PolicySet {
                generation: 0,
                policies: Vec::new(),
                routes: Vec::new(),
                unrouted: config.defaults.unrouted,
                twin: Arc::default(),
                keep_last: Vec::new(),
                unrouted_instruments: None,
                registry: None,
            }),
            states: Mutex::new(HashMap::new()),
            twin: Arc::new(LastValues::journaled(journal.clone())),
            journal,
            epoch_tick_ms: config.engine.epoch_tick_ms,
            compile: config.engine.compile_limits(),
            idle_instances,
            reloading: Mutex::new(()),
            shadow: ShadowSlot::default(),
            compilations: AtomicU64::new(0),
            telemetry: meter.as_ref().map(Instruments::new),
            _ticker: ticker,
        };
        let runtime = Self {
            inner: Arc::new(inner),
        };
        let set = runtime.build_set(&config, 1)?;
        runtime.inner.active.store(Arc::new(set));
        if let Some(meter) = &meter {
            crate::telemetry::observe(meter, Arc::downgrade(&runtime.inner), |inner| {
                let set = inner.active.load();
                crate::telemetry::Observed {
                    generation: set.generation,
                    policies: set
                        .policies
                        .iter()
                        .map(|p| {
                            (
                                p.name_arc(),
                                p.version_arc(),
                                p.breaker().is_open(),
                                p.breaker().held_count(),
                            )
                        })
                        .collect(),
                    compilations: inner.compilations.load(Ordering::Relaxed),
                    cache: inner.cache.as_ref().map(Cache::stats),
                    custom: set
                        .policies
                        .iter()
                        .map(|p| (p.name_arc(), p.metrics()))
                        .collect(),
                }
            });
        }
        Ok(runtime)
    }

    fn build_set(&self, config: &Config, generation: u64) -> Result<PolicySet, Error> {
        let started = Instant::now();
        let built = self.build_set_timed(config, generation);
        if let Some(t) = &self.inner.telemetry {
            t.reload(built.is_ok(), started.elapsed());
        }
        built
    }

    fn build_set_timed(&self, config: &Config, generation: u64) -> Result<PolicySet, Error> {
        let inner = &self.inner;
        let telemetry = inner.telemetry.as_ref();
        // Read first: a class route naming a class no device has is refused below.
        let registry = match &config.registry {
            Some(r) => Some((
                Arc::new(Registry::load(&r.path).map_err(|e| invalid(e.to_string()))?),
                r.unknown,
            )),
            None => None,
        };
        // Read again on every build, so a reload picks up rotated keys.
        let trust = Trust::from_config(&config.signing).map_err(Error::Signing)?;
        let ctx = inner.load_context(Some(&trust));
        let mut policies = Vec::with_capacity(config.policies.len());
        let mut index = HashMap::new();
        for p in &config.policies {
            let state = inner.state_of(&p.name);
            let spec = PolicySpec {
                name: p.name.clone(),
                path: p.path.clone(),
                config: p
                    .config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
                limits: config.limits_of(p),
                isolation: p.isolation.unwrap_or(config.defaults.isolation),
                on_fault: p.on_fault.unwrap_or(config.defaults.on_fault),
                breaker: crate::breaker::BreakerSettings {
                    threshold: p
                        .breaker_threshold
                        .unwrap_or(config.defaults.breaker_threshold),
                    rate: p.breaker_rate.unwrap_or(config.defaults.breaker_rate),
                    cooldown_ms: p
                        .breaker_cooldown_ms
                        .unwrap_or(config.defaults.breaker_cooldown_ms),
                },
            };
            index.insert(p.name.clone(), policies.len());
            let policy = Policy::load(&ctx, spec, state)?.instrumented(telemetry);
            if let Some(cases) = policy.selftest() {
                let passed = crate::selftest::run(&ctx, &policy, cases)?;
                tracing::info!(policy = %p.name, passed, "self-tests passed");
            }
            policies.push(Arc::new(policy));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                if let (Some(class), Some((reg, _))) = (&r.class, &registry) {
                    if !reg.classes().contains(class) {
                        return Err(invalid(format!(
                            "route ({}) can never match: no device of {} has class {class:?} \
                             (its classes: {})",
                            r.describe(),
                            reg.path().display(),
                            reg.classes().iter().cloned().collect::<Vec<_>>().join(", ")
                        )));
                    }
                }
                Ok(Route {
                    // Validated with the config; the error is for completeness.
                    filter: TopicFilter::parse(r.filter_text())
                        .map_err(|e| invalid(format!("route filter {:?}: {e}", r.filter)))?,
                    class: r.class.clone(),
                    chain: r
                        .chain
                        .iter()
                        .filter_map(|n| index.get(n).copied())
                        .collect(),
                    instruments: telemetry.map(|t| t.route(Some(&r.describe_plain()))),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(PolicySet {
            generation,
            keep_last: keep_last_of(&policies),
            policies,
            routes,
            unrouted: config.defaults.unrouted,
            twin: inner.twin.clone(),
            unrouted_instruments: telemetry.map(|t| t.route(None)),
            registry,
        })
    }

    /// Replaces the active policy set with one built from `config`. The new set is compiled
    /// and validated first; on any error the active set stays as it was. Messages already
    /// being evaluated finish on the old set. Per-device state of a policy survives when the
    /// new set has a policy of the same name.
    pub fn reload(&self, config: &Config) -> Result<u64, Error> {
        config.validate().map_err(|e| invalid(e.into()))?;
        // Reloads one at a time (never on the message path): two that read the same active
        // generation would both number theirs the next.
        let _one = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = self.inner.active.load().generation + 1;
        let set = self.build_set(config, generation)?;
        self.inner.active.store(Arc::new(set));
        Ok(generation)
    }

    /// How many components this runtime has compiled (or read from the compile cache) since
    /// it started. A reload compiles only modules whose digest no active policy has, so a
    /// reload that changes configs, limits or routes adds nothing here.
    pub fn compilations(&self) -> u64 {
        self.inner.compilations.load(Ordering::Relaxed)
    }

    /// The active generation.
    pub fn policy_set(&self) -> Arc<PolicySet> {
        self.inner.active.load_full()
    }

    /// Status of every active policy: version, breaker, fault counts.
    pub fn policies(&self) -> Vec<PolicyStatus> {
        self.inner
            .active
            .load()
            .policies
            .iter()
            .map(|p| p.status())
            .collect()
    }

    /// The metrics each active policy declared and emits (`host.counter-add`,
    /// `host.histogram-record`), by policy name, in configuration order. Counts start with
    /// the generation that loaded the policy.
    pub fn policy_metrics(&self) -> Vec<(String, Vec<crate::metrics::MetricReading>)> {
        self.inner
            .active
            .load()
            .policies
            .iter()
            .map(|p| (p.name().to_string(), p.metrics()))
            .collect()
    }

    /// Closes the circuit breaker of the named policy and releases every device it holds.
    /// Returns whether the policy exists.
    pub fn reset_breaker(&self, name: &str) -> bool {
        let set = self.inner.active.load();
        let found = set.policies.iter().find(|p| p.name() == name);
        found.inspect(|p| p.breaker().reset()).is_some()
    }

    /// Releases one device the named policy's breaker holds, so its next message is judged
    /// again. Returns whether it was held.
    pub fn release_device(&self, policy: &str, device: &str) -> bool {
        let set = self.inner.active.load();
        let found = set.policies.iter().find(|p| p.name() == policy);
        found.is_some_and(|p| p.breaker().release(device))
    }

    /// Evaluates one message through the chain its topic routes to. Never fails: a policy's
    /// failure is a fault, handled by its on-fault action and reported in the outcome.
    /// Takes no global lock; safe to call from many threads at once.
    pub fn evaluate(&self, message: &Message) -> Outcome {
        let set = self.inner.active.load();
        let outcome = evaluate_in(&set, message);
        self.inner.shadow.offer(message, &outcome);
        outcome
    }

    /// Starts shadow mode for policy `name`: the component at `module`, loaded with the active
    /// version's config and limits (and checked against `config`'s `[signing]`), judges every
    /// message the active version judges, without enforcing anything (see
    /// [`ShadowReport`]). Replaces a shadow already running.
    pub fn start_shadow(&self, name: &str, module: &Path, config: &Config) -> Result<(), Error> {
        let set = self.inner.active.load_full();
        let Some(active) = set.policies.iter().find(|p| p.name() == name) else {
            return Err(invalid(format!(
                "shadow: no active policy named {name:?} to compare with"
            )));
        };
        let trust = Trust::from_config(&config.signing).map_err(Error::Signing)?;
        let ctx = self.inner.load_context(Some(&trust));
        let mut spec = active.spec().clone();
        spec.path = module.to_path_buf();
        // State of its own: the candidate must not move the active version's per-device state.
        let candidate = Policy::load(&ctx, spec, Arc::default())?;
        if let Some(cases) = candidate.selftest() {
            crate::selftest::run(&ctx, &candidate, cases)?;
        }
        let alone = PolicySet::alone(candidate, set.generation, set.unrouted);
        let shadow = Shadow::start(alone, name.to_owned(), active.version().to_owned());
        self.inner.shadow.start(shadow);
        Ok(())
    }

    /// What the running shadow has seen, if one runs.
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        self.inner.shadow.read(Shadow::report)
    }

    /// Stops shadow mode; returns its final report.
    pub fn stop_shadow(&self) -> Option<ShadowReport> {
        self.inner.shadow.stop().map(|s| s.report())
    }

    /// The policy being shadowed, if any.
    pub fn shadowed(&self) -> Option<String> {
        self.inner.shadow.read(|s| s.policy().to_owned())
    }

    /// [`evaluate`](Self::evaluate) for async callers: the guest runs on tokio's blocking
    /// pool, so the executor's threads are never blocked by a policy. Needs a tokio runtime.
    pub async fn evaluate_async(&self, message: Message) -> Outcome {
        let runtime = self.clone();
        match tokio::task::spawn_blocking(move || runtime.evaluate(&message)).await {
            Ok(outcome) => outcome,
            // evaluate() does not panic on input; if the blocking task was cancelled (the
            // runtime is shutting down) re-raise, as there is no outcome to give.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Validates a component without configuring it: format, contract version and world.
    /// This is what `twinguard check` prints.
    pub fn check_component(&self, path: impl AsRef<Path>) -> Result<policy::ComponentInfo, Error> {
        policy::link(&self.inner.load_context(None), None, path.as_ref()).map(|(_, info, _)| info)
    }

    /// [`check_component`](Self::check_component), then the self-test cases the component
    /// ships (see [`crate::cases`]), each on an instance of its own initialised with the case's
    /// settings (none when it names none), under `limits`: what `twinguard check` does, with
    /// one compilation. The outer error refuses the component; the inner result is the
    /// self-tests': `Ok(None)` when it ships none, else the steps passed or the first failure.
    #[allow(clippy::type_complexity)]
    pub fn check_selftests(
        &self,
        path: impl AsRef<Path>,
        limits: crate::Limits,
    ) -> Result<(policy::ComponentInfo, Result<Option<usize>, Error>), Error> {
        crate::selftest::run_unconfigured(&self.inner.load_context(None), path.as_ref(), limits)
    }

    /// Reloads `config` with everything policies remember forgotten: per-device and
    /// policy-wide state and the last forwarded values. Between the cases of a test run
    /// (`twinguard test`), so each starts as a fresh deployment would; compiled components are
    /// reused. A live deployment has no use for it.
    pub fn reset(&self, config: &Config) -> Result<u64, Error> {
        self.inner
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner.twin.clear();
        self.reload(config)
    }

    /// What the compile cache did so far; `None` when `[engine] cache-dir` is not set.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache.as_ref().map(Cache::stats)
    }
}

/// Builds a [`Runtime`] with what [`Runtime::new`] leaves out.
///
/// ```no_run
/// use std::sync::Arc;
/// use twinguard_core::{Config, Runtime, StateChange, StateJournal};
/// struct Log;
/// impl StateJournal for Log {
///     fn record(&self, change: StateChange<'_>) {
///         println!("{:?} {} changed", change.scope, change.key);
///     }
/// }
/// let runtime = Runtime::builder(Config::from_file("twinguard.toml")?)
///     .journal(Arc::new(Log))
///     .build()?;
/// # let _ = runtime;
/// # Ok::<(), twinguard_core::Error>(())
/// ```
#[must_use]
pub struct RuntimeBuilder {
    config: Config,
    meter: Option<opentelemetry::metrics::Meter>,
    journal: Option<Arc<dyn StateJournal>>,
}

impl RuntimeBuilder {
    /// Records the runtime's metrics through `meter` (see [`Runtime::with_meter`]).
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Reports every change to policies' per-device and policy-wide state and to the last
    /// forwarded values to `journal`, so they can be kept across restarts and put back with
    /// [`Runtime::restore_state`]. Shadow candidates and self-test probes keep state of their
    /// own, which is not reported.
    pub fn journal(mut self, journal: Arc<dyn StateJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Builds the runtime, as [`Runtime::new`] does.
    pub fn build(self) -> Result<Runtime, Error> {
        Runtime::build(self.config, self.meter, self.journal)
    }
}

fn content_format(ct: ContentType) -> Option<Format> {
    match ct {
        ContentType::Json => Some(Format::Json),
        ContentType::Cbor => Some(Format::Cbor),
        ContentType::Text | ContentType::Binary => None,
    }
}

/// The pointers a set's policies keep last values of, each once.
fn keep_last_of(policies: &[Arc<Policy>]) -> Vec<Pointer> {
    let mut all: Vec<Pointer> = Vec::new();
    for p in policies.iter().filter_map(|p| p.declared()) {
        for pointer in p.keep_last() {
            if !all.contains(pointer) {
                all.push(pointer.clone());
            }
        }
    }
    all
}

fn wit_content_type(ct: ContentType) -> wit::ContentType {
    match ct {
        ContentType::Json => wit::ContentType::Json,
        ContentType::Cbor => wit::ContentType::Cbor,
        ContentType::Text => wit::ContentType::Text,
        ContentType::Binary => wit::ContentType::Binary,
    }
}

fn severity(s: wit::Severity) -> Severity {
    match s {
        wit::Severity::Info => Severity::Info,
        wit::Severity::Low => Severity::Low,
        wit::Severity::Medium => Severity::Medium,
        wit::Severity::High => Severity::High,
        wit::Severity::Critical => Severity::Critical,
    }
}

fn alert_of(p: &Policy, a: wit::Alert) -> Alert {
    Alert {
        policy: p.name_arc(),
        version: p.version_arc(),
        severity: severity(a.severity),
        code: a.code,
        detail: a.detail,
    }
}

fn fault_alert(p: &Policy, fault: &Fault) -> Alert {
    Alert {
        policy: p.name_arc(),
        version: p.version_arc(),
        severity: Severity::High,
        code: "policy-fault".into(),
        detail: format!(
            "policy {} (version {}) faulted: {fault}",
            p.name(),
            short(p.version())
        ),
    }
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// Applies a policy's redaction to the message in flight; `Ok(true)` when some edit matched.
fn apply_redaction(
    ct: ContentType,
    doc: &mut Document,
    edits: Vec<wit::Edit>,
) -> Result<bool, Fault> {
    if doc.format().is_none() {
        return Err(Fault::BadDecision(format!(
            "redaction asked for a {ct} payload; only json and cbor payloads have fields"
        )));
    }
    let edits: Vec<Edit> = edits
        .into_iter()
        .map(|e| Edit {
            pointer: e.pointer,
            action: match e.action {
                wit::EditAction::Remove => EditAction::Remove,
                wit::EditAction::Mask(m) => EditAction::Mask(m),
            },
        })
        .collect();
    match doc.redact(&edits) {
        Ok(changed) => Ok(changed),
        Err(RedactError::Malformed(m)) => Err(Fault::BadDecision(format!(
            "cannot redact: the payload is not valid {ct}: {m}"
        ))),
        Err(e) => Err(Fault::BadDecision(e.to_string())),
    }
}

/// The clock that times chain steps: the CPU's time-stamp counter where it is invariant
/// (a few ns a read, against ~12 ns for the vDSO's `clock_gettime` here: two reads per
/// message were 6 % of allow-all's profile), calibrated once per process.
fn step_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// The whole evaluation of one message within one generation.
pub(crate) fn evaluate_in(set: &PolicySet, message: &Message) -> Outcome {
    let mut outcome = Outcome {
        action: Action::Allow,
        payload: bytes::Bytes::new(),
        redacted: false,
        alerts: Vec::new(),
        trace: Vec::new(),
        generation: set.generation,
    };
    // The device's registry entry: the embedder's, else the registry's. A device the registry
    // lacks is held back unjudged unless `unknown = "allow"`.
    let mut device_view = message.device.clone();
    if let (None, Some((registry, unknown))) = (&device_view, &set.registry) {
        match (registry.get(&message.device_id), unknown) {
            (Some(entry), _) => device_view = Some(Arc::clone(entry)),
            (None, UnknownDevice::Allow) => {}
            (None, UnknownDevice::Quarantine) => {
                outcome.payload = message.payload.clone();
                outcome.action = Action::Quarantine {
                    policy: None,
                    reason: format!(
                        "device {:?} is not in the registry ({})",
                        message.device_id,
                        registry.path().display()
                    ),
                };
                if let Some(m) = &set.unrouted_instruments {
                    m.message(&outcome.action);
                }
                return outcome;
            }
        }
    }
    let class = device_view.as_deref().map(|d| d.class.as_str());
    let Some(route) = pipeline::route(&set.routes, &message.topic, class) else {
        outcome.payload = message.payload.clone();
        if set.unrouted == Unrouted::Quarantine {
            outcome.action = Action::Quarantine {
                policy: None,
                reason: format!("no route matches topic {:?}", message.topic),
            };
        }
        if let Some(m) = &set.unrouted_instruments {
            m.message(&outcome.action);
        }
        return outcome;
    };
    let ct = message.content_type;
    let mut ctx = Some(context_for(message, device_view));
    let mut quarantine: Option<(String, String)> = None;
    outcome.trace.reserve_exact(route.chain.len());
    let clock = step_clock();
    let mut step_start = clock.raw();
    for &i in &route.chain {
        let Some(p) = set.policies.get(i) else {
            continue;
        };
        p.record_evaluation();
        let gate = p.breaker().gate(&message.device_id);
        let step = match gate {
            Gate::Run => p.evaluate(&mut ctx, &set.twin),
            Gate::DeviceHeld(n) => policy::Step {
                result: Err(Fault::DeviceHeld(n)),
                fuel_used: 0,
            },
            Gate::Open(n) => policy::Step {
                result: Err(Fault::BreakerOpen(n)),
                fuel_used: 0,
            },
        };
        // One clock read per step: a step's time runs from the previous step's end.
        let now = clock.raw();
        let elapsed = clock.delta(step_start, now);
        step_start = now;
        // The ctx always comes back from the store (see Policy::evaluate).
        let Some(ctx_ref) = ctx.as_mut() else {
            break;
        };
        let verdict = match step.result {
            Ok(decision) => {
                let wit::Decision { verdict, alerts } = decision;
                let verdict = match verdict {
                    wit::Verdict::Allow => Ok(Verdict::Allow),
                    wit::Verdict::Alert(a) => {
                        outcome.alerts.push(alert_of(p, a));
                        Ok(Verdict::Alert)
                    }
                    wit::Verdict::Quarantine(reason) => {
                        quarantine = Some((p.name().to_string(), reason));
                        Ok(Verdict::Quarantine)
                    }
                    wit::Verdict::Redact(edits) => {
                        let n = edits.len();
                        apply_redaction(ct, &mut ctx_ref.doc, edits).map(|changed| {
                            outcome.redacted |= changed;
                            Verdict::Redact(n)
                        })
                    }
                };
                if verdict.is_ok() {
                    outcome
                        .alerts
                        .extend(alerts.into_iter().map(|a| alert_of(p, a)));
                }
                verdict
            }
            Err(fault) => Err(fault),
        };
        if gate == Gate::Run {
            let faulted = verdict.is_err();
            if let Some(tripped) = p.breaker().record(&message.device_id, faulted) {
                outcome
                    .alerts
                    .push(tripped_alert(p, &message.device_id, tripped));
            }
        }
        let verdict = verdict.unwrap_or_else(|fault| {
            tracing::warn!(policy = %p.name(), version = %short(p.version()), %fault, "policy fault");
            outcome.alerts.push(fault_alert(p, &fault));
            if p.on_fault() == OnFault::Quarantine {
                quarantine = Some((p.name().to_string(), format!("policy fault: {fault}")));
            }
            Verdict::Fault(fault)
        });
        if let Some(m) = p.instruments() {
            m.step(&verdict, step.fuel_used, elapsed);
        }
        outcome.trace.push(PolicyTrace {
            policy: p.name_arc(),
            version: p.version_arc(),
            verdict,
            fuel_used: step.fuel_used,
            elapsed,
        });
        if quarantine.is_some() {
            break;
        }
    }
    if quarantine.is_none() && !set.keep_last.is_empty() {
        if let Some(c) = ctx.as_mut() {
            // What the twin now holds: the payload as forwarded.
            let values: Vec<_> = set
                .keep_last
                .iter()
                .map(|p| (p.text().clone(), c.doc.get(p).ok().flatten()))
                .collect();
            set.twin.record(&c.device, values);
        }
    }
    let payload = match ctx {
        Some(ctx) => finish(ctx),
        None => {
            // Cannot happen (Policy::evaluate always hands the context back); should it, fail
            // closed rather than forward a payload whose redactions may be lost.
            quarantine = Some((
                "twinguard".into(),
                "internal error: message context lost".into(),
            ));
            message.payload.clone()
        }
    };
    outcome.payload = payload;
    outcome.action = if let Some((policy, reason)) = quarantine {
        Action::Quarantine {
            policy: Some(policy),
            reason,
        }
    } else if !outcome.alerts.is_empty() {
        Action::Alert
    } else if outcome.redacted {
        Action::Redact
    } else {
        Action::Allow
    };
    if let Some(m) = &route.instruments {
        m.message(&outcome.action);
    }
    outcome
}

thread_local! {
    /// The context of the thread's last message, for the next one: its box, its name buffers
    /// and its attribute list are reused, so a warm thread builds a context without an
    /// allocation, and it moves into and out of each policy's store as a pointer.
    static SPARE: std::cell::Cell<Option<Box<MsgCtx>>> = const { std::cell::Cell::new(None) };
}

/// At most this many attributes' room is kept in the thread's spare context.
const ATTRIBUTES_KEPT_MAX: usize = 64;

/// The context `message` is evaluated in, in the thread's spare one if it has one.
fn context_for(message: &Message, device_view: Option<Arc<Device>>) -> Box<MsgCtx> {
    let ct = message.content_type;
    // A spare is always emptied by `finish`; a new one starts empty.
    let mut ctx = SPARE.take().unwrap_or_else(|| {
        Box::new(MsgCtx {
            device: String::new(),
            topic: String::new(),
            attributes: Vec::new(),
            device_view: None,
            content_type: wit::ContentType::Binary,
            received_at_ms: 0,
            seed: 0,
            doc: Document::default(),
        })
    });
    ctx.device.push_str(&message.device_id);
    ctx.topic.push_str(&message.topic);
    ctx.attributes.extend(message.attributes.iter().cloned());
    ctx.device_view = device_view;
    ctx.content_type = wit_content_type(ct);
    ctx.received_at_ms = message.received_at_ms;
    ctx.seed = message.seed();
    ctx.doc = Document::new(content_format(ct), message.payload.clone());
    ctx
}

/// The payload as the chain left it. The context, emptied, is kept for the thread's next
/// message, unless an outsized name or attribute list would pin its buffer to the thread.
fn finish(mut ctx: Box<MsgCtx>) -> bytes::Bytes {
    let doc = std::mem::take(&mut ctx.doc);
    ctx.device.clear();
    ctx.topic.clear();
    ctx.attributes.clear();
    ctx.device_view = None;
    if ctx.device.capacity() <= policy::NAME_KEPT_MAX
        && ctx.topic.capacity() <= policy::NAME_KEPT_MAX
        && ctx.attributes.capacity() <= ATTRIBUTES_KEPT_MAX
    {
        SPARE.set(Some(ctx));
    }
    doc.into_bytes()
}

/// The alert a breaker raises once when it holds a device or opens a policy.
fn tripped_alert(p: &Policy, device: &str, tripped: Tripped) -> Alert {
    let (code, detail) = match tripped {
        Tripped::Device(n) => (
            "device-held",
            format!(
                "device {device:?} made policy {:?} fault on {n} of its last {} messages: its \
                 messages get the on-fault action without running the policy, other devices \
                 are judged as before",
                p.name(),
                crate::breaker::DEVICE_WINDOW
            ),
        ),
        Tripped::Policy(n) => (
            "breaker-open",
            format!(
                "policy {:?} faulted on {n} of its last {} runs across devices: its circuit \
                 breaker is open, every message gets the on-fault action",
                p.name(),
                crate::breaker::POLICY_WINDOW
            ),
        ),
    };
    Alert::new(p.name_arc(), p.version_arc(), Severity::High, code, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrouted_default_is_quarantine_and_configurable() {
        let rt = Runtime::new(Config::default()).unwrap();
        let m = Message::new("d", "x/y", ContentType::Text, b"hi".to_vec());
        let out = rt.evaluate(&m);
        assert!(matches!(
            out.action,
            Action::Quarantine { policy: None, .. }
        ));
        assert_eq!(out.payload, &b"hi"[..]);
        let allow = Config::from_toml("[defaults]\nunrouted = \"allow\"\n", ".").unwrap();
        let rt = Runtime::new(allow).unwrap();
        assert_eq!(rt.evaluate(&m).action, Action::Allow);
    }
}
