//! A test guest built against the previous contract, `twinguard:policy@0.1.0` (`wit/policy.wit`
//! here is that contract, unchanged): what a policy built before 0.2 looks like. It allows
//! everything, like `allow-all`. The host must refuse to load it, name both versions and say how
//! to rebuild.

#![deny(unsafe_code)]

// The generated bindings and the export glue need `unsafe`; keep it in this one module.
#[allow(
    unsafe_code,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "policy",
    });

    use super::WrongVersion;
    export!(WrongVersion with_types_in self);
}

use bindings::exports::twinguard::policy::handler::{Decision, Guest, Message};
use bindings::twinguard::policy::types::Verdict;

struct WrongVersion;

impl Guest for WrongVersion {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn evaluate(_message: Message) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            alerts: Vec::new(),
        }
    }
}
