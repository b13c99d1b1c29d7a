//! A policy that forwards every message unchanged: the smallest possible policy, useful as a
//! chain placeholder and as a baseline for measuring the host's per-call overhead.

#![forbid(unsafe_code)]

use twinguard_guest::{export_policy, Decision, Message, Policy};

/// Allows everything.
struct AllowAll;

impl Policy for AllowAll {
    fn evaluate(_msg: &Message) -> Decision {
        Decision::allow()
    }
}

export_policy!(AllowAll);
