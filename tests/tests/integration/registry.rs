//! The device registry: routes by class pick the chain, policies see the device's entry, an
//! unknown device is held back (or judged, when allowed), a registry edit is picked up live by
//! the file watcher, and a route that can never match is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use twinguard::{Action, ContentType, Message, Runtime};
use twinguard_tests::{config, substitute};

fn msg(device: &str, topic: &str) -> Message {
    Message::new(device, topic, ContentType::Json, br#"{"seq":1}"#.to_vec())
}

/// Policy names in the outcome's trace, in order.
fn chain_of(runtime: &Runtime, m: &Message) -> Vec<String> {
    runtime
        .evaluate(m)
        .trace
        .iter()
        .map(|t| t.policy.to_string())
        .collect()
}

const REGISTRY: &str = "id,class,line,period-s\n\
                        badge-1,badge-reader,3,\n\
                        meter-1,power-meter,1,5\n\
                        meter-2,power-meter,2,5\n";

fn toml(registry: &Path, unknown: &str) -> String {
    format!(
        r##"
[registry]
path = "{registry}"
unknown = "{unknown}"

[[policy]]
name = "badge-chain"
path = "@hostile"
[policy.config]
mode = "device"

[[policy]]
name = "meter-chain"
path = "@allow-all"

[[policy]]
name = "meter-line-2"
path = "@allow-all"

[[policy]]
name = "any"
path = "@allow-all"

[[route]]
class = "badge-reader"
chain = ["badge-chain"]

[[route]]
filter = "plant/line-2/#"
class = "power-meter"
chain = ["meter-line-2"]

[[route]]
class = "power-meter"
chain = ["meter-chain"]

[[route]]
filter = "#"
chain = ["any"]
"##,
        registry = registry.display()
    )
}

#[test]
fn class_routes_pick_the_chain_and_policies_see_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.csv");
    std::fs::write(&registry, REGISTRY).unwrap();
    let runtime = Runtime::new(config(&toml(&registry, "quarantine"))).unwrap();

    assert_eq!(
        chain_of(&runtime, &msg("badge-1", "plant/doors")),
        ["badge-chain"]
    );
    assert_eq!(
        chain_of(&runtime, &msg("meter-1", "plant/line-1/kw")),
        ["meter-chain"]
    );
    // Filter and class together: the line-2 route, only for a power meter on line 2's topics.
    assert_eq!(
        chain_of(&runtime, &msg("meter-2", "plant/line-2/kw")),
        ["meter-line-2"]
    );
    assert_eq!(
        chain_of(&runtime, &msg("badge-1", "plant/line-2/kw")),
        ["badge-chain"]
    );
    // The policy sees the entry the registry gave the device.
    let out = runtime.evaluate(&msg("badge-1", "plant/doors"));
    assert_eq!(out.alerts.len(), 1, "{out:?}");
    assert_eq!(out.alerts[0].detail, "class=badge-reader line=3");
    // A device the registry lacks is held back unjudged, the reason naming it.
    let out = runtime.evaluate(&msg("intruder", "plant/doors"));
    let Action::Quarantine { policy, reason } = &out.action else {
        panic!("{out:?}");
    };
    assert_eq!(policy, &None);
    assert!(
        reason.contains("\"intruder\"") && reason.contains("devices.csv"),
        "{reason}"
    );
    assert!(out.trace.is_empty());

    // unknown = "allow": judged, by the routes that do not ask for a class.
    let lenient = Runtime::new(config(&toml(&registry, "allow"))).unwrap();
    assert_eq!(chain_of(&lenient, &msg("intruder", "plant/doors")), ["any"]);
}

#[test]
fn a_registry_edit_is_picked_up_live() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.csv");
    std::fs::write(&registry, REGISTRY).unwrap();
    let config_path = dir.path().join("twinguard.toml");
    std::fs::write(&config_path, substitute(&toml(&registry, "quarantine"))).unwrap();
    let runtime = Runtime::new(config(&toml(&registry, "quarantine"))).unwrap();
    let watcher =
        twinguard::watch::Watcher::spawn(runtime.clone(), &config_path, Duration::from_millis(50))
            .unwrap();
    assert_eq!(
        chain_of(&runtime, &msg("meter-1", "plant/line-1/kw")),
        ["meter-chain"]
    );
    assert!(runtime.evaluate(&msg("meter-9", "plant/x")).action != Action::Allow);

    // meter-1 is re-classed a badge reader, meter-9 is provisioned.
    std::fs::write(
        &registry,
        "id,class,line\nbadge-1,badge-reader,3\nmeter-1,badge-reader,1\nmeter-2,power-meter,2\n\
         meter-9,power-meter,9\n",
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while runtime.policy_set().generation() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        runtime.policy_set().generation(),
        2,
        "{:?}",
        watcher.status()
    );
    assert_eq!(
        chain_of(&runtime, &msg("meter-1", "plant/line-1/kw")),
        ["badge-chain"]
    );
    assert_eq!(
        chain_of(&runtime, &msg("meter-9", "plant/x")),
        ["meter-chain"]
    );

    // A broken edit keeps the last good registry (and says why).
    std::fs::write(
        &registry,
        "id,class\nmeter-1,power-meter\nmeter-1,power-meter\n",
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while watcher.status().failures == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = watcher.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("listed twice")),
        "{status:?}"
    );
    assert_eq!(runtime.policy_set().generation(), 2);
    assert_eq!(
        chain_of(&runtime, &msg("meter-9", "plant/x")),
        ["meter-chain"]
    );
}

#[test]
fn routes_that_can_never_match_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.csv");
    std::fs::write(&registry, REGISTRY).unwrap();
    let base = toml(&registry, "quarantine");

    // A class no device has.
    let text = base.replace("class = \"badge-reader\"", "class = \"badge-raeder\"");
    let err = Runtime::new(config(&text)).err().unwrap().to_string();
    assert!(
        err.contains("badge-raeder")
            && err.contains("can never match")
            && err.contains("badge-reader"),
        "{err}"
    );
    // A class-less catch-all first shadows every class route after it.
    let text = base.replace(
        "[[route]]\nclass = \"badge-reader\"",
        "[[route]]\nfilter = \"#\"\nchain = [\"any\"]\n\n[[route]]\nclass = \"badge-reader\"",
    );
    let err = twinguard::Config::from_toml(&substitute(&text), ".")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("can never match"), "{err}");
    // A class route without a registry.
    let text = base.replace(
        &format!(
            "[registry]\npath = \"{}\"\nunknown = \"quarantine\"\n",
            registry.display()
        ),
        "",
    );
    let err = twinguard::Config::from_toml(&substitute(&text), ".")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no [registry]"), "{err}");
    // Neither filter nor class.
    let text = base.replace("[[route]]\nclass = \"badge-reader\"", "[[route]]");
    let err = twinguard::Config::from_toml(&substitute(&text), ".")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("filter") && err.contains("class"), "{err}");
}

#[test]
fn identity_guard_reads_its_inventory_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.toml");
    std::fs::write(
        &registry,
        "[[device]]\nid = \"meter-1\"\nclass = \"power-meter\"\n",
    )
    .unwrap();
    // The host lets unknown devices through to the chain; identity-guard is where they stop,
    // with its alert.
    let runtime = Runtime::new(config(&format!(
        "[registry]\npath = \"{}\"\nunknown = \"allow\"\n\
         [[policy]]\nname = \"identity\"\npath = \"@identity-guard\"\n[policy.config]\n\
         inventory = \"registry\"\ntopic-segment = 1\n\
         [[route]]\nfilter = \"plant/#\"\nchain = [\"identity\"]\n",
        registry.display()
    )))
    .unwrap();
    assert_eq!(
        runtime.evaluate(&msg("meter-1", "plant/meter-1/kw")).action,
        Action::Allow
    );
    let out = runtime.evaluate(&msg("meter-7", "plant/meter-7/kw"));
    let Action::Quarantine { policy, reason } = &out.action else {
        panic!("{out:?}");
    };
    assert_eq!(policy.as_deref(), Some("identity"));
    assert!(reason.contains("not in the device registry"), "{reason}");
    assert!(out.alerts.iter().any(|a| a.code == "unknown-device"));
}

/// One message of `device` at `at_ms`.
fn at(device: &str, at_ms: u64) -> Message {
    let mut m = msg(device, &format!("plant/{device}/telemetry"));
    m.received_at_ms = at_ms;
    m
}

#[test]
fn rate_guard_takes_each_devices_limits_from_its_registry_period() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("devices.csv");
    std::fs::write(
        &registry,
        "id,class,period-s\nslow-1,sensor,60\nfast-1,sensor,5\ndoor-1,reader,\n",
    )
    .unwrap();
    let runtime = Runtime::new(config(&format!(
        "[registry]\npath = \"{}\"\n\
         [[policy]]\nname = \"rate\"\npath = \"@rate-guard\"\n[policy.config]\n\
         tolerance = 1.5\nhard-tolerance = 5\nburst = 3\nhard-burst = 6\n\
         rate = 0.01\nhard-rate = 0.02\n\
         [[route]]\nfilter = \"plant/#\"\nchain = [\"rate\"]\n",
        registry.display()
    )))
    .unwrap();
    // Every device sends every 10 s: twice as often as fast-1's period allows for, six times
    // slow-1's, and door-1 has no period (the configured 0.01/s applies).
    let mut alerts = std::collections::BTreeMap::<&str, Vec<String>>::new();
    let mut held = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..20u64 {
        for device in ["slow-1", "fast-1", "door-1"] {
            let out = runtime.evaluate(&at(device, 1_000_000 + i * 10_000));
            if matches!(out.action, Action::Quarantine { .. }) {
                *held.entry(device).or_default() += 1;
            }
            for a in out.alerts {
                alerts.entry(device).or_default().push(a.detail);
            }
        }
    }
    // fast-1: 1.5 / 5 s refills 3 tokens per message; never flagged.
    assert!(!alerts.contains_key("fast-1"), "{alerts:?}");
    // slow-1: past its burst the soft limit (1.5 / 60 s) alerts; the hard one (5 / 60 s,
    // 6 deep) still has room after 20 messages.
    let slow = &alerts["slow-1"];
    assert!(slow.len() >= 10, "{slow:?}");
    assert!(slow[0].contains("period-s 60 s"), "{}", slow[0]);
    assert_eq!(held.get("slow-1"), None);
    // door-1: the configured limits, hard 0.02/s 6 deep, quarantine the flood.
    assert!(held.get("door-1").copied().unwrap_or(0) >= 5, "{held:?}");
}

#[test]
fn schema_guard_strict_flags_the_fields_a_class_does_not_declare() {
    let schema = |strict: &str| {
        Runtime::new(config(&format!(
            "[[policy]]\nname = \"schema\"\npath = \"@schema-guard\"\n[policy.config]\n\
             content-types = \"json,cbor\"\nrequired = \"/seq:integer,/metrics/t:number\"\n\
             optional = \"/badge:object\"\nstrict = \"{strict}\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"schema\"]\n"
        )))
        .unwrap()
    };
    let json = |doc: serde_json::Value| {
        Message::new("d", "t", ContentType::Json, doc.to_string().into_bytes())
    };
    let cbor = |doc: serde_json::Value| {
        Message::new(
            "d",
            "t",
            ContentType::Cbor,
            twinguard::convert::json_to_cbor(&doc),
        )
    };
    let alerting = schema("alert");
    let declared = serde_json::json!({"seq": 1, "metrics": {"t": 2.5}, "badge": {"holder": "x"}});
    let extra = serde_json::json!({"seq": 1, "metrics": {"t": 2.5, "x~y": 1}, "note": "call me"});
    for m in [json(declared.clone()), cbor(declared)] {
        let out = alerting.evaluate(&m);
        assert_eq!(out.action, Action::Allow, "{out:?}");
        assert!(out.alerts.is_empty(), "{out:?}");
    }
    for m in [json(extra.clone()), cbor(extra.clone())] {
        let out = alerting.evaluate(&m);
        assert_eq!(out.action, Action::Alert, "{out:?}");
        let a = &out.alerts[0];
        assert_eq!(a.code, "undeclared-field");
        assert!(
            a.detail.contains("/metrics/x~0y") && a.detail.contains("/note"),
            "{}",
            a.detail
        );
    }
    let out = schema("quarantine").evaluate(&json(extra));
    assert!(
        matches!(&out.action, Action::Quarantine { reason, .. } if reason.contains("/note")),
        "{out:?}"
    );
}
