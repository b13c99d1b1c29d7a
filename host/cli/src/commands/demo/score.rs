//! Scoring: outcomes against the simulator's labels. Labels are read here only, after the
//! policies have decided.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::sim::{Label, Scenario, Unit};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use twinguard::{Action, Outcome, Verdict};

/// Target: every scenario at least this share caught.
pub const CATCH_TARGET: f64 = 0.99;
/// Target: at most this share of clean messages flagged.
pub const FALSE_ALARM_TARGET: f64 = 0.001;

/// Whether an outcome flags the message: held back, or reported to the SIEM.
pub fn flagged(outcome: &Outcome) -> bool {
    matches!(outcome.action, Action::Quarantine { .. }) || !outcome.alerts.is_empty()
}

/// Whether an outcome caught a labelled message. A leak of personal data is caught only when
/// it is flagged *and* none of the data leaves.
pub fn caught(label: &Label, outcome: &Outcome) -> bool {
    if !flagged(outcome) {
        return false;
    }
    if label.scenario == Scenario::PiiLeak && outcome.action.forwards() {
        let out = String::from_utf8_lossy(&outcome.payload);
        // CBOR text strings are stored as UTF-8 too, so a byte search finds them in both.
        return !label.secrets.iter().any(|s| out.contains(s.as_str()));
    }
    true
}

/// The policies that flagged a message, for false-alarm attribution.
pub fn culprits(outcome: &Outcome) -> Vec<String> {
    let mut names: Vec<String> = outcome
        .alerts
        .iter()
        .map(|a| a.policy.to_string())
        .collect();
    if let Action::Quarantine { policy, .. } = &outcome.action {
        names.push(policy.as_deref().unwrap_or("(unrouted)").to_owned());
    }
    names.sort();
    names.dedup();
    names
}

#[derive(Debug, Default, Clone)]
struct EpisodeScore {
    messages: u64,
    caught: u64,
    /// Index (0-based) of the first caught message.
    first_caught: Option<u64>,
}

#[derive(Debug, Default)]
struct ScenarioScore {
    messages: u64,
    caught: u64,
    episodes: HashMap<u32, EpisodeScore>,
}

/// Per-policy figures.
#[derive(Debug)]
pub struct PolicyScore {
    evaluations: u64,
    faults: u64,
    quarantined: u64,
    alerted: u64,
    redacted: u64,
    nanos: Histogram<u64>,
    total_nanos: u128,
}

impl Default for PolicyScore {
    fn default() -> Self {
        Self {
            evaluations: 0,
            faults: 0,
            quarantined: 0,
            alerted: 0,
            redacted: 0,
            // 3 significant digits up to an hour: constant, valid bounds, so this cannot fail.
            nanos: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            total_nanos: 0,
        }
    }
}

/// Everything one worker saw; merged at the end.
#[derive(Debug, Default)]
pub struct Tally {
    pub messages: u64,
    pub forwarded: u64,
    pub quarantined: u64,
    pub alerted: u64,
    pub redacted: u64,
    clean: u64,
    false_alarms: u64,
    false_alarms_by: BTreeMap<String, u64>,
    scenarios: BTreeMap<Scenario, ScenarioScore>,
    policies: BTreeMap<String, PolicyScore>,
}

impl Tally {
    /// Accounts one message; returns whether it was scored a miss (attack) or a false alarm
    /// (clean), for the output files.
    pub fn record(&mut self, label: Option<&Label>, outcome: &Outcome) -> Scored {
        self.messages += 1;
        match &outcome.action {
            Action::Quarantine { .. } => self.quarantined += 1,
            _ => self.forwarded += 1,
        }
        if !outcome.alerts.is_empty() {
            self.alerted += 1;
        }
        if outcome.redacted {
            self.redacted += 1;
        }
        for step in &outcome.trace {
            let p = self.policies.entry(step.policy.to_string()).or_default();
            p.evaluations += 1;
            match step.verdict {
                Verdict::Fault(_) => p.faults += 1,
                Verdict::Quarantine => p.quarantined += 1,
                Verdict::Alert => p.alerted += 1,
                Verdict::Redact(_) => p.redacted += 1,
                Verdict::Allow => {}
            }
            let ns = u64::try_from(step.elapsed.as_nanos()).unwrap_or(u64::MAX);
            // Beyond an hour is saturated rather than dropped.
            p.nanos.saturating_record(ns.max(1));
            p.total_nanos += step.elapsed.as_nanos();
        }
        match label {
            None => {
                self.clean += 1;
                if flagged(outcome) {
                    self.false_alarms += 1;
                    for c in culprits(outcome) {
                        *self.false_alarms_by.entry(c).or_default() += 1;
                    }
                    return Scored::FalseAlarm;
                }
                Scored::Fine
            }
            Some(label) => {
                let hit = caught(label, outcome);
                let s = self.scenarios.entry(label.scenario).or_default();
                s.messages += 1;
                if hit {
                    s.caught += 1;
                }
                if label.scenario.unit() == Unit::Episode {
                    let e = s.episodes.entry(label.episode).or_default();
                    if hit {
                        e.caught += 1;
                        e.first_caught.get_or_insert(e.messages);
                    }
                    e.messages += 1;
                }
                if hit {
                    Scored::Fine
                } else {
                    Scored::Missed
                }
            }
        }
    }

    /// Adds another worker's figures.
    pub fn merge(&mut self, other: Self) {
        self.messages += other.messages;
        self.forwarded += other.forwarded;
        self.quarantined += other.quarantined;
        self.alerted += other.alerted;
        self.redacted += other.redacted;
        self.clean += other.clean;
        self.false_alarms += other.false_alarms;
        for (k, v) in other.false_alarms_by {
            *self.false_alarms_by.entry(k).or_default() += v;
        }
        for (k, v) in other.scenarios {
            let s = self.scenarios.entry(k).or_default();
            s.messages += v.messages;
            s.caught += v.caught;
            // An episode is one device's, and a device is one worker's.
            s.episodes.extend(v.episodes);
        }
        for (k, v) in other.policies {
            let p = self.policies.entry(k).or_default();
            p.evaluations += v.evaluations;
            p.faults += v.faults;
            p.quarantined += v.quarantined;
            p.alerted += v.alerted;
            p.redacted += v.redacted;
            let _ = p.nanos.add(&v.nanos);
            p.total_nanos += v.total_nanos;
        }
    }

    /// The summary as JSON (the `--json` output and `summary.json`).
    pub fn summary(&self, run: Value, elapsed: Duration) -> Value {
        let mut scenarios = Vec::new();
        let mut all_met = true;
        for scenario in Scenario::ALL {
            let Some(s) = self.scenarios.get(&scenario) else {
                // Nothing to score (a short run, or no attacks): neither met nor missed.
                scenarios.push(json!({"scenario": scenario.name(), "sent": 0, "target_met": null}));
                continue;
            };
            let (unit, sent, caught) = match scenario.unit() {
                Unit::Message => ("message", s.messages, s.caught),
                Unit::Episode => (
                    "episode",
                    s.episodes.len() as u64,
                    s.episodes.values().filter(|e| e.caught > 0).count() as u64,
                ),
            };
            let rate = ratio(caught, sent);
            let met = rate >= CATCH_TARGET;
            all_met &= met;
            let mut row = json!({
                "scenario": scenario.name(),
                "unit": unit,
                "sent": sent,
                "caught": caught,
                "missed": sent - caught,
                "caught_rate": rate,
                "target_met": met,
                "messages": s.messages,
                "messages_caught": s.caught,
            });
            if scenario.unit() == Unit::Episode {
                let delays: Vec<u64> = s.episodes.values().filter_map(|e| e.first_caught).collect();
                let mean = if delays.is_empty() {
                    Value::Null
                } else {
                    json!(delays.iter().sum::<u64>() as f64 / delays.len() as f64)
                };
                row["mean_detection_delay_messages"] = mean;
            }
            scenarios.push(row);
        }
        let fa_rate = ratio(self.false_alarms, self.clean);
        let fa_met = fa_rate <= FALSE_ALARM_TARGET;
        let policies: Vec<Value> = self
            .policies
            .iter()
            .map(|(name, p)| {
                json!({
                    "policy": name,
                    "evaluations": p.evaluations,
                    "faults": p.faults,
                    "quarantined": p.quarantined,
                    "alerted": p.alerted,
                    "redacted": p.redacted,
                    "mean_us": if p.evaluations == 0 { 0.0 } else {
                        p.total_nanos as f64 / p.evaluations as f64 / 1e3
                    },
                    "p99_us": p.nanos.value_at_quantile(0.99) as f64 / 1e3,
                })
            })
            .collect();
        let secs = elapsed.as_secs_f64();
        json!({
            "run": run,
            "scenarios": scenarios,
            "clean": {
                "messages": self.clean,
                "false_alarms": self.false_alarms,
                "false_alarm_rate": fa_rate,
                "target_met": fa_met,
                "by_policy": self.false_alarms_by,
            },
            "policies": policies,
            "totals": {
                "messages": self.messages,
                "forwarded": self.forwarded,
                "quarantined": self.quarantined,
                "alerted": self.alerted,
                "redacted": self.redacted,
                "seconds": secs,
                "messages_per_second": if secs > 0.0 { self.messages as f64 / secs } else { 0.0 },
            },
            "targets_met": all_met && fa_met,
        })
    }
}

/// How a message was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scored {
    /// Clean and not flagged, or an attack caught.
    Fine,
    /// An attack not caught.
    Missed,
    /// A clean message flagged.
    FalseAlarm,
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^53
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}
