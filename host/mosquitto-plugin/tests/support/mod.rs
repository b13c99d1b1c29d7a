//! Shared by the plugin's tests and its benchmark: where the built plugin is, and TOML for
//! policies made of the real guest components.

#![allow(dead_code)] // each user takes what it needs

use std::path::PathBuf;

/// The plugin built with this test or bench binary: cargo builds the package's cdylib first,
/// into the same `deps` folder (it copies it up to `target/<profile>/` only for
/// `cargo build`).
pub fn plugin_so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = "libtwinguard_mosquitto.so";
    [deps.join(name), deps.parent().unwrap_or(deps).join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is neither in {} nor above it", deps.display()))
}

/// A `[[policy]]` table running the guest crate `guest`, with `config` lines for its
/// `[policy.config]`.
pub fn policy(name: &str, guest: &str, config: &[&str]) -> String {
    format!(
        "[[policy]]\nname = \"{name}\"\npath = \"{}\"\n[policy.config]\n{}\n\n",
        twinguard_fixtures::wasm(guest).display(),
        config.join("\n")
    )
}

/// A `[[route]]` table.
pub fn route(filter: &str, chain: &[&str]) -> String {
    format!("[[route]]\nfilter = \"{filter}\"\nchain = {chain:?}\n\n")
}
