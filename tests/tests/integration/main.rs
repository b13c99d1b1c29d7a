//! Integration tests: real guest components, built from source, run through the real host.

mod chain;
mod concurrency;
mod contract;
mod limits;
mod loading;
mod metrics;
mod pack_a;
mod pack_b;
mod redaction;
mod reload;
mod sandbox;
