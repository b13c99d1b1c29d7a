//! Every limit, each with a test that fails if the limit is not enforced: the message gets
//! the on-fault action, an alert names policy, version and cause, and the host goes on
//! serving other policies.

use serde_json::json;
use twinguard::{Action, Fault, Runtime, Verdict};
use twinguard_tests::{hostile, hostile_with, json, runtime, substitute};

/// A runtime with the hostile policy `p` on `bad/#` and allow-all on `good/#`.
fn with_good(mode: &str, extra: &str, config: &str) -> Runtime {
    runtime(&substitute(&format!(
        "[[policy]]\nname = \"p\"\npath = \"@hostile\"\n{extra}\n[policy.config]\nmode = \"{mode}\"\n{config}\n\
         [[policy]]\nname = \"good\"\npath = \"@allow-all\"\n\
         [[route]]\nfilter = \"bad/#\"\nchain = [\"p\"]\n\
         [[route]]\nfilter = \"good/#\"\nchain = [\"good\"]\n"
    )))
}

fn fault_of(rt: &Runtime) -> Fault {
    let mut msg = json(&json!({"v": 1}));
    msg.topic = "bad/x".into();
    let out = rt.evaluate(&msg);
    let Some(Verdict::Fault(fault)) = out.trace.first().map(|t| t.verdict.clone()) else {
        panic!("expected a fault, got {out:?}");
    };
    // Default on-fault: quarantine, with an alert naming policy, version and cause.
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.contains(&fault.to_string()))
    );
    let alert = out
        .alerts
        .iter()
        .find(|a| a.code == "policy-fault")
        .expect("fault alert");
    assert_eq!(&*alert.policy, "p");
    assert!(
        alert.detail.contains(&fault.to_string()),
        "{}",
        alert.detail
    );
    assert!(
        alert.detail.contains(&out.trace[0].version[..12]),
        "{}",
        alert.detail
    );
    // The host still serves other policies, and the faulting one again.
    let mut good = json(&json!({"v": 1}));
    good.topic = "good/x".into();
    assert_eq!(rt.evaluate(&good).action, Action::Allow);
    fault
}

#[test]
fn endless_loop_is_stopped_by_fuel() {
    let rt = with_good(
        "loop",
        "[policy.limits]\nfuel = 2_000_000\ndeadline-ms = 60_000",
        "",
    );
    assert_eq!(fault_of(&rt), Fault::Fuel(2_000_000));
    assert_eq!(fault_of(&rt).to_string(), "fuel exhausted: 2000000 units");
}

#[test]
fn endless_loop_is_stopped_by_the_deadline() {
    // Fuel high enough for minutes of work: only the deadline can stop it.
    let rt = with_good(
        "loop",
        "[policy.limits]\nfuel = 1_000_000_000_000\ndeadline-ms = 20",
        "",
    );
    assert_eq!(fault_of(&rt), Fault::Deadline(20));
}

#[test]
fn busy_wait_on_the_clock_is_stopped_by_the_deadline() {
    let rt = with_good(
        "sleep-spin",
        "[policy.limits]\nfuel = 1_000_000_000_000\ndeadline-ms = 20",
        "",
    );
    assert_eq!(fault_of(&rt), Fault::Deadline(20));
}

#[test]
fn memory_bomb_is_stopped_by_the_cap() {
    let rt = with_good(
        "memory-bomb",
        "[policy.limits]\nmemory-bytes = 8_388_608\nfuel = 1_000_000_000_000\ndeadline-ms = 10_000",
        "",
    );
    match fault_of(&rt) {
        Fault::Memory { wanted, cap } => {
            assert_eq!(cap, 8 << 20);
            assert!(wanted > cap);
        }
        other => panic!("expected a memory fault, got {other:?}"),
    }
}

#[test]
fn deep_recursion_is_a_trap() {
    let rt = with_good(
        "recurse",
        "[policy.limits]\nfuel = 1_000_000_000_000\ndeadline-ms = 10_000",
        "",
    );
    assert!(matches!(fault_of(&rt), Fault::Trap(_)));
}

#[test]
fn panic_is_a_trap_carrying_the_panic_message() {
    let rt = with_good("panic", "", "");
    let Fault::Trap(text) = fault_of(&rt) else {
        panic!("expected a trap")
    };
    assert!(text.contains("hostile panic"), "{text}");
}

#[test]
fn state_bytes_limit_refuses_the_write_without_a_fault() {
    let rt = runtime(&hostile_with(
        "state-hog",
        "[policy.limits]\nstate-bytes = 1000",
        "bytes = 5000",
    ));
    let out = rt.evaluate(&json(&json!({})));
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.contains("1000")),
        "{out:?}"
    );
    assert_eq!(
        out.trace[0].verdict,
        Verdict::Quarantine,
        "a refused write is not a fault"
    );
    let rt = runtime(&hostile_with(
        "state-hog",
        "[policy.limits]\nstate-bytes = 10000",
        "bytes = 5000",
    ));
    assert_eq!(rt.evaluate(&json(&json!({}))).action, Action::Alert);
}

#[test]
fn state_devices_limit_bounds_the_devices_a_policy_keeps_state_for() {
    let rt = runtime(&hostile("state", "[policy.limits]\nstate-devices = 2"));
    let on = |device: &str| {
        let mut m = json(&json!({}));
        m.device_id = device.into();
        rt.evaluate(&m)
    };
    assert_eq!(on("a").action, Action::Alert);
    assert_eq!(on("b").action, Action::Alert);
    let out = on("c");
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.contains("limit of 2 devices")),
        "{out:?}"
    );
    assert_eq!(
        out.trace[0].verdict,
        Verdict::Quarantine,
        "a refused write is not a fault"
    );
    assert_eq!(
        on("a").alerts[0].detail,
        "2",
        "known devices keep their state"
    );
}

#[test]
fn oversized_decision_is_a_fault() {
    let rt = with_good(
        "big-decision",
        "[policy.limits]\ndecision-bytes = 1000",
        "bytes = 5000",
    );
    assert!(matches!(
        fault_of(&rt),
        Fault::DecisionTooLarge { limit: 1000, .. }
    ));
    let rt = runtime(&hostile_with(
        "big-decision",
        "[policy.limits]\ndecision-bytes = 10000",
        "bytes = 5000",
    ));
    assert_eq!(rt.evaluate(&json(&json!({}))).action, Action::Alert);
}

#[test]
fn guest_output_is_bounded_and_never_faults() {
    // 20 000 lines cost 20 000 host calls: give it time, the point is the bound.
    let rt = runtime(&hostile(
        "stdout",
        "[policy.limits]\nfuel = 1_000_000_000_000\ndeadline-ms = 30_000",
    ));
    let out = rt.evaluate(&json(&json!({})));
    assert_eq!(out.action, Action::Allow, "{out:?}");
}

#[test]
fn on_fault_allow_fails_open_with_an_alert() {
    let rt = runtime(&hostile("panic", "on-fault = \"allow\""));
    let out = rt.evaluate(&json(&json!({})));
    assert_eq!(out.action, Action::Alert);
    assert_eq!(out.alerts[0].code, "policy-fault");
}

/// A message from `device` with `/boom` set as asked, on `bad/x`.
fn boom(device: &str, boom: bool) -> twinguard::Message {
    let mut msg = json(&json!({"boom": boom}));
    msg.device_id = device.into();
    msg.topic = "bad/x".into();
    msg
}

#[test]
fn one_device_that_keeps_faulting_is_held_alone() {
    let rt = with_good("fault-if", "breaker-threshold = 3", "");
    // Every second message of one device faults: a run of faults never forms.
    let mut held = None;
    for i in 0..10 {
        let out = rt.evaluate(&boom("bad-device", i % 2 == 0));
        if let Some(a) = out.alerts.iter().find(|a| a.code == "device-held") {
            held = Some(a.detail.clone());
        }
        // Clean devices in between are judged by the policy, as if nothing happened.
        let out = rt.evaluate(&boom("good-device", false));
        assert_eq!(out.action, Action::Allow, "message {i}: {out:?}");
    }
    let detail = held.expect("a device-held alert");
    assert!(
        detail.contains("\"bad-device\"") && detail.contains("3 of its last 16"),
        "{detail}"
    );
    // Held: its clean message too gets the on-fault action, without a run.
    let out = rt.evaluate(&boom("bad-device", false));
    assert_eq!(out.trace[0].verdict, Verdict::Fault(Fault::DeviceHeld(3)));
    assert!(matches!(out.action, Action::Quarantine { .. }));
    let status = &rt.policies()[0];
    assert!(
        !status.breaker_open,
        "one device never opens the policy for everyone"
    );
    assert_eq!(status.held_devices.len(), 1);
    assert_eq!(status.held_devices[0].device, "bad-device");
    // Released by the operator: judged again.
    assert!(rt.release_device("p", "bad-device"));
    assert_eq!(
        rt.evaluate(&boom("bad-device", false)).action,
        Action::Allow
    );
    assert!(rt.policies()[0].held_devices.is_empty());
}

#[test]
fn many_devices_faulting_open_the_policy_breaker_and_a_reset_closes_it() {
    let rt = runtime(&hostile(
        "panic",
        "breaker-threshold = 3\nbreaker-rate = 50",
    ));
    // Each device faults once: no device is held, the rate across devices opens the policy.
    let mut opened = false;
    for i in 0..64 {
        let mut msg = json(&json!({}));
        msg.device_id = format!("d{i}");
        let out = rt.evaluate(&msg);
        assert!(matches!(
            out.trace[0].verdict,
            Verdict::Fault(Fault::Trap(_))
        ));
        opened |= out.alerts.iter().any(|a| a.code == "breaker-open");
    }
    assert!(opened, "a breaker-open alert");
    let status = &rt.policies()[0];
    assert!(status.breaker_open);
    assert_eq!((status.recent_faults, status.faults), (64, 64));
    assert!(status.held_devices.is_empty());
    let out = rt.evaluate(&json(&json!({})));
    assert_eq!(out.trace[0].verdict, Verdict::Fault(Fault::BreakerOpen(64)));
    assert!(matches!(out.action, Action::Quarantine { .. }));
    assert!(rt.reset_breaker("p"));
    assert!(!rt.policies()[0].breaker_open);
    let out = rt.evaluate(&json(&json!({})));
    assert!(
        matches!(out.trace[0].verdict, Verdict::Fault(Fault::Trap(_))),
        "runs again after reset"
    );
}

#[test]
fn fresh_isolation_keeps_no_memory_between_messages() {
    // A fresh instance per message: faults never leak into the next message either.
    let rt = runtime(&hostile(
        "panic",
        "isolation = \"fresh\"\nbreaker-threshold = 0",
    ));
    for _ in 0..5 {
        assert!(matches!(
            rt.evaluate(&json(&json!({}))).trace[0].verdict,
            Verdict::Fault(Fault::Trap(_))
        ));
    }
    let count = |rt: &Runtime| rt.evaluate(&json(&json!({}))).alerts[0].detail.clone();
    let fresh = runtime(&hostile("memory-count", "isolation = \"fresh\""));
    let reuse = runtime(&hostile("memory-count", "isolation = \"reuse\""));
    // A Rust guest can be pre-initialised: its fresh instances start from the snapshot.
    assert!(
        fresh.policies()[0].pre_initialised,
        "{:?}",
        fresh.policies()
    );
    assert!(!reuse.policies()[0].pre_initialised);
    // Output during init opens WASI streams, whose handles a snapshot cannot carry: that
    // policy runs init in every instance, and still keeps nothing between messages.
    let printing = runtime(&hostile("init-print", "isolation = \"fresh\""));
    assert!(!printing.policies()[0].pre_initialised);
    for i in 1..=20 {
        assert_eq!(count(&fresh), "1", "fresh instances start from scratch");
        assert_eq!(count(&printing), "1", "fresh instances start from scratch");
        assert_eq!(
            count(&reuse),
            i.to_string(),
            "a reused instance keeps its memory"
        );
    }
}

#[test]
fn a_pre_initialised_fresh_policy_keeps_its_configuration_and_limits() {
    // What init made of the configuration is in the snapshot: the redaction still follows it.
    let rt = runtime(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\nisolation = \"fresh\"\n\
         [policy.config]\nremove = \"/owner/email\"\nmask = \"/owner/name\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n",
    );
    assert!(rt.policies()[0].pre_initialised);
    let redacted = |rt: &Runtime| {
        let out = rt.evaluate(&json(
            &json!({"owner": {"name": "Ada", "email": "a@b.c"}, "t": 1}),
        ));
        serde_json::from_slice::<serde_json::Value>(&out.payload).unwrap_or_default()
    };
    for _ in 0..3 {
        assert_eq!(redacted(&rt), json!({"owner": {"name": "***"}, "t": 1}));
    }
    // A reload with another configuration takes a new snapshot (one that kept the old one
    // would still remove the email); with the same configuration, it reuses the active one.
    let other = "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\nisolation = \"fresh\"\n\
         [policy.config]\nmask = \"/owner/email\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n";
    for _ in 0..2 {
        rt.reload(&twinguard_tests::config(other))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.policies()[0].pre_initialised);
        assert_eq!(
            redacted(&rt),
            json!({"owner": {"name": "Ada", "email": "***"}, "t": 1})
        );
    }
    // Limits hold in instances made from a snapshot: a loop meets its deadline, a bomb its cap,
    // and the next message is judged again.
    for (mode, fault) in [("loop", "deadline"), ("memory-bomb", "memory")] {
        let rt = runtime(&hostile(
            mode,
            "isolation = \"fresh\"\nbreaker-threshold = 0\n[policy.limits]\ndeadline-ms = 50\nfuel = 1_000_000_000_000\nmemory-bytes = 8_388_608",
        ));
        assert!(rt.policies()[0].pre_initialised, "{mode}");
        for _ in 0..2 {
            let verdict = &rt.evaluate(&json(&json!({}))).trace[0].verdict;
            let ok = matches!(
                (fault, verdict),
                ("deadline", Verdict::Fault(Fault::Deadline(_)))
                    | ("memory", Verdict::Fault(Fault::Memory { .. }))
            );
            assert!(ok, "{mode}: {verdict:?}");
        }
    }
}

/// The `Fault::HostCall` of a hostile mode, checked with [`fault_of`] (on-fault action, alert,
/// the host going on).
fn refused_call(mode: &str, config: &str) -> String {
    // Deadline and fuel generous: only the refusal can end these calls early.
    let rt = with_good(
        mode,
        "[policy.limits]\nfuel = 1_000_000_000_000\ndeadline-ms = 60_000",
        config,
    );
    match fault_of(&rt) {
        Fault::HostCall(text) => text,
        other => panic!("expected a refused host call, got {other:?}"),
    }
}

#[test]
fn a_blocking_sleep_is_refused_not_waited_for() {
    let text = refused_call("sleep", "");
    assert!(
        text.contains("monotonic-clock.subscribe-duration refused"),
        "{text}"
    );
}

#[test]
fn an_endless_timer_is_refused_not_waited_for() {
    let text = refused_call("timer-forever", "");
    assert!(text.contains("subscribe-duration refused"), "{text}");
}

#[test]
fn a_random_flood_is_refused_before_the_host_allocates_it() {
    let text = refused_call("random-flood", "bytes = 67108864");
    assert!(
        text.contains("get-random-bytes of 67108864 bytes refused"),
        "{text}"
    );
    assert!(text.contains("at most 65536"), "{text}");
    // A call within the cap is served.
    let rt = with_good("random-flood", "", "bytes = 1024");
    let mut msg = json(&json!({"v": 1}));
    msg.topic = "bad/x".into();
    let out = rt.evaluate(&msg);
    assert!(
        matches!(&out.action, Action::Quarantine { reason, .. } if reason == "got 1024 random bytes"),
        "{out:?}"
    );
}

/// Tiny keys are charged what they cost the host (an entry's overhead, not only its bytes), so
/// `state-bytes` bounds a device's real memory: before, ~10,000 one-byte entries fit 64 KiB.
#[test]
fn tiny_state_keys_are_charged_what_they_cost() {
    let rt = with_good(
        "tiny-keys",
        "[policy.limits]\nstate-bytes = 65536",
        "bytes = 100000",
    );
    let mut msg = json(&json!({"v": 1}));
    msg.topic = "bad/x".into();
    let out = rt.evaluate(&msg);
    let alert = out
        .alerts
        .iter()
        .find(|a| a.code == "stored")
        .expect("stored");
    let (stored, rest) = alert.detail.split_once(' ').expect("count");
    let stored: u64 = stored.parse().unwrap();
    assert!(rest.starts_with("refused"), "{}", alert.detail);
    // 65,536 / (key + value + 96) entries at most, and no fewer than half of that.
    assert!((300..=680).contains(&stored), "{} entries fit", stored);
    // Another device has a budget of its own.
    msg.device_id = "other".into();
    let out = rt.evaluate(&msg);
    let again = out
        .alerts
        .iter()
        .find(|a| a.code == "stored")
        .expect("stored");
    assert_eq!(again.detail.split_once(' ').unwrap().0, stored.to_string());
}

/// Redaction runs in the host after the guest's call, outside fuel and the deadline: the
/// number of edits a decision may carry is a limit, so a guest cannot buy seconds of host work
/// with a 2 ms step.
#[test]
fn a_redaction_flood_is_a_fault_before_the_host_applies_it() {
    // Fuel to spare: building 10,000 pointers is work of its own.
    let rt = with_good(
        "redact-many",
        "[policy.limits]\nfuel = 1_000_000_000",
        "bytes = 10000",
    );
    match fault_of(&rt) {
        Fault::BadDecision(why) => {
            assert!(why.contains("10000 redaction edits; at most 256"), "{why}");
        }
        other => panic!("expected a bad decision, got {other:?}"),
    }
    // Within the limit (here raised): applied.
    let rt = with_good(
        "redact-many",
        "[policy.limits]\nredact-edits = 300",
        "bytes = 300",
    );
    let mut msg = json(&json!({"k0": 1, "k299": 2, "keep": 3}));
    msg.topic = "bad/x".into();
    let out = rt.evaluate(&msg);
    assert_eq!(out.action, Action::Redact, "{out:?}");
    assert_eq!(&out.payload[..], br#"{"keep":3}"#);
}

#[test]
fn a_metric_call_on_an_undeclared_index_faults_the_policy() {
    let text = refused_call("metric-bad-index", "");
    assert!(
        text.contains("metric 99") && text.contains("declared"),
        "{text}"
    );
}

#[test]
fn a_histogram_value_that_is_not_finite_faults_the_policy() {
    let text = refused_call("metric-nan", "");
    assert!(text.contains("NaN") && text.contains("finite"), "{text}");
}
