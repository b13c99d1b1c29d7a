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
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors). The
    /// filter comes from `RUST_LOG` (or `TWINGUARD_LOG`, which wins), default `info` for
    /// `serve` and `warn` for the other commands.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Sets up logging on stderr. A filter that does not parse is an error, never silently
/// replaced by the default: an operator who asked for `debug` must not get `warn`.
fn init_logs(format: LogFormat, default: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let (var, filter) = match (std::env::var("TWINGUARD_LOG"), std::env::var("RUST_LOG")) {
        (Ok(f), _) => ("TWINGUARD_LOG", f),
        (_, Ok(f)) => ("RUST_LOG", f),
        _ => ("", default.to_owned()),
    };
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&filter)
        .map_err(|e| anyhow::anyhow!("{var}={filter:?} is not a log filter: {e}"))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal: escape codes in a file or journal are noise.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy component: format, contract version, world; print its digest.
    Check(commands::check::Args),
    /// Evaluate NDJSON messages through the configured policies; print NDJSON outcomes.
    Eval(commands::eval::Args),
    /// Run test cases (sequences of messages and the outcomes they must have) against a
    /// policy or a config; exit 1 on any failure.
    Test(commands::test::Args),
    /// Create a policy project (Rust) that builds and passes `twinguard test` as created.
    New(commands::new::Args),
    /// Attack a simulated plant and score what the shipped policy pack catches (no broker).
    Demo(commands::demo::Args),
    /// Run the MQTT gateway: device topics in, twin topics out, quarantine kept durably.
    Serve(commands::serve::Args),
    /// The live counters of a running serve (or plugin), from its metrics listener.
    Status(commands::status::Args),
    /// Inspect and clean up the quarantine store: list, show, purge.
    Quarantine(commands::quarantine::Args),
    /// Manage policies: sign modules (keygen, sign, verify) and change a running serve through its admin API (list, push, rollback, remove, routes, shadow, diff, promote, discard, status, reload).
    Policy(commands::policy::Args),
    /// Verify the hash-chained decision log: name the first record altered, removed or reordered.
    Audit(commands::audit::Args),
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
    let cli = Cli::parse();
    let default = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    if let Err(e) = init_logs(cli.log_format, default) {
        errln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Check(args) => commands::check::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Test(args) => commands::test::run(&args),
        Command::New(args) => commands::new::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Serve(args) => commands::serve::run(&args),
        Command::Status(args) => commands::status::run(&args),
        Command::Quarantine(args) => commands::quarantine::run(&args),
        Command::Policy(args) => commands::policy::run(&args),
        Command::Audit(args) => commands::audit::run(&args),
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
