//! A test guest that misbehaves on purpose, to prove the host contains it.
//!
//! The config key `mode` (default `allow`) picks the behaviour at `init`; `bytes`, `fields` and
//! `field` tune some modes. Every probe of the sandbox answers so that a test can tell
//! "contained" from "escaped" without reading logs: a contained probe quarantines with the
//! errors it got, an escape raises a `critical` alert with code `escaped`.
//!
//! | mode | behaviour |
//! |---|---|
//! | `allow` | behaves: allows every message |
//! | `loop` | spins forever in `evaluate` (fuel / deadline) |
//! | `sleep-spin` | busy-waits on the monotonic clock for 10 s (the deadline stops it; under 0.2 the clock reads the message time and never advances) |
//! | `memory-bomb` | allocates and touches 1 MiB chunks forever, holding them (memory limit) |
//! | `recurse` | unbounded recursion with a 4 KiB frame (stack overflow) |
//! | `panic` | panics with "hostile panic" |
//! | `probe-file` | reads `/etc/passwd`, writes `/tmp/x` |
//! | `probe-env` | counts environment variables and arguments |
//! | `probe-socket` | TCP connect to 127.0.0.1:1, UDP bind 0.0.0.0:0 |
//! | `state` | increments the u64 (LE) under state key `count`; alert `count` with the new value |
//! | `state-hog` | stores `bytes` (default 1 000 000) bytes; quarantine if refused, alert `stored` if not |
//! | `big-decision` | alert whose detail is `bytes` (default 1 000 000) long |
//! | `stdout` | 10 000 lines each to stdout and stderr, then allows |
//! | `redact-text` | redacts `/x` whatever the content type |
//! | `bad-pointer` | redacts the pointer `no-slash` |
//! | `fail-init` | `init` fails with "hostile init refused" |
//! | `fields` | alert `fields`, detail `/a=Integer(3);/b=None;…` for the pointers in `fields` |
//! | `echo` | alert `echo`, detail `device=… topic=… ct=… len=… attrs=…` |
//! | `read` | declares the pointers in `fields`, reads them by handle (`Message::get`, as the shipped policies do) and allows (a cheap, realistic reader for benchmarks) |
//! | `read-dynamic` | looks the pointers in `fields` up through the host without declaring them (0.1's way), allows |
//! | `memory-count` | alert `memory-count` with a counter kept in the instance's own memory (isolation) |
//! | `burn` | runs `bytes` iterations of a loop the optimiser keeps, then allows (fuel-exact work) |
//! | `sleep` | `std::thread::sleep` for 3 s (a blocking WASI timer), then quarantines |
//! | `timer-forever` | blocks on a monotonic-clock pollable of 2^64-1 ns, then quarantines |
//! | `random-flood` | asks WASI `get-random-bytes` for `bytes` (default 64 MiB) in one call |
//! | `tiny-keys` | stores 1-byte values under `bytes` (default 100 000) distinct small keys, until refused; alert `stored` with the count |
//! | `redact-many` | redacts `bytes` (default 10 000) pointers `/k0`, `/k1`, … |
//! | `fault-if` | panics when the message's `/boom` is `true`, allows otherwise |
//! | `control-chars` | logs, and alerts with a code and detail, full of CR, LF, ESC, NUL and U+2028 |
//! | `panic-control` | panics with a message full of CR, LF, ESC and NUL |
//! | `declared` | declares the pointers in `fields` (comma-separated) and reads them by handle (`Message::get`, the values the host handed over in the call); alert `declared`, detail `/p=<Value debug> /q=absent` (space-separated, declared order), or `error: <FieldError debug>` when the payload has no fields |
//! | `envelope` | declares nothing; alert `envelope`, detail `device=<device id> topic=<topic>`, both fetched on request (`host.device-id`, `host.topic`) |
//! | `device` | reads the device's registry entry; alert `device`, detail `class=… k=v …` or `unknown` |
//! | `last` | keeps the last value of the pointer in `field` (default `/t`); alert `last`, detail `last=<Value debug>` or `last=none` |
//! | `metrics` | declares counter `messages` (unit `1`) and histogram `payload.size` (unit `By`); adds 1 and records the payload length, allows |
//! | `metric-bad-index` | calls `host.counter-add(99, 1)` (raw bindings; it declared no metric): the host must fault it; quarantines "counter 99 accepted" if not |
//! | `metric-nan` | declares histogram `values`, records NaN in it: the host must fault it; quarantines "NaN accepted" if not |
//! | `global-count` | increments the policy-wide u64 (LE) under global key `count` with `state::global::update` (compare-and-swap, retried); alert `count`, detail the new value; quarantine `global state: …` if refused |
//! | `global-hog` | stores `bytes` (default 1 000 000) bytes of policy-wide state under `hog`; quarantine `global state: <error>` if refused, alert `stored` (`<n> bytes`) if not |
//! | `clock` | alert `clock`, detail `<SystemTime ms since the epoch> <first u64 of WASI get-random-u64>` (both derived from the message by the host) |
//! | `bad-manifest-pointer` | `init` answers a manifest whose `fields` is `["no-slash"]` (raw bindings, past the SDK's check): the host must fail the load |
//! | `too-many-fields` | `init` answers a manifest with 65 fields `/f0` … `/f64` (raw bindings): the host must fail the load |
//! | `bad-metric` | `init` answers a manifest with one counter named `Bad Name` (raw bindings): the host must fail the load |
//!
//! The last three modes, and `metric-bad-index`, go around the SDK's own checks on purpose (the
//! SDK would refuse them in the guest) so that the host's checks are what a test exercises: the
//! component exports its own `handler` that runs the SDK's glue, then spoils the manifest.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use twinguard_guest::bindings::twinguard::policy::{host as raw_host, types as wit};
use twinguard_guest::declare::{self, Field};
use twinguard_guest::{state, Config, Decision, Message, Policy, Severity};

const MODES: &[&str] = &[
    "allow",
    "loop",
    "sleep-spin",
    "memory-bomb",
    "recurse",
    "panic",
    "probe-file",
    "probe-env",
    "probe-socket",
    "state",
    "state-hog",
    "big-decision",
    "stdout",
    "redact-text",
    "bad-pointer",
    "fail-init",
    "fields",
    "echo",
    "read",
    "memory-count",
    "burn",
    "sleep",
    "timer-forever",
    "random-flood",
    "tiny-keys",
    "redact-many",
    "fault-if",
    "control-chars",
    "panic-control",
    "read-dynamic",
    "init-print",
    "declared",
    "envelope",
    "device",
    "last",
    "metrics",
    "metric-bad-index",
    "metric-nan",
    "global-count",
    "global-hog",
    "clock",
    "bad-manifest-pointer",
    "too-many-fields",
    "bad-metric",
];

/// Text that forges log lines and terminal output if a sink passes it on raw.
const FORGERY: &str = "ok\r\n2026-12-04T00:00:00Z INFO forged line\x1b[2J\x00\u{2028}end";

thread_local! {
    static SETUP: RefCell<Setup> = RefCell::new(Setup::default());
    /// Lives as long as the instance: counts messages in `reuse`, stays at 1 in `fresh`.
    static MEMORY_COUNT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[derive(Default)]
struct Setup {
    mode: String,
    bytes: usize,
    fields: Vec<String>,
    /// The handles of `fields`, in `read` and `declared` modes.
    declared: Vec<Field>,
    last: Option<declare::Last>,
    counter: Option<declare::Counter>,
    histogram: Option<declare::Histogram>,
}

struct Hostile;

impl Policy for Hostile {
    fn init(config: &Config) -> Result<(), String> {
        let mode = config.get("mode").unwrap_or("allow");
        if !MODES.contains(&mode) {
            return Err(format!(
                "unknown mode `{mode}`; known modes: {}",
                MODES.join(", ")
            ));
        }
        if mode == "fail-init" {
            return Err("hostile init refused".to_owned());
        }
        if mode == "init-print" {
            // Output during `init` opens WASI streams: a snapshot must not carry their handles.
            println!("hostile init says hello");
            eprintln!("hostile init says hello on stderr");
        }
        let mut setup = Setup {
            mode: mode.to_owned(),
            bytes: config.parse("bytes")?.unwrap_or(1_000_000),
            fields: config
                .get("fields")
                .map(|list| list.split(',').map(|p| p.trim().to_owned()).collect())
                .unwrap_or_default(),
            declared: Vec::new(),
            last: None,
            counter: None,
            histogram: None,
        };
        match mode {
            "read" | "declared" => {
                setup.declared = declare::fields(setup.fields.iter().map(String::as_str))?;
            }
            "last" => {
                let field = config.get("field").unwrap_or("/t");
                setup.last = Some(declare::keep_last(field)?);
            }
            "metrics" => {
                setup.counter = Some(declare::counter("messages", "1", "messages seen")?);
                setup.histogram = Some(declare::histogram("payload.size", "By", "payload sizes")?);
            }
            "metric-nan" => {
                setup.histogram = Some(declare::histogram("values", "", "")?);
            }
            // "bad-manifest-pointer", "too-many-fields", "bad-metric": see `Export::init`.
            _ => {}
        }
        SETUP.set(setup);
        Ok(())
    }

    fn evaluate(msg: &Message) -> Decision {
        SETUP.with_borrow(|setup| evaluate(setup, msg))
    }
}

/// The component's `handler`: the SDK's glue (what `export_policy!` exports), with the
/// manifest spoiled afterwards in the modes that test the host's checks of it.
struct Export;

impl twinguard_guest::bindings::Guest for Export {
    fn init(config: Vec<(String, String)>) -> Result<wit::Manifest, String> {
        let mut manifest = twinguard_guest::__private::init::<Hostile>(config)?;
        match SETUP.with_borrow(|setup| setup.mode.clone()).as_str() {
            "bad-manifest-pointer" => manifest.fields = vec!["no-slash".to_owned()],
            "too-many-fields" => manifest.fields = (0..65).map(|i| format!("/f{i}")).collect(),
            "bad-metric" => manifest.metrics.push(wit::Metric {
                name: "Bad Name".to_owned(),
                kind: wit::MetricKind::Counter,
                unit: String::new(),
                description: "a name the host must refuse".to_owned(),
            }),
            _ => {}
        }
        Ok(manifest)
    }

    fn evaluate(message: wit::Message) -> wit::Decision {
        twinguard_guest::__private::evaluate::<Hostile>(message)
    }
}

twinguard_guest::bindings::__export_twinguard_policy!(Export with_types_in twinguard_guest::bindings);

fn evaluate(setup: &Setup, msg: &Message) -> Decision {
    match setup.mode.as_str() {
        "loop" => spin(),
        "sleep-spin" => sleep_spin(),
        "memory-bomb" => memory_bomb(),
        "recurse" => {
            let depth = recurse(black_box(0));
            Decision::quarantine(format!("recursion ended at {depth}"))
        }
        "panic" => panic!("hostile panic"),
        "probe-file" => probe_file(),
        "probe-env" => probe_env(),
        "probe-socket" => probe_socket(),
        "state" => count(),
        "state-hog" => match state::set("hog", &vec![0x5a; setup.bytes]) {
            Ok(()) => Decision::alert(Severity::Info, "stored", format!("{} bytes", setup.bytes)),
            Err(err) => Decision::quarantine(format!("state: {err}")),
        },
        "big-decision" => Decision::alert(Severity::Info, "big", "x".repeat(setup.bytes)),
        "stdout" => {
            for line in 0..10_000 {
                println!("hostile stdout line {line}");
                eprintln!("hostile stderr line {line}");
            }
            Decision::allow()
        }
        "redact-text" => Decision::redact().remove("/x"),
        "bad-pointer" => Decision::redact().remove("no-slash"),
        "fields" => fields(&setup.fields, msg),
        "echo" => Decision::alert(
            Severity::Info,
            "echo",
            format!(
                "device={} topic={} ct={} len={} attrs={}",
                msg.device_id(),
                msg.topic(),
                msg.content_type(),
                msg.payload().len(), // through host.payload, not payload_len
                msg.attributes().len()
            ),
        ),
        "read" => {
            for &field in &setup.declared {
                black_box(msg.get(field).ok());
            }
            Decision::allow()
        }
        "read-dynamic" => {
            for pointer in &setup.fields {
                black_box(msg.field(pointer).ok());
            }
            Decision::allow()
        }
        "declared" => {
            let detail = match setup
                .fields
                .iter()
                .zip(&setup.declared)
                .map(|(p, &field)| msg.get(field).map(|v| (p, v)))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(values) => values
                    .iter()
                    .map(|(p, v)| match v {
                        Some(v) => format!("{p}={v:?}"),
                        None => format!("{p}=absent"),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("error: {e:?}"),
            };
            Decision::alert(Severity::Info, "declared", detail)
        }
        "envelope" => Decision::alert(
            Severity::Info,
            "envelope",
            format!("device={} topic={}", msg.device_id(), msg.topic()),
        ),
        "device" => {
            let detail = match msg.device() {
                Some(d) => std::iter::once(format!("class={}", d.class()))
                    .chain(d.attributes().iter().map(|(k, v)| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" "),
                None => "unknown".to_owned(),
            };
            Decision::alert(Severity::Info, "device", detail)
        }
        "last" => {
            let detail = match setup.last.and_then(|l| msg.last(l)) {
                Some(v) => format!("last={v:?}"),
                None => "last=none".to_owned(),
            };
            Decision::alert(Severity::Info, "last", detail)
        }
        "metrics" => {
            if let (Some(c), Some(h)) = (setup.counter, setup.histogram) {
                c.add(1);
                h.record(msg.payload_len() as f64);
            }
            Decision::allow()
        }
        "metric-bad-index" => {
            raw_host::counter_add(99, 1);
            Decision::quarantine("counter 99 accepted")
        }
        "metric-nan" => {
            if let Some(h) = setup.histogram {
                h.record(f64::NAN);
            }
            Decision::quarantine("NaN accepted")
        }
        "global-count" => {
            let stored = state::global::update("count", |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_le_bytes);
                Some((n + 1).to_le_bytes().to_vec())
            });
            match stored {
                Ok(Some(bytes)) => {
                    let n = <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_le_bytes);
                    Decision::alert(Severity::Info, "count", n.to_string())
                }
                Ok(None) => Decision::quarantine("count vanished"),
                Err(e) => Decision::quarantine(format!("global state: {e}")),
            }
        }
        "global-hog" => match state::global::set("hog", &vec![0x5a; setup.bytes]) {
            Ok(()) => Decision::alert(Severity::Info, "stored", format!("{} bytes", setup.bytes)),
            Err(err) => Decision::quarantine(format!("global state: {err}")),
        },
        "clock" => {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let random = wasip2::random::random::get_random_u64();
            Decision::alert(Severity::Info, "clock", format!("{ms} {random}"))
        }
        "memory-count" | "init-print" => {
            let n = MEMORY_COUNT.get() + 1;
            MEMORY_COUNT.set(n);
            Decision::alert(Severity::Info, "memory-count", n.to_string())
        }
        "burn" => {
            let mut x = 0_u64;
            for i in 0..setup.bytes {
                x = black_box(x.wrapping_add(i as u64));
            }
            black_box(x);
            Decision::allow()
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(3));
            Decision::quarantine("slept 3 s: no deadline stopped it")
        }
        "timer-forever" => {
            wasip2::clocks::monotonic_clock::subscribe_duration(u64::MAX).block();
            Decision::quarantine("a 2^64 ns timer returned")
        }
        "random-flood" => {
            let bytes = wasip2::random::random::get_random_bytes(setup.bytes as u64);
            Decision::quarantine(format!("got {} random bytes", bytes.len()))
        }
        "tiny-keys" => tiny_keys(setup.bytes),
        "redact-many" => {
            (0..setup.bytes).fold(Decision::redact(), |d, i| d.remove(format!("/k{i}")))
        }
        "fault-if" => {
            if msg
                .field("/boom")
                .ok()
                .flatten()
                .is_some_and(|v| v.as_bool() == Some(true))
            {
                panic!("boom requested by {}", msg.device_id());
            }
            Decision::allow()
        }
        "control-chars" => {
            twinguard_guest::log::warn(FORGERY);
            Decision::alert(Severity::High, FORGERY, FORGERY)
        }
        "panic-control" => panic!("{FORGERY}"),
        // "allow", and "fail-init" (never initialised, so never evaluated).
        _ => Decision::allow(),
    }
}

/// A loop the optimiser cannot remove: every iteration goes through `black_box`.
fn spin() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Busy-waits on the monotonic clock (WASI `monotonic-clock`) for 10 s.
fn sleep_spin() -> Decision {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        black_box(());
    }
    Decision::quarantine("sleep-spin ran 10 s: no deadline stopped it")
}

/// Allocates 1 MiB chunks forever, writing every page so they are really used, and keeps them.
fn memory_bomb() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0_u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 0xa5;
        }
        held.push(black_box(chunk));
    }
}

/// Unbounded recursion with a 4 KiB stack array per frame. The work after the call and the
/// `black_box`es keep it from becoming a loop or a tail call; the impossible exit keeps rustc's
/// `unconditional_recursion` lint quiet.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0_u8; 4096];
    let slot = usize::try_from(depth % 4096).unwrap_or(0);
    frame[slot] = depth.to_le_bytes()[0];
    let frame = black_box(frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)).wrapping_add(u64::from(frame[slot]))
}

fn probe_file() -> Decision {
    let read = std::fs::read("/etc/passwd");
    let write = std::fs::write("/tmp/x", b"hostile");
    match (&read, &write) {
        (Ok(bytes), _) => Decision::alert(
            Severity::Critical,
            "escaped",
            format!("file read succeeded ({} bytes of /etc/passwd)", bytes.len()),
        ),
        (_, Ok(())) => Decision::alert(Severity::Critical, "escaped", "file write succeeded"),
        (Err(_), Err(_)) => Decision::quarantine(format!("file: read {read:?}, write {write:?}")),
    }
}

fn probe_env() -> Decision {
    let vars = std::env::vars().count();
    let args = std::env::args().count();
    if vars > 0 || args > 0 {
        Decision::alert(
            Severity::Critical,
            "escaped",
            format!("env: {vars} variables and {args} arguments visible"),
        )
    } else {
        Decision::quarantine("env: empty")
    }
}

fn probe_socket() -> Decision {
    let tcp = std::net::TcpStream::connect("127.0.0.1:1");
    let udp = std::net::UdpSocket::bind("0.0.0.0:0");
    match (&tcp, &udp) {
        (Ok(_), _) => Decision::alert(Severity::Critical, "escaped", "tcp connect succeeded"),
        (_, Ok(_)) => Decision::alert(Severity::Critical, "escaped", "udp bind succeeded"),
        (Err(tcp), Err(udp)) => Decision::quarantine(format!("socket: tcp {tcp:?}, udp {udp:?}")),
    }
}

/// Increments the u64 (little-endian) under `count` and reports the new value.
fn count() -> Decision {
    let previous = state::get("count")
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    let n = previous + 1;
    match state::set("count", &n.to_le_bytes()) {
        Ok(()) => Decision::alert(Severity::Info, "count", n.to_string()),
        Err(err) => Decision::quarantine(format!("state: {err}")),
    }
}

/// Stores a 1-byte value under each of `n` distinct small keys until the host refuses one.
fn tiny_keys(n: usize) -> Decision {
    for i in 0..n {
        if let Err(err) = state::set(&format!("{i:x}"), &[1]) {
            return Decision::alert(Severity::Info, "stored", format!("{i} refused: {err}"));
        }
    }
    Decision::alert(Severity::Info, "stored", format!("{n}"))
}

/// Renders what the host's lookups returned, e.g. `/a=Integer(3);/b=None;/c=Err(Unstructured)`.
fn fields(pointers: &[String], msg: &Message) -> Decision {
    let rendered: Vec<String> = pointers
        .iter()
        .map(|pointer| match msg.field(pointer) {
            Ok(Some(value)) => format!("{pointer}={value:?}"),
            Ok(None) => format!("{pointer}=None"),
            Err(err) => format!("{pointer}=Err({err:?})"),
        })
        .collect();
    Decision::alert(Severity::Info, "fields", rendered.join(";"))
}
