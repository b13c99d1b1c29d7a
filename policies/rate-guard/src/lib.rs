//! Per-device message rate limits: token buckets on the host's receive time. A soft bucket
//! flags bursts, an optional hard bucket quarantines floods. See README.md.

#![forbid(unsafe_code)]

use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::{export_configured, log, Config, Configured, Decision, Message, Severity};

const NAME: &str = "rate-guard";

const KNOWN_KEYS: &[&str] = &["rate", "burst", "hard-rate", "hard-burst"];

/// The state key of a device's buckets.
const STATE_KEY: &str = "buckets";

export_configured!(Settings);

/// A token bucket's shape: refill speed and size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    /// Tokens per second.
    rate: f64,
    /// Bucket size: the longest burst at full speed.
    burst: f64,
}

/// Flags bursts and quarantines floods, per device: the policy is its settings, parsed once by
/// `init`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Settings {
    soft: Limit,
    hard: Option<Limit>,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        let soft = Limit {
            rate: positive(config, "rate")?.unwrap_or(1.0),
            burst: at_least_one(config, "burst")?.unwrap_or(10.0),
        };
        let hard = match (
            positive(config, "hard-rate")?,
            at_least_one(config, "hard-burst")?,
        ) {
            (None, None) => None,
            (Some(rate), Some(burst)) => {
                if rate < soft.rate {
                    return Err(format!(
                        "config `hard-rate`: {rate} is below `rate` ({}): the hard limit must be \
                         at least the soft one",
                        soft.rate
                    ));
                }
                if burst < soft.burst {
                    return Err(format!(
                        "config `hard-burst`: {burst} is below `burst` ({}): the hard limit must \
                         be at least the soft one",
                        soft.burst
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
            (None, Some(_)) => {
                return Err(
                    "config `hard-burst` is set without `hard-rate`: set both or neither"
                        .to_owned(),
                )
            }
        };
        // Nothing to declare (contract 0.2): no payload field is read, and the device id only
        // words the rare alert, so it is fetched from the host then rather than handed over in
        // every call. The host scopes the state to the device.
        Ok(Self { soft, hard })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let previous = state::get_record(STATE_KEY).unwrap_or_else(|_| {
            log::warn(&format!(
                "rate-guard: discarding undecodable state of device {}",
                msg.device_id()
            ));
            None
        });
        let (admission, buckets) = admit(self, previous, msg.received_at_ms());
        if let Err(err) = state::set_record(STATE_KEY, &buckets) {
            // Without stored buckets every message would see a full bucket: fail closed.
            return Decision::quarantine(format!(
                "{NAME}: cannot store the token buckets of device {}: {err}",
                msg.device_id()
            ));
        }
        match admission {
            Admission::Allow => Decision::allow(),
            Admission::Burst { tokens } => Decision::alert(
                Severity::Medium,
                "rate-burst",
                format!(
                    "{NAME}: device {} exceeded its burst of {} messages at {} msg/s \
                     ({} tokens left)",
                    msg.device_id(),
                    self.soft.burst,
                    self.soft.rate,
                    round3(tokens)
                ),
            ),
            Admission::Flood { limit } => {
                let detail = format!(
                    "{NAME}: device {} is flooding: hard limit of {} messages burst at {} \
                     msg/s exhausted",
                    msg.device_id(),
                    limit.burst,
                    limit.rate
                );
                Decision::quarantine(&detail).with_alert(Severity::High, "flood", detail)
            }
        }
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
    let value = config.parse::<f64>(key)?;
    match value {
        Some(x) if !(x.is_finite() && x >= 1.0) => Err(format!(
            "config `{key}`: invalid value {x}: must be a finite number >= 1"
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

/// Refills the buckets up to `now_ms`, takes one token from each that has one, and says what
/// happens to the message. A new device starts with full buckets.
fn admit(settings: &Settings, previous: Option<Buckets>, now_ms: u64) -> (Admission, Buckets) {
    let previous = previous.unwrap_or(Buckets {
        soft: settings.soft.burst,
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
    let soft = refill(previous.soft, settings.soft);
    let (soft_ok, soft_left) = take(soft);
    let hard = settings.hard.map(|limit| {
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
                let (admission, next) = admit(settings, *buckets, t);
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
                soft: Limit {
                    rate: 1.0,
                    burst: 10.0
                },
                hard: None
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
            s.hard,
            Some(Limit {
                rate: 2.0,
                burst: 3.0
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
