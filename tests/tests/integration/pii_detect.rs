//! pii-redact's `detect`: personal data found by pattern in any string value, under a field
//! nobody listed and inside free text, redacted by the host and alerted without the data.

use serde_json::json;
use twinguard::{Action, ContentType, Message, Outcome, Runtime, Severity};
use twinguard_tests::{init_refused, runtime};

fn pii(config: &str) -> Runtime {
    runtime(&format!(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\n{config}\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n"
    ))
}

fn detecting() -> Runtime {
    pii("detect = \"email,phone,iban,card,names\"\nnames = \"Ada Lovelace,Grace Hopper\"")
}

fn eval(rt: &Runtime, payload: &str) -> Outcome {
    rt.evaluate(&Message::new(
        "press-07",
        "plant/press-07/telemetry",
        ContentType::Json,
        payload.as_bytes().to_vec(),
    ))
}

/// Checks that the message was forwarded as `forwarded`, exactly, with one `pii-detected` alert,
/// and returns the alert's detail.
fn redacted(out: &Outcome, forwarded: &str) -> String {
    assert_eq!(out.action, Action::Alert, "{out:?}");
    assert!(out.redacted, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.payload), forwarded);
    assert_eq!(out.alerts.len(), 1, "{out:?}");
    let alert = &out.alerts[0];
    assert_eq!(
        (&*alert.policy, alert.code.as_str(), alert.severity),
        ("pii", "pii-detected", Severity::Medium)
    );
    alert.detail.clone()
}

fn untouched(out: &Outcome, payload: &str) {
    assert_eq!(out.action, Action::Allow, "{out:?}");
    assert!(out.alerts.is_empty(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.payload), payload);
}

#[test]
fn an_email_under_an_unlisted_field_is_masked_and_alerted() {
    let out = eval(
        &detecting(),
        r#"{"seq":1,"temp":20.5,"maintainer":"ops.lead@plant.example"}"#,
    );
    let detail = redacted(&out, r#"{"seq":1,"temp":20.5,"maintainer":"***"}"#);
    assert_eq!(detail, "personal data masked at /maintainer (email)");
}

#[test]
fn personal_data_inside_free_text_is_masked_and_the_rest_kept() {
    let out = eval(
        &detecting(),
        r#"{"note":"call Ada Lovelace at +49 170 1234567"}"#,
    );
    let detail = redacted(&out, r#"{"note":"call *** at ***"}"#);
    assert_eq!(detail, "personal data masked at /note (phone, name)");
    assert!(!detail.contains("Lovelace") && !detail.contains("170"));
}

#[test]
fn nested_fields_and_arrays_are_scanned_and_can_be_removed() {
    let rt = pii(
        "detect = \"email,phone\"\ndetect-action = \"remove\"\ndetect-skip = \"/device\"\n\
         remove = \"/owner/email\"\nmask = \"/owner/name\"",
    );
    let out = eval(
        &rt,
        r#"{"device":"ops@plant.example","owner":{"name":"Ada","email":"ada@example.com"},"contacts":["a@x.example","ok","+44 20 7946 0018"],"site":{"oncall":{"phone":"0170 1234567"}}}"#,
    );
    let detail = redacted(
        &out,
        r#"{"device":"ops@plant.example","owner":{"name":"***"},"contacts":["ok"],"site":{"oncall":{}}}"#,
    );
    assert_eq!(
        detail,
        "personal data removed at /contacts/0 (email); /contacts/2 (phone); \
         /site/oncall/phone (phone)"
    );
}

#[test]
fn clean_telemetry_passes_untouched_without_an_alert() {
    let payload = json!({
        "device": "press-07",
        "seq": 184_467,
        "seq_text": "184467",
        "ts": 1_764_000_000_123_u64,
        "ts_text": "1764000000123",
        "date": "2026-11-25",
        "time": "2026-11-25T10:00:00.123Z",
        "local": "05.12.2026 10:30",
        "temp": 21.5,
        "pressure": "1013.25 hPa",
        "fw": "2.14.1",
        "build": "v2.14.1-rc.3",
        "uuid": "550e8400-e29b-41d4-a716-446655440000",
        "mac": "00:1A:2B:3C:4D:5E",
        "ip": "192.168.100.200",
        "serial": "SN-2024-000123-0456",
        "imei": "352099001761481",
        "status": "running",
        "readings": [20.1, 20.3, "0.000123456789"],
    })
    .to_string();
    untouched(&eval(&detecting(), &payload), &payload);
}

#[test]
fn ibans_and_luhn_valid_cards_are_found_luhn_invalid_numbers_are_not() {
    let rt = detecting();
    let out = eval(
        &rt,
        r#"{"pay":"IBAN DE89 3704 0044 0532 0130 00","card":"4111 1111 1111 1111","order":"4111111111111112"}"#,
    );
    let detail = redacted(
        &out,
        r#"{"pay":"IBAN ***","card":"***","order":"4111111111111112"}"#,
    );
    assert_eq!(detail, "personal data masked at /pay (iban); /card (card)");
    let clean = r#"{"order":"4111111111111112","ref":"DE88370400440532013000"}"#;
    untouched(&eval(&rt, clean), clean);
}

#[test]
fn cbor_payloads_are_scanned_too() {
    let doc = json!({"seq": 1, "maintainer": "ops.lead@plant.example"});
    let out = detecting().evaluate(&Message::new(
        "press-07",
        "plant/press-07/telemetry",
        ContentType::Cbor,
        twinguard::convert::json_to_cbor(&doc),
    ));
    assert_eq!(out.action, Action::Alert, "{out:?}");
    assert_eq!(
        twinguard::convert::cbor_to_json(&out.payload).unwrap(),
        json!({"seq": 1, "maintainer": "***"})
    );
    assert_eq!(out.alerts[0].code, "pii-detected");
}

#[test]
fn without_detect_an_unlisted_field_still_passes_as_before() {
    let payload = r#"{"seq":1,"maintainer":"ops.lead@plant.example"}"#;
    untouched(&eval(&pii("remove = \"/owner/email\""), payload), payload);
}

#[test]
fn a_bad_detector_fails_the_load_naming_it() {
    let err = init_refused(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\n\
         detect = \"email,passport\"\n[[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n",
    );
    assert!(err.contains("passport"), "{err}");
}
