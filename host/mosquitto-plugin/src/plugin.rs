//! The plugin's state and its decision on one message, free of FFI: what the broker thread
//! does with a PUBLISH is decided here and applied by the callbacks in `lib.rs`.

use std::cell::Cell;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use twinguard::alerts::{Alerts, SecurityEvent};
use twinguard::store::{QuarantineStore, Retention};
use twinguard::watch::Watcher;
use twinguard::{error_chain as chain, Action, Config, Message, Outcome, Runtime};

use crate::options::{Identity, Options};

/// Everything the plugin holds between `mosquitto_plugin_init` and `_cleanup`.
pub struct Plugin {
    /// The parsed `plugin_opt_*` options.
    pub options: Options,
    judge: Judge,
    watcher: Option<Watcher>,
    _retention: Option<RetentionThread>,
    /// The watcher's counters (reloads, failures) as last reported in the broker's log.
    logged: Cell<(u64, u64)>,
}

/// What judges a message: the runtime, the store it commits quarantined messages to, and the
/// alert sinks. Cheap to clone (shared handles), so worker threads each hold one.
#[derive(Clone)]
pub struct Judge {
    runtime: Runtime,
    store: QuarantineStore,
    alerts: Alerts,
}

/// What to do with a PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Route it as it is.
    Pass,
    /// Route it with this payload (redacted).
    Replace(Vec<u8>),
    /// Drop it (`MOSQ_ERR_ACL_DENIED`): quarantined and committed, or the commit failed.
    Deny,
}

/// The decision on one message, and what goes with it.
#[derive(Debug)]
pub struct Judgement {
    /// Pass, replace or deny.
    pub disposition: Disposition,
    /// Security events to publish on the alerts topic (already sent to the other sinks).
    pub events: Vec<SecurityEvent>,
    /// An error for the broker's log (a failed store commit).
    pub error: Option<String>,
    /// The generation of policies that judged it.
    pub generation: u64,
}

impl Plugin {
    /// Reads the config, builds the runtime, opens the quarantine store and the alert sinks,
    /// and starts the reload watcher. The error names the file and what is wrong with it.
    pub fn open(options: Options) -> Result<Self, String> {
        let path = &options.config;
        let config = Config::from_file(path).map_err(|e| chain(&e))?;
        let Some(quarantine) = config.quarantine.clone() else {
            return Err(format!(
                "{}: no [quarantine] table: the plugin needs a store for the messages it \
                 holds back (path = \"quarantine.db\")",
                path.display()
            ));
        };
        // Config::from_file has resolved both paths against the config's folder already.
        let store = QuarantineStore::open(&quarantine.path).map_err(|e| {
            format!(
                "{}: [quarantine]: {} (started as root, Mosquitto runs plugins as its `user`, \
                 `mosquitto` by default: that user must be able to write the store's folder)",
                path.display(),
                chain(&e)
            )
        })?;
        // Built even without an [alerts] table: its rate limiting also governs the topic.
        let alerts =
            Alerts::from_config(&config.alerts.clone().unwrap_or_default(), Path::new("."))
                .map_err(|e| format!("{}: [alerts]: {}", path.display(), chain(&e)))?;
        let runtime =
            Runtime::new(config).map_err(|e| format!("{}: {}", path.display(), chain(&e)))?;
        let watcher = match options.reload {
            Some(every) => Some(
                Watcher::spawn(runtime.clone(), path, every)
                    .map_err(|e| format!("cannot start the reload watcher: {e}"))?,
            ),
            None => None,
        };
        let retention = match quarantine.retention() {
            Some(r) => Some(RetentionThread::start(store.clone(), r)?),
            None => None,
        };
        Ok(Self {
            options,
            judge: Judge {
                runtime,
                store,
                alerts,
            },
            watcher,
            _retention: retention,
            logged: Cell::new((0, 0)),
        })
    }

    /// The judging half, to clone into worker threads.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }

    /// What the watcher did since the last call, as lines for the broker's log (warnings
    /// first). Called on the broker's thread, which alone may log.
    pub fn reload_news(&self) -> Vec<(bool, String)> {
        let Some(status) = self.watcher.as_ref().map(Watcher::status) else {
            return Vec::new();
        };
        let (reloads, failures) = self.logged.replace((status.reloads, status.failures));
        let mut news = Vec::new();
        if status.failures != failures {
            let error = status.last_error.unwrap_or_default();
            let generation = status.generation;
            news.push((
                true,
                format!("{error}; generation {generation} stays active"),
            ));
        }
        if status.reloads != reloads {
            let generation = status.generation;
            news.push((
                false,
                format!("policies reloaded: generation {generation} active"),
            ));
        }
        news
    }

    /// One line for the broker's log at start-up.
    pub fn summary(&self) -> String {
        let o = &self.options;
        let set = self.judge.runtime.policy_set();
        format!(
            "config {}: {} policies, generation {}; identity {}; content type {} unless \
             declared; quarantine store {}; alerts topic {}; reload {}",
            o.config.display(),
            set.policies().len(),
            set.generation(),
            match o.identity {
                Identity::ClientId => "client-id",
                Identity::Username => "username",
            },
            o.content_type,
            self.judge.store.path().display(),
            o.alerts_topic.as_deref().unwrap_or("(none)"),
            o.reload.map_or_else(
                || "off".to_string(),
                |d| format!("every {} ms", d.as_millis())
            ),
        )
    }

    /// Stops the watcher and waits (up to 5 s) for the alert sinks to write what they hold.
    pub fn shut_down(mut self) {
        self.watcher.take();
        self.judge.alerts.flush();
    }
}

impl Judge {
    /// Judges one message: evaluates it, hands its alerts to the sinks, and commits it to the
    /// store when it is quarantined. Fails closed: a failed commit denies the message.
    pub fn judge(&self, message: &Message) -> Judgement {
        let outcome = self.runtime.evaluate(message);
        let events = if outcome.alerts.is_empty() {
            Vec::new()
        } else {
            self.alerts.handle(message, &outcome)
        };
        let (disposition, error) = match &outcome.action {
            Action::Quarantine { .. } => {
                // The message would have been routed to its own topic: that is where a
                // release sends it.
                match self.store.put(message, &outcome, Some(&message.topic)) {
                    Ok(_) => (Disposition::Deny, None),
                    Err(e) => (
                        Disposition::Deny,
                        Some(format!(
                            "quarantine store: {}; message from {:?} on {:?} denied without a record",
                            chain(&e),
                            message.device_id,
                            message.topic
                        )),
                    ),
                }
            }
            _ if outcome.redacted => (Disposition::Replace(outcome.payload), None),
            _ => (Disposition::Pass, None),
        };
        Judgement {
            disposition,
            events,
            error,
            generation: outcome.generation,
        }
    }

    /// Commits a message the broker will never publish (see [`crate::workers::Done::undelivered`]).
    pub fn hold(&self, message: &Message, outcome: &Outcome) -> Result<(), String> {
        self.store
            .put(message, outcome, Some(&message.topic))
            .map(|_| ())
            .map_err(|e| chain(&e))
    }
}

/// Applies `[quarantine]` retention every minute, off the broker's thread.
struct RetentionThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionThread {
    fn start(store: QuarantineStore, retention: Retention) -> Result<Self, String> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("twinguard-retention".into())
            .spawn(move || loop {
                if let Err(e) = store.apply_retention(&retention) {
                    tracing::warn!("quarantine retention: {e}");
                }
                if stopped.recv_timeout(Duration::from_secs(60))
                    != Err(mpsc::RecvTimeoutError::Timeout)
                {
                    return;
                }
            })
            .map_err(|e| format!("cannot start the retention thread: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for RetentionThread {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
