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

#[test]
fn breaker_opens_after_consecutive_faults_and_resets() {
    let rt = runtime(&hostile("panic", "breaker-threshold = 3"));
    for _ in 0..3 {
        let out = rt.evaluate(&json(&json!({})));
        assert!(matches!(
            out.trace[0].verdict,
            Verdict::Fault(Fault::Trap(_))
        ));
    }
    let status = &rt.policies()[0];
    assert!(status.breaker_open);
    assert_eq!((status.consecutive_faults, status.faults), (3, 3));
    let out = rt.evaluate(&json(&json!({})));
    assert_eq!(out.trace[0].verdict, Verdict::Fault(Fault::BreakerOpen(3)));
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
fn fresh_isolation_runs_init_per_message_and_keeps_no_memory() {
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
    for i in 1..=20 {
        assert_eq!(count(&fresh), "1", "fresh instances start from scratch");
        assert_eq!(
            count(&reuse),
            i.to_string(),
            "a reused instance keeps its memory"
        );
    }
}
