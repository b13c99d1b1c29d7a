//! `twinguard check <component>`: validate a component and run the self-tests it ships.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use twinguard::{Config, Runtime, WIT_VERSION};

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    /// The component file (.wasm), built for wasm32-wasip2.
    component: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Memory cap for the self-tests' instances, in MiB (the default policy limit when
    /// absent). Python and JavaScript policies need more than the default.
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Fuel per self-test message (the default policy limit when absent).
    #[arg(long)]
    fuel: Option<u64>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut config = Config::default();
    if let Some(mib) = args.memory_mib {
        config.defaults.limits.memory_bytes = mib << 20;
        config.engine.max_memory_bytes = config.engine.max_memory_bytes.max(mib << 20);
    }
    if let Some(fuel) = args.fuel {
        config.defaults.limits.fuel = fuel;
    }
    let runtime = Runtime::new(config.clone())?;
    // Each case runs on an instance of its own, with the settings it names (none otherwise).
    let (info, selftest) = runtime.check_selftests(&args.component, config.defaults.limits)?;
    let (cases, failure) = match &selftest {
        Ok(n) => (*n, None),
        Err(e) => (None, Some(twinguard::error_chain(e))),
    };
    let mut out = crate::Out::stdout();
    if args.json {
        let report = serde_json::json!({
            "component": args.component,
            "size": info.size,
            "digest": format!("sha256:{}", info.digest),
            "wit_version": info.wit_version,
            "host_wit_version": WIT_VERSION,
            "exports": info.exports,
            "imports": info.imports,
            "selftest_steps_passed": cases,
            "selftest_failure": failure,
            "ok": failure.is_none(),
        });
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "component: {}", args.component.display())?;
        writeln!(out, "size:      {} bytes", info.size)?;
        writeln!(out, "digest:    sha256:{}", info.digest)?;
        writeln!(
            out,
            "contract:  twinguard:policy@{} (host speaks {WIT_VERSION})",
            info.wit_version
        )?;
        writeln!(out, "exports:   {}", info.exports.join(", "))?;
        writeln!(out, "imports:   {}", info.imports.join(", "))?;
        match (&failure, cases) {
            (None, Some(n)) => writeln!(
                out,
                "selftest:  {n} step{} passed\nok",
                if n == 1 { "" } else { "s" }
            )?,
            (None, None) => writeln!(out, "selftest:  none shipped\nok")?,
            (Some(why), _) => writeln!(out, "selftest:  FAILED: {why}")?,
        }
    }
    out.flush()?;
    Ok(if failure.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
