//! identity-guard, schema-guard and replay-guard through the real host, on simulator-shaped
//! JSON and CBOR traffic: each attack is caught, the clean message next to it is not.

use serde_json::{json, Value};
use twinguard::{Action, Alert, Config, ContentType, Message, Outcome, Runtime, Severity};
use twinguard_tests::{runtime, substitute};

/// 2026-11-25T00:00:00Z, the simulator's start.
const T0: u64 = 1_795_564_800_000;

/// One policy `name` of `crate_name`, with `config` lines, on every topic.
fn toml(name: &str, crate_name: &str, config: &str, extra: &str) -> String {
    format!(
        "[[policy]]\nname = \"{name}\"\npath = \"@{crate_name}\"\n{extra}\n[policy.config]\n\
         {config}\n[[route]]\nfilter = \"#\"\nchain = [\"{name}\"]\n"
    )
}

/// The simulator's envelope for a temperature sensor.
fn reading(device: &str, seq: i64, ts: u64) -> Value {
    json!({
        "device": device, "seq": seq, "ts": ts, "kind": "temperature",
        "metrics": {"temperature_c": 21.43, "humidity_pct": 44.1}
    })
}

/// `payload` from `device` on its own telemetry topic, received 200 ms after `/ts` (or at
/// T0 without one).
fn json_msg(device: &str, payload: &Value) -> Message {
    let topic = format!("plant/{device}/telemetry");
    encoded(device, &topic, ContentType::Json, payload)
}

fn cbor_msg(device: &str, payload: &Value) -> Message {
    let topic = format!("plant/{device}/telemetry");
    encoded(device, &topic, ContentType::Cbor, payload)
}

fn encoded(device: &str, topic: &str, ct: ContentType, payload: &Value) -> Message {
    let bytes = match ct {
        ContentType::Cbor => twinguard::convert::json_to_cbor(payload),
        _ => serde_json::to_vec(payload).unwrap(),
    };
    let mut msg = Message::new(device, topic, ct, bytes);
    msg.received_at_ms = payload["ts"].as_u64().map_or(T0, |ts| ts + 200);
    msg
}

/// The quarantine reason, checking that `policy` quarantined and raised exactly one alert
/// `code` of `severity` whose detail is the reason.
fn quarantined(out: &Outcome, policy: &str, code: &str, severity: Severity) -> String {
    let Action::Quarantine {
        policy: Some(by),
        reason,
    } = &out.action
    else {
        panic!("expected a quarantine by {policy}, got {out:?}");
    };
    assert_eq!(by, policy, "{out:?}");
    assert_eq!(out.alerts.len(), 1, "{out:?}");
    let alert = &out.alerts[0];
    assert_eq!(
        (alert.code.as_str(), alert.severity),
        (code, severity),
        "{out:?}"
    );
    assert_eq!(&alert.detail, reason);
    reason.clone()
}

fn allowed(out: &Outcome) {
    assert_eq!(out.action, Action::Allow, "{out:?}");
    assert!(out.alerts.is_empty(), "{out:?}");
}

/// `Runtime::new` refuses the config; the error text.
fn refused(toml: &str) -> String {
    let config = Config::from_toml(&substitute(toml), ".").unwrap();
    match Runtime::new(config) {
        Ok(_) => panic!("accepted:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

// --- identity-guard ---------------------------------------------------------------------------

const INVENTORY: &str = "inventory = \"temp-0007, temp-0008,vib-0003\"";

fn identity(config: &str) -> Runtime {
    runtime(&toml("identity", "identity-guard", config, ""))
}

#[test]
fn identity_unknown_device_is_quarantined_with_an_alert() {
    let rt = identity(INVENTORY);
    let out = rt.evaluate(&json_msg("rogue-0001", &reading("rogue-0001", 1, T0)));
    let reason = quarantined(&out, "identity", "unknown-device", Severity::High);
    assert!(
        reason.starts_with("identity-guard: ") && reason.contains("\"rogue-0001\""),
        "{reason}"
    );
    allowed(&rt.evaluate(&json_msg("temp-0007", &reading("temp-0007", 1, T0))));
}

#[test]
fn identity_large_inventory() {
    let ids: Vec<String> = (0..5000).map(|i| format!("temp-{i:04}")).collect();
    let rt = identity(&format!("inventory = \"{}\"", ids.join(",")));
    for id in ["temp-0000", "temp-2500", "temp-4999"] {
        allowed(&rt.evaluate(&json_msg(id, &reading(id, 1, T0))));
    }
    let out = rt.evaluate(&json_msg("temp-5000", &reading("temp-5000", 1, T0)));
    quarantined(&out, "identity", "unknown-device", Severity::High);
}

#[test]
fn identity_topic_naming_another_device_is_quarantined() {
    let rt = identity(INVENTORY);
    // A real device publishing on another real device's topic.
    let payload = reading("temp-0008", 1, T0);
    let spoof = encoded(
        "temp-0007",
        "plant/temp-0008/telemetry",
        ContentType::Json,
        &payload,
    );
    let reason = quarantined(
        &rt.evaluate(&spoof),
        "identity",
        "spoofed-identity",
        Severity::High,
    );
    assert!(
        reason.starts_with("identity-guard: ")
            && reason.contains("\"temp-0008\"")
            && reason.contains("\"temp-0007\""),
        "{reason}"
    );
    // Too few segments to name anyone.
    let short = encoded("temp-0007", "plant", ContentType::Json, &payload);
    let reason = quarantined(
        &rt.evaluate(&short),
        "identity",
        "spoofed-identity",
        Severity::High,
    );
    assert!(reason.contains("1 segment"), "{reason}");
    // Another segment index.
    let rt = identity("topic-segment = 2");
    let msg = encoded(
        "vib-0003",
        "site-a/plant/vib-0003/telemetry",
        ContentType::Cbor,
        &payload,
    );
    allowed(&rt.evaluate(&msg));
}

#[test]
fn identity_payload_field_must_match_when_present() {
    let rt = identity(&format!("{INVENTORY}\npayload-field = \"/device\""));
    // Right topic, wrong claim in the payload: JSON and CBOR.
    let out = rt.evaluate(&json_msg("temp-0007", &reading("temp-0008", 1, T0)));
    let reason = quarantined(&out, "identity", "spoofed-identity", Severity::High);
    assert!(
        reason.contains("/device") && reason.contains("\"temp-0008\""),
        "{reason}"
    );
    let out = rt.evaluate(&cbor_msg("vib-0003", &json!({"device": 3, "seq": 1})));
    let reason = quarantined(&out, "identity", "spoofed-identity", Severity::High);
    assert!(reason.contains("an integer (1 digit)"), "{reason}");
    allowed(&rt.evaluate(&cbor_msg("vib-0003", &reading("vib-0003", 1, T0))));
    // Absent: nothing claimed. Unparsable: schema-guard's job.
    allowed(&rt.evaluate(&json_msg("temp-0007", &json!({"seq": 1}))));
    let truncated = Message::new(
        "temp-0007",
        "plant/temp-0007/telemetry",
        ContentType::Json,
        br#"{"device": "temp-0008", "seq": 1"#.to_vec(),
    );
    allowed(&rt.evaluate(&truncated));
}

#[test]
fn identity_legit_traffic_is_allowed() {
    let rt = identity(&format!("{INVENTORY}\npayload-field = \"/device\""));
    let msg = json_msg("temp-0007", &reading("temp-0007", 1042, T0));
    let out = rt.evaluate(&msg);
    allowed(&out);
    assert_eq!(out.payload, msg.payload);
    allowed(&rt.evaluate(&cbor_msg("vib-0003", &reading("vib-0003", 7, T0))));
    // Without an inventory every authenticated id may publish; only the match is checked.
    let rt = identity("");
    allowed(&rt.evaluate(&json_msg("door-0042", &reading("door-0042", 1, T0))));
}

#[test]
fn identity_alert_mode_forwards_with_an_alert() {
    let rt = identity(&format!(
        "{INVENTORY}\npayload-field = \"/device\"\non-unknown = \"alert\"\non-mismatch = \"alert\""
    ));
    let msg = json_msg("rogue-0001", &reading("rogue-0001", 1, T0));
    let out = rt.evaluate(&msg);
    assert_eq!(out.action, Action::Alert, "{out:?}");
    assert_eq!(out.payload, msg.payload);
    let codes: Vec<_> = out.alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["unknown-device"]);
    assert_eq!(out.alerts[0].severity, Severity::High);

    let spoof = encoded(
        "temp-0007",
        "plant/temp-0008/telemetry",
        ContentType::Json,
        &reading("temp-0008", 1, T0),
    );
    let out = rt.evaluate(&spoof);
    assert_eq!(out.action, Action::Alert, "{out:?}");
    let codes: Vec<_> = out.alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(
        codes,
        ["spoofed-identity", "spoofed-identity"],
        "topic and payload"
    );

    // Only the unknown device is in alert mode: a mismatch still quarantines, and the earlier
    // alert is kept.
    let rt = identity(&format!("{INVENTORY}\non-unknown = \"alert\""));
    let spoof = encoded(
        "rogue-0001",
        "plant/temp-0007/telemetry",
        ContentType::Json,
        &reading("temp-0007", 1, T0),
    );
    let out = rt.evaluate(&spoof);
    assert!(matches!(out.action, Action::Quarantine { .. }), "{out:?}");
    let codes: Vec<_> = out.alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["unknown-device", "spoofed-identity"]);
}

#[test]
fn identity_bad_config_is_refused_at_load() {
    for (config, needles) in [
        ("inventry = \"a\"", &["inventry"][..]),
        ("topic-segment = \"one\"", &["topic-segment", "one"]),
        ("inventory = \"a,,b\"", &["inventory", "entry 2"]),
        ("payload-field = \"device\"", &["payload-field", "device"]),
        ("on-unknown = \"drop\"", &["on-unknown", "drop"]),
        ("on-mismatch = \"ignore\"", &["on-mismatch", "ignore"]),
    ] {
        let text = refused(&toml("identity", "identity-guard", config, ""));
        for needle in needles {
            assert!(text.contains(needle), "{config}: {text}");
        }
    }
}

// --- schema-guard -----------------------------------------------------------------------------

const SCHEMA: &str = "required = \"/device:string,/seq:integer,/ts:integer,/metrics:object\"\n\
                      forbid = \"/blob\"";

fn schema(config: &str) -> Runtime {
    runtime(&toml("schema", "schema-guard", config, ""))
}

fn schema_rejects(rt: &Runtime, msg: &Message, code: &str) -> String {
    let reason = quarantined(&rt.evaluate(msg), "schema", code, Severity::Medium);
    assert!(reason.starts_with("schema-guard: "), "{reason}");
    reason
}

/// A JSON reading padded with a `pad` string to exactly `len` bytes.
fn padded(len: usize) -> Message {
    let mut doc = reading("temp-0007", 1, T0);
    doc["pad"] = json!("");
    let base = serde_json::to_vec(&doc).unwrap().len();
    doc["pad"] = json!("x".repeat(len - base));
    let msg = json_msg("temp-0007", &doc);
    assert_eq!(msg.payload.len(), len);
    msg
}

#[test]
fn schema_oversized_is_quarantined_before_parsing() {
    let rt = schema(SCHEMA);
    allowed(&rt.evaluate(&padded(65_536)));
    let reason = schema_rejects(&rt, &padded(65_537), "oversized");
    assert!(
        reason.contains("65537") && reason.contains("max-bytes 65536"),
        "{reason}"
    );
    // Truncated as well as too big: the size rule answers, no parse was needed.
    let mut cut = padded(70_000);
    cut.payload.truncate(66_000);
    let reason = schema_rejects(&rt, &cut, "oversized");
    assert!(reason.contains("66000"), "{reason}");
    // Configured bounds.
    let rt = schema("max-bytes = 100\nmin-bytes = 20");
    let reason = schema_rejects(&rt, &json_msg("d", &json!({"a": 1})), "undersized");
    assert!(
        reason.contains("7 bytes") && reason.contains("min-bytes 20"),
        "{reason}"
    );
    allowed(&rt.evaluate(&json_msg("d", &json!({"a": "0123456789abcdef"}))));
}

#[test]
fn schema_empty_payload_is_undersized() {
    let rt = schema("");
    let empty = Message::new("d", "plant/d/telemetry", ContentType::Json, Vec::new());
    schema_rejects(&rt, &empty, "undersized");
}

#[test]
fn schema_malformed_payloads_are_quarantined() {
    let rt = schema(SCHEMA);
    let full = serde_json::to_vec(&reading("temp-0007", 1, T0)).unwrap();
    let truncated = Message::new(
        "temp-0007",
        "plant/temp-0007/telemetry",
        ContentType::Json,
        full[..full.len() - 10].to_vec(),
    );
    let reason = schema_rejects(&rt, &truncated, "malformed");
    assert!(
        reason.contains("\"temp-0007\"") && reason.contains("EOF while parsing"),
        "{reason}"
    );
    let garbage = Message::new(
        "vib-0003",
        "plant/vib-0003/telemetry",
        ContentType::Cbor,
        vec![0xa5, 0x66, b'd', b'e', 0xff, 0x1c, 0x00],
    );
    let reason = schema_rejects(&rt, &garbage, "malformed");
    assert!(reason.contains("cbor payload"), "{reason}");
    // Parses, but is not an object.
    let reason = schema_rejects(&rt, &json_msg("d", &json!([1, 2])), "schema");
    assert!(reason.contains("an array"), "{reason}");
}

#[test]
fn schema_wrong_kind_and_missing_fields_are_quarantined() {
    let rt = schema(SCHEMA);
    let mut doc = reading("temp-0007", 1042, T0);
    doc["seq"] = json!("1042");
    let reason = schema_rejects(&rt, &json_msg("temp-0007", &doc), "schema");
    assert!(
        reason.contains("/seq")
            && reason.contains("a string (4 characters, \"1…\")")
            && !reason.contains("1042")
            && reason.contains("integer"),
        "{reason}"
    );
    // The same in CBOR, with a float where an integer belongs.
    let mut doc = reading("vib-0003", 1042, T0);
    doc["ts"] = json!(1.5);
    let reason = schema_rejects(&rt, &cbor_msg("vib-0003", &doc), "schema");
    assert!(
        reason.contains("/ts") && reason.contains("float"),
        "{reason}"
    );

    let mut doc = reading("temp-0007", 1042, T0);
    doc.as_object_mut().unwrap().remove("ts");
    let reason = schema_rejects(&rt, &json_msg("temp-0007", &doc), "schema");
    assert!(
        reason.contains("/ts") && reason.contains("missing"),
        "{reason}"
    );

    let mut doc = reading("temp-0007", 1042, T0);
    doc["blob"] = json!("AAAA");
    let reason = schema_rejects(&rt, &json_msg("temp-0007", &doc), "schema");
    assert!(reason.contains("forbidden field /blob"), "{reason}");
}

#[test]
fn schema_disallowed_content_type_is_quarantined() {
    let rt = schema(SCHEMA);
    let text = Message::new(
        "temp-0007",
        "plant/temp-0007/telemetry",
        ContentType::Text,
        b"temperature_c=21.4".to_vec(),
    );
    let reason = schema_rejects(&rt, &text, "content-type");
    assert!(
        reason.contains("text") && reason.contains("json,cbor"),
        "{reason}"
    );
    // Allowed when configured; a text payload has no fields to require.
    let rt = schema(&format!("{SCHEMA}\ncontent-types = \"json,text\""));
    allowed(&rt.evaluate(&text));
    schema_rejects(
        &rt,
        &cbor_msg("vib-0003", &reading("vib-0003", 1, T0)),
        "content-type",
    );
}

#[test]
fn schema_clean_messages_are_allowed() {
    let rt = schema(SCHEMA);
    allowed(&rt.evaluate(&json_msg("temp-0007", &reading("temp-0007", 1042, T0))));
    let mut door = reading("door-0042", 3, T0);
    door["metrics"] = json!({"door_open": 1});
    door["event"] = json!("badge");
    door["badge"] = json!({"id": "B-48213", "holder": "Ada Lovelace"});
    allowed(&rt.evaluate(&json_msg("door-0042", &door)));
    allowed(&rt.evaluate(&cbor_msg("power-0001", &reading("power-0001", 9, T0))));
}

#[test]
fn schema_bad_config_is_refused_at_load() {
    for (config, needles) in [
        ("max_bytes = 10", &["max_bytes"][..]),
        ("content-types = \"json,xml\"", &["content-types", "xml"]),
        ("max-bytes = \"64k\"", &["max-bytes", "64k"]),
        ("min-bytes = 10\nmax-bytes = 5", &["min-bytes", "max-bytes"]),
        ("required = \"/seq:int\"", &["required", "int"]),
        ("required = \"seq:integer\"", &["required", "seq"]),
        ("forbid = \"/blob,\"", &["forbid", "empty pointer"]),
    ] {
        let text = refused(&toml("schema", "schema-guard", config, ""));
        for needle in needles {
            assert!(text.contains(needle), "{config}: {text}");
        }
    }
}

// --- replay-guard -----------------------------------------------------------------------------

fn replay(config: &str) -> Runtime {
    runtime(&toml("replay", "replay-guard", config, ""))
}

fn replay_rejects(rt: &Runtime, msg: &Message, code: &str, severity: Severity) -> String {
    let reason = quarantined(&rt.evaluate(msg), "replay", code, severity);
    assert!(reason.starts_with("replay-guard: "), "{reason}");
    reason
}

/// A reading of `device` sent every 60 s: message `seq` at `T0 + seq * 60 s`.
fn nth(device: &str, seq: i64) -> Message {
    let ts = T0 + u64::try_from(seq).unwrap() * 60_000;
    json_msg(device, &reading(device, seq, ts))
}

#[test]
fn replay_in_order_sequence_is_allowed_and_replays_are_not() {
    let rt = replay("");
    for seq in 1..=5 {
        allowed(&rt.evaluate(&nth("temp-0007", seq)));
    }
    // Captured message 3, re-sent verbatim 10 minutes later.
    let mut replayed = nth("temp-0007", 3);
    replayed.received_at_ms += 600_000;
    let reason = replay_rejects(&rt, &replayed, "replay", Severity::High);
    assert_eq!(
        reason,
        "replay-guard: seq 3 <= last accepted 5 for device \"temp-0007\""
    );
    // The latest one again, at once.
    replay_rejects(&rt, &nth("temp-0007", 5), "replay", Severity::High);
    // A rejected message does not move the state: 6 is still next.
    allowed(&rt.evaluate(&nth("temp-0007", 6)));
}

#[test]
fn replay_cbor_sequence() {
    let rt = replay("");
    let msg = |seq: i64| {
        let ts = T0 + u64::try_from(seq).unwrap() * 60_000;
        cbor_msg("vib-0003", &reading("vib-0003", seq, ts))
    };
    allowed(&rt.evaluate(&msg(41)));
    allowed(&rt.evaluate(&msg(42)));
    replay_rejects(&rt, &msg(41), "replay", Severity::High);
}

#[test]
fn replay_stale_and_future_timestamps_are_quarantined() {
    let rt = replay("");
    let mut stale = nth("temp-0007", 1);
    stale.received_at_ms += 30_001;
    let reason = replay_rejects(&rt, &stale, "stale", Severity::Medium);
    assert!(
        reason.contains("30201 ms") && reason.contains("max-age-ms 30000"),
        "{reason}"
    );
    let mut future = nth("temp-0007", 1);
    future.received_at_ms -= 5_201;
    let reason = replay_rejects(&rt, &future, "future-timestamp", Severity::Medium);
    assert!(
        reason.contains("5001 ms") && reason.contains("max-future-ms 5000"),
        "{reason}"
    );
    // Neither was recorded: seq 1 in time is the device's first accepted message.
    allowed(&rt.evaluate(&nth("temp-0007", 1)));

    let rt = replay("max-age-ms = 1000\nmax-future-ms = 0");
    let mut late = nth("temp-0007", 1);
    late.received_at_ms += 900;
    replay_rejects(&rt, &late, "stale", Severity::Medium);
}

#[test]
fn replay_state_is_per_device() {
    let rt = replay("");
    allowed(&rt.evaluate(&nth("temp-0007", 100)));
    // B's low seq is judged against B's history only.
    allowed(&rt.evaluate(&nth("temp-0008", 5)));
    allowed(&rt.evaluate(&nth("temp-0008", 6)));
    allowed(&rt.evaluate(&nth("temp-0007", 101)));
    replay_rejects(&rt, &nth("temp-0007", 100), "replay", Severity::High);
    replay_rejects(&rt, &nth("temp-0008", 6), "replay", Severity::High);
}

#[test]
fn replay_require_false_lets_unnumbered_messages_through() {
    let unnumbered = json_msg("door-0042", &json!({"event": "badge", "ts": T0}));
    let wrong_type = json_msg("door-0042", &json!({"seq": "7", "ts": T0}));
    let text = Message::new("door-0042", "t", ContentType::Text, b"open".to_vec());

    let rt = replay("");
    let reason = replay_rejects(&rt, &unnumbered, "unverifiable", Severity::Medium);
    assert!(reason.contains("/seq is missing"), "{reason}");
    let reason = replay_rejects(&rt, &wrong_type, "unverifiable", Severity::Medium);
    assert!(reason.contains("/seq is a string"), "{reason}");
    replay_rejects(&rt, &text, "unverifiable", Severity::Medium);

    let rt = replay("require = false");
    for msg in [&unnumbered, &wrong_type, &text] {
        allowed(&rt.evaluate(msg));
    }
    // Numbered messages are still checked.
    allowed(&rt.evaluate(&nth("door-0042", 2)));
    replay_rejects(&rt, &nth("door-0042", 1), "replay", Severity::High);
}

#[test]
fn replay_seq_reset_after_reboot_only_when_allowed() {
    let reboot = |rt: &Runtime| {
        assert_eq!(rt.evaluate(&nth("temp-0007", 500)).action, Action::Allow);
        // Rebooted: seq starts over, the clock has moved on.
        let ts = T0 + 501 * 60_000;
        rt.evaluate(&json_msg("temp-0007", &reading("temp-0007", 1, ts)))
    };
    let rt = replay("");
    let out = reboot(&rt);
    quarantined(&out, "replay", "replay", Severity::High);

    let rt = replay("allow-seq-reset = true");
    allowed(&reboot(&rt));
    allowed(&rt.evaluate(&nth("temp-0007", 502)));
    // A replay of an old message has an older ts: still a replay.
    let mut old = nth("temp-0007", 400);
    old.received_at_ms = T0 + 503 * 60_000;
    let reason = replay_rejects(&rt, &old, "replay", Severity::High);
    assert!(reason.contains("not a reset"), "{reason}");
}

#[test]
fn replay_fails_closed_when_state_cannot_be_kept() {
    // Room for one device: a flood of new ids must not switch replay protection off.
    let rt = runtime(&toml(
        "replay",
        "replay-guard",
        "",
        "[policy.limits]\nstate-devices = 1",
    ));
    allowed(&rt.evaluate(&nth("temp-0007", 1)));
    let reason = replay_rejects(&rt, &nth("rogue-0001", 1), "state-error", Severity::High);
    assert!(
        reason.contains("\"rogue-0001\"") && reason.contains("too-many-devices"),
        "{reason}"
    );
    // The known device is still protected.
    replay_rejects(&rt, &nth("temp-0007", 1), "replay", Severity::High);
}

#[test]
fn replay_bad_config_is_refused_at_load() {
    for (config, needles) in [
        ("max_age_ms = 1", &["max_age_ms"][..]),
        ("seq = \"seq\"", &["`seq`", "\"seq\""]),
        ("max-age-ms = \"30s\"", &["max-age-ms", "30s"]),
        ("max-future-ms = -1", &["max-future-ms", "-1"]),
        ("require = \"yes\"", &["require", "yes"]),
        ("allow-seq-reset = 1", &["allow-seq-reset", "1"]),
    ] {
        let text = refused(&toml("replay", "replay-guard", config, ""));
        for needle in needles {
            assert!(text.contains(needle), "{config}: {text}");
        }
    }
}

/// In the shipped order, the first guard that catches a message stops the chain.
#[test]
fn chain_of_the_three_stops_at_the_first_catch() {
    let chain = "[[policy]]\nname = \"identity\"\npath = \"@identity-guard\"\n[policy.config]\n\
                inventory = \"temp-0007\"\n\
                [[policy]]\nname = \"schema\"\npath = \"@schema-guard\"\n\
                [[policy]]\nname = \"replay\"\npath = \"@replay-guard\"\n\
                [[route]]\nfilter = \"plant/#\"\nchain = [\"identity\", \"schema\", \"replay\"]\n";
    let rt = runtime(chain);
    allowed(&rt.evaluate(&nth("temp-0007", 1)));
    let out = rt.evaluate(&nth("temp-0007", 1));
    let alerts: Vec<&Alert> = out.alerts.iter().collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(&*alerts[0].policy, "replay");
    let out = rt.evaluate(&nth("rogue-0001", 1));
    assert_eq!(out.trace.len(), 1, "identity stopped the chain: {out:?}");
    quarantined(&out, "identity", "unknown-device", Severity::High);
}
