//! The runtime's metrics through an embedder's meter (`Runtime::with_meter`), read in the
//! Prometheus text format `serve` exposes: verdicts, faults by kind, fuel and time per policy,
//! messages per route, set builds by result, the breaker, and nothing recorded without a meter.

use twinguard::telemetry::Telemetry;
use twinguard::{ContentType, Message, Runtime};
use twinguard_tests::config;

fn msg(topic: &str, payload: &str) -> Message {
    Message::new(
        "dev-1",
        topic,
        ContentType::Json,
        payload.as_bytes().to_vec(),
    )
}

/// The value of the one sample line that starts with `series` (name and labels as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    let mut found = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok());
    let first = found.next();
    assert!(
        found.next().is_none(),
        "{series} matches several lines:\n{text}"
    );
    first
}

/// The `twinguard_policy_evaluations_total` sample for one policy and verdict.
fn verdicts(text: &str, policy: &str, verdict: &str) -> Option<f64> {
    let line = text.lines().find(|l| {
        l.starts_with("twinguard_policy_evaluations_total{")
            && l.contains(&format!("twinguard_policy_name=\"{policy}\""))
            && l.contains(&format!("twinguard_verdict=\"{verdict}\""))
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

const CONFIG: &str = r#"
[defaults]
breaker-threshold = 0
breaker-rate = 50
breaker-cooldown-ms = 600000

[[policy]]
name = "pass"
path = "@allow-all"

[[policy]]
name = "crash"
path = "@hostile"
on-fault = "allow"
[policy.config]
mode = "panic"

[[route]]
filter = "ok/#"
chain = ["pass"]

[[route]]
filter = "bad/#"
chain = ["pass", "crash"]
"#;

#[test]
fn verdicts_faults_fuel_routes_and_builds_are_counted() {
    let telemetry = Telemetry::new("test").unwrap();
    let runtime = Runtime::with_meter(config(CONFIG), telemetry.meter()).unwrap();
    for _ in 0..5 {
        assert!(runtime.evaluate(&msg("ok/1", "{}")).action.forwards());
    }
    // 70 faults: the 64th fills the window (all faults, over the 50 % rate), so the crash
    // policy's breaker opens and the last 6 are skipped (faults of kind breaker-open). No
    // device is held (threshold 0).
    for _ in 0..70 {
        runtime.evaluate(&msg("bad/1", "{}"));
    }
    runtime.evaluate(&msg("elsewhere", "{}"));
    // The breaker is read when collected: open now (a reload builds new breakers, closed).
    let before = telemetry.render();
    assert_eq!(
        sample(
            &before,
            "twinguard_policy_breaker_open{twinguard_policy_name=\"crash\""
        ),
        Some(1.0),
        "{before}"
    );
    assert_eq!(
        sample(
            &before,
            "twinguard_policy_breaker_open{twinguard_policy_name=\"pass\""
        ),
        Some(0.0),
        "{before}"
    );
    // A reload that fails counts as one, and leaves the generation as it was.
    let broken = config(
        &CONFIG
            .replace("@allow-all", "/nonexistent.wasm")
            .replace("/nonexistent.wasm", "/nonexistent/allow.wasm"),
    );
    assert!(runtime.reload(&broken).is_err());
    runtime.reload(&config(CONFIG)).unwrap();

    let text = telemetry.render();
    assert_eq!(verdicts(&text, "pass", "allow"), Some(75.0), "{text}");
    assert_eq!(verdicts(&text, "crash", "fault"), Some(70.0), "{text}");
    // Every verdict's series exists from load (at 0), so a rate over it is never "no data".
    assert_eq!(verdicts(&text, "crash", "allow"), Some(0.0), "{text}");
    let trap = text
        .lines()
        .find(|l| {
            l.starts_with("twinguard_policy_faults_total{") && l.contains("error_type=\"trap\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let open = text
        .lines()
        .find(|l| {
            l.starts_with("twinguard_policy_faults_total{")
                && l.contains("error_type=\"breaker-open\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!((trap, open), (64.0, 6.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "twinguard_messages_total{twinguard_action=\"allow\",twinguard_route=\"ok/#\"}"
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "twinguard_messages_total{twinguard_action=\"alert\",twinguard_route=\"bad/#\"}"
        ),
        Some(70.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "twinguard_messages_total{twinguard_action=\"quarantine\",twinguard_route=\"(unrouted)\"}"),
        Some(1.0),
        "{text}"
    );
    // Fuel recorded per run of the policy that ran; its sum is real work.
    let fuel = sample(
        &text,
        "twinguard_policy_fuel_sum{twinguard_policy_name=\"pass\"",
    )
    .unwrap();
    assert!(fuel > 75.0, "{fuel}");
    assert_eq!(
        sample(
            &text,
            "twinguard_policy_duration_seconds_count{twinguard_policy_name=\"pass\""
        ),
        Some(75.0)
    );
    // Start, the failed reload, the good one.
    assert_eq!(
        sample(
            &text,
            "twinguard_reloads_total{twinguard_result=\"success\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "twinguard_reloads_total{twinguard_result=\"failure\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "twinguard_generation "), Some(2.0), "{text}");
    // The new generation's policies start their own series (same version: the same labels,
    // so the counts go on); no device id anywhere.
    assert!(!text.contains("dev-1"), "{text}");
}

#[test]
fn what_a_policy_declared_is_exported_by_name() {
    let telemetry = Telemetry::new("test").unwrap();
    let runtime = Runtime::with_meter(
        config(
            "[[policy]]\nname = \"counting\"\npath = \"@hostile\"\n[policy.config]\nmode = \"metrics\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"counting\"]\n",
        ),
        telemetry.meter(),
    )
    .unwrap();
    for payload in ["{}", "{\"a\":1}", "{\"b\":[1,2,3]}"] {
        runtime.evaluate(&msg("t", payload));
    }
    let text = telemetry.render();
    let custom = |name: &str, metric: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(name)
                    && l.contains("twinguard_policy_name=\"counting\"")
                    && l.contains(&format!("twinguard_metric=\"{metric}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    // The guest counts messages and records each payload's size (2 + 7 + 13 bytes).
    assert_eq!(
        custom("twinguard_policy_custom_total{", "messages"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        custom(
            "twinguard_policy_custom_observations_total{",
            "payload.size"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        custom("twinguard_policy_custom_sum_total{", "payload.size"),
        Some(22.0),
        "{text}"
    );
}

#[test]
fn a_runtime_without_a_meter_records_nothing_anywhere() {
    // A provider nobody handed to the runtime: it must stay empty (no global meter is used).
    let telemetry = Telemetry::new("unused").unwrap();
    let runtime = Runtime::new(config(CONFIG)).unwrap();
    runtime.evaluate(&msg("ok/1", "{}"));
    let text = telemetry.render();
    assert!(!text.contains("twinguard_"), "{text}");
}
