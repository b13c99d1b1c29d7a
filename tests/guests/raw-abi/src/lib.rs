//! A hostile guest no SDK could produce: it exports `init` and `evaluate` by hand, in the
//! canonical ABI, and returns what generated glue never would. Above all values whose strings
//! (and lists) all alias one buffer in its memory: a host that copies each string out as it
//! lifts the value pays for every alias, with 16 MiB of guest memory terabytes. The host must
//! bound what it copies before it copies it and fault the policy, not run out of memory.
//!
//! `config` key `bomb` picks the value (`init` answers with an empty manifest otherwise):
//! - `init-fields`, `init-metrics`: a manifest whose field pointers or metric names alias;
//! - `init-flags`: a manifest whose envelope flags set bits the contract does not define;
//! - `alerts`: `evaluate` allows, with `count` alerts whose code and detail alias one
//!   `len`-byte string;
//! - `edits`: `evaluate` redacts, with `count` edits whose pointer and mask alias;
//! - `quarantine`: `evaluate` quarantines with a `len`-byte reason (no alias: one string);
//! - `bad-list`: an alert list whose length runs past the memory;
//! - `bad-utf8`: a quarantine reason that is not UTF-8;
//! - `bad-case`: a verdict case the contract does not have;
//! - `bad-severity`: an alert verdict whose severity is not one of the five;
//! - `misaligned`: an alert list at an address not a multiple of 4;
//! - `realloc-oob`, `realloc-loop`, `realloc-trap`: once `init` has run, the guest's own
//!   `cabi_realloc`, through which the host hands over every message's strings and lists,
//!   answers an address past the memory, never returns, or traps (the manifest declares the
//!   device id, so every call needs one).
//!
//! `count` and `len` are decimal (defaults 100000 and 1 MiB).

#![deny(unsafe_code)]

// Only for the contract's type information (the component-type custom section) and the
// `cabi_realloc` the host lowers the config and the message through.
#[allow(
    unsafe_code,
    missing_docs,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "policy",
    });
}

/// What `init` read from the config, for `evaluate`.
struct Bomb {
    kind: String,
    count: u32,
    len: u32,
}

thread_local! {
    static BOMB: std::cell::RefCell<Option<Bomb>> = const { std::cell::RefCell::new(None) };
}

/// A buffer that lives as long as the instance; its address in linear memory.
fn leak_bytes(len: u32, fill: u8) -> u32 {
    let buf: &'static mut [u8] = vec![fill; len as usize].leak();
    addr(buf.as_ptr())
}

/// `words` little-endian 32-bit words, leaked; their address (4-aligned, as lists need).
fn leak_words(words: Vec<u32>) -> u32 {
    let buf: &'static mut [u32] = words.leak();
    addr(buf.as_ptr().cast())
}

fn addr(p: *const u8) -> u32 {
    // A wasm32 address fits; elsewhere (clippy's host build) the value is never used.
    u32::try_from(p as usize).unwrap_or(0)
}

/// `n` copies of one record's words.
fn repeat(record: &[u32], n: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(record.len() * n as usize);
    for _ in 0..n {
        out.extend_from_slice(record);
    }
    out
}

/// `init`'s answer: `result<manifest, string>`, 32 bytes (discriminant, then the manifest at
/// offset 4: fields at 4, envelope at 12, keep-last at 16, metrics at 24).
fn manifest(kind: &str, count: u32, len: u32) -> u32 {
    let (mut fields, mut metrics) = ((0, 0), (0, 0));
    match kind {
        "init-fields" => {
            // A valid pointer ("////…"), `count` times.
            let s = leak_bytes(len, b'/');
            fields = (leak_words(repeat(&[s, len], count)), count);
        }
        "init-metrics" => {
            let s = leak_bytes(len, b'm');
            // metric: name (0), kind (8), unit (12), description (20); 28 bytes.
            metrics = (
                leak_words(repeat(&[s, len, 0, s, len, s, len], count)),
                count,
            );
        }
        _ => {}
    }
    let envelope = match kind {
        "init-flags" => 0xff,
        k if k.starts_with("realloc-") => 1,
        _ => 0,
    };
    leak_words(vec![
        0, fields.0, fields.1, envelope, 0, 0, metrics.0, metrics.1,
    ])
}

/// `evaluate`'s answer: `decision`, 32 bytes (the verdict's case at 0, its payload at 4,
/// the alert list at 24).
fn decision(b: &Bomb) -> u32 {
    let mut d = [0u32; 8];
    match b.kind.as_str() {
        "alerts" => {
            let s = leak_bytes(b.len, b'x');
            // alert: severity (0), code (4), detail (12); 20 bytes.
            d[6] = leak_words(repeat(&[0, s, b.len, s, b.len], b.count));
            d[7] = b.count;
        }
        "edits" => {
            let s = leak_bytes(b.len, b'/');
            // edit: pointer (0), action's case (8; 1 = mask), mask (12); 20 bytes.
            d[0] = 1;
            d[1] = leak_words(repeat(&[s, b.len, 1, s, b.len], b.count));
            d[2] = b.count;
        }
        "quarantine" => {
            d[0] = 2;
            d[1] = leak_bytes(b.len, b'q');
            d[2] = b.len;
        }
        "bad-list" => {
            d[6] = leak_bytes(20, 0);
            d[7] = u32::MAX / 20;
        }
        "bad-utf8" => {
            d[0] = 2;
            d[1] = leak_words(vec![u32::from_le_bytes([b'o', b'k', 0xff, 0xfe])]);
            d[2] = 4;
        }
        "bad-case" => d[0] = 7,
        "bad-severity" => {
            // alert(alert): severity at 4, code at 8, detail at 16.
            d[0] = 3;
            d[1] = 99;
        }
        "misaligned" => {
            let s = leak_bytes(4, b'x');
            d[6] = leak_words(vec![0, s, 4, s, 4, 0]) + 2;
            d[7] = 1;
        }
        _ => {}
    }
    leak_words(d.to_vec())
}

/// The config's value for `key`, from the lowered `list<tuple<string, string>>`.
fn config_value(
    entries: &[[u32; 4]],
    key: &str,
    read: impl Fn(u32, u32) -> String,
) -> Option<String> {
    entries
        .iter()
        .find(|e| read(e[0], e[1]) == key)
        .map(|e| read(e[2], e[3]))
}

#[allow(unsafe_code)]
mod exports {
    use std::alloc::{alloc, realloc, Layout};
    use std::sync::atomic::{AtomicU8, Ordering};

    /// What the generated glue does before any export's code: run the constructors once.
    fn ctors() {
        #[cfg(target_arch = "wasm32")]
        wit_bindgen::rt::run_ctors_once();
    }

    /// `init(config: list<tuple<string, string>>) -> result<manifest, string>`.
    #[export_name = "twinguard:policy/handler@0.2.0#init"]
    extern "C" fn init(ptr: *const [u32; 4], len: usize) -> u32 {
        ctors();
        // SAFETY: the host lowered `len` entries at `ptr`, each four words (two strings);
        // the strings' bytes are valid UTF-8 it wrote.
        let entries = unsafe { std::slice::from_raw_parts(ptr, len) };
        let read = |p: u32, n: u32| {
            // SAFETY: `p` and `n` are one of those strings' address and length.
            let bytes = unsafe { std::slice::from_raw_parts(p as usize as *const u8, n as usize) };
            String::from_utf8_lossy(bytes).into_owned()
        };
        let kind = super::config_value(entries, "bomb", read).unwrap_or_default();
        let number = |key, default| {
            super::config_value(entries, key, read)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (count, len) = (number("count", 100_000), number("len", 1 << 20));
        let out = super::manifest(&kind, count, len);
        let realloc = match kind.as_str() {
            "realloc-oob" => REALLOC_OOB,
            "realloc-loop" => REALLOC_LOOP,
            "realloc-trap" => REALLOC_TRAP,
            _ => REALLOC_HONEST,
        };
        super::BOMB.with(|b| {
            *b.borrow_mut() = Some(super::Bomb { kind, count, len });
        });
        REALLOC.store(realloc, Ordering::Relaxed);
        out
    }

    const REALLOC_HONEST: u8 = 0;
    const REALLOC_OOB: u8 = 1;
    const REALLOC_LOOP: u8 = 2;
    const REALLOC_TRAP: u8 = 3;
    /// How `cabi_realloc` behaves; honest until `init` says otherwise.
    static REALLOC: AtomicU8 = AtomicU8::new(REALLOC_HONEST);

    /// The allocator the host lowers arguments through (instead of wit-bindgen's).
    #[export_name = "cabi_realloc"]
    extern "C" fn cabi_realloc(
        old: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        match REALLOC.load(Ordering::Relaxed) {
            REALLOC_OOB => return usize::MAX as *mut u8,
            REALLOC_LOOP => {
                let mut spins = 0u64;
                loop {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            REALLOC_TRAP => std::process::abort(),
            _ => {}
        }
        if new_len == 0 {
            return align as *mut u8;
        }
        let Ok(layout) = Layout::from_size_align(new_len, align) else {
            std::process::abort()
        };
        // SAFETY: the canonical ABI passes back, with its size and alignment, a block this
        // function returned (or null with size 0 for a new one).
        unsafe {
            if old.is_null() || old_len == 0 {
                alloc(layout)
            } else {
                realloc(
                    old,
                    Layout::from_size_align_unchecked(old_len, align),
                    new_len,
                )
            }
        }
    }

    /// `evaluate(message: message) -> decision`; the message's 16 flat values are unread.
    #[export_name = "twinguard:policy/handler@0.2.0#evaluate"]
    #[allow(clippy::too_many_arguments)]
    extern "C" fn evaluate(
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u64,
        _: u64,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
        _: u32,
    ) -> u32 {
        ctors();
        super::BOMB.with(|b| match &*b.borrow() {
            Some(bomb) => super::decision(bomb),
            None => super::leak_words(vec![0; 8]),
        })
    }
}
