//! The library half of the `twinguard` command: the admin API's HTTP client, shared by the
//! `policy` commands and the admin API's tests. Everything else of the command lives in the
//! binary (`src/main.rs`, one file per subcommand in `src/commands/`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
