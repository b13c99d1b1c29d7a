//! One module per subcommand.

pub mod audit;
pub mod check;
pub mod demo;
pub mod eval;
pub mod new;
pub mod policy;
pub mod policy_api;
pub mod quarantine;
pub mod serve;
pub mod status;
pub mod test;
