//! Integration tests: real guest components, built from source, run through the real host.

mod chain;
mod concurrency;
mod contract;
mod limits;
mod loading;
mod metrics;
mod pack_a;
mod pack_b;
mod pii_detect;
mod raw_abi;
mod redaction;
mod registry;
mod reload;
mod sandbox;
