//! What one message costs the allocator once a runtime is warm: the judging path keeps its
//! buffers (the payload's index, the context's names, each reused instance's call record), so
//! a chain that reads declared fields allocates only for what it hands out. Counted, not timed:
//! the figure is the same on a busy machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;
use twinguard::Message;
use twinguard_tests::{json, runtime, PACK};

/// Counts the allocations of the thread that turned counting on.
struct Counting;

thread_local! {
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn counted() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNT.try_with(|c| c.set(c.get().map(|n| n + 1)));
}

// SAFETY: every call goes to `System` unchanged; counting touches a const thread-local only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.set(Some(0));
    f();
    COUNT.take().unwrap_or_default()
}

/// Three policies reading two declared fields each, none of them text: the evaluation's own
/// allocations are the outcome's trace and nothing else.
const CHAIN: &str = "[[policy]]\nname = \"r1\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/seq,/site/line\"\n\
     [[policy]]\nname = \"r2\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/readings/s10,/ok\"\n\
     [[policy]]\nname = \"r3\"\npath = \"@hostile\"\n[policy.config]\nmode = \"read\"\nfields = \"/ts,/readings/s35\"\n\
     [[route]]\nfilter = \"#\"\nchain = [\"r1\", \"r2\", \"r3\"]\n";

fn message(seq: u64) -> Message {
    let mut m = json(&json!({
        "device": "press-07", "seq": seq, "ts": 1_764_000_000_123_u64, "ok": true,
        "site": {"plant": "north", "line": 3},
        "readings": {"s10": 20.5, "s35": 31.25, "s36": 1},
    }));
    m.device_id = "press-07".into();
    m.topic = "plant/press-07/telemetry".into();
    m
}

#[test]
fn a_warm_chain_allocates_only_the_outcome_s_trace() {
    let rt = runtime(CHAIN);
    // Warm: the first calls fill the instance pools and the thread's spare buffers.
    for seq in 0..4 {
        assert_eq!(rt.evaluate(&message(seq)).trace.len(), 3);
    }
    let msg = message(9);
    let mut trace = 0;
    let n = allocations(|| trace = rt.evaluate(&msg).trace.len());
    assert_eq!(trace, 3);
    assert!(
        n <= 1,
        "one warm evaluation of the chain allocated {n} times"
    );
}

#[test]
fn a_text_field_reuses_its_buffer_and_a_long_topic_is_not_kept() {
    let rt = runtime(&CHAIN.replace("/ok", "/device"));
    for seq in 0..4 {
        rt.evaluate(&message(seq));
    }
    let msg = message(9);
    let n = allocations(|| drop(rt.evaluate(&msg)));
    assert!(n <= 1, "with one text field: {n} allocations");
    // A topic over the kept size is copied into a buffer of its own every time.
    let mut long = message(10);
    long.topic = format!("plant/press-07/{}", "x".repeat(2000));
    rt.evaluate(&long);
    let n = allocations(|| drop(rt.evaluate(&long)));
    assert!(n >= 3, "a 2 KB topic was kept: {n} allocations");
}

/// [`message`] with personal data under `/owner` and a time that moves on with `seq`.
fn owned(seq: u64) -> Message {
    let mut m = message(seq);
    let mut doc: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
    doc["ts"] = json!(1_764_000_000_123_u64 + seq);
    doc["owner"] = json!({"name": "Ann Smith", "email": "ann@example.org", "phone": "+44 1234"});
    m.payload = serde_json::to_vec(&doc).unwrap_or_default().into();
    m.received_at_ms = 1_764_000_000_123 + seq;
    m
}

#[test]
fn a_warm_pack_that_redacts_allocates_only_what_crosses_the_boundary() {
    let rt = runtime(PACK);
    for seq in 0..4 {
        assert!(rt.evaluate(&owned(seq)).redacted);
    }
    let msg = owned(9);
    let mut redacted = false;
    let n = allocations(|| redacted = rt.evaluate(&msg).redacted);
    assert!(redacted);
    // The outcome's trace and the redacted payload (2); replay-guard's state key, read and
    // written, the value it writes and the copy of the value it reads (4: wasmtime lifts
    // them into host memory); pii-redact's edit list, two pointers and a mask text (4, lifted
    // too). The redaction's marks, paths and masks, the declared text fields and the state
    // map's key allocate nothing.
    assert!(
        n <= 10,
        "one warm evaluation of the pack allocated {n} times"
    );
}
