//! Per-device message rate limits: token buckets on the host's receive time. A soft bucket
//! flags bursts, an optional hard bucket quarantines floods. The limits are configured, or
//! derived from the device's reporting period in the device registry. See README.md.

#![forbid(unsafe_code)]

use std::fmt;

use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::{
    export_configured, log, Config, Configured, Decision, Message, Quoted, Severity,
};

const NAME: &str = "rate-guard";

const KNOWN_KEYS: &[&str] = &[
    "rate",
    "burst",
    "hard-rate",
    "hard-burst",
    "period-attribute",
    "tolerance",
    "hard-tolerance",
];

/// The state key of a device's buckets.
const STATE_KEY: &str = "buckets";

/// The registry attribute read by default: the device's reporting period in seconds.
const DEFAULT_PERIOD_ATTRIBUTE: &str = "period-s";

/// The default `tolerance`: half a period of slack on the reporting rate.
const DEFAULT_TOLERANCE: f64 = 1.5;

export_configured!(Settings);

/// A token bucket's shape: refill speed and size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    /// Tokens per second.
    rate: f64,
    /// Bucket size: the longest burst at full speed.
    burst: f64,
}

/// Where a limit's rate comes from, for the alert's detail.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    /// `rate` / `hard-rate`.
    Configured,
    /// The device's registry period (seconds) times a tolerance (`tolerance` or
    /// `hard-tolerance`).
    Period { period: f64, tolerance: f64 },
}

/// A device's soft and hard limits, and where their rates come from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    soft: Limit,
    hard: Option<Limit>,
    soft_origin: Origin,
    hard_origin: Origin,
}

impl Limits {
    fn configured(soft: Limit, hard: Option<Limit>) -> Self {
        Self {
            soft,
            hard,
            soft_origin: Origin::Configured,
            hard_origin: Origin::Configured,
        }
    }

    /// Whether the limits came from the device's registry period.
    fn by_period(&self) -> bool {
        matches!(self.soft_origin, Origin::Period { .. })
    }
}

/// Limits from the device registry: the `period-attribute`, `tolerance` and `hard-tolerance`
/// settings.
#[derive(Debug, Clone, PartialEq)]
struct Registry {
    /// The attribute holding the reporting period, in seconds.
    attribute: String,
    /// Soft rate = `tolerance` / period.
    tolerance: f64,
    /// Hard rate = `hard-tolerance` / period, hard burst = `hard-burst`; `None`: the device
    /// keeps the configured hard limit (if any).
    hard: Option<(f64, f64)>,
}

impl Registry {
    /// The limits of a device whose registry attribute is `value`, from the configured ones:
    /// an error (for the log) when `value` is not a positive finite number of seconds or gives
    /// no usable rate.
    fn limits(&self, value: &str, configured: &Limits) -> Result<Limits, String> {
        let period: f64 = value.trim().parse().map_err(|_| {
            format!(
                "registry attribute {} = {} is not a number of seconds",
                self.attribute,
                Quoted(value)
            )
        })?;
        if !(period.is_finite() && period > 0.0) {
            return Err(format!(
                "registry attribute {} = {} is not a positive finite number of seconds",
                self.attribute,
                Quoted(value)
            ));
        }
        let rate = |tolerance: f64| {
            let rate = tolerance / period;
            if rate.is_finite() && rate > 0.0 {
                Ok(rate)
            } else {
                Err(format!(
                    "registry attribute {} = {} gives no usable rate ({tolerance} / {period})",
                    self.attribute,
                    Quoted(value)
                ))
            }
        };
        let soft = Limit {
            rate: rate(self.tolerance)?,
            burst: configured.soft.burst,
        };
        let soft_origin = Origin::Period {
            period,
            tolerance: self.tolerance,
        };
        let (hard, hard_origin) = match self.hard {
            None => (configured.hard, Origin::Configured),
            Some((tolerance, burst)) => (
                Some(Limit {
                    rate: rate(tolerance)?,
                    burst,
                }),
                Origin::Period { period, tolerance },
            ),
        };
        Ok(Limits {
            soft,
            hard,
            soft_origin,
            hard_origin,
        })
    }
}

/// Flags bursts and quarantines floods, per device: the policy is its settings, parsed once by
/// `init`.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    /// `rate`, `burst`, `hard-rate`, `hard-burst`: the limits of a device without a registry
    /// period.
    configured: Limits,
    /// `None`: `period-attribute` is empty, the registry is not read.
    registry: Option<Registry>,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        let soft = Limit {
            rate: positive(config, "rate")?.unwrap_or(1.0),
            burst: at_least_one(config, "burst")?.unwrap_or(10.0),
        };
        let hard_rate = positive(config, "hard-rate")?;
        let hard_burst = at_least_one(config, "hard-burst")?;
        let attribute = config
            .get("period-attribute")
            .unwrap_or(DEFAULT_PERIOD_ATTRIBUTE)
            .trim();
        let tolerance = at_least(config, "tolerance", 1.0)?;
        let hard_tolerance = at_least(config, "hard-tolerance", 1.0)?;
        let hard = match (hard_rate, hard_burst) {
            (None, None) => None,
            (Some(rate), Some(burst)) => {
                if rate < soft.rate {
                    return Err(format!(
                        "config `hard-rate`: {rate} is below `rate` ({}): the hard limit must be \
                         at least the soft one",
                        soft.rate
                    ));
                }
                Some(Limit { rate, burst })
            }
            (Some(_), None) => {
                return Err(
                    "config `hard-rate` is set without `hard-burst`: set both or neither"
                        .to_owned(),
                )
            }
            // With `hard-tolerance`, `hard-burst` alone gives a hard limit to the devices with
            // a registry period only.
            (None, Some(_)) if hard_tolerance.is_some() => None,
            (None, Some(_)) => {
                return Err(
                    "config `hard-burst` is set without `hard-rate`: set both or neither (or \
                     `hard-burst` with `hard-tolerance`)"
                        .to_owned(),
                )
            }
        };
        if let Some(burst) = hard_burst {
            if burst < soft.burst {
                return Err(format!(
                    "config `hard-burst`: {burst} is below `burst` ({}): the hard limit must \
                     be at least the soft one",
                    soft.burst
                ));
            }
        }
        let registry = if attribute.is_empty() {
            for (key, value) in [("tolerance", tolerance), ("hard-tolerance", hard_tolerance)] {
                if value.is_some() {
                    return Err(format!(
                        "config `{key}` has no effect with `period-attribute` empty (the \
                         registry is not read): remove it, or name the registry attribute \
                         holding the reporting period"
                    ));
                }
            }
            None
        } else {
            let tolerance = tolerance.unwrap_or(DEFAULT_TOLERANCE);
            let hard = match (hard_tolerance, hard_burst) {
                (None, _) => None,
                (Some(hard), _) if hard < tolerance => {
                    return Err(format!(
                        "config `hard-tolerance`: {hard} is below `tolerance` ({tolerance}): \
                         the hard limit must be at least the soft one"
                    ))
                }
                (Some(hard), Some(burst)) => Some((hard, burst)),
                (Some(_), None) => {
                    return Err(
                        "config `hard-tolerance` is set without `hard-burst`, the hard bucket \
                         size of the devices with a registry period: set both or neither"
                            .to_owned(),
                    )
                }
            };
            Some(Registry {
                attribute: attribute.to_owned(),
                tolerance,
                hard,
            })
        };
        // Nothing to declare (contract 0.2): no payload field is read, and the device id only
        // words the rare alert, so it is fetched from the host then rather than handed over in
        // every call. The host scopes the state to the device.
        Ok(Self {
            configured: Limits::configured(soft, hard),
            registry,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let limits = self.limits(msg);
        let previous = state::get_record(STATE_KEY).unwrap_or_else(|_| {
            log::warn(&format!(
                "rate-guard: discarding undecodable state of device {}",
                msg.device_id()
            ));
            None
        });
        let (admission, buckets) = admit(&limits, previous, msg.received_at_ms());
        if let Err(err) = state::set_record(STATE_KEY, &buckets) {
            // Without stored buckets every message would see a full bucket: fail closed.
            return Decision::quarantine(format!(
                "{NAME}: cannot store the token buckets of device {}: {err}",
                msg.device_id()
            ));
        }
        let attribute = self.registry.as_ref().map_or("", |r| r.attribute.as_str());
        match admission {
            Admission::Allow => Decision::allow(),
            Admission::Burst { tokens } => {
                let detail = match limits.soft_origin {
                    Origin::Configured => format!(
                        "{NAME}: device {} exceeded its burst of {} messages at {} msg/s \
                         ({} tokens left)",
                        msg.device_id(),
                        limits.soft.burst,
                        limits.soft.rate,
                        round3(tokens)
                    ),
                    Origin::Period { .. } => format!(
                        "{NAME}: device {} exceeded its burst of {} messages at {} msg/s ({}; \
                         {} tokens left)",
                        msg.device_id(),
                        limits.soft.burst,
                        Short(limits.soft.rate),
                        Source(attribute, limits.soft_origin),
                        round3(tokens)
                    ),
                };
                Decision::alert(Severity::Medium, "rate-burst", detail)
            }
            Admission::Flood { limit } => {
                let source = match limits.hard_origin {
                    Origin::Period { .. } => {
                        format!(" ({})", Source(attribute, limits.hard_origin))
                    }
                    // The configured ceiling of a device whose soft limit is its period's.
                    Origin::Configured if limits.by_period() => {
                        " (configured hard-rate)".to_owned()
                    }
                    Origin::Configured => String::new(),
                };
                let rate = if source.is_empty() {
                    limit.rate.to_string()
                } else {
                    Short(limit.rate).to_string()
                };
                let detail = format!(
                    "{NAME}: device {} is flooding: hard limit of {} messages burst at {rate} \
                     msg/s{source} exhausted",
                    msg.device_id(),
                    limit.burst,
                );
                Decision::quarantine(&detail).with_alert(Severity::High, "flood", detail)
            }
        }
    }
}

impl Settings {
    /// The device's limits: from its registry period when the registry is read and the
    /// device's entry has the attribute, the configured ones otherwise. A period that is no
    /// positive finite number is logged (the host rate-limits the log) and the configured limits
    /// apply: a registry typo must not hold a device's traffic.
    fn limits(&self, msg: &Message) -> Limits {
        let Some(registry) = &self.registry else {
            return self.configured;
        };
        let Some(value) = msg.device().and_then(|d| d.attribute(&registry.attribute)) else {
            return self.configured;
        };
        registry
            .limits(value, &self.configured)
            .unwrap_or_else(|why| {
                log::warn(&format!(
                    "{NAME}: device {}: {why}; using the configured limits",
                    Quoted(msg.device_id())
                ));
                self.configured
            })
    }
}

/// Where a registry-derived rate comes from: `period-s 60 s × 1.5`.
struct Source<'a>(&'a str, Origin);

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Origin::Configured => f.write_str("configured"),
            Origin::Period { period, tolerance } => {
                write!(f, "{} {period} s × {tolerance}", self.0)
            }
        }
    }
}

/// A rate, to three significant digits (`0.0833`, `0.025`, `1.5`, `12.3`, `1234`).
struct Short(f64);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if !x.is_finite() || x == 0.0 || x.abs() >= 100.0 {
            return write!(f, "{}", x.round());
        }
        // Digits after the point for three significant ones; |x| < 100 keeps this in 0..=330.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let decimals = (2 - x.abs().log10().floor() as i64).max(0) as usize;
        let text = format!("{x:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

/// An optional number of `key` that must be finite and greater than 0.
fn positive(config: &Config, key: &str) -> Result<Option<f64>, String> {
    let value = config.parse::<f64>(key)?;
    match value {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(format!(
            "config `{key}`: invalid value {x}: must be a finite number greater than 0"
        )),
        _ => Ok(value),
    }
}

/// An optional bucket size of `key`: below one token no message would ever pass.
fn at_least_one(config: &Config, key: &str) -> Result<Option<f64>, String> {
    at_least(config, key, 1.0)
}

/// An optional number of `key` that must be finite and at least `min`.
fn at_least(config: &Config, key: &str, min: f64) -> Result<Option<f64>, String> {
    let value = config.parse::<f64>(key)?;
    match value {
        Some(x) if !(x.is_finite() && x >= min) => Err(format!(
            "config `{key}`: invalid value {x}: must be a finite number >= {min}"
        )),
        _ => Ok(value),
    }
}

/// A device's buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Buckets {
    soft: f64,
    /// `None` while no hard limit is configured, so adding one later starts it full.
    hard: Option<f64>,
    /// The latest receive time seen.
    last_ms: u64,
}

/// `soft`, `hard` (NaN for none), `last_ms`, little-endian.
impl Record for Buckets {
    const LEN: usize = 8 + 8 + 8;

    fn write(&self, out: &mut Writer) {
        out.f64(self.soft).f64_or_nan(self.hard).u64(self.last_ms);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        let buckets = Self {
            soft: input.f64()?,
            hard: input.f64_or_nan()?,
            last_ms: input.u64()?,
        };
        let valid = |tokens: f64| tokens.is_finite() && tokens >= 0.0;
        (valid(buckets.soft) && buckets.hard.is_none_or(valid)).then_some(buckets)
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Admission {
    Allow,
    /// The soft bucket was empty; `tokens` is what was left in it.
    Burst {
        tokens: f64,
    },
    /// The hard bucket was empty.
    Flood {
        limit: Limit,
    },
}

/// Refills the buckets up to `now_ms` at the device's `limits`, takes one token from each that
/// has one, and says what happens to the message. A new device starts with full buckets.
fn admit(limits: &Limits, previous: Option<Buckets>, now_ms: u64) -> (Admission, Buckets) {
    let previous = previous.unwrap_or(Buckets {
        soft: limits.soft.burst,
        hard: None,
        last_ms: now_ms,
    });
    // A clock going backwards is no elapsed time; keeping the latest time means the interval is
    // not refilled twice when the clock comes back.
    #[allow(clippy::cast_precision_loss)] // ms counts far below 2^53
    let seconds = now_ms.saturating_sub(previous.last_ms) as f64 / 1000.0;
    let refill = |tokens: f64, limit: Limit| (tokens + seconds * limit.rate).min(limit.burst);
    let take = |tokens: f64| {
        if tokens >= 1.0 {
            (true, tokens - 1.0)
        } else {
            (false, tokens)
        }
    };
    let soft = refill(previous.soft, limits.soft);
    let (soft_ok, soft_left) = take(soft);
    let hard = limits.hard.map(|limit| {
        let tokens = previous.hard.map_or(limit.burst, |t| refill(t, limit));
        (limit, take(tokens))
    });
    let buckets = Buckets {
        soft: soft_left,
        hard: hard.map(|(_, (_, left))| left),
        last_ms: previous.last_ms.max(now_ms),
    };
    let admission = match hard {
        Some((limit, (false, _))) => Admission::Flood { limit },
        _ if !soft_ok => Admission::Burst { tokens: soft },
        _ => Admission::Allow,
    };
    (admission, buckets)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        declared(pairs).0
    }

    /// `init` as the host runs it (declarations open), with what it declared.
    fn declared(
        pairs: &[(&str, &str)],
    ) -> (Result<Settings, String>, twinguard_guest::declare::Manifest) {
        twinguard_guest::declare::capture(|| Settings::init(&pairs.iter().copied().collect()))
    }

    #[test]
    fn declares_nothing() {
        let (s, m) = declared(&[("rate", "2")]);
        s.unwrap();
        assert_eq!(m, twinguard_guest::declare::Manifest::default());
    }

    /// Feeds messages at the given times and returns the admissions, flood/burst/allow as F/B/A.
    fn feed(settings: &Settings, buckets: &mut Option<Buckets>, times: &[u64]) -> String {
        times
            .iter()
            .map(|&t| {
                let (admission, next) = admit(&settings.configured, *buckets, t);
                *buckets = Some(next);
                match admission {
                    Admission::Allow => 'A',
                    Admission::Burst { .. } => 'B',
                    Admission::Flood { .. } => 'F',
                }
            })
            .collect()
    }

    #[test]
    fn defaults_and_parsing() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s,
            Settings {
                configured: Limits::configured(
                    Limit {
                        rate: 1.0,
                        burst: 10.0
                    },
                    None
                ),
                registry: Some(Registry {
                    attribute: "period-s".to_owned(),
                    tolerance: 1.5,
                    hard: None,
                }),
            }
        );
        let s = settings(&[
            ("rate", "0.5"),
            ("burst", "3"),
            ("hard-rate", "2"),
            ("hard-burst", "3"),
        ])
        .unwrap();
        assert_eq!(
            s.configured.hard,
            Some(Limit {
                rate: 2.0,
                burst: 3.0
            })
        );
        let s = settings(&[("period-attribute", "")]).unwrap();
        assert_eq!(s.registry, None);
        let s = settings(&[
            ("period-attribute", " interval "),
            ("tolerance", "2"),
            ("hard-tolerance", "5"),
            ("burst", "5"),
            ("hard-burst", "20"),
        ])
        .unwrap();
        // `hard-burst` with `hard-tolerance` alone: only registry devices get a hard limit.
        assert_eq!(s.configured.hard, None);
        assert_eq!(
            s.registry,
            Some(Registry {
                attribute: "interval".to_owned(),
                tolerance: 2.0,
                hard: Some((5.0, 20.0)),
            })
        );
    }

    #[test]
    fn refusals_name_the_key() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("rates", "1")], &["`rates`", "`rate`"]),
            (&[("/metrics/x", "1")], &["`/metrics/x`"]),
            (&[("rate", "fast")], &["`rate`", "\"fast\""]),
            (&[("rate", "0")], &["`rate`", "0", "greater than 0"]),
            (&[("rate", "NaN")], &["`rate`", "NaN"]),
            (&[("burst", "0.5")], &["`burst`", "0.5", ">= 1"]),
            (&[("hard-rate", "5")], &["`hard-rate`", "`hard-burst`"]),
            (&[("hard-burst", "50")], &["`hard-burst`", "`hard-rate`"]),
            (
                &[("rate", "2"), ("hard-rate", "1"), ("hard-burst", "50")],
                &["`hard-rate`", "`rate`"],
            ),
            (
                &[("burst", "20"), ("hard-rate", "5"), ("hard-burst", "10")],
                &["`hard-burst`", "`burst`"],
            ),
            (&[("tolerance", "0.9")], &["`tolerance`", "0.9", ">= 1"]),
            (&[("tolerance", "inf")], &["`tolerance`", "inf"]),
            (&[("tolerance", "lots")], &["`tolerance`", "\"lots\""]),
            (
                &[("hard-tolerance", "NaN"), ("hard-burst", "20")],
                &["`hard-tolerance`", "NaN"],
            ),
            (
                &[("hard-tolerance", "1.2"), ("hard-burst", "20")],
                &["`hard-tolerance`", "1.2", "`tolerance` (1.5)"],
            ),
            (
                &[
                    ("tolerance", "3"),
                    ("hard-tolerance", "2"),
                    ("hard-burst", "20"),
                ],
                &["`hard-tolerance`", "`tolerance` (3)"],
            ),
            (
                &[("hard-tolerance", "5")],
                &["`hard-tolerance`", "`hard-burst`"],
            ),
            (
                &[
                    ("hard-tolerance", "5"),
                    ("burst", "20"),
                    ("hard-burst", "10"),
                ],
                &["`hard-burst`", "`burst`"],
            ),
            (
                &[("period-attribute", ""), ("tolerance", "2")],
                &["`tolerance`", "`period-attribute`"],
            ),
            (
                &[
                    ("period-attribute", " "),
                    ("hard-tolerance", "5"),
                    ("hard-burst", "20"),
                ],
                &["`hard-tolerance`", "`period-attribute`"],
            ),
            (
                &[
                    ("period-attribute", ""),
                    ("hard-tolerance", "5"),
                    ("hard-burst", "20"),
                ],
                &["`hard-tolerance`", "`period-attribute`"],
            ),
        ];
        for (pairs, needles) in cases {
            let err = settings(pairs).unwrap_err();
            for needle in *needles {
                assert!(err.contains(needle), "{pairs:?}: {err:?} lacks {needle}");
            }
        }
    }

    #[test]
    fn burst_then_alert_then_refill() {
        let s = settings(&[("rate", "1"), ("burst", "3")]).unwrap();
        let mut b = None;
        assert_eq!(feed(&s, &mut b, &[0, 0, 0, 0, 0]), "AAABB");
        // Half a second is half a token: still empty.
        assert_eq!(feed(&s, &mut b, &[500]), "B");
        // 1.5 s later: 2 tokens, two messages pass.
        assert_eq!(feed(&s, &mut b, &[2_000, 2_000, 2_000]), "AAB");
        // A long pause refills to the burst, no further.
        assert_eq!(feed(&s, &mut b, &[1_000_000; 4]), "AAAB");
    }

    #[test]
    fn hard_bucket_quarantines_floods() {
        let s = settings(&[
            ("rate", "1"),
            ("burst", "2"),
            ("hard-rate", "2"),
            ("hard-burst", "4"),
        ])
        .unwrap();
        let mut b = None;
        assert_eq!(feed(&s, &mut b, &[0; 6]), "AABBFF");
        // One second: one soft token, two hard ones.
        assert_eq!(feed(&s, &mut b, &[1_000; 4]), "ABFF");
    }

    #[test]
    fn clock_going_backwards_is_no_elapsed_time() {
        let s = settings(&[("rate", "1"), ("burst", "1")]).unwrap();
        let mut b = None;
        assert_eq!(feed(&s, &mut b, &[10_000, 5_000, 0]), "ABB");
        // Back at 10 s: nothing elapsed since the latest time seen; 11 s: one token.
        assert_eq!(feed(&s, &mut b, &[10_000, 11_000, 11_000]), "BAB");
    }

    #[test]
    fn a_hard_limit_added_later_starts_full() {
        let soft_only = settings(&[("rate", "1"), ("burst", "1")]).unwrap();
        let mut b = None;
        assert_eq!(feed(&soft_only, &mut b, &[0, 0]), "AB");
        let both = settings(&[
            ("rate", "1"),
            ("burst", "1"),
            ("hard-rate", "1"),
            ("hard-burst", "2"),
        ])
        .unwrap();
        assert_eq!(feed(&both, &mut b, &[0, 0, 0]), "BBF");
    }

    /// The README's example: a plant-wide configured limit, and limits from the period.
    fn registry_settings() -> Settings {
        settings(&[
            ("rate", "0.1"),
            ("burst", "5"),
            ("hard-rate", "1"),
            ("hard-burst", "20"),
            ("tolerance", "1.5"),
            ("hard-tolerance", "5"),
        ])
        .unwrap()
    }

    fn derived(s: &Settings, value: &str) -> Result<Limits, String> {
        s.registry.as_ref().unwrap().limits(value, &s.configured)
    }

    #[test]
    fn limits_from_the_registry_period() {
        let s = registry_settings();
        let slow = derived(&s, "60").unwrap();
        assert_eq!(
            slow,
            Limits {
                soft: Limit {
                    rate: 1.5 / 60.0,
                    burst: 5.0
                },
                hard: Some(Limit {
                    rate: 5.0 / 60.0,
                    burst: 20.0
                }),
                soft_origin: Origin::Period {
                    period: 60.0,
                    tolerance: 1.5
                },
                hard_origin: Origin::Period {
                    period: 60.0,
                    tolerance: 5.0
                },
            }
        );
        assert!(slow.by_period());
        let fast = derived(&s, " 5 ").unwrap();
        assert_eq!(fast.soft.rate, 0.3);
        assert_eq!(fast.hard.map(|l| (l.rate, l.burst)), Some((1.0, 20.0)));
        // Fractional periods and exponents are numbers too.
        assert_eq!(derived(&s, "0.5").unwrap().soft.rate, 3.0);
        assert_eq!(derived(&s, "6e1").unwrap().soft.rate, 0.025);
        // The configured limits are untouched: they are for devices without a period.
        assert!(!s.configured.by_period());
        assert_eq!(s.configured.soft.rate, 0.1);
    }

    #[test]
    fn without_hard_tolerance_the_configured_hard_limit_applies() {
        let s = settings(&[
            ("rate", "0.1"),
            ("burst", "5"),
            ("hard-rate", "1"),
            ("hard-burst", "20"),
        ])
        .unwrap();
        let l = derived(&s, "60").unwrap();
        assert_eq!(l.soft.rate, 0.025);
        assert_eq!(l.hard, s.configured.hard);
        assert_eq!(l.hard_origin, Origin::Configured);
        // No hard limit configured at all: none.
        let s = settings(&[("burst", "5")]).unwrap();
        assert_eq!(derived(&s, "60").unwrap().hard, None);
    }

    #[test]
    fn a_bad_period_is_refused_for_the_configured_limits() {
        let s = registry_settings();
        for bad in ["", "abc", "0", "-5", "inf", "NaN", "60s", "1e-320"] {
            let err = derived(&s, bad).unwrap_err();
            assert!(err.contains("period-s"), "{bad:?}: {err}");
        }
        // A huge period gives a tiny but usable rate.
        assert!(derived(&s, "1e300").unwrap().soft.rate > 0.0);
    }

    #[test]
    fn registry_limits_drive_the_buckets() {
        let s = registry_settings();
        // Period 5 s: soft 0.3 msg/s burst 5, hard 1 msg/s burst 20.
        let fast = derived(&s, "5").unwrap();
        let mut b = None;
        let feed_limits = |b: &mut Option<Buckets>, times: &[u64]| -> String {
            times
                .iter()
                .map(|&t| {
                    let (admission, next) = admit(&fast, *b, t);
                    *b = Some(next);
                    match admission {
                        Admission::Allow => 'A',
                        Admission::Burst { .. } => 'B',
                        Admission::Flood { .. } => 'F',
                    }
                })
                .collect()
        };
        assert_eq!(
            feed_limits(&mut b, &[0; 22]),
            format!("{}{}FF", "A".repeat(5), "B".repeat(15))
        );
        // 10 s later: 3 soft tokens, 10 hard ones.
        assert_eq!(feed_limits(&mut b, &[10_000; 4]), "AAAB");
    }

    #[test]
    fn short_rates() {
        for (x, text) in [
            (5.0 / 60.0, "0.0833"),
            (1.5 / 60.0, "0.025"),
            (0.3, "0.3"),
            (1.0, "1"),
            (1.5, "1.5"),
            (12.345, "12.3"),
            (1234.5, "1235"),
            (1.5 / 86_400.0, "0.0000174"),
        ] {
            assert_eq!(Short(x).to_string(), text, "{x}");
        }
        assert_eq!(
            Source(
                "period-s",
                Origin::Period {
                    period: 60.0,
                    tolerance: 5.0
                }
            )
            .to_string(),
            "period-s 60 s × 5"
        );
    }

    #[test]
    fn buckets_round_trip_and_refuse_garbage() {
        for hard in [None, Some(0.25)] {
            let b = Buckets {
                soft: 3.5,
                hard,
                last_ms: 1_764_028_800_123,
            };
            assert_eq!(state::decode(&state::encode(&b)), Ok(b));
        }
        assert!(state::decode::<Buckets>(&[0; 23]).is_err());
        let mut bad = [0; Buckets::LEN];
        bad[..8].copy_from_slice(&(-1.0f64).to_le_bytes());
        assert!(state::decode::<Buckets>(&bad).is_err());
        // What earlier versions stored: a reload must keep every device's buckets.
        let b = Buckets {
            soft: 3.5,
            hard: None,
            last_ms: 1_764_028_800_123,
        };
        let mut old = Vec::new();
        old.extend_from_slice(&3.5f64.to_le_bytes());
        old.extend_from_slice(&f64::NAN.to_le_bytes());
        old.extend_from_slice(&1_764_028_800_123u64.to_le_bytes());
        assert_eq!(state::encode(&b), old);
    }
}
