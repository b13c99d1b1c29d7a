//! Builds the guest components from source, once per process, for tests and benchmarks.
//!
//! Guests are built with their own `CARGO_TARGET_DIR` (`target/guest-fixtures`) so the inner
//! cargo never waits on the outer build's lock, and for `wasm32-wasip2` in release (the
//! profile a policy author ships). No binary is checked in.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every guest crate the tests and benchmarks use.
pub const GUESTS: &[&str] = &[
    "allow-all",
    "pii-redact",
    "identity-guard",
    "schema-guard",
    "range-guard",
    "replay-guard",
    "rate-guard",
    "anomaly-guard",
    "hostile",
    "wrong-version",
    "wrong-world",
];

fn workspace() -> PathBuf {
    // This file is compiled into crates one folder below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where the built components land.
pub fn guest_dir() -> PathBuf {
    workspace().join("target/guest-fixtures/wasm32-wasip2/release")
}

fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace())
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env(
            "CARGO_TARGET_DIR",
            workspace().join("target/guest-fixtures"),
        )
        // Flags meant for the host build (coverage, sanitizers) must not reach the guests.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for g in GUESTS {
        cmd.args(["-p", g]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build guests: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building guests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(guest_dir())
}

/// The path of a built guest component, e.g. `wasm("pii-redact")`. Builds every guest on
/// first use; panics with cargo's output if the build fails (a test cannot go on without).
pub fn wasm(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BUILT.get_or_init(build) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.exists(),
        "guest {crate_name} was built but {} is missing",
        path.display()
    );
    path
}
