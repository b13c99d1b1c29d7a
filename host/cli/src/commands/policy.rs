//! `twinguard policy keygen|sign|verify`: the policy lifecycle seen from the command line.
//! File formats and what the runtime checks: `docs/signing-and-cache.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use twinguard::signing::{signature_path, PublicKey, SecretKey, Trust, Verified};

/// Arguments of `policy`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Generate an ed25519 signing key: <OUT>.key (secret, mode 0600) and <OUT>.pub.
    Keygen(KeygenArgs),
    /// Sign a module: writes <MODULE>.sig beside it.
    Sign(SignArgs),
    /// Verify a module's signature (<MODULE>.sig) with one or more public keys.
    Verify(VerifyArgs),
    #[command(flatten)]
    Api(super::policy_api::ApiSub),
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Path of the key pair without extension, e.g. `keys/ops` (folders are created).
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct SignArgs {
    /// The secret key file (`.key`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The module (.wasm) to sign.
    module: PathBuf,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// A trusted public key file (`.pub`); repeat to accept any of several.
    #[arg(long, value_name = "FILE", required = true)]
    key: Vec<PathBuf>,
    /// The module (.wasm) whose `.sig` file is checked.
    module: PathBuf,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Sub::Keygen(a) => keygen(a),
        Sub::Sign(a) => sign(a),
        Sub::Verify(a) => verify(a),
        Sub::Api(a) => super::policy_api::run(a),
    }
}

fn with_extension(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_os_string();
    name.push(ext);
    PathBuf::from(name)
}

fn keygen(args: &KeygenArgs) -> Result<ExitCode> {
    let (secret, public) = (
        with_extension(&args.out, ".key"),
        with_extension(&args.out, ".pub"),
    );
    for path in [&secret, &public] {
        if path.exists() {
            bail!("{} exists; not replacing a key", path.display());
        }
    }
    if let Some(dir) = secret.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    }
    let key = SecretKey::generate()?;
    key.write_new(&secret)?;
    std::fs::write(&public, key.public_key().to_text())
        .with_context(|| format!("cannot write public key {}", public.display()))?;
    let mut out = crate::Out::stdout();
    writeln!(out, "key id:     {}", key.id())?;
    writeln!(out, "secret key: {} (keep it private)", secret.display())?;
    writeln!(
        out,
        "public key: {} (list it in [signing] trusted-keys)",
        public.display()
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn sign(args: &SignArgs) -> Result<ExitCode> {
    let key = SecretKey::from_file(&args.key)?;
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    let sig = signature_path(&args.module);
    std::fs::write(&sig, key.sign(&module).to_text())
        .with_context(|| format!("cannot write signature {}", sig.display()))?;
    let mut out = crate::Out::stdout();
    writeln!(
        out,
        "signed {} with key {}: {}",
        args.module.display(),
        key.id(),
        sig.display()
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let keys = args
        .key
        .iter()
        .map(|p| Ok((p.clone(), PublicKey::from_file(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    // The runtime's own check, with signatures required.
    match Trust::new(keys, true)
        .verify(&args.module, &module)
        .with_context(|| format!("{} refused", args.module.display()))?
    {
        Verified::Signed { key, key_file } => {
            let mut out = crate::Out::stdout();
            writeln!(
                out,
                "ok: {} is signed by key {key} ({})",
                args.module.display(),
                key_file.display()
            )?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        // Not reachable with signatures required; refuse rather than claim a signature.
        _ => bail!("{}: no signature was verified", args.module.display()),
    }
}
