//! `twinguard serve --config F`: the MQTT gateway between device topics and twin topics.
//! Edits of the config or a policy file, and SIGHUP, reload the policies and routes (edits of
//! the service tables are named as waiting for a restart); SIGTERM and SIGINT stop it cleanly,
//! with its counters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use twinguard::gateway::{self, Gateway};
use twinguard::nats::{NatsFront, PartitionJournal};
use twinguard::services::Services;
use twinguard::store::QuarantineStore;
use twinguard::telemetry::{ReadyCheck, Telemetry, TelemetryServer};
use twinguard::watch::Watcher;
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
    if gateway_configs.is_empty() && config.nats.is_none() {
        bail!(
            "{}: no [gateway] table and no [nats] table: serve needs a broker (or a NATS cluster) and inputs (see README, `twinguard serve`)",
            args.config.display()
        );
    }
    // The store (with its retention) and the alert sinks, as every front end opens them; the
    // sinks are built even without an [alerts] table: their rate limiting also governs the
    // alerts topic.
    let services = Services::open(&config).with_context(|| args.config.display().to_string())?;
    let admin = config.admin.clone();
    let telemetry = match &config.telemetry {
        Some(t) => Some((t.clone(), Telemetry::from_config(t)?)),
        None => None,
    };
    // Its state journaled to, and restored from, the state file (`[state]`); with `[nats]`,
    // to each partition's checkpoint in the cluster instead.
    let builder = Runtime::builder(config.runtime.clone());
    let builder = match &telemetry {
        Some((_, t)) => builder.meter(t.meter()),
        None => builder,
    };
    let runtime = match &config.nats {
        Some(_) => {
            if services.state.is_some() {
                tracing::info!("[nats]: policies' state is checkpointed to the cluster with each partition; the local state file is not used");
            }
            builder
                .journal(PartitionJournal::new())
                .build()
                .with_context(|| args.config.display().to_string())?
        }
        None => services
            .runtime(builder)
            .with_context(|| args.config.display().to_string())?,
    };
    let set = runtime.policy_set();
    tracing::info!(
        config = %args.config.display(),
        generation = set.generation(),
        policies = %set
            .policies()
            .iter()
            .map(|p| format!("{}@{}", p.name(), p.version().get(..12).unwrap_or(p.version())))
            .collect::<Vec<_>>()
            .join(", "),
        "twinguard serve starting"
    );
    // Edits to the config file or to a policy file take effect on their own (debounced; a
    // broken edit keeps the last good generation), and on SIGHUP. Edits of the service tables
    // are warned about: they take effect after a restart.
    let watcher = Arc::new(
        Watcher::spawn_from(
            runtime.clone(),
            &args.config,
            &config,
            std::time::Duration::from_secs(1),
        )
        .context("config watcher")?,
    );
    // One runtime, store and set of alert sinks for every broker: policy state is per
    // device, wherever the device's messages come from.
    let gateways = gateway_configs
        .into_iter()
        .map(|g| {
            Gateway::new(
                runtime.clone(),
                g,
                services.store.clone(),
                Some(services.alerts.clone()),
            )
            .map(|g| {
                let g = g
                    .with_decision_log(services.decision_log.clone())
                    // One commit per batch of acknowledgements: cheap enough to wait by default.
                    .with_state(services.state_for_acks(true));
                match &telemetry {
                    Some((_, t)) => {
                        let g = g.with_meter(&t.meter());
                        match t.tracer() {
                            Some(tracer) => g.with_tracer(tracer),
                            None => g,
                        }
                    }
                    None => g,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nats = match config.nats {
        Some(n) => Some(
            NatsFront::new(
                runtime.clone(),
                n,
                services.store.clone(),
                Some(services.alerts.clone()),
            )?
            .with_decision_log(services.decision_log.clone()),
        ),
        None => None,
    };
    if let Some((_, t)) = &telemetry {
        for g in &gateways {
            t.observe_gateway(g.name(), g.stats());
        }
        if let Some(n) = &nats {
            t.observe_gateway(n.name(), n.stats());
            t.observe_nats(n.name(), n.partition_stats());
        }
        t.observe_store(services.store.clone());
        t.observe_alerts(services.alerts.clone());
        if let Some(log) = &services.decision_log {
            t.observe_decision_log(log.clone());
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        // Installed before the gateways connect: from then on SIGHUP reloads, never kills.
        let _reloader = AbortOnDrop(reload_on_sighup(Arc::clone(&watcher), &args.config)?);
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
        let telemetry_task = match &telemetry {
            Some((config, telemetry)) => {
                let server = TelemetryServer::bind(
                    config,
                    telemetry.clone(),
                    runtime.clone(),
                    readiness(&gateways, nats.as_ref(), &services.store),
                )
                .await?;
                let addr = server.local_addr().context("telemetry address")?;
                tracing::info!("metrics on http://{addr}/metrics, health on /healthz and /readyz");
                eprintln!("twinguard serve: metrics on http://{addr}/metrics");
                Some(tokio::spawn(server.serve(std::future::pending())))
            }
            None => None,
        };
        // One signal stops every front end.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let _signal = AbortOnDrop(tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        }));
        let front = async {
            match &nats {
                Some(n) => n
                    .run(stopped(stop_rx.clone()))
                    .await
                    .map_err(anyhow::Error::from),
                None => Ok(()),
            }
        };
        let brokers = async {
            if gateways.is_empty() {
                return Ok(());
            }
            gateway::run_all(&gateways, stopped(stop_rx.clone())).await
        };
        let (r, n) = tokio::join!(brokers, front);
        n?;
        for task in admin_task.iter().chain(telemetry_task.iter()) {
            task.abort();
        }
        anyhow::Ok(r)
    });
    services.alerts.flush();
    // Outside the async runtime: the OTLP exporters' blocking clients push what they hold.
    if let Some((_, t)) = &telemetry {
        t.shutdown();
    }
    if let Some(log) = &services.decision_log {
        if let Err(e) = log.flush() {
            eprintln!("twinguard serve: decision log: {e}");
        }
    }
    if let Some(n) = &nats {
        let stats = n.stats();
        eprintln!(
            "twinguard serve: {} (nats) stopped; received {}, forwarded {}, quarantined {}, alerts {}, shed over budget {}",
            n.name(),
            stats.received.load(Ordering::Relaxed),
            stats.forwarded.load(Ordering::Relaxed),
            stats.quarantined.load(Ordering::Relaxed),
            stats.alerts.load(Ordering::Relaxed),
            stats.shed.load(Ordering::Relaxed),
        );
    }
    for g in &gateways {
        let stats = g.stats();
        eprintln!(
            "twinguard serve: {} stopped; received {}, forwarded {}, quarantined {} ({} refused by the broker), alerts {}, shed over budget {}, retained skipped {}",
            g.name(),
            stats.received.load(Ordering::Relaxed),
            stats.forwarded.load(Ordering::Relaxed),
            stats.quarantined.load(Ordering::Relaxed),
            stats.refused.load(Ordering::Relaxed),
            stats.alerts.load(Ordering::Relaxed),
            stats.shed.load(Ordering::Relaxed),
            stats.retained_skipped.load(Ordering::Relaxed),
        );
    }
    result??;
    Ok(ExitCode::SUCCESS)
}

/// What `/readyz` checks besides a loaded generation: every broker connection up, and the
/// quarantine store taking writes.
fn readiness(
    gateways: &[Gateway],
    nats: Option<&NatsFront>,
    store: &QuarantineStore,
) -> Vec<(String, ReadyCheck)> {
    let mut checks: Vec<(String, ReadyCheck)> = gateways
        .iter()
        .map(|g| {
            let stats = g.stats();
            let check: ReadyCheck = Box::new(move || {
                if stats.connected.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("not connected to its broker".to_owned())
                }
            });
            (format!("gateway {:?}", g.name()), check)
        })
        .collect();
    if let Some(n) = nats {
        let stats = n.stats();
        checks.push((
            format!("nats {:?}", n.name()),
            Box::new(move || {
                if stats.connected.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("not connected to the NATS cluster".to_owned())
                }
            }),
        ));
    }
    let store = store.clone();
    checks.push((
        "quarantine store".to_owned(),
        Box::new(move || store.probe().map_err(|e| twinguard::error_chain(&e))),
    ));
    checks
}

/// SIGHUP reloads the config and the policies, as the file watcher does (a broken file keeps
/// the last good generation; service tables wait for a restart), as Mosquitto users expect.
#[cfg(unix)]
fn reload_on_sighup(watcher: Arc<Watcher>, config: &Path) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let config = config.display().to_string();
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(config = %config, "SIGHUP: reloading the config and its policies");
            let watcher = Arc::clone(&watcher);
            // The watcher logs the outcome: the new generation, or why the last good one stays.
            let _ = tokio::task::spawn_blocking(move || watcher.reload("SIGHUP")).await;
        }
    }))
}

/// No SIGHUP here: nothing to handle.
#[cfg(not(unix))]
fn reload_on_sighup(_watcher: Arc<Watcher>, _config: &Path) -> Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
