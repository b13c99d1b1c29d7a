//! WASI is linked deny-by-default: capability probes fail inside the guest.

use serde_json::json;
use twinguard::Action;
use twinguard_tests::{hostile, json, runtime};

/// The probe modes quarantine when the capability is denied and alert "escaped" when not.
fn probe(mode: &str) -> String {
    let rt = runtime(&hostile(mode, ""));
    let out = rt.evaluate(&json(&json!({})));
    assert!(
        out.alerts.iter().all(|a| a.code != "escaped"),
        "{mode}: the guest escaped the sandbox: {out:?}"
    );
    match out.action {
        Action::Quarantine { reason, .. } => reason,
        other => panic!("{mode}: expected the probe's quarantine, got {other:?}"),
    }
}

#[test]
fn files_are_not_reachable() {
    let reason = probe("probe-file");
    assert!(reason.starts_with("file:"), "{reason}");
}

#[test]
fn environment_and_arguments_are_empty() {
    assert!(probe("probe-env").starts_with("env"));
}

#[test]
fn sockets_are_denied() {
    assert!(
        probe("probe-socket").starts_with("socket"),
        "probe-socket reason"
    );
}
