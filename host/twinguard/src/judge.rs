//! The one judge flow every front end calls: **evaluate → alert sinks → store on quarantine**.
//!
//! The MQTT gateway and the Mosquitto plugin hold transport only; what happens to a message
//! between "received" and "forward it / hold it back" is decided here, once.
//!
//! # A store write that fails
//!
//! A quarantined message is held back *because* its record is what an operator reviews,
//! releases or replays; without the record it would be lost. So the rule, for every front end:
//! **a quarantined message whose record could not be committed is neither forwarded nor
//! acknowledged; the front end makes its sender deliver it again.** The gateway leaves the
//! message unacknowledged and drops its broker connection (the broker redelivers it on the
//! persistent session); the Mosquitto plugin disconnects the publisher before its PUBACK (the
//! client sends it again when it reconnects). [`Judgement::stored`] is
//! [`Stored::Failed`] in that case, and the error names the device and topic.
//!
//! # Policies' state
//!
//! With [`Judge::with_state`], a message is settled only after the state its evaluation
//! changed is committed to the state file, so a front end that acknowledges a settled message
//! never acknowledges one whose lessons a restart would forget.
//!
//! # The decision log
//!
//! With [`Judge::with_decision_log`], every settled message is also recorded in the
//! hash-chained [`DecisionLog`], after the store commit, so a record of a quarantined message
//! says under which store id it was kept, or that the store write failed.

use std::sync::Arc;

use crate::alerts::{Alerts, SecurityEvent};
use crate::decision_log::DecisionLog;
use crate::state::StateDb;
use crate::store::{QuarantineStore, StoreError};
use crate::{Action, Bytes, Message, Outcome, Runtime};

/// Evaluates messages and does what their outcome asks of the services. Cheap to clone
/// (shared handles), so every worker thread holds one.
///
/// ```no_run
/// use twinguard::judge::{Judge, Stored};
/// use twinguard::store::QuarantineStore;
/// use twinguard::{ContentType, FileConfig, Message, Runtime};
///
/// let file = FileConfig::from_file("twinguard.toml")?;
/// let store = QuarantineStore::open("quarantine.db")?;
/// let judge = Judge::new(Runtime::new(file.runtime)?, store, None);
/// let message = Message::new("press-7", "plant/press-7/telemetry", ContentType::Json,
///     br#"{"temp": 21.5}"#.to_vec());
/// let judgement = judge.judge(&message, Some("twin/press-7/telemetry"));
/// match (judgement.forward(), &judgement.stored) {
///     (Some(payload), _) => { /* publish payload */ let _ = payload; }
///     (None, Stored::Failed(e)) => eprintln!("redeliver: {e}"),
///     (None, _) => { /* held back, durably: acknowledge */ }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Judge {
    runtime: Runtime,
    store: QuarantineStore,
    alerts: Option<Alerts>,
    source: Option<Arc<str>>,
    decision_log: Option<DecisionLog>,
    state: Option<StateDb>,
}

/// What the flow did with one message.
#[derive(Debug)]
#[non_exhaustive]
pub struct Judgement {
    /// The chain's outcome: its action, the payload to forward, alerts and trace.
    pub outcome: Outcome,
    /// The security events the sinks accepted (after rate limiting), e.g. for an alerts
    /// topic. Without alert sinks, every alert of the outcome as an event.
    pub events: Vec<SecurityEvent>,
    /// Whether a record was written.
    pub stored: Stored,
}

/// The quarantine record of a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stored {
    /// The message was not quarantined: nothing to store.
    Nothing,
    /// Quarantined and committed (fsynced) under this record id: the sender may be
    /// acknowledged.
    Record(u64),
    /// Quarantined, but the record could not be committed: the message must be delivered
    /// again (see the module documentation).
    Failed(StoreError),
}

impl Judgement {
    /// The payload to forward (redacted where a policy asked), or `None` when the message is
    /// held back. Shared: unredacted, these are the message's own bytes (clone to keep them).
    pub fn forward(&self) -> Option<&Bytes> {
        self.outcome
            .action
            .forwards()
            .then_some(&self.outcome.payload)
    }
}

impl Judge {
    /// A judge over `runtime` that keeps quarantined messages in `store` and hands alerts to
    /// `alerts` (rate-limited sinks; `None`: no sinks, every alert becomes an event).
    pub fn new(runtime: Runtime, store: QuarantineStore, alerts: Option<Alerts>) -> Self {
        Self {
            runtime,
            store,
            alerts,
            source: None,
            decision_log: None,
            state: None,
        }
    }

    /// Waits, after each evaluation that changed policies' state, until `state` has
    /// committed the change: a message is acknowledged only once a restart would remember
    /// what judging it taught the policies. `state` must be the runtime's journal (see
    /// [`Services::runtime`](crate::services::Services::runtime)).
    pub fn with_state(mut self, state: Option<StateDb>) -> Self {
        self.state = state;
        self
    }

    /// Records `source` (a gateway's configured name) with every quarantined message: where a
    /// release or replay publishes it again.
    pub fn with_source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records every decision in `log` (`None`: no decision log).
    pub fn with_decision_log(mut self, log: Option<DecisionLog>) -> Self {
        self.decision_log = log;
        self
    }

    /// The decision log, if any.
    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.decision_log.as_ref()
    }

    /// The runtime that evaluates.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The quarantine store.
    pub fn store(&self) -> &QuarantineStore {
        &self.store
    }

    /// The alert sinks, if any.
    pub fn alerts(&self) -> Option<&Alerts> {
        self.alerts.as_ref()
    }

    /// Judges one message: evaluates it, hands its alerts to the sinks, and commits it to the
    /// store when it is quarantined. `destination` is where it would have been forwarded (a
    /// release sends it there). Blocks for the evaluation and, on quarantine, for the commit:
    /// call it off any async executor's threads.
    pub fn judge(&self, message: &Message, destination: Option<&str>) -> Judgement {
        let outcome = self.runtime.evaluate(message);
        if let Some(state) = &self.state {
            // A failed commit is logged by the writer; the state is whole in memory, so the
            // message is still settled (see `crate::state`).
            let _ = state.sync();
        }
        self.settle(message, outcome, destination)
    }

    /// The flow after evaluation, for an outcome decided elsewhere (a message no route or
    /// template could place, a forward the broker refused): alerts, then the store, then the
    /// decision log.
    pub fn settle(
        &self,
        message: &Message,
        outcome: Outcome,
        destination: Option<&str>,
    ) -> Judgement {
        let events = match (&self.alerts, outcome.alerts.is_empty()) {
            (_, true) => Vec::new(),
            (Some(alerts), false) => alerts.handle(message, &outcome),
            (None, false) => SecurityEvent::from_outcome(message, &outcome),
        };
        let stored = match outcome.action {
            Action::Quarantine { .. } => {
                match self
                    .store
                    .put_from(message, &outcome, destination, self.source.as_deref())
                {
                    Ok(id) => Stored::Record(id),
                    Err(e) => {
                        tracing::error!(
                            device = %message.device_id,
                            topic = %message.topic,
                            "quarantine store: {}; the message is not acknowledged and must be \
                             delivered again",
                            crate::error_chain(&e)
                        );
                        Stored::Failed(e)
                    }
                }
            }
            _ => Stored::Nothing,
        };
        if let Some(log) = &self.decision_log {
            log.record_stored(message, &outcome, &stored);
        }
        Judgement {
            outcome,
            events,
            stored,
        }
    }

    /// Holds back a message the runtime did not judge (`reason` says why), under the current
    /// generation: the same flow as a quarantine verdict.
    pub fn hold(&self, message: &Message, reason: String, destination: Option<&str>) -> Judgement {
        let generation = self.runtime.policy_set().generation();
        self.settle(
            message,
            Outcome::held(message, reason, generation),
            destination,
        )
    }
}
