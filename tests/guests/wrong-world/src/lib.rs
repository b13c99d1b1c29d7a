//! A test guest of another world (`example:counter`): a valid component that is not a
//! twinguard policy. The host must refuse it with an error saying it exports no handler.

#![deny(unsafe_code)]

// The generated bindings and the export glue need `unsafe`; keep it in this one module.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "counter",
    });

    use super::Counter;
    export!(Counter with_types_in self);
}

use std::sync::atomic::{AtomicU64, Ordering};

struct Counter;

static NEXT: AtomicU64 = AtomicU64::new(0);

impl bindings::Guest for Counter {
    fn next() -> u64 {
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
