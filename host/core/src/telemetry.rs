//! The runtime's own metrics, recorded through an OpenTelemetry [`Meter`] the embedder hands
//! to [`Runtime::with_meter`](crate::Runtime::with_meter). Without one nothing is recorded and
//! nothing is paid: no global meter provider is ever read or installed.
//!
//! The message path records through **bound** instruments: each policy binds its attribute
//! sets (name, version, verdict) once when its generation loads, and each route binds its
//! own, so a message costs a few atomic adds and one short per-policy histogram lock, never a
//! hash of attributes or an allocation. Rare events (faults, reloads) use plain instruments.
//!
//! Every metric is documented in `docs/metrics.md`; names follow OpenTelemetry's conventions
//! (dots, base units) and become `twinguard_…` in Prometheus.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use crate::metrics::MetricValue;
use crate::{Action, Fault, Verdict};

/// Bucket bounds (seconds) of the duration histograms: 1 µs to 1 s, where policy and chain
/// times fall (OpenTelemetry's default buckets are for milliseconds-scale requests).
pub const DURATION_BOUNDS: [f64; 19] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
];

/// Bucket bounds of the fuel histogram: 1,000 to 100 million units, about ×3 apart.
pub const FUEL_BOUNDS: [f64; 11] = [1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8];

/// Attribute keys, shared with the front ends so a dashboard joins on the same names.
pub mod keys {
    /// The policy's configured name.
    pub const POLICY: &str = "twinguard.policy.name";
    /// The policy's version: the first 12 hex digits of its content digest.
    pub const VERSION: &str = "twinguard.policy.version";
    /// What the policy decided: `allow`, `redact`, `alert`, `quarantine` or `fault`.
    pub const VERDICT: &str = "twinguard.verdict";
    /// What happened to the message: `allow`, `redact`, `alert` or `quarantine`.
    pub const ACTION: &str = "twinguard.action";
    /// The route's topic filter (`(unrouted)` for a message no route matched).
    pub const ROUTE: &str = "twinguard.route";
    /// Why a policy faulted ([`Fault::code`](crate::Fault::code)).
    pub const ERROR_TYPE: &str = "error.type";
    /// A reload's result: `success` or `failure`.
    pub const RESULT: &str = "twinguard.result";
    /// The name a policy declared one of its own metrics under.
    pub const METRIC: &str = "twinguard.metric";
}

/// The instruments of one runtime, made once from the embedder's meter.
pub(crate) struct Instruments {
    evaluations: Counter<u64>,
    faults: Counter<u64>,
    policy_duration: Histogram<f64>,
    fuel: Histogram<u64>,
    messages: Counter<u64>,
    reloads: Counter<u64>,
    reload_duration: Histogram<f64>,
}

/// The verdicts in the order [`PolicyInstruments::verdicts`] binds them.
const VERDICTS: [&str; 5] = ["allow", "redact", "alert", "quarantine", "fault"];
/// The actions in the order [`RouteInstruments::actions`] binds them.
const ACTIONS: [&str; 4] = ["allow", "redact", "alert", "quarantine"];

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            evaluations: meter
                .u64_counter("twinguard.policy.evaluations")
                .with_unit("{evaluation}")
                .with_description("Policy runs by verdict; a message skipped by an open breaker counts as a fault")
                .build(),
            faults: meter
                .u64_counter("twinguard.policy.faults")
                .with_unit("{fault}")
                .with_description("Policy faults by kind (error.type: fuel, deadline, memory, trap, …)")
                .build(),
            policy_duration: meter
                .f64_histogram("twinguard.policy.duration")
                .with_unit("s")
                .with_description("Time of one policy's step on one message")
                .with_boundaries(DURATION_BOUNDS.to_vec())
                .build(),
            fuel: meter
                .u64_histogram("twinguard.policy.fuel")
                .with_unit("{fuel}")
                .with_description("Fuel one policy used on one message")
                .with_boundaries(FUEL_BOUNDS.to_vec())
                .build(),
            messages: meter
                .u64_counter("twinguard.messages")
                .with_unit("{message}")
                .with_description("Messages evaluated, by route and by what happened to them")
                .build(),
            reloads: meter
                .u64_counter("twinguard.reloads")
                .with_unit("{reload}")
                .with_description("Policy set builds (start and reloads) by result")
                .build(),
            reload_duration: meter
                .f64_histogram("twinguard.reload.duration")
                .with_unit("s")
                .with_description("Time to build a generation: compile (or read the cache), instantiate, self-test")
                .with_boundaries(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
                .build(),
        }
    }

    /// Binds the attribute sets of one loaded policy.
    pub(crate) fn policy(&self, name: &str, version: &str) -> PolicyInstruments {
        let base = policy_attrs(name, version);
        let with = |key: &'static str, value: &'static str| {
            let mut attrs = base.to_vec();
            attrs.push(KeyValue::new(key, value));
            attrs
        };
        PolicyInstruments {
            verdicts: VERDICTS.map(|v| self.evaluations.bind(&with(keys::VERDICT, v))),
            duration: self.policy_duration.bind(&base),
            fuel: self.fuel.bind(&base),
            faults: self.faults.clone(),
            base,
        }
    }

    /// Binds the attribute sets of one route (`None`: unrouted messages).
    pub(crate) fn route(&self, filter: Option<&str>) -> RouteInstruments {
        let route = KeyValue::new(keys::ROUTE, filter.unwrap_or("(unrouted)").to_owned());
        RouteInstruments {
            actions: ACTIONS.map(|a| {
                self.messages
                    .bind(&[route.clone(), KeyValue::new(keys::ACTION, a)])
            }),
        }
    }

    /// One policy set build (start or reload), whatever its result.
    pub(crate) fn reload(&self, ok: bool, took: Duration) {
        let result = [KeyValue::new(
            keys::RESULT,
            if ok { "success" } else { "failure" },
        )];
        self.reloads.add(1, &result);
        self.reload_duration.record(took.as_secs_f64(), &result);
    }
}

/// One policy's bound instruments.
pub(crate) struct PolicyInstruments {
    verdicts: [BoundCounter<u64>; 5],
    duration: BoundHistogram<f64>,
    fuel: BoundHistogram<u64>,
    faults: Counter<u64>,
    base: [KeyValue; 2],
}

impl PolicyInstruments {
    /// One step of the policy on one message.
    pub(crate) fn step(&self, verdict: &Verdict, fuel: u64, took: Duration) {
        let i = match verdict {
            Verdict::Allow => 0,
            Verdict::Redact(_) => 1,
            Verdict::Alert => 2,
            Verdict::Quarantine => 3,
            Verdict::Fault(fault) => {
                self.fault(fault);
                4
            }
        };
        if let Some(c) = self.verdicts.get(i) {
            c.add(1);
        }
        self.duration.record(took.as_secs_f64());
        self.fuel.record(fuel);
    }

    fn fault(&self, fault: &Fault) {
        let [policy, version] = &self.base;
        self.faults.add(
            1,
            &[
                policy.clone(),
                version.clone(),
                KeyValue::new(keys::ERROR_TYPE, fault.code()),
            ],
        );
    }
}

/// One route's bound instruments.
#[derive(Clone)]
pub(crate) struct RouteInstruments {
    actions: [BoundCounter<u64>; 4],
}

impl std::fmt::Debug for RouteInstruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteInstruments")
    }
}

impl RouteInstruments {
    /// One message through the route's chain. (Its time is the front end's
    /// `messaging.process.duration`, which includes the store's commit; the policies' times
    /// are per policy.)
    pub(crate) fn message(&self, action: &Action) {
        let i = match action {
            Action::Allow => 0,
            Action::Redact => 1,
            Action::Alert => 2,
            Action::Quarantine { .. } => 3,
        };
        if let Some(c) = self.actions.get(i) {
            c.add(1);
        }
    }
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// What the runtime reports when the meter's reader collects (not on the message path).
pub(crate) struct Observed {
    pub generation: u64,
    /// Name, version, whether its breaker is open for everyone, devices it holds.
    pub policies: Vec<(Arc<str>, Arc<str>, bool, usize)>,
    pub compilations: u64,
    pub cache: Option<crate::CacheStats>,
    /// What each policy's declared metrics hold (`host.counter-add`, `host.histogram-record`).
    pub custom: Vec<(Arc<str>, Vec<crate::metrics::MetricReading>)>,
}

/// Registers the instruments read at collection: `read` is called on the runtime, while it
/// lives, once per instrument per collection.
pub(crate) fn observe<T: Send + Sync + 'static>(
    meter: &Meter,
    runtime: Weak<T>,
    read: fn(&T) -> Observed,
) {
    let snap = Arc::new(move || runtime.upgrade().map(|r| read(&r)));
    let s = snap.clone();
    meter
        .u64_observable_gauge("twinguard.generation")
        .with_unit("{generation}")
        .with_description("The active policy set's generation (1 at start, +1 per reload)")
        .with_callback(move |o| {
            if let Some(x) = s() {
                o.observe(x.generation, &[]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_gauge("twinguard.policies")
        .with_unit("{policy}")
        .with_description("Policies in the active generation")
        .with_callback(move |o| {
            if let Some(x) = s() {
                o.observe(x.policies.len() as u64, &[]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_gauge("twinguard.policy.breaker.open")
        .with_description("1 while the policy's breaker is open for every device, else 0")
        .with_callback(move |o| {
            for (name, version, open, _) in s().map(|x| x.policies).unwrap_or_default() {
                o.observe(u64::from(open), &policy_attrs(&name, &version));
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_gauge("twinguard.policy.breaker.held_devices")
        .with_unit("{device}")
        .with_description(
            "Devices the policy's breaker holds now (their messages get the on-fault action)",
        )
        .with_callback(move |o| {
            for (name, version, _, held) in s().map(|x| x.policies).unwrap_or_default() {
                o.observe(held as u64, &policy_attrs(&name, &version));
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("twinguard.compilations")
        .with_unit("{component}")
        .with_description("Components compiled or read from the compile cache since start")
        .with_callback(move |o| {
            if let Some(x) = s() {
                o.observe(x.compilations, &[]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("twinguard.policy.custom")
        .with_unit("{count}")
        .with_description(
            "Counters a policy declared in its manifest (twinguard.metric: the declared name)",
        )
        .with_callback(move |o| {
            for_custom(&*s, |attrs, value| {
                if let MetricValue::Counter(n) = value {
                    o.observe(*n, attrs);
                }
            });
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("twinguard.policy.custom.observations")
        .with_unit("{observation}")
        .with_description("Observations of a histogram a policy declared")
        .with_callback(move |o| {
            for_custom(&*s, |attrs, value| {
                if let MetricValue::Histogram { count, .. } = value {
                    o.observe(*count, attrs);
                }
            });
        })
        .build();
    let s = snap.clone();
    meter
        .f64_observable_counter("twinguard.policy.custom.sum")
        .with_description(
            "Sum of the observations of a histogram a policy declared (in its declared unit)",
        )
        .with_callback(move |o| {
            for_custom(&*s, |attrs, value| {
                if let MetricValue::Histogram { sum, .. } = value {
                    o.observe(*sum, attrs);
                }
            });
        })
        .build();
    let s = snap;
    meter
        .u64_observable_counter("twinguard.cache.loads")
        .with_unit("{component}")
        .with_description(
            "Components the compile cache served (result=hit) or that were compiled (result=miss)",
        )
        .with_callback(move |o| {
            if let Some(c) = s().and_then(|x| x.cache) {
                o.observe(c.hits, &[KeyValue::new(keys::RESULT, "hit")]);
                o.observe(c.compiled, &[KeyValue::new(keys::RESULT, "miss")]);
            }
        })
        .build();
}

/// Calls `each` with the attributes and value of every declared metric of every policy.
fn for_custom(
    snap: &impl Fn() -> Option<Observed>,
    mut each: impl FnMut(&[KeyValue], &MetricValue),
) {
    for (policy, readings) in snap().map(|x| x.custom).unwrap_or_default() {
        for r in readings {
            let attrs = [
                KeyValue::new(keys::POLICY, policy.to_string()),
                KeyValue::new(keys::METRIC, r.spec.name.clone()),
            ];
            each(&attrs, &r.value);
        }
    }
}

fn policy_attrs(name: &str, version: &str) -> [KeyValue; 2] {
    [
        KeyValue::new(keys::POLICY, name.to_owned()),
        KeyValue::new(keys::VERSION, short(version).to_owned()),
    ]
}
