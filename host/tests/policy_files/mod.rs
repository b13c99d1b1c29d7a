//! A policy folder in a temporary directory, for the signing and cache tests: the pii-redact
//! guest copied in as `pii.wasm`, and a config file beside it with relative paths (so they
//! are resolved against the config's folder, as in production).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};

use twinguard::{Action, ContentType, Message, Runtime};

#[path = "../../../tests/src/fixtures.rs"]
mod fixtures;

/// The path of a built guest component (see `tests/src/fixtures.rs`).
pub fn wasm(name: &str) -> PathBuf {
    fixtures::wasm(name)
}

/// The temporary folder of one test.
pub struct Folder {
    pub dir: tempfile::TempDir,
}

impl Folder {
    /// A new folder with `pii.wasm` in it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        std::fs::copy(fixtures::wasm("pii-redact"), dir.path().join("pii.wasm"))
            .expect("copy the pii-redact fixture");
        Self { dir }
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The module.
    pub fn module(&self) -> PathBuf {
        self.path("pii.wasm")
    }

    /// Writes `twinguard.toml`: policy "pii" from `module` (relative to the folder), a route
    /// for every topic, and `extra` (more sections) before them.
    pub fn config(&self, module: &str, extra: &str) -> PathBuf {
        let path = self.path("twinguard.toml");
        let text = format!(
            "{extra}\n[[policy]]\nname = \"pii\"\npath = \"{module}\"\n\
             [policy.config]\nremove = \"/owner/email\"\n\
             [[route]]\nfilter = \"#\"\nchain = [\"pii\"]\n"
        );
        std::fs::write(&path, text).expect("write the config");
        path
    }

    /// Copies the module to `name` with one byte flipped near its middle.
    pub fn tampered_copy(&self, name: &str) -> PathBuf {
        let mut bytes = std::fs::read(self.module()).expect("read the module");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write the copy");
        path
    }
}

/// Asserts the runtime's policy redacts the owner's e-mail, as pii-redact configured so does.
pub fn assert_redacts(runtime: &Runtime) {
    let message = Message::new(
        "press-7",
        "plant/press-7/telemetry",
        ContentType::Json,
        br#"{"temp":21.5,"owner":{"email":"a@example.com"}}"#.to_vec(),
    );
    let outcome = runtime.evaluate(&message);
    assert_eq!(outcome.action, Action::Redact, "{outcome:?}");
    let payload = String::from_utf8_lossy(&outcome.payload);
    assert!(!payload.contains("a@example.com"), "{payload}");
    assert!(payload.contains("21.5"), "{payload}");
}

/// The `.cwasm` entries in a cache folder.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "cwasm"));
    found.sort();
    found
}
