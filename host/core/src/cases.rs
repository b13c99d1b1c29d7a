//! Test cases: messages in order, each with the outcome it must have. One format serves the
//! self-tests a module ships (NDJSON, checked at every load) and `twinguard test` files (the same
//! step fields in TOML), so a case moves between them unchanged.
//!
//! A step is an [`input`] line plus:
//! - `expect`: a verdict (`"quarantine"`: what the first policy of the chain said, `fault`
//!   included) or a table of what to check (see [`Expect`]);
//! - `case`: the name of the sequence it belongs to. The steps of one case run in order on one
//!   instance with state of its own, so a stateful rule (a replay, a rate, one badge at two
//!   doors) can be tested; a line without `case` is a case of its own;
//! - `after`: received this long after the previous step (`"61s"`, `"1h 30m"`), instead of
//!   `received_at` / `received_at_ms`;
//! - `config`: the policy's settings for the case (on its first step).
//!
//! ```
//! use twinguard_core::cases;
//! let text = r#"{"case":"replay","device":"d1","topic":"t/d1","payload":{"seq":1},"received_at":"2026-03-29T00:59:00Z","expect":"allow"}
//! {"case":"replay","device":"d1","topic":"t/d1","payload":{"seq":1},"after":"2s","expect":{"action":"quarantine","reason":"replay"}}"#;
//! let cases = cases::from_ndjson(text)?;
//! assert_eq!(cases.len(), 1);
//! assert_eq!(cases[0].steps[1].message.received_at_ms, cases[0].steps[0].message.received_at_ms + 2_000);
//! # Ok::<(), twinguard_core::Invalid>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::input::{self, Parsed};
use crate::{Action, ContentType, Invalid, Message, Outcome, Verdict};

/// The self-test cases a component's bytes ship (every `twinguard-selftest` section, NDJSON),
/// read without compiling it; `None` when there are none.
pub fn shipped(bytes: &[u8]) -> Option<String> {
    crate::selftest::cases_in(bytes)
}

/// Verdict names a policy can give (`fault`: it failed).
pub const VERDICTS: [&str; 5] = ["allow", "redact", "quarantine", "alert", "fault"];
/// Action names an outcome can have.
pub const ACTIONS: [&str; 4] = ["allow", "redact", "alert", "quarantine"];

/// What a step's outcome must be. Every field given is checked; the rest is not.
///
/// In TOML, `expect = "redact"` is `expect = { verdict = "redact" }`; a table names more:
/// `expect = { action = "alert", alerts = ["pii-redacted"], payload = { t = 21.5 } }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "Value")]
#[non_exhaustive]
pub struct Expect {
    /// The first policy's verdict (`allow`, `redact`, `quarantine`, `alert` or `fault`).
    pub verdict: Option<String>,
    /// The outcome's action (`allow`, `redact`, `alert` or `quarantine`).
    pub action: Option<String>,
    /// The verdict of each named policy of the chain (`"not run"` when it did not run).
    pub verdicts: BTreeMap<String, String>,
    /// The codes of every alert raised, in any order (empty: none at all).
    pub alerts: Option<Vec<String>>,
    /// The payload forwarded (or held), as JSON: JSON and CBOR payloads compare as documents
    /// (member order aside), text as a string.
    pub payload: Option<Value>,
    /// Text the quarantine reason contains.
    pub reason: Option<String>,
    /// The policy that quarantined the message.
    pub quarantined_by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectTable {
    verdict: Option<String>,
    action: Option<String>,
    #[serde(default)]
    verdicts: BTreeMap<String, String>,
    alerts: Option<Vec<String>>,
    payload: Option<Value>,
    reason: Option<String>,
    quarantined_by: Option<String>,
}

fn one_of(what: &str, name: &str, names: &[&str]) -> Result<(), String> {
    if names.contains(&name) {
        Ok(())
    } else {
        Err(format!("{what} {name:?} is not {}", names.join(", ")))
    }
}

impl TryFrom<Value> for Expect {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let t = match value {
            Value::String(verdict) => ExpectTable {
                verdict: Some(verdict),
                action: None,
                verdicts: BTreeMap::new(),
                alerts: None,
                payload: None,
                reason: None,
                quarantined_by: None,
            },
            Value::Object(_) => {
                serde_json::from_value(value).map_err(|e| format!("expect: {e}"))?
            }
            other => {
                return Err(format!(
                    "expect must be a verdict (\"allow\", ...) or a table, not {other}"
                ))
            }
        };
        if let Some(v) = &t.verdict {
            one_of("expect: verdict", v, &VERDICTS)?;
        }
        if let Some(a) = &t.action {
            one_of("expect: action", a, &ACTIONS)?;
        }
        for (policy, v) in &t.verdicts {
            if v != "not run" {
                one_of(&format!("expect: verdicts.{policy}"), v, &VERDICTS)?;
            }
        }
        let e = Self {
            verdict: t.verdict,
            action: t.action,
            verdicts: t.verdicts,
            alerts: t.alerts,
            payload: t.payload,
            reason: t.reason,
            quarantined_by: t.quarantined_by,
        };
        if e == Self::default() {
            return Err("expect: an empty table checks nothing".into());
        }
        Ok(e)
    }
}

/// One expectation a step's outcome did not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What was checked: `verdict`, `action`, `verdicts.pii`, `alerts`, `payload`, `reason`
    /// or `quarantined_by`.
    pub what: String,
    /// What the step expects.
    pub expected: String,
    /// What the outcome had.
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.what, self.expected, self.got
        )
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Fault(f) => format!("fault ({f})"),
        other => other.name().to_owned(),
    }
}

/// The payload as a JSON document, the way [`Expect::payload`] compares it.
pub fn payload_as_json(ct: ContentType, bytes: &[u8]) -> Value {
    let lossy = || Value::String(String::from_utf8_lossy(bytes).into_owned());
    match ct {
        ContentType::Json => serde_json::from_slice(bytes).unwrap_or_else(|_| lossy()),
        ContentType::Cbor => crate::convert::cbor_to_json(bytes).unwrap_or_else(|_| lossy()),
        ContentType::Text | ContentType::Binary => lossy(),
    }
}

impl Expect {
    /// Checks `outcome` (of `message`) against every expectation given; empty when it meets
    /// them all.
    pub fn check(&self, message: &Message, outcome: &Outcome) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let mut miss = |what: &str, expected: String, got: String| {
            out.push(Mismatch {
                what: what.to_owned(),
                expected,
                got,
            });
        };
        let quarantine = match &outcome.action {
            Action::Quarantine { policy, reason } => Some((policy.as_deref(), reason.as_str())),
            _ => None,
        };
        if let Some(want) = &self.verdict {
            let got = outcome.trace.first().map(|t| &t.verdict);
            if got.map(Verdict::name) != Some(want.as_str()) {
                let mut text = got.map_or_else(|| "no policy ran".to_owned(), verdict_text);
                if let Some((_, reason)) = quarantine {
                    text.push_str(&format!(" ({reason})"));
                }
                miss("verdict", want.clone(), text);
            }
        }
        if let Some(want) = &self.action {
            if outcome.action.name() != want {
                let mut got = outcome.action.name().to_owned();
                if let Some((_, reason)) = quarantine {
                    got.push_str(&format!(" ({reason})"));
                }
                miss("action", want.clone(), got);
            }
        }
        for (policy, want) in &self.verdicts {
            let got = outcome
                .trace
                .iter()
                .find(|t| &*t.policy == policy)
                .map_or_else(|| "not run".to_owned(), |t| verdict_text(&t.verdict));
            let name = got.split(' ').next().unwrap_or_default();
            if got != *want && name != want {
                miss(&format!("verdicts.{policy}"), want.clone(), got);
            }
        }
        if let Some(want) = &self.alerts {
            let mut want = want.clone();
            want.sort();
            let mut got: Vec<_> = outcome.alerts.iter().map(|a| a.code.clone()).collect();
            got.sort();
            if want != got {
                miss("alerts", format!("{want:?}"), format!("{got:?}"));
            }
        }
        if let Some(want) = &self.payload {
            let got = payload_as_json(message.content_type, &outcome.payload);
            if *want != got {
                miss("payload", want.to_string(), got.to_string());
            }
        }
        if let Some(want) = &self.reason {
            match quarantine {
                Some((_, reason)) if reason.contains(want.as_str()) => {}
                Some((_, reason)) => miss(
                    "reason",
                    format!("to contain {want:?}"),
                    format!("{reason:?}"),
                ),
                None => miss(
                    "reason",
                    format!("to contain {want:?}"),
                    format!("no quarantine ({})", outcome.action.name()),
                ),
            }
        }
        if let Some(want) = &self.quarantined_by {
            let got = match quarantine {
                Some((Some(p), _)) => p.to_owned(),
                Some((None, _)) => "the host (no route)".to_owned(),
                None => format!("no quarantine ({})", outcome.action.name()),
            };
            if got != *want {
                miss("quarantined_by", want.clone(), got);
            }
        }
        out
    }
}

/// One message of a case and what it must give.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Step {
    /// Where it was written: `line 4` of an NDJSON file, or `step 2` of a TOML case.
    pub label: String,
    /// The message, its received time resolved (`after` the previous step's).
    pub message: Message,
    /// What it must give; `None` for a step that only sets state up.
    pub expect: Option<Expect>,
}

/// A sequence of steps on one instance with state of its own.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Case {
    /// The case's name (`line N` for an unnamed NDJSON line).
    pub name: String,
    /// The policy's settings for this case, when it names them (the configured ones otherwise).
    pub config: Option<Vec<(String, String)>>,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

impl Case {
    /// A case from parsed steps (with their labels), in order: resolves `after` and checks
    /// that the case has one config and expects something.
    pub fn new(name: String, parsed: Vec<(String, Parsed)>) -> Result<Self, String> {
        let mut config: Option<Option<Vec<(String, String)>>> = None;
        let mut steps = Vec::with_capacity(parsed.len());
        let mut previous: Option<u64> = None;
        for (label, p) in parsed {
            match &config {
                None => config = Some(p.config.clone()),
                Some(first) if p.config.is_some() && *first != p.config => {
                    return Err(format!(
                        "case {name:?}, {label}: another config than the case's first step; \
                         the steps of a case run on one instance (give config on the first)"
                    ));
                }
                Some(_) => {}
            }
            let mut message = p.message;
            match (p.after, previous) {
                (Some(_), None) => {
                    return Err(format!(
                        "case {name:?}, {label}: \"after\" on the first step (after what?); \
                         give received_at"
                    ))
                }
                (Some(gap), Some(prev)) => {
                    let gap = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
                    message.received_at_ms = prev.saturating_add(gap);
                }
                // Untimed: the same instant as the step before (now for the first).
                (None, Some(prev)) if !p.timed => message.received_at_ms = prev,
                _ => {}
            }
            previous = Some(message.received_at_ms);
            steps.push(Step {
                label,
                message,
                expect: p.expect,
            });
        }
        if steps.iter().all(|s| s.expect.is_none()) {
            return Err(format!(
                "case {name:?}: no step has \"expect\": it checks nothing"
            ));
        }
        Ok(Self {
            name,
            config: config.flatten(),
            steps,
        })
    }
}

/// The cases in NDJSON text: a line is a step; consecutive lines with the same `case` form one
/// case, a line without `case` is a case of its own. Errors name the line.
pub fn from_ndjson(text: &str) -> Result<Vec<Case>, Invalid> {
    let mut cases = Vec::new();
    let mut open: Option<(String, Vec<(String, Parsed)>)> = None;
    let mut seen = std::collections::HashSet::new();
    let close = |open: Option<(String, Vec<(String, Parsed)>)>,
                 cases: &mut Vec<Case>|
     -> Result<(), Invalid> {
        if let Some((name, steps)) = open {
            cases.push(Case::new(name, steps).map_err(Invalid::from)?);
        }
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let label = format!("line {}", i + 1);
        let parsed = input::parse_line(line).map_err(|e| Invalid::from(format!("{label}: {e}")))?;
        match parsed.case.clone() {
            Some(name) if open.as_ref().is_some_and(|(n, _)| *n == name) => {
                if let Some((_, steps)) = open.as_mut() {
                    steps.push((label, parsed));
                }
            }
            Some(name) => {
                close(open.take(), &mut cases)?;
                if !seen.insert(name.clone()) {
                    return Err(Invalid::from(format!(
                        "{label}: case {name:?} again after other lines: keep a case's lines \
                         together"
                    )));
                }
                open = Some((name, vec![(label, parsed)]));
            }
            None => {
                close(open.take(), &mut cases)?;
                cases.push(Case::new(label.clone(), vec![(label, parsed)]).map_err(Invalid::from)?);
            }
        }
    }
    close(open, &mut cases)?;
    Ok(cases)
}

/// What one step gave.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StepResult {
    /// The step's label.
    pub label: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Expectations it did not meet (empty: passed, or nothing expected).
    pub mismatches: Vec<Mismatch>,
}

/// Runs a case's steps in order through `evaluate` (which holds the case's instance and
/// state) and checks each outcome.
pub fn run(case: &Case, mut evaluate: impl FnMut(&Message) -> Outcome) -> Vec<StepResult> {
    case.steps
        .iter()
        .map(|step| {
            let outcome = evaluate(&step.message);
            let mismatches = step
                .expect
                .as_ref()
                .map(|e| e.check(&step.message, &outcome))
                .unwrap_or_default();
            StepResult {
                label: step.label.clone(),
                outcome,
                mismatches,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(action: Action, payload: &[u8]) -> Outcome {
        Outcome::new(action, payload.to_vec(), 1)
    }

    #[test]
    fn a_verdict_string_is_a_verdict_and_names_are_checked() {
        let e: Expect = serde_json::from_str("\"redact\"").unwrap();
        assert_eq!(e.verdict.as_deref(), Some("redact"));
        let bad = serde_json::from_str::<Expect>("\"redacted\"").unwrap_err();
        assert!(
            bad.to_string().contains("\"redacted\" is not allow"),
            "{bad}"
        );
        let bad = serde_json::from_str::<Expect>(r#"{"acton":"allow"}"#).unwrap_err();
        assert!(bad.to_string().contains("unknown field `acton`"), "{bad}");
        let bad = serde_json::from_str::<Expect>("{}").unwrap_err();
        assert!(bad.to_string().contains("checks nothing"), "{bad}");
    }

    #[test]
    fn every_expectation_is_checked_and_named() {
        let msg = Message::new("d", "t/d", ContentType::Json, br#"{"a":1}"#.to_vec());
        let e: Expect = serde_json::from_str(
            r#"{"action":"quarantine","alerts":["x"],"payload":{"a":2},"reason":"late","quarantined_by":"p"}"#,
        )
        .unwrap();
        let got = e.check(&msg, &outcome(Action::Allow, br#"{"a":1}"#));
        let what: Vec<_> = got.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(
            what,
            ["action", "alerts", "payload", "reason", "quarantined_by"]
        );
        let held = Action::Quarantine {
            policy: Some("p".into()),
            reason: "too late by 3 s".into(),
        };
        let mut o = outcome(held, br#"{ "a" : 2 }"#);
        o.alerts
            .push(crate::Alert::new("p", "v", crate::Severity::Low, "x", ""));
        assert_eq!(e.check(&msg, &o), []);
    }

    #[test]
    fn steps_group_into_cases_and_times_follow_after() {
        let text = r#"{"device":"d","topic":"t","payload":{},"expect":"allow"}
{"case":"s","device":"d","topic":"t","payload":{},"received_at_ms":1000}
{"case":"s","device":"d","topic":"t","payload":{},"after":"1m 1s","expect":"allow"}
{"case":"s","device":"d","topic":"t","payload":{},"expect":"allow"}
{"device":"d","topic":"t","payload":{},"received_at":"1970-01-01T01:00:02+01:00","expect":"allow"}"#;
        let cases = from_ndjson(text).unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!(cases[0].name, "line 1");
        let times: Vec<_> = cases[1]
            .steps
            .iter()
            .map(|s| s.message.received_at_ms)
            .collect();
        assert_eq!(times, [1000, 62_000, 62_000]);
        assert_eq!(cases[2].steps[0].message.received_at_ms, 2_000);
    }

    #[test]
    fn malformed_cases_say_where() {
        let split = r#"{"case":"s","device":"d","topic":"t","payload":{},"expect":"allow"}
{"device":"d","topic":"t","payload":{},"expect":"allow"}
{"case":"s","device":"d","topic":"t","payload":{},"expect":"allow"}"#;
        let e = from_ndjson(split).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("keep a case's lines together"),
            "{e}"
        );
        let first_after =
            r#"{"device":"d","topic":"t","payload":{},"after":"1s","expect":"allow"}"#;
        assert!(from_ndjson(first_after)
            .unwrap_err()
            .to_string()
            .contains("first step"));
        let nothing = r#"{"device":"d","topic":"t","payload":{}}"#;
        assert!(from_ndjson(nothing)
            .unwrap_err()
            .to_string()
            .contains("checks nothing"));
        let bad_gap = r#"{"device":"d","topic":"t","payload":{},"after":"soon","expect":"allow"}"#;
        assert!(from_ndjson(bad_gap)
            .unwrap_err()
            .to_string()
            .contains("line 1: after \"soon\""));
        let two_configs = r#"{"case":"c","config":{"a":1},"device":"d","topic":"t","payload":{},"expect":"allow"}
{"case":"c","config":{"a":2},"device":"d","topic":"t","payload":{},"expect":"allow"}"#;
        assert!(from_ndjson(two_configs)
            .unwrap_err()
            .to_string()
            .contains("another config"));
    }
}
