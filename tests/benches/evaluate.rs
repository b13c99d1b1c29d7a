//! Per-message cost of evaluation, 1 KB JSON payload (release build):
//! (a) allow-all, reuse; (b) pii-redact, reuse; (c) pii-redact, fresh, and (c2) allow-all
//! fresh, the floor under it; (d) the same redaction as native Rust; (e) a chain of three
//! policies each reading two declared fields, (e2) the same through `host.field` calls; (f) the
//! Mosquitto bench's four-policy pack on fresh messages.
//!
//! Run: `cargo bench -p twinguard-tests --bench evaluate`.
//!
//! `EVALUATE_COUNT=<scenario>:<n>` instead evaluates one scenario `n` times with no timing, for
//! `scripts/instructions.sh`, which counts the instructions under valgrind: a figure the other
//! load on a shared machine cannot move.

use std::hint::black_box;

use criterion::{criterion_group, BatchSize, Criterion};
use serde_json::{json, Map, Value};
use twinguard::{ContentType, Message, Runtime};
use twinguard_tests::{runtime, PACK};

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
    runtime(&single_toml(path, isolation, config))
}

fn single_toml(path: &str, isolation: &str, config: &str) -> String {
    format!(
        "[[policy]]\nname = \"p\"\npath = \"{path}\"\nisolation = \"{isolation}\"\n{config}\
         [[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
    )
}

/// The bench message with sequence number `seq` and the current time, as a device sends them.
fn pack_message(seq: u64) -> Message {
    let now = twinguard::now_ms();
    let mut doc: Value = serde_json::from_slice(&payload()).unwrap_or(Value::Null);
    doc["seq"] = json!(seq);
    doc["ts"] = json!(now);
    let mut m = message();
    m.payload = serde_json::to_vec(&doc).unwrap_or_default().into();
    m.received_at_ms = now;
    m
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
    // A large payload no policy reads (an image, a firmware chunk): what carrying it costs.
    let large = Message::new(
        "press-07",
        "plant/press-07/blob",
        ContentType::Binary,
        vec![0x5a_u8; 256 << 10],
    );
    c.bench_function("a2_allow_all_256k_binary", |b| {
        b.iter(|| black_box(allow.evaluate(black_box(&large))))
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
    // The floor under (c): a fresh instance of a policy that does nothing. What (c) costs
    // above it is pii-redact's own work (BENCHMARKS.md, "Fresh instances without WASI").
    let fresh_floor = single("@allow-all", "fresh", "");
    c.bench_function("c2_allow_all_fresh", |b| {
        b.iter(|| black_box(fresh_floor.evaluate(black_box(&msg))))
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
    let chain = runtime(CHAIN_OF_3);
    assert_eq!(chain.evaluate(&msg).trace.len(), 3);
    c.bench_function("e_chain_of_3_reading_2_fields", |b| {
        b.iter(|| black_box(chain.evaluate(black_box(&msg))))
    });
    // The same chain reading through `host.field` calls instead of declared fields (0.1's way).
    let dynamic = runtime(&CHAIN_OF_3.replace("mode = \"read\"", "mode = \"read-dynamic\""));
    assert_eq!(dynamic.evaluate(&msg).trace.len(), 3);
    c.bench_function("e2_same_chain_by_host_lookups", |b| {
        b.iter(|| black_box(dynamic.evaluate(black_box(&msg))))
    });
    // The Mosquitto bench's four-policy pack, every message new (replay-guard wants rising
    // sequence numbers), built outside the timed part.
    let pack = runtime(PACK);
    let mut seq = 0_u64;
    let mut next = || {
        seq += 1;
        pack_message(seq)
    };
    let first = pack.evaluate(&next());
    assert_eq!(first.trace.len(), 4, "{first:?}");
    assert!(first.action.forwards(), "{first:?}");
    c.bench_function("f_pack_of_4", |b| {
        b.iter_batched(
            &mut next,
            |m| black_box(pack.evaluate(black_box(&m))),
            BatchSize::SmallInput,
        )
    });
    // The same pack and allow-all with metrics on: an embedder's meter, read by the
    // Prometheus reader `serve` uses (issue 15: at most 5 % more than without).
    let telemetry = twinguard::telemetry::Telemetry::new("bench").unwrap_or_else(|e| panic!("{e}"));
    let metered = Runtime::with_meter(twinguard_tests::config(PACK), telemetry.meter())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metered.evaluate(&next()).trace.len(), 4);
    c.bench_function("g_pack_of_4_metrics_on", |b| {
        b.iter_batched(
            &mut next,
            |m| black_box(metered.evaluate(black_box(&m))),
            BatchSize::SmallInput,
        )
    });
    let allow_metered = Runtime::with_meter(
        twinguard_tests::config(
            "[[policy]]\nname = \"p\"\npath = \"@allow-all\"\n[[route]]\nfilter = \"#\"\nchain = [\"p\"]\n",
        ),
        telemetry.meter(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("g_allow_all_metrics_on", |b| {
        b.iter(|| black_box(allow_metered.evaluate(black_box(&msg))))
    });
    // What was measured was recorded: the pack's first policy saw every message.
    let text = telemetry.render();
    assert!(
        text.contains("twinguard_policy_duration_seconds_count{twinguard_policy_name=\"schema\""),
        "{text}"
    );
}

const CHAIN_OF_3: &str =
    "[[policy]]\nname = \"r1\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/seq,/site/line\"\n\
     [[policy]]\nname = \"r2\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/readings/sensor_10,/status\"\n\
     [[policy]]\nname = \"r3\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/ts,/readings/sensor_35\"\n\
     [[route]]\nfilter = \"#\"\nchain = [\"r1\", \"r2\", \"r3\"]\n";

/// One evaluation, never inlined: `scripts/instructions.sh` counts what runs inside it (a name no
/// library function contains, since valgrind toggles counting on every function it matches).
#[inline(never)]
fn twinguard_bench_counted_evaluate(rt: &Runtime, m: &Message) -> twinguard::Outcome {
    rt.evaluate(m)
}

/// The same redaction natively, the baseline the counts are divided by.
#[inline(never)]
fn twinguard_bench_counted_native(bytes: &[u8]) -> Vec<u8> {
    native_redact(bytes)
}

/// A runtime small enough for valgrind: the pooling allocator reserves address space for every
/// instance it may hold, and valgrind cannot map terabytes.
fn small(toml: &str) -> Runtime {
    let mut config = twinguard_tests::config(toml);
    config.engine.max_instances = 4;
    Runtime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// `EVALUATE_COUNT=<scenario>:<n>`: evaluates one scenario `n` times (messages built first,
/// outside the counted function). Returns false when the variable is not set.
fn count() -> bool {
    let Ok(spec) = std::env::var("EVALUATE_COUNT") else {
        return false;
    };
    let (name, n) = spec
        .split_once(':')
        .and_then(|(name, n)| Some((name.to_string(), n.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("EVALUATE_COUNT={spec}: expected <scenario>:<count>"));
    let config = match name.as_str() {
        "a_allow_all_reuse" => single_toml("@allow-all", "reuse", ""),
        "b_pii_redact_reuse" => single_toml("@pii-redact", "reuse", PII),
        "e_chain_of_3_reading_2_fields" => CHAIN_OF_3.to_string(),
        "f_pack_of_4" => PACK.to_string(),
        "d_native_redact" => {
            let msg = message();
            for _ in 0..n {
                black_box(twinguard_bench_counted_native(black_box(&msg.payload)));
            }
            return true;
        }
        other => panic!(
            "EVALUATE_COUNT: no scenario {other:?} (a_allow_all_reuse, b_pii_redact_reuse, \
             d_native_redact, e_chain_of_3_reading_2_fields, f_pack_of_4)"
        ),
    };
    let rt = small(&config);
    // Rising sequence numbers and fresh times, as in `f_pack_of_4` (replay-guard needs them).
    let messages: Vec<Message> = (0..=n as u64).map(pack_message).collect();
    let first = rt.evaluate(&messages[0]);
    assert!(first.action.forwards(), "{first:?}");
    for m in &messages[1..] {
        black_box(twinguard_bench_counted_evaluate(&rt, black_box(m)));
    }
    true
}

criterion_group!(benches, bench);

fn main() {
    if count() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
