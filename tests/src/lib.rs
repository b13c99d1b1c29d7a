//! Shared helpers of twinguard's integration tests and benchmarks.

pub mod fixtures;

use twinguard::{Config, ContentType, Message, Runtime};

pub use fixtures::wasm;

/// A runtime from TOML in which `@name` stands for the built guest `name`'s path.
pub fn runtime(toml: &str) -> Runtime {
    let config = config(toml);
    Runtime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// A config from TOML in which `@name` stands for the built guest `name`'s path.
pub fn config(toml: &str) -> Config {
    let toml = substitute(toml);
    Config::from_toml(&toml, ".").unwrap_or_else(|e| panic!("config: {e}\n{toml}"))
}

/// Replaces `@allow-all`, `@pii-redact`, `@hostile`, `@wrong-version`, `@wrong-world` by
/// component paths.
pub fn substitute(toml: &str) -> String {
    let mut out = toml.to_string();
    for g in fixtures::GUESTS {
        let token = format!("@{g}");
        if out.contains(&token) {
            out = out.replace(&token, &wasm(g).display().to_string());
        }
    }
    out
}

/// A JSON message for device `d1` on `plant/d1/telemetry`.
pub fn json(payload: &serde_json::Value) -> Message {
    Message::new(
        "d1",
        "plant/d1/telemetry",
        ContentType::Json,
        serde_json::to_vec(payload).unwrap_or_default(),
    )
}

/// A config with one policy `p` of the hostile guest in `mode`, routed from `#`, with extra
/// TOML lines for the policy table (limits, isolation...).
pub fn hostile(mode: &str, extra: &str) -> String {
    hostile_with(mode, extra, "")
}

/// [`hostile`] with extra key-values for the guest's `[policy.config]`.
pub fn hostile_with(mode: &str, extra: &str, config: &str) -> String {
    format!(
        "[[policy]]\nname = \"p\"\npath = \"@hostile\"\n{extra}\n[policy.config]\nmode = \"{mode}\"\n\
         {config}\n[[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
    )
}
