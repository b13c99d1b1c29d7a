//! The policy's settings, parsed and checked once by `init`.

use std::fmt;

use twinguard_guest::declare::{self, Field};
use twinguard_guest::Config;

const KNOWN_KEYS: &[&str] = &[
    "command-field",
    "target-field",
    "value-field",
    "issuer-field",
    "approver-field",
    "commands",
    "unbounded",
    "max-per-minute",
    "utc-offset",
    "two-person",
];

/// Keys named after a class, a target or a command: `commands.<class>`, `bounds.<target>`,
/// `window.<command>`.
const PREFIXES: &[&str] = &["commands.", "bounds.", "window."];

/// The payload fields the policy reads, declared at `init`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fields {
    pub(crate) command: Field,
    pub(crate) target: Field,
    pub(crate) value: Field,
    pub(crate) issuer: Field,
    pub(crate) approver: Field,
}

/// Their pointers, for reasons.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pointers {
    pub(crate) command: String,
    pub(crate) target: String,
    pub(crate) value: String,
    pub(crate) approver: String,
}

/// Holds commands a device must not get: the policy is its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub(crate) fields: Fields,
    pub(crate) pointers: Pointers,
    /// `commands.<class>`.
    pub(crate) per_class: Vec<(String, Vec<String>)>,
    /// `commands`.
    pub(crate) default_commands: Option<Vec<String>>,
    /// `bounds.<target>`.
    pub(crate) bounds: Vec<(String, Bound)>,
    /// `unbounded = "allow"`.
    pub(crate) unbounded_allowed: bool,
    pub(crate) max_per_minute: f64,
    pub(crate) windows: Vec<Window>,
    pub(crate) offset_minutes: i32,
    /// The offset as configured, `+01:00`, for reasons.
    pub(crate) offset_text: String,
    pub(crate) two_person: Vec<String>,
}

impl Settings {
    pub(crate) fn parse(config: &Config) -> Result<Self, String> {
        for key in config.keys() {
            if !KNOWN_KEYS.contains(&key) && !PREFIXES.iter().any(|p| key.starts_with(p)) {
                return Err(format!(
                    "config: unknown key {key:?}; known keys: {}, and commands.<class>, \
                     bounds.<target>, window.<command>",
                    KNOWN_KEYS.join(", ")
                ));
            }
        }
        let pointer = |key: &str, default: &'static str| -> Result<String, String> {
            Ok(config.pointer(key)?.unwrap_or(default).to_owned())
        };
        let pointers = Pointers {
            command: pointer("command-field", "/command")?,
            target: pointer("target-field", "/target")?,
            value: pointer("value-field", "/value")?,
            approver: pointer("approver-field", "/approved_by")?,
        };
        let issuer = pointer("issuer-field", "/issued_by")?;
        // Read on every command: handed over with the message, no host call per field.
        let declared = declare::fields([
            pointers.command.as_str(),
            pointers.target.as_str(),
            pointers.value.as_str(),
            issuer.as_str(),
            pointers.approver.as_str(),
        ])?;
        let fields = Fields {
            command: declared[0],
            target: declared[1],
            value: declared[2],
            issuer: declared[3],
            approver: declared[4],
        };

        let mut per_class = Vec::new();
        let mut bounds = Vec::new();
        let mut windows = Vec::new();
        // A key given twice counts once, with its last value (as `Config::get` reads it).
        let mut seen: Vec<&str> = Vec::new();
        for key in config.keys() {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let value = config.get(key).unwrap_or_default();
            if let Some(class) = key.strip_prefix("commands.") {
                per_class.push((named(key, class)?.to_owned(), list(value)));
            } else if let Some(target) = key.strip_prefix("bounds.") {
                let bound = Bound::parse(value)
                    .map_err(|why| format!("config `{key}` = {value:?}: {why}"))?;
                bounds.push((named(key, target)?.to_owned(), bound));
            } else if let Some(command) = key.strip_prefix("window.") {
                let mut window = Window::parse(value)
                    .map_err(|why| format!("config `{key}` = {value:?}: {why}"))?;
                window.command = named(key, command)?.to_owned();
                windows.push(window);
            }
        }
        let unbounded_allowed = match config.get("unbounded").unwrap_or("quarantine") {
            "quarantine" => false,
            "allow" => true,
            other => {
                return Err(format!(
                    "config `unbounded`: {other:?} is neither \"quarantine\" nor \"allow\""
                ))
            }
        };
        let max_per_minute: f64 = config.parse("max-per-minute")?.unwrap_or(6.0);
        if !(max_per_minute.is_finite() && max_per_minute >= 1.0) {
            return Err(format!(
                "config `max-per-minute`: {max_per_minute} must be a number of at least 1"
            ));
        }
        let offset_text = config
            .get("utc-offset")
            .unwrap_or("+00:00")
            .trim()
            .to_owned();
        let offset_minutes =
            parse_offset(&offset_text).map_err(|why| format!("config `utc-offset`: {why}"))?;
        if config.get("utc-offset").is_some() && windows.is_empty() {
            return Err("config `utc-offset` has no effect without a window.<command>".to_owned());
        }
        Ok(Self {
            fields,
            pointers,
            per_class,
            default_commands: config.get("commands").map(list),
            bounds,
            unbounded_allowed,
            max_per_minute,
            windows,
            offset_minutes,
            offset_text,
            two_person: config.get("two-person").map(list).unwrap_or_default(),
        })
    }
}

/// The name after a key's prefix: not empty.
fn named<'a>(key: &str, name: &'a str) -> Result<&'a str, String> {
    if name.trim().is_empty() {
        Err(format!("config `{key}`: the name after the dot is empty"))
    } else {
        Ok(name.trim())
    }
}

/// A comma-separated list, trimmed, without empty entries.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where a target's bounds came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The device's registry attributes `<target>.min`, `.max`, `.max-step`.
    Registry,
    /// The setting `bounds.<target>`.
    Setting,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Registry => "bounds from the device registry",
            Self::Setting => "bounds from the policy's settings",
        })
    }
}

/// A setpoint's bounds: any of them may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Bound {
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) max_step: Option<f64>,
}

impl Bound {
    /// `min=5,max=30,max-step=4`, any subset, at least one.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut bound = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=value (min, max, max-step)"))?;
            let value = number(value.trim()).map_err(|why| format!("{name}: {why}"))?;
            match name.trim() {
                "min" => bound.min = Some(value),
                "max" => bound.max = Some(value),
                "max-step" => bound.max_step = Some(value),
                other => return Err(format!("unknown bound {other:?} (min, max, max-step)")),
            }
        }
        bound.check()?;
        Ok(bound)
    }

    fn check(self) -> Result<Self, String> {
        if self.min.is_none() && self.max.is_none() && self.max_step.is_none() {
            return Err("no bound given (min, max, max-step)".to_owned());
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(format!("min {min} is above max {max}"));
            }
        }
        if self.max_step.is_some_and(|s| s < 0.0) {
            return Err("max-step is negative".to_owned());
        }
        Ok(self)
    }

    /// The bounds of `target` for this device: its registry attributes when it has any, else
    /// the setting. An attribute that does not read is an error (the command is held).
    pub(crate) fn resolve<'a>(
        target: &str,
        attribute: impl Fn(&str) -> Option<&'a str>,
        settings: &[(String, Self)],
    ) -> Result<Option<(Self, Origin)>, String> {
        let attr = |suffix: &str| -> Result<Option<f64>, String> {
            let name = format!("{target}.{suffix}");
            attribute(&name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| number(v.trim()).map_err(|why| format!("{name}: {why}")))
                .transpose()
        };
        let from_registry = Self {
            min: attr("min")?,
            max: attr("max")?,
            max_step: attr("max-step")?,
        };
        if from_registry != Self::default() {
            return from_registry.check().map(|b| Some((b, Origin::Registry)));
        }
        Ok(settings
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, b)| (*b, Origin::Setting)))
    }

    /// `[16, 28]`, `[16, ∞)`, ...
    pub(crate) fn range(&self) -> String {
        let lo = self.min.map_or("(-∞".to_owned(), |m| format!("[{m}"));
        let hi = self.max.map_or("∞)".to_owned(), |m| format!("{m}]"));
        format!("{lo}, {hi}")
    }
}

fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{text:?} is not a finite number"))
}

/// When a command may be sent: `HH:MM-HH:MM`, wrapping midnight when the end is earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) command: String,
    /// Minutes of the day; `start == end` is the whole day.
    start: u32,
    end: u32,
}

impl Window {
    fn parse(text: &str) -> Result<Self, String> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not HH:MM-HH:MM"))?;
        Ok(Self {
            command: String::new(),
            start: clock(start.trim())?,
            end: clock(end.trim())?,
        })
    }

    /// Whether `minute` of the day is inside (start inclusive, end exclusive).
    pub(crate) fn contains(&self, minute: u32) -> bool {
        if self.start <= self.end {
            self.start == self.end || (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `HH:MM` as minutes of the day; `24:00` is midnight at the end.
fn clock(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok((h * 60 + m) % 1440)
}

/// `+HH:MM` or `-HH:MM` as minutes.
fn parse_offset(text: &str) -> Result<i32, String> {
    let bad = || format!("{text:?} is not an offset +HH:MM or -HH:MM");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let minutes = clock(rest).map_err(|_| bad())?;
    if minutes > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * i32::try_from(minutes).map_err(|_| bad())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_and_refuse() {
        assert_eq!(
            Bound::parse("min=5, max=30,max-step=4"),
            Ok(Bound {
                min: Some(5.0),
                max: Some(30.0),
                max_step: Some(4.0)
            })
        );
        assert_eq!(Bound::parse("max=1e3").map(|b| b.max), Ok(Some(1000.0)));
        for bad in [
            "",
            "min=5,max=1",
            "min",
            "low=1",
            "max=NaN",
            "max-step=-1",
            "min=x",
        ] {
            assert!(Bound::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Bound::parse("min=16,max=28").unwrap().range(), "[16, 28]");
        assert_eq!(Bound::parse("max=28").unwrap().range(), "(-∞, 28]");
    }

    #[test]
    fn windows_wrap_midnight() {
        let day = Window::parse("06:00-22:00").unwrap();
        assert!(day.contains(6 * 60) && day.contains(21 * 60 + 59));
        assert!(!day.contains(22 * 60) && !day.contains(3 * 60));
        let night = Window::parse("22:00-06:00").unwrap();
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(5 * 60 + 59));
        assert!(!night.contains(6 * 60) && !night.contains(12 * 60));
        assert!(Window::parse("00:00-24:00").unwrap().contains(12 * 60));
        assert_eq!(night.to_string(), "22:00-06:00");
        for bad in ["6-22", "06:00", "25:00-01:00", "06:60-07:00", "a:b-c:d"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+01:00"), Ok(60));
        assert_eq!(parse_offset("-05:30"), Ok(-330));
        assert_eq!(parse_offset("+00:00"), Ok(0));
        for bad in ["01:00", "+1", "+15:00", "", "+01:60"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_trim_and_skip_empty() {
        assert_eq!(list(" set, open ,,close"), ["set", "open", "close"]);
        assert!(list(" , ").is_empty());
    }
}
