//! Shadow mode: a candidate version of a policy judges live traffic beside the active one. Its
//! verdicts are recorded, never enforced, and compared with the active version's: counts by
//! verdict pair and sample messages where they differ.
//!
//! The enforced path pays one atomic load when no shadow runs, and a clone of the message
//! handed to a bounded queue when one does. The candidate runs on its own thread, under its
//! own limits, with its own per-device state (so it cannot disturb the active version's); when
//! it falls behind, messages are skipped and counted rather than slowing the enforced path.
//!
//! The candidate judges each message on its own, as the device sent it: where the active
//! version sits after a redacting policy in its chain, the two saw slightly different payloads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::message::{Message, Outcome};
use crate::runtime::{evaluate_in, PolicySet};

/// Messages waiting for the candidate; beyond this, messages are skipped.
const QUEUE: usize = 1024;
/// Differing messages kept as samples.
const SAMPLES: usize = 20;
/// Payload bytes kept per sample.
const SAMPLE_BYTES: usize = 512;

/// What a shadow run has seen so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShadowReport {
    /// The policy shadowed.
    pub policy: String,
    /// The active version when the shadow started.
    pub active_version: String,
    /// The candidate's version.
    pub candidate_version: String,
    /// Messages both judged.
    pub compared: u64,
    /// Of those, with the same verdict.
    pub agreed: u64,
    /// Of those, with different verdicts.
    pub differed: u64,
    /// Messages skipped because the candidate fell behind.
    pub skipped: u64,
    /// Counts by `"<active> -> <candidate>"` verdict pair (`allow`, `redact`, `quarantine`,
    /// `alert`, `fault`).
    pub pairs: BTreeMap<String, u64>,
    /// The first messages where the verdicts differ.
    pub samples: Vec<ShadowSample>,
}

/// A message the two versions judged differently.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShadowSample {
    /// Its device.
    pub device_id: String,
    /// Its topic.
    pub topic: String,
    /// Its payload as the active chain forwarded it, that chain's redactions applied (lossy
    /// UTF-8, at most 512 bytes); `None` when the active chain held it back, since what a
    /// redacting policy would have removed from it is unknown (the quarantine store has it).
    pub payload: Option<String>,
    /// The active version's verdict.
    pub active: String,
    /// The candidate's verdict.
    pub candidate: String,
    /// The candidate's reason, when it quarantined or faulted.
    pub candidate_reason: Option<String>,
}

/// A message for the candidate: as the device sent it, the active verdict, and what a sample
/// may show of it.
type Judged = (Message, &'static str, Option<String>);

/// Where the running shadow, if any, sits: what every message looks at.
///
/// A guard of the slot costs two atomic read-modify-writes even when it is empty, as it
/// almost always is, so each message reads a flag first. The slot and the flag change only
/// together, here: a shadow is stored before the flag rises and the flag falls before the
/// shadow is taken. A message may then see the flag up and the slot empty (it offers
/// nothing), never the flag down while a shadow stays in the slot.
#[derive(Default)]
pub(crate) struct ShadowSlot {
    slot: arc_swap::ArcSwapOption<Shadow>,
    occupied: AtomicBool,
}

impl ShadowSlot {
    /// Offers a judged message to the running shadow. A shadow started while the message was
    /// judged may miss it, as it would have if it had started a moment later.
    pub(crate) fn offer(&self, message: &Message, outcome: &Outcome) {
        if self.occupied.load(Ordering::Acquire) {
            if let Some(shadow) = self.slot.load().as_deref() {
                shadow.offer(message, outcome);
            }
        }
    }

    /// Runs `shadow`, in place of the one running.
    pub(crate) fn start(&self, shadow: Shadow) {
        self.slot.store(Some(Arc::new(shadow)));
        self.occupied.store(true, Ordering::Release);
    }

    /// Takes the running shadow out, if one runs.
    pub(crate) fn stop(&self) -> Option<Arc<Shadow>> {
        self.occupied.store(false, Ordering::Release);
        self.slot.swap(None)
    }

    /// What `read` answers of the running shadow, if one runs.
    pub(crate) fn read<R>(&self, read: impl FnOnce(&Shadow) -> R) -> Option<R> {
        self.slot.load().as_deref().map(read)
    }
}

/// A running shadow: the candidate alone in a policy set, and its thread.
pub(crate) struct Shadow {
    policy: String,
    queue: SyncSender<Judged>,
    report: Arc<Mutex<ShadowReport>>,
    skipped: Arc<AtomicU64>,
}

impl Shadow {
    /// Starts the candidate's thread; it ends when the shadow is dropped.
    pub(crate) fn start(set: PolicySet, policy: String, active_version: String) -> Self {
        let candidate_version = set
            .policies()
            .first()
            .map(|p| p.version().to_owned())
            .unwrap_or_default();
        let report = Arc::new(Mutex::new(ShadowReport {
            policy: policy.clone(),
            active_version,
            candidate_version,
            ..ShadowReport::default()
        }));
        let (queue, rx) = mpsc::sync_channel::<Judged>(QUEUE);
        let sink = Arc::clone(&report);
        // A thread that cannot start leaves a shadow that compares nothing; the report shows
        // every message skipped, which is the honest answer.
        let _ = std::thread::Builder::new()
            .name("twinguard-shadow".into())
            .spawn(move || {
                while let Ok((message, active, shown)) = rx.recv() {
                    let outcome = evaluate_in(&set, &message);
                    record(&sink, &message, active, shown, &outcome);
                }
            });
        Self {
            policy,
            queue,
            report,
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands the message to the candidate when the active version of the shadowed policy
    /// judged it. Never waits.
    pub(crate) fn offer(&self, message: &Message, outcome: &Outcome) {
        let Some(active) = outcome
            .trace
            .iter()
            .find(|t| *t.policy == *self.policy)
            .map(|t| t.verdict.name())
        else {
            return;
        };
        // Samples leave through the admin API: they show what the active chain let through,
        // never a value one of its policies redacted.
        let shown = outcome.action.forwards().then(|| {
            let end = outcome.payload.len().min(SAMPLE_BYTES);
            String::from_utf8_lossy(&outcome.payload[..end]).into_owned()
        });
        match self.queue.try_send((message.clone(), active, shown)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The policy shadowed.
    pub(crate) fn policy(&self) -> &str {
        &self.policy
    }

    pub(crate) fn report(&self) -> ShadowReport {
        let mut r = self
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        r.skipped = self.skipped.load(Ordering::Relaxed);
        r
    }
}

fn record(
    report: &Mutex<ShadowReport>,
    message: &Message,
    active: &str,
    shown: Option<String>,
    outcome: &Outcome,
) {
    let (candidate, reason) = match outcome.trace.first() {
        Some(t) => (
            t.verdict.name(),
            match (&outcome.action, &t.verdict) {
                (crate::Action::Quarantine { reason, .. }, _) => Some(reason.clone()),
                (_, crate::Verdict::Fault(f)) => Some(f.to_string()),
                _ => None,
            },
        ),
        None => ("fault", Some("the candidate did not run".to_owned())),
    };
    let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
    r.compared += 1;
    *r.pairs
        .entry(format!("{active} -> {candidate}"))
        .or_default() += 1;
    if active == candidate {
        r.agreed += 1;
        return;
    }
    r.differed += 1;
    if r.samples.len() < SAMPLES {
        r.samples.push(ShadowSample {
            device_id: message.device_id.clone(),
            topic: message.topic.clone(),
            payload: shown,
            active: active.to_owned(),
            candidate: candidate.to_owned(),
            candidate_reason: reason,
        });
    }
}
