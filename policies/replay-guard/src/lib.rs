//! Replay and staleness guard: per device, the sequence number must grow and the device's
//! timestamp must be close to the time of receipt. See README.md for the configuration keys.

#![forbid(unsafe_code)]

use std::fmt;

use twinguard_guest::declare;
use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::text::Clipped;
use twinguard_guest::{
    export_configured, Config, Configured, Decision, Field, FieldError, Message, Quoted, Severity,
    StateError, Value,
};

const KNOWN_KEYS: &[&str] = &[
    "seq",
    "ts",
    "max-age-ms",
    "max-future-ms",
    "require",
    "allow-seq-reset",
];

/// The one state key: the last accepted seq and ts, 8 bytes little-endian each. Versioned so a
/// later layout can use a new key instead of misreading this one after a reload.
const STATE_KEY: &str = "last-v1";

export_configured!(Settings);

/// The last accepted message of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    seq: i64,
    ts: i64,
}

impl Record for Last {
    const LEN: usize = 16;

    fn write(&self, out: &mut Writer) {
        out.i64(self.seq).i64(self.ts);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            seq: input.i64()?,
            ts: input.i64()?,
        })
    }
}

/// The message's device id, quoted, for a reason: fetched from the host only when a reason is
/// written. Clean messages need no reason, so the policy does not declare the device id
/// (contract 0.2) and most calls never copy it.
#[derive(Clone, Copy)]
struct DeviceId<'a>(&'a Message);

impl fmt::Display for DeviceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Quoted(self.0.device_id()).fmt(f)
    }
}

/// Why a message is quarantined.
#[derive(Debug, PartialEq)]
struct Rejection {
    severity: Severity,
    code: &'static str,
    reason: String,
}

/// Quarantines replayed and stale messages: the policy is its settings, parsed once by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    seq: String,
    ts: String,
    /// The handles of `seq` and `ts`, as declared: read by handle, a field is not searched for
    /// by its pointer.
    fields: [Field; 2],
    max_age_ms: u64,
    max_future_ms: u64,
    require: bool,
    allow_seq_reset: bool,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        // Not the empty pointer: the whole document is never an integer we accept.
        let seq = config.pointer("seq")?.unwrap_or("/seq").to_owned();
        let ts = config.pointer("ts")?.unwrap_or("/ts").to_owned();
        if seq == ts {
            return Err(format!(
                "config `seq` and `ts` are both {seq:?}: they must name different fields"
            ));
        }
        // Read on every message: handed over with it (contract 0.2).
        let fields = [declare::field(&seq)?, declare::field(&ts)?];
        Ok(Self {
            seq,
            ts,
            fields,
            max_age_ms: config.parse("max-age-ms")?.unwrap_or(30_000),
            max_future_ms: config.parse("max-future-ms")?.unwrap_or(5_000),
            require: config.parse("require")?.unwrap_or(true),
            allow_seq_reset: config.parse("allow-seq-reset")?.unwrap_or(false),
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        match self.check(msg) {
            Ok(()) => Decision::allow(),
            Err(rejection) => Decision::quarantine(&rejection.reason).with_alert(
                rejection.severity,
                rejection.code,
                rejection.reason,
            ),
        }
    }
}

impl Settings {
    /// Why `msg` is quarantined, if it is; records its seq and ts when it is not.
    fn check(&self, msg: &Message) -> Result<(), Rejection> {
        let device = DeviceId(msg);
        let [seq_field, ts_field] = self.fields;
        let (seq, ts) = match (
            integer(msg, seq_field, &self.seq),
            integer(msg, ts_field, &self.ts),
        ) {
            (Ok(seq), Ok(ts)) => (seq, ts),
            (Err(why), _) | (_, Err(why)) => {
                return if self.require {
                    Err(Rejection {
                        severity: Severity::Medium,
                        code: "unverifiable",
                        reason: format!(
                            "replay-guard: cannot check device {device}'s message for replay: \
                             {why} (require = true)"
                        ),
                    })
                } else {
                    Ok(())
                };
            }
        };

        let last = state::get_record(STATE_KEY).map_err(|err| {
            state_rejection(format!(
                "replay-guard: stored state of device {device} is corrupt ({err}); \
                 quarantined because replays cannot be detected"
            ))
        })?;
        self.judge(device, last, seq, ts, msg.received_at_ms())?;

        state::set_record(STATE_KEY, &Last { seq, ts }).map_err(|err| {
            state_rejection(format!(
                "replay-guard: cannot record seq {seq} / ts {ts} of device {device}: {}; \
                 quarantined because replays could not be detected afterwards",
                describe_state_error(&err)
            ))
        })
    }

    /// The message's seq and ts against the device's last accepted ones and the clock.
    fn judge(
        &self,
        device: impl fmt::Display,
        last: Option<Last>,
        seq: i64,
        ts: i64,
        received_at_ms: u64,
    ) -> Result<(), Rejection> {
        if let Some(last) = last {
            let reset = self.allow_seq_reset && seq < last.seq && ts > last.ts;
            if seq <= last.seq && !reset {
                let why_not_reset = if self.allow_seq_reset && seq < last.seq {
                    format!(
                        " (ts {ts} is not newer than last accepted ts {}, so not a reset)",
                        last.ts
                    )
                } else {
                    String::new()
                };
                return Err(Rejection {
                    severity: Severity::High,
                    code: "replay",
                    reason: format!(
                        "replay-guard: seq {seq} <= last accepted {} for device {device}{why_not_reset}",
                        last.seq
                    ),
                });
            }
        }
        // i128: neither difference can overflow, whatever a device sends.
        let age = i128::from(received_at_ms) - i128::from(ts);
        if age > i128::from(self.max_age_ms) {
            return Err(Rejection {
                severity: Severity::Medium,
                code: "stale",
                reason: format!(
                    "replay-guard: ts {ts} of device {device} is {age} ms before receipt at \
                     {received_at_ms}, over max-age-ms {}",
                    self.max_age_ms
                ),
            });
        }
        if -age > i128::from(self.max_future_ms) {
            return Err(Rejection {
                severity: Severity::Medium,
                code: "future-timestamp",
                reason: format!(
                    "replay-guard: ts {ts} of device {device} is {} ms after receipt at \
                     {received_at_ms}, over max-future-ms {}",
                    -age, self.max_future_ms
                ),
            });
        }
        Ok(())
    }
}

/// State we cannot read or write means replays go unseen: fail closed. Otherwise a flood of
/// made-up device ids (filling the host's `state-devices`) would switch the protection off.
fn state_rejection(reason: String) -> Rejection {
    Rejection {
        severity: Severity::High,
        code: "state-error",
        reason,
    }
}

fn describe_state_error(err: &StateError) -> String {
    match err {
        StateError::OverLimit(_) => format!("state over-limit: {err}"),
        StateError::TooManyDevices(_) => format!("state too-many-devices: {err}"),
        other => format!("state error: {other}"),
    }
}

/// The integer in the declared `field` (at `pointer`), or why there is none.
fn integer(msg: &Message, field: Field, pointer: &str) -> Result<i64, String> {
    integer_in(pointer, msg.get(field))
}

/// [`integer`] from the field's lookup. Anything but an integer is described, not quoted: the
/// reason reaches the alerts and the quarantine store unredacted.
fn integer_in(pointer: &str, field: Result<Option<&Value>, FieldError>) -> Result<i64, String> {
    match field {
        Ok(Some(&Value::Integer(i))) => Ok(i),
        Ok(Some(other)) => Err(format!("{pointer} is {}, not an integer", other.describe())),
        Ok(None) => Err(format!("{pointer} is missing")),
        Err(err) => Err(format!(
            "{pointer} cannot be read: {}",
            Clipped(&err.to_string())
        )),
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
    fn declares_seq_and_ts_only() {
        let (s, m) = declared(&[]);
        s.unwrap();
        assert_eq!(m.fields, ["/seq", "/ts"]);
        assert_eq!(m.envelope, declare::Envelope::NONE);
        let (s, m) = declared(&[("seq", "/meta/n"), ("ts", "/meta/t")]);
        s.unwrap();
        assert_eq!(m.fields, ["/meta/n", "/meta/t"]);
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!((s.seq.as_str(), s.ts.as_str()), ("/seq", "/ts"));
        assert_eq!((s.max_age_ms, s.max_future_ms), (30_000, 5_000));
        assert!(s.require && !s.allow_seq_reset);
    }

    #[test]
    fn options() {
        let s = settings(&[
            ("seq", "/hdr/n"),
            ("ts", "/hdr/time"),
            ("max-age-ms", "1000"),
            ("max-future-ms", "0"),
            ("require", "false"),
            ("allow-seq-reset", "true"),
        ])
        .unwrap();
        assert_eq!((s.seq.as_str(), s.ts.as_str()), ("/hdr/n", "/hdr/time"));
        assert_eq!((s.max_age_ms, s.max_future_ms), (1000, 0));
        assert!(!s.require && s.allow_seq_reset);
    }

    #[test]
    fn refusals_name_the_culprit() {
        for (pairs, needles) in [
            (
                &[("max_age_ms", "1")][..],
                &["`max_age_ms`", "`max-age-ms`"][..],
            ),
            (&[("seq", "seq")], &["`seq`", "\"seq\""]),
            (&[("ts", "")], &["`ts`", "empty pointer"]),
            (&[("ts", "/a~")], &["`ts`", "'~'"]),
            (&[("seq", "/n"), ("ts", "/n")], &["`seq`", "`ts`", "\"/n\""]),
            (&[("max-age-ms", "30s")], &["`max-age-ms`", "\"30s\""]),
            (&[("max-future-ms", "-5")], &["`max-future-ms`", "\"-5\""]),
            (&[("require", "yes")], &["`require`", "\"yes\""]),
            (&[("allow-seq-reset", "1")], &["`allow-seq-reset`", "\"1\""]),
        ] {
            let err = settings(pairs).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{pairs:?}: {err}");
            }
        }
    }

    #[test]
    fn state_layout_round_trips() {
        let last = Last {
            seq: -2,
            ts: 1_795_564_800_123,
        };
        assert_eq!(state::decode(&state::encode(&last)), Ok(last));
        assert!(state::decode::<Last>(&[0; 15]).is_err());
        // What earlier versions stored under `last-v1`: a reload must keep every device's.
        let mut old = Vec::new();
        old.extend_from_slice(&(-2i64).to_le_bytes());
        old.extend_from_slice(&1_795_564_800_123i64.to_le_bytes());
        assert_eq!(state::encode(&last), old);
    }

    const NOW: u64 = 1_795_564_800_000;
    const TS: i64 = 1_795_564_800_000;

    fn code(s: &Settings, last: Option<Last>, seq: i64, ts: i64) -> Option<&'static str> {
        s.judge(Quoted("d"), last, seq, ts, NOW)
            .err()
            .map(|r| r.code)
    }

    #[test]
    fn judging() {
        let s = settings(&[]).unwrap();
        let last = Some(Last {
            seq: 10,
            ts: TS - 60_000,
        });
        assert_eq!(code(&s, None, 1, TS - 200), None);
        assert_eq!(code(&s, last, 11, TS - 200), None);
        assert_eq!(code(&s, last, 10, TS - 200), Some("replay"));
        assert_eq!(code(&s, last, 3, TS - 200), Some("replay"));
        assert_eq!(code(&s, None, 1, TS - 30_000), None);
        assert_eq!(code(&s, None, 1, TS - 30_001), Some("stale"));
        assert_eq!(code(&s, None, 1, TS + 5_000), None);
        assert_eq!(code(&s, None, 1, TS + 5_001), Some("future-timestamp"));
        assert_eq!(code(&s, None, 1, i64::MIN), Some("stale"));
        assert_eq!(code(&s, None, 1, i64::MAX), Some("future-timestamp"));
        let reason = s
            .judge(Quoted("temp-0007"), last, 3, TS, NOW)
            .unwrap_err()
            .reason;
        assert_eq!(
            reason,
            "replay-guard: seq 3 <= last accepted 10 for device \"temp-0007\""
        );
    }

    #[test]
    fn seq_reset_needs_a_newer_ts() {
        let s = settings(&[("allow-seq-reset", "true")]).unwrap();
        let last = Some(Last {
            seq: 10,
            ts: TS - 60_000,
        });
        assert_eq!(code(&s, last, 0, TS), None);
        assert_eq!(
            code(&s, last, 10, TS),
            Some("replay"),
            "equal seq is no reset"
        );
        let r = s.judge(Quoted("d"), last, 0, TS - 60_000, NOW).unwrap_err();
        assert!(r.reason.contains("not a reset"), "{}", r.reason);
    }

    #[test]
    fn a_seq_that_is_no_integer_is_described_not_quoted() {
        let mail = Value::Text("ada.lovelace@example.com".into());
        let why = integer_in("/seq", Ok(Some(&mail))).unwrap_err();
        assert_eq!(
            why,
            "/seq is a string (24 characters, \"…@…\"), not an integer"
        );
        for secret in ["ada.lovelace", "example.com"] {
            assert!(!why.contains(secret), "{why}");
        }
        let why = integer_in("/ts", Ok(Some(&Value::Float(1_764_000_000.5)))).unwrap_err();
        assert_eq!(why, "/ts is a float, not an integer");
        assert_eq!(integer_in("/seq", Ok(Some(&Value::Integer(7)))), Ok(7));
        assert_eq!(integer_in("/seq", Ok(None)).unwrap_err(), "/seq is missing");
    }
}
