//! Device-spoofing guard: the authenticated device id must be in the inventory, and the topic
//! (and optionally the payload) must name that same id. See README.md for the configuration keys.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use twinguard_guest::config::Action;
use twinguard_guest::declare::{self, Envelope};
use twinguard_guest::{
    export_configured, Config, Configured, Decision, Field, Message, Quoted, Severity, Value,
};

const KNOWN_KEYS: &[&str] = &[
    "topic-segment",
    "inventory",
    "payload-field",
    "on-unknown",
    "on-mismatch",
];

export_configured!(Settings);

/// The rules, in the order they are checked.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Inventory,
    Topic,
    PayloadField,
}

/// One broken rule: its alert code, the detail, and what the configuration says to do.
struct Violation {
    code: &'static str,
    detail: String,
    on: Action,
}

/// Checks the claimed identities of a message against the authenticated one: the policy is its
/// settings, parsed once by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    topic_segment: usize,
    /// `None`: every authenticated id may publish. A set, because a plant has thousands of
    /// devices and this runs on every message.
    inventory: Option<Inventory>,
    /// The pointer and its handle, as declared: read by handle, the claim is neither searched
    /// for by its pointer nor copied out of the message.
    payload_field: Option<(String, Field)>,
    on_unknown: Action,
    on_mismatch: Action,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        let inventory = match config.get("inventory") {
            None => None,
            Some("registry") => Some(Inventory::Registry),
            Some(list) => Some(Inventory::Listed(inventory(list)?)),
        };
        // The whole document (the empty pointer) is never a device id.
        let pointer = config.pointer("payload-field")?;
        // Read on every message: handed over with it (contract 0.2).
        declare::envelope(Envelope::DEVICE_ID | Envelope::TOPIC)?;
        let payload_field = pointer
            .map(|pointer| Ok::<_, String>((pointer.to_owned(), declare::field(pointer)?)))
            .transpose()?;
        Ok(Self {
            topic_segment: config.parse("topic-segment")?.unwrap_or(1),
            inventory,
            payload_field,
            on_unknown: config.action("on-unknown", Action::Quarantine)?,
            on_mismatch: config.action("on-mismatch", Action::Quarantine)?,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let mut alerts = Vec::new();
        for rule in [Rule::Inventory, Rule::Topic, Rule::PayloadField] {
            let Some(violation) = self.check(rule, msg) else {
                continue;
            };
            if violation.on == Action::Quarantine {
                // Alert-mode violations found before this one are still reported.
                let decision = alerts
                    .into_iter()
                    .fold(Decision::quarantine(&violation.detail), add_alert);
                return add_alert(decision, violation);
            }
            alerts.push(violation);
        }
        alerts.into_iter().fold(Decision::allow(), add_alert)
    }
}

impl Settings {
    /// Whether `msg` breaks `rule`. Reasons are only formatted for violations: clean traffic,
    /// nearly all of it, costs no allocation.
    fn check(&self, rule: Rule, msg: &Message) -> Option<Violation> {
        let device = msg.device_id();
        match rule {
            Rule::Inventory => {
                let (known, which) = match self.inventory.as_ref()? {
                    Inventory::Listed(ids) => (ids.contains(device), "the inventory"),
                    Inventory::Registry => (msg.device().is_some(), "the device registry"),
                };
                if known {
                    return None;
                }
                Some(Violation {
                    code: "unknown-device",
                    detail: format!(
                        "identity-guard: device {} is not in {which} (topic {})",
                        Quoted(device),
                        Quoted(msg.topic())
                    ),
                    on: self.on_unknown,
                })
            }
            Rule::Topic => {
                let index = self.topic_segment;
                let detail = match msg.topic_segments().nth(index) {
                    Some(segment) if segment == device => return None,
                    Some(segment) => format!(
                        "identity-guard: topic {} names device {} (segment {index}) but the \
                         sender authenticated as {}",
                        Quoted(msg.topic()),
                        Quoted(segment),
                        Quoted(device)
                    ),
                    None => format!(
                        "identity-guard: topic {} has {} segment(s), so no segment {index} \
                         to match the authenticated device {}",
                        Quoted(msg.topic()),
                        msg.topic_segments().count(),
                        Quoted(device)
                    ),
                };
                Some(Violation {
                    code: "spoofed-identity",
                    detail,
                    on: self.on_mismatch,
                })
            }
            Rule::PayloadField => {
                let (pointer, field) = self.payload_field.as_ref()?;
                // Absent: nothing claimed. Unparsable or unstructured: schema-guard's job.
                let value = msg.get(*field).ok().flatten()?;
                if value.as_str() == Some(device) {
                    return None;
                }
                Some(Violation {
                    code: "spoofed-identity",
                    detail: self.claim_detail(pointer, value, device),
                    on: self.on_mismatch,
                })
            }
        }
    }

    /// The detail of a payload claim that is not the sender's id. The claim is payload data, so
    /// it is described, not quoted, unless it is an id of the listed inventory: then it is a
    /// name from the configuration, and which device was impersonated is what the analyst needs.
    fn claim_detail(&self, pointer: &str, value: &Value, device: &str) -> String {
        let listed = match (&self.inventory, value) {
            (Some(Inventory::Listed(ids)), Value::Text(id)) => ids.get(id.as_str()),
            _ => None,
        };
        let claim = match listed {
            Some(id) => format!("inventory device {}", Quoted(id)),
            None => value.describe(),
        };
        format!(
            "identity-guard: payload field {pointer} is {claim} but the sender authenticated as {}",
            Quoted(device)
        )
    }
}

fn add_alert(decision: Decision, violation: Violation) -> Decision {
    decision.with_alert(Severity::High, violation.code, violation.detail)
}

/// Where the known devices come from.
#[derive(Debug, PartialEq)]
enum Inventory {
    /// The ids listed in `inventory`.
    Listed(HashSet<String>),
    /// `inventory = "registry"`: the devices of the host's registry (`[registry]`), asked per
    /// message (`host.device-entry`).
    Registry,
}

/// The comma-separated device ids of `inventory`, whitespace trimmed.
fn inventory(list: &str) -> Result<HashSet<String>, String> {
    let mut ids = HashSet::new();
    for (i, id) in list.split(',').map(str::trim).enumerate() {
        if id.is_empty() {
            return Err(format!(
                "config `inventory`: entry {} of {list:?} is empty (check for a stray comma); \
                 leave `inventory` unset to accept every authenticated device",
                i + 1
            ));
        }
        ids.insert(id.to_owned());
    }
    Ok(ids)
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
    fn declares_the_envelope_and_the_payload_field() {
        let (s, m) = declared(&[]);
        s.unwrap();
        assert_eq!(m.envelope, Envelope::DEVICE_ID | Envelope::TOPIC);
        assert!(m.fields.is_empty());
        let (s, m) = declared(&[("payload-field", "/meta/device")]);
        s.unwrap();
        assert_eq!(m.fields, ["/meta/device"]);
        assert!(m.keep_last.is_empty() && m.metrics.is_empty());
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.topic_segment, 1);
        assert_eq!(s.inventory, None);
        assert_eq!(s.payload_field, None);
        assert_eq!(s.on_unknown, Action::Quarantine);
        assert_eq!(s.on_mismatch, Action::Quarantine);
    }

    #[test]
    fn options() {
        let s = settings(&[
            ("topic-segment", "2"),
            ("inventory", " temp-0001 ,vib-0002,temp-0001"),
            ("payload-field", "/meta/device"),
            ("on-unknown", "alert"),
            ("on-mismatch", "quarantine"),
        ])
        .unwrap();
        assert_eq!(s.topic_segment, 2);
        let Some(Inventory::Listed(inventory)) = s.inventory else {
            panic!("{:?}", s.inventory);
        };
        assert_eq!(inventory.len(), 2);
        assert!(inventory.contains("temp-0001") && inventory.contains("vib-0002"));
        assert_eq!(
            s.payload_field.as_ref().map(|(p, _)| p.as_str()),
            Some("/meta/device")
        );
        assert_eq!(s.on_unknown, Action::Alert);
    }

    #[test]
    fn refusals_name_the_culprit() {
        for (pairs, needles) in [
            (&[("inventry", "a")][..], &["`inventry`", "`inventory`"][..]),
            (&[("topic-segment", "-1")], &["`topic-segment`", "\"-1\""]),
            (&[("topic-segment", "one")], &["`topic-segment`", "\"one\""]),
            (&[("inventory", "a,,b")], &["`inventory`", "entry 2"]),
            (&[("inventory", "")], &["`inventory`", "entry 1"]),
            (
                &[("payload-field", "device")],
                &["`payload-field`", "\"device\""],
            ),
            (
                &[("payload-field", "")],
                &["`payload-field`", "empty pointer"],
            ),
            (&[("payload-field", "/a~2")], &["`payload-field`", "'~'"]),
            (&[("on-unknown", "drop")], &["`on-unknown`", "\"drop\""]),
            (&[("on-mismatch", "Alert")], &["`on-mismatch`", "\"Alert\""]),
        ] {
            let err = settings(pairs).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{pairs:?}: {err}");
            }
        }
    }

    #[test]
    fn a_payload_claim_is_described_unless_it_is_a_listed_device() {
        let s = settings(&[("inventory", "temp-0007,temp-0008")]).unwrap();
        let mail = Value::Text("ada.lovelace@example.com".into());
        let detail = s.claim_detail("/device", &mail, "temp-0007");
        assert_eq!(
            detail,
            "identity-guard: payload field /device is a string (24 characters, \"…@…\") but the \
             sender authenticated as \"temp-0007\""
        );
        for secret in ["ada.lovelace", "example.com"] {
            assert!(!detail.contains(secret), "{detail}");
        }
        let detail = s.claim_detail("/device", &Value::Text("temp-0008".into()), "temp-0007");
        assert_eq!(
            detail,
            "identity-guard: payload field /device is inventory device \"temp-0008\" but the \
             sender authenticated as \"temp-0007\""
        );
        // Without a listed inventory nothing is known about the claim: described.
        let s = settings(&[]).unwrap();
        let detail = s.claim_detail("/device", &Value::Text("temp-0008".into()), "temp-0007");
        assert!(
            detail.contains("is a string (9 characters, \"t…\")") && !detail.contains("0008"),
            "{detail}"
        );
        let detail = s.claim_detail("/device", &Value::Integer(3), "vib-0003");
        assert!(detail.contains("is an integer (1 digit)"), "{detail}");
    }
}
