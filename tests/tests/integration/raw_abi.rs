//! What a policy hands the host, written against the canonical ABI by hand (the `raw-abi`
//! guest), as no SDK would write it. Above all, values whose strings and lists all point at
//! the same bytes: copied out one by one they would take terabytes. The host copies at most
//! `Limits::copy_bytes` (3 × `memory-bytes`) per crossing and faults the policy past it; a
//! malformed value is a fault naming what is wrong. Either way the host goes on serving every
//! other policy.

use serde_json::json;
use twinguard::{Action, Fault, Runtime, Verdict};
use twinguard_tests::{config, json, runtime, substitute};

/// The bomb `bomb` as policy `p` on `bad/#` (memory `memory` bytes), allow-all on `good/#`.
fn with_good(bomb: &str, memory: u64, config: &str) -> Runtime {
    with_limits(bomb, &format!("memory-bytes = {memory}"), config)
}

/// [`with_good`] with the policy's `[policy.limits]` lines given.
fn with_limits(bomb: &str, limits: &str, config: &str) -> Runtime {
    with_isolation(bomb, "reuse", limits, config)
}

/// [`with_limits`] in `isolation` (`reuse` or `fresh`).
fn with_isolation(bomb: &str, isolation: &str, limits: &str, config: &str) -> Runtime {
    runtime(&substitute(&format!(
        "[[policy]]\nname = \"p\"\npath = \"@raw-abi\"\nisolation = \"{isolation}\"\n\
         [policy.limits]\n{limits}\n\
         [policy.config]\nbomb = \"{bomb}\"\n{config}\n\
         [[policy]]\nname = \"good\"\npath = \"@allow-all\"\n\
         [[route]]\nfilter = \"bad/#\"\nchain = [\"p\"]\n\
         [[route]]\nfilter = \"good/#\"\nchain = [\"good\"]\n"
    )))
}

/// Evaluates a message on `bad/x`, then one on `good/x` (which must pass), twice over: the
/// policy's verdict on the bad one.
fn verdict_of(rt: &Runtime) -> (Verdict, twinguard::Outcome) {
    let mut last = None;
    for _ in 0..2 {
        let mut bad = json(&json!({"v": 1}));
        bad.topic = "bad/x".into();
        let out = rt.evaluate(&bad);
        let mut good = json(&json!({"v": 1}));
        good.topic = "good/x".into();
        assert_eq!(rt.evaluate(&good).action, Action::Allow);
        last = Some(out);
    }
    let out = last.unwrap_or_else(|| unreachable!());
    (out.trace[0].verdict.clone(), out)
}

/// The `host-call` fault's text for a policy of `memory` bytes.
fn refused_text(memory: u64) -> String {
    format!(
        "the policy handed the host more than {} bytes in one call",
        3 * memory
    )
}

#[test]
fn aliased_alert_texts_fault_before_the_host_copies_them() {
    // 100 alerts whose code and detail name one 16 KiB string: 3.2 MiB copied out, from
    // under 20 KiB of the policy's memory. Past the 3 MiB bound of a 1 MiB policy; under
    // wasmtime's own 128 MiB, which would let it be copied whole and only then found too
    // large.
    let rt = with_good("alerts", 1 << 20, "count = \"100\"\nlen = \"16384\"");
    let (verdict, out) = verdict_of(&rt);
    let Verdict::Fault(Fault::HostCall(text)) = &verdict else {
        panic!("expected a host-call fault, got {verdict:?}");
    };
    assert!(text.contains(&refused_text(1 << 20)), "{text}");
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.contains(text.as_str())),
        "{:?}",
        out.action
    );
    assert!(out
        .alerts
        .iter()
        .any(|a| a.code == "policy-fault" && a.detail.contains("3 × limits.memory-bytes")));
}

#[test]
fn aliased_redaction_edits_fault_under_the_default_memory() {
    // 100,000 edits whose pointer and mask name one 1 MiB string: 200 GB if copied.
    let rt = with_good("edits", 16 << 20, "");
    let (verdict, _) = verdict_of(&rt);
    let Verdict::Fault(Fault::HostCall(text)) = &verdict else {
        panic!("expected a host-call fault, got {verdict:?}");
    };
    assert!(text.contains(&refused_text(16 << 20)), "{text}");
}

#[test]
fn a_little_aliasing_and_a_large_honest_decision_still_pass() {
    // Three alerts sharing one 100-byte text: within every bound, forwarded with the alerts.
    let rt = with_good("alerts", 1 << 20, "count = \"3\"\nlen = \"100\"");
    let (verdict, out) = verdict_of(&rt);
    assert_eq!(verdict, Verdict::Allow, "{out:?}");
    assert_eq!(out.action, Action::Alert);
    assert_eq!(out.alerts.len(), 3);
    assert!(out.alerts.iter().all(|a| a.detail.len() == 100));
    // A 60,000-byte reason: under decision-bytes (64 KiB) and the copy bound alike.
    let rt = with_good("quarantine", 1 << 20, "len = \"60000\"");
    let (verdict, out) = verdict_of(&rt);
    assert_eq!(verdict, Verdict::Quarantine, "{out:?}");
    assert!(
        matches!(out.action, Action::Quarantine { ref reason, .. } if reason.len() == 60_000),
        "{:?}",
        out.action
    );
}

#[test]
fn a_list_that_runs_past_the_memory_is_a_trap() {
    let rt = with_good("bad-list", 1 << 20, "");
    let (verdict, _) = verdict_of(&rt);
    let Verdict::Fault(Fault::Trap(text)) = &verdict else {
        panic!("expected a trap, got {verdict:?}");
    };
    assert!(text.contains("out of bounds"), "{text}");
}

#[test]
fn an_aliased_manifest_fails_the_load() {
    for bomb in ["init-fields", "init-metrics"] {
        let toml = format!(
            "[[policy]]\nname = \"p\"\npath = \"@raw-abi\"\n\
             [policy.config]\nbomb = \"{bomb}\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
        );
        let Err(e) = Runtime::new(config(&toml)) else {
            panic!("{bomb}: loaded");
        };
        let twinguard::Error::Load {
            cause: twinguard::LoadError::InitFault(Fault::HostCall(text)),
            ..
        } = &e
        else {
            panic!("{bomb}: {e:?}");
        };
        assert!(text.contains(&refused_text(16 << 20)), "{bomb}: {text}");
        assert!(e.to_string().contains("\"p\""), "{bomb}: {e}");
    }
}

#[test]
fn a_malformed_decision_is_a_fault_naming_what_is_wrong() {
    for (bomb, says) in [
        ("bad-utf8", "invalid utf-8"),
        ("bad-case", "unexpected discriminant: 7"),
        ("bad-severity", "unexpected discriminant: 99"),
        ("misaligned", "not aligned"),
    ] {
        let rt = with_good(bomb, 1 << 20, "");
        let (verdict, _) = verdict_of(&rt);
        let Verdict::Fault(Fault::Trap(text)) = &verdict else {
            panic!("{bomb}: expected a trap, got {verdict:?}");
        };
        assert!(text.contains(says), "{bomb}: {text}");
    }
}

#[test]
fn envelope_flags_the_contract_lacks_are_ignored() {
    // The canonical ABI lifts only the flags a type defines: a stray bit grants nothing, and
    // the policy loads and runs as one that declared the two the contract has.
    let rt = with_good("init-flags", 1 << 20, "");
    let (verdict, _) = verdict_of(&rt);
    assert_eq!(verdict, Verdict::Allow);
}

#[test]
fn the_policys_own_allocator_is_held_to_its_limits() {
    // The host hands the declared device id over through the guest's `cabi_realloc`: guest
    // code the host calls, under the same fuel, deadline and bounds as `evaluate` itself.
    let fault = |bomb: &str, limits: &str| {
        let (verdict, _) = verdict_of(&with_limits(bomb, limits, ""));
        match verdict {
            Verdict::Fault(fault) => fault,
            other => panic!("{bomb}: expected a fault, got {other:?}"),
        }
    };
    let oob = fault("realloc-oob", "");
    assert!(
        matches!(&oob, Fault::Trap(t) if t.contains("beyond end of memory")),
        "{oob:?}"
    );
    assert_eq!(
        fault("realloc-loop", "fuel = 2_000_000"),
        Fault::Fuel(2_000_000)
    );
    assert_eq!(
        fault("realloc-loop", "fuel = 1_000_000_000_000\ndeadline-ms = 20"),
        Fault::Deadline(20)
    );
    let trap = fault("realloc-trap", "");
    assert!(
        matches!(&trap, Fault::Trap(t) if t.contains("unreachable")),
        "{trap:?}"
    );
}

#[test]
fn fresh_instances_are_held_to_the_same_bounds() {
    // Each message gets a new instance, made from the memory `init` left (the bomb chosen,
    // the allocator's mode set): the bounds are the store's, whichever instance it holds.
    let (verdict, _) = verdict_of(&with_isolation(
        "alerts",
        "fresh",
        "memory-bytes = 1048576",
        "count = \"100\"\nlen = \"16384\"",
    ));
    let Verdict::Fault(Fault::HostCall(text)) = &verdict else {
        panic!("expected a host-call fault, got {verdict:?}");
    };
    assert!(text.contains(&refused_text(1 << 20)), "{text}");
    let (verdict, _) = verdict_of(&with_isolation(
        "realloc-loop",
        "fresh",
        "fuel = 2_000_000",
        "",
    ));
    assert_eq!(verdict, Verdict::Fault(Fault::Fuel(2_000_000)));
}
