//! `twinguard`: check policy components and evaluate messages through policies.

#![forbid(unsafe_code)]

use std::io::{self, BufWriter, StdoutLock, Write as _};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `eprintln!` that never panics: a diagnostic that cannot be written (stderr a closed pipe,
/// as in `twinguard … 2>&1 | head -1`) is dropped rather than turned into a panic.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod commands;
mod sim;

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

/// Standard output closed by its reader (`twinguard quarantine list --json | head -1`): the
/// command stops writing and the process ends quietly with exit code 0. Rust ignores
/// `SIGPIPE`, so a closed pipe shows up as an `EPIPE` write error; `println!` would panic on
/// it. Exit code 0, not the shell's 141 (128 + SIGPIPE): the reader chose to stop, nothing
/// failed, and a `set -o pipefail` script must not fail because `head` had enough — ripgrep
/// and most Rust CLIs do the same. No `SIGPIPE` reset (that needs `unsafe` libc calls; the
/// binary forbids unsafe code), and it would also kill `serve` on a closed socket.
#[derive(Debug)]
pub struct OutputClosed;

impl std::fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for OutputClosed {}

/// A write error on standard output: a closed pipe becomes [`OutputClosed`] (a clean stop),
/// anything else (a full disk behind `>`) stays an error.
fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        OutputClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Standard output for a command's report, locked and buffered: `writeln!(out, …)?` returns
/// an `anyhow::Result` that is [`OutputClosed`] when the reader went away. Call
/// [`Out::flush`] at the end; what a dropped `Out` still holds is written, errors ignored.
pub struct Out(BufWriter<StdoutLock<'static>>);

impl Out {
    pub fn stdout() -> Self {
        Self(BufWriter::new(io::stdout().lock()))
    }

    /// What `write!`/`writeln!` call (an inherent method wins over `io::Write`'s).
    pub fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        self.0.write_fmt(args).map_err(stdout_error)
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.0.flush().map_err(stdout_error)
    }
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
        // The reader of our output stopped reading: not a failure (see `OutputClosed`).
        Err(e) if e.is::<OutputClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
