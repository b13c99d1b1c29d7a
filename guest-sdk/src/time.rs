//! Local time in a named time zone, for rules written in plant time: "badge events outside
//! 06:00–22:00 Berlin time" must hold across the daylight-saving changes, which a fixed UTC offset
//! gets wrong for half the year. The IANA zone database is compiled into the component (the
//! `time` feature, ~100 KB), because a policy reads no files.
//!
//! The instant is the message's received time ([`Message::received_at_ms`](crate::Message)):
//! the host's clock, not a claim from the payload, and the same on every replay.
//!
//! ```
//! use twinguard_guest::time::{self, TimeOfDay};
//! let berlin = time::zone("Europe/Berlin")?;
//! let open = TimeOfDay::parse("06:00")?;
//! let close = TimeOfDay::parse("22:00")?;
//! // 04:30 UTC on the day summer time starts is 06:30 in Berlin: open.
//! let t = time::local(1_774_758_600_000, &berlin);
//! assert_eq!(t.hour(), 6);
//! assert!(TimeOfDay::of(&t).within(open, close));
//! // The day before, 04:30 UTC was 05:30: closed.
//! assert!(!TimeOfDay::of(&time::local(1_774_672_200_000, &berlin)).within(open, close));
//! # Ok::<(), String>(())
//! ```

use std::fmt;

pub use jiff::tz::TimeZone;
pub use jiff::ZonedDateTime as Zoned;

/// The zone named `name` (IANA, e.g. `Europe/Berlin`, `America/Chicago`, `UTC`), or an error
/// naming it: call it in `init`, so a misspelt zone fails the load, not every message.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|e| {
        format!("time zone {name:?} is not in the IANA database (e.g. \"Europe/Berlin\"): {e}")
    })
}

/// The instant `ms` (milliseconds since the Unix epoch, as `received_at_ms`) in `zone`.
pub fn local(ms: u64, zone: &TimeZone) -> Zoned {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let instant = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::MAX);
    instant.to_zoned_datetime(zone.clone())
}

/// A wall-clock time of day, to the second: the bounds of an opening window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    seconds: u32,
}

impl TimeOfDay {
    /// `HH:MM` or `HH:MM:SS`, 24-hour.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a time of day like \"06:00\" or \"21:30:00\"");
        let mut parts = text.split(':');
        let mut next = |max: u32| -> Result<Option<u32>, String> {
            match parts.next() {
                None => Ok(None),
                Some(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    let n: u32 = p.parse().map_err(|_| bad())?;
                    if n > max {
                        return Err(bad());
                    }
                    Ok(Some(n))
                }
                Some(_) => Err(bad()),
            }
        };
        let h = next(23)?.ok_or_else(bad)?;
        let m = next(59)?.ok_or_else(bad)?;
        let s = next(59)?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self {
            seconds: h * 3600 + m * 60 + s,
        })
    }

    /// The time of day of a local time.
    pub fn of(t: &Zoned) -> Self {
        let seconds = u32::try_from(t.hour()).unwrap_or(0) * 3600
            + u32::try_from(t.minute()).unwrap_or(0) * 60
            + u32::try_from(t.second()).unwrap_or(0);
        Self { seconds }
    }

    /// Whether this time falls in `[from, to)`; a window whose end is before its start spans
    /// midnight (`22:00`–`06:00` is the night).
    pub fn within(self, from: Self, to: Self) -> bool {
        if from <= to {
            from <= self && self < to
        } else {
            self >= from || self < to
        }
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (
            self.seconds / 3600,
            self.seconds / 60 % 60,
            self.seconds % 60,
        );
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berlin_follows_daylight_saving_both_ways() {
        let berlin = zone("Europe/Berlin").unwrap();
        // 2026-03-29 01:00 UTC: 02:00 CET becomes 03:00 CEST.
        assert_eq!(local(1_774_745_999_000, &berlin).hour(), 1);
        assert_eq!(local(1_774_746_000_000, &berlin).hour(), 3);
        // 2026-10-25 01:00 UTC: 03:00 CEST becomes 02:00 CET.
        assert_eq!(local(1_792_890_000_000, &berlin).hour(), 2);
        assert!(zone("Europe/Berlinn")
            .unwrap_err()
            .contains("Europe/Berlinn"));
    }

    #[test]
    fn windows_and_times_of_day() {
        let t = |s| TimeOfDay::parse(s).unwrap();
        assert!(t("06:00").within(t("06:00"), t("22:00")));
        assert!(!t("22:00").within(t("06:00"), t("22:00")));
        assert!(t("23:15").within(t("22:00"), t("06:00")));
        assert!(t("05:59:59").within(t("22:00"), t("06:00")));
        assert!(!t("12:00").within(t("22:00"), t("06:00")));
        assert_eq!(t("07:05:09").to_string(), "07:05:09");
        assert_eq!(t("07:05").to_string(), "07:05");
        for bad in ["24:00", "6:00", "06", "06:60", "06:00:00:00", "ab:cd", ""] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
    }
}
