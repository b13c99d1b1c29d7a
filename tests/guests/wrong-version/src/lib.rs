//! A test guest built against another version of the contract: `twinguard:policy@0.2.0`
//! (`wit/policy.wit` here is the real WIT with only the package version changed). Apart from
//! that it allows everything, like `allow-all`. The host must refuse to load it and name both
//! versions in the error.

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
