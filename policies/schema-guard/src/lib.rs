//! Malformed- and oversized-payload guard: size bounds, allowed content types, a payload that
//! parses to an object, required fields of the right kind, optional fields of the right kind when
//! present, forbidden fields absent and, in strict mode, no undeclared field. See README.md for
//! the configuration keys.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;

use twinguard_guest::declare;
use twinguard_guest::text::Clipped;
use twinguard_guest::walk;
use twinguard_guest::{
    export_configured, pointer, Config, Configured, ContentType, Decision, Field, FieldError,
    Message, Quoted, Severity, Value,
};

const KNOWN_KEYS: &[&str] = &[
    "content-types",
    "max-bytes",
    "min-bytes",
    "required",
    "optional",
    "forbid",
    "strict",
];

/// How many undeclared fields an `undeclared-field` detail names; the rest are counted.
const MAX_NAMED: usize = 5;

export_configured!(Settings);
// Checked by the host before it activates this module (see selftest.ndjson).
twinguard_guest::selftest!("../selftest.ndjson");

/// The kind a required (or optional) field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    /// An integer or a finite float: CBOR can carry NaN and the infinities, which JSON
    /// cannot, and a twin's arithmetic on one poisons every result after it.
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
            Self::Number => match value {
                Value::Integer(_) => true,
                Value::Float(x) => x.is_finite(),
                _ => false,
            },
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
    optional: Vec<(String, Kind)>,
    forbid: Vec<String>,
    strict: Strict,
    /// The fields `required` and `optional` declare, for `strict`.
    coverage: Coverage,
    /// The handles of the root and of `required`, `optional` and `forbid`, as declared: read by
    /// handle, a field is neither searched for by its pointer nor copied out of the message.
    handles: Handles,
}

#[derive(Debug, PartialEq)]
struct Handles {
    root: Field,
    required: Vec<Field>,
    optional: Vec<Field>,
    forbid: Vec<Field>,
}

/// What `strict` does with undeclared fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strict {
    /// Not looked for: the payload is not read.
    Off,
    /// Forward with an `undeclared-field` alert.
    Alert,
    /// Quarantine with an `undeclared-field` alert.
    Quarantine,
}

impl Strict {
    fn parse(config: &Config) -> Result<Self, String> {
        Ok(match config.get("strict") {
            None | Some("off") => Self::Off,
            Some("alert") => Self::Alert,
            Some("quarantine") => Self::Quarantine,
            Some(other) => {
                return Err(format!(
                    "config `strict`: invalid value {other:?}: expected `off`, `alert` or \
                     `quarantine`"
                ))
            }
        })
    }
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
            Some(list) => kinded("required", list)?,
        };
        let optional = match config.get("optional") {
            None => Vec::new(),
            Some(list) => kinded("optional", list)?,
        };
        // Not the empty pointer: the root is always checked (it must be an object).
        let forbid = config.pointers("forbid")?;
        if let Some((both, _)) = required.iter().find(|(p, _)| forbid.contains(p)) {
            return Err(format!(
                "config: pointer {both:?} is in both `required` and `forbid`; \
                 no message could pass"
            ));
        }
        if let Some((both, _)) = optional.iter().find(|(p, _)| forbid.contains(p)) {
            return Err(format!(
                "config: pointer {both:?} is in both `optional` and `forbid`; keep it in one"
            ));
        }
        if let Some((both, _)) = optional
            .iter()
            .find(|(p, _)| required.iter().any(|(r, _)| r == p))
        {
            return Err(format!(
                "config: pointer {both:?} is in both `required` and `optional`; keep it in one"
            ));
        }
        let strict = Strict::parse(config)?;
        if strict != Strict::Off && required.is_empty() && optional.is_empty() {
            return Err(format!(
                "config `strict` = {:?} needs the declared fields in `required` and/or \
                 `optional`: without them every field would be undeclared",
                config.get("strict").unwrap_or_default()
            ));
        }
        let coverage = Coverage::new(required.iter().chain(&optional).map(|(p, _)| p.as_str()));
        // Read on every message: handed over with it (contract 0.2). The root is checked to
        // be an object. The device id only words rejections: fetched then, not declared.
        // Strict mode reads the whole payload through `host.payload` instead.
        let handles = Handles {
            root: declare::field("")?,
            required: declare::fields(required.iter().map(|(p, _)| p.as_str()))?,
            optional: declare::fields(optional.iter().map(|(p, _)| p.as_str()))?,
            forbid: declare::fields(forbid.iter().map(String::as_str))?,
        };
        Ok(Self {
            content_types,
            max_bytes,
            min_bytes,
            required,
            optional,
            forbid,
            strict,
            coverage,
            handles,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        if let Err(rejection) = self.check(msg) {
            return Decision::quarantine(&rejection.reason).with_alert(
                Severity::Medium,
                rejection.code,
                rejection.reason,
            );
        }
        // After every other rule: their codes keep priority, and a payload that breaks one is
        // not walked.
        if self.strict == Strict::Off || !msg.content_type().is_structured() {
            return Decision::allow();
        }
        let device = DeviceId(msg);
        let content_type = msg.content_type();
        let undeclared = match self.coverage.undeclared(content_type, msg.payload()) {
            Ok(undeclared) => undeclared,
            // The host parsed it, so this is rare (e.g. nested past the walker's depth): fail
            // closed, as for a payload that does not parse.
            Err(why) => {
                let reason = format!(
                    "schema-guard: strict: cannot read the members of the {content_type} \
                     payload from device {device}: {}",
                    Clipped(&why)
                );
                return Decision::quarantine(&reason).with_alert(
                    Severity::Medium,
                    "malformed",
                    reason,
                );
            }
        };
        if undeclared.count == 0 {
            return Decision::allow();
        }
        let detail = undeclared.detail(device);
        match self.strict {
            Strict::Quarantine => Decision::quarantine(&detail).with_alert(
                Severity::Medium,
                "undeclared-field",
                detail,
            ),
            _ => Decision::alert(Severity::Medium, "undeclared-field", detail),
        }
    }
}

/// Which payload fields `required` and `optional` declare, for `strict`.
///
/// A member is declared when its pointer is declared, or when an ancestor's is and no declared
/// pointer lies below that ancestor: `/metrics:object` alone accepts anything inside /metrics.
/// A member with a declared pointer below it (`/metrics` under `/metrics/temperature_c`) is a
/// strict container, declared itself, whose own members are checked in turn. Arrays are never
/// looked into: a declared array accepts its elements, whatever they hold.
#[derive(Debug, Default, PartialEq)]
struct Coverage {
    /// The declared pointers.
    declared: HashSet<String>,
    /// Every pointer with a declared pointer strictly below it (the root excepted).
    containers: HashSet<String>,
}

/// What [`Coverage`] says of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Declared, with nothing declared below it: it and whatever it holds are accepted.
    Accepted,
    /// A declared pointer lies below it: its members are checked.
    Container,
    /// Not declared: a finding (what it holds is not listed separately).
    Undeclared,
}

/// The undeclared fields of a payload: how many, and the first few pointers.
#[derive(Debug, Default, PartialEq)]
struct Undeclared {
    count: usize,
    first: Vec<String>,
}

impl Undeclared {
    /// The `undeclared-field` detail (and quarantine reason).
    fn detail(&self, device: impl fmt::Display) -> String {
        let named: Vec<String> = self.first.iter().map(|p| Quoted(p).to_string()).collect();
        let mut detail = format!(
            "schema-guard: {} undeclared field{} in device {device}'s payload: {}",
            self.count,
            if self.count == 1 { "" } else { "s" },
            named.join(", ")
        );
        if self.count > self.first.len() {
            detail.push_str(&format!(" and {} more", self.count - self.first.len()));
        }
        detail
    }
}

impl Coverage {
    fn new<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Self {
        let mut coverage = Self::default();
        for pointer in pointers {
            // Every `/` after the first starts a token: what is before it is an ancestor.
            for (i, _) in pointer.match_indices('/').skip(1) {
                coverage.containers.insert(pointer[..i].to_owned());
            }
            coverage.declared.insert(pointer.to_owned());
        }
        coverage
    }

    /// What the member at `pointer` is, given that its parent is the root or a container.
    fn class(&self, pointer: &str) -> Class {
        if self.containers.contains(pointer) {
            Class::Container
        } else if self.declared.contains(pointer) {
            Class::Accepted
        } else {
            Class::Undeclared
        }
    }

    /// The undeclared members of a JSON or CBOR `payload` whose root is an object, in document
    /// order; an error when the payload does not parse.
    fn undeclared(&self, content_type: ContentType, payload: &[u8]) -> Result<Undeclared, String> {
        let mut found = Undeclared::default();
        let visit = |pointer: &str| match self.class(pointer) {
            Class::Container => true,
            Class::Accepted => false,
            Class::Undeclared => {
                found.count += 1;
                if found.first.len() < MAX_NAMED {
                    found.first.push(pointer.to_owned());
                }
                false
            }
        };
        walk::members(content_type, payload, visit)?;
        Ok(found)
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

        let handles = &self.handles;
        match lookup(msg, handles.root, "", device, content_type)? {
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
        for ((pointer, kind), &field) in self.required.iter().zip(&handles.required) {
            match lookup(msg, field, pointer, device, content_type)? {
                None => {
                    return reject(
                        "schema",
                        format!(
                            "schema-guard: required field {pointer} ({kind}) is missing from \
                             device {device}'s payload"
                        ),
                    );
                }
                Some(value) if !kind.matches(value) => {
                    return Err(wrong_kind("field", pointer, device, value, *kind));
                }
                Some(_) => {}
            }
        }
        for ((pointer, kind), &field) in self.optional.iter().zip(&handles.optional) {
            match lookup(msg, field, pointer, device, content_type)? {
                Some(value) if !kind.matches(value) => {
                    return Err(wrong_kind("optional field", pointer, device, value, *kind));
                }
                _ => {}
            }
        }
        for (pointer, &field) in self.forbid.iter().zip(&handles.forbid) {
            if let Some(value) = lookup(msg, field, pointer, device, content_type)? {
                return Err(forbidden(pointer, device, value));
            }
        }
        Ok(())
    }
}

/// A `required` or `optional` (`which`) field of the wrong kind. The value is described, not
/// quoted: the reason reaches the alerts and the quarantine store unredacted.
fn wrong_kind(
    which: &str,
    pointer: &str,
    device: impl fmt::Display,
    value: &Value,
    kind: Kind,
) -> Rejection {
    Rejection {
        code: "schema",
        reason: format!(
            "schema-guard: {which} {pointer} from device {device} is {}, expected {kind}",
            described(value)
        ),
    }
}

/// What a field holds, for a reason: the SDK's description, and for a float that is not a
/// finite number which one it is (a float's digits are not personal data).
fn described(value: &Value) -> String {
    match value {
        Value::Float(x) if !x.is_finite() => format!("a float that is not finite ({x})"),
        _ => value.describe(),
    }
}

/// A `forbid` field that is present, described as [`wrong_kind`] does.
fn forbidden(pointer: &str, device: impl fmt::Display, value: &Value) -> Rejection {
    Rejection {
        code: "schema",
        reason: format!(
            "schema-guard: forbidden field {pointer} is present in device {device}'s payload \
             ({})",
            described(value)
        ),
    }
}

/// The declared field `field` (at `pointer`) of a structured payload; a payload that does not
/// parse is a `malformed` rejection.
fn lookup<'m>(
    msg: &'m Message,
    field: Field,
    pointer: &str,
    device: DeviceId<'_>,
    content_type: ContentType,
) -> Result<Option<&'m Value>, Rejection> {
    msg.get(field).map_err(|err| {
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

/// The `pointer:kind` entries of `key` (`required` or `optional`).
fn kinded(key: &str, list: &str) -> Result<Vec<(String, Kind)>, String> {
    let mut fields: Vec<(String, Kind)> = Vec::new();
    for entry in list.split(',').map(str::trim) {
        // The kind is after the last colon: a member name may contain one.
        let Some((pointer, kind_name)) = entry.rsplit_once(':') else {
            return Err(format!(
                "config `{key}`: entry {entry:?} has no kind: write pointer:kind, e.g. \
                 \"/seq:integer\""
            ));
        };
        let kind_name = kind_name.trim();
        let Some(kind) = Kind::parse(kind_name) else {
            return Err(format!(
                "config `{key}`: entry {entry:?} has unknown kind {kind_name:?}: expected \
                 string, integer, number, boolean, object, array or any"
            ));
        };
        let pointer = pointer.trim();
        pointer::check_field(pointer).map_err(|why| format!("config `{key}`: {why}"))?;
        match fields.iter().find(|(p, _)| p == pointer) {
            Some((_, other)) if *other != kind => {
                return Err(format!(
                    "config `{key}`: {pointer:?} is listed both as {other} and as {kind}"
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
        assert!(s.required.is_empty() && s.optional.is_empty() && s.forbid.is_empty());
        assert_eq!(s.strict, Strict::Off);
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
            (&[("optional", "/note")], &["`optional`", "no kind"]),
            (&[("optional", "/note:text")], &["`optional`", "\"text\""]),
            (&[("optional", "note:string")], &["`optional`", "\"note\""]),
            (&[("optional", "/a:any,")], &["`optional`", "no kind"]),
            (
                &[("optional", "/a:string,/a:number")],
                &["`optional`", "\"/a\""],
            ),
            (
                &[("required", "/a:any"), ("optional", "/a:any")],
                &["`required`", "`optional`", "\"/a\""],
            ),
            (
                &[("optional", "/a:any"), ("forbid", "/a")],
                &["`optional`", "`forbid`", "\"/a\""],
            ),
            (
                &[("required", "/a:any"), ("strict", "on")],
                &["`strict`", "\"on\"", "`off`"],
            ),
            (
                &[("required", "/a:any"), ("strict", "Alert")],
                &["`strict`", "\"Alert\""],
            ),
            (
                &[("strict", "alert")],
                &["`strict`", "`required`", "`optional`"],
            ),
        ] {
            let err = settings(pairs).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{pairs:?}: {err}");
            }
        }
    }

    #[test]
    fn optional_and_strict_options() {
        let (s, m) = declared(&[
            ("required", "/seq:integer,/metrics/t:number"),
            ("optional", "/note:string, /metrics/h:number,/note:string"),
            ("forbid", "/blob"),
            ("strict", "quarantine"),
        ]);
        let s = s.unwrap();
        assert_eq!(
            s.optional,
            [
                ("/note".to_owned(), Kind::String),
                ("/metrics/h".to_owned(), Kind::Number),
            ]
        );
        assert_eq!(s.strict, Strict::Quarantine);
        assert_eq!(
            m.fields,
            ["", "/seq", "/metrics/t", "/note", "/metrics/h", "/blob"]
        );
        for (value, strict) in [
            ("off", Strict::Off),
            ("alert", Strict::Alert),
            ("quarantine", Strict::Quarantine),
        ] {
            let s = settings(&[("optional", "/a:any"), ("strict", value)]).unwrap();
            assert_eq!(s.strict, strict);
        }
        // Off needs no declared field.
        settings(&[("strict", "off")]).unwrap();
    }

    fn coverage(pointers: &[&str]) -> Coverage {
        Coverage::new(pointers.iter().copied())
    }

    #[test]
    fn pointer_coverage_rule() {
        let c = coverage(&["/seq", "/metrics", "/metrics/temperature_c", "/badge"]);
        // Declared, nothing below: accepted with whatever it holds.
        assert_eq!(c.class("/seq"), Class::Accepted);
        assert_eq!(c.class("/badge"), Class::Accepted);
        // A declared pointer below: strict, its members checked.
        assert_eq!(c.class("/metrics"), Class::Container);
        assert_eq!(c.class("/metrics/temperature_c"), Class::Accepted);
        assert_eq!(c.class("/metrics/humidity"), Class::Undeclared);
        assert_eq!(c.class("/other"), Class::Undeclared);
        // A prefix of a member name is no ancestor.
        assert_eq!(c.class("/seq2"), Class::Undeclared);
        assert_eq!(c.class("/metric"), Class::Undeclared);
        // An ancestor that is not declared itself is a container all the same: requiring
        // /a/b/c implies /a and /a/b.
        let c = coverage(&["/a/b/c"]);
        assert_eq!(c.class("/a"), Class::Container);
        assert_eq!(c.class("/a/b"), Class::Container);
        assert_eq!(c.class("/a/b/c"), Class::Accepted);
        assert_eq!(c.class("/a/x"), Class::Undeclared);
        // Escaped names: `a/b` is one member, not /a then /b.
        let c = coverage(&["/a~1b", "/t~0x/y"]);
        assert_eq!(c.class("/a~1b"), Class::Accepted);
        assert_eq!(c.class("/a"), Class::Undeclared);
        assert_eq!(c.class("/t~0x"), Class::Container);
        assert_eq!(c.class("/t~1x"), Class::Undeclared);
    }

    fn undeclared_json(declared: &[&str], payload: &str) -> Undeclared {
        coverage(declared)
            .undeclared(ContentType::Json, payload.as_bytes())
            .unwrap()
    }

    fn undeclared(count: usize, first: &[&str]) -> Undeclared {
        Undeclared {
            count,
            first: first.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn undeclared_json_members() {
        let declared = [
            "/device",
            "/seq",
            "/metrics/temperature_c",
            "/badge",
            "/readings",
        ];
        let clean = r#"{"device": "d1", "seq": 1, "metrics": {"temperature_c": 21.5},
            "badge": {"id": "B-1", "holder": {"name": "x"}},
            "readings": [{"a": 1}, [2], 3]}"#;
        assert_eq!(undeclared_json(&declared, clean), Undeclared::default());
        // Absent declared fields are `required`'s business, not strict mode's.
        assert_eq!(undeclared_json(&declared, "{}"), Undeclared::default());
        let dirty = r#"{"device": "d1", "extra": {"deep": 1}, "metrics": {"temperature_c": 1,
            "humidity": 40, "nested": {"x": 1}}, "a/b": 1, "t~x": 2, "é": 3, "z": null}"#;
        assert_eq!(
            undeclared_json(&declared, dirty),
            undeclared(
                7,
                &[
                    "/extra",
                    "/metrics/humidity",
                    "/metrics/nested",
                    "/a~1b",
                    "/t~0x"
                ]
            )
        );
        // Declared with escapes, as in the configuration.
        assert_eq!(
            undeclared_json(&["/a~1b", "/t~0x"], r#"{"a/b": 1, "t~x": 2, "a": 3}"#),
            undeclared(1, &["/a"])
        );
        // A container holding something else than an object has no members to check.
        assert_eq!(
            undeclared_json(&["/metrics/t"], r#"{"metrics": [1, {"u": 2}]}"#),
            Undeclared::default()
        );
    }

    #[test]
    fn undeclared_cbor_members() {
        // {"seq": 1, "m": {"t": 21.5 (f16), "x/y": 2}, "list": [{"k": 1}], "o~": h'01'}
        let mut doc = vec![0xa4];
        doc.extend(b"\x63seq\x01");
        doc.extend(b"\x61m\xa2\x61t\xf9\x4d\x60\x63x/y\x02");
        doc.extend(b"\x64list\x81\xa1\x61k\x01");
        doc.extend(b"\x62o~\x41\x01");
        let c = coverage(&["/seq", "/m/t", "/list"]);
        assert_eq!(
            c.undeclared(ContentType::Cbor, &doc).unwrap(),
            undeclared(2, &["/m/x~1y", "/o~0"])
        );
        let c = coverage(&["/seq", "/m", "/list", "/o~0"]);
        assert_eq!(
            c.undeclared(ContentType::Cbor, &doc).unwrap(),
            Undeclared::default()
        );
        assert!(c.undeclared(ContentType::Cbor, b"\xa1\x01\x02").is_err());
        assert!(c.undeclared(ContentType::Json, b"{\"a\":").is_err());
    }

    #[test]
    fn undeclared_detail_names_five_and_counts() {
        assert_eq!(
            undeclared(1, &["/x"]).detail("\"d1\""),
            "schema-guard: 1 undeclared field in device \"d1\"'s payload: \"/x\""
        );
        let payload = format!(
            "{{{}}}",
            (0..8)
                .map(|i| format!("\"f{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let found = undeclared_json(&["/seq"], &payload);
        assert_eq!(found, undeclared(8, &["/f0", "/f1", "/f2", "/f3", "/f4"]));
        assert_eq!(
            found.detail("\"d1\""),
            "schema-guard: 8 undeclared fields in device \"d1\"'s payload: \"/f0\", \"/f1\", \
             \"/f2\", \"/f3\", \"/f4\" and 3 more"
        );
        // Device-chosen names are quoted and cut.
        let long = format!("{{\"{}\": 1}}", "n\\n".repeat(100));
        let detail = undeclared_json(&["/seq"], &long).detail("d");
        assert!(
            detail.contains("\"/n\\nn\\n") && detail.ends_with("(201 bytes)"),
            "{detail}"
        );
    }

    #[test]
    fn kinds() {
        assert!(Kind::Number.matches(&Value::Integer(3)));
        assert!(Kind::Number.matches(&Value::Float(3.5)));
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!Kind::Number.matches(&Value::Float(x)), "{x}");
            assert!(Kind::Any.matches(&Value::Float(x)), "{x}");
        }
        assert_eq!(
            described(&Value::Float(f64::NEG_INFINITY)),
            "a float that is not finite (-inf)"
        );
        assert!(!Kind::Integer.matches(&Value::Float(3.0)));
        assert!(!Kind::String.matches(&Value::Null));
        assert!(Kind::Any.matches(&Value::Null));
        assert!(!Kind::Object.matches(&Value::Array(0)));
        let long = "é".repeat(100);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("{:?}... (200 bytes)", "é".repeat(80))
        );
    }

    #[test]
    fn reasons_describe_payload_values_instead_of_quoting_them() {
        let mail = Value::Text("ada.lovelace@example.com".into());
        for (rejection, expected) in [
            (
                wrong_kind("field", "/seq", Quoted("d1"), &mail, Kind::Integer),
                "schema-guard: field /seq from device \"d1\" is a string (24 characters, \
                 \"…@…\"), expected integer",
            ),
            (
                wrong_kind(
                    "optional field",
                    "/note",
                    Quoted("d1"),
                    &mail,
                    Kind::Boolean,
                ),
                "schema-guard: optional field /note from device \"d1\" is a string (24 \
                 characters, \"…@…\"), expected boolean",
            ),
            (
                forbidden("/owner", Quoted("d1"), &mail),
                "schema-guard: forbidden field /owner is present in device \"d1\"'s payload (a \
                 string (24 characters, \"…@…\"))",
            ),
            (
                wrong_kind(
                    "field",
                    "/device",
                    Quoted("d1"),
                    &Value::Integer(4_915_112_345),
                    Kind::String,
                ),
                "schema-guard: field /device from device \"d1\" is an integer (10 digits), \
                 expected string",
            ),
        ] {
            let reason = rejection.reason;
            for secret in [
                "ada.lovelace@example.com",
                "ada.lovelace",
                "example.com",
                "4915112345",
            ] {
                assert!(!reason.contains(secret), "{reason}");
            }
            assert_eq!(reason, expected);
        }
    }
}
