//! The plugin's state and its decision on one message, free of FFI: what the broker thread
//! does with a PUBLISH is decided here and applied by the callbacks in `lib.rs`.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use twinguard::alerts::{Clock, EventAction, SecurityEvent, SystemClock};
use twinguard::budget::{self, Budgets, Verdict};

use twinguard::judge::{Judge, Stored};
use twinguard::services::{ServiceError, Services};
use twinguard::telemetry::Telemetry;
use twinguard::watch::Watcher;
use twinguard::{error_chain as chain, FileConfig, Message, Outcome, Runtime};

use crate::metrics::MetricsListener;
use crate::options::{Identity, Options};

/// Everything the plugin holds between `mosquitto_plugin_init` and `_cleanup`.
pub struct Plugin {
    /// The metrics and health listener (`plugin_opt_metrics_listen`). First, so that it
    /// stops (and its thread is joined) before anything it reads goes.
    metrics: Option<MetricsListener>,
    /// The parsed `plugin_opt_*` options.
    pub options: Options,
    judge: Judge,
    watcher: Option<Watcher>,
    /// The store, the sinks and the retention thread, held for as long as the plugin.
    _services: Services,
    /// The watcher's counters (reloads, failures) as last reported in the broker's log.
    logged: Cell<(u64, u64)>,
    /// The watcher's reload attempts when `logged` was last brought up to date.
    attempts_seen: Cell<u64>,
    /// Each identity's token bucket (`plugin_opt_device_budget_rate`); `None` when off. Only
    /// the broker's thread touches it, so it takes no lock.
    budgets: RefCell<Option<Budgets>>,
    /// `plugin_opt_device_budget_exempt`.
    exempt: std::collections::HashSet<Box<str>>,
    /// Messages the budget shed, for the metrics listener.
    shed: Arc<AtomicU64>,
}

/// What [`Plugin::admit`] decided for one PUBLISH, with what to tell the broker's log and the
/// alerts topic.
pub enum Admission {
    /// Within its identity's budget: judge it.
    Judge,
    /// Within budget again after an episode of shedding: judge it, and log the line.
    Resumed(String),
    /// Over budget: deny it unjudged. The first of an episode carries the warning for the
    /// broker's log and the security events (already handed to the sinks) to publish on the
    /// alerts topic.
    Shed(Option<(String, Vec<SecurityEvent>)>),
}

impl Plugin {
    /// Reads the config, builds the runtime, opens the quarantine store and the alert sinks,
    /// starts the metrics listener (with `plugin_opt_metrics_listen`) and the reload watcher.
    /// The error names the file, or the option, and what is wrong with it. A `[telemetry]`
    /// table in the config is `twinguard serve`'s and is ignored here: the file may be shared.
    pub fn open(options: Options) -> Result<Self, String> {
        let path = &options.config;
        let config = FileConfig::from_file(path).map_err(|e| chain(&e))?;
        let services = Services::open(&config).map_err(|e| {
            let hint = if matches!(e, ServiceError::Store(_)) {
                " (started as root, Mosquitto runs plugins as its `user`, `mosquitto` by \
                 default: that user must be able to write the store's folder)"
            } else {
                ""
            };
            format!("{}: {}{hint}", path.display(), chain(&e))
        })?;
        let telemetry = match options.metrics_listen {
            Some(_) => Some(Telemetry::new(&options.metrics_service_name).map_err(|e| {
                format!(
                    "plugin_opt_metrics_service_name {:?}: {}",
                    options.metrics_service_name,
                    chain(&e)
                )
            })?),
            None => None,
        };
        let builder = Runtime::builder(config.runtime);
        let runtime = services
            .runtime(match &telemetry {
                Some(t) => builder.meter(t.meter()),
                None => builder,
            })
            .map_err(|e| format!("{}: {}", path.display(), chain(&e)))?;
        let shed = Arc::new(AtomicU64::new(0));
        let metrics = match (options.metrics_listen, telemetry) {
            (Some(listen), Some(t)) => {
                t.observe_store(services.store.clone());
                t.observe_budget(Arc::clone(&shed));
                t.observe_alerts(services.alerts.clone());
                if let Some(log) = &services.decision_log {
                    t.observe_decision_log(log.clone());
                }
                Some(MetricsListener::start(
                    listen,
                    t,
                    runtime.clone(),
                    services.store.clone(),
                )?)
            }
            _ => None,
        };
        let watcher = match options.reload {
            Some(every) => Some(
                Watcher::spawn(runtime.clone(), path, every)
                    .map_err(|e| format!("cannot start the reload watcher: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            metrics,
            budgets: RefCell::new(Budgets::new(&options.device_budget)),
            exempt: options
                .device_budget_exempt
                .iter()
                .map(|id| id.as_str().into())
                .collect(),
            shed,
            options,
            judge: Judge::new(
                runtime,
                services.store.clone(),
                Some(services.alerts.clone()),
            )
            .with_decision_log(services.decision_log.clone())
            // Unset, no wait: it would be one commit per message on the broker's thread (0.24x
            // of the broker's throughput instead of 0.67x with the pack; BENCHMARKS.md), and
            // Mosquitto keeps in-flight messages only as durably as its autosave.
            .with_state(services.state_for_acks(false)),
            watcher,
            _services: services,
            logged: Cell::new((0, 0)),
            attempts_seen: Cell::new(0),
        })
    }

    /// Checks one PUBLISH of `device` (the identity the policies see) against its budget, on
    /// the broker's thread, before anything else is done with it. `topic` is read only for
    /// the security event of an episode's first shed message.
    pub fn admit(&self, device: &str, topic: impl FnOnce() -> String) -> Admission {
        let verdict = match self.budgets.borrow_mut().as_mut() {
            Some(_) if self.exempt.contains(device) => return Admission::Judge,
            Some(b) => b.take(device, Instant::now()),
            None => return Admission::Judge,
        };
        match verdict {
            Verdict::Pass => Admission::Judge,
            Verdict::Resumed { shed } => Admission::Resumed(format!(
                "device \"{}\" back within its budget; {shed} of its messages were shed",
                budget::shown(device)
            )),
            Verdict::Shed { first } => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                Admission::Shed(first.then(|| self.over_budget(device, &topic())))
            }
        }
    }

    /// The line for the broker's log when episodes ended as their identities were forgotten
    /// (see [`Budgets::swept`]). On the broker's thread, at its tick.
    pub fn budget_news(&self) -> Option<String> {
        let (devices, shed) = self.budgets.borrow_mut().as_mut()?.swept()?;
        Some(format!(
            "{devices} identities back within their budgets, forgotten before they sent again; \
             their episodes shed {shed} messages"
        ))
    }

    /// An episode's warning, and its security event handed to the sinks (the events they
    /// took, deduplicated and rate-limited, come back for the alerts topic).
    fn over_budget(&self, device: &str, topic: &str) -> (String, Vec<SecurityEvent>) {
        let alert = self
            .options
            .device_budget
            .alert(device, "plugin_opt_device_budget_rate");
        let events = match self.judge.alerts() {
            Some(alerts) => alerts.send_all(&[SecurityEvent::from_alert(
                device,
                topic,
                EventAction::Shed,
                self.judge.runtime().policy_set().generation(),
                &alert,
                SystemClock.now_ms(),
            )]),
            None => Vec::new(),
        };
        (alert.detail, events)
    }

    /// The judge flow, to clone into worker threads.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }

    /// What the watcher did since the last call, as lines for the broker's log (warnings
    /// first). Called on the broker's thread, which alone may log.
    pub fn reload_news(&self) -> Vec<(bool, String)> {
        let Some(watcher) = &self.watcher else {
            return Vec::new();
        };
        // The broker ticks on every pass of its loop, many times per second under load: the
        // status (a lock, the error's text cloned) only when an attempt was made since.
        let attempts = watcher.attempts();
        if self.attempts_seen.replace(attempts) == attempts {
            return Vec::new();
        }
        let status = watcher.status();
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
        let set = self.judge.runtime().policy_set();
        format!(
            "config {}: {} policies, generation {}; identity {}; content type {} unless \
             declared; quarantine store {}; alerts topic {}; reload {}; device budget {}",
            o.config.display(),
            set.policies().len(),
            set.generation(),
            match o.identity {
                Identity::ClientId => "client-id",
                Identity::Username => "username",
            },
            o.content_type,
            self.judge.store().path().display(),
            o.alerts_topic.as_deref().unwrap_or("(none)"),
            o.reload.map_or_else(
                || "off".to_string(),
                |d| format!("every {} ms", d.as_millis())
            ),
            if o.device_budget.rate > 0.0 {
                format!(
                    "{} messages/s, {} at once, {} identities exempt",
                    o.device_budget.rate,
                    o.device_budget.burst(),
                    o.device_budget_exempt.len()
                )
            } else {
                "off".to_string()
            },
        ) + &match &self.metrics {
            Some(m) => format!(
                "; metrics on http://{}/metrics (health on /healthz, /readyz), service {:?}",
                m.local_addr(),
                o.metrics_service_name
            ),
            None => String::new(),
        }
    }

    /// Stops the metrics listener (joining its thread) and the watcher, and waits (up to 5 s)
    /// for the alert sinks to write what they hold.
    pub fn shut_down(mut self) {
        self.metrics.take();
        self.watcher.take();
        if let Some(alerts) = self.judge.alerts() {
            alerts.flush();
        }
    }
}

/// Commits a message the broker will never publish (see [`crate::workers::Done::undelivered`])
/// through the judge flow's store step.
pub fn hold(judge: &Judge, message: &Message, outcome: Outcome) -> Result<(), String> {
    match judge.settle(message, outcome, Some(&message.topic)).stored {
        Stored::Failed(e) => Err(chain(&e)),
        _ => Ok(()),
    }
}
