//! Malformed- and oversized-payload guard: size bounds, allowed content types, a payload that
//! parses to an object, required fields of the right kind, forbidden fields absent. See
//! README.md for the configuration keys.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;

use twinguard_guest::{
    export_policy, Config, ContentType, Decision, FieldError, Message, Policy, Severity, Value,
};

const KNOWN_KEYS: &[&str] = &[
    "content-types",
    "max-bytes",
    "min-bytes",
    "required",
    "forbid",
];

thread_local! {
    // Parsed once by `init`, read by every `evaluate` of this instance.
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// Checks every message against the configured shape.
struct SchemaGuard;

impl Policy for SchemaGuard {
    fn init(config: &Config) -> Result<(), String> {
        let settings = Settings::from_config(config)?;
        SETTINGS.set(Some(settings));
        Ok(())
    }

    fn evaluate(msg: &Message) -> Decision {
        SETTINGS.with_borrow(|settings| match settings {
            Some(settings) => match settings.check(msg) {
                Ok(()) => Decision::allow(),
                Err(rejection) => Decision::quarantine(&rejection.reason).with_alert(
                    Severity::Medium,
                    rejection.code,
                    rejection.reason,
                ),
            },
            // The host calls `init` first; should it not, fail closed.
            None => Decision::quarantine("schema-guard: evaluate called before a successful init"),
        })
    }
}

export_policy!(SchemaGuard);

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

/// Why a message is quarantined: the alert code and the reason (also the alert detail).
#[derive(Debug, PartialEq)]
struct Rejection {
    code: &'static str,
    reason: String,
}

fn reject(code: &'static str, reason: String) -> Result<(), Rejection> {
    Err(Rejection { code, reason })
}

#[derive(Debug, PartialEq)]
struct Settings {
    content_types: Vec<ContentType>,
    max_bytes: usize,
    min_bytes: usize,
    required: Vec<(String, Kind)>,
    forbid: Vec<String>,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Self, String> {
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
        let forbid = match config.get("forbid") {
            None => Vec::new(),
            Some(list) => pointers("forbid", list)?,
        };
        if let Some((both, _)) = required.iter().find(|(p, _)| forbid.contains(p)) {
            return Err(format!(
                "config: pointer {both:?} is in both `required` and `forbid`; \
                 no message could pass"
            ));
        }
        Ok(Self {
            content_types,
            max_bytes,
            min_bytes,
            required,
            forbid,
        })
    }

    /// The first rule the message breaks, in the documented order.
    fn check(&self, msg: &Message) -> Result<(), Rejection> {
        let device = Quoted(msg.device_id());
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
                        describe(&other)
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
                            describe(&value)
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
                        describe(&value)
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
    device: Quoted<'_>,
    content_type: ContentType,
) -> Result<Option<Value>, Rejection> {
    msg.field(pointer).map_err(|err| {
        let reason = match err {
            FieldError::Malformed(why) => format!(
                "schema-guard: the {content_type} payload from device {device} is malformed: {}",
                clip_plain(&why)
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

/// A field value for an analyst: its kind, and the value when it is a short scalar.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::Integer(i) => format!("an integer ({i})"),
        Value::Float(f) => format!("a float ({f})"),
        Value::Text(text) => format!("a string ({})", Quoted(text)),
        Value::Bytes(bytes) => format!("a byte string ({} bytes)", bytes.len()),
        Value::Array(n) => format!("an array ({n} elements)"),
        Value::Object(n) => format!("an object ({n} members)"),
    }
}

/// Device text quoted for a reason, cut short: ids and payload strings come from devices, and
/// a decision past the host's decision-bytes limit would fault the policy instead of
/// quarantining. Formats only when a reason is written, so clean traffic allocates nothing.
#[derive(Debug, Clone, Copy)]
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 80;
        let text = self.0;
        match text.char_indices().nth(MAX_CHARS) {
            None => write!(f, "{text:?}"),
            Some((end, _)) => write!(
                f,
                "{:?}... ({} bytes)",
                text.get(..end).unwrap_or_default(),
                text.len()
            ),
        }
    }
}

/// A host message (a parser error), cut short like [`Quoted`].
fn clip_plain(text: &str) -> String {
    const MAX: usize = 320;
    match text.char_indices().nth(MAX) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}...", text.get(..end).unwrap_or_default()),
    }
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
        check_pointer(pointer).map_err(|why| format!("config `required`: {why}"))?;
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

/// Comma-separated JSON Pointers.
fn pointers(key: &str, list: &str) -> Result<Vec<String>, String> {
    let mut pointers: Vec<String> = Vec::new();
    for pointer in list.split(',').map(str::trim) {
        check_pointer(pointer).map_err(|why| format!("config `{key}`: {why}"))?;
        if !pointers.iter().any(|p| p == pointer) {
            pointers.push(pointer.to_owned());
        }
    }
    Ok(pointers)
}

/// RFC 6901, minus the empty pointer: the root is always checked (it must be an object).
fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Err(
            "the empty pointer \"\" names the whole document, not a field \
             (check for a stray comma)"
                .to_owned(),
        );
    }
    if !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON Pointer: it must start with '/' (e.g. \"/{pointer}\")"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "{pointer:?} is not a JSON Pointer: '~' must be followed by 0 ('~') or 1 ('/')"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_config(&pairs.iter().copied().collect())
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
        assert_eq!(describe(&Value::Text("x".into())), "a string (\"x\")");
        let long = "é".repeat(100);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("{:?}... (200 bytes)", "é".repeat(80))
        );
    }
}
