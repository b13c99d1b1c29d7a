//! Turning several findings about one message into one [`Decision`].
//!
//! A policy that checks many things per message (several metrics, several rules) finds zero, one
//! or several problems, each of which would hold the message, raise an alert, or both. Collect
//! them in [`Findings`] and let [`Findings::decide`] apply one rule: the worst finding wins
//! (quarantine over alert over allow), every alert is raised, and no finding is lost from the
//! reason or the alerts.
//!
//! ```
//! use twinguard_guest::findings::{Finding, Findings};
//! use twinguard_guest::{Severity, Verdict};
//!
//! // Nothing found: the message is allowed.
//! assert!(Findings::new("range-guard").decide().alerts().is_empty());
//!
//! // Alerts only: forwarded, the first alert is the verdict's, the others follow.
//! let mut findings = Findings::new("range-guard");
//! findings.push(Finding::alert(Severity::Medium, "stuck-value", "/t = 21.4 repeated 30 times"));
//! let decision = findings.decide();
//! let Verdict::Alert(alert) = decision.verdict() else { panic!("{decision:?}") };
//! assert_eq!(alert.detail, "range-guard: /t = 21.4 repeated 30 times");
//!
//! // Anything that holds the message quarantines it; the reason lists every held finding and
//! // every alert is still raised.
//! let mut findings = Findings::new("range-guard");
//! findings.push(Finding::alert(Severity::Medium, "stuck-value", "/t stuck"));
//! findings.push(Finding::detection(Severity::High, "out-of-range", "/h = 144 above max 100"));
//! findings.push(Finding::quarantine("cannot store the state of /t"));
//! let decision = findings.decide();
//! assert_eq!(
//!     decision.verdict(),
//!     &Verdict::Quarantine(
//!         "range-guard: /h = 144 above max 100; cannot store the state of /t".into()
//!     ),
//! );
//! let codes: Vec<_> = decision.alerts().iter().map(|a| a.code.as_str()).collect();
//! assert_eq!(codes, ["stuck-value", "out-of-range"]);
//! ```

use crate::{Decision, Severity};

/// One problem with a message: whether it holds the message, the alert it raises, and the
/// detail for the operator or analyst.
///
/// Built by [`detection`](Self::detection) (hold and alert), [`alert`](Self::alert) (forward and
/// alert) or [`quarantine`](Self::quarantine) (hold without an alert), so a finding always does
/// at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    quarantine: bool,
    alert: Option<(Severity, String)>,
    detail: String,
}

impl Finding {
    /// A security detection: hold the message and raise an alert. `detail` becomes part of the
    /// quarantine reason and the alert's detail.
    pub fn detection(
        severity: Severity,
        code: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            quarantine: true,
            alert: Some((severity, code.into())),
            detail: detail.into(),
        }
    }

    /// Forward the message, but raise an alert.
    pub fn alert(severity: Severity, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            quarantine: false,
            alert: Some((severity, code.into())),
            detail: detail.into(),
        }
    }

    /// Hold the message without an alert: for operational failures (such as state that cannot
    /// be stored) that are no security event but leave the policy unable to vouch for the
    /// message.
    pub fn quarantine(detail: impl Into<String>) -> Self {
        Self {
            quarantine: true,
            alert: None,
            detail: detail.into(),
        }
    }
}

/// In which order [`Findings::decide`] raises the alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlertOrder {
    /// In the order the findings were pushed.
    #[default]
    AsFound,
    /// Most severe first, in the order found among equals. Without a quarantine, the verdict's
    /// alert is then the most severe one, which is what a dashboard showing one alert per
    /// message should show.
    MostSevereFirst,
}

/// The findings about one message, and the rule that turns them into a [`Decision`]: see
/// [`decide`](Self::decide) and the [module documentation](self).
///
/// Creating one allocates nothing, so a policy can make one per message and clean traffic costs
/// nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Findings<'a> {
    prefix: &'a str,
    order: AlertOrder,
    findings: Vec<Finding>,
}

impl<'a> Findings<'a> {
    /// No findings yet. `prefix` (usually the policy's name) starts the quarantine reason and
    /// every alert detail, followed by `": "`, so an operator reading a chain's outcome knows
    /// which policy spoke; an empty prefix adds nothing.
    pub const fn new(prefix: &'a str) -> Self {
        Self {
            prefix,
            order: AlertOrder::AsFound,
            findings: Vec::new(),
        }
    }

    /// Raises the alerts in `order` instead of [`AlertOrder::AsFound`].
    pub const fn with_order(mut self, order: AlertOrder) -> Self {
        self.order = order;
        self
    }

    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
    }

    /// The decision: the worst finding wins, and every alert is raised.
    ///
    /// - nothing found: [`Decision::allow`];
    /// - any finding holds the message: [`Decision::quarantine`], the reason being the prefix
    ///   and the details of the findings that hold, in the order found, joined by `"; "`; every
    ///   alert (of held and forwarded findings alike) follows as an extra alert;
    /// - otherwise: [`Decision::alert`] with the first alert (in the [`AlertOrder`]), the others
    ///   as extra alerts.
    ///
    /// Every alert's detail is the prefix and its finding's detail.
    pub fn decide(self) -> Decision {
        let reasons: Vec<&str> = self
            .findings
            .iter()
            .filter(|f| f.quarantine)
            .map(|f| f.detail.as_str())
            .collect();
        let mut alerts: Vec<(Severity, &str, &str)> = self
            .findings
            .iter()
            .filter_map(|f| {
                let (severity, code) = f.alert.as_ref()?;
                Some((*severity, code.as_str(), f.detail.as_str()))
            })
            .collect();
        if self.order == AlertOrder::MostSevereFirst {
            // Stable: equals keep the order found.
            alerts.sort_by_key(|(severity, _, _)| std::cmp::Reverse(*severity));
        }
        let mut alerts = alerts.into_iter();
        let mut decision = if reasons.is_empty() {
            match alerts.next() {
                Some((severity, code, detail)) => {
                    Decision::alert(severity, code, self.prefixed(detail))
                }
                None => return Decision::allow(),
            }
        } else {
            Decision::quarantine(self.prefixed(&reasons.join("; ")))
        };
        for (severity, code, detail) in alerts {
            decision = decision.with_alert(severity, code, self.prefixed(detail));
        }
        decision
    }

    fn prefixed(&self, text: &str) -> String {
        if self.prefix.is_empty() {
            text.to_owned()
        } else {
            format!("{}: {text}", self.prefix)
        }
    }
}

impl Extend<Finding> for Findings<'_> {
    fn extend<I: IntoIterator<Item = Finding>>(&mut self, iter: I) {
        self.findings.extend(iter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    fn decide(order: AlertOrder, findings: Vec<Finding>) -> Decision {
        let mut all = Findings::new("p").with_order(order);
        all.extend(findings);
        all.decide()
    }

    fn codes(decision: &Decision) -> Vec<&str> {
        decision.alerts().iter().map(|a| a.code.as_str()).collect()
    }

    #[test]
    fn nothing_found_allows() {
        for order in [AlertOrder::AsFound, AlertOrder::MostSevereFirst] {
            assert_eq!(decide(order, Vec::new()), Decision::allow());
        }
    }

    #[test]
    fn alerts_only_forward_with_the_first_alert_in_order() {
        let found = || {
            vec![
                Finding::alert(Severity::Info, "reset", "/a reset"),
                Finding::alert(Severity::Medium, "anomaly", "/a far"),
                Finding::alert(Severity::Medium, "drift", "/b drifts"),
            ]
        };
        let d = decide(AlertOrder::AsFound, found());
        assert!(
            matches!(d.verdict(), Verdict::Alert(a) if a.code == "reset" && a.detail == "p: /a reset"),
            "{d:?}"
        );
        assert_eq!(codes(&d), ["anomaly", "drift"]);
        let d = decide(AlertOrder::MostSevereFirst, found());
        assert!(
            matches!(d.verdict(), Verdict::Alert(a) if a.code == "anomaly"),
            "{d:?}"
        );
        assert_eq!(codes(&d), ["drift", "reset"]);
    }

    #[test]
    fn a_held_finding_quarantines_and_every_alert_is_raised() {
        let found = || {
            vec![
                Finding::alert(Severity::Medium, "stuck", "/a stuck"),
                Finding::detection(Severity::High, "step", "/b step"),
                Finding::quarantine("/c state"),
            ]
        };
        let d = decide(AlertOrder::AsFound, found());
        assert_eq!(
            d.verdict(),
            &Verdict::Quarantine("p: /b step; /c state".into())
        );
        assert_eq!(codes(&d), ["stuck", "step"]);
        assert_eq!(d.alerts()[0].detail, "p: /a stuck");
        let d = decide(AlertOrder::MostSevereFirst, found());
        assert_eq!(codes(&d), ["step", "stuck"]);
        // Without an alert, only the reason tells.
        let d = decide(AlertOrder::AsFound, vec![Finding::quarantine("/c state")]);
        assert_eq!(d.verdict(), &Verdict::Quarantine("p: /c state".into()));
        assert!(d.alerts().is_empty());
    }

    #[test]
    fn an_empty_prefix_adds_nothing() {
        let mut findings = Findings::new("");
        findings.push(Finding::detection(Severity::High, "x", "detail"));
        let d = findings.decide();
        assert_eq!(d.verdict(), &Verdict::Quarantine("detail".into()));
        assert_eq!(d.alerts()[0].detail, "detail");
    }
}
