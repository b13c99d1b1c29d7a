//! Contract 0.2 through the real host and real components: the manifest and what it declares
//! (fields, envelope, last values, metrics), policy-wide state, and determinism.

use std::sync::Arc;

use serde_json::json;
use twinguard::metrics::MetricValue;
use twinguard::{Action, ContentType, Device, Message, Runtime, Verdict};
use twinguard_tests::{hostile, hostile_with, init_refused, json, runtime, substitute};

/// The detail of the one alert a hostile mode answers with, checking its code.
fn detail(rt: &Runtime, msg: &Message, code: &str) -> String {
    let out = rt.evaluate(msg);
    let alert = out
        .alerts
        .iter()
        .find(|a| a.code == code)
        .unwrap_or_else(|| panic!("no {code:?} alert in {out:?}"));
    alert.detail.clone()
}

#[test]
fn declared_fields_arrive_in_the_call_in_order_and_absent_ones_as_absent() {
    let rt = runtime(&hostile_with(
        "declared",
        "",
        "fields = \"/b/c,/a,/missing,/list/1\"",
    ));
    let msg = json(&json!({"a": 1.5, "b": {"c": "x"}, "list": [true, null]}));
    let text = detail(&rt, &msg, "declared");
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert!(
        parts[0].starts_with("/b/c=") && parts[0].contains("\"x\""),
        "{text}"
    );
    assert!(
        parts[1].starts_with("/a=") && parts[1].contains("1.5"),
        "{text}"
    );
    assert_eq!(parts[2], "/missing=absent", "{text}");
    assert!(
        parts[3].starts_with("/list/1=") && parts[3].contains("Null"),
        "{text}"
    );
}

#[test]
fn declared_fields_carry_the_redactions_of_the_policies_before() {
    let rt = runtime(&substitute(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\nremove = \"/owner/email\"\n\
         [[policy]]\nname = \"p\"\npath = \"@hostile\"\n[policy.config]\nmode = \"declared\"\n\
         fields = \"/owner/email,/owner/name\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\", \"p\"]\n",
    ));
    let msg = json(&json!({"owner": {"email": "a@b.c", "name": "Ann"}}));
    let text = detail(&rt, &msg, "declared");
    assert!(text.contains("/owner/email=absent"), "{text}");
    assert!(
        text.contains("/owner/name=") && text.contains("Ann"),
        "{text}"
    );
}

#[test]
fn a_malformed_or_unstructured_payload_reaches_declared_fields_as_an_error() {
    let rt = runtime(&hostile_with("declared", "", "fields = \"/a\""));
    let mut msg = json(&json!({}));
    msg.payload = b"{\"a\": 1,".to_vec().into();
    let text = detail(&rt, &msg, "declared");
    assert!(text.contains("Malformed"), "{text}");
    msg.content_type = ContentType::Text;
    let text = detail(&rt, &msg, "declared");
    assert!(text.contains("Unstructured"), "{text}");
}

/// A reused instance keeps its call record between messages (for its buffers): nothing of one
/// message's fields may reach the next, whatever the order of present, absent and failing.
#[test]
fn declared_fields_never_carry_over_from_the_message_before() {
    let rt = runtime(&hostile_with("declared", "", "fields = \"/a,/b\""));
    let seen = |payload: &[u8]| {
        let mut msg = json(&json!({}));
        msg.payload = payload.to_vec().into();
        detail(&rt, &msg, "declared")
    };
    let first = seen(br#"{"a": "first", "b": 1}"#);
    assert!(
        first.contains("first") && first.ends_with("/b=Integer(1)"),
        "{first}"
    );
    assert_eq!(seen(br#"{"c": 0}"#), "/a=absent /b=absent");
    assert!(seen(br#"{"a": "#).contains("Malformed"));
    let last = seen(br#"{"b": "second"}"#);
    assert!(
        last.starts_with("/a=absent /b=") && last.contains("second"),
        "{last}"
    );
    assert!(!last.contains("first"), "{last}");
    // A text slot keeps its buffer for the next message: a shorter text replaces it whole,
    // and a slot changes kind both ways.
    let long = seen(br#"{"a": "a much longer text", "b": "x"}"#);
    assert!(long.contains("a much longer text"), "{long}");
    let short = seen(br#"{"a": "ab", "b": 2}"#);
    assert!(
        short.contains(r#"Text("ab")"#) && short.ends_with("/b=Integer(2)"),
        "{short}"
    );
    assert!(!short.contains("longer"), "{short}");
    let escaped = seen(br#"{"a": 7, "b": "tab\there"}"#);
    assert!(
        escaped.starts_with("/a=Integer(7) ") && escaped.contains(r#"Text("tab\there")"#),
        "{escaped}"
    );
}

#[test]
fn a_bad_manifest_fails_the_load_naming_the_entry() {
    let text = init_refused(&hostile("bad-manifest-pointer", ""));
    assert!(
        text.contains("manifest field") && text.contains("RFC 6901"),
        "{text}"
    );
    let text = init_refused(&hostile("too-many-fields", ""));
    assert!(text.contains("65 fields; at most 64"), "{text}");
    let text = init_refused(&hostile("bad-metric", ""));
    assert!(
        text.contains("\"Bad Name\"") && text.contains("not a metric name"),
        "{text}"
    );
}

#[test]
fn undeclared_envelope_parts_are_fetched_on_request() {
    let rt = runtime(&hostile("envelope", ""));
    let mut msg = json(&json!({}));
    msg.device_id = "press-7".into();
    msg.topic = "plant/press-7/telemetry".into();
    assert_eq!(
        detail(&rt, &msg, "envelope"),
        "device=press-7 topic=plant/press-7/telemetry"
    );
}

#[test]
fn the_last_forwarded_value_is_kept_per_device_and_a_quarantined_one_is_not() {
    // `q` quarantines messages whose /drop is true, after `p` has seen them.
    let rt = runtime(&substitute(
        "[[policy]]\nname = \"p\"\npath = \"@hostile\"\n[policy.config]\nmode = \"last\"\nfield = \"/t\"\n\
         [[policy]]\nname = \"q\"\npath = \"@schema-guard\"\n[policy.config]\nforbid = \"/drop\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"p\", \"q\"]\n",
    ));
    let on = |device: &str, payload: serde_json::Value| {
        let mut m = json(&payload);
        m.device_id = device.into();
        m
    };
    assert_eq!(detail(&rt, &on("d1", json!({"t": 1})), "last"), "last=none");
    assert!(detail(&rt, &on("d1", json!({"t": 2})), "last").contains('1'));
    // Another device has its own.
    assert_eq!(detail(&rt, &on("d2", json!({"t": 7})), "last"), "last=none");
    // Quarantined: the twin never saw t = 99.
    let out = rt.evaluate(&on("d1", json!({"t": 99, "drop": true})));
    assert!(matches!(out.action, Action::Quarantine { .. }), "{out:?}");
    let text = detail(&rt, &on("d1", json!({"t": 3})), "last");
    assert!(text.contains('2') && !text.contains("99"), "{text}");
    // Kept across a reload of the same configuration.
    let config = twinguard_tests::config(&substitute(
        "[[policy]]\nname = \"p\"\npath = \"@hostile\"\n[policy.config]\nmode = \"last\"\nfield = \"/t\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
    ));
    rt.reload(&config).unwrap();
    assert!(detail(&rt, &on("d1", json!({"t": 4})), "last").contains('3'));
}

#[test]
fn policy_metrics_count_what_the_policy_recorded() {
    let rt = runtime(&hostile("metrics", ""));
    let sizes = [10usize, 100, 1000];
    for n in sizes {
        let mut msg = json(&json!({}));
        let mut payload = vec![b' '; n - 2];
        payload.splice(0..0, *b"{");
        payload.push(b'}');
        msg.payload = payload.into();
        assert_eq!(rt.evaluate(&msg).action, Action::Allow);
    }
    let metrics = rt.policy_metrics();
    assert_eq!(metrics.len(), 1);
    let (name, readings) = &metrics[0];
    assert_eq!(name, "p");
    let counter = readings.iter().find(|r| r.spec.name == "messages").unwrap();
    assert_eq!(counter.value, MetricValue::Counter(3));
    let hist = readings
        .iter()
        .find(|r| r.spec.name == "payload.size")
        .unwrap();
    assert_eq!(hist.spec.unit, "By");
    let MetricValue::Histogram {
        count,
        sum,
        buckets,
    } = &hist.value
    else {
        panic!("{hist:?}");
    };
    assert_eq!(*count, 3);
    assert!((sum - 1110.0).abs() < 1e-9, "{sum}");
    assert_eq!(buckets.iter().sum::<u64>(), 3);
}

#[test]
fn policy_wide_state_loses_no_update_across_threads_and_devices() {
    let rt = runtime(&hostile("global-count", ""));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let mut m = json(&json!({}));
                        m.device_id = format!("dev-{t}-{}", i % 5);
                        detail(&rt, &m, "count").parse::<u64>().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seen.sort_unstable();
    // Every increment landed exactly once: 1..=200, no duplicate, no gap.
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
}

#[test]
fn policy_wide_state_is_bounded_without_a_fault() {
    let rt = runtime(&hostile_with(
        "global-hog",
        "[policy.limits]\nglobal-state-bytes = 1000",
        "bytes = 5000",
    ));
    let out = rt.evaluate(&json(&json!({})));
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.contains("1000")),
        "{out:?}"
    );
    assert_eq!(out.trace[0].verdict, Verdict::Quarantine);
    let rt = runtime(&hostile_with(
        "global-hog",
        "[policy.limits]\nglobal-state-bytes = 10000",
        "bytes = 5000",
    ));
    assert_eq!(rt.evaluate(&json(&json!({}))).action, Action::Alert);
}

#[test]
fn clocks_and_random_sources_are_derived_from_the_message() {
    let rt = runtime(&hostile("clock", ""));
    let mut msg = json(&json!({"v": 1}));
    msg.received_at_ms = 1_764_028_800_123;
    let first = detail(&rt, &msg, "clock");
    let (clock, random) = first.split_once(' ').unwrap();
    // The guest's wall clock is the message's received time, to the millisecond.
    assert_eq!(clock, "1764028800123");
    // The same message again, on another runtime (another instance): the same decision.
    let again = runtime(&hostile("clock", ""));
    assert_eq!(detail(&again, &msg, "clock"), first);
    assert_eq!(detail(&rt, &msg, "clock"), first);
    // Another received time: another clock and another random stream.
    msg.received_at_ms += 1;
    let second = detail(&rt, &msg, "clock");
    assert_eq!(second.split_once(' ').unwrap().0, "1764028800124");
    assert_ne!(second.split_once(' ').unwrap().1, random);
    // The seed is a function of the message alone.
    let m = Message::new("d", "t", ContentType::Json, b"{}".to_vec());
    let mut n = m.clone();
    assert_eq!(m.seed(), n.seed());
    n.topic = "u".into();
    assert_ne!(m.seed(), n.seed());
}

#[test]
fn fresh_isolation_checks_each_instance_manifest_and_still_hands_fields_over() {
    let rt = runtime(&hostile_with(
        "declared",
        "isolation = \"fresh\"",
        "fields = \"/a\"",
    ));
    for i in 0..3 {
        let text = detail(&rt, &json(&json!({"a": i})), "declared");
        assert!(
            text.starts_with("/a=") && text.contains(&i.to_string()),
            "{text}"
        );
    }
}

#[test]
fn an_embedders_device_entry_reaches_policies_that_ask_for_it() {
    let rt = runtime(&hostile("device", ""));
    let meter = Arc::new(Device::new("power-meter").with_attribute("period-s", "5"));
    let msg = json(&json!({})).with_device(meter);
    assert_eq!(detail(&rt, &msg, "device"), "class=power-meter period-s=5");
    assert_eq!(detail(&rt, &json(&json!({})), "device"), "unknown");
}
