//! Hot reload under load: threads evaluate without pause while the policy set is reloaded a
//! hundred times, bad configurations mixed in. Every message gets exactly one outcome, from
//! one consistent generation, and a bad reload never becomes a generation.

use twinguard_fixtures as fixtures;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use twinguard::{Action, Config, ContentType, Message, Runtime};

/// What every configuration here shares: compiled components come from the on-disk cache
/// after the first build (a reload recompiles nothing unchanged), and a deadline generous
/// enough that a thread starved of CPU by the reloads does not fault (deadlines are wall
/// clock; this test is about generations, not time limits).
fn common() -> String {
    let cache = std::env::temp_dir().join("twinguard-reload-test-cache");
    format!(
        "[engine]\ncache-dir = \"{}\"\n[defaults.limits]\ndeadline-ms = 10000\n",
        cache.display()
    )
}

/// Two behaviours that tell generations apart by their output: `mask` replaces the owner's
/// name, `remove` drops it. Any mix of the two within one message would show.
fn config(kind: &str) -> Config {
    let pii = fixtures::wasm("pii-redact");
    Config::from_toml(
        &format!(
            "{}[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\n{kind} = \"/owner/name\"\n\
             [[policy]]\nname = \"pii2\"\npath = \"{}\"\n[policy.config]\n{kind} = \"/owner/email\"\n\
             [[route]]\nfilter = \"plant/#\"\nchain = [\"pii\", \"pii2\"]\n",
            common(),
            pii.display(),
            pii.display()
        ),
        ".",
    )
    .unwrap()
}

/// Configurations that must not become a generation.
fn bad(i: usize) -> Config {
    let text = match i % 3 {
        0 => format!(
            "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[[route]]\nfilter = \"plant/#\"\nchain = [\"pii\"]\n",
            fixtures::wasm("wrong-version").display()
        ),
        1 => "[[policy]]\nname = \"pii\"\npath = \"/nonexistent/pii.wasm\"\n".to_owned(),
        // pii-redact refuses an unknown key in init.
        _ => format!(
            "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\nmaks = \"/x\"\n",
            fixtures::wasm("pii-redact").display()
        ),
    };
    // Parsing does not load modules: these fail in reload, where they must.
    Config::from_toml(&text, ".").unwrap()
}

#[test]
fn a_hundred_reloads_under_load_lose_nothing_and_never_mix_generations() {
    let runtime = Runtime::new(config("mask")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let runtime = runtime.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // (generation, masked?) per message, in order.
                let mut seen = Vec::new();
                let mut i = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"seq":{i},"owner":{{"name":"Ada","email":"ada@example.com"}}}}"#
                    );
                    let outcome = runtime.evaluate(&Message::new(
                        format!("d{t}"),
                        format!("plant/d{t}/telemetry"),
                        ContentType::Json,
                        body.into_bytes(),
                    ));
                    assert_eq!(outcome.action, Action::Redact, "{:?}", outcome.action);
                    let v: Value = serde_json::from_slice(&outcome.payload).unwrap();
                    assert_eq!(v["seq"], i, "the outcome belongs to this message");
                    let owner = &v["owner"];
                    let masked = owner["name"].is_string() && owner["email"].is_string();
                    let removed = owner.get("name").is_none() && owner.get("email").is_none();
                    assert!(
                        masked ^ removed,
                        "one generation's behaviour per message, never a mix: {v}"
                    );
                    seen.push((outcome.generation, masked));
                    i += 1;
                }
                seen
            })
        })
        .collect();

    // generation -> masks?
    let mut kinds = HashMap::from([(1_u64, true)]);
    let mut refused = 0;
    for i in 0..100 {
        let before = runtime.policy_set().generation();
        if i % 10 == 9 {
            assert!(runtime.reload(&bad(i / 10)).is_err());
            assert_eq!(
                runtime.policy_set().generation(),
                before,
                "a bad reload changed the set"
            );
            refused += 1;
            continue;
        }
        let mask = i % 2 == 1;
        let generation = runtime
            .reload(&config(if mask { "mask" } else { "remove" }))
            .unwrap();
        assert_eq!(generation, before + 1);
        kinds.insert(generation, mask);
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for t in threads {
        let seen = t.join().expect("an evaluating thread failed");
        assert!(!seen.is_empty());
        let mut last = 0;
        for (generation, masked) in &seen {
            assert_eq!(
                kinds.get(generation),
                Some(masked),
                "generation {generation} behaved as the other kind"
            );
            assert!(
                *generation >= last,
                "a thread went back to an older generation"
            );
            last = *generation;
        }
        total += seen.len();
    }
    assert_eq!(refused, 10);
    assert_eq!(runtime.policy_set().generation(), 91);
    assert!(total > 100, "the threads evaluated throughout ({total})");
}

/// A reload compiles only modules whose digest the active generation does not have: changing
/// a policy's config, limits or routes reuses the compiled code, and so does a second policy
/// made of the same module, in a reload or in the same load. A new module is compiled.
#[test]
fn a_reload_compiles_only_new_modules() {
    // `second`: the other policy's guest, and its config lines.
    let with = |pii_config: &str, second: (&str, &str)| {
        Config::from_toml(
            &format!(
                "[[policy]]\nname = \"pii\"\npath = \"{}\"\n[policy.config]\n{pii_config}\n\
                 [[policy]]\nname = \"other\"\npath = \"{}\"\n[policy.config]\n{}\n\
                 [[route]]\nfilter = \"plant/#\"\nchain = [\"pii\", \"other\"]\n",
                fixtures::wasm("pii-redact").display(),
                fixtures::wasm(second.0).display(),
                second.1,
            ),
            ".",
        )
        .unwrap()
    };
    // Two entries of one module in a first load: compiled once (the first load has no active
    // generation to reuse from).
    let twice = Runtime::new(with(
        "mask = \"/owner/name\"",
        ("pii-redact", "mask = \"/x\""),
    ))
    .unwrap();
    assert_eq!(twice.compilations(), 1);

    let runtime = Runtime::new(with("mask = \"/owner/name\"", ("allow-all", ""))).unwrap();
    assert_eq!(runtime.compilations(), 2);
    let masked = |rt: &Runtime| {
        let m = Message::new(
            "d",
            "plant/x",
            ContentType::Json,
            br#"{"owner":{"name":"Ada"}}"#.to_vec(),
        );
        serde_json::from_slice::<Value>(&rt.evaluate(&m).payload).unwrap()
    };
    assert_eq!(masked(&runtime)["owner"]["name"], "***");

    // Another config for the same module: reused, and the new config is the one in force.
    runtime
        .reload(&with("remove = \"/owner/name\"", ("allow-all", "")))
        .unwrap();
    assert_eq!(runtime.compilations(), 2);
    assert_eq!(masked(&runtime)["owner"], serde_json::json!({}));

    // The second policy now runs the same module as the first: nothing to compile either.
    runtime
        .reload(&with(
            "remove = \"/owner/name\"",
            ("pii-redact", "mask = \"/x\""),
        ))
        .unwrap();
    assert_eq!(runtime.compilations(), 2);

    // A module the active generation does not run is compiled.
    runtime
        .reload(&with(
            "remove = \"/owner/name\"",
            ("schema-guard", "required = \"/owner:object\""),
        ))
        .unwrap();
    assert_eq!(runtime.compilations(), 3);
    assert_eq!(runtime.policy_set().generation(), 4);
}
