//! Physical-plausibility checks per metric: out-of-range readings, spikes (too large a change from
//! the last accepted value) and stuck sensors (one value repeated exactly). See README.md.

#![forbid(unsafe_code)]

use twinguard_guest::config::Action;
use twinguard_guest::declare;
use twinguard_guest::findings::{Finding, Findings};
use twinguard_guest::metric::MetricKey;
use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::{
    export_configured, log, Config, Configured, Decision, Field, FieldError, Message, Severity,
};

const NAME: &str = "range-guard";

/// Global keys; every other key must be a metric JSON Pointer.
const KNOWN_KEYS: &[&str] = &["on-stuck", "step-reset-ms"];

/// Options of a metric key.
const OPTIONS: &[&str] = &["min", "max", "max-step", "stuck-after"];

const DEFAULT_STEP_RESET_MS: u64 = 3_600_000;

export_configured!(Settings);

/// Quarantines implausible readings and flags stuck sensors: the policy is its settings, parsed
/// once by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    metrics: Vec<Metric>,
    /// What a stuck value does to its message.
    on_stuck: Action,
    step_reset_ms: u64,
}

#[derive(Debug, PartialEq)]
struct Metric {
    pointer: String,
    limits: Limits,
    /// Read on every message: handed over with it (contract 0.2), read by handle (neither
    /// searched for by its pointer nor copied out of the message). The device id only words
    /// findings, so it is fetched from the host when one is written, not declared.
    field: Field,
}

/// The checks of one metric; `None` disables a check.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Limits {
    min: Option<f64>,
    max: Option<f64>,
    max_step: Option<f64>,
    stuck_after: Option<u32>,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys_beside_metrics(KNOWN_KEYS)?;
        let on_stuck = config.action("on-stuck", Action::Alert)?;
        let step_reset_ms = config
            .parse("step-reset-ms")?
            .unwrap_or(DEFAULT_STEP_RESET_MS);
        let metrics = config
            .metric_keys()?
            .into_iter()
            .map(|key| {
                Ok(Metric {
                    pointer: key.pointer.to_owned(),
                    limits: Limits::parse(key)?,
                    field: declare::field(key.pointer)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if metrics.is_empty() {
            return Err(
                "no metric to check: add a key naming a metric by JSON Pointer, e.g. \
                 \"/metrics/temperature_c\" = \"min=-40,max=85,max-step=5,stuck-after=30\""
                    .to_owned(),
            );
        }
        Ok(Self {
            metrics,
            on_stuck,
            step_reset_ms,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let now = msg.received_at_ms();
        let mut findings = Findings::new(NAME);
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
            let checked = check(&metric.limits, self.step_reset_ms, previous, x, now);
            if let Some(next) = checked.next {
                if let Err(err) = state::set_record(&metric.pointer, &next) {
                    findings.push(Finding::quarantine(format!(
                        "cannot store the state of {} for device {}: {err}",
                        metric.pointer,
                        msg.device_id()
                    )));
                }
            }
            if let Some(problem) = checked.problem {
                let device = msg.device_id();
                findings.push(problem.finding(&metric.pointer, x, device, self.on_stuck));
            }
        }
        findings.decide()
    }
}

impl Limits {
    /// Parses a metric key's comma-separated `name=value` options; at least one is required.
    fn parse(key: MetricKey<'_>) -> Result<Self, String> {
        let mut limits = Self::default();
        for option in key.options(OPTIONS)? {
            match option.name {
                // A finite number: `inf` or `NaN` as a limit would silently disable the check.
                "min" => limits.min = Some(option.finite()?),
                "max" => limits.max = Some(option.finite()?),
                "max-step" => {
                    let step = option.finite()?;
                    if step <= 0.0 {
                        return Err(option.invalid("must be greater than 0"));
                    }
                    limits.max_step = Some(step);
                }
                "stuck-after" => {
                    let n: u32 = option.parse()?;
                    if n < 2 {
                        return Err(option.invalid("must be an integer >= 2"));
                    }
                    limits.stuck_after = Some(n);
                }
                // `options` accepts only the names in OPTIONS.
                other => return Err(option.invalid(format!("`{other}` is not an option"))),
            }
        }
        if let (Some(min), Some(max)) = (limits.min, limits.max) {
            if min > max {
                return Err(format!(
                    "config `{}`: option `min` ({}) is greater than option `max` ({})",
                    key.pointer,
                    num(min),
                    num(max)
                ));
            }
        }
        Ok(limits)
    }
}

/// What the policy remembers of one metric of one device.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Track {
    /// The last accepted value: the reference of the step check.
    last: f64,
    /// When it was accepted (host clock).
    at_ms: u64,
    /// How many times in a row `last` was seen, this one included.
    run: u32,
    /// The previous message's value when it was step-rejected: two consistent rejected values in
    /// a row are a real level change, not a spike.
    rejected: Option<f64>,
}

/// `last`, `at_ms`, `run`, `rejected` (NaN for none), little-endian.
impl Record for Track {
    const LEN: usize = 8 + 8 + 4 + 8;

    fn write(&self, out: &mut Writer) {
        out.f64(self.last)
            .u64(self.at_ms)
            .u32(self.run)
            .f64_or_nan(self.rejected);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        let track = Self {
            last: input.f64()?,
            at_ms: input.u64()?,
            run: input.u32()?,
            rejected: input.f64_or_nan()?,
        };
        // Only finite values are ever accepted or rejected by `check`.
        let finite = track.last.is_finite() && !track.rejected.is_some_and(f64::is_infinite);
        finite.then_some(track)
    }
}

/// The device's track of `pointer`. Undecodable state (another version of this policy wrote it)
/// starts afresh rather than locking the device out.
fn load(pointer: &str, msg: &Message) -> Option<Track> {
    state::get_record(pointer).unwrap_or_else(|_| {
        log::warn(&format!(
            "range-guard: discarding undecodable state of {pointer} for device {}",
            msg.device_id()
        ));
        None
    })
}

/// Why a value was not plainly accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Problem {
    NotFinite,
    BelowMin(f64),
    AboveMax(f64),
    Step { reference: f64, max_step: f64 },
    Stuck { run: u32, stuck_after: u32 },
}

/// The outcome of [`check`]: what is wrong, and the track to store (`None`: leave it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Checked {
    problem: Option<Problem>,
    next: Option<Track>,
}

/// Checks value `x` of one metric received at `now_ms` against `limits` and the device's track.
fn check(
    limits: &Limits,
    step_reset_ms: u64,
    previous: Option<Track>,
    x: f64,
    now_ms: u64,
) -> Checked {
    // A rejected value is not a reference, but it breaks a run of step-rejected values.
    let reject = |problem| Checked {
        problem: Some(problem),
        next: previous.filter(|t| t.rejected.is_some()).map(|t| Track {
            rejected: None,
            ..t
        }),
    };
    // A CBOR payload can carry NaN or infinity, which every comparison below would let through.
    if !x.is_finite() {
        return reject(Problem::NotFinite);
    }
    if let Some(min) = limits.min.filter(|&min| x < min) {
        return reject(Problem::BelowMin(min));
    }
    if let Some(max) = limits.max.filter(|&max| x > max) {
        return reject(Problem::AboveMax(max));
    }
    if let (Some(max_step), Some(track)) = (limits.max_step, previous) {
        let fresh = now_ms.saturating_sub(track.at_ms) <= step_reset_ms;
        let confirms_level = track.rejected.is_some_and(|r| (x - r).abs() <= max_step);
        if fresh && (x - track.last).abs() > max_step && !confirms_level {
            return Checked {
                problem: Some(Problem::Step {
                    reference: track.last,
                    max_step,
                }),
                next: Some(Track {
                    rejected: Some(x),
                    ..track
                }),
            };
        }
    }
    let run = match previous {
        Some(track) if track.last == x => track.run.saturating_add(1),
        _ => 1,
    };
    let problem = limits
        .stuck_after
        .filter(|&n| run >= n)
        .map(|stuck_after| Problem::Stuck { run, stuck_after });
    Checked {
        problem,
        next: Some(Track {
            last: x,
            at_ms: now_ms,
            run,
            rejected: None,
        }),
    }
}

impl Problem {
    fn finding(self, pointer: &str, x: f64, device: &str, on_stuck: Action) -> Finding {
        let value = format!("{pointer} = {}", num(x));
        match self {
            Self::NotFinite => detection(
                "out-of-range",
                format!("{value} is not a finite number for device {device}"),
            ),
            Self::BelowMin(min) => detection(
                "out-of-range",
                format!("{value} below min {} for device {device}", num(min)),
            ),
            Self::AboveMax(max) => detection(
                "out-of-range",
                format!("{value} above max {} for device {device}", num(max)),
            ),
            Self::Step {
                reference,
                max_step,
            } => detection(
                "step",
                format!(
                    "{value} changed by {} from last accepted {} (max-step {}) for device {device}",
                    approx((x - reference).abs()),
                    num(reference),
                    num(max_step)
                ),
            ),
            Self::Stuck { run, stuck_after } => {
                let detail = format!(
                    "{value} repeated exactly {run} times in a row (stuck-after {stuck_after}) \
                     for device {device}"
                );
                match on_stuck {
                    Action::Alert => Finding::alert(Severity::Medium, "stuck-value", detail),
                    Action::Quarantine => detection("stuck-value", detail),
                }
            }
        }
    }
}

/// A security detection: quarantine, and tell the SIEM.
fn detection(code: &'static str, detail: String) -> Finding {
    Finding::detection(Severity::High, code, detail)
}

/// A number as written in the config or payload, in exponent form when plain digits get long.
fn num(x: f64) -> String {
    if x == 0.0 || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// A computed number, rounded so float noise (`8.999999999999998`) does not reach the analyst.
fn approx(x: f64) -> String {
    if x.abs() < 1e9 {
        num((x * 1e6).round() / 1e6)
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
        let (s, m) = declared(&[("/t", "min=0"), ("/h", "max=100")]);
        s.unwrap();
        assert_eq!(m.fields, ["/t", "/h"]);
        assert_eq!(m.envelope, declare::Envelope::NONE);
        assert!(m.keep_last.is_empty() && m.metrics.is_empty());
    }

    fn limits(list: &str) -> Limits {
        Limits::parse(MetricKey {
            pointer: "/m",
            value: list,
        })
        .unwrap()
    }

    const HOUR: u64 = 3_600_000;

    /// Feeds values (at one-minute intervals) and returns each problem.
    fn run(limits: &Limits, values: &[f64]) -> Vec<Option<Problem>> {
        let mut track = None;
        values
            .iter()
            .zip(0..)
            .map(|(&x, i)| {
                let checked = check(limits, HOUR, track, x, 1_000_000 + i * 60_000);
                if let Some(next) = checked.next {
                    track = Some(next);
                }
                checked.problem
            })
            .collect()
    }

    #[test]
    fn parses_metrics_and_globals() {
        let s = settings(&[
            ("/metrics/t", "min=-40, max=85,max-step=5,stuck-after=30"),
            ("/metrics/h", "max=100"),
            ("on-stuck", "quarantine"),
            ("step-reset-ms", "60000"),
        ])
        .unwrap();
        assert_eq!(s.metrics.len(), 2);
        assert_eq!(s.metrics[0].pointer, "/metrics/t");
        assert_eq!(
            s.metrics[0].limits,
            Limits {
                min: Some(-40.0),
                max: Some(85.0),
                max_step: Some(5.0),
                stuck_after: Some(30),
            }
        );
        assert_eq!(s.metrics[1].limits.max, Some(100.0));
        assert_eq!(s.on_stuck, Action::Quarantine);
        assert_eq!(s.step_reset_ms, 60_000);
        let s = settings(&[("/m", "min=0")]).unwrap();
        assert_eq!(s.on_stuck, Action::Alert);
        assert_eq!(s.step_reset_ms, DEFAULT_STEP_RESET_MS);
    }

    #[test]
    fn refusals_name_the_key_and_option() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[], &["no metric"]),
            (
                &[("/m", "min=0"), ("on_stuck", "alert")],
                &["`on_stuck`", "`on-stuck`"],
            ),
            (
                &[("/m", "min=0"), ("on-stuck", "drop")],
                &["`on-stuck`", "\"drop\""],
            ),
            (
                &[("/m", "min=0"), ("step-reset-ms", "-1")],
                &["`step-reset-ms`", "\"-1\""],
            ),
            (&[("/m", "maxstep=3")], &["`/m`", "`maxstep`", "`max-step`"]),
            (&[("/m", "min=abc")], &["`/m`", "`min`", "\"abc\""]),
            (&[("/m", "max=inf")], &["`/m`", "`max`", "finite"]),
            (&[("/m", "max-step=0")], &["`/m`", "`max-step`", "\"0\""]),
            (
                &[("/m", "stuck-after=1")],
                &["`/m`", "`stuck-after`", ">= 2"],
            ),
            (
                &[("/m", "stuck-after=2.5")],
                &["`/m`", "`stuck-after`", "\"2.5\""],
            ),
            (&[("/m", "min=5,max=1")], &["`/m`", "`min`", "`max`"]),
            (&[("/m", "min=1,min=2")], &["`/m`", "`min`", "twice"]),
            (&[("/m", "min=1,")], &["`/m`", "stray comma"]),
            (&[("/m", " ")], &["`/m`", "no option"]),
            (&[("/m", "min")], &["`/m`", "\"min\"", "name=value"]),
            (&[("/a~2", "min=1")], &["`/a~2`", "'~'"]),
        ];
        for (pairs, needles) in cases {
            let err = settings(pairs).unwrap_err();
            for needle in *needles {
                assert!(err.contains(needle), "{pairs:?}: {err:?} lacks {needle}");
            }
        }
    }

    #[test]
    fn range() {
        let l = limits("min=-40,max=85");
        assert_eq!(run(&l, &[-40.0, 85.0, 20.0]), [None, None, None]);
        assert_eq!(run(&l, &[85.5]), [Some(Problem::AboveMax(85.0))]);
        assert_eq!(run(&l, &[-41.0]), [Some(Problem::BelowMin(-40.0))]);
        assert_eq!(
            run(&l, &[f64::NAN, f64::INFINITY]),
            [Some(Problem::NotFinite), Some(Problem::NotFinite)]
        );
        // Without limits only non-finite values are refused.
        assert_eq!(
            run(&limits("stuck-after=9"), &[1e300, f64::NAN]),
            [None, Some(Problem::NotFinite)]
        );
    }

    #[test]
    fn a_spike_does_not_become_the_reference() {
        let l = limits("max-step=2");
        let step = Some(Problem::Step {
            reference: 20.0,
            max_step: 2.0,
        });
        assert_eq!(
            run(&l, &[20.0, 21.9, 24.0]),
            [
                None,
                None,
                Some(Problem::Step {
                    reference: 21.9,
                    max_step: 2.0
                })
            ]
        );
        assert_eq!(run(&l, &[20.0, 30.0, 21.0]), [None, step, None]);
        // An out-of-range value is not a reference either.
        let l = limits("max=50,max-step=2");
        assert_eq!(
            run(&l, &[20.0, 99.0, 21.0]),
            [None, Some(Problem::AboveMax(50.0)), None]
        );
    }

    #[test]
    fn two_consistent_rejections_are_a_level_change() {
        let l = limits("max-step=2");
        let step = |reference| {
            Some(Problem::Step {
                reference,
                max_step: 2.0,
            })
        };
        assert_eq!(
            run(&l, &[20.0, 30.0, 31.0, 32.0]),
            [None, step(20.0), None, None]
        );
        // Not consistent: each rejected value is the new candidate.
        assert_eq!(
            run(&l, &[20.0, 30.0, 40.0, 41.0]),
            [None, step(20.0), step(20.0), None]
        );
        // The rejection must be the previous message: an accepted value in between resets it.
        assert_eq!(
            run(&l, &[20.0, 30.0, 20.5, 30.5]),
            [None, step(20.0), None, step(20.5)]
        );
        // So does an out-of-range value.
        let l = limits("max=50,max-step=2");
        assert_eq!(
            run(&l, &[20.0, 30.0, 99.0, 30.5]),
            [None, step(20.0), Some(Problem::AboveMax(50.0)), step(20.0)]
        );
    }

    #[test]
    fn step_check_skipped_after_step_reset() {
        let l = limits("max-step=2");
        let first = check(&l, 60_000, None, 20.0, 1_000).next;
        assert!(check(&l, 60_000, first, 30.0, 61_000).problem.is_some());
        assert_eq!(check(&l, 60_000, first, 30.0, 61_001).problem, None);
        // A clock going backwards is no time away.
        assert!(check(&l, 60_000, first, 30.0, 0).problem.is_some());
    }

    #[test]
    fn stuck_after_n_repeats_and_every_further_one() {
        let l = limits("stuck-after=3");
        let stuck = |run| {
            Some(Problem::Stuck {
                run,
                stuck_after: 3,
            })
        };
        assert_eq!(
            run(&l, &[1.0, 1.0, 1.0, 1.0, 1.5, 1.5]),
            [None, None, stuck(3), stuck(4), None, None]
        );
        // A spike in between is not accepted, so it does not break the run.
        let l = limits("max-step=1,stuck-after=3");
        assert_eq!(
            run(&l, &[1.0, 1.0, 9.0, 1.0]),
            [
                None,
                None,
                Some(Problem::Step {
                    reference: 1.0,
                    max_step: 1.0
                }),
                stuck(3)
            ]
        );
    }

    #[test]
    fn track_round_trips_and_refuses_garbage() {
        for rejected in [None, Some(-3.5)] {
            let t = Track {
                last: 21.43,
                at_ms: 1_764_028_800_123,
                run: 7,
                rejected,
            };
            assert_eq!(state::decode(&state::encode(&t)), Ok(t));
        }
        assert!(state::decode::<Track>(&[0; Track::LEN - 1]).is_err());
        let mut bad = [0; Track::LEN];
        bad[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(state::decode::<Track>(&bad).is_err());
    }

    #[test]
    fn the_stored_layout_is_unchanged() {
        // What earlier versions stored: a reload must keep every device's track.
        let t = Track {
            last: 21.43,
            at_ms: 1_764_028_800_123,
            run: 7,
            rejected: None,
        };
        let mut old = Vec::new();
        old.extend_from_slice(&21.43f64.to_le_bytes());
        old.extend_from_slice(&1_764_028_800_123u64.to_le_bytes());
        old.extend_from_slice(&7u32.to_le_bytes());
        old.extend_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(state::encode(&t), old);
    }

    fn decide(found: Vec<Finding>) -> Decision {
        let mut findings = Findings::new(NAME);
        findings.extend(found);
        findings.decide()
    }

    #[test]
    fn decision_is_the_worst_finding_and_raises_every_alert() {
        assert_eq!(decide(Vec::new()), Decision::allow());
        let stuck = Finding::alert(Severity::Medium, "stuck-value", "/a stuck");
        let d = decide(vec![stuck.clone()]);
        assert!(
            matches!(d.verdict(), twinguard_guest::Verdict::Alert(a) if a.detail == "range-guard: /a stuck")
        );
        let d = decide(vec![
            stuck,
            detection("step", "/b step".into()),
            Finding::quarantine("/c state"),
        ]);
        assert_eq!(
            d.verdict(),
            &twinguard_guest::Verdict::Quarantine("range-guard: /b step; /c state".into())
        );
        let codes: Vec<_> = d.alerts().iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["stuck-value", "step"]);
    }

    #[test]
    fn numbers_stay_readable() {
        assert_eq!(num(21.43), "21.43");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1e300), "1e300");
        assert_eq!(approx(30.1 - 21.1), "9");
    }
}
