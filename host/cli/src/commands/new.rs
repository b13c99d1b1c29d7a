//! `twinguard new NAME [--lang rust|python|js]`: a policy project of its own, outside any
//! checkout of this repository, that builds, `check`s and passes `twinguard test` as created.
//!
//! The templates are compiled into the binary (`host/cli/templates/`), so the command works
//! wherever `twinguard` is installed; the contract (`wit/policy.wit`) is copied into projects
//! whose toolchain reads it (Python, JavaScript).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

/// Arguments of `new`.
#[derive(clap::Args)]
pub struct Args {
    /// The policy's name: lower-case letters, digits and `-`, starting with a letter
    /// (`door-hours`). The project is created in a folder of that name.
    name: String,
    /// The language to write the policy in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the project folder (the current folder by default).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Rust: depend on the SDK in this checkout's `guest-sdk` folder (a path dependency)
    /// instead of the repository at the release tag (a git dependency).
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Lang {
    Rust,
}

/// The repository the SDK is fetched from by default, and the tag of this contract version.
const REPOSITORY: &str = "https://github.com/twinguard/twinguard";
const SDK_TAG: &str = "guest-sdk-v0.2.0";

/// (path in the project, template text).
type Files = Vec<(String, String)>;

fn rust(name: &str, sdk: Option<&Path>) -> Result<Files> {
    let krate = name.replace('-', "_");
    let dependency = match sdk {
        Some(path) => {
            let path =
                std::path::absolute(path).with_context(|| format!("--sdk {}", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there; give the guest-sdk folder of a twinguard \
                     checkout",
                    path.display()
                );
            }
            format!(
                "twinguard-guest = {{ path = {} }}",
                toml::Value::String(path.display().to_string())
            )
        }
        None => format!("twinguard-guest = {{ git = \"{REPOSITORY}\", tag = \"{SDK_TAG}\" }}"),
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{sdk}}", &dependency)
    };
    Ok(vec![
        (
            "Cargo.toml".into(),
            fill(include_str!("../../templates/rust/Cargo.toml.tmpl")),
        ),
        (
            ".cargo/config.toml".into(),
            include_str!("../../templates/rust/cargo-config.toml").into(),
        ),
        (
            "src/lib.rs".into(),
            fill(include_str!("../../templates/rust/lib.rs.tmpl")),
        ),
        (
            format!("{name}.test.toml"),
            fill(include_str!("../../templates/rust/test.toml.tmpl")),
        ),
        (
            "README.md".into(),
            fill(include_str!("../../templates/rust/README.md.tmpl")),
        ),
        (
            ".gitignore".into(),
            include_str!("../../templates/rust/gitignore.tmpl").into(),
        ),
    ])
}

/// A name every language and tool takes as is: a crate, a Python module, a file name.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "policy name {name:?}: use lower-case letters, digits and single dashes, starting \
             with a letter, at most 64 characters (e.g. door-hours)"
        );
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<ExitCode> {
    check_name(&args.name)?;
    let root = args.dir.join(&args.name);
    if root.exists() {
        bail!(
            "{} already exists; twinguard new never writes over files",
            root.display()
        );
    }
    let files = match args.lang {
        Lang::Rust => rust(&args.name, args.sdk.as_deref())?,
    };
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = crate::Out::stdout();
    writeln!(out, "created {} ({} files)", root.display(), files.len())?;
    let next = match args.lang {
        Lang::Rust => "cargo build --release && twinguard test",
    };
    writeln!(out, "next: cd {} && {next}", root.display())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_every_toolchain_takes() {
        for good in ["door-hours", "a", "pii2-redact"] {
            check_name(good).unwrap();
        }
        for bad in ["Door", "2fa", "-x", "x-", "a--b", "a_b", "a b", "", "ü"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
