//! GDPR field redaction: removes or masks the personal-data fields named in the configuration
//! before a message leaves the gateway, and, with `detect`, finds personal data by pattern in
//! every string value wherever it is. See README.md for the configuration keys.

#![forbid(unsafe_code)]

mod detect;

use detect::{Detectors, Kind};
use twinguard_guest::text::Clipped;
use twinguard_guest::walk;
use twinguard_guest::{declare, ContentType, Edit, EditAction};
use twinguard_guest::{
    export_configured, Config, Configured, Decision, Field, FieldError, Message, Severity,
};

const KNOWN_KEYS: &[&str] = &[
    "remove",
    "mask",
    "mask-with",
    "alert-on-redact",
    "quarantine-unstructured",
    "detect",
    "names",
    "detect-action",
    "detect-skip",
];

/// How many fields a `pii-detected` alert names; the rest are counted.
const MAX_NAMED: usize = 16;

export_configured!(Settings);

/// Removes or masks configured fields: the policy is its settings, parsed once by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    remove: Vec<String>,
    mask: Vec<String>,
    /// The handles of `remove` and of `mask`, one per pointer, as declared: read by handle, a
    /// field is neither searched for by its pointer nor copied out of the message.
    remove_fields: Vec<Field>,
    mask_fields: Vec<Field>,
    mask_with: String,
    alert_on_redact: bool,
    quarantine_unstructured: bool,
    /// Detection by pattern in every string value; `None` without `detect`.
    detect: Option<Detect>,
}

/// The `detect*` settings.
#[derive(Debug, PartialEq)]
struct Detect {
    detectors: Detectors,
    /// `detect-action = "remove"`: remove the field instead of masking the matches.
    remove: bool,
    /// Never scanned: `detect-skip`, and the `remove` and `mask` pointers (redacted anyway).
    skip: Vec<String>,
}

/// A string value where personal data was found.
struct Found {
    pointer: String,
    /// The kinds found, in [`Kind`] order, each once.
    kinds: Vec<Kind>,
    /// The value with every match masked; empty with `detect-action = "remove"`.
    masked: String,
}

impl Detect {
    fn parse(config: &Config, remove: &[String], mask: &[String]) -> Result<Option<Self>, String> {
        let Some(list) = config.get("detect") else {
            for key in ["names", "detect-action", "detect-skip"] {
                if config.get(key).is_some() {
                    return Err(format!(
                        "config `{key}` has no effect without `detect` (e.g. detect = \"email,phone\")"
                    ));
                }
            }
            return Ok(None);
        };
        let mut kinds = Vec::new();
        for entry in list.split(',').map(str::trim) {
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.config_name() == entry)
                .ok_or_else(|| {
                    format!(
                        "config `detect`: unknown detector {entry:?}; expected a comma-separated \
                         list of `email`, `phone`, `iban`, `card`, `names`"
                    )
                })?;
            kinds.push(kind);
        }
        let names: Vec<&str> = config
            .get("names")
            .map(|list| list.split(',').map(str::trim).collect())
            .unwrap_or_default();
        if names.iter().any(|n| n.is_empty()) {
            return Err("config `names`: an empty name (check for a stray comma)".to_owned());
        }
        match (kinds.contains(&Kind::Name), names.is_empty()) {
            (true, true) => {
                return Err(
                    "config `detect` lists `names` but `names` is not set (e.g. names = \
                     \"Ada Lovelace,Grace Hopper\")"
                        .to_owned(),
                )
            }
            (false, false) => {
                return Err("config `names` is set but `detect` does not list `names`".to_owned())
            }
            _ => {}
        }
        let remove_found = match config.get("detect-action") {
            None | Some("mask") => false,
            Some("remove") => true,
            Some(other) => {
                return Err(format!(
                    "config `detect-action`: invalid value {other:?}: expected `mask` or `remove`"
                ))
            }
        };
        let mut skip = config.pointers("detect-skip")?;
        skip.extend(remove.iter().chain(mask).cloned());
        Ok(Some(Self {
            detectors: Detectors::new(kinds, &names),
            remove: remove_found,
            skip,
        }))
    }

    /// Every string value of the payload where personal data was found, in document order.
    fn scan(
        &self,
        content_type: ContentType,
        payload: &[u8],
        mask_with: &str,
    ) -> Result<Vec<Found>, String> {
        let mut found = Vec::new();
        let visit = |pointer: &str, text: &str| {
            let spans = self.detectors.find(text);
            if spans.is_empty() {
                return;
            }
            let mut kinds: Vec<Kind> = spans.iter().map(|s| s.kind).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let masked = if self.remove {
                String::new()
            } else {
                detect::mask(text, &spans, mask_with)
            };
            found.push(Found {
                pointer: pointer.to_owned(),
                kinds,
                masked,
            });
        };
        walk::strings(content_type, payload, &self.skip, visit)?;
        Ok(found)
    }

    /// The `pii-detected` alert's detail: every field and the kinds found there, never the data.
    fn detail(&self, found: &[Found]) -> String {
        let fields: Vec<String> = found
            .iter()
            .take(MAX_NAMED)
            .map(|f| {
                let kinds: Vec<&str> = f.kinds.iter().map(|k| k.as_str()).collect();
                format!("{} ({})", Clipped(&f.pointer), kinds.join(", "))
            })
            .collect();
        let mut detail = format!(
            "personal data {} at {}",
            if self.remove { "removed" } else { "masked" },
            fields.join("; ")
        );
        if found.len() > MAX_NAMED {
            detail.push_str(&format!("; and {} more fields", found.len() - MAX_NAMED));
        }
        detail
    }
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        // Comma-separated JSON Pointers; the empty pointer names the whole document, which
        // cannot be redacted.
        let remove = config.pointers("remove")?;
        let mask = config.pointers("mask")?;
        if config.get("remove").is_none()
            && config.get("mask").is_none()
            && config.get("detect").is_none()
        {
            return Err(
                "nothing to redact: set `remove` and/or `mask` to comma-separated JSON Pointers \
                 (e.g. remove = \"/owner/email\"), or `detect` to find personal data by \
                 pattern (e.g. detect = \"email,phone\")"
                    .to_owned(),
            );
        }
        if let Some(both) = remove.iter().find(|p| mask.contains(p)) {
            return Err(format!(
                "pointer {both:?} is in both `remove` and `mask`; keep it in one"
            ));
        }
        // Read on every message: handed over with it (contract 0.2). Detection reads the whole
        // payload through `host.payload` instead, so it declares nothing.
        let remove_fields = declare::fields(remove.iter().map(String::as_str))?;
        let mask_fields = declare::fields(mask.iter().map(String::as_str))?;
        let detect = Detect::parse(config, &remove, &mask)?;
        Ok(Self {
            remove,
            mask,
            remove_fields,
            mask_fields,
            mask_with: config.get("mask-with").unwrap_or("***").to_owned(),
            alert_on_redact: config.parse("alert-on-redact")?.unwrap_or(false),
            quarantine_unstructured: config.parse("quarantine-unstructured")?.unwrap_or(false),
            detect,
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

        let mut edits = Vec::new();
        let mut removed = Vec::new();
        let mut masked = Vec::new();
        for (pointer, &field) in self.remove.iter().zip(&self.remove_fields) {
            match present(msg, field, pointer) {
                Ok(true) => {
                    edits.push(edit(pointer, EditAction::Remove));
                    removed.push(pointer.as_str());
                }
                Ok(false) => {}
                Err(reason) => return Decision::quarantine(reason),
            }
        }
        for (pointer, &field) in self.mask.iter().zip(&self.mask_fields) {
            match present(msg, field, pointer) {
                Ok(true) => {
                    edits.push(edit(pointer, EditAction::Mask(self.mask_with.clone())));
                    masked.push(pointer.as_str());
                }
                Ok(false) => {}
                Err(reason) => return Decision::quarantine(reason),
            }
        }

        let found = match &self.detect {
            None => Vec::new(),
            Some(detect) => match detect.scan(content_type, msg.payload(), &self.mask_with) {
                Ok(found) => found,
                Err(why) => {
                    return Decision::quarantine(format!(
                        "pii-redact: cannot scan the payload for personal data: {}",
                        Clipped(&why)
                    ))
                }
            },
        };
        if let Some(whole) = found.iter().find(|f| f.pointer.is_empty()) {
            // The payload is one string: the empty pointer cannot be redacted (fail closed).
            let kinds: Vec<&str> = whole.kinds.iter().map(|k| k.as_str()).collect();
            return Decision::quarantine(format!(
                "pii-redact: the payload is a single string with personal data ({}); the whole \
                 document cannot be redacted",
                kinds.join(", ")
            ));
        }
        if !found.is_empty() {
            let remove = self.detect.as_ref().is_some_and(|d| d.remove);
            edits.extend(found.iter().map(|f| {
                let action = if remove {
                    EditAction::Remove
                } else {
                    EditAction::Mask(f.masked.clone())
                };
                edit(&f.pointer, action)
            }));
            // Every pointer names the field in the payload as received, and the host applies the
            // edits in order: removing `/a/1` first would shift `/a/2` onto `/a/1`. Applied from
            // the end of the document backwards, no edit moves a field a later one names.
            edits.sort_by(|a, b| document_order(&b.pointer, &a.pointer));
        }

        if edits.is_empty() {
            return Decision::allow();
        }
        let mut decision = edits.into_iter().fold(Decision::redact(), Decision::edit);
        if let Some(detect) = self.detect.as_ref().filter(|_| !found.is_empty()) {
            decision = decision.with_alert(Severity::Medium, "pii-detected", detect.detail(&found));
        }
        if self.alert_on_redact && !(removed.is_empty() && masked.is_empty()) {
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

fn edit(pointer: &str, action: EditAction) -> Edit {
    Edit {
        pointer: pointer.to_owned(),
        action,
    }
}

/// Compares two JSON Pointers by where their fields are in a document: token by token, array
/// indices as numbers, a field before the fields inside it. Only the order of an array's
/// elements (and of a field and its descendants) matters; member names compare as text.
fn document_order(a: &str, b: &str) -> std::cmp::Ordering {
    let mut a_tokens = a.split('/').skip(1);
    let mut b_tokens = b.split('/').skip(1);
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order.is_ne() {
                    return order;
                }
            }
        }
    }
}

/// Whether the field exists. A payload the host cannot parse is an error, not "absent": it might
/// carry the very data this policy exists to strip, so the caller quarantines it (fail closed).
fn present(msg: &Message, field: Field, pointer: &str) -> Result<bool, String> {
    match msg.get(field) {
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

    fn detect(pairs: &[(&str, &str)]) -> Detect {
        settings(pairs).unwrap().detect.unwrap()
    }

    /// (pointer, kinds, masked value) of every field found in a JSON payload.
    fn scan(detect: &Detect, payload: &str) -> Vec<(String, String, String)> {
        detect
            .scan(ContentType::Json, payload.as_bytes(), "***")
            .unwrap()
            .into_iter()
            .map(|f| {
                let kinds: Vec<&str> = f.kinds.iter().map(|k| k.as_str()).collect();
                (f.pointer, kinds.join(","), f.masked)
            })
            .collect()
    }

    #[test]
    fn detection_alone_is_enough_and_declares_nothing() {
        let (s, m) = declared(&[("detect", "email, phone,iban,card,names"), ("names", "Ada")]);
        let d = s.unwrap().detect.unwrap();
        assert!(m.fields.is_empty());
        assert!(!d.remove);
        assert!(d.skip.is_empty());
        // Without `detect` nothing is scanned, as before.
        assert_eq!(settings(&[("remove", "/a")]).unwrap().detect, None);
    }

    #[test]
    fn detection_settings_refusals_name_the_culprit() {
        let err = settings(&[("detect", "email,ssn")]).unwrap_err();
        assert!(err.contains("`detect`") && err.contains("\"ssn\""), "{err}");
        let err = settings(&[("detect", "email,names")]).unwrap_err();
        assert!(err.contains("`names` is not set"), "{err}");
        let err = settings(&[("detect", "email"), ("names", "Ada")]).unwrap_err();
        assert!(err.contains("does not list `names`"), "{err}");
        let err = settings(&[("detect", "names"), ("names", "Ada,,Bob")]).unwrap_err();
        assert!(
            err.contains("`names`") && err.contains("empty name"),
            "{err}"
        );
        let err = settings(&[("detect", "email"), ("detect-action", "drop")]).unwrap_err();
        assert!(
            err.contains("`detect-action`") && err.contains("\"drop\""),
            "{err}"
        );
        let err = settings(&[("detect", "email"), ("detect-skip", "ts")]).unwrap_err();
        assert!(err.contains("`detect-skip`"), "{err}");
        let err = settings(&[("remove", "/a"), ("detect-skip", "/ts")]).unwrap_err();
        assert!(err.contains("without `detect`"), "{err}");
    }

    #[test]
    fn scan_finds_every_field_wherever_it_is() {
        let d = detect(&[
            ("detect", "email,phone,iban,card,names"),
            ("names", "Ada Lovelace"),
            ("remove", "/owner/email"),
            ("detect-skip", "/debug"),
        ]);
        let found = scan(
            &d,
            r#"{"seq":1,"temp":20.5,"maintainer":"ops.lead@plant.example",
               "owner":{"email":"ada@example.com"},"debug":"ada@example.com",
               "log":[{"msg":"call Ada Lovelace at +49 170 1234567"},"ok"],
               "ops.lead@plant.example":"key, not value",
               "pay":"DE89 3704 0044 0532 0130 00","card":"4111 1111 1111 1111",
               "not-card":"4111 1111 1111 1112","fw":"2.14.1","ts":"1764000000123"}"#,
        );
        assert_eq!(
            found,
            [
                ("/maintainer", "email", "***"),
                ("/log/0/msg", "phone,name", "call *** at ***"),
                ("/pay", "iban", "***"),
                ("/card", "card", "***"),
            ]
            .map(|(p, k, m)| (p.to_owned(), k.to_owned(), m.to_owned()))
        );
        let found = d
            .scan(ContentType::Json, br#"{"a":"x@y.example"}"#, "***")
            .unwrap();
        assert_eq!(d.detail(&found), "personal data masked at /a (email)");
    }

    #[test]
    fn scan_reads_cbor_and_refuses_what_does_not_parse() {
        let d = detect(&[("detect", "email"), ("detect-action", "remove")]);
        // {"who": {"mail": "a@b.io"}}
        let cbor = b"\xa1\x63who\xa1\x64mail\x66a@b.io";
        let found = d.scan(ContentType::Cbor, cbor, "***").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer, "/who/mail");
        assert_eq!(
            d.detail(&found),
            "personal data removed at /who/mail (email)"
        );
        assert!(d.scan(ContentType::Json, b"{\"a\":", "***").is_err());
    }

    #[test]
    fn the_detail_never_carries_the_data_and_stays_short() {
        let d = detect(&[("detect", "email")]);
        let doc = format!("[{}]", vec!["\"someone@example.com\""; 40].join(","));
        let found = d.scan(ContentType::Json, doc.as_bytes(), "***").unwrap();
        let detail = d.detail(&found);
        assert!(!detail.contains("someone"), "{detail}");
        assert!(
            detail.starts_with("personal data masked at /0 (email); /1 (email)"),
            "{detail}"
        );
        assert!(detail.ends_with("; and 24 more fields"), "{detail}");
    }

    #[test]
    fn edits_run_from_the_end_of_the_document() {
        let mut pointers = vec!["/a/2", "/a/10", "/b", "/a/1", "/a/1/x", "/a"];
        pointers.sort_by(|a, b| document_order(b, a));
        assert_eq!(pointers, ["/b", "/a/10", "/a/2", "/a/1/x", "/a/1", "/a"]);
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
