//! Host-applied redaction, JSON and CBOR, through the real pii-redact policy.

use serde_json::{json, Value};
use twinguard::{Action, ContentType, Fault, Message, Runtime, Verdict};
use twinguard_tests::{runtime, substitute};

fn pii(extra_config: &str) -> Runtime {
    runtime(&substitute(&format!(
        "[[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\n\
         remove = \"/owner/email,/readings/1,/absent\"\nmask = \"/owner/name,/badge\"\n{extra_config}\n\
         [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n"
    )))
}

fn doc() -> Value {
    json!({
        "z": 1,
        "owner": {"name": "Ada", "email": "ada@example.com", "team": "ops"},
        "badge": {"id": 7, "holder": "Ada"},
        "readings": [10, 11, 12],
        "a": 2
    })
}

fn expected() -> Value {
    json!({
        "z": 1,
        "owner": {"name": "***", "team": "ops"},
        "badge": "***",
        "readings": [10, 12],
        "a": 2
    })
}

#[test]
fn json_fields_removed_and_masked_order_kept() {
    let rt = pii("");
    let out = rt.evaluate(&Message::new(
        "d",
        "t",
        ContentType::Json,
        serde_json::to_vec(&doc()).unwrap(),
    ));
    assert_eq!(out.action, Action::Redact);
    assert!(out.redacted);
    let text = String::from_utf8(out.payload.to_vec()).unwrap();
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got, expected());
    // Member order is the device's, not alphabetical.
    assert!(text.find("\"z\"") < text.find("\"a\""), "{text}");
    assert!(matches!(out.trace[0].verdict, Verdict::Redact(_)));
}

#[test]
fn cbor_fields_removed_and_masked() {
    let rt = pii("");
    let cbor = twinguard::convert::json_to_cbor(&doc());
    let out = rt.evaluate(&Message::new("d", "t", ContentType::Cbor, cbor.clone()));
    assert_eq!(out.action, Action::Redact);
    assert_ne!(out.payload, cbor);
    let got = twinguard::convert::cbor_to_json(&out.payload).unwrap();
    assert_eq!(got, expected());
}

#[test]
fn nothing_to_redact_allows_unchanged() {
    let rt = pii("");
    let msg = Message::new("d", "t", ContentType::Json, br#"{"t": 1}"#.to_vec());
    let out = rt.evaluate(&msg);
    assert_eq!(out.action, Action::Allow);
    assert_eq!(out.payload, msg.payload);
}

#[test]
fn redacting_text_or_malformed_payload_is_a_fault_with_a_clear_cause() {
    // The hostile guest asks for a redaction whatever the content type.
    let rt = runtime(&twinguard_tests::hostile("redact-text", ""));
    let out = rt.evaluate(&Message::new("d", "t", ContentType::Text, b"x=1".to_vec()));
    let Verdict::Fault(Fault::BadDecision(why)) = &out.trace[0].verdict else {
        panic!(
            "expected a bad-decision fault, got {:?}",
            out.trace[0].verdict
        );
    };
    assert!(why.contains("text payload"), "{why}");
    assert!(
        matches!(out.action, Action::Quarantine { .. }),
        "on-fault defaults to quarantine"
    );
    assert_eq!(&out.payload[..], b"x=1");
    let out = rt.evaluate(&Message::new(
        "d",
        "t",
        ContentType::Json,
        b"{\"x\": [".to_vec(),
    ));
    let Verdict::Fault(Fault::BadDecision(why)) = &out.trace[0].verdict else {
        panic!(
            "expected a bad-decision fault, got {:?}",
            out.trace[0].verdict
        );
    };
    assert!(why.contains("not valid json"), "{why}");
    let rt = runtime(&twinguard_tests::hostile("bad-pointer", ""));
    let out = rt.evaluate(&Message::new("d", "t", ContentType::Json, b"{}".to_vec()));
    let Verdict::Fault(Fault::BadDecision(why)) = &out.trace[0].verdict else {
        panic!(
            "expected a bad-decision fault, got {:?}",
            out.trace[0].verdict
        );
    };
    assert!(why.contains("no-slash"), "{why}");
}

#[test]
fn a_duplicate_key_decoy_never_forwards_the_hidden_value() {
    // The e-mail sits in the first copy of `owner`; a parser that keeps the last copy sees an
    // empty owner and nothing to remove. The payload is refused instead, and held.
    let rt = pii("");
    let json_decoy = br#"{"owner": {"email": "ada@example.com"}, "owner": {}, "z": 1}"#.to_vec();
    let cbor_decoy = {
        // cbor4ii writes maps as given: the same key twice.
        let mut bytes = vec![0xa2];
        bytes.extend(b"\x65owner\xa1\x65email\x6fada@example.com");
        bytes.extend(b"\x65owner\xa0");
        bytes
    };
    for (content_type, payload) in [
        (ContentType::Json, json_decoy),
        (ContentType::Cbor, cbor_decoy),
    ] {
        let out = rt.evaluate(&Message::new("d", "t", content_type, payload));
        let Action::Quarantine { reason, .. } = &out.action else {
            panic!("{content_type:?}: {out:?}");
        };
        assert!(reason.contains("duplicate key \"owner\""), "{reason}");
        assert!(!out.action.forwards());
    }
}

/// An outcome that forwards the payload unchanged hands back the message's own bytes, not a
/// copy; a redaction writes new bytes and leaves the message's alone.
#[test]
fn an_unredacted_outcome_shares_the_message_s_bytes() {
    let rt = pii("");
    let clean = Message::new("d", "t", ContentType::Json, br#"{"z":1,"a":2}"#.to_vec());
    let out = rt.evaluate(&clean);
    assert_eq!(out.action, Action::Allow);
    assert_eq!(out.payload, clean.payload);
    assert_eq!(out.payload.as_ptr(), clean.payload.as_ptr(), "copied");

    let personal = Message::new(
        "d",
        "t",
        ContentType::Json,
        serde_json::to_vec(&doc()).unwrap(),
    );
    let before = personal.payload.to_vec();
    let out = rt.evaluate(&personal);
    assert_eq!(out.action, Action::Redact);
    assert_ne!(out.payload.as_ptr(), personal.payload.as_ptr());
    assert_eq!(personal.payload, before, "the message's own bytes changed");
    let got: Value = serde_json::from_slice(&out.payload).unwrap();
    assert_eq!(got, expected());
}
