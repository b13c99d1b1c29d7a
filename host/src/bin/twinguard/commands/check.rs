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
        println!("{report}");
    } else {
        println!("component: {}", args.component.display());
        println!("size:      {} bytes", info.size);
        println!("digest:    sha256:{}", info.digest);
        println!(
            "contract:  twinguard:policy@{} (host speaks {WIT_VERSION})",
            info.wit_version
        );
        println!("exports:   {}", info.exports.join(", "));
        println!("imports:   {}", info.imports.join(", "));
        println!("selftest:  {cases} cases");
        println!("ok");
    }
    Ok(ExitCode::SUCCESS)
}
