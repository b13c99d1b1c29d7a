//! The device message under evaluation and its typed fields.

use std::cell::OnceCell;
use std::fmt;

use crate::bindings::{host, wit};
use crate::declare::{Field, Last};
use crate::text::Described;

/// One device message, as the policy sees it.
///
/// In a chain, the payload already carries the redactions of the policies before this one.
/// The fields the policy declared in `init` ([`declare::field`](crate::declare::field)) arrive
/// with the message; other lookups go to the host, which parses the payload once for the whole
/// chain (far cheaper than parsing [`payload`](Self::payload) in the guest). Envelope parts the
/// policy did not declare are fetched from the host on first use.
pub struct Message {
    inner: wit::Message,
    /// Fetched from the host on first use: most policies only read fields.
    payload: OnceCell<Vec<u8>>,
    device_id: OnceCell<String>,
    topic: OnceCell<String>,
    attributes: OnceCell<Vec<(String, String)>>,
    device: OnceCell<Option<Device>>,
    /// The declared fields, converted once.
    fields: Result<Vec<Option<Value>>, FieldError>,
    last: Vec<Option<Value>>,
}

/// A device's registry entry: its class and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    class: String,
    attributes: Vec<(String, String)>,
}

impl Device {
    /// The device's class, e.g. `badge-reader`; empty when none is recorded.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Its attributes, in the order recorded.
    pub fn attributes(&self) -> &[(String, String)] {
        &self.attributes
    }

    /// The first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Message {
    pub(crate) fn from_wit(mut inner: wit::Message) -> Self {
        let fields = std::mem::replace(&mut inner.fields, Ok(Vec::new()))
            .map(|values| values.into_iter().map(|v| v.map(Value::from)).collect())
            .map_err(FieldError::from);
        let last = std::mem::take(&mut inner.last)
            .into_iter()
            .map(|v| v.map(Value::from))
            .collect();
        let device_id = inner
            .device_id
            .take()
            .map_or_else(OnceCell::new, OnceCell::from);
        let topic = inner
            .topic
            .take()
            .map_or_else(OnceCell::new, OnceCell::from);
        let attributes = OnceCell::new();
        Self {
            inner,
            payload: OnceCell::new(),
            device_id,
            topic,
            attributes,
            device: OnceCell::new(),
            fields,
            last,
        }
    }

    /// The device's identity. Where the transport authenticates the device (client certificate,
    /// username) this is the authenticated identity, not a claim taken from the payload or topic.
    ///
    /// In the message when declared ([`Envelope::DEVICE_ID`](crate::Envelope::DEVICE_ID));
    /// otherwise fetched from the host on the first call (later calls are free).
    pub fn device_id(&self) -> &str {
        self.device_id.get_or_init(host::device_id)
    }

    /// The MQTT topic (or the equivalent subject of another transport).
    ///
    /// In the message when declared ([`Envelope::TOPIC`](crate::Envelope::TOPIC)); otherwise
    /// fetched from the host on the first call (later calls are free).
    pub fn topic(&self) -> &str {
        self.topic.get_or_init(host::topic)
    }

    /// The topic's levels, split on `/`: `plant/7/temp` gives `plant`, `7`, `temp`.
    pub fn topic_segments(&self) -> std::str::Split<'_, char> {
        self.topic().split('/')
    }

    /// The device's registry entry (its class and attributes), when the host (or the embedding
    /// application) knows the device. Fetched from the host on the first call (later calls are
    /// free).
    pub fn device(&self) -> Option<&Device> {
        self.device
            .get_or_init(|| {
                host::device_entry().map(|d| Device {
                    class: d.class,
                    attributes: d.attributes,
                })
            })
            .as_ref()
    }

    /// The per-message seed, derived by the host from the message (device, topic, received
    /// time, payload length). The policy's random sources are seeded with it, so a decision that
    /// samples replays the same.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// A declared field's value, borrowed from the message (no host call, no copy): `Ok(None)`
    /// when absent. Fails as [`field`](Self::field) does (the payload is text or binary, or
    /// malformed), and with [`FieldError::BadPointer`] for a handle this instance's `init` did
    /// not hand out.
    pub fn get(&self, field: Field) -> Result<Option<&Value>, FieldError> {
        match &self.fields {
            Ok(values) => match values.get(field.0) {
                Some(value) => Ok(value.as_ref()),
                None => Err(FieldError::BadPointer(format!(
                    "field handle #{} names no field declared by this instance's init",
                    field.0
                ))),
            },
            Err(e) => Err(e.clone()),
        }
    }

    /// A declared field as a number, integers converted ([`f64`](Self::f64) by handle); absent,
    /// another type or an error is `None`.
    pub fn get_f64(&self, field: Field) -> Option<f64> {
        self.get(field).ok().flatten()?.as_f64()
    }

    /// A declared field as an integer ([`i64`](Self::i64) by handle); floats, even `3.0`,
    /// another type, absent or an error are `None`.
    pub fn get_i64(&self, field: Field) -> Option<i64> {
        self.get(field).ok().flatten()?.as_i64()
    }

    /// A declared field as text, borrowed ([`str`](Self::str) by handle); another type, absent
    /// or an error is `None`.
    pub fn get_str(&self, field: Field) -> Option<&str> {
        self.get(field).ok().flatten()?.as_str()
    }

    /// A declared field as a boolean ([`bool`](Self::bool) by handle); another type, absent or an
    /// error is `None`.
    pub fn get_bool(&self, field: Field) -> Option<bool> {
        self.get(field).ok().flatten()?.as_bool()
    }

    /// Whether a declared field is present, `null` included ([`has`](Self::has) by handle);
    /// errors count as absent.
    pub fn get_has(&self, field: Field) -> bool {
        matches!(self.get(field), Ok(Some(_)))
    }

    /// The value a [`keep_last`](crate::declare::keep_last) field had in this device's last
    /// forwarded message (allowed, redacted or alerted; as forwarded), if known: `None` for the
    /// device's first message, when that message lacked the field, or for a handle this
    /// instance's `init` did not hand out.
    pub fn last(&self, last: Last) -> Option<&Value> {
        self.last.get(last.0).and_then(Option::as_ref)
    }

    /// How the payload is encoded.
    pub fn content_type(&self) -> ContentType {
        self.inner.content_type.into()
    }

    /// The raw payload bytes, for policies with their own parser. Copied from the host on the
    /// first call (later calls are free); prefer [`field`](Self::field) and friends, which read
    /// the host's single parse of the payload.
    pub fn payload(&self) -> &[u8] {
        self.payload.get_or_init(host::payload)
    }

    /// The payload size in bytes, without copying the payload.
    pub fn payload_len(&self) -> usize {
        self.inner.payload_len as usize
    }

    /// The payload as text, when it is valid UTF-8 (whatever the content type).
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(self.payload()).ok()
    }

    /// When the host received the message, in milliseconds since the Unix epoch (UTC).
    pub fn received_at_ms(&self) -> u64 {
        self.inner.received_at_ms
    }

    /// Transport attributes such as MQTT 5 user properties, in arrival order. Fetched from the
    /// host on the first call (later calls are free); the contract keeps them out of the message
    /// record, so there is nothing to declare.
    pub fn attributes(&self) -> &[(String, String)] {
        self.attributes.get_or_init(host::attributes)
    }

    /// The value of the first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Looks up a field by JSON Pointer (RFC 6901, e.g. `/owner/email` or `/readings/0`).
    /// A declared field ([`declare::field`](crate::declare::field)) is read from the message
    /// (the pointer compared with the declared ones); any other is looked up by the host, one
    /// call per lookup. The answer is the same either way. On a hot path, keep the handle
    /// `declare::field` returned and read with [`get`](Self::get): no comparison, and the
    /// value is borrowed, not copied.
    ///
    /// `Ok(None)` means the field is absent. Fails when the payload has no fields (text or
    /// binary), does not parse as its content type, or when the pointer is invalid.
    pub fn field(&self, pointer: &str) -> Result<Option<Value>, FieldError> {
        if let Some(i) = crate::declare::position(pointer) {
            return self.get(Field(i)).map(|v| v.cloned());
        }
        host::field(pointer)
            .map(|value| value.map(Value::from))
            .map_err(FieldError::from)
    }

    /// The field as a number: integers are converted, anything else (or an error) is `None`.
    pub fn f64(&self, pointer: &str) -> Option<f64> {
        self.field(pointer).ok().flatten()?.as_f64()
    }

    /// The field as an integer that fits in 64 signed bits; floats, even `3.0`, are `None`.
    pub fn i64(&self, pointer: &str) -> Option<i64> {
        self.field(pointer).ok().flatten()?.as_i64()
    }

    /// The field as text; other types (or an error) are `None`.
    pub fn str(&self, pointer: &str) -> Option<String> {
        match self.field(pointer) {
            Ok(Some(Value::Text(text))) => Some(text),
            _ => None,
        }
    }

    /// The field as a boolean; other types (or an error) are `None`.
    pub fn bool(&self, pointer: &str) -> Option<bool> {
        self.field(pointer).ok().flatten()?.as_bool()
    }

    /// Whether the field is present (with any value, `null` included). Errors count as absent:
    /// use [`field`](Self::field) to tell a malformed payload from a missing field.
    pub fn has(&self, pointer: &str) -> bool {
        matches!(self.field(pointer), Ok(Some(_)))
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload can be large and sensitive: show its size only. Envelope parts not
        // fetched yet are not fetched for a debug print.
        f.debug_struct("Message")
            .field("device_id", &self.device_id.get())
            .field("topic", &self.topic.get())
            .field("content_type", &self.content_type())
            .field("payload_len", &self.payload_len())
            .field("received_at_ms", &self.received_at_ms())
            .field("attributes", &self.attributes.get())
            .field("fields", &self.fields)
            .finish()
    }
}

/// How the payload bytes are encoded, as set by the host from the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// UTF-8 JSON (RFC 8259). Field lookups and redaction apply.
    Json,
    /// CBOR (RFC 8949). Field lookups and redaction apply; map keys must be text.
    Cbor,
    /// Free text. No field lookups; a redaction is a policy fault.
    Text,
    /// Opaque bytes. No field lookups; a redaction is a policy fault.
    Binary,
}

impl ContentType {
    /// Whether the payload has fields ([`Json`](Self::Json) or [`Cbor`](Self::Cbor)): field
    /// lookups and redactions apply.
    pub fn is_structured(self) -> bool {
        matches!(self, Self::Json | Self::Cbor)
    }

    /// The lowercase name: `json`, `cbor`, `text` or `binary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Cbor => "cbor",
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<wit::ContentType> for ContentType {
    fn from(value: wit::ContentType) -> Self {
        match value {
            wit::ContentType::Json => Self::Json,
            wit::ContentType::Cbor => Self::Cbor,
            wit::ContentType::Text => Self::Text,
            wit::ContentType::Binary => Self::Binary,
        }
    }
}

/// A typed field of the current message, as returned by [`Message::field`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`, CBOR `null` or `undefined`.
    Null,
    /// A boolean.
    Boolean(bool),
    /// An integer that fits in 64 signed bits.
    Integer(i64),
    /// Any other number.
    Float(f64),
    /// A text string.
    Text(String),
    /// A CBOR byte string.
    Bytes(Vec<u8>),
    /// An array, with its number of elements. Look elements up with a longer pointer.
    Array(u32),
    /// An object (CBOR map), with its number of members.
    Object(u32),
}

impl Value {
    /// The number, integers converted; `None` for other types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Precision loss above 2^53 is the usual, accepted cost of reading numbers as f64.
            #[allow(clippy::cast_precision_loss)]
            Self::Integer(i) => Some(i as f64),
            Self::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The integer; `None` for other types, floats included.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::Integer(i) => Some(i),
            _ => None,
        }
    }

    /// The text; `None` for other types.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The boolean; `None` for other types.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Boolean(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the value is `null` (JSON `null`, CBOR `null` or `undefined`).
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The name of the value's kind: `null`, `boolean`, `integer`, `float`, `string`,
    /// `byte string`, `array` or `object`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean(_) => "boolean",
            Self::Integer(_) => "integer",
            Self::Float(_) => "float",
            Self::Text(_) => "string",
            Self::Bytes(_) => "byte string",
            Self::Array(_) => "array",
            Self::Object(_) => "object",
        }
    }

    /// The value for a reason or an alert detail: its kind with an article and its size, never
    /// what it holds. Reasons and alerts leave past every redacting policy of the chain, so a
    /// value quoted there would leak what they remove; text is [`Described`], a number gives its
    /// digits, not its value. Print a number yourself where it is what a check is about.
    ///
    /// ```
    /// use twinguard_guest::Value;
    ///
    /// let mail = Value::Text("ada.lovelace@example.com".into());
    /// assert_eq!(mail.describe(), "a string (24 characters, \"…@…\")");
    /// assert_eq!(Value::Text("1042".into()).describe(), "a string (4 characters, \"1…\")");
    /// assert_eq!(Value::Integer(4_915_112_345_678).describe(), "an integer (13 digits)");
    /// assert_eq!(Value::Array(2).describe(), "an array (2 elements)");
    /// assert_eq!(Value::Null.describe(), "null");
    /// ```
    pub fn describe(&self) -> String {
        let kind = self.kind();
        match self {
            Self::Null => kind.to_owned(),
            Self::Boolean(_) | Self::Float(_) => format!("a {kind}"),
            Self::Integer(i) => {
                let digits = i.unsigned_abs().checked_ilog10().unwrap_or(0) + 1;
                let plural = if digits == 1 { "" } else { "s" };
                format!("an {kind} ({digits} digit{plural})")
            }
            Self::Text(text) => Described(text).to_string(),
            Self::Bytes(bytes) => format!("a {kind} ({} bytes)", bytes.len()),
            Self::Array(n) => format!("an {kind} ({n} elements)"),
            Self::Object(n) => format!("an {kind} ({n} members)"),
        }
    }
}

impl From<wit::Value> for Value {
    fn from(value: wit::Value) -> Self {
        match value {
            wit::Value::Null => Self::Null,
            wit::Value::Boolean(b) => Self::Boolean(b),
            wit::Value::Integer(i) => Self::Integer(i),
            wit::Value::Float(f) => Self::Float(f),
            wit::Value::Text(s) => Self::Text(s),
            wit::Value::Bytes(b) => Self::Bytes(b),
            wit::Value::Array(n) => Self::Array(n),
            wit::Value::Object(n) => Self::Object(n),
        }
    }
}

/// Why [`Message::field`] could not look a field up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The payload is text or binary: it has no fields.
    Unstructured,
    /// The payload does not parse as its declared content type; the text says where.
    Malformed(String),
    /// The pointer is not a valid RFC 6901 JSON Pointer; the text says why.
    BadPointer(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unstructured => f.write_str("the payload is text or binary: it has no fields"),
            Self::Malformed(why) => write!(f, "the payload is malformed: {why}"),
            Self::BadPointer(why) => write!(f, "bad JSON Pointer: {why}"),
        }
    }
}

impl std::error::Error for FieldError {}

impl From<wit::FieldError> for FieldError {
    fn from(value: wit::FieldError) -> Self {
        match value {
            wit::FieldError::Unstructured => Self::Unstructured,
            wit::FieldError::Malformed(why) => Self::Malformed(why),
            wit::FieldError::BadPointer(why) => Self::BadPointer(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as the host hands it over; no host import is called by what the tests read
    /// (the imports are unreachable outside wasm).
    fn message(fields: Result<Vec<Option<wit::Value>>, wit::FieldError>) -> Message {
        Message::from_wit(wit::Message {
            device_id: Some("d1".to_owned()),
            topic: Some("plant/d1/t".to_owned()),
            content_type: wit::ContentType::Json,
            payload_len: 20,
            received_at_ms: 7,
            seed: 42,
            fields,
            last: vec![None, Some(wit::Value::Float(1.5))],
        })
    }

    #[test]
    fn declared_fields_and_envelope_are_read_from_the_message() {
        let (handles, _) =
            crate::declare::capture(|| crate::declare::fields(["/a", "/b", "/c", "/d"]).unwrap());
        // What the host's init leaves behind for lookups by pointer.
        crate::declare::begin();
        crate::declare::fields(["/a", "/b", "/c", "/d"]).unwrap();
        crate::declare::finish(true);
        let msg = message(Ok(vec![
            Some(wit::Value::Integer(3)),
            Some(wit::Value::Text("x".to_owned())),
            None,
            Some(wit::Value::Boolean(true)),
        ]));
        assert_eq!(msg.device_id(), "d1");
        assert_eq!(msg.topic_segments().nth(1), Some("d1"));
        assert_eq!(
            (msg.seed(), msg.received_at_ms(), msg.payload_len()),
            (42, 7, 20)
        );
        assert_eq!(msg.f64("/a"), Some(3.0));
        assert_eq!(msg.i64("/a"), Some(3));
        assert_eq!(msg.str("/b").as_deref(), Some("x"));
        assert_eq!(msg.field("/c"), Ok(None));
        assert!(!msg.has("/c"));
        assert_eq!(msg.bool("/d"), Some(true));
        let [a, b, c, d] = handles[..] else {
            panic!("{handles:?}")
        };
        assert_eq!(msg.get(a), Ok(Some(&Value::Integer(3))));
        assert_eq!((msg.get_f64(a), msg.get_i64(a)), (Some(3.0), Some(3)));
        assert_eq!(msg.get_str(b), Some("x"));
        assert_eq!(msg.get(c), Ok(None));
        assert!(!msg.get_has(c) && msg.get_has(d));
        assert_eq!(msg.get_bool(d), Some(true));
        assert!(matches!(msg.get(Field(9)), Err(FieldError::BadPointer(_))));
        assert_eq!(msg.last(Last(0)), None);
        assert_eq!(msg.last(Last(1)), Some(&Value::Float(1.5)));
        assert_eq!(msg.last(Last(2)), None);
    }

    #[test]
    fn a_payload_without_fields_fails_every_declared_lookup() {
        crate::declare::begin();
        let a = crate::declare::field("/a").unwrap();
        crate::declare::finish(true);
        let msg = message(Err(wit::FieldError::Unstructured));
        assert_eq!(msg.get(a), Err(FieldError::Unstructured));
        assert_eq!(msg.field("/a"), Err(FieldError::Unstructured));
        assert_eq!(msg.f64("/a"), None);
    }

    #[test]
    fn values_are_described_by_kind() {
        for (value, kind, described) in [
            (Value::Null, "null", "null".to_owned()),
            (Value::Boolean(true), "boolean", "a boolean".to_owned()),
            (
                Value::Integer(-3),
                "integer",
                "an integer (1 digit)".to_owned(),
            ),
            (
                Value::Integer(0),
                "integer",
                "an integer (1 digit)".to_owned(),
            ),
            (
                Value::Integer(i64::MIN),
                "integer",
                "an integer (19 digits)".to_owned(),
            ),
            (Value::Float(2.5), "float", "a float".to_owned()),
            (
                Value::Text("x".into()),
                "string",
                "a string (1 character, \"…\")".to_owned(),
            ),
            (
                Value::Text("y".repeat(81)),
                "string",
                "a string (81 characters, \"y…\")".to_owned(),
            ),
            (
                Value::Text("ada.lovelace@example.com".into()),
                "string",
                "a string (24 characters, \"…@…\")".to_owned(),
            ),
            (
                Value::Bytes(vec![0; 4]),
                "byte string",
                "a byte string (4 bytes)".to_owned(),
            ),
            (Value::Array(2), "array", "an array (2 elements)".to_owned()),
            (
                Value::Object(0),
                "object",
                "an object (0 members)".to_owned(),
            ),
        ] {
            assert_eq!(value.kind(), kind);
            assert_eq!(value.describe(), described);
        }
    }
}
