//! Statistical checks per device and metric: an exponentially weighted baseline (mean and
//! variance) flags values too many standard deviations away, and a CUSUM detector flags slow drift
//! that the baseline would otherwise follow. See README.md.

#![forbid(unsafe_code)]

use twinguard_guest::declare;
use twinguard_guest::findings::{AlertOrder, Finding, Findings};
use twinguard_guest::metric::{self, MetricKey};
use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::{
    export_configured, log, Config, Configured, Decision, Field, FieldError, Message, Severity,
};

const NAME: &str = "anomaly-guard";

/// Options, accepted both as global keys (defaults) and inside metric keys (overrides).
const OPTIONS: &[&str] = &[
    "alpha",
    "var-alpha",
    "warmup",
    "alert-z",
    "quarantine-z",
    "min-std",
    "relearn-after",
    "cusum-k",
    "cusum-h",
];

export_configured!(Settings);

/// Flags statistically unusual values and slow drift: the policy is its settings, parsed once
/// by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    metrics: Vec<Metric>,
}

#[derive(Debug, PartialEq)]
struct Metric {
    pointer: String,
    params: Params,
    /// Read on every message: handed over with it (contract 0.2), read by handle (neither
    /// searched for by its pointer nor copied out of the message). The device id only words
    /// findings, so it is fetched from the host when one is written, not declared.
    field: Field,
}

/// The detector's parameters for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Params {
    alpha: f64,
    /// Weight of a new value in the variance; `None`: `alpha`. A smaller one keeps the std
    /// steady while the mean follows slow cycles, so z-scores keep near-normal tails.
    var_alpha: Option<f64>,
    warmup: u64,
    alert_z: f64,
    quarantine_z: f64,
    min_std: f64,
    relearn_after: u64,
    cusum_k: f64,
    /// 0 turns CUSUM off.
    cusum_h: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            var_alpha: None,
            warmup: 30,
            alert_z: 5.0,
            quarantine_z: 10.0,
            min_std: 1e-9,
            relearn_after: 100,
            cusum_k: 0.5,
            cusum_h: 0.0,
        }
    }
}

impl Params {
    /// Sets option `name` (a global key or a metric key's option) from `value`; the error says
    /// why the value is refused.
    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let number = || metric::finite(value);
        let count = || {
            value
                .parse::<u64>()
                .map_err(|err| err.to_string())
                .and_then(|n| {
                    if n >= 1 {
                        Ok(n)
                    } else {
                        Err("must be an integer >= 1".to_owned())
                    }
                })
        };
        let check = |x: f64, ok: bool, why: &str| {
            if ok {
                Ok(x)
            } else {
                Err(why.to_owned())
            }
        };
        match name {
            "alpha" => {
                let x = number()?;
                self.alpha = check(x, x > 0.0 && x < 1.0, "must be between 0 and 1, exclusive")?;
            }
            "var-alpha" => {
                let x = number()?;
                self.var_alpha = Some(check(
                    x,
                    x > 0.0 && x < 1.0,
                    "must be between 0 and 1, exclusive",
                )?);
            }
            "warmup" => self.warmup = count()?,
            "alert-z" => {
                let x = number()?;
                self.alert_z = check(x, x > 0.0, "must be greater than 0")?;
            }
            "quarantine-z" => {
                let x = number()?;
                self.quarantine_z = check(x, x > 0.0, "must be greater than 0")?;
            }
            "min-std" => {
                let x = number()?;
                self.min_std = check(x, x > 0.0, "must be greater than 0")?;
            }
            "relearn-after" => self.relearn_after = count()?,
            "cusum-k" => {
                let x = number()?;
                self.cusum_k = check(x, x >= 0.0, "must be >= 0")?;
            }
            "cusum-h" => {
                let x = number()?;
                self.cusum_h = check(x, x >= 0.0, "must be >= 0 (0 turns CUSUM off)")?;
            }
            // Keys and options are checked against OPTIONS before they are set.
            _ => return Err(format!("`{name}` is not an option")),
        }
        Ok(())
    }

    /// The cross-option rule; `context` names where the values came from.
    fn check(&self, context: &str) -> Result<(), String> {
        if self.quarantine_z < self.alert_z {
            return Err(format!(
                "{context}`quarantine-z` ({}) is below `alert-z` ({}): it must be at least as large",
                self.quarantine_z, self.alert_z
            ));
        }
        Ok(())
    }
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys_beside_metrics(OPTIONS)?;
        let mut defaults = Params::default();
        for (key, value) in config.iter().filter(|(k, _)| !k.starts_with('/')) {
            defaults
                .set(key, value)
                .map_err(|why| format!("config `{key}`: invalid value {value:?}: {why}"))?;
        }
        defaults.check("config: ")?;
        let metrics = config
            .metric_keys()?
            .into_iter()
            .map(|key| {
                Ok(Metric {
                    pointer: key.pointer.to_owned(),
                    params: parse_metric(key, defaults)?,
                    field: declare::field(key.pointer)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if metrics.is_empty() {
            return Err(
                "no metric to watch: add a key naming a metric by JSON Pointer, e.g. \
                 \"/metrics/temperature_c\" = \"\" (global defaults) or = \"alert-z=6\""
                    .to_owned(),
            );
        }
        Ok(Self { metrics })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let mut findings = no_findings();
        for metric in &self.metrics {
            let x = match msg.get(metric.field) {
                Ok(Some(value)) => match value.as_f64() {
                    Some(x) => x,
                    // Not a number: schema-guard's job.
                    None => continue,
                },
                Ok(None) => continue,
                // Unparsable or unstructured: nothing to check here, and schema-guard decides
                // about malformed payloads.
                Err(FieldError::Malformed(_) | FieldError::Unstructured) => {
                    return Decision::allow()
                }
                // Pointers were checked by `init`.
                Err(FieldError::BadPointer(_)) => continue,
            };
            let previous = load(&metric.pointer, msg);
            let observed = observe(&metric.params, previous, x);
            if let Some(next) = observed.next {
                if let Err(err) = state::set_record(&metric.pointer, &next) {
                    findings.push(Finding::quarantine(format!(
                        "cannot store the baseline of {} for device {}: {err}",
                        metric.pointer,
                        msg.device_id()
                    )));
                }
            }
            let context = Context {
                pointer: &metric.pointer,
                x,
                msg,
                params: &metric.params,
            };
            findings.extend(observed.problems.into_iter().map(|p| p.finding(&context)));
        }
        findings.decide()
    }
}

/// A metric key's comma-separated `name=value` overrides of the global `defaults`; empty means
/// the defaults.
fn parse_metric(key: MetricKey<'_>, defaults: Params) -> Result<Params, String> {
    let mut params = defaults;
    if key.is_blank() {
        return Ok(params);
    }
    for option in key.options(OPTIONS)? {
        params
            .set(option.name, option.value)
            .map_err(|why| option.invalid(why))?;
    }
    params.check(&format!("config `{}`: ", key.pointer))?;
    Ok(params)
}

/// The baseline of one metric of one device.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    /// Values absorbed since the (re)start.
    n: u64,
    mean: f64,
    var: f64,
    /// CUSUM sums of upward and downward deviations.
    s_hi: f64,
    s_lo: f64,
    /// Consecutive flagged values.
    run: u64,
}

impl Baseline {
    fn start(x: f64) -> Self {
        Self {
            n: 1,
            mean: x,
            var: 0.0,
            s_hi: 0.0,
            s_lo: 0.0,
            run: 0,
        }
    }

    /// The baseline with `x` absorbed; `None` when the statistics would overflow.
    ///
    /// During warm-up the weight is at least 1/(n+1), which makes mean and variance the exact
    /// sample statistics: a plain EWMA started from one value would spend the warm-up biased
    /// towards it, with a variance too small, and flag clean values right after.
    fn absorb(&self, x: f64, params: &Params) -> Option<Self> {
        self.learn(x, params, true)
    }

    /// [`absorb`](Self::absorb), optionally leaving the variance alone: a value a CUSUM sum
    /// already suspects is still followed by the mean, but must not widen the std, or a ramp
    /// would hide itself (and the next one) behind a variance it inflated.
    fn learn(&self, x: f64, params: &Params, learn_var: bool) -> Option<Self> {
        let weight = |w: f64| {
            if self.n < params.warmup {
                #[allow(clippy::cast_precision_loss)] // n < warmup, far below 2^53 in practice
                let exact = 1.0 / (self.n as f64 + 1.0);
                w.max(exact)
            } else {
                w
            }
        };
        let alpha = weight(params.alpha);
        let beta = weight(params.var_alpha.unwrap_or(params.alpha));
        let d = x - self.mean;
        let mean = self.mean + alpha * d;
        let var = if learn_var {
            (1.0 - beta) * (self.var + beta * d * d)
        } else {
            self.var
        };
        (mean.is_finite() && var.is_finite()).then_some(Self {
            n: self.n.saturating_add(1),
            mean,
            var,
            ..*self
        })
    }

    fn std(&self, params: &Params) -> f64 {
        self.var.sqrt().max(params.min_std)
    }
}

/// `n`, `mean`, `var`, `s_hi`, `s_lo`, `run`, little-endian.
impl Record for Baseline {
    const LEN: usize = 6 * 8;

    fn write(&self, out: &mut Writer) {
        out.u64(self.n)
            .f64(self.mean)
            .f64(self.var)
            .f64(self.s_hi)
            .f64(self.s_lo)
            .u64(self.run);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        let baseline = Self {
            n: input.u64()?,
            mean: input.f64()?,
            var: input.f64()?,
            s_hi: input.f64()?,
            s_lo: input.f64()?,
            run: input.u64()?,
        };
        let sum_ok = |s: f64| s.is_finite() && s >= 0.0;
        let ok = baseline.mean.is_finite()
            && sum_ok(baseline.var)
            && sum_ok(baseline.s_hi)
            && sum_ok(baseline.s_lo);
        ok.then_some(baseline)
    }
}

/// The device's baseline of `pointer`. Undecodable state (another version of this policy wrote
/// it) starts a new warm-up rather than locking the device out.
fn load(pointer: &str, msg: &Message) -> Option<Baseline> {
    state::get_record(pointer).unwrap_or_else(|_| {
        log::warn(&format!(
            "anomaly-guard: discarding undecodable baseline of {pointer} for device {}",
            msg.device_id()
        ));
        None
    })
}

/// What is wrong with a value, or worth telling.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Problem {
    NotFinite,
    /// Absorbing the value would overflow the statistics.
    Overflow,
    Anomaly {
        z: f64,
        mean: f64,
        std: f64,
    },
    Drift {
        up: bool,
        sum: f64,
        mean: f64,
        std: f64,
    },
    BaselineReset {
        run: u64,
    },
}

/// The outcome of [`observe`]: what to report, and the baseline to store (`None`: leave it).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    problems: Vec<Problem>,
    next: Option<Baseline>,
}

/// Checks value `x` against the baseline and learns from it when it is not flagged.
fn observe(params: &Params, previous: Option<Baseline>, x: f64) -> Observed {
    let reject = |problem| Observed {
        problems: vec![problem],
        next: None,
    };
    // A CBOR payload can carry NaN or infinity, which would poison the statistics for good.
    if !x.is_finite() {
        return reject(Problem::NotFinite);
    }
    let Some(baseline) = previous else {
        return Observed {
            problems: Vec::new(),
            next: Some(Baseline::start(x)),
        };
    };
    if baseline.n < params.warmup {
        return match baseline.absorb(x, params) {
            Some(next) => Observed {
                problems: Vec::new(),
                next: Some(next),
            },
            None => reject(Problem::Overflow),
        };
    }

    let std = baseline.std(params);
    let r = (x - baseline.mean) / std;
    let z = r.abs();
    if z >= params.alert_z {
        // Flagged: not absorbed, so an attacker cannot teach the baseline.
        let run = baseline.run.saturating_add(1);
        let mut problems = vec![Problem::Anomaly {
            z,
            mean: baseline.mean,
            std,
        }];
        let next = if run >= params.relearn_after {
            // So many flagged values in a row are a real level change: learn it.
            problems.push(Problem::BaselineReset { run });
            Baseline::start(x)
        } else {
            Baseline { run, ..baseline }
        };
        return Observed {
            problems,
            next: Some(next),
        };
    }

    // In a CUSUM run: the mean follows, the variance does not learn it.
    let suspect = params.cusum_h > 0.0 && baseline.s_hi.max(baseline.s_lo) > params.cusum_h / 2.0;
    let Some(mut next) = baseline.learn(x, params, !suspect) else {
        return reject(Problem::Overflow);
    };
    next.run = 0;
    let mut problems = Vec::new();
    if params.cusum_h > 0.0 {
        next.s_hi = (baseline.s_hi + r - params.cusum_k).max(0.0);
        next.s_lo = (baseline.s_lo - r - params.cusum_k).max(0.0);
        if next.s_hi > params.cusum_h || next.s_lo > params.cusum_h {
            problems.push(Problem::Drift {
                up: next.s_hi >= next.s_lo,
                sum: next.s_hi.max(next.s_lo),
                mean: baseline.mean,
                std,
            });
            // Restart the run from half the threshold, not 0: a drift that goes on stays
            // suspect (its values do not widen the std) and is reported again sooner; back
            // to normal, the sum falls by cusum-k per value and learning resumes.
            let restart = params.cusum_h / 2.0;
            if next.s_hi >= next.s_lo {
                next.s_hi = restart;
                next.s_lo = 0.0;
            } else {
                next.s_lo = restart;
                next.s_hi = 0.0;
            }
        }
    }
    Observed {
        problems,
        next: Some(next),
    }
}

/// What a [`Problem`] needs to describe itself.
struct Context<'a> {
    pointer: &'a str,
    x: f64,
    /// The device id is fetched from it only when a finding is worded.
    msg: &'a Message,
    params: &'a Params,
}

impl Problem {
    fn finding(self, c: &Context<'_>) -> Finding {
        let value = format!("{} = {}", c.pointer, num(c.x));
        let device = c.msg.device_id();
        let p = c.params;
        match self {
            Self::NotFinite => detection(format!(
                "{value} is not a finite number for device {device}"
            )),
            Self::Overflow => detection(format!(
                "{value} is too large for the baseline statistics for device {device}"
            )),
            Self::Anomaly { z, mean, std } => {
                let quarantine = z >= p.quarantine_z;
                let detail = format!(
                    "{value} is {} standard deviations from the baseline mean {} (std {}; \
                     alert-z {}, quarantine-z {}) for device {device}",
                    approx(z),
                    approx(mean),
                    approx(std),
                    num(p.alert_z),
                    num(p.quarantine_z)
                );
                if quarantine {
                    detection(detail)
                } else {
                    Finding::alert(Severity::Medium, "anomaly", detail)
                }
            }
            Self::Drift { up, sum, mean, std } => Finding::alert(
                Severity::Medium,
                "drift",
                format!(
                    "{value} drifting {}: CUSUM {} > cusum-h {} (cusum-k {}; baseline mean {}, \
                     std {}) for device {device}",
                    if up { "up" } else { "down" },
                    approx(sum),
                    num(p.cusum_h),
                    num(p.cusum_k),
                    approx(mean),
                    approx(std)
                ),
            ),
            Self::BaselineReset { run } => Finding::alert(
                Severity::Info,
                "baseline-reset",
                format!(
                    "{} baseline restarts its warm-up from {} after {run} consecutive flagged \
                     values (relearn-after {}) for device {device}",
                    c.pointer,
                    num(c.x),
                    p.relearn_after
                ),
            ),
        }
    }
}

/// A message's findings, none yet. Alerts go most severe first: with several metrics flagged, the
/// verdict's alert is an anomaly rather than the `info` baseline reset of an earlier metric.
fn no_findings() -> Findings<'static> {
    Findings::new(NAME).with_order(AlertOrder::MostSevereFirst)
}

/// An anomaly severe enough to hold the message, and tell the SIEM.
fn detection(detail: String) -> Finding {
    Finding::detection(Severity::High, "anomaly", detail)
}

/// A number as written in the config or payload, in exponent form when plain digits get long.
fn num(x: f64) -> String {
    if x == 0.0 || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// A computed number, rounded to 4 significant decimals' worth for the analyst.
fn approx(x: f64) -> String {
    if x.is_finite() && x.abs() >= 1e-4 && x.abs() < 1e9 {
        num((x * 1e4).round() / 1e4)
    } else if x.is_finite() && x != 0.0 {
        format!("{x:.4e}")
    } else {
        num(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        declared(pairs).0
    }

    /// `init` as the host runs it (declarations open), with what it declared.
    fn declared(pairs: &[(&str, &str)]) -> (Result<Settings, String>, declare::Manifest) {
        declare::capture(|| Settings::init(&pairs.iter().copied().collect()))
    }

    #[test]
    fn declares_the_metric_fields_only() {
        let (s, m) = declared(&[("/t", ""), ("/h", "alert-z=6")]);
        s.unwrap();
        assert_eq!(m.fields, ["/t", "/h"]);
        assert_eq!(m.envelope, declare::Envelope::NONE);
        assert!(m.keep_last.is_empty() && m.metrics.is_empty());
    }

    /// Deterministic pseudo-noise with standard deviation 1 (a sine sampled at the golden angle).
    fn noise(i: u32) -> f64 {
        std::f64::consts::SQRT_2 * (f64::from(i) * 2.399_963_229_728_653).sin()
    }

    /// Feeds values and returns, per value, the codes of the problems and whether it quarantines.
    struct Feeder {
        params: Params,
        baseline: Option<Baseline>,
    }

    impl Feeder {
        fn new(params: Params) -> Self {
            Self {
                params,
                baseline: None,
            }
        }

        fn feed(&mut self, x: f64) -> Vec<Problem> {
            let observed = observe(&self.params, self.baseline, x);
            if let Some(next) = observed.next {
                self.baseline = Some(next);
            }
            observed.problems
        }

        /// `count` noisy values around 21 with std 0.15, all expected clean.
        fn warm(&mut self, count: u32) {
            for i in 0..count {
                let problems = self.feed(21.0 + 0.15 * noise(i));
                assert!(problems.is_empty(), "value {i}: {problems:?}");
            }
        }
    }

    fn is_anomaly(problems: &[Problem]) -> Option<f64> {
        match problems {
            [Problem::Anomaly { z, .. }, ..] => Some(*z),
            _ => None,
        }
    }

    #[test]
    fn parses_globals_and_overrides() {
        let s = settings(&[
            ("alpha", "0.1"),
            ("cusum-h", "5"),
            ("/metrics/t", ""),
            (
                "/metrics/h",
                "alert-z=4, warmup=10,relearn-after=7,cusum-k=1",
            ),
        ])
        .unwrap();
        let t = s.metrics[0].params;
        assert_eq!(s.metrics[0].pointer, "/metrics/t");
        assert_eq!(
            t,
            Params {
                alpha: 0.1,
                cusum_h: 5.0,
                ..Params::default()
            }
        );
        assert_eq!(
            s.metrics[1].params,
            Params {
                alert_z: 4.0,
                warmup: 10,
                relearn_after: 7,
                cusum_k: 1.0,
                ..t
            }
        );
    }

    #[test]
    fn refusals_name_the_key_and_option() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("alpha", "0.1")], &["no metric"]),
            (&[("/m", ""), ("aplha", "0.1")], &["`aplha`", "`alpha`"]),
            (
                &[("/m", ""), ("alpha", "1")],
                &["`alpha`", "\"1\"", "between 0 and 1"],
            ),
            (&[("/m", ""), ("warmup", "0")], &["`warmup`", "\"0\""]),
            (
                &[("/m", ""), ("quarantine-z", "4")],
                &["`quarantine-z`", "`alert-z`"],
            ),
            (&[("/m", ""), ("min-std", "0")], &["`min-std`", "\"0\""]),
            (&[("/m", ""), ("cusum-h", "-1")], &["`cusum-h`", "\"-1\""]),
            (&[("/m", "alpha=0")], &["`/m`", "`alpha`", "\"0\""]),
            (&[("/m", "alpha=x")], &["`/m`", "`alpha`", "\"x\""]),
            (&[("/m", "alert-z=inf")], &["`/m`", "`alert-z`", "finite"]),
            (
                &[("/m", "relearn-after=1.5")],
                &["`/m`", "`relearn-after`", "\"1.5\""],
            ),
            (
                &[("/m", "cusum-k=-0.5")],
                &["`/m`", "`cusum-k`", "\"-0.5\""],
            ),
            (
                &[("/m", "alert-z=12")],
                &["`/m`", "`quarantine-z`", "`alert-z`"],
            ),
            (
                &[("/m", "min=0")],
                &["`/m`", "unknown option `min`", "`alpha`"],
            ),
            (
                &[("/m", "warmup=5,warmup=6")],
                &["`/m`", "`warmup`", "twice"],
            ),
            (&[("/m", "warmup=5,")], &["`/m`", "stray comma"]),
            (&[("/m", "warmup")], &["`/m`", "\"warmup\"", "name=value"]),
            (&[("/a~", "")], &["`/a~`", "'~'"]),
        ];
        for (pairs, needles) in cases {
            let err = settings(pairs).unwrap_err();
            for needle in *needles {
                assert!(err.contains(needle), "{pairs:?}: {err:?} lacks {needle}");
            }
        }
    }

    #[test]
    fn warm_up_gives_exact_sample_statistics() {
        let params = Params {
            warmup: 100,
            ..Params::default()
        };
        let mut b = Baseline::start(1.0);
        for x in [2.0, 3.0, 4.0] {
            b = b.absorb(x, &params).unwrap();
        }
        // Mean 2.5, population variance 1.25 of 1..4 (alpha 0.05 < 1/4).
        assert!(
            (b.mean - 2.5).abs() < 1e-12 && (b.var - 1.25).abs() < 1e-12,
            "{b:?}"
        );
        assert_eq!(b.n, 4);
    }

    #[test]
    fn flags_by_z_and_never_during_warm_up() {
        let mut f = Feeder::new(Params::default());
        // Wild values during warm-up are absorbed, never flagged.
        f.warm(29);
        assert!(f.feed(21.0 + 3.0).is_empty());
        let mut f = Feeder::new(Params::default());
        f.warm(200);
        assert!(f.feed(21.1).is_empty());
        let z = is_anomaly(&f.feed(21.0 + 6.0 * 0.15)).unwrap();
        assert!((5.0..10.0).contains(&z), "{z}");
        let z = is_anomaly(&f.feed(21.0 - 20.0 * 0.15)).unwrap();
        assert!(z >= 10.0, "{z}");
        assert!(f.feed(f64::NAN) == [Problem::NotFinite]);
        assert!(f.feed(21.05).is_empty());
    }

    #[test]
    fn flagged_values_are_not_absorbed() {
        let mut f = Feeder::new(Params::default());
        f.warm(200);
        let before = f.baseline.unwrap();
        for _ in 0..10 {
            assert!(is_anomaly(&f.feed(21.0 + 6.0 * 0.15)).is_some());
        }
        let after = f.baseline.unwrap();
        assert_eq!(
            (after.mean, after.var, after.run),
            (before.mean, before.var, 10)
        );
        assert!(f.feed(21.0).is_empty());
        assert_eq!(f.baseline.unwrap().run, 0);
    }

    #[test]
    fn relearns_after_a_run_of_flagged_values() {
        let mut f = Feeder::new(Params {
            warmup: 10,
            relearn_after: 5,
            ..Params::default()
        });
        f.warm(50);
        for _ in 0..4 {
            assert!(is_anomaly(&f.feed(25.0)).is_some());
        }
        assert!(matches!(
            f.feed(25.0)[..],
            [Problem::Anomaly { .. }, Problem::BaselineReset { run: 5 }]
        ));
        assert_eq!(f.baseline.unwrap().mean, 25.0);
        // A new warm-up, then the new level is normal.
        for i in 0..50 {
            let problems = f.feed(25.0 + 0.15 * noise(i));
            assert!(problems.is_empty(), "{i}: {problems:?}");
        }
    }

    /// A ramp of 0.2 standard deviations per value: the baseline follows it, CUSUM does not.
    fn ramp(cusum_h: f64) -> Vec<Vec<Problem>> {
        let mut f = Feeder::new(Params {
            cusum_h,
            ..Params::default()
        });
        f.warm(200);
        (1..=15)
            .map(|i| f.feed(21.0 + 0.15 * (noise(200 + i) + 0.2 * f64::from(i))))
            .collect()
    }

    #[test]
    fn var_alpha_steadies_the_std() {
        // Same data, the variance learnt with a 20 times smaller weight: one wide value moves
        // the std far less, while the mean moves the same.
        let fast = Params {
            alpha: 0.2,
            ..Params::default()
        };
        let slow = Params {
            var_alpha: Some(0.01),
            ..fast
        };
        let mut a = Feeder::new(fast);
        let mut b = Feeder::new(slow);
        a.warm(300);
        b.warm(300);
        let (a0, b0) = (a.baseline.unwrap(), b.baseline.unwrap());
        // 4 std: wide, below alert-z, so learnt.
        assert!(a.feed(21.0 + 4.0 * 0.15).is_empty());
        assert!(b.feed(21.0 + 4.0 * 0.15).is_empty());
        let (a1, b1) = (a.baseline.unwrap(), b.baseline.unwrap());
        assert!((a1.mean - a0.mean - (b1.mean - b0.mean)).abs() < 0.05);
        let grew = |x: Baseline, y: Baseline| y.var / x.var;
        assert!(
            grew(a0, a1) > 1.5 && grew(b0, b1) < 1.2,
            "{a0:?} {a1:?} {b0:?} {b1:?}"
        );
    }

    #[test]
    fn a_ramp_does_not_widen_the_std_it_is_judged_by() {
        // The same ramp, with CUSUM on (suspect values do not reach the variance) and off
        // (every value below alert-z is learnt).
        let ramp = |cusum_h: f64| {
            let mut f = Feeder::new(Params {
                alpha: 0.2,
                var_alpha: Some(0.01),
                cusum_k: 1.0,
                cusum_h,
                ..Params::default()
            });
            f.warm(300);
            let before = f.baseline.unwrap();
            let mut drifts = 0;
            for i in 0..30 {
                let x = 21.0 + 0.15 * noise(1000 + i) + 0.15 * 0.8 * f64::from(i + 1);
                drifts += f
                    .feed(x)
                    .iter()
                    .filter(|p| matches!(p, Problem::Drift { up: true, .. }))
                    .count();
            }
            (before, f.baseline.unwrap(), drifts)
        };
        let (before, guarded, drifts) = ramp(10.0);
        let (_, learnt, _) = ramp(0.0);
        // Reported more than once (a run restarts at h/2); the mean followed the ramp either
        // way, the variance far less when guarded.
        assert!(drifts >= 2, "{drifts}");
        assert!(guarded.mean > before.mean + 1.5 && learnt.mean > before.mean + 1.5);
        let growth = |b: Baseline| b.var / before.var;
        assert!(
            growth(guarded) < 0.7 * growth(learnt),
            "guarded {guarded:?} learnt {learnt:?} before {before:?}"
        );
    }

    #[test]
    fn cusum_catches_a_slow_ramp() {
        let with = ramp(5.0);
        let drifts: Vec<_> = with
            .iter()
            .flatten()
            .filter(|p| matches!(p, Problem::Drift { up: true, .. }))
            .collect();
        assert!(!drifts.is_empty(), "{with:?}");
        assert!(with
            .iter()
            .flatten()
            .all(|p| matches!(p, Problem::Drift { .. })));
        let without = ramp(0.0);
        assert!(without.iter().all(Vec::is_empty), "{without:?}");
        // Clean noise does not trigger it.
        let mut f = Feeder::new(Params {
            cusum_h: 5.0,
            ..Params::default()
        });
        f.warm(1000);
    }

    #[test]
    fn constant_values_use_min_std_and_overflow_is_refused() {
        let mut f = Feeder::new(Params {
            warmup: 3,
            min_std: 0.01,
            ..Params::default()
        });
        for _ in 0..5 {
            assert!(f.feed(7.0).is_empty());
        }
        assert!(f.feed(7.04).is_empty());
        assert!(is_anomaly(&f.feed(7.06)).is_some());
        let mut f = Feeder::new(Params::default());
        f.feed(-1e300);
        assert_eq!(f.feed(1e300), [Problem::Overflow]);
        assert_eq!(f.baseline.unwrap().mean, -1e300);
    }

    #[test]
    fn baseline_round_trips_and_refuses_garbage() {
        let b = Baseline {
            n: 42,
            mean: 21.43,
            var: 0.0225,
            s_hi: 1.5,
            s_lo: 0.0,
            run: 3,
        };
        assert_eq!(state::decode(&state::encode(&b)), Ok(b));
        assert!(state::decode::<Baseline>(&state::encode(&b)[1..]).is_err());
        let bad = Baseline { var: -1.0, ..b };
        assert!(state::decode::<Baseline>(&state::encode(&bad)).is_err());
        // What earlier versions stored: a reload must keep every device's baseline.
        let mut old = Vec::new();
        old.extend_from_slice(&42u64.to_le_bytes());
        for x in [21.43f64, 0.0225, 1.5, 0.0] {
            old.extend_from_slice(&x.to_le_bytes());
        }
        old.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(state::encode(&b), old);
    }

    fn decide(found: Vec<Finding>) -> Decision {
        let mut findings = no_findings();
        findings.extend(found);
        findings.decide()
    }

    #[test]
    fn decision_is_the_worst_finding() {
        assert_eq!(decide(Vec::new()), Decision::allow());
        let reset = Finding::alert(Severity::Info, "baseline-reset", "/a reset");
        let alert = Finding::alert(Severity::Medium, "anomaly", "/a far");
        let d = decide(vec![reset.clone(), alert]);
        assert!(
            matches!(d.verdict(), twinguard_guest::Verdict::Alert(a) if a.code == "anomaly"),
            "{d:?}"
        );
        assert_eq!(d.alerts()[0].code, "baseline-reset");
        let d = decide(vec![reset, detection("/b far".into())]);
        assert_eq!(
            d.verdict(),
            &twinguard_guest::Verdict::Quarantine("anomaly-guard: /b far".into())
        );
        assert_eq!(d.alerts().len(), 2);
    }
}
