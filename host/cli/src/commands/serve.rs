//! `twinguard serve --config F`: the MQTT gateway between device topics and twin topics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use twinguard::alerts::Alerts;
use twinguard::gateway::{self, Gateway};
use twinguard::store::{QuarantineStore, Sweeper};
use twinguard::{FileConfig, Runtime};

/// Arguments of `serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The config file: policies and routes, plus `[gateway]`, `[quarantine]` and `[alerts]`.
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = FileConfig::from_file(&args.config)?;
    let gateway_configs = config.gateways.clone();
    if gateway_configs.is_empty() {
        bail!(
            "{}: no [gateway] table: serve needs a broker and inputs (see README, `twinguard serve`)",
            args.config.display()
        );
    }
    let Some(quarantine) = config.quarantine.clone() else {
        bail!(
            "{}: no [quarantine] table: serve needs a store for what it holds back (path = \"quarantine.db\")",
            args.config.display()
        );
    };
    // FileConfig::from_file has already made it relative to the config file's folder.
    let store_path = quarantine.path.clone();
    let store = QuarantineStore::open(&store_path)
        .with_context(|| format!("quarantine store {}", store_path.display()))?;
    // Built even without an [alerts] table: its rate limiting also governs the alerts topic.
    let alerts_config = config.alerts.clone().unwrap_or_default();
    // FileConfig::from_file has resolved `alerts.file` already; resolving it again against the
    // config's folder doubled a relative one (examples/examples/alerts.ndjson).
    let alerts = Alerts::from_config(&alerts_config, Path::new(".")).context("alert sinks")?;
    let admin = config.admin.clone();
    let runtime = Runtime::new(config.runtime)?;
    // Edits to the config file or to a policy file take effect on their own (debounced; a
    // broken edit keeps the last good generation).
    let _watcher = twinguard::watch::Watcher::spawn(
        runtime.clone(),
        &args.config,
        std::time::Duration::from_secs(1),
    )
    .context("config watcher")?;
    // One runtime, store and set of alert sinks for every broker: policy state is per
    // device, wherever the device's messages come from.
    let gateways = gateway_configs
        .into_iter()
        .map(|g| Gateway::new(runtime.clone(), g, store.clone(), Some(alerts.clone())))
        .collect::<Result<Vec<_>, _>>()?;

    let _sweeper = match quarantine.retention() {
        Some(r) => Some(Sweeper::start(store, r).context("quarantine retention thread")?),
        None => None,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let admin_task = match &admin {
            Some(a) => {
                let lifecycle = twinguard::lifecycle::Lifecycle::new(
                    runtime.clone(),
                    &args.config,
                    &a.state_dir,
                    a.keep_versions,
                )?;
                let server =
                    twinguard::admin::AdminServer::bind(a, std::sync::Arc::new(lifecycle)).await?;
                eprintln!(
                    "twinguard serve: admin API on https://{}",
                    server.local_addr().context("admin API address")?
                );
                Some(tokio::spawn(server.serve(std::future::pending())))
            }
            None => None,
        };
        let r = gateway::run_all(&gateways, shutdown_signal()).await;
        if let Some(task) = &admin_task {
            task.abort();
        }
        anyhow::Ok(r)
    });
    alerts.flush();
    for g in &gateways {
        let stats = g.stats();
        eprintln!(
            "twinguard serve: {} stopped; received {}, forwarded {}, quarantined {} ({} refused by the broker), alerts {}",
            g.name(),
            stats.received.load(Ordering::Relaxed),
            stats.forwarded.load(Ordering::Relaxed),
            stats.quarantined.load(Ordering::Relaxed),
            stats.refused.load(Ordering::Relaxed),
            stats.alerts.load(Ordering::Relaxed),
        );
    }
    result??;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
