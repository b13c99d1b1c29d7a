//! The plugin's metrics and health listener (`plugin_opt_metrics_listen`): the same
//! `/metrics`, `/healthz` and `/readyz` as `twinguard serve` (see `docs/metrics.md`), served
//! by [`twinguard::telemetry::TelemetryServer`] on a thread of its own with a single-threaded
//! tokio runtime. Nothing here touches the broker: no `mosquitto_*` call, no broker thread.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use twinguard::store::QuarantineStore;
use twinguard::telemetry::{
    ReadyCheck, Telemetry, TelemetryConfig, TelemetryError, TelemetryServer,
};
use twinguard::Runtime;

/// How long stopping waits for a scrape's blocking work (reading the store) to finish.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// The running listener. Dropping it stops the listener and joins its thread, so that
/// `mosquitto_plugin_cleanup` leaves no thread behind.
pub struct MetricsListener {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    /// Binds `listen` and serves on a thread named `twinguard-metrics`. Returns once the
    /// socket is bound: a port in use fails here, naming `plugin_opt_metrics_listen` and the
    /// address. `/readyz` checks the loaded generation and that `store` takes a write.
    pub fn start(
        listen: SocketAddr,
        telemetry: Telemetry,
        runtime: Runtime,
        store: QuarantineStore,
    ) -> Result<Self, String> {
        let failed = |why: &dyn std::fmt::Display| {
            format!("plugin_opt_metrics_listen {listen}: cannot listen: {why}")
        };
        let mut config = TelemetryConfig::default();
        config.listen = listen.to_string();
        let checks: Vec<(String, ReadyCheck)> = vec![(
            "quarantine store".to_owned(),
            Box::new(move || store.probe().map_err(|e| twinguard::error_chain(&e))),
        )];
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("twinguard-metrics".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!("no async runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let server =
                        match TelemetryServer::bind(&config, telemetry, runtime, checks).await {
                            Ok(s) => s,
                            Err(TelemetryError::Bind { source, .. }) => {
                                let _ = bound_tx.send(Err(source.to_string()));
                                return;
                            }
                            Err(e) => {
                                let _ = bound_tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                    let _ = bound_tx.send(server.local_addr().map_err(|e| e.to_string()));
                    // Resolves when the sender is used or dropped: when the plugin goes.
                    server
                        .serve(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
                // Connections still open are dropped; a scrape still reading the store is
                // waited for, briefly.
                rt.shutdown_timeout(STOP_PATIENCE);
            })
            .map_err(|e| failed(&format!("cannot start its thread: {e}")))?;
        let mut listener = Self {
            addr: listen,
            stop: Some(stop),
            thread: Some(thread),
        };
        match bound_rx.recv() {
            Ok(Ok(addr)) => {
                listener.addr = addr;
                Ok(listener)
            }
            // Dropping `listener` joins the thread, which has returned.
            Ok(Err(e)) => Err(failed(&e)),
            Err(_) => Err(failed(&"its thread stopped (see the broker's stderr)")),
        }
    }

    /// Where it listens (the port chosen, when `plugin_opt_metrics_listen` gave port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on that thread has been printed already; nothing more to do with it.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinguard_fixtures::prometheus::http_get;

    fn start(listen: SocketAddr, store: &QuarantineStore) -> Result<MetricsListener, String> {
        let telemetry = Telemetry::new("twinguard-mosquitto").unwrap();
        let config = twinguard::FileConfig::from_toml("", ".").unwrap();
        let runtime = Runtime::with_meter(config.runtime, telemetry.meter()).unwrap();
        MetricsListener::start(listen, telemetry, runtime, store.clone())
    }

    #[test]
    fn serves_refuses_a_taken_port_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = QuarantineStore::open(dir.path().join("q.db")).unwrap();
        let listener = start("127.0.0.1:0".parse().unwrap(), &store).unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        let url = addr.to_string();
        assert_eq!(http_get(&url, "/healthz").unwrap().0, 200);
        let (status, body) = http_get(&url, "/readyz").unwrap();
        assert_eq!((status, body.as_str()), (200, "ready\n"));
        let (status, body) = http_get(&url, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("service_name=\"twinguard-mosquitto\""),
            "{body}"
        );

        // The port is taken: the error names the option and the address.
        let e = start(addr, &store).err().unwrap();
        assert!(
            e.starts_with(&format!(
                "plugin_opt_metrics_listen {addr}: cannot listen: "
            )),
            "{e}"
        );

        // Dropped: the thread is joined, the socket closed.
        drop(listener);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
