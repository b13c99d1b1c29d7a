//! What every front end sets up beside the runtime, written once: the quarantine store with
//! its retention sweeper, the alert sinks, and the decision log. `twinguard serve` and the Mosquitto plugin both
//! open them here, so a config means the same thing to both.

use std::path::Path;

use crate::alerts::{Alerts, AlertsError};
use crate::decision_log::{DecisionLog, DecisionLogError};
use crate::state::{StateConfig, StateDb, StateDbError};
use crate::store::{QuarantineStore, StoreError, Sweeper};
use crate::FileConfig;

/// The store and the alert sinks of one config file, the store's retention applied every
/// minute until this is dropped.
pub struct Services {
    /// Where quarantined messages are kept (`[quarantine]`).
    pub store: QuarantineStore,
    /// The alert sinks (`[alerts]`; built with the defaults when the table is absent, since its
    /// rate limiting also governs an alerts topic).
    pub alerts: Alerts,
    /// The hash-chained log of every decision (`[decision-log]`), when configured: hand it to
    /// the judge with [`Judge::with_decision_log`](crate::judge::Judge::with_decision_log).
    pub decision_log: Option<DecisionLog>,
    /// Where policies' state is kept across restarts (`[state]`; `None` with `persist =
    /// false`): build the runtime with [`Services::runtime`], which journals and restores it.
    pub state: Option<StateDb>,
    /// `[state]`, as the file gave it.
    state_config: Option<StateConfig>,
    _sweeper: Option<Sweeper>,
}

/// Why the services of a config could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The file has no `[quarantine]` table, and a front end cannot hold messages back without.
    #[error(
        "no [quarantine] table: a store is needed for the messages held back \
         (path = \"quarantine.db\")"
    )]
    NoQuarantine,
    /// The store could not be opened (or created).
    #[error("[quarantine]")]
    Store(#[source] StoreError),
    /// An alert sink could not be set up.
    #[error("[alerts]")]
    Alerts(#[source] AlertsError),
    /// The decision log could not be opened (or continued).
    #[error("[decision-log]")]
    DecisionLog(#[source] DecisionLogError),
    /// The state file could not be opened.
    #[error("[state]")]
    State(#[source] StateDbError),
    /// The runtime could not be built.
    #[error(transparent)]
    Runtime(#[from] crate::Error),
    /// The retention thread could not be started.
    #[error("cannot start the quarantine retention thread")]
    Sweeper(#[source] std::io::Error),
}

impl Services {
    /// Opens the store (its paths were resolved by [`FileConfig`]), starts its retention,
    /// builds the alert sinks, and opens the decision log when `[decision-log]` is set.
    pub fn open(file: &FileConfig) -> Result<Self, ServiceError> {
        let quarantine = file.quarantine.as_ref().ok_or(ServiceError::NoQuarantine)?;
        let store = QuarantineStore::open(&quarantine.path).map_err(ServiceError::Store)?;
        // FileConfig has resolved `alerts.file` already: resolving it again would double a
        // relative path.
        let alerts = Alerts::from_config(&file.alerts.clone().unwrap_or_default(), Path::new("."))
            .map_err(ServiceError::Alerts)?;
        // FileConfig has resolved `decision-log.path` already.
        let decision_log = match &file.decision_log {
            Some(c) => Some(DecisionLog::open(c).map_err(ServiceError::DecisionLog)?),
            None => None,
        };
        let state = match StateConfig::file(file.state.as_ref(), &quarantine.path) {
            Some(path) => Some(StateDb::open(path).map_err(ServiceError::State)?),
            None => None,
        };
        let sweeper = match quarantine.retention() {
            Some(r) => Some(Sweeper::start(store.clone(), r).map_err(ServiceError::Sweeper)?),
            None => None,
        };
        Ok(Self {
            store,
            alerts,
            decision_log,
            state,
            state_config: file.state.clone(),
            _sweeper: sweeper,
        })
    }

    /// The state file a front end waits for before acknowledging (hand it to `with_state`):
    /// [`state`](Self::state) when `[state] ack-after-commit` says so, or, unset, when the
    /// front end's `default` does (see [`StateConfig::ack_after_commit`]).
    pub fn state_for_acks(&self, default: bool) -> Option<StateDb> {
        let wait = StateConfig::acks_after_commit(self.state_config.as_ref(), default);
        self.state.clone().filter(|_| wait)
    }

    /// Builds the runtime `builder` describes, its state journaled to [`state`](Self::state)
    /// and restored from it before any message is judged.
    ///
    /// ```no_run
    /// use twinguard::services::Services;
    /// use twinguard::{FileConfig, Runtime};
    /// let file = FileConfig::from_file("twinguard.toml")?;
    /// let services = Services::open(&file)?;
    /// let runtime = services.runtime(Runtime::builder(file.runtime.clone()))?;
    /// # let _ = runtime;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn runtime(&self, builder: crate::RuntimeBuilder) -> Result<crate::Runtime, ServiceError> {
        let Some(db) = &self.state else {
            return Ok(builder.build()?);
        };
        let runtime = builder.journal(std::sync::Arc::new(db.clone())).build()?;
        let restored = db.restore(&runtime).map_err(ServiceError::State)?;
        tracing::info!(
            file = %db.path().display(),
            entries = restored.entries,
            skipped = restored.skipped,
            "policy state restored"
        );
        Ok(runtime)
    }
}
