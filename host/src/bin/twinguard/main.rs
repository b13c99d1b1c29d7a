//! `twinguard`: check policy components and evaluate messages through policies.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// twinguard: a policy runtime for the digital-twin data path.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy component: format, contract version, world; print its digest.
    Check(commands::check::Args),
    /// Evaluate NDJSON messages through the configured policies; print NDJSON outcomes.
    Eval(commands::eval::Args),
    /// Attack a simulated plant and score what the shipped policy pack catches (no broker).
    Demo(commands::demo::Args),
    /// Run the MQTT gateway: device topics in, twin topics out, quarantine kept durably.
    Serve(commands::serve::Args),
    /// Inspect and clean up the quarantine store: list, show, purge.
    Quarantine(commands::quarantine::Args),
    /// Manage policies: sign modules (keygen, sign, verify) and change a running serve through its admin API (list, push, rollback, remove, routes, shadow, diff, promote, discard, status, reload).
    Policy(commands::policy::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TWINGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => commands::check::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Quarantine(args) => commands::quarantine::run(&args),
        Command::Policy(args) => commands::policy::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
