//! Every verdict, chain semantics, routing.

use serde_json::json;
use twinguard::{Action, ContentType, Message, Severity, Verdict};
use twinguard_tests::{hostile, json, runtime};

#[test]
fn allow_all_allows_and_traces_version_and_fuel() {
    let rt = runtime(
        "[[policy]]\nname = \"pass\"\npath = \"@allow-all\"\n\
         [[route]]\nfilter = \"plant/#\"\nchain = [\"pass\"]\n",
    );
    let msg = json(&json!({"t": 1}));
    let out = rt.evaluate(&msg);
    assert_eq!(out.action, Action::Allow);
    assert_eq!(out.payload, msg.payload);
    assert!(!out.redacted);
    assert_eq!(out.trace.len(), 1);
    let step = &out.trace[0];
    assert_eq!(&*step.policy, "pass");
    assert_eq!(step.verdict, Verdict::Allow);
    assert_eq!(
        step.version.len(),
        64,
        "version is the sha-256 of the component"
    );
    assert!(step.fuel_used > 0, "fuel is metered");
    assert_eq!(out.generation, 1);
}

#[test]
fn quarantine_and_alert_verdicts() {
    // probe-env quarantines (nothing visible) — a quarantine verdict with a reason.
    let rt = runtime(&hostile("probe-env", ""));
    let out = rt.evaluate(&json(&json!({})));
    match out.action {
        Action::Quarantine { policy, reason } => {
            assert_eq!(policy.as_deref(), Some("p"));
            assert!(reason.contains("env"), "{reason}");
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
    // echo alerts with what the guest saw of the message.
    let rt = runtime(&hostile("echo", ""));
    let msg = Message::new("dev-9", "a/b", ContentType::Cbor, vec![0xa0]).with_attribute("k", "v");
    let out = rt.evaluate(&msg);
    assert_eq!(out.action, Action::Alert);
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0];
    assert_eq!((&*a.policy, a.severity), ("p", Severity::Info));
    assert!(a.detail.contains("device=dev-9"), "{}", a.detail);
    assert!(a.detail.contains("topic=a/b"), "{}", a.detail);
    assert!(a.detail.contains("len=1"), "{}", a.detail);
    assert!(a.detail.contains("attrs=1"), "{}", a.detail);
    assert_eq!(out.payload, vec![0xa0], "alert forwards the payload");
    // The thread's next messages are built in the context the last one left (its buffers are
    // reused): nothing of an earlier message may carry over, an outsized topic included.
    let long_topic = format!("t/{}", "x".repeat(5000));
    let next = [
        Message::new("d2", "c", ContentType::Json, b"{}".to_vec()),
        Message::new(
            "d3",
            long_topic.as_str(),
            ContentType::Text,
            b"hello".to_vec(),
        )
        .with_attribute("a", "1")
        .with_attribute("b", "2"),
        Message::new("d4", "e/f", ContentType::Binary, Vec::new()),
    ];
    let expected = [
        "device=d2 topic=c ct=json len=2 attrs=0".to_owned(),
        format!("device=d3 topic={long_topic} ct=text len=5 attrs=2"),
        "device=d4 topic=e/f ct=binary len=0 attrs=0".to_owned(),
    ];
    for (msg, expected) in next.iter().zip(expected) {
        let out = rt.evaluate(msg);
        assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
        assert_eq!(out.alerts[0].detail, expected);
        assert_eq!(out.payload, msg.payload);
    }
}

#[test]
fn chain_sees_redactions_quarantine_stops_alerts_accumulate() {
    let rt = runtime(&twinguard_tests::substitute(
        r#"
        [[policy]]
        name = "pii"
        path = "@pii-redact"
        [policy.config]
        remove = "/owner/email"
        mask = "/owner/name"
        alert-on-redact = true

        [[policy]]
        name = "look"
        path = "@hostile"
        [policy.config]
        mode = "fields"
        fields = "/owner/email,/owner/name,/t"

        [[policy]]
        name = "stop"
        path = "@hostile"
        [policy.config]
        mode = "probe-env"

        [[policy]]
        name = "never"
        path = "@hostile"
        [policy.config]
        mode = "echo"

        [[route]]
        filter = "plant/+/telemetry"
        chain = ["pii", "look"]

        [[route]]
        filter = "plant/#"
        chain = ["pii", "look", "stop", "never"]
        "#,
    ));
    let msg = json(&json!({"t": 21.5, "owner": {"name": "Ada", "email": "ada@example.com"}}));
    let out = rt.evaluate(&msg);
    // The second policy read the fields as the first left them.
    let seen = out
        .alerts
        .iter()
        .find(|a| &*a.policy == "look")
        .expect("look alerted");
    assert!(seen.detail.contains("/owner/email=None"), "{}", seen.detail);
    assert!(seen.detail.contains("***"), "{}", seen.detail);
    assert!(!seen.detail.contains("Ada"), "{}", seen.detail);
    assert!(out
        .alerts
        .iter()
        .any(|a| &*a.policy == "pii" && a.code == "pii-redacted"));
    assert_eq!(out.action, Action::Alert, "alerts outrank redaction");
    assert!(out.redacted);
    let forwarded: serde_json::Value = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(forwarded, json!({"t": 21.5, "owner": {"name": "***"}}));

    // The second route: quarantine stops the chain, earlier alerts are kept.
    let mut msg2 = msg;
    msg2.topic = "plant/d1/status".into();
    let out = rt.evaluate(&msg2);
    assert!(
        matches!(out.action, Action::Quarantine { ref policy, .. } if policy.as_deref() == Some("stop"))
    );
    let ran: Vec<_> = out.trace.iter().map(|t| &*t.policy).collect();
    assert_eq!(
        ran,
        ["pii", "look", "stop"],
        "'never' must not run after a quarantine"
    );
    assert_eq!(out.alerts.len(), 2);
}

#[test]
fn unrouted_messages_get_the_configured_default() {
    let toml = "[[policy]]\nname = \"pass\"\npath = \"@allow-all\"\n\
                [[route]]\nfilter = \"plant/#\"\nchain = [\"pass\"]\n";
    let rt = runtime(toml);
    let mut msg = json(&json!({}));
    msg.topic = "other/x".into();
    let out = rt.evaluate(&msg);
    assert!(
        matches!(out.action, Action::Quarantine { policy: None, ref reason } if reason.contains("other/x"))
    );
    assert!(out.trace.is_empty());
    let rt = runtime(&format!("[defaults]\nunrouted = \"allow\"\n{toml}"));
    assert_eq!(rt.evaluate(&msg).action, Action::Allow);
}

#[test]
fn field_lookups_return_typed_values_for_json_and_cbor() {
    let rt = runtime(&twinguard_tests::hostile_with(
        "fields",
        "",
        "fields = \"/i,/f,/s,/b,/n,/arr,/obj,/arr/1,/obj/k,/missing,bad\"",
    ));
    let doc = json!({"i": -3, "f": 2.5, "s": "x", "b": true, "n": null, "arr": [1, 2, 3], "obj": {"k": "v"}});
    let expect = |detail: &str| {
        for part in [
            "/i=Integer(-3)",
            "/f=Float(2.5)",
            "/s=Text(\"x\")",
            "/b=Boolean(true)",
            "/n=Null",
            "/arr=Array(3)",
            "/obj=Object(1)",
            "/arr/1=Integer(2)",
            "/obj/k=Text(\"v\")",
            "/missing=None",
            "bad=Err(BadPointer",
        ] {
            assert!(detail.contains(part), "missing {part} in {detail}");
        }
    };
    let out = rt.evaluate(&json(&doc));
    expect(&out.alerts[0].detail);
    let cbor = twinguard::convert::json_to_cbor(&doc);
    let out = rt.evaluate(&Message::new("d1", "x", ContentType::Cbor, cbor));
    expect(&out.alerts[0].detail);
    let out = rt.evaluate(&Message::new(
        "d1",
        "x",
        ContentType::Text,
        b"plain".to_vec(),
    ));
    assert!(
        out.alerts[0].detail.contains("/i=Err(Unstructured"),
        "{}",
        out.alerts[0].detail
    );
    let out = rt.evaluate(&Message::new(
        "d1",
        "x",
        ContentType::Json,
        b"{\"i\": ".to_vec(),
    ));
    assert!(
        out.alerts[0].detail.contains("/i=Err(Malformed"),
        "{}",
        out.alerts[0].detail
    );
}

#[test]
fn state_is_per_device_and_persists_across_messages() {
    let rt = runtime(&hostile("state", ""));
    let count = |device: &str| {
        let mut m = json(&json!({}));
        m.device_id = device.into();
        rt.evaluate(&m).alerts[0].detail.clone()
    };
    assert_eq!(count("a"), "1");
    assert_eq!(count("a"), "2");
    assert_eq!(count("b"), "1");
    assert_eq!(count("a"), "3");
}
