//! `Runtime::reload`: validate first, swap atomically, keep state of same-named policies.

use serde_json::json;
use twinguard::{Action, Config};
use twinguard_tests::{config, json, runtime, substitute};

#[test]
fn reload_swaps_generation_keeps_state_and_refuses_bad_sets() {
    let counting = twinguard_tests::hostile("state", "");
    let rt = runtime(&counting);
    let count = || rt.evaluate(&json(&json!({}))).alerts[0].detail.clone();
    assert_eq!(count(), "1");
    assert_eq!(count(), "2");

    // Same policy name, new generation: per-device state survives.
    assert_eq!(rt.reload(&config(&counting)).unwrap(), 2);
    assert_eq!(rt.policy_set().generation(), 2);
    assert_eq!(count(), "3");

    // A bad set (init refuses) is refused whole; the active set stays.
    let bad = config(&twinguard_tests::hostile("fail-init", ""));
    let e = rt.reload(&bad).unwrap_err();
    assert!(e.to_string().contains("hostile init refused"), "{e}");
    assert_eq!(rt.policy_set().generation(), 2);
    assert_eq!(count(), "4");

    // A different set takes over entirely.
    let allow = Config::from_toml(
        &substitute(
            "[[policy]]\nname = \"pass\"\npath = \"@allow-all\"\n[[route]]\nfilter = \"#\"\nchain = [\"pass\"]\n",
        ),
        ".",
    )
    .unwrap();
    assert_eq!(rt.reload(&allow).unwrap(), 3);
    let out = rt.evaluate(&json(&json!({})));
    assert_eq!((out.action, out.generation), (Action::Allow, 3));
    assert_eq!(rt.policies().len(), 1);
}
