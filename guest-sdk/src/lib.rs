//! Write [twinguard] policies in Rust.
//!
//! A twinguard policy is a WebAssembly component (`wasm32-wasip2`) that the host calls for every
//! device message routed to it. This crate hides the component-model bindings behind a small API:
//!
//! - implement [`Configured`] ([`Configured::init`] once per instance parses the policy's
//!   configuration into settings, [`Configured::evaluate`] judges every message with them) and
//!   export it with [`export_configured!`]; or, for a policy without settings, implement
//!   [`Policy`] (two static functions) and export it with [`export_policy!`];
//! - in `init`, [`declare`] what the policy reads on every message: its fields
//!   ([`declare::field`]), envelope parts ([`declare::envelope`]), last values
//!   ([`declare::keep_last`]) and metrics ([`declare::counter`], [`declare::histogram`]). The host
//!   hands exactly that over with each message (contract `twinguard:policy@0.2.0`);
//! - read the message through [`Message`]: its envelope (device id, topic, content type,
//!   attributes; fetched on first use unless declared), the device's registry entry
//!   ([`Message::device`]), the per-message [`seed`](Message::seed), last forwarded values
//!   ([`Message::last`]) and typed fields by JSON Pointer ([`Message::field`], [`Message::f64`],
//!   [`Message::str`], …) or by declared handle ([`Message::get`], [`Message::get_f64`], …):
//!   declared ones come with the message, others are looked up by the host in its single parse
//!   of the payload, so prefer these to parsing [`Message::payload`] yourself;
//! - answer with a [`Decision`]: [`Decision::allow`], [`Decision::redact`] with
//!   [`remove`](Decision::remove) / [`mask`](Decision::mask) edits, [`Decision::quarantine`],
//!   [`Decision::alert`], plus extra alerts through [`Decision::with_alert`];
//! - with several checks per message, collect what they find in [`findings::Findings`] and let
//!   it decide: the worst finding wins, every alert is raised;
//! - keep per-device memory across messages in [`state`] (bytes, JSON, or fixed-layout binary
//!   [`state::Record`]s) and policy-wide memory in [`state::global`], read the configuration
//!   anywhere through [`config`], and write to the host log through [`log`];
//! - check the configuration when the policy loads: JSON Pointers ([`Config::pointer`],
//!   [`Config::pointers`], [`pointer`](mod@pointer)), per-metric
//!   `"/pointer" = "name=value,..."` keys ([`Config::metric_keys`], [`metric`]) and
//!   `alert | quarantine` choices ([`Config::action`]);
//! - write device-supplied text into reasons cut short ([`Quoted`], [`text`]), and payload values
//!   described, never quoted ([`Value::describe`], [`text::Described`]);
//! - look at every field of a JSON or CBOR payload, not just the named ones, with [`walk`]
//!   (every string value, or the object members, each with its JSON Pointer);
//! - with the `time` feature, read a message's local time in a named IANA zone, daylight saving
//!   included (`time::zone`, `time::local`, `time::TimeOfDay`).
//!
//! # What 0.2 asks of a policy: declare in `init`
//!
//! The contract (`twinguard:policy@0.2.0`, which this crate's version follows) has `init` answer
//! a *manifest*: what the policy reads on every message. The SDK builds it from the [`declare`]
//! calls made during `init`. Declaring is about cost, never about results:
//!
//! - a declared field is extracted by the host in one pass over the payload, shared by every
//!   policy of the chain, and handed over in the call; an undeclared lookup is one call into the
//!   host per field per message. [`Message::field`] answers the same either way, and
//!   [`Message::get`] reads a declared field by its [`Field`] handle without comparing pointers;
//! - a declared envelope part (device id, topic) is copied into every call; an undeclared one is
//!   fetched from the host the first time the message is asked for it. Declare the parts nearly
//!   every message reads (an identity check reads the device id and topic every time); leave out
//!   those only read to word a rare alert;
//! - [`declare::keep_last`] has the host keep a field's last forwarded value per device
//!   ([`Message::last`]); [`declare::counter`] and [`declare::histogram`] declare metrics the
//!   host exports under the policy's name.
//!
//! The declarations are taken during the host's `init` only; elsewhere [`declare`] returns an
//! error (never a panic). Unit tests run an `init` that declares inside [`declare::capture`].
//!
//! # Determinism
//!
//! Clocks and random sources inside a policy are derived from the message: during `evaluate`
//! the wall clock (`std::time::SystemTime`) reads [`Message::received_at_ms`], the monotonic
//! clock (`Instant`) the same instant and never advances, and WASI's random sources (behind
//! `getrandom`, `HashMap`'s keys, …) yield a stream seeded with [`Message::seed`]; during `init`
//! the clocks read zero and the stream is seeded from the module's digest. The same message, state and module give the same decision, bit for
//! bit, which is what replaying a quarantined message relies on. Measuring time inside a policy
//! is not possible, and not needed: its limits are the host's job. Use [`Message::seed`] where a
//! decision samples.
//!
//! # State and metrics
//!
//! [`state`] keeps per-device memory (scoped by the host to the message's device and to this
//! policy); [`state::global`] keeps policy-wide memory, shared by every device and every worker
//! running the policy, updated with compare-and-swap ([`state::global::update`]) so concurrent
//! workers lose no update. Both are bounded by the policy's limits: a refused write is a
//! [`StateError`], not a fault. Metrics declared in `init` are handles:
//! [`declare::Counter::add`], [`declare::Histogram::record`].
//!
//! Policies keep no per-message `self`: the host may run a policy in a fresh instance per
//! message, or reuse one instance for many messages, so anything that must outlive a message
//! belongs in [`state`] (scoped by the host to the message's device and to this policy). Statics,
//! such as the settings a [`Configured`] policy parses once in `init`, live as long as the
//! instance.
//!
//! # A complete policy
//!
//! ```no_run
//! #![deny(unsafe_code)]
//!
//! use twinguard_guest::{config, export_policy, state, Config, Decision, Message, Policy, Severity};
//!
//! /// Flags temperatures over a configured bound and strips the owner's e-mail address.
//! struct TemperatureGuard;
//!
//! impl Policy for TemperatureGuard {
//!     fn init(config: &Config) -> Result<(), String> {
//!         config.check_keys(&["max-celsius"])?;
//!         // Refuse a bad bound when the policy loads, not on the first message.
//!         config.parse::<f64>("max-celsius")?;
//!         // Read on every message: handed over with it, no host call.
//!         twinguard_guest::declare::field("/temperature")?;
//!         Ok(())
//!     }
//!
//!     fn evaluate(msg: &Message) -> Decision {
//!         // `init` validated the value, so an error cannot happen here.
//!         let max = config::parse::<f64>("max-celsius").ok().flatten().unwrap_or(80.0);
//!         let decision = Decision::redact().remove("/owner/email");
//!         let Some(celsius) = msg.f64("/temperature") else {
//!             return decision;
//!         };
//!         if celsius <= max {
//!             return decision;
//!         }
//!         let spikes = state::get_json::<u32>("spikes").unwrap_or(0) + 1;
//!         if let Err(err) = state::set_json("spikes", &spikes) {
//!             // The count is a convenience: the alert matters more than remembering it.
//!             twinguard_guest::log::warn(&format!("spike count not stored: {err}"));
//!         }
//!         decision.with_alert(
//!             Severity::High,
//!             "value-spike",
//!             format!("{} reported {celsius} °C (max {max} °C), spike #{spikes}", msg.device_id()),
//!         )
//!     }
//! }
//!
//! export_policy!(TemperatureGuard);
//! ```
//!
//! # Building
//!
//! A policy crate is a `cdylib`. Without `crate-type = ["cdylib"]` cargo builds "successfully"
//! and produces no `.wasm` at all:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! # Not published to a registry yet: depend on the repository at the SDK's release tag (or
//! # `rev` = a commit), or on a checkout by path. `twinguard new` writes this for you.
//! twinguard-guest = { git = "https://github.com/twinguard/twinguard", tag = "guest-sdk-v0.2.0" }
//! # twinguard-guest = { path = "../twinguard/guest-sdk" }
//!
//! # Small, fast components. In a workspace, profiles belong in the root Cargo.toml.
//! [profile.release]
//! lto = true
//! codegen-units = 1
//! strip = true
//! opt-level = 3      # or "s" to trade a little speed for size
//! ```
//!
//! Then `cargo build --release --target wasm32-wasip2` writes
//! `target/wasm32-wasip2/release/<crate_name>.wasm`, a component ready for the host (the Rust
//! toolchain's `wasm-component-ld` turns the module into a component; no extra tool is needed).
//! With this profile a trivial policy is about 45 KB (Rust std plus WASI stdio).
//!
//! # Unsafe code
//!
//! The bindings need `unsafe`; they live in one hidden module of this crate. Policy crates can
//! declare `#![forbid(unsafe_code)]`: the `unsafe` in the expansion of [`export_policy!`] (and of
//! [`export_configured!`]) comes from this crate's macros, which the lint does not look into.
//!
//! # Panics and faults
//!
//! A panic in a policy aborts the call (the host sees a trap and applies the policy's fault
//! action), and so does running out of fuel, time or memory. Return a [`Decision`] instead of
//! panicking wherever a message can be wrong: messages come from devices you do not control.
//!
//! [twinguard]: https://github.com/twinguard/twinguard

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

pub mod config;
mod configured;
mod decision;
pub mod declare;
pub mod findings;
pub mod log;
mod message;
pub mod metric;
pub mod pointer;
pub mod state;
pub mod text;
#[cfg(feature = "time")]
pub mod time;
pub mod walk;

pub use config::Config;
pub use configured::{Configured, ConfiguredPolicy};
pub use decision::{Alert, Decision, Edit, EditAction, Severity, Verdict};
pub use declare::{Counter, Envelope, Field, Histogram, Last};
pub use message::{ContentType, Device, FieldError, Message, Value};
pub use state::StateError;
pub use text::Quoted;

/// The generated component-model bindings. Not part of the API: use the rest of the crate.
#[doc(hidden)]
// wit-bindgen documents its export macro with an example whose items are unused.
#[doc(test(attr(allow(dead_code))))]
#[allow(
    unsafe_code,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
        pub_export_macro: true,
        default_bindings_module: "twinguard_guest::bindings",
        export_macro_name: "__export_twinguard_policy",
    });

    pub use self::exports::twinguard::policy::handler::Guest;
    pub(crate) use self::twinguard::policy::host;
    pub(crate) use self::twinguard::policy::types as wit;
}

/// A twinguard policy: what to do with each device message.
///
/// A policy with settings parsed from its configuration is simpler to write as a [`Configured`].
/// Both functions are static. The host creates an instance, calls [`init`](Self::init) once with
/// the policy's configuration, then calls [`evaluate`](Self::evaluate) for one or many messages
/// (depending on the policy's isolation mode). Export the implementation with
/// [`export_policy!`].
///
/// ```no_run
/// use twinguard_guest::{export_policy, Decision, Message, Policy};
///
/// struct AllowAll;
///
/// impl Policy for AllowAll {
///     fn evaluate(_msg: &Message) -> Decision {
///         Decision::allow()
///     }
/// }
///
/// export_policy!(AllowAll);
/// ```
pub trait Policy {
    /// Checks and prepares the configuration. Called once per instance before any message, with
    /// the key-values configured for the policy; they stay readable afterwards through
    /// [`config::get`] and friends, including from [`evaluate`](Self::evaluate). An `Err` fails
    /// the policy's load with that text as the cause, so name the key and the bad value.
    ///
    /// The default accepts any configuration.
    fn init(_config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Decides what happens to one message.
    fn evaluate(msg: &Message) -> Decision;
}

/// Exports a [`Policy`] implementation as the component's `handler`.
///
/// Use it exactly once, at the root of the policy crate (a `cdylib`):
///
/// ```no_run
/// # use twinguard_guest::{export_policy, Decision, Message, Policy};
/// # struct MyPolicy;
/// # impl Policy for MyPolicy {
/// #     fn evaluate(_msg: &Message) -> Decision { Decision::allow() }
/// # }
/// export_policy!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty $(,)?) => {
        const _: () = {
            struct __TwinguardPolicyExport;

            impl $crate::__private::Guest for __TwinguardPolicyExport {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<$crate::__private::WitManifest, ::std::string::String>
                {
                    $crate::__private::init::<$policy>(config)
                }

                fn evaluate(
                    message: $crate::__private::WitMessage,
                ) -> $crate::__private::WitDecision {
                    $crate::__private::evaluate::<$policy>(message)
                }
            }

            $crate::bindings::__export_twinguard_policy!(
                __TwinguardPolicyExport with_types_in $crate::bindings
            );
        };
    };
}

/// Ships self-test cases inside the component: a file of NDJSON lines, each an `eval` input
/// line plus the verdict the policy must give (`"expect"`: `allow`, `redact`, `quarantine`,
/// `alert` or `fault`) and, optionally, the settings to run it with (`"config"`: an object;
/// the configured settings when absent).
///
/// The host runs every case on a fresh instance, with state of its own, before it activates
/// the module; one wrong verdict and the module is refused, naming the case. The file is
/// embedded as a custom section named `twinguard-selftest` (the path is relative to the file
/// that invokes the macro, as with `include_bytes!`).
///
/// ```ignore
/// // In the policy crate's src/lib.rs, with selftest.ndjson beside Cargo.toml:
/// twinguard_guest::selftest!("../selftest.ndjson");
/// ```
///
/// with `selftest.ndjson` holding, for example:
///
/// ```text
/// {"device":"d1","topic":"t/d1","payload":{"seq":1},"config":{"required":"/seq:integer"},"expect":"allow"}
/// {"device":"d1","topic":"t/d1","payload":{"seq":"1"},"config":{"required":"/seq:integer"},"expect":"quarantine"}
/// ```
#[macro_export]
macro_rules! selftest {
    ($path:literal $(,)?) => {
        const _: () = {
            #[used]
            #[link_section = "twinguard-selftest"]
            static __TWINGUARD_SELFTEST: [u8; include_bytes!($path).len()] = *include_bytes!($path);
        };
    };
}

/// Glue for [`export_policy!`]. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::wit::{
        Decision as WitDecision, Manifest as WitManifest, Message as WitMessage,
    };
    pub use crate::bindings::Guest;
    use crate::{config, Config, Message, Policy};

    /// Stores the configuration (so `config::get` works from now on), lets the policy check
    /// it and declare what it reads, and answers with the manifest.
    pub fn init<P: Policy>(entries: Vec<(String, String)>) -> Result<WitManifest, String> {
        let config = config::replace(Config::from(entries));
        crate::declare::begin();
        let result = P::init(&config);
        let manifest = crate::declare::finish(result.is_ok());
        result.map(|()| manifest)
    }

    /// Wraps the message, asks the policy, lowers its decision.
    pub fn evaluate<P: Policy>(message: WitMessage) -> WitDecision {
        let message = Message::from_wit(message);
        P::evaluate(&message).into_wit()
    }
}
