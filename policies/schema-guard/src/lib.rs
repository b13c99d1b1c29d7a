//! Malformed- and oversized-payload guard: size bounds, allowed content types, a payload that
//! parses to an object, required fields of the right kind, forbidden fields absent. See
//! README.md for the configuration keys.

#![forbid(unsafe_code)]

use std::fmt;

use twinguard_guest::declare;
use twinguard_guest::text::Clipped;
use twinguard_guest::{
    export_configured, pointer, Config, Configured, ContentType, Decision, FieldError, Message,
    Quoted, Severity, Value,
};

const KNOWN_KEYS: &[&str] = &[
    "content-types",
    "max-bytes",
    "min-bytes",
    "required",
    "forbid",
];

export_configured!(Settings);
// Checked by the host before it activates this module (see selftest.ndjson).
twinguard_guest::selftest!("../selftest.ndjson");

/// The kind a required field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    /// An integer or a float.
    Number,
    Boolean,
    Object,
    Array,
    /// Present, whatever the value (`null` included).
    Any,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            "any" => Self::Any,
            _ => return None,
        })
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            Self::String => matches!(value, Value::Text(_)),
            Self::Integer => matches!(value, Value::Integer(_)),
            Self::Number => matches!(value, Value::Integer(_) | Value::Float(_)),
            Self::Boolean => matches!(value, Value::Boolean(_)),
            Self::Object => matches!(value, Value::Object(_)),
            Self::Array => matches!(value, Value::Array(_)),
            Self::Any => true,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
            Self::Any => "any",
        })
    }
}

/// The message's device id, quoted, for a reason: fetched from the host only when a reason is
/// written. Clean messages need no reason, so the policy does not declare the device id
/// (contract 0.2) and most calls never copy it.
#[derive(Clone, Copy)]
struct DeviceId<'a>(&'a Message);

impl fmt::Display for DeviceId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Quoted(self.0.device_id()).fmt(f)
    }
}

/// Why a message is quarantined: the alert code and the reason (also the alert detail).
#[derive(Debug, PartialEq)]
struct Rejection {
    code: &'static str,
    reason: String,
}

fn reject(code: &'static str, reason: String) -> Result<(), Rejection> {
    Err(Rejection { code, reason })
}

/// Checks every message against the configured shape: the policy is its settings, parsed once
/// by `init`.
#[derive(Debug, PartialEq)]
struct Settings {
    content_types: Vec<ContentType>,
    max_bytes: usize,
    min_bytes: usize,
    required: Vec<(String, Kind)>,
    forbid: Vec<String>,
}

impl Configured for Settings {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(KNOWN_KEYS)?;
        let content_types = match config.get("content-types") {
            None => vec![ContentType::Json, ContentType::Cbor],
            Some(list) => content_types(list)?,
        };
        let max_bytes = config.parse("max-bytes")?.unwrap_or(65_536);
        let min_bytes = config.parse("min-bytes")?.unwrap_or(1);
        if min_bytes > max_bytes {
            return Err(format!(
                "config `min-bytes` ({min_bytes}) is above `max-bytes` ({max_bytes}): \
                 every message would be refused"
            ));
        }
        let required = match config.get("required") {
            None => Vec::new(),
            Some(list) => required(list)?,
        };
        // Not the empty pointer: the root is always checked (it must be an object).
        let forbid = config.pointers("forbid")?;
        if let Some((both, _)) = required.iter().find(|(p, _)| forbid.contains(p)) {
            return Err(format!(
                "config: pointer {both:?} is in both `required` and `forbid`; \
                 no message could pass"
            ));
        }
        // Read on every message: handed over with it (contract 0.2). The root is checked to
        // be an object. The device id only words rejections: fetched then, not declared.
        declare::field("")?;
        declare::fields(required.iter().map(|(p, _)| p.as_str()))?;
        declare::fields(forbid.iter().map(String::as_str))?;
        Ok(Self {
            content_types,
            max_bytes,
            min_bytes,
            required,
            forbid,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        match self.check(msg) {
            Ok(()) => Decision::allow(),
            Err(rejection) => Decision::quarantine(&rejection.reason).with_alert(
                Severity::Medium,
                rejection.code,
                rejection.reason,
            ),
        }
    }
}

impl Settings {
    /// The first rule the message breaks, in the documented order.
    fn check(&self, msg: &Message) -> Result<(), Rejection> {
        let device = DeviceId(msg);
        // From the envelope only: an oversized payload must not cost a parse.
        let len = msg.payload_len();
        if len > self.max_bytes {
            return reject(
                "oversized",
                format!(
                    "schema-guard: payload of {len} bytes from device {device} is over \
                     max-bytes {}",
                    self.max_bytes
                ),
            );
        }
        if len < self.min_bytes {
            return reject(
                "undersized",
                format!(
                    "schema-guard: payload of {len} bytes from device {device} is under \
                     min-bytes {}",
                    self.min_bytes
                ),
            );
        }
        let content_type = msg.content_type();
        if !self.content_types.contains(&content_type) {
            return reject(
                "content-type",
                format!(
                    "schema-guard: content type {content_type} from device {device} is not in \
                     content-types {}",
                    self.content_types
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
        }
        if !content_type.is_structured() {
            // Text and binary have no fields to require or forbid.
            return Ok(());
        }

        match lookup(msg, "", device, content_type)? {
            Some(Value::Object(_)) => {}
            Some(other) => {
                return reject(
                    "schema",
                    format!(
                        "schema-guard: the {content_type} payload from device {device} is {}, \
                         expected an object at the root",
                        other.describe()
                    ),
                );
            }
            // The root of a document that parsed always exists; refuse rather than assume.
            None => {
                return reject(
                    "malformed",
                    format!(
                        "schema-guard: the {content_type} payload from device {device} is empty"
                    ),
                );
            }
        }
        for (pointer, kind) in &self.required {
            match lookup(msg, pointer, device, content_type)? {
                None => {
                    return reject(
                        "schema",
                        format!(
                            "schema-guard: required field {pointer} ({kind}) is missing from \
                             device {device}'s payload"
                        ),
                    );
                }
                Some(value) if !kind.matches(&value) => {
                    return reject(
                        "schema",
                        format!(
                            "schema-guard: field {pointer} from device {device} is {}, \
                             expected {kind}",
                            value.describe()
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        for pointer in &self.forbid {
            if let Some(value) = lookup(msg, pointer, device, content_type)? {
                return reject(
                    "schema",
                    format!(
                        "schema-guard: forbidden field {pointer} is present in device {device}'s \
                         payload ({})",
                        value.describe()
                    ),
                );
            }
        }
        Ok(())
    }
}

/// A field of a structured payload; a payload that does not parse is a `malformed` rejection.
fn lookup(
    msg: &Message,
    pointer: &str,
    device: DeviceId<'_>,
    content_type: ContentType,
) -> Result<Option<Value>, Rejection> {
    msg.field(pointer).map_err(|err| {
        let reason = match err {
            FieldError::Malformed(why) => format!(
                "schema-guard: the {content_type} payload from device {device} is malformed: {}",
                Clipped(&why)
            ),
            // Pointers are checked at init and the payload is structured: neither can happen.
            other => {
                format!("schema-guard: lookup of {pointer:?} failed for device {device}: {other}")
            }
        };
        Rejection {
            code: "malformed",
            reason,
        }
    })
}

fn content_types(list: &str) -> Result<Vec<ContentType>, String> {
    let mut types = Vec::new();
    for name in list.split(',').map(str::trim) {
        let content_type = match name {
            "json" => ContentType::Json,
            "cbor" => ContentType::Cbor,
            "text" => ContentType::Text,
            "binary" => ContentType::Binary,
            other => {
                return Err(format!(
                    "config `content-types`: invalid value {other:?} in {list:?}: expected \
                     json, cbor, text or binary"
                ))
            }
        };
        if !types.contains(&content_type) {
            types.push(content_type);
        }
    }
    Ok(types)
}

/// The `pointer:kind` entries of `required`.
fn required(list: &str) -> Result<Vec<(String, Kind)>, String> {
    let mut fields: Vec<(String, Kind)> = Vec::new();
    for entry in list.split(',').map(str::trim) {
        // The kind is after the last colon: a member name may contain one.
        let Some((pointer, kind_name)) = entry.rsplit_once(':') else {
            return Err(format!(
                "config `required`: entry {entry:?} has no kind: write pointer:kind, e.g. \
                 \"/seq:integer\""
            ));
        };
        let kind_name = kind_name.trim();
        let Some(kind) = Kind::parse(kind_name) else {
            return Err(format!(
                "config `required`: entry {entry:?} has unknown kind {kind_name:?}: expected \
                 string, integer, number, boolean, object, array or any"
            ));
        };
        let pointer = pointer.trim();
        pointer::check_field(pointer).map_err(|why| format!("config `required`: {why}"))?;
        match fields.iter().find(|(p, _)| p == pointer) {
            Some((_, other)) if *other != kind => {
                return Err(format!(
                    "config `required`: {pointer:?} is required both as {other} and as {kind}"
                ));
            }
            Some(_) => {}
            None => fields.push((pointer.to_owned(), kind)),
        }
    }
    Ok(fields)
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
    fn declares_the_root_and_the_required_and_forbidden_fields() {
        let (s, m) = declared(&[]);
        s.unwrap();
        assert_eq!(m.fields, [""]);
        assert_eq!(m.envelope, declare::Envelope::NONE);
        let (s, m) = declared(&[("required", "/seq:integer,/id:string"), ("forbid", "/blob")]);
        s.unwrap();
        assert_eq!(m.fields, ["", "/seq", "/id", "/blob"]);
        assert!(m.keep_last.is_empty() && m.metrics.is_empty());
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.content_types, [ContentType::Json, ContentType::Cbor]);
        assert_eq!((s.min_bytes, s.max_bytes), (1, 65_536));
        assert!(s.required.is_empty() && s.forbid.is_empty());
    }

    #[test]
    fn options() {
        let s = settings(&[
            ("content-types", "json, text,json"),
            ("max-bytes", "4096"),
            ("min-bytes", "0"),
            (
                "required",
                "/device:string, /seq:integer,/ts:integer,/metrics:object,/a~1b:c:any",
            ),
            ("forbid", "/blob, /operator"),
        ])
        .unwrap();
        assert_eq!(s.content_types, [ContentType::Json, ContentType::Text]);
        assert_eq!((s.min_bytes, s.max_bytes), (0, 4096));
        assert_eq!(
            s.required,
            [
                ("/device".to_owned(), Kind::String),
                ("/seq".to_owned(), Kind::Integer),
                ("/ts".to_owned(), Kind::Integer),
                ("/metrics".to_owned(), Kind::Object),
                ("/a~1b:c".to_owned(), Kind::Any),
            ]
        );
        assert_eq!(s.forbid, ["/blob", "/operator"]);
    }

    #[test]
    fn refusals_name_the_culprit() {
        for (pairs, needles) in [
            (
                &[("max_bytes", "1")][..],
                &["`max_bytes`", "`max-bytes`"][..],
            ),
            (
                &[("content-types", "json,xml")],
                &["`content-types`", "\"xml\""],
            ),
            (&[("content-types", "")], &["`content-types`", "\"\""]),
            (&[("max-bytes", "64k")], &["`max-bytes`", "\"64k\""]),
            (&[("min-bytes", "-1")], &["`min-bytes`", "\"-1\""]),
            (
                &[("min-bytes", "10"), ("max-bytes", "5")],
                &["`min-bytes`", "`max-bytes`"],
            ),
            (
                &[("required", "/seq")],
                &["`required`", "\"/seq\"", "no kind"],
            ),
            (&[("required", "/seq:int")], &["`required`", "\"int\""]),
            (&[("required", "seq:integer")], &["`required`", "\"seq\""]),
            (&[("required", "/a:any,")], &["`required`", "no kind"]),
            (&[("required", ":object")], &["`required`", "empty pointer"]),
            (
                &[("required", "/a:string,/a:integer")],
                &["`required`", "\"/a\""],
            ),
            (&[("forbid", "/blob,")], &["`forbid`", "empty pointer"]),
            (&[("forbid", "/a~")], &["`forbid`", "'~'"]),
            (
                &[("required", "/a:any"), ("forbid", "/a")],
                &["`required`", "`forbid`", "\"/a\""],
            ),
        ] {
            let err = settings(pairs).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{pairs:?}: {err}");
            }
        }
    }

    #[test]
    fn kinds() {
        assert!(Kind::Number.matches(&Value::Integer(3)));
        assert!(Kind::Number.matches(&Value::Float(3.5)));
        assert!(!Kind::Integer.matches(&Value::Float(3.0)));
        assert!(!Kind::String.matches(&Value::Null));
        assert!(Kind::Any.matches(&Value::Null));
        assert!(!Kind::Object.matches(&Value::Array(0)));
        assert_eq!(Value::Text("x".into()).describe(), "a string (\"x\")");
        let long = "é".repeat(100);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("{:?}... (200 bytes)", "é".repeat(80))
        );
    }
}
