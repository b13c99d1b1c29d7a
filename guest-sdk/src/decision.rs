//! What a policy answers: a verdict plus any extra security events.

use std::fmt;

use crate::bindings::wit;

/// A policy's answer for one message: a [`Verdict`] plus any further [`Alert`]s.
///
/// Build it from one of the constructors and chain the rest by value:
///
/// ```
/// use twinguard_guest::{Decision, Severity, Verdict};
///
/// let decision = Decision::redact()
///     .remove("/owner/email")
///     .mask("/owner/name", "***")
///     .with_alert(Severity::Low, "pii-redacted", "/owner/email, /owner/name");
/// assert!(matches!(decision.verdict(), Verdict::Redact(edits) if edits.len() == 2));
/// assert_eq!(decision.alerts().len(), 1);
///
/// // Edits turn an alert into "redact and alert"; a quarantine ignores them.
/// let decision = Decision::alert(Severity::High, "value-spike", "120 °C").remove("/raw");
/// assert!(matches!(decision.verdict(), Verdict::Redact(_)));
/// assert_eq!(decision.alerts()[0].code, "value-spike");
/// let decision = Decision::quarantine("spoofed device id").remove("/raw");
/// assert_eq!(decision.verdict(), &Verdict::Quarantine("spoofed device id".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[must_use = "a Decision does nothing until it is returned from `evaluate`"]
pub struct Decision {
    verdict: Verdict,
    alerts: Vec<Alert>,
}

impl Decision {
    /// Forward the message unchanged.
    pub fn allow() -> Self {
        Self::default()
    }

    /// Forward the message with edits applied by the host; add them with
    /// [`remove`](Self::remove) and [`mask`](Self::mask). Without edits this is [`allow`](Self::allow).
    pub fn redact() -> Self {
        Self::from(Verdict::Redact(Vec::new()))
    }

    /// Do not forward: hold the message for review. `reason` is shown to the operator. Stops the
    /// chain.
    pub fn quarantine(reason: impl Into<String>) -> Self {
        Self::from(Verdict::Quarantine(reason.into()))
    }

    /// Forward the message and raise a security event. `code` is short, stable and
    /// machine-readable (e.g. `device-spoofing`); `detail` is for the analyst.
    pub fn alert(severity: Severity, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::from(Verdict::Alert(Alert::new(severity, code, detail)))
    }

    /// Adds an edit removing the field at `pointer` (RFC 6901 JSON Pointer).
    ///
    /// On an allow or an alert, the verdict becomes a redaction (an alert verdict moves to the
    /// extra alerts, so it is still raised). On a quarantine the edit is dropped: the message
    /// is not forwarded, so there is nothing to redact.
    pub fn remove(self, pointer: impl Into<String>) -> Self {
        self.edit(Edit {
            pointer: pointer.into(),
            action: EditAction::Remove,
        })
    }

    /// Adds an edit replacing the value at `pointer`, whatever its type, with the text `with`.
    /// Same rules as [`remove`](Self::remove).
    pub fn mask(self, pointer: impl Into<String>, with: impl Into<String>) -> Self {
        self.edit(Edit {
            pointer: pointer.into(),
            action: EditAction::Mask(with.into()),
        })
    }

    /// Adds an edit. Same rules as [`remove`](Self::remove).
    pub fn edit(mut self, edit: Edit) -> Self {
        match &mut self.verdict {
            Verdict::Redact(edits) => edits.push(edit),
            Verdict::Quarantine(_) => {}
            Verdict::Allow => self.verdict = Verdict::Redact(vec![edit]),
            Verdict::Alert(_) => {
                let Verdict::Alert(alert) =
                    std::mem::replace(&mut self.verdict, Verdict::Redact(vec![edit]))
                else {
                    unreachable!("matched Verdict::Alert just above")
                };
                self.alerts.insert(0, alert);
            }
        }
        self
    }

    /// Raises a further security event, whatever the verdict.
    pub fn with_alert(
        mut self,
        severity: Severity,
        code: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        self.alerts.push(Alert::new(severity, code, detail));
        self
    }

    /// What happens to the message.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The further security events (beyond an [`Verdict::Alert`]).
    pub fn alerts(&self) -> &[Alert] {
        &self.alerts
    }

    pub(crate) fn into_wit(self) -> wit::Decision {
        let verdict = match self.verdict {
            // An empty redaction forwards the message unchanged: say so plainly.
            Verdict::Allow => wit::Verdict::Allow,
            Verdict::Redact(edits) if edits.is_empty() => wit::Verdict::Allow,
            Verdict::Redact(edits) => {
                wit::Verdict::Redact(edits.into_iter().map(Edit::into_wit).collect())
            }
            Verdict::Quarantine(reason) => wit::Verdict::Quarantine(reason),
            Verdict::Alert(alert) => wit::Verdict::Alert(alert.into_wit()),
        };
        wit::Decision {
            verdict,
            alerts: self.alerts.into_iter().map(Alert::into_wit).collect(),
        }
    }
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            alerts: Vec::new(),
        }
    }
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Verdict {
    /// Forward the message unchanged.
    #[default]
    Allow,
    /// Forward the message with these edits applied by the host, in order.
    Redact(Vec<Edit>),
    /// Do not forward. Hold the message for review; the text is the reason shown to the operator.
    Quarantine(String),
    /// Forward the message and raise this security event.
    Alert(Alert),
}

/// One redaction: a field named by JSON Pointer and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The field, as an RFC 6901 JSON Pointer (e.g. `/owner/email`, `/readings/0`). A pointer that
    /// matches nothing is not an error; the empty pointer (the whole document) is.
    pub pointer: String,
    /// What to do with it.
    pub action: EditAction,
}

impl Edit {
    fn into_wit(self) -> wit::Edit {
        wit::Edit {
            pointer: self.pointer,
            action: match self.action {
                EditAction::Remove => wit::EditAction::Remove,
                EditAction::Mask(with) => wit::EditAction::Mask(with),
            },
        }
    }
}

/// What to do with the field an [`Edit`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditAction {
    /// Remove the field (an object member or an array element).
    Remove,
    /// Replace the field's value, whatever its type, with this text.
    Mask(String),
}

/// A security event. The host adds the policy's name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// How serious the event is.
    pub severity: Severity,
    /// A short, stable, machine-readable code, e.g. `device-spoofing` or `value-spike`.
    pub code: String,
    /// Human-readable detail for the analyst, e.g. the offending value and the bound.
    pub detail: String,
}

impl Alert {
    /// An alert.
    pub fn new(severity: Severity, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            severity,
            code: code.into(),
            detail: detail.into(),
        }
    }

    fn into_wit(self) -> wit::Alert {
        wit::Alert {
            severity: self.severity.into_wit(),
            code: self.code,
            detail: self.detail,
        }
    }
}

/// How serious a security event is, lowest first (so `Severity::High > Severity::Low`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The lowercase name: `info`, `low`, `medium`, `high` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    fn into_wit(self) -> wit::Severity {
        match self {
            Self::Info => wit::Severity::Info,
            Self::Low => wit::Severity::Low,
            Self::Medium => wit::Severity::Medium,
            Self::High => wit::Severity::High,
            Self::Critical => wit::Severity::Critical,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_redaction_is_sent_as_allow() {
        let wit = Decision::redact().into_wit();
        assert!(matches!(wit.verdict, wit::Verdict::Allow));
    }

    #[test]
    fn edits_keep_their_order_and_alerts_follow() {
        let wit = Decision::allow()
            .mask("/b", "x")
            .remove("/a")
            .with_alert(Severity::Low, "c", "d")
            .into_wit();
        let wit::Verdict::Redact(edits) = wit.verdict else {
            panic!("expected a redaction");
        };
        assert_eq!(edits[0].pointer, "/b");
        assert!(matches!(&edits[0].action, wit::EditAction::Mask(m) if m == "x"));
        assert_eq!(edits[1].pointer, "/a");
        assert!(matches!(edits[1].action, wit::EditAction::Remove));
        assert_eq!(wit.alerts.len(), 1);
    }

    #[test]
    fn an_alert_verdict_survives_an_edit_in_first_place() {
        let decision = Decision::alert(Severity::High, "first", "")
            .with_alert(Severity::Low, "second", "")
            .remove("/x");
        let codes: Vec<_> = decision.alerts().iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["first", "second"]);
    }
}
