//! `twinguard policy list|push|rollback|remove|routes|shadow|diff|promote|discard|status`: the
//! admin API of a running `twinguard serve`, from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine as _;
use hyper::{Method, StatusCode};
use serde_json::Value;
use twinguard::signing::signature_path;
use twinguard_cli::client::{request, ClientConfig};

/// Where the admin API is and how to prove who is calling.
#[derive(clap::Args)]
pub struct Connection {
    /// The admin API's URL.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:9443")]
    admin: String,
    /// PEM CA that signed the API's server certificate.
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// PEM client certificate (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// A file whose first line is the bearer token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The API commands, flattened into `twinguard policy`.
#[derive(clap::Subcommand)]
pub enum ApiSub {
    /// List the active policies, their versions and the versions kept for rollback.
    List(Only),
    /// The active generation and the reload counters.
    Status(Only),
    /// Push a module as the new version of a policy (validated before it is activated).
    Push(Module),
    /// Activate the version before the current one.
    Rollback(Named),
    /// Remove a policy (and take it out of every chain).
    Remove(RemoveArgs),
    /// Replace every route with those of a JSON file: [{"filter": "…", "chain": ["…"]}].
    Routes(RoutesArgs),
    /// Run a module beside the active version of a policy, enforcing nothing.
    Shadow(Module),
    /// What the shadow candidate decided differently so far.
    Diff(Named),
    /// Make the shadow candidate the active version.
    Promote(Named),
    /// Stop the shadow candidate, changing nothing.
    Discard(Named),
    /// Reload the config file from disk.
    Reload(Only),
    /// Close a policy's circuit breaker: release every device it holds (or only --device) and
    /// close it policy-wide.
    BreakerReset(BreakerArgs),
}

#[derive(clap::Args)]
pub struct BreakerArgs {
    #[command(flatten)]
    conn: Connection,
    /// The policy's name.
    name: String,
    /// Release only this device.
    #[arg(long)]
    device: Option<String>,
}

#[derive(clap::Args)]
pub struct Only {
    #[command(flatten)]
    conn: Connection,
}

#[derive(clap::Args)]
pub struct Named {
    #[command(flatten)]
    conn: Connection,
    /// The policy's name.
    name: String,
}

#[derive(clap::Args)]
pub struct Module {
    #[command(flatten)]
    conn: Connection,
    /// The policy's name.
    name: String,
    /// The component (.wasm). Its signature, `<MODULE>.sig`, is sent along when present.
    module: PathBuf,
}

#[derive(clap::Args)]
pub struct RoutesArgs {
    #[command(flatten)]
    conn: Connection,
    /// JSON file with the routes, in order.
    file: PathBuf,
    #[command(flatten)]
    waiver: Waiver,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    conn: Connection,
    /// The policy's name.
    name: String,
    #[command(flatten)]
    waiver: Waiver,
}

/// Switching enforcement off is refused unless meant; the reason goes to the server's log.
#[derive(clap::Args)]
pub struct Waiver {
    /// Why a policy may come off a route, or a route go (needed when the change does that).
    #[arg(long, value_name = "REASON")]
    remove_enforcement: Option<String>,
}

pub fn run(sub: &ApiSub) -> Result<ExitCode> {
    let policy = |a: &Named, tail: &str| format!("/v1/policies/{}{tail}", a.name);
    let (conn, method, path) = match sub {
        ApiSub::List(a) => (&a.conn, Method::GET, "/v1/policies".to_owned()),
        ApiSub::Status(a) => (&a.conn, Method::GET, "/v1/status".to_owned()),
        ApiSub::Reload(a) => (&a.conn, Method::POST, "/v1/reload".to_owned()),
        ApiSub::Push(a) => (&a.conn, Method::PUT, format!("/v1/policies/{}", a.name)),
        ApiSub::Shadow(a) => (
            &a.conn,
            Method::PUT,
            format!("/v1/policies/{}/candidate", a.name),
        ),
        ApiSub::Rollback(a) => (&a.conn, Method::POST, policy(a, "/rollback")),
        ApiSub::Remove(a) => (&a.conn, Method::DELETE, format!("/v1/policies/{}", a.name)),
        ApiSub::Diff(a) => (&a.conn, Method::GET, policy(a, "/candidate")),
        ApiSub::Promote(a) => (&a.conn, Method::POST, policy(a, "/candidate/promote")),
        ApiSub::Discard(a) => (&a.conn, Method::DELETE, policy(a, "/candidate")),
        ApiSub::Routes(a) => (&a.conn, Method::PUT, "/v1/routes".to_owned()),
        ApiSub::BreakerReset(a) => (
            &a.conn,
            Method::POST,
            format!("/v1/policies/{}/breaker/reset", a.name),
        ),
    };
    let waiver = match sub {
        ApiSub::Remove(RemoveArgs { waiver, .. }) | ApiSub::Routes(RoutesArgs { waiver, .. }) => {
            waiver.remove_enforcement.clone()
        }
        _ => None,
    };
    let (body, mut headers) = match sub {
        ApiSub::Push(a) | ApiSub::Shadow(a) => {
            let module = std::fs::read(&a.module)
                .with_context(|| format!("cannot read {}", a.module.display()))?;
            // Its signature goes along when there is one, for `[signing]` on the server.
            let headers = match std::fs::read(signature_path(&a.module)) {
                Ok(s) => vec![(
                    "x-twinguard-signature",
                    base64::engine::general_purpose::STANDARD.encode(s),
                )],
                Err(_) => Vec::new(),
            };
            (module, headers)
        }
        ApiSub::Routes(a) => {
            let text = std::fs::read(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            serde_json::from_slice::<Value>(&text)
                .with_context(|| format!("{}: not JSON", a.file.display()))?;
            (text, Vec::new())
        }
        ApiSub::BreakerReset(a) => (
            a.device
                .as_ref()
                .map(|d| json_body(&serde_json::json!({ "device": d })))
                .unwrap_or_default(),
            Vec::new(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    if let Some(reason) = waiver {
        headers.push(("x-twinguard-remove-enforcement", reason));
    }
    let token = match &conn.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let client = ClientConfig {
        url: conn.admin.clone(),
        ca: conn.ca.clone(),
        cert: conn.cert.clone(),
        key: conn.key.clone(),
        token,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = rt
        .block_on(request(&client, method, &path, body, &headers))
        .map_err(anyhow::Error::msg)?;
    if status != StatusCode::OK {
        let message = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned);
        errln!("{status}: {message}");
        return Ok(ExitCode::from(1));
    }
    // The change is made by now; a closed stdout only loses its report (a clean stop).
    let mut out = crate::Out::stdout();
    match sub {
        ApiSub::List(_) => print_list(&mut out, &body)?,
        _ => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        )?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn json_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn print_list(out: &mut crate::Out, body: &Value) -> Result<()> {
    writeln!(
        out,
        "{:<20} {:<14} {:<24} KEPT",
        "NAME", "VERSION", "BREAKER"
    )?;
    for p in body.as_array().into_iter().flatten() {
        let short = |v: &Value| v.as_str().map(|s| s.get(..12).unwrap_or(s).to_owned());
        let kept: Vec<String> = p["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(short)
            .collect();
        let breaker = &p["breaker"];
        let held = breaker["held_devices"].as_array().map_or(0, Vec::len);
        let state = match (breaker["open"].as_bool(), held) {
            (Some(true), _) => "OPEN (all devices)".to_owned(),
            (_, 0) => "closed".to_owned(),
            (_, n) => format!("holds {n} device(s)"),
        };
        writeln!(
            out,
            "{:<20} {:<14} {:<24} {}",
            p["name"].as_str().unwrap_or(""),
            short(&p["version"]).unwrap_or_default(),
            state,
            kept.join(" ")
        )?;
    }
    Ok(())
}
