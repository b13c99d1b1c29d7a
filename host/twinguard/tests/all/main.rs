//! The facade's integration tests: one binary, one module per area (real guests built from
//! source, a real Mosquitto, a real SQLite store, real TLS).

mod alerts;
mod cache;
mod judge;
mod reload;
mod selftest;
mod store;
mod watch;
