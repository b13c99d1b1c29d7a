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
//! Why declare: a lookup by pointer that was not declared is a call into the host for every
//! field of every message, while declared fields are extracted by the host in one pass over the
//! payload (shared by every policy of the chain) and arrive in the call itself. Declaring a field
//! changes no result: [`Message::field`](crate::Message::field) answers the same either way.
//!
//! Call these from [`Policy::init`](crate::Policy::init) (or
//! [`Configured::init`](crate::Configured::init)): the SDK opens the declarations before your
//! `init` runs and sends them to the host as the manifest when it returns. Every instance of a
//! policy must declare the same, so declare from the configuration only. Anywhere else (from
//! `evaluate`, or a unit test calling your `init` directly) every function here returns an
//! `Err` saying so; never a panic. To test an `init` that declares, run it inside [`capture`],
//! which also tells the test what was declared.
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
use std::ops::{BitOr, BitOrAssign};

use crate::bindings::{host, wit};

/// Fields a policy may declare (the host's bound).
pub const MAX_FIELDS: usize = 64;
/// `keep-last` fields a policy may declare.
pub const MAX_KEEP_LAST: usize = 16;
/// Metrics a policy may declare.
pub const MAX_METRICS: usize = 32;

/// A declared field: its place among the declared fields, for
/// [`Message::get`](crate::Message::get) and its typed variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(pub(crate) usize);

/// A declared `keep-last` field, for [`Message::last`](crate::Message::last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last(pub(crate) usize);

/// Envelope parts a policy reads on every message, combined with `|`. The contract's envelope
/// has two: transport attributes and the device's registry entry are always fetched on request
/// ([`Message::attributes`](crate::Message::attributes), [`Message::device`](crate::Message::device)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope(u8);

impl Envelope {
    /// Nothing: every part is fetched on first use (the default).
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

impl BitOrAssign for Envelope {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
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

/// What a policy declared, as [`capture`] reports it: the manifest the SDK sends the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The declared fields' JSON Pointers, in declaration order (a [`Field`]'s index).
    pub fields: Vec<String>,
    /// The declared envelope parts.
    pub envelope: Envelope,
    /// The `keep-last` fields' JSON Pointers, in declaration order (a [`Last`]'s index).
    pub keep_last: Vec<String>,
    /// The declared metrics' names, in declaration order.
    pub metrics: Vec<String>,
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

/// Runs `f` on the open declarations; outside `init`, an error naming `what`.
fn with_open<T>(
    what: impl FnOnce() -> String,
    f: impl FnOnce(&mut Declared) -> Result<T, String>,
) -> Result<T, String> {
    DECLARED.with_borrow_mut(|d| {
        if d.open {
            f(d)
        } else {
            Err(format!(
                "{} outside init: a policy declares what it reads in its init only (in a unit \
                 test, run init inside twinguard_guest::declare::capture)",
                what()
            ))
        }
    })
}

/// Declares a payload field read on every message; the same pointer twice is one field (the same
/// handle). Refuses a pointer that is not RFC 6901 ([`pointer::check`](crate::pointer::check);
/// the empty pointer, the whole document, is allowed) and a field past the
/// [`MAX_FIELDS`]th.
pub fn field(pointer: &str) -> Result<Field, String> {
    crate::pointer::check(pointer)?;
    with_open(
        || format!("declare::field({pointer:?})"),
        |d| add_pointer(&mut d.fields, pointer, MAX_FIELDS, "declare field").map(Field),
    )
}

/// Adds `pointer` to `list` once (its index if already there), refusing the `max + 1`th.
fn add_pointer(
    list: &mut Vec<String>,
    pointer: &str,
    max: usize,
    what: &str,
) -> Result<usize, String> {
    if let Some(i) = list.iter().position(|p| p == pointer) {
        return Ok(i);
    }
    if list.len() >= max {
        return Err(format!("cannot {what} {pointer:?}: at most {max}"));
    }
    list.push(pointer.to_owned());
    Ok(list.len() - 1)
}

/// Declares several fields at once, in order.
pub fn fields<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Result<Vec<Field>, String> {
    pointers.into_iter().map(field).collect()
}

/// Declares the envelope parts read on every message (added to any declared before). Declare a
/// part only if (nearly) every message reads it: one that is read only to write an alert is
/// cheaper fetched on first use.
pub fn envelope(parts: Envelope) -> Result<(), String> {
    with_open(
        || "declare::envelope".to_owned(),
        |d| {
            d.envelope |= parts;
            Ok(())
        },
    )
}

/// Declares a field whose last forwarded value for the device the policy reads
/// ([`Message::last`](crate::Message::last)); the same pointer twice is one handle. At most
/// [`MAX_KEEP_LAST`].
pub fn keep_last(pointer: &str) -> Result<Last, String> {
    crate::pointer::check(pointer)?;
    with_open(
        || format!("declare::keep_last({pointer:?})"),
        |d| {
            add_pointer(
                &mut d.keep_last,
                pointer,
                MAX_KEEP_LAST,
                "keep the last value of",
            )
            .map(Last)
        },
    )
}

/// Declares a counter. `name`: lower-case letters, digits, `_` and `.`, starting with a letter,
/// at most 64 characters, unique in the policy; `unit` as OpenTelemetry writes units (`1`,
/// `By`, `s`), possibly empty; `description` one line for the operator. At most
/// [`MAX_METRICS`] metrics in all.
pub fn counter(name: &str, unit: &str, description: &str) -> Result<Counter, String> {
    metric(name, unit, description, wit::MetricKind::Counter).map(Counter)
}

/// Declares a histogram (named as for [`counter`]).
pub fn histogram(name: &str, unit: &str, description: &str) -> Result<Histogram, String> {
    metric(name, unit, description, wit::MetricKind::Histogram).map(Histogram)
}

fn metric(name: &str, unit: &str, description: &str, kind: wit::MetricKind) -> Result<u32, String> {
    check_metric_name(name)?;
    with_open(
        || format!("declaring metric {name:?}"),
        |d| {
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
        },
    )
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
    DECLARED.set(Declared {
        open: true,
        ..Declared::default()
    });
}

/// Closes the declarations and builds the manifest from them. After a failed `init` nothing
/// stays declared.
pub(crate) fn finish(ok: bool) -> wit::Manifest {
    DECLARED.with_borrow_mut(|d| {
        if !ok {
            *d = Declared::default();
        }
        d.open = false;
        wit::Manifest {
            fields: d.fields.clone(),
            envelope: d.envelope.to_wit(),
            keep_last: d.keep_last.clone(),
            metrics: d.metrics.clone(),
        }
    })
}

/// Runs `f` (typically a policy's `init`) with the declarations open, as the host's `init`
/// does, and returns its result with what it declared. For unit tests: outside `init`, the
/// functions of this module refuse to declare. The declarations in force before (a policy's
/// own, if any) are restored afterwards.
///
/// ```
/// use twinguard_guest::declare::{self, Envelope};
///
/// fn init() -> Result<(), String> {
///     declare::envelope(Envelope::DEVICE_ID)?;
///     declare::field("/temp_c")?;
///     Ok(())
/// }
///
/// assert!(init().unwrap_err().contains("outside init"));
/// let (result, manifest) = declare::capture(init);
/// assert_eq!(result, Ok(()));
/// assert_eq!(manifest.fields, ["/temp_c"]);
/// assert_eq!(manifest.envelope, Envelope::DEVICE_ID);
/// ```
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Manifest) {
    let before = DECLARED.replace(Declared {
        open: true,
        ..Declared::default()
    });
    let result = f();
    let d = DECLARED.replace(before);
    let manifest = Manifest {
        fields: d.fields,
        envelope: d.envelope,
        keep_last: d.keep_last,
        metrics: d.metrics.into_iter().map(|m| m.name).collect(),
    };
    (result, manifest)
}

/// Where `pointer` is among the declared fields.
pub(crate) fn position(pointer: &str) -> Option<usize> {
    DECLARED.with_borrow(|d| d.fields.iter().position(|p| p == pointer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_deduplicated_and_only_open_during_init() {
        // Outside init: checked first, then refused, naming the call.
        let err = field("/a").unwrap_err();
        assert!(err.contains("declare::field(\"/a\") outside init"), "{err}");
        assert!(field("a").unwrap_err().contains("start with '/'"));
        assert!(envelope(Envelope::TOPIC)
            .unwrap_err()
            .contains("outside init"));
        assert!(keep_last("/t").unwrap_err().contains("outside init"));
        assert!(counter("hits", "1", "")
            .unwrap_err()
            .contains("outside init"));
        begin();
        assert_eq!(field("/a"), Ok(Field(0)));
        assert_eq!(field("/b"), Ok(Field(1)));
        assert_eq!(field("/a"), Ok(Field(0)));
        assert_eq!(field(""), Ok(Field(2)));
        assert!(field("a").is_err());
        assert_eq!(keep_last("/t"), Ok(Last(0)));
        assert_eq!(keep_last("/t"), Ok(Last(0)));
        for (bad, why) in [
            ("Bad Name", "lower-case"),
            ("1abc", "starting with a letter"),
            ("a-b", "lower-case"),
            ("", "lower-case"),
        ] {
            assert!(counter(bad, "", "").unwrap_err().contains(why), "{bad:?}");
        }
        assert!(histogram(&"a".repeat(65), "", "").is_err());
        assert!(histogram(&"a".repeat(64), "", "").is_ok());
        assert_eq!(counter("hits", "1", "").map(|c| c.0), Ok(1));
        assert!(histogram("hits", "", "").unwrap_err().contains("twice"));
        envelope(Envelope::DEVICE_ID | Envelope::TOPIC).unwrap();
        for i in 3..MAX_FIELDS {
            field(&format!("/f{i}")).unwrap();
        }
        assert!(field("/one-too-many").unwrap_err().contains("at most 64"));
        for i in 1..MAX_KEEP_LAST {
            keep_last(&format!("/l{i}")).unwrap();
        }
        assert!(keep_last("/l99").unwrap_err().contains("at most 16"));
        for i in 2..MAX_METRICS {
            counter(&format!("m{i}"), "", "").unwrap();
        }
        assert!(counter("m99", "", "").unwrap_err().contains("at most 32"));
        let m = finish(true);
        assert_eq!(m.fields.len(), MAX_FIELDS);
        assert_eq!(m.keep_last.len(), MAX_KEEP_LAST);
        assert_eq!(m.metrics.len(), MAX_METRICS);
        assert!(m.envelope == wit::Envelope::DEVICE_ID | wit::Envelope::TOPIC);
        assert_eq!(position("/b"), Some(1));
        assert!(field("/late").is_err());
        assert_eq!(position("/late"), None);
    }

    #[test]
    fn a_failed_init_leaves_nothing_declared() {
        begin();
        field("/a").unwrap();
        let m = finish(false);
        assert!(m.fields.is_empty());
        assert_eq!(position("/a"), None);
    }

    #[test]
    fn capture_restores_what_was_declared_before() {
        begin();
        field("/kept").unwrap();
        finish(true);
        let (handle, manifest) = capture(|| {
            envelope(Envelope::TOPIC)?;
            histogram("payload.size", "By", "")?;
            field("/x")
        });
        assert_eq!(handle, Ok(Field(0)));
        assert_eq!(
            manifest,
            Manifest {
                fields: vec!["/x".to_owned()],
                envelope: Envelope::TOPIC,
                keep_last: Vec::new(),
                metrics: vec!["payload.size".to_owned()],
            }
        );
        assert_eq!(position("/kept"), Some(0));
        assert_eq!(position("/x"), None);
        assert!(field("/y").is_err());
    }
}
