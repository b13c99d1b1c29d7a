//! range-guard, rate-guard and anomaly-guard through the real host, on simulator-shaped
//! telemetry (docs/simulator.md).

use serde_json::{json, Value};
use twinguard::{Action, ContentType, Message, Outcome, Runtime, Severity};
use twinguard_tests::runtime;

/// 2026-11-25T00:00:00Z, when the simulation clock starts.
const T0: u64 = 1_795_564_800_000;
const MINUTE: u64 = 60_000;

/// A runtime with one policy named after its crate, with `config` lines, on `plant/#`.
fn guard(crate_name: &str, config_lines: &str) -> Runtime {
    runtime(&toml(crate_name, config_lines))
}

fn toml(crate_name: &str, config_lines: &str) -> String {
    format!(
        "[[policy]]\nname = \"{crate_name}\"\npath = \"@{crate_name}\"\n[policy.config]\n\
         {config_lines}\n[[route]]\nfilter = \"plant/#\"\nchain = [\"{crate_name}\"]\n"
    )
}

/// The load error of a configuration the policy must refuse; asserts it comes from its `init`.
fn refused(crate_name: &str, config_lines: &str) -> String {
    twinguard_tests::init_refused(&toml(crate_name, config_lines))
}

/// A simulated device: sends the simulator's envelope with increasing `seq`.
struct Device {
    id: &'static str,
    kind: &'static str,
    content_type: ContentType,
    seq: u64,
}

impl Device {
    fn temp(id: &'static str) -> Self {
        Self {
            id,
            kind: "temperature",
            content_type: ContentType::Json,
            seq: 0,
        }
    }

    fn power(id: &'static str) -> Self {
        Self {
            id,
            kind: "power",
            content_type: ContentType::Cbor,
            seq: 0,
        }
    }

    fn message(&mut self, at_ms: u64, metrics: Value) -> Message {
        self.seq += 1;
        let envelope = json!({
            "device": self.id,
            "seq": self.seq,
            "ts": at_ms - 150,
            "kind": self.kind,
            "metrics": metrics,
        });
        let payload = match self.content_type {
            ContentType::Cbor => twinguard::convert::json_to_cbor(&envelope),
            _ => serde_json::to_vec(&envelope).unwrap(),
        };
        let mut msg = Message::new(
            self.id,
            format!("plant/{}/telemetry", self.id),
            self.content_type,
            payload,
        );
        msg.received_at_ms = at_ms;
        msg
    }

    fn send(&mut self, rt: &Runtime, at_ms: u64, metrics: Value) -> Outcome {
        rt.evaluate(&self.message(at_ms, metrics))
    }

    /// A temperature reading (with a steady humidity).
    fn reading(&mut self, rt: &Runtime, at_ms: u64, celsius: f64) -> Outcome {
        self.send(
            rt,
            at_ms,
            json!({"temperature_c": celsius, "humidity_pct": 44.1}),
        )
    }
}

#[track_caller]
fn assert_allowed(out: &Outcome) {
    assert_eq!(out.action, Action::Allow, "{out:#?}");
    assert!(out.alerts.is_empty(), "{out:#?}");
}

/// Asserts a quarantine by `policy` with a High alert `code`; returns the reason.
#[track_caller]
fn assert_quarantined(out: &Outcome, policy: &str, code: &str) -> String {
    let Action::Quarantine {
        policy: Some(by),
        reason,
    } = &out.action
    else {
        panic!("expected a quarantine by {policy}: {out:#?}");
    };
    assert_eq!(by, policy);
    assert!(reason.starts_with(&format!("{policy}: ")), "{reason}");
    let alert = out
        .alerts
        .iter()
        .find(|a| a.code == code)
        .unwrap_or_else(|| panic!("no {code} alert: {out:#?}"));
    assert_eq!(alert.severity, Severity::High, "{alert:?}");
    assert!(
        alert.detail.starts_with(&format!("{policy}: ")),
        "{alert:?}"
    );
    reason.clone()
}

/// Asserts the message is forwarded with an alert `code` of `severity`; returns its detail.
#[track_caller]
fn assert_alerted(out: &Outcome, policy: &str, code: &str, severity: Severity) -> String {
    assert_eq!(out.action, Action::Alert, "{out:#?}");
    let alert = out
        .alerts
        .iter()
        .find(|a| a.code == code)
        .unwrap_or_else(|| panic!("no {code} alert: {out:#?}"));
    assert_eq!(alert.severity, severity, "{alert:?}");
    assert_eq!(&*alert.policy, policy);
    assert!(
        alert.detail.starts_with(&format!("{policy}: ")),
        "{alert:?}"
    );
    alert.detail.clone()
}

#[track_caller]
fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// range-guard

const RANGE: &str = "range-guard";

fn range(extra: &str) -> Runtime {
    guard(
        RANGE,
        &format!(
            "\"/metrics/temperature_c\" = \"min=-40,max=85,max-step=5,stuck-after=3\"\n\
             \"/metrics/humidity_pct\" = \"min=0,max=100\"\n{extra}"
        ),
    )
}

#[test]
fn range_out_of_range_is_quarantined_and_clean_values_allowed() {
    let rt = range("");
    let mut dev = Device::temp("temp-0007");
    assert_allowed(&dev.reading(&rt, T0, 21.4));
    let reason = assert_quarantined(&dev.reading(&rt, T0 + MINUTE, 120.0), RANGE, "out-of-range");
    assert_mentions(
        &reason,
        &["/metrics/temperature_c = 120", "max 85", "temp-0007"],
    );
    let reason = assert_quarantined(
        &dev.reading(&rt, T0 + 2 * MINUTE, -55.0),
        RANGE,
        "out-of-range",
    );
    assert_mentions(&reason, &["-55", "min -40"]);
    let out = dev.send(
        &rt,
        T0 + 3 * MINUTE,
        json!({"temperature_c": 21.5, "humidity_pct": 144.0}),
    );
    let reason = assert_quarantined(&out, RANGE, "out-of-range");
    assert_mentions(&reason, &["/metrics/humidity_pct = 144", "max 100"]);
    assert_allowed(&dev.reading(&rt, T0 + 4 * MINUTE, 21.6));
}

#[test]
fn range_spike_is_quarantined_and_does_not_become_the_reference() {
    let rt = range("");
    let mut dev = Device::temp("temp-0001");
    assert_allowed(&dev.reading(&rt, T0, 21.0));
    assert_allowed(&dev.reading(&rt, T0 + MINUTE, 21.5));
    let reason = assert_quarantined(&dev.reading(&rt, T0 + 2 * MINUTE, 35.0), RANGE, "step");
    assert_mentions(
        &reason,
        &[
            "/metrics/temperature_c = 35",
            "last accepted 21.5",
            "max-step 5",
            "temp-0001",
        ],
    );
    // Had the spike become the reference, this would be a step of 13 from 35.
    assert_allowed(&dev.reading(&rt, T0 + 3 * MINUTE, 22.0));
    assert_allowed(&dev.reading(&rt, T0 + 4 * MINUTE, 22.3));
}

#[test]
fn range_stuck_value_is_alerted_after_n_repeats() {
    let rt = range("");
    let mut dev = Device::temp("temp-0002");
    assert_allowed(&dev.reading(&rt, T0, 21.43));
    assert_allowed(&dev.reading(&rt, T0 + MINUTE, 21.43));
    let detail = assert_alerted(
        &dev.reading(&rt, T0 + 2 * MINUTE, 21.43),
        RANGE,
        "stuck-value",
        Severity::Medium,
    );
    assert_mentions(
        &detail,
        &["/metrics/temperature_c = 21.43", "3 times", "temp-0002"],
    );
    // Every further repeat, and the stuck value stays the reference (it was forwarded).
    assert_alerted(
        &dev.reading(&rt, T0 + 3 * MINUTE, 21.43),
        RANGE,
        "stuck-value",
        Severity::Medium,
    );
    assert_allowed(&dev.reading(&rt, T0 + 4 * MINUTE, 21.5));

    let rt = range("on-stuck = \"quarantine\"");
    let mut dev = Device::temp("temp-0003");
    assert_allowed(&dev.reading(&rt, T0, 20.0));
    assert_allowed(&dev.reading(&rt, T0 + MINUTE, 20.0));
    assert_quarantined(
        &dev.reading(&rt, T0 + 2 * MINUTE, 20.0),
        RANGE,
        "stuck-value",
    );
}

#[test]
fn range_level_change_is_accepted_after_two_consistent_step_rejections() {
    let rt = range("");
    let mut dev = Device::temp("temp-0004");
    assert_allowed(&dev.reading(&rt, T0, 21.0));
    assert_quarantined(&dev.reading(&rt, T0 + MINUTE, 30.0), RANGE, "step");
    // Within max-step of the rejected 30: the new level, and the reference from now on.
    assert_allowed(&dev.reading(&rt, T0 + 2 * MINUTE, 30.4));
    assert_allowed(&dev.reading(&rt, T0 + 3 * MINUTE, 30.8));
    assert_quarantined(&dev.reading(&rt, T0 + 4 * MINUTE, 21.0), RANGE, "step");

    // Two inconsistent spikes are both rejected, and the old level is still the reference.
    let mut dev = Device::temp("temp-0005");
    assert_allowed(&dev.reading(&rt, T0, 21.0));
    assert_quarantined(&dev.reading(&rt, T0 + MINUTE, 30.0), RANGE, "step");
    assert_quarantined(&dev.reading(&rt, T0 + 2 * MINUTE, 40.0), RANGE, "step");
    assert_allowed(&dev.reading(&rt, T0 + 3 * MINUTE, 21.3));
}

#[test]
fn range_step_check_is_skipped_after_step_reset_ms() {
    let rt = range("step-reset-ms = 600000");
    let mut away = Device::temp("temp-0010");
    let mut present = Device::temp("temp-0011");
    assert_allowed(&away.reading(&rt, T0, 21.0));
    assert_allowed(&present.reading(&rt, T0, 21.0));
    // Ten minutes and one millisecond away: the old reference no longer counts.
    assert_allowed(&away.reading(&rt, T0 + 10 * MINUTE + 1, 30.0));
    assert_quarantined(&present.reading(&rt, T0 + 10 * MINUTE, 30.0), RANGE, "step");
}

#[test]
fn range_leaves_missing_non_numeric_and_malformed_to_schema_guard() {
    let rt = range("");
    let mut dev = Device::temp("temp-0020");
    assert_allowed(&dev.send(&rt, T0, json!({"humidity_pct": 40.0})));
    assert_allowed(&dev.send(&rt, T0, json!({"temperature_c": "hot"})));
    let truncated = Message::new(
        "temp-0020",
        "plant/temp-0020/telemetry",
        ContentType::Json,
        br#"{"metrics": {"temperature_c": 999"#.to_vec(),
    );
    assert_allowed(&rt.evaluate(&truncated));
}

#[test]
fn range_guard_refuses_bad_config_at_load() {
    let t = "\"/metrics/temperature_c\"";
    for (cfg, needles) in [
        (
            format!("{t} = \"min=0,maxstep=5\""),
            &["/metrics/temperature_c", "`maxstep`", "`max-step`"][..],
        ),
        (
            format!("{t} = \"min=cold\""),
            &["/metrics/temperature_c", "`min`", "cold"],
        ),
        (
            format!("{t} = \"stuck-after=1\""),
            &["/metrics/temperature_c", "`stuck-after`", "\"1\""],
        ),
        (
            format!("{t} = \"min=0\"\non_stuck = \"alert\""),
            &["`on_stuck`", "`on-stuck`"],
        ),
        (
            format!("{t} = \"min=0\"\non-stuck = \"ignore\""),
            &["`on-stuck`", "ignore"],
        ),
        ("on-stuck = \"alert\"".to_owned(), &["no metric"]),
    ] {
        let err = refused(RANGE, &cfg);
        assert_mentions(&err, needles);
    }
}

// ---------------------------------------------------------------------------------------------
// rate-guard

const RATE: &str = "rate-guard";

fn rate() -> Runtime {
    guard(RATE, "rate = 1\nburst = 5\nhard-rate = 2\nhard-burst = 8")
}

/// A: allowed, B: forwarded with a rate-burst alert, F: quarantined as a flood.
#[track_caller]
fn letter(out: &Outcome) -> char {
    match &out.action {
        Action::Allow if out.alerts.is_empty() => 'A',
        Action::Alert => {
            assert_alerted(out, RATE, "rate-burst", Severity::Medium);
            'B'
        }
        Action::Quarantine { .. } => {
            assert_quarantined(out, RATE, "flood");
            'F'
        }
        _ => panic!("unexpected outcome {out:#?}"),
    }
}

fn burst(rt: &Runtime, dev: &mut Device, at_ms: u64, count: usize) -> String {
    (0..count)
        .map(|_| letter(&dev.send(rt, at_ms, json!({"power_kw": 80.5, "voltage_v": 230.1}))))
        .collect()
}

#[test]
fn rate_burst_is_allowed_then_alerted_then_the_hard_limit_quarantines() {
    let rt = rate();
    let mut dev = Device::power("power-0001");
    // Burst 5 soft tokens, 8 hard ones.
    assert_eq!(burst(&rt, &mut dev, T0, 10), "AAAAABBBFF");
    let out = dev.send(&rt, T0, json!({"power_kw": 80.5}));
    let reason = assert_quarantined(&out, RATE, "flood");
    assert_mentions(&reason, &["power-0001", "8", "2 msg/s"]);
    // Two seconds refill 2 soft and 4 hard tokens.
    assert_eq!(burst(&rt, &mut dev, T0 + 2_000, 5), "AABBF");
    // A clock going backwards refills nothing.
    assert_eq!(burst(&rt, &mut dev, T0 - 60_000, 1), "F");
    // A minute refills both buckets completely.
    assert_eq!(burst(&rt, &mut dev, T0 + 62_000, 6), "AAAAAB");
    let detail = assert_alerted(
        &dev.send(&rt, T0 + 62_000, json!({})),
        RATE,
        "rate-burst",
        Severity::Medium,
    );
    assert_mentions(&detail, &["power-0001", "burst of 5", "1 msg/s"]);
}

#[test]
fn rate_buckets_are_per_device() {
    let rt = rate();
    let mut noisy = Device::power("power-0002");
    let mut quiet = Device::power("power-0003");
    assert_eq!(burst(&rt, &mut noisy, T0, 9), "AAAAABBBF");
    assert_eq!(burst(&rt, &mut quiet, T0, 2), "AA");
    assert_eq!(burst(&rt, &mut noisy, T0, 1), "F");
}

#[test]
fn rate_without_hard_limit_only_alerts() {
    let rt = guard(RATE, "rate = 0.5\nburst = 2");
    let mut dev = Device::temp("temp-0030");
    assert_eq!(burst(&rt, &mut dev, T0, 5), "AABBB");
    // 0.5 tokens per second: two seconds for one message.
    assert_eq!(burst(&rt, &mut dev, T0 + 1_000, 1), "B");
    assert_eq!(burst(&rt, &mut dev, T0 + 2_000, 2), "AB");
}

#[test]
fn rate_guard_refuses_bad_config_at_load() {
    for (cfg, needles) in [
        ("rate_limit = 5", &["`rate_limit`", "`rate`"][..]),
        ("rate = 0", &["`rate`", "greater than 0"]),
        ("burst = \"lots\"", &["`burst`", "lots"]),
        ("hard-rate = 5", &["`hard-rate`", "`hard-burst`"]),
        (
            "burst = 20\nhard-rate = 5\nhard-burst = 10",
            &["`hard-burst`", "`burst`", "10"],
        ),
        (
            "rate = 2\nhard-rate = 1\nhard-burst = 50",
            &["`hard-rate`", "`rate`"],
        ),
    ] {
        let err = refused(RATE, cfg);
        assert_mentions(&err, needles);
    }
}

// ---------------------------------------------------------------------------------------------
// anomaly-guard

const ANOMALY: &str = "anomaly-guard";
const SIGMA: f64 = 0.15;

/// Deterministic pseudo-noise with standard deviation 1 (a sine sampled at the golden angle).
fn noise(i: u32) -> f64 {
    std::f64::consts::SQRT_2 * (f64::from(i) * 2.399_963_229_728_653).sin()
}

/// Sends `count` noisy readings around `level` (σ 0.15) one minute apart from `*at`, all of which
/// must be allowed.
fn warm(rt: &Runtime, dev: &mut Device, at: &mut u64, level: f64, count: u32) {
    for i in 0..count {
        *at += MINUTE;
        let out = dev.reading(rt, *at, level + SIGMA * noise(i));
        assert_eq!(out.action, Action::Allow, "reading {i}: {out:#?}");
    }
}

#[test]
fn anomaly_alerts_quarantines_and_does_not_absorb_outliers() {
    let rt = guard(
        ANOMALY,
        "alpha = 0.05\nwarmup = 30\n\"/metrics/temperature_c\" = \"\"",
    );
    let mut dev = Device::temp("temp-0040");
    let mut at = T0;
    warm(&rt, &mut dev, &mut at, 21.0, 200);
    at += MINUTE;
    assert_allowed(&dev.reading(&rt, at, 21.1));
    // 21.9 is six standard deviations, sent several times: a flagged value is not absorbed, so the same
    // outlier stays flagged (absorbed, the first would widen the baseline enough to pass the next).
    for _ in 0..3 {
        at += MINUTE;
        let detail = assert_alerted(
            &dev.reading(&rt, at, 21.9),
            ANOMALY,
            "anomaly",
            Severity::Medium,
        );
        assert_mentions(
            &detail,
            &["/metrics/temperature_c = 21.9", "alert-z 5", "temp-0040"],
        );
    }
    at += MINUTE;
    let reason = assert_quarantined(&dev.reading(&rt, at, 24.0), ANOMALY, "anomaly");
    assert_mentions(
        &reason,
        &[
            "/metrics/temperature_c = 24",
            "quarantine-z 10",
            "temp-0040",
        ],
    );
    at += MINUTE;
    assert_allowed(&dev.reading(&rt, at, 20.95));
}

/// Warms up, then sends a ramp of 0.2 σ per reading for 15 readings; returns the outcomes.
fn ramp(config_lines: &str) -> Vec<Outcome> {
    let rt = guard(ANOMALY, config_lines);
    let mut dev = Device::temp("temp-0041");
    let mut at = T0;
    warm(&rt, &mut dev, &mut at, 21.0, 200);
    (1..=15)
        .map(|i| {
            at += MINUTE;
            let offset = 0.2 * f64::from(i);
            dev.reading(&rt, at, 21.0 + SIGMA * (noise(200 + i) + offset))
        })
        .collect()
}

#[test]
fn anomaly_cusum_catches_a_slow_ramp_the_baseline_follows() {
    let metric = "\"/metrics/temperature_c\" = \"\"";
    let with = ramp(&format!("cusum-h = 5\n{metric}"));
    let drifts: Vec<String> = with
        .iter()
        .filter(|out| out.action == Action::Alert)
        .map(|out| assert_alerted(out, ANOMALY, "drift", Severity::Medium))
        .collect();
    assert!(!drifts.is_empty(), "no drift alert: {with:#?}");
    assert_mentions(
        &drifts[0],
        &[
            "/metrics/temperature_c",
            "drifting up",
            "cusum-h 5",
            "temp-0041",
        ],
    );
    assert!(
        with.iter()
            .all(|out| matches!(out.action, Action::Allow | Action::Alert)),
        "{with:#?}"
    );
    // Without CUSUM the same ramp stays under alert-z the whole way.
    for out in ramp(metric) {
        assert_allowed(&out);
    }
}

#[test]
fn anomaly_baseline_relearns_after_the_configured_run() {
    let rt = guard(
        ANOMALY,
        "\"/metrics/temperature_c\" = \"warmup=10,relearn-after=5\"",
    );
    let mut dev = Device::temp("temp-0042");
    let mut at = T0;
    warm(&rt, &mut dev, &mut at, 21.0, 50);
    for _ in 0..4 {
        at += MINUTE;
        let out = dev.reading(&rt, at, 25.0);
        assert_quarantined(&out, ANOMALY, "anomaly");
        assert!(!out.alerts.iter().any(|a| a.code == "baseline-reset"));
    }
    at += MINUTE;
    let out = dev.reading(&rt, at, 25.0);
    assert_quarantined(&out, ANOMALY, "anomaly");
    let reset = out
        .alerts
        .iter()
        .find(|a| a.code == "baseline-reset")
        .unwrap_or_else(|| panic!("no baseline-reset: {out:#?}"));
    assert_eq!(reset.severity, Severity::Info);
    assert_mentions(
        &reset.detail,
        &[
            "anomaly-guard: ",
            "/metrics/temperature_c",
            "25",
            "5 consecutive",
            "temp-0042",
        ],
    );
    // The new level: warm-up again, then normal.
    warm(&rt, &mut dev, &mut at, 25.0, 60);
}

#[test]
fn anomaly_guard_refuses_bad_config_at_load() {
    let t = "\"/metrics/temperature_c\"";
    for (cfg, needles) in [
        (format!("{t} = \"\"\nalpha = 1.5"), &["`alpha`", "1.5"][..]),
        (
            format!("{t} = \"\"\nquarantine-z = 3"),
            &["`quarantine-z`", "`alert-z`"],
        ),
        (
            format!("{t} = \"alpha=0.1,zeta=1\""),
            &["/metrics/temperature_c", "`zeta`"],
        ),
        (
            format!("{t} = \"warmup=0\""),
            &["/metrics/temperature_c", "`warmup`", "\"0\""],
        ),
        (
            format!("{t} = \"\"\nwarm-up = 5"),
            &["`warm-up`", "`warmup`"],
        ),
        ("alpha = 0.1".to_owned(), &["no metric"]),
    ] {
        let err = refused(ANOMALY, &cfg);
        assert_mentions(&err, needles);
    }
}
