//! A test guest that claims `twinguard:policy@0.2.0` but whose `handler.evaluate` takes an
//! extra `u32` (`wit/policy.wit` here is the real WIT with only that changed). `twinguard
//! check` and a load must refuse it the same way, naming the function.

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

    use super::WrongSignature;
    export!(WrongSignature with_types_in self);
}

use bindings::exports::twinguard::policy::handler::{Decision, Guest, Manifest, Message};
use bindings::twinguard::policy::types::Verdict;

struct WrongSignature;

impl Guest for WrongSignature {
    fn init(_config: Vec<(String, String)>) -> Result<Manifest, String> {
        Ok(Manifest {
            fields: Vec::new(),
            envelope: bindings::twinguard::policy::types::Envelope::empty(),
            keep_last: Vec::new(),
            metrics: Vec::new(),
        })
    }

    fn evaluate(_message: Message, _extra: u32) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            alerts: Vec::new(),
        }
    }
}
