//! The `twinguard` command's integration tests: the built binary run as a user would, `serve`
//! against a real Mosquitto, and the admin API through the command's own client.

mod acl;
mod admin;
mod audit;
mod authoring;
mod cli;
mod command_path;
mod demo;
mod gateway;
mod isolation;
mod nats;
mod observe;
mod quarantine;
mod signing;
mod state;
