//! Per-message cost of evaluation, 1 KB JSON payload (release build):
//! (a) allow-all, reuse; (b) pii-redact, reuse; (c) pii-redact, fresh; (d) the same redaction
//! as native Rust; (e) a chain of three policies each reading two fields.
//!
//! Run: `cargo bench -p twinguard-tests --bench evaluate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use twinguard::{ContentType, Message, Runtime};
use twinguard_tests::runtime;

/// A ~1 KB telemetry document of ~50 fields, two levels deep, with personal data in it.
fn payload() -> Vec<u8> {
    let mut readings = Map::new();
    for i in 0..36 {
        readings.insert(format!("sensor_{i:02}"), json!(20.0 + f64::from(i) * 0.37));
    }
    let doc = json!({
        "device": "press-07",
        "seq": 184_467,
        "ts": 1_764_000_000_123_u64,
        "site": {"plant": "north", "line": 3, "cell": "c-12"},
        "owner": {"name": "Ada Lovelace", "email": "ada@example.com", "badge": 4711},
        "status": "running",
        "fw": "2.14.1",
        "readings": readings,
    });
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    assert!(
        (900..1200).contains(&bytes.len()),
        "payload is {} bytes",
        bytes.len()
    );
    bytes
}

fn message() -> Message {
    Message::new(
        "press-07",
        "plant/press-07/telemetry",
        ContentType::Json,
        payload(),
    )
}

const PII: &str = "[policy.config]\nremove = \"/owner/email\"\nmask = \"/owner/name\"\n";

fn single(path: &str, isolation: &str, config: &str) -> Runtime {
    runtime(&format!(
        "[[policy]]\nname = \"p\"\npath = \"{path}\"\nisolation = \"{isolation}\"\n{config}\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
    ))
}

/// What a native Rust policy doing the same redaction would do.
fn native_redact(bytes: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if let Some(owner) = v.get_mut("owner").and_then(Value::as_object_mut) {
        owner.shift_remove("email");
        if let Some(name) = owner.get_mut("name") {
            *name = Value::String("***".into());
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let msg = message();
    let allow = single("@allow-all", "reuse", "");
    c.bench_function("a_allow_all_reuse", |b| {
        b.iter(|| black_box(allow.evaluate(black_box(&msg))))
    });
    let pii = single("@pii-redact", "reuse", PII);
    assert!(pii.evaluate(&msg).redacted);
    c.bench_function("b_pii_redact_reuse", |b| {
        b.iter(|| black_box(pii.evaluate(black_box(&msg))))
    });
    let fresh = single("@pii-redact", "fresh", PII);
    c.bench_function("c_pii_redact_fresh", |b| {
        b.iter(|| black_box(fresh.evaluate(black_box(&msg))))
    });
    // Same fields out; the native version may reprint untouched floats an ulp apart (serde_json
    // round trip), the host copies them byte for byte.
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let (native, hosted) = (
        parse(&native_redact(&msg.payload)),
        parse(&pii.evaluate(&msg).payload),
    );
    assert_eq!(native["owner"], hosted["owner"]);
    c.bench_function("d_native_redact", |b| {
        b.iter(|| black_box(native_redact(black_box(&msg.payload))))
    });
    let chain = runtime(
        "[[policy]]\nname = \"r1\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/seq,/site/line\"\n\
         [[policy]]\nname = \"r2\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/readings/sensor_10,/status\"\n\
         [[policy]]\nname = \"r3\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/ts,/readings/sensor_35\"\n\
         [[route]]\nfilter = \"#\"\nchain = [\"r1\", \"r2\", \"r3\"]\n",
    );
    assert_eq!(chain.evaluate(&msg).trace.len(), 3);
    c.bench_function("e_chain_of_3_reading_2_fields", |b| {
        b.iter(|| black_box(chain.evaluate(black_box(&msg))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
