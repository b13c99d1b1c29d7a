//! Self-test cases shipped inside a module run before it is activated: a module whose cases
//! fail is refused (at start and on reload), one whose cases pass loads.

use twinguard_fixtures as fixtures;

use std::path::{Path, PathBuf};

use twinguard::{Config, Runtime};

/// A copy of `module` with the cases as its self-tests.
fn with_cases(module: &Path, cases: &str, dir: &Path, name: &str) -> PathBuf {
    fixtures::with_selftest(module, cases, &dir.join(name))
}

fn config(module: &Path, policy_config: &str) -> Config {
    Config::from_toml(
        &format!(
            "[[policy]]\nname = \"p\"\npath = \"{}\"\n[policy.config]\n{policy_config}\n\
             [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
            module.display()
        ),
        ".",
    )
    .unwrap()
}

const PASSES: &str = r#"{"device":"d1","topic":"t/d1","payload":{"a":1},"expect":"allow"}"#;
const FAILS: &str = concat!(
    r#"{"device":"d1","topic":"t/d1","payload":{"a":1},"expect":"allow"}"#,
    "\n",
    r#"{"device":"d1","topic":"t/d1","payload":{"a":1},"expect":"quarantine"}"#,
    "\n"
);

#[test]
fn the_packs_schema_guard_ships_cases_that_pass_under_any_configured_settings() {
    // Its cases carry their own config, so they hold whatever the deployment sets.
    let schema = fixtures::wasm("schema-guard");
    let runtime = Runtime::new(config(&schema, "required = \"/other:string\"")).unwrap();
    assert_eq!(runtime.policy_set().policies().len(), 1);
    let info = runtime.check_component(&schema).unwrap();
    let cases = info.selftest.unwrap();
    assert_eq!(cases.lines().count(), 6, "{cases}");
}

#[test]
fn failing_cases_refuse_the_module_at_start_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let allow = fixtures::wasm("allow-all");
    let good = with_cases(&allow, PASSES, dir.path(), "good.wasm");
    let bad = with_cases(&allow, FAILS, dir.path(), "bad.wasm");

    let err = Runtime::new(config(&bad, "")).err().unwrap().to_string();
    assert!(
        err.contains("\"p\"")
            && err.contains("bad.wasm")
            && err.contains(
                "self-test failed: case \"line 2\": verdict: expected quarantine, got allow"
            ),
        "{err}"
    );

    let runtime = Runtime::new(config(&good, "")).unwrap();
    let err = runtime.reload(&config(&bad, "")).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(
        runtime.policy_set().generation(),
        1,
        "the bad module was activated"
    );
    assert!(runtime.policy_set().policies()[0]
        .path()
        .ends_with("good.wasm"));
}

#[test]
fn malformed_cases_are_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let allow = fixtures::wasm("allow-all");
    for (cases, want) in [
        (
            "\n{\"device\":\"d\",\"topic\":\"t\",\"payload\":1}\n",
            "case \"line 2\": no step has \"expect\"",
        ),
        (
            "{\"device\":\"d\",\"topic\":\"t\",\"payload\":1,\"expect\":\"maybe\"}",
            "line 1: expect: verdict \"maybe\" is not allow",
        ),
        ("{not json", "line 1:"),
    ] {
        let module = with_cases(&allow, cases, dir.path(), "m.wasm");
        let err = Runtime::new(config(&module, "")).err().unwrap().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn cases_run_on_state_of_their_own_never_the_live_one() {
    // The case moves device d1's sequence to 100 in the probe. Had it used the live state,
    // the live message with seq 1 below would be refused as a replay.
    let dir = tempfile::tempdir().unwrap();
    let case = r#"{"device":"d1","topic":"t/d1","payload":{"seq":100,"ts":1795600000000},"received_at_ms":1795600000000,"expect":"allow"}"#;
    let module = with_cases(
        &fixtures::wasm("replay-guard"),
        case,
        dir.path(),
        "replay.wasm",
    );
    let runtime = Runtime::new(config(&module, "")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let live = twinguard::Message::new(
        "d1",
        "t/d1",
        twinguard::ContentType::Json,
        format!(r#"{{"seq":1,"ts":{now}}}"#).into_bytes(),
    );
    assert_eq!(runtime.evaluate(&live).action, twinguard::Action::Allow);
    // And the live state works: the same message again is a replay.
    assert!(matches!(
        runtime.evaluate(&live).action,
        twinguard::Action::Quarantine { .. }
    ));
}

/// A case is a sequence on state of its own: its steps see each other's state, other cases do
/// not. replay-guard refuses a sequence number it has seen: the second step of "replayed" is a
/// replay; "fresh" sends the same number on new state and passes. A failing step is named.
#[test]
fn a_case_is_a_sequence_on_state_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let step = |case: &str, after: &str, expect: &str| {
        let time = if after.is_empty() {
            r#""received_at":"2026-11-02T10:00:00Z""#.to_owned()
        } else {
            format!(r#""after":"{after}""#)
        };
        format!(
            r#"{{"case":"{case}","device":"d1","topic":"t/d1","payload":{{"seq":5,"ts":1793613600000}},{time},"expect":{expect}}}"#
        ) + "\n"
    };
    let passing = step("replayed", "", r#""allow""#)
        + &step(
            "replayed",
            "1s",
            r#"{"action":"quarantine","reason":"seq 5 <= last accepted 5","alerts":["replay"]}"#,
        )
        + &step("fresh", "", r#""allow""#);
    let replay = fixtures::wasm("replay-guard");
    let module = with_cases(&replay, &passing, dir.path(), "seq.wasm");
    Runtime::new(config(&module, "")).unwrap();

    // The same sequence expecting the replay to pass fails at its second step.
    let failing = step("replayed", "", r#""allow""#) + &step("replayed", "1s", r#""allow""#);
    let module = with_cases(&replay, &failing, dir.path(), "seq-bad.wasm");
    let err = Runtime::new(config(&module, "")).err().unwrap().to_string();
    assert!(
        err.contains("case \"replayed\", line 2: verdict: expected allow, got quarantine"),
        "{err}"
    );
}

/// Self-tests run at every load, so a module cannot make a load as slow or as big as it likes:
/// too many steps and too much work are refused, each naming its bound.
#[test]
fn a_self_test_flood_is_refused_naming_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let allow = fixtures::wasm("allow-all");
    let case = |config: Option<usize>| match config {
        Some(n) => format!(
            "{{\"device\":\"d\",\"topic\":\"t\",\"payload\":{{}},\"expect\":\"allow\",\
             \"config\":{{\"k\":\"{n}\"}}}}\n"
        ),
        None => format!("{PASSES}\n"),
    };
    let refused = |cases: String, module: &Path, policy_config: &str| {
        let module = with_cases(module, &cases, dir.path(), "m.wasm");
        Runtime::new(config(&module, policy_config))
            .err()
            .expect("refused")
            .to_string()
    };
    let many: String = (0..2_000).map(|_| case(None)).collect();
    let e = refused(many, &allow, "");
    assert!(e.contains("ships 2000 steps; at most 256"), "{e}");

    // Each case has an instance of its own, dropped when it ends: many configs are fine.
    let configs: String = (0..200).map(|n| case(Some(n))).collect();
    let module = with_cases(&allow, &configs, dir.path(), "configs.wasm");
    Runtime::new(config(&module, "")).unwrap();

    // Slow cases: each burns ~5.1 M fuel (half the per-message limit); 256 of them are over
    // the budget of 100 messages' worth.
    let hostile = fixtures::wasm("hostile");
    let slow: String = (0..256).map(|_| case(None)).collect();
    let e = refused(slow, &hostile, "mode = \"burn\"\nbytes = 500000");
    assert!(e.contains("over their budget of 1000000000"), "{e}");

    // Within every bound: loads.
    let fine: String = (0..256).map(|_| case(None)).collect();
    let module = with_cases(&allow, &fine, dir.path(), "ok.wasm");
    Runtime::new(config(&module, "")).unwrap();
}
