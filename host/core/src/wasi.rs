//! The WASI surface a policy sees, bounded by its limits.
//!
//! WASI p2 is linked deny-by-default (no preopens, no environment, no sockets), but three of
//! its calls can still make the host work without bound on a guest's behalf, outside the
//! reach of fuel and the epoch deadline (both stop guest code only, never a host call):
//!
//! - **timers**: `monotonic-clock.subscribe-duration` / `subscribe-instant` give a pollable
//!   that `pollable.block` or `poll` sleep on, for as long as the guest asked (a 2^64 ns timer
//!   never returns). A policy judges a message; it has no reason to wait. Both calls are
//!   refused: the policy faults with [`Fault::HostCall`](crate::Fault::HostCall) naming the
//!   call. `now` and `resolution` stay. With no timer to subscribe to, no pollable a guest can
//!   reach ever blocks (stdin is empty, stdout and stderr are always ready).
//! - **random bytes**: `get-random-bytes` / `get-insecure-random-bytes` allocate and fill as
//!   many bytes as asked (64 MiB took ~200 ms before anything could stop it). Calls are capped
//!   at [`MAX_RANDOM_BYTES`]; a larger one faults the policy. A hash map's seed or a nonce is
//!   a few bytes.
//!
//! And every clock and random source is **derived from the message** (contract 0.2), so a
//! decision replays bit for bit:
//!
//! - `wall-clock.now` reads the message's received time; `monotonic-clock.now` the same instant
//!   in nanoseconds (so differences between messages are real durations);
//! - `random` and `insecure` yield a ChaCha8 stream seeded with the message's seed
//!   ([`Message::seed`](crate::Message::seed)); `insecure-seed` is its first two words.
//!
//! During `init` the clocks read zero and the stream is seeded from the module's digest. WASI
//! asks deterministic hosts to omit `get-random-bytes` rather than make it deterministic; Rust's
//! standard library imports it, so omitting it would refuse every Rust policy. A policy judges
//! messages; it has no secrets to generate, and replay matters more.
//!
//! The overrides shadow the definitions `wasmtime_wasi::p2::add_to_linker_sync` made, under the
//! same interface names, so a guest built against any 0.2.x WASI resolves to them.

use rand_chacha::rand_core::RngCore as _;
use wasmtime::component::{ComponentType, Linker, Lower};

use crate::policy::HostState;

/// The most bytes one `get-random-bytes` or `get-insecure-random-bytes` call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The WASI version wasmtime-wasi 48 links (`src/p2/wit/deps/*.wit`); imports of any earlier
/// 0.2.x resolve to it.
const WASI: &str = "0.2.12";

/// A host call the host refused to make for a policy: the policy faults with this text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

/// Replaces the WASI calls that could block or allocate without bound (see the module docs).
/// Call after `wasmtime_wasi::p2::add_to_linker_sync`.
pub(crate) fn bound(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    {
        let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI}"))?;
        for call in ["subscribe-duration", "subscribe-instant"] {
            clock.func_new(call, move |_, _, _, _| {
                Err(Refused(format!(
                    "wasi:clocks/monotonic-clock.{call} refused: a policy may not wait on a \
                     timer (its deadline could not hold)"
                ))
                .into())
            })?;
        }
    }
    {
        let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI}"))?;
        clock.func_wrap("now", |store, (): ()| {
            Ok((store.data().now_ms().saturating_mul(1_000_000),))
        })?;
        let mut wall = linker.instance(&format!("wasi:clocks/wall-clock@{WASI}"))?;
        wall.func_wrap("now", |store, (): ()| {
            let ms = store.data().now_ms();
            Ok((Datetime {
                seconds: ms / 1000,
                // Below 1,000,000,000: fits.
                nanoseconds: u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
            },))
        })?;
    }
    let mut random = linker.instance(&format!("wasi:random/random@{WASI}"))?;
    random.func_wrap("get-random-bytes", |mut store, (len,): (u64,)| {
        random_bytes(store.data_mut(), "wasi:random/random.get-random-bytes", len)
    })?;
    random.func_wrap("get-random-u64", |mut store, (): ()| {
        Ok((store.data_mut().rng().next_u64(),))
    })?;
    let mut insecure = linker.instance(&format!("wasi:random/insecure@{WASI}"))?;
    insecure.func_wrap("get-insecure-random-bytes", |mut store, (len,): (u64,)| {
        random_bytes(
            store.data_mut(),
            "wasi:random/insecure.get-insecure-random-bytes",
            len,
        )
    })?;
    insecure.func_wrap("get-insecure-random-u64", |mut store, (): ()| {
        Ok((store.data_mut().rng().next_u64(),))
    })?;
    let mut seed = linker.instance(&format!("wasi:random/insecure-seed@{WASI}"))?;
    seed.func_wrap("insecure-seed", |mut store, (): ()| {
        let rng = store.data_mut().rng();
        Ok(((rng.next_u64(), rng.next_u64()),))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// WASI's `wall-clock.datetime`.
#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

fn random_bytes(state: &mut HostState, call: &str, len: u64) -> wasmtime::Result<(Vec<u8>,)> {
    if len > MAX_RANDOM_BYTES {
        return Err(Refused(format!(
            "{call} of {len} bytes refused: at most {MAX_RANDOM_BYTES} bytes per call"
        ))
        .into());
    }
    // Checked against MAX_RANDOM_BYTES just above, so it fits.
    let mut bytes = vec![0_u8; usize::try_from(len).unwrap_or(0)];
    state.rng().fill_bytes(&mut bytes);
    Ok((bytes,))
}
