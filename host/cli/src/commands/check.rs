//! `twinguard check <component>`: validate a component without configuring it.

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
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let runtime = Runtime::new(Config::default())?;
    let info = runtime.check_component(&args.component)?;
    // Cases are run when the module is loaded with its config (they need it); here, counted.
    let cases = info
        .selftest
        .as_deref()
        .map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count());
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
            "selftest_cases": cases,
            "ok": true,
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
        writeln!(out, "selftest:  {cases} cases")?;
        writeln!(out, "ok")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
