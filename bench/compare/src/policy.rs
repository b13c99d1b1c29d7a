//! The policy every engine implements, the decision they are compared on, and the two native
//! Rust implementations.

use std::collections::HashSet;
use std::fmt;
use std::hint::black_box;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::gen::Sample;

/// The PII keys, sorted; a key's index is its bit in [`Keys`].
pub const PII_KEYS: [&str; 3] = ["operator_phone", "owner_email", "owner_name"];
/// `temp_c` bounds, inclusive.
pub const TEMP_RANGE: (f64, f64) = (-40.0, 150.0);
/// `kw` bounds, inclusive.
pub const KW_RANGE: (f64, f64) = (0.0, 400.0);

/// A set of [`PII_KEYS`], one bit each: the sorted key list of a redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keys(pub u8);

impl Keys {
    /// The bit of `key`, if it is a PII key.
    pub fn bit(key: &str) -> Option<u8> {
        PII_KEYS.iter().position(|k| *k == key).map(|i| 1 << i)
    }

    /// Whether no key is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The keys, sorted.
    pub fn iter(self) -> impl Iterator<Item = &'static str> {
        PII_KEYS
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, k)| *k)
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, k) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(k)?;
        }
        f.write_str("]")
    }
}

/// What an engine decided, as compared across engines (reasons are not compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward unchanged.
    Allow,
    /// Forward with these top-level keys removed.
    Redact(Keys),
    /// Hold the message.
    Quarantine,
    /// Anything else (an engine error, a fault, an unexpected answer): never agrees.
    Unexpected(String),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow => f.write_str("allow"),
            Self::Redact(keys) => write!(f, "redact {keys}"),
            Self::Quarantine => f.write_str("quarantine"),
            Self::Unexpected(what) => write!(f, "unexpected: {what}"),
        }
    }
}

/// A range-checked field: absent, a number, or present with another type.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Num {
    /// Not in the payload.
    #[default]
    Absent,
    /// A JSON number (integers converted).
    Number(f64),
    /// Present, not a number (`null` included).
    Other,
}

impl Num {
    fn within(self, (lo, hi): (f64, f64)) -> bool {
        match self {
            Self::Absent => true,
            Self::Number(x) => lo <= x && x <= hi,
            Self::Other => false,
        }
    }

    /// From a parsed JSON value.
    pub fn of(value: Option<&serde_json::Value>) -> Self {
        match value {
            None => Self::Absent,
            Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Self::Other, Self::Number),
            Some(_) => Self::Other,
        }
    }
}

/// The device segment of a topic `plant/<device>/telemetry` (index 1), if it has one.
pub fn topic_device(topic: &str) -> Option<&str> {
    topic.split('/').nth(1)
}

/// The device inventory.
#[derive(Debug, Clone)]
pub struct Inventory(HashSet<String>);

impl Inventory {
    /// An inventory of these ids.
    pub fn new(ids: &[String]) -> Self {
        Self(ids.iter().cloned().collect())
    }

    /// Whether `device` is in it.
    pub fn contains(&self, device: &str) -> bool {
        self.0.contains(device)
    }
}

/// The policy, on the values it reads.
pub fn decide(
    inventory: &Inventory,
    device: &str,
    topic: &str,
    temp: Num,
    kw: Num,
    pii: Keys,
) -> Decision {
    if topic_device(topic) != Some(device) || !inventory.contains(device) {
        return Decision::Quarantine;
    }
    if !temp.within(TEMP_RANGE) || !kw.within(KW_RANGE) {
        return Decision::Quarantine;
    }
    if pii.is_empty() {
        Decision::Allow
    } else {
        Decision::Redact(pii)
    }
}

/// One implementation of the policy.
pub trait Engine {
    /// Its name in the table.
    fn name(&self) -> &'static str;

    /// Its decision on `sample`, for the agreement check.
    fn decide(&mut self, sample: &Sample) -> Decision;

    /// What is timed: the engine's own answer to `sample`, kept alive with `black_box`.
    fn run(&mut self, sample: &Sample) {
        black_box(self.decide(black_box(sample)));
    }
}

/// A [`Num`] deserialized from any JSON value: numbers are numbers, the rest is `Other`.
impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumVisitor;

        impl<'de> Visitor<'de> for NumVisitor {
            type Value = Num;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                #[allow(clippy::cast_precision_loss)] // as every engine reads numbers
                Ok(Num::Number(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                #[allow(clippy::cast_precision_loss)]
                Ok(Num::Number(v as f64))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num::Number(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
                Ok(Num::Other)
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num::Other)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Other)
            }

            fn visit_none<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num::Other)
            }
        }

        deserializer.deserialize_any(NumVisitor)
    }
}

/// Whether a key is present, whatever its value (`null` included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Self(true))
    }
}

/// The five top-level keys the policy reads; serde skips every other key without building it.
#[derive(Debug, Default, Deserialize)]
pub struct Needed {
    #[serde(default)]
    pub temp_c: Num,
    #[serde(default)]
    pub kw: Num,
    #[serde(default)]
    pub operator_phone: Present,
    #[serde(default)]
    pub owner_email: Present,
    #[serde(default)]
    pub owner_name: Present,
}

impl Needed {
    /// The PII keys present.
    pub fn pii(&self) -> Keys {
        let mut bits = 0;
        for (i, present) in [self.operator_phone, self.owner_email, self.owner_name]
            .into_iter()
            .enumerate()
        {
            if present.0 {
                bits |= 1 << i;
            }
        }
        Keys(bits)
    }

    /// Parses the payload (which must be a JSON object).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

/// 1. serde into [`Needed`], then [`decide`].
pub struct NativeTyped(pub Inventory);

impl Engine for NativeTyped {
    fn name(&self) -> &'static str {
        "native typed (serde struct, 5 keys)"
    }

    fn decide(&mut self, s: &Sample) -> Decision {
        match Needed::parse(&s.payload) {
            Some(n) => decide(&self.0, &s.device, &s.topic, n.temp_c, n.kw, n.pii()),
            None => Decision::Quarantine,
        }
    }
}

/// 2. `serde_json::Value` of the whole payload, then [`decide`].
pub struct NativeFull(pub Inventory);

impl Engine for NativeFull {
    fn name(&self) -> &'static str {
        "native full parse (serde_json::Value)"
    }

    fn decide(&mut self, s: &Sample) -> Decision {
        let Ok(serde_json::Value::Object(doc)) =
            serde_json::from_slice::<serde_json::Value>(&s.payload)
        else {
            return Decision::Quarantine;
        };
        let mut pii = 0;
        for (i, key) in PII_KEYS.iter().enumerate() {
            if doc.contains_key(*key) {
                pii |= 1 << i;
            }
        }
        decide(
            &self.0,
            &s.device,
            &s.topic,
            Num::of(doc.get("temp_c")),
            Num::of(doc.get("kw")),
            Keys(pii),
        )
    }
}
