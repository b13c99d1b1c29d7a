//! GDPR field redaction: removes or masks the personal-data fields named in the configuration
//! before a message leaves the gateway. See README.md for the configuration keys.

#![forbid(unsafe_code)]

use twinguard_guest::declare;
use twinguard_guest::{
    export_configured, Config, Configured, Decision, FieldError, Message, Severity,
};

const KNOWN_KEYS: &[&str] = &[
    "remove",
    "mask",
    "mask-with",
    "alert-on-redact",
    "quarantine-unstructured",
];

export_configured!(Settings);

/// Removes or masks configured fields: the policy is its settings, parsed once by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    remove: Vec<String>,
    mask: Vec<String>,
    mask_with: String,
    alert_on_redact: bool,
    quarantine_unstructured: bool,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        // Comma-separated JSON Pointers; the empty pointer names the whole document, which
        // cannot be redacted.
        let remove = config.pointers("remove")?;
        let mask = config.pointers("mask")?;
        if config.get("remove").is_none() && config.get("mask").is_none() {
            return Err(
                "nothing to redact: set `remove` and/or `mask` to comma-separated JSON Pointers \
                 (e.g. remove = \"/owner/email\")"
                    .to_owned(),
            );
        }
        if let Some(both) = remove.iter().find(|p| mask.contains(p)) {
            return Err(format!(
                "pointer {both:?} is in both `remove` and `mask`; keep it in one"
            ));
        }
        // Read on every message: handed over with it (contract 0.2).
        declare::fields(remove.iter().chain(&mask).map(String::as_str))?;
        Ok(Self {
            remove,
            mask,
            mask_with: config.get("mask-with").unwrap_or("***").to_owned(),
            alert_on_redact: config.parse("alert-on-redact")?.unwrap_or(false),
            quarantine_unstructured: config.parse("quarantine-unstructured")?.unwrap_or(false),
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let content_type = msg.content_type();
        if !content_type.is_structured() {
            return if self.quarantine_unstructured {
                Decision::quarantine(format!(
                    "pii-redact: a {content_type} payload has no fields and cannot be redacted \
                     (quarantine-unstructured = true)"
                ))
            } else {
                Decision::allow()
            };
        }

        let mut decision = Decision::redact();
        let mut removed = Vec::new();
        let mut masked = Vec::new();
        for pointer in &self.remove {
            match present(msg, pointer) {
                Ok(true) => {
                    decision = decision.remove(pointer);
                    removed.push(pointer.as_str());
                }
                Ok(false) => {}
                Err(reason) => return Decision::quarantine(reason),
            }
        }
        for pointer in &self.mask {
            match present(msg, pointer) {
                Ok(true) => {
                    decision = decision.mask(pointer, &self.mask_with);
                    masked.push(pointer.as_str());
                }
                Ok(false) => {}
                Err(reason) => return Decision::quarantine(reason),
            }
        }

        if removed.is_empty() && masked.is_empty() {
            return Decision::allow();
        }
        if self.alert_on_redact {
            let mut detail = Vec::new();
            if !removed.is_empty() {
                detail.push(format!("removed {}", removed.join(", ")));
            }
            if !masked.is_empty() {
                detail.push(format!("masked {}", masked.join(", ")));
            }
            decision = decision.with_alert(Severity::Low, "pii-redacted", detail.join("; "));
        }
        decision
    }
}

/// Whether the field exists. A payload the host cannot parse is an error, not "absent": it might
/// carry the very data this policy exists to strip, so the caller quarantines it (fail closed).
fn present(msg: &Message, pointer: &str) -> Result<bool, String> {
    match msg.field(pointer) {
        Ok(value) => Ok(value.is_some()),
        Err(err @ FieldError::Malformed(_)) => Err(format!(
            "pii-redact: cannot check {pointer} for personal data: {err}"
        )),
        Err(err) => Err(format!("pii-redact: lookup of {pointer} failed: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        declared(pairs).0
    }

    /// `init` as the host runs it (declarations open), with what it declared.
    fn declared(pairs: &[(&str, &str)]) -> (Result<Settings, String>, declare::Manifest) {
        declare::capture(|| Settings::init(&pairs.iter().copied().collect()))
    }

    #[test]
    fn declares_the_fields_it_redacts() {
        let (s, m) = declared(&[
            ("remove", "/owner/email"),
            ("mask", "/badge/holder,/owner/name"),
        ]);
        s.unwrap();
        assert_eq!(m.fields, ["/owner/email", "/badge/holder", "/owner/name"]);
        assert_eq!(m.envelope, declare::Envelope::NONE);
    }

    #[test]
    fn defaults() {
        let s = settings(&[("remove", "/owner/email, /badge/holder")]).unwrap();
        assert_eq!(s.remove, ["/owner/email", "/badge/holder"]);
        assert!(s.mask.is_empty());
        assert_eq!(s.mask_with, "***");
        assert!(!s.alert_on_redact);
        assert!(!s.quarantine_unstructured);
    }

    #[test]
    fn refusals_name_the_culprit() {
        let err = settings(&[]).unwrap_err();
        assert!(err.contains("`remove`"), "{err}");
        let err = settings(&[("remove", "/a"), ("mask_with", "x")]).unwrap_err();
        assert!(
            err.contains("`mask_with`") && err.contains("`mask-with`"),
            "{err}"
        );
        let err = settings(&[("mask", "/a,")]).unwrap_err();
        assert!(
            err.contains("`mask`") && err.contains("empty pointer"),
            "{err}"
        );
        let err = settings(&[("remove", "owner/email")]).unwrap_err();
        assert!(err.contains("\"owner/email\""), "{err}");
        let err = settings(&[("remove", "/a~2")]).unwrap_err();
        assert!(err.contains("'~'"), "{err}");
        let err = settings(&[("remove", "/a"), ("alert-on-redact", "yes")]).unwrap_err();
        assert!(
            err.contains("`alert-on-redact`") && err.contains("\"yes\""),
            "{err}"
        );
        let err = settings(&[("remove", "/a"), ("mask", "/a")]).unwrap_err();
        assert!(err.contains("both"), "{err}");
    }

    #[test]
    fn escapes_and_options() {
        let s = settings(&[
            ("mask", "/a~1b,/c~0d,/e/0"),
            ("mask-with", "[redacted]"),
            ("alert-on-redact", "true"),
            ("quarantine-unstructured", "true"),
        ])
        .unwrap();
        assert_eq!(s.mask, ["/a~1b", "/c~0d", "/e/0"]);
        assert_eq!(s.mask_with, "[redacted]");
        assert!(s.alert_on_redact && s.quarantine_unstructured);
    }
}
