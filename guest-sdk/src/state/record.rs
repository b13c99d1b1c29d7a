//! Fixed-layout binary records: see [`Record`].

use std::fmt;

/// A fixed-layout binary value kept in per-device [`state`](super): the compact alternative to
/// [`get_json`](super::get_json) for state read and written on every message.
///
/// A record is [`LEN`](Self::LEN) bytes of little-endian fields, written by
/// [`write`](Self::write) and read back by [`read`](Self::read) in the same order. Stored bytes
/// of any other length, and bytes `read` refuses, are [`Undecodable`]: typically state written
/// by another version of the policy, which [`get_record`](super::get_record) reports rather than
/// misreads.
///
/// The layout is the stored format: a policy that changes it must change `LEN` or store the
/// record under a new key, or a reload would misread the old bytes.
///
/// ```
/// use twinguard_guest::state::{self, Record, Reader, Writer};
///
/// /// The last accepted sequence number and timestamp of a device.
/// #[derive(Debug, PartialEq)]
/// struct Last {
///     seq: i64,
///     ts: i64,
/// }
///
/// impl Record for Last {
///     const LEN: usize = 16;
///
///     fn write(&self, out: &mut Writer) {
///         out.i64(self.seq).i64(self.ts);
///     }
///
///     fn read(input: &mut Reader<'_>) -> Option<Self> {
///         Some(Self { seq: input.i64()?, ts: input.i64()? })
///     }
/// }
///
/// let last = Last { seq: 42, ts: 1_795_564_800_000 };
/// let bytes = state::encode(&last);
/// assert_eq!(bytes.len(), Last::LEN);
/// assert_eq!(state::decode::<Last>(&bytes), Ok(last));
/// let err = state::decode::<Last>(&bytes[1..]).unwrap_err();
/// assert_eq!(err.to_string(), "15 bytes, expected 16");
///
/// // In `evaluate`, per device:
/// # #[allow(dead_code)]
/// # fn evaluate() -> Result<(), state::StateError> {
/// let next = match state::get_record::<Last>("last-v1") {
///     Ok(Some(last)) => Last { seq: last.seq + 1, ..last },
///     Ok(None) => Last { seq: 1, ts: 0 },
///     Err(err) => {
///         twinguard_guest::log::warn(&format!("discarding undecodable state: {err}"));
///         Last { seq: 1, ts: 0 }
///     }
/// };
/// state::set_record("last-v1", &next)?;
/// # Ok(())
/// # }
/// ```
pub trait Record: Sized {
    /// The encoded length in bytes: what [`write`](Self::write) writes and
    /// [`read`](Self::read) reads.
    const LEN: usize;

    /// Writes the fields, in layout order.
    fn write(&self, out: &mut Writer);

    /// Reads the fields in the order [`write`](Self::write) writes them; `None` for values the
    /// type refuses (such as a NaN where only finite numbers are stored), which makes the bytes
    /// [`Undecodable`].
    fn read(input: &mut Reader<'_>) -> Option<Self>;
}

/// Writes a [`Record`]'s fields, little-endian.
#[derive(Debug)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// Appends a `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends an `i64`.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends an `f64`.
    pub fn f64(&mut self, value: f64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends an optional `f64` in 8 bytes, `None` as NaN; read it back with
    /// [`Reader::f64_or_nan`]. Only for values that are never NaN themselves.
    pub fn f64_or_nan(&mut self, value: Option<f64>) -> &mut Self {
        self.f64(value.unwrap_or(f64::NAN))
    }
}

/// Reads a [`Record`]'s fields, little-endian. Every method returns `None` past the end.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(*head)
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// The next `i64`.
    pub fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }

    /// The next `f64`, whatever its value (NaN and infinities included).
    pub fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }

    /// The next optional `f64` written by [`Writer::f64_or_nan`]: `Some(None)` for NaN.
    pub fn f64_or_nan(&mut self) -> Option<Option<f64>> {
        self.f64().map(|x| (!x.is_nan()).then_some(x))
    }
}

/// Stored bytes that are not a valid [`Record`] of the type asked for: the wrong length, or
/// values its [`read`](Record::read) refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undecodable {
    /// How many bytes are stored.
    pub len: usize,
    /// How many bytes the record takes ([`Record::LEN`]).
    pub expected: usize,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == self.expected {
            write!(
                f,
                "{} bytes holding values out of the record's range",
                self.len
            )
        } else {
            write!(f, "{} bytes, expected {}", self.len, self.expected)
        }
    }
}

impl std::error::Error for Undecodable {}

/// `record`'s bytes, as [`set_record`](super::set_record) stores them.
///
/// # Panics
///
/// When `R::write` does not write exactly [`R::LEN`](Record::LEN) bytes: such a record could
/// never be read back, so the mistake is reported where it is made.
pub fn encode<R: Record>(record: &R) -> Vec<u8> {
    let mut out = Writer {
        bytes: Vec::with_capacity(R::LEN),
    };
    record.write(&mut out);
    assert_eq!(
        out.bytes.len(),
        R::LEN,
        "{}::write wrote a different length from Record::LEN",
        std::any::type_name::<R>()
    );
    out.bytes
}

/// The record in `bytes`, which must be exactly [`R::LEN`](Record::LEN) long and accepted by
/// [`R::read`](Record::read).
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, Undecodable> {
    let undecodable = Undecodable {
        len: bytes.len(),
        expected: R::LEN,
    };
    if bytes.len() != R::LEN {
        return Err(undecodable);
    }
    let mut input = Reader { bytes };
    match R::read(&mut input) {
        // A `read` that stops short would accept bytes it never looked at.
        Some(record) if input.bytes.is_empty() => Ok(record),
        _ => Err(undecodable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct All {
        a: u32,
        b: u64,
        c: i64,
        d: f64,
        e: Option<f64>,
    }

    impl Record for All {
        const LEN: usize = 4 + 8 + 8 + 8 + 8;

        fn write(&self, out: &mut Writer) {
            out.u32(self.a)
                .u64(self.b)
                .i64(self.c)
                .f64(self.d)
                .f64_or_nan(self.e);
        }

        fn read(input: &mut Reader<'_>) -> Option<Self> {
            let record = Self {
                a: input.u32()?,
                b: input.u64()?,
                c: input.i64()?,
                d: input.f64()?,
                e: input.f64_or_nan()?,
            };
            record.d.is_finite().then_some(record)
        }
    }

    #[test]
    fn round_trips_little_endian() {
        for e in [None, Some(-0.5)] {
            let all = All {
                a: 7,
                b: u64::MAX,
                c: -2,
                d: 21.43,
                e,
            };
            let bytes = encode(&all);
            assert_eq!(&bytes[..4], &[7, 0, 0, 0]);
            assert_eq!(decode::<All>(&bytes), Ok(all));
        }
    }

    #[test]
    fn wrong_length_and_refused_values_are_undecodable() {
        let bytes = encode(&All {
            a: 1,
            b: 2,
            c: 3,
            d: 4.0,
            e: None,
        });
        assert_eq!(
            decode::<All>(&bytes[1..]),
            Err(Undecodable {
                len: 35,
                expected: 36
            })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<All>(&longer).is_err());
        let mut nan = bytes;
        nan[20..28].copy_from_slice(&f64::NAN.to_le_bytes());
        let err = decode::<All>(&nan).unwrap_err();
        assert_eq!(
            err.to_string(),
            "36 bytes holding values out of the record's range"
        );
    }

    /// Reads less than it claims.
    struct Short;

    impl Record for Short {
        const LEN: usize = 8;

        fn write(&self, out: &mut Writer) {
            out.u64(0);
        }

        fn read(input: &mut Reader<'_>) -> Option<Self> {
            input.u32().map(|_| Self)
        }
    }

    #[test]
    fn a_read_that_stops_short_decodes_nothing() {
        assert!(decode::<Short>(&encode(&Short)).is_err());
    }

    #[test]
    #[should_panic(expected = "different length")]
    fn a_write_of_the_wrong_length_panics() {
        struct Long;
        impl Record for Long {
            const LEN: usize = 4;
            fn write(&self, out: &mut Writer) {
                out.u64(0);
            }
            fn read(_: &mut Reader<'_>) -> Option<Self> {
                Some(Self)
            }
        }
        encode(&Long);
    }
}
