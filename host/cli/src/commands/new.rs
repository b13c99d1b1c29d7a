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
    Python,
    Js,
}

/// The repository the SDK is fetched from by default, and the tag of this contract version.
const REPOSITORY: &str = "https://github.com/twinguard/twinguard";
const SDK_TAG: &str = "guest-sdk-v0.2.0";

/// (path in the project, template text).
type Files = Vec<(String, String)>;

/// The contract, copied into projects whose toolchain reads it.
const WIT: &str = include_str!("../../../../wit/policy.wit");

/// A Rust project's toolchain: the one the SDK is built and tested with (its `rust-version`),
/// with the target policies build for. Without it a project outside a checkout builds with
/// whatever toolchain is the default, which may be older than the SDK takes or lack the target.
const RUST_TOOLCHAIN: &str = concat!(
    "# The Rust toolchain the twinguard SDK is built and tested with, and the target policies\n",
    "# build for: `rustup toolchain install` (run here) installs both.\n",
    include_str!("../../../../rust-toolchain.toml")
);

/// The componentize-py version the Python SDK is built and tested with
/// (`scripts/python-tools.sh` pins the same).
const COMPONENTIZE_PY: &str = "0.25.1";

/// The componentize-js version the JavaScript SDK is built and tested with
/// (`scripts/js-tools.sh` pins the same).
const COMPONENTIZE_JS: &str = "0.23.0";

/// The JavaScript SDK, copied into JavaScript projects (componentize-js bundles what the policy
/// imports).
const JS_SDK: &str = include_str!("../../../../guest-sdk-js/twinguard-policy.js");

/// The Python SDK, copied into Python projects (componentize-py bundles what is on the path).
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/__init__.py"),
    ),
    (
        "_rustchar_tables.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/_rustchar_tables.py"),
    ),
    (
        "config.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/config.py"),
    ),
    (
        "decision.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/decision.py"),
    ),
    (
        "declare.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/declare.py"),
    ),
    (
        "errors.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/errors.py"),
    ),
    (
        "global_state.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/global_state.py"),
    ),
    (
        "log.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/log.py"),
    ),
    (
        "message.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/message.py"),
    ),
    (
        "pointer.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/pointer.py"),
    ),
    (
        "policy.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/policy.py"),
    ),
    (
        "rustchar.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/rustchar.py"),
    ),
    (
        "state.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/state.py"),
    ),
    (
        "text.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/text.py"),
    ),
    (
        "walk.py",
        include_str!("../../../../guest-sdk-python/twinguard_policy/walk.py"),
    ),
];

/// Test files of interpreted languages keep compiled code between runs: their components
/// are ~20 MB and take seconds to compile.
const ENGINE_CACHE: &str = "\n# The component is large: keep its compiled code between runs.\n[engine]\ncache-dir = \"build/cache\"\n";

/// Fills a template's `{{…}}` placeholders.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_owned(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// The project of `name`: `templates` (path, text), both filled with the placeholders every
/// template may use, then `copies` as they are. `sdk` is the Rust dependency line; `wasm` where
/// the build writes the component; `engine` the test file's `[engine]` table, if any.
fn project(
    name: &str,
    sdk: &str,
    wasm_dir: &str,
    engine: &str,
    templates: &[(&str, &str)],
    copies: impl IntoIterator<Item = (String, String)>,
) -> Files {
    let krate = name.replace('-', "_");
    let wasm = format!("{wasm_dir}/{krate}.wasm");
    let values = [
        ("name", name),
        ("crate", krate.as_str()),
        ("sdk", sdk),
        ("wasm", wasm.as_str()),
        ("engine", engine),
        ("componentize_py", COMPONENTIZE_PY),
        ("componentize_js", COMPONENTIZE_JS),
    ];
    templates
        .iter()
        .map(|(path, text)| (fill(path, &values), fill(text, &values)))
        .chain(copies)
        .collect()
}

/// The test file every language's project starts with.
const TEST_FILE: (&str, &str) = (
    "{{name}}.test.toml",
    include_str!("../../templates/test.toml.tmpl"),
);

fn js(name: &str) -> Files {
    project(
        name,
        "",
        "build",
        ENGINE_CACHE,
        &[
            (
                "policy.js",
                include_str!("../../templates/js/policy.js.tmpl"),
            ),
            ("build.sh", include_str!("../../templates/js/build.sh.tmpl")),
            (
                "package.json",
                include_str!("../../templates/js/package.json.tmpl"),
            ),
            TEST_FILE,
            (
                "README.md",
                include_str!("../../templates/js/README.md.tmpl"),
            ),
            (
                ".gitignore",
                include_str!("../../templates/js/gitignore.tmpl"),
            ),
        ],
        [
            ("twinguard-policy.js".into(), JS_SDK.into()),
            ("wit/policy.wit".into(), WIT.into()),
        ],
    )
}

fn python(name: &str) -> Files {
    project(
        name,
        "",
        "build",
        ENGINE_CACHE,
        &[
            ("app.py", include_str!("../../templates/python/app.py.tmpl")),
            (
                "build.sh",
                include_str!("../../templates/python/build.sh.tmpl"),
            ),
            TEST_FILE,
            (
                "README.md",
                include_str!("../../templates/python/README.md.tmpl"),
            ),
            (
                ".gitignore",
                include_str!("../../templates/python/gitignore.tmpl"),
            ),
        ],
        std::iter::once(("wit/policy.wit".to_owned(), WIT.to_owned())).chain(
            PYTHON_SDK
                .iter()
                .map(|(file, text)| (format!("twinguard_policy/{file}"), (*text).to_owned())),
        ),
    )
}

fn rust(name: &str, sdk: Option<&Path>) -> Result<Files> {
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
    Ok(project(
        name,
        &dependency,
        "target/wasm32-wasip2/release",
        "",
        &[
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml.tmpl"),
            ),
            (
                ".cargo/config.toml",
                include_str!("../../templates/rust/cargo-config.toml"),
            ),
            ("rust-toolchain.toml", RUST_TOOLCHAIN),
            (
                "src/lib.rs",
                include_str!("../../templates/rust/lib.rs.tmpl"),
            ),
            TEST_FILE,
            (
                "README.md",
                include_str!("../../templates/rust/README.md.tmpl"),
            ),
            (
                ".gitignore",
                include_str!("../../templates/rust/gitignore.tmpl"),
            ),
        ],
        [],
    ))
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
        Lang::Python if args.sdk.is_some() => {
            bail!("--sdk is for Rust projects: a Python project carries its SDK")
        }
        Lang::Python => python(&args.name),
        Lang::Js if args.sdk.is_some() => {
            bail!("--sdk is for Rust projects: a JavaScript project carries its SDK")
        }
        Lang::Js => js(&args.name),
    };
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    let mut out = crate::Out::stdout();
    writeln!(out, "created {} ({} files)", root.display(), files.len())?;
    let next = match args.lang {
        Lang::Rust => "rustup toolchain install && cargo build --release && twinguard test",
        Lang::Python => "./build.sh && twinguard test",
        Lang::Js => "npm install && ./build.sh && twinguard test",
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
