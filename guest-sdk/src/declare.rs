//! What the policy reads, declared once in `init` (the contract's manifest).
//!
//! The host prepares exactly what a policy declares for every message, and nothing else:
//!
//! - [`field`]: a payload field read on every message. The host extracts every declared field
//!   of the chain in one pass over the payload and hands the values over in the call, so
//!   [`Message::field`](crate::Message::field) (and `f64`, `i64`, `str`, …) on a declared
//!   pointer costs no call to the host. An undeclared pointer still works, through a host call.
//! - [`envelope`]: the envelope parts read on every message ([`Envelope::DEVICE_ID`],
//!   [`Envelope::TOPIC`]). Parts not declared are fetched from the host on first use (as
//!   attributes and the device's registry entry always are): declare only what every message
//!   reads.
//! - [`keep_last`]: a field whose value in the device's last *forwarded* message the policy
//!   reads ([`Message::last`](crate::Message::last)); the host keeps it for every policy.
//! - [`counter`] and [`histogram`]: metrics the policy emits, exported with the host's.
//!
//! Call these from [`Policy::init`](crate::Policy::init) (or
//! [`Configured::init`](crate::Configured::init)). Every instance of a policy must declare the
//! same, so declare from the configuration only. Outside the host's `init` (a unit test calling
//! your `init` directly, or a call from `evaluate`) arguments are still checked but nothing is
//! declared: lookups by pointer still work (through the host), a [`Field`] made there reads as
//! an error and a [`Last`] as unknown.
//!
//! ```no_run
//! use twinguard_guest::{declare, export_policy, Config, Decision, Message, Policy};
//!
//! struct Hot;
//!
//! impl Policy for Hot {
//!     fn init(_config: &Config) -> Result<(), String> {
//!         declare::field("/temp_c")?;
//!         Ok(())
//!     }
//!
//!     fn evaluate(msg: &Message) -> Decision {
//!         match msg.f64("/temp_c") {
//!             Some(t) if t > 150.0 => Decision::quarantine(format!("{t} °C")),
//!             _ => Decision::allow(),
//!         }
//!     }
//! }
//!
//! export_policy!(Hot);
//! ```

use std::cell::RefCell;
use std::ops::BitOr;

use crate::bindings::{host, wit};

/// Fields a policy may declare (the host's bound).
pub const MAX_FIELDS: usize = 64;
/// `keep-last` fields a policy may declare.
pub const MAX_KEEP_LAST: usize = 16;
/// Metrics a policy may declare.
pub const MAX_METRICS: usize = 32;

/// A declared field: its place among the declared fields, for
/// [`Message::get`](crate::Message::get).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(pub(crate) usize);

/// The index of a handle made outside `init`: it names nothing declared.
pub(crate) const UNDECLARED: usize = usize::MAX;

/// A declared `keep-last` field, for [`Message::last`](crate::Message::last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last(pub(crate) usize);

/// Envelope parts a policy reads on every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope(u8);

impl Envelope {
    /// Nothing: every part is fetched on first use.
    pub const NONE: Self = Self(0);
    /// The device id.
    pub const DEVICE_ID: Self = Self(1);
    /// The topic.
    pub const TOPIC: Self = Self(2);

    /// Whether every part of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    fn to_wit(self) -> wit::Envelope {
        let mut e = wit::Envelope::empty();
        for (part, flag) in [
            (Self::DEVICE_ID, wit::Envelope::DEVICE_ID),
            (Self::TOPIC, wit::Envelope::TOPIC),
        ] {
            if self.contains(part) {
                e = e | flag;
            }
        }
        e
    }
}

impl BitOr for Envelope {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A counter the policy declared: [`add`](Self::add) to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    /// Adds `n` to the counter.
    pub fn add(self, n: u64) {
        host::counter_add(self.0, n);
    }
}

/// A histogram the policy declared: [`record`](Self::record) values in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(u32);

impl Histogram {
    /// Records `value`, which must be finite (the host faults the policy otherwise).
    pub fn record(self, value: f64) {
        host::histogram_record(self.0, value);
    }
}

#[derive(Default)]
struct Declared {
    /// Whether `init` is running.
    open: bool,
    fields: Vec<String>,
    envelope: Envelope,
    keep_last: Vec<String>,
    metrics: Vec<wit::Metric>,
}

thread_local! {
    // Wasm guests are single-threaded: one instance, one manifest.
    static DECLARED: RefCell<Declared> = RefCell::new(Declared::default());
}

/// Runs `f` on the open declarations; outside `init`, answers `closed` instead.
fn with_open<T>(
    closed: T,
    f: impl FnOnce(&mut Declared) -> Result<T, String>,
) -> Result<T, String> {
    DECLARED.with_borrow_mut(|d| if d.open { f(d) } else { Ok(closed) })
}

/// Declares a payload field read on every message; the same pointer twice is one field.
pub fn field(pointer: &str) -> Result<Field, String> {
    crate::pointer::check(pointer)?;
    with_open(Field(UNDECLARED), |d| {
        if let Some(i) = d.fields.iter().position(|p| p == pointer) {
            return Ok(Field(i));
        }
        if d.fields.len() >= MAX_FIELDS {
            return Err(format!(
                "cannot declare field {pointer:?}: at most {MAX_FIELDS} fields"
            ));
        }
        d.fields.push(pointer.to_owned());
        Ok(Field(d.fields.len() - 1))
    })
}

/// Declares several fields at once, in order.
pub fn fields<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Result<Vec<Field>, String> {
    pointers.into_iter().map(field).collect()
}

/// Declares the envelope parts read on every message (added to any declared before).
pub fn envelope(parts: Envelope) -> Result<(), String> {
    with_open((), |d| {
        d.envelope = d.envelope | parts;
        Ok(())
    })
}

/// Declares a field whose last forwarded value for the device the policy reads.
pub fn keep_last(pointer: &str) -> Result<Last, String> {
    crate::pointer::check(pointer)?;
    with_open(Last(UNDECLARED), |d| {
        if let Some(i) = d.keep_last.iter().position(|p| p == pointer) {
            return Ok(Last(i));
        }
        if d.keep_last.len() >= MAX_KEEP_LAST {
            return Err(format!(
                "cannot keep the last value of {pointer:?}: at most {MAX_KEEP_LAST} fields"
            ));
        }
        d.keep_last.push(pointer.to_owned());
        Ok(Last(d.keep_last.len() - 1))
    })
}

/// Declares a counter. `name`: lower-case letters, digits, `_` and `.`, starting with a letter,
/// at most 64 characters, unique in the policy; `unit` as OpenTelemetry writes units (`1`,
/// `By`, `s`), possibly empty.
pub fn counter(name: &str, unit: &str, description: &str) -> Result<Counter, String> {
    metric(name, unit, description, wit::MetricKind::Counter).map(Counter)
}

/// Declares a histogram (named as for [`counter`]).
pub fn histogram(name: &str, unit: &str, description: &str) -> Result<Histogram, String> {
    metric(name, unit, description, wit::MetricKind::Histogram).map(Histogram)
}

fn metric(name: &str, unit: &str, description: &str, kind: wit::MetricKind) -> Result<u32, String> {
    check_metric_name(name)?;
    with_open(u32::MAX, |d| {
        if d.metrics.iter().any(|m| m.name == name) {
            return Err(format!("metric {name:?} is declared twice"));
        }
        if d.metrics.len() >= MAX_METRICS {
            return Err(format!(
                "cannot declare metric {name:?}: at most {MAX_METRICS} metrics"
            ));
        }
        d.metrics.push(wit::Metric {
            name: name.to_owned(),
            kind,
            unit: unit.to_owned(),
            description: description.to_owned(),
        });
        // At most MAX_METRICS: fits.
        Ok(u32::try_from(d.metrics.len() - 1).unwrap_or(u32::MAX))
    })
}

/// The host's rule for metric names, checked here so the error names the call.
fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metric name {name:?}: lower-case letters, digits, '_' and '.', starting with a \
             letter, at most 64 characters"
        ))
    }
}

/// Opens the declarations for a new `init`, dropping any earlier ones.
pub(crate) fn begin() {
    DECLARED.with_borrow_mut(|d| {
        *d = Declared {
            open: true,
            ..Declared::default()
        };
    });
}

/// Closes the declarations and builds the manifest from them.
pub(crate) fn finish() -> wit::Manifest {
    DECLARED.with_borrow_mut(|d| {
        d.open = false;
        wit::Manifest {
            fields: d.fields.clone(),
            envelope: d.envelope.to_wit(),
            keep_last: d.keep_last.clone(),
            metrics: d.metrics.clone(),
        }
    })
}

/// Where `pointer` is among the declared fields.
pub(crate) fn position(pointer: &str) -> Option<usize> {
    DECLARED.with_borrow(|d| d.fields.iter().position(|p| p == pointer))
}

/// Declares a raw manifest entry list for tests of the host's checks, bypassing the SDK's own.
#[doc(hidden)]
pub fn __unchecked_field(pointer: &str) {
    DECLARED.with_borrow_mut(|d| d.fields.push(pointer.to_owned()));
}

/// A counter handle at any index, declared or not, for tests of the host's checks.
#[doc(hidden)]
pub fn __counter_at(index: u32) -> Counter {
    Counter(index)
}

/// Declares a metric bypassing the SDK's checks, for tests of the host's.
#[doc(hidden)]
pub fn __unchecked_counter(name: &str) {
    DECLARED.with_borrow_mut(|d| {
        d.metrics.push(wit::Metric {
            name: name.to_owned(),
            kind: wit::MetricKind::Counter,
            unit: String::new(),
            description: String::new(),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_deduplicated_and_only_open_during_init() {
        // Outside init: checked, not declared.
        assert_eq!(field("/a"), Ok(Field(UNDECLARED)));
        assert!(field("a").is_err());
        begin();
        assert_eq!(field("/a"), Ok(Field(0)));
        assert_eq!(field("/b"), Ok(Field(1)));
        assert_eq!(field("/a"), Ok(Field(0)));
        assert!(field("a").is_err());
        assert!(counter("Bad Name", "", "")
            .unwrap_err()
            .contains("lower-case"));
        assert_eq!(counter("hits", "1", "").map(|c| c.0), Ok(0));
        assert!(histogram("hits", "", "").unwrap_err().contains("twice"));
        envelope(Envelope::DEVICE_ID | Envelope::TOPIC).unwrap();
        for i in 2..MAX_FIELDS {
            field(&format!("/f{i}")).unwrap();
        }
        assert!(field("/one-too-many").unwrap_err().contains("at most 64"));
        let m = finish();
        assert_eq!(m.fields.len(), MAX_FIELDS);
        assert!(m.envelope == wit::Envelope::DEVICE_ID | wit::Envelope::TOPIC);
        assert_eq!(position("/b"), Some(1));
        assert_eq!(field("/late"), Ok(Field(UNDECLARED)));
        assert_eq!(position("/late"), None);
    }
}
