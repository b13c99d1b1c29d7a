//! The command path: what a digital twin (or an analytics job) tells a device. A command is
//! held when the device's class does not take it, when a setpoint leaves the bounds the device
//! registry gives, when it changes too much at once, when the twin sends too many, outside a
//! command's time window, or without a second person's approval. See README.md.

#![forbid(unsafe_code)]

mod settings;

use twinguard_guest::state::{self, Reader, Record, Writer};
use twinguard_guest::text::{Clipped, Described};
use twinguard_guest::{
    export_configured, log, Decision, Message, Quoted, Severity, StateError, Value,
};

use settings::Bound;
pub use settings::Settings;

export_configured!(Settings);

/// The state key of a device's command bucket.
const BUCKET_KEY: &str = "bucket";

/// Why a command is held.
#[derive(Debug, PartialEq)]
struct Hold {
    severity: Severity,
    code: &'static str,
    reason: String,
}

impl Hold {
    fn new(severity: Severity, code: &'static str, reason: String) -> Self {
        Self {
            severity,
            code,
            reason: format!("command-guard: {reason}"),
        }
    }
}

/// A device's command tokens and when they were last refilled.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

impl Record for Bucket {
    const LEN: usize = 16;

    fn write(&self, out: &mut Writer) {
        out.f64(self.tokens).u64(self.last_ms);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        let bucket = Self {
            tokens: input.f64()?,
            last_ms: input.u64()?,
        };
        (bucket.tokens.is_finite() && bucket.tokens >= 0.0).then_some(bucket)
    }
}

impl Bucket {
    /// The bucket after a command at `now_ms`, and whether that command found it empty
    /// (`true`: a flood; no token is taken). `size` commands at once, refilled at `size` a
    /// minute; no previous bucket is a full one. A clock going backwards refills nothing, and
    /// the latest time is kept, so it cannot refill twice either.
    fn take(previous: Option<Self>, now_ms: u64, size: f64) -> (Self, bool) {
        let mut bucket = previous.unwrap_or(Self {
            tokens: size,
            last_ms: now_ms,
        });
        #[allow(clippy::cast_precision_loss)] // milliseconds well within f64's exact range
        let elapsed_s = now_ms.saturating_sub(bucket.last_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_s * size / 60.0).min(size);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        let flooding = bucket.tokens < 1.0;
        if !flooding {
            bucket.tokens -= 1.0;
        }
        (bucket, flooding)
    }
}

/// The last value a target was set to on this device.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LastValue(f64);

impl Record for LastValue {
    const LEN: usize = 8;

    fn write(&self, out: &mut Writer) {
        out.f64(self.0);
    }

    fn read(input: &mut Reader<'_>) -> Option<Self> {
        input.f64().filter(|v| v.is_finite()).map(Self)
    }
}

impl twinguard_guest::Configured for Settings {
    fn init(config: &twinguard_guest::Config) -> Result<Self, String> {
        Self::parse(config)
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        match self.check(msg) {
            Ok(()) => Decision::allow(),
            Err(hold) => {
                Decision::quarantine(&hold.reason).with_alert(hold.severity, hold.code, hold.reason)
            }
        }
    }
}

impl Settings {
    /// Holds `msg` or lets it through; records what an allowed command changes.
    fn check(&self, msg: &Message) -> Result<(), Hold> {
        let device = msg.device_id();
        let command = match msg.get(self.fields.command) {
            Ok(Some(Value::Text(c))) if !c.is_empty() => c.as_str(),
            Ok(Some(other)) => {
                return Err(malformed(
                    device,
                    format!(
                        "{} is {}, not a command name",
                        self.pointers.command,
                        other.describe()
                    ),
                ))
            }
            Ok(None) => {
                return Err(malformed(
                    device,
                    format!("no command at {}", self.pointers.command),
                ))
            }
            Err(err) => {
                return Err(malformed(
                    device,
                    format!("the payload cannot be read: {}", Clipped(&err.to_string())),
                ))
            }
        };
        let Some(entry) = msg.device() else {
            return Err(unknown_device(command, device));
        };
        let class = entry.class();
        let allowed = self.allowed(entry.attribute("commands"), class);
        if !allowed.contains(&command) {
            return Err(not_allowed(command, device, class, &allowed));
        }
        // From here on the command is one of the allowed names, so quoting it quotes the
        // configuration or the registry, not the twin.
        if self.two_person.iter().any(|c| c == command) {
            let issuer = msg.get_str(self.fields.issuer).unwrap_or("");
            let approver = msg.get_str(self.fields.approver).unwrap_or("");
            if approver.is_empty() || approver == issuer {
                return Err(self.unapproved(command, device, issuer, approver));
            }
        }
        if let Some(window) = self.windows.iter().find(|w| w.command == command) {
            let minute = self.minute_of_day(msg.received_at_ms());
            if !window.contains(minute) {
                return Err(Hold::new(
                    Severity::Medium,
                    "command-outside-window",
                    format!(
                        "command {} to device {} at {:02}:{:02} (UTC{}) is outside its window {}",
                        Quoted(command),
                        Quoted(device),
                        minute / 60,
                        minute % 60,
                        self.offset_text,
                        window
                    ),
                ));
            }
        }
        let setpoint = self.setpoint(msg, device, entry)?;
        self.take_token(msg, device)?;
        if let Some((target, value)) = setpoint {
            state::set_record(&last_key(target), &LastValue(value)).map_err(|err| {
                state_hold(
                    device,
                    &format!("cannot record the last {}", Quoted(target)),
                    &err,
                )
            })?;
        }
        Ok(())
    }

    /// The commands the device takes: its registry attribute `commands`, else the class's
    /// setting, else the default setting.
    fn allowed<'a>(&'a self, attribute: Option<&'a str>, class: &str) -> Vec<&'a str> {
        match attribute {
            Some(list) => list
                .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                .filter(|c| !c.is_empty())
                .collect(),
            None => self
                .per_class
                .iter()
                .find(|(c, _)| c == class)
                .map(|(_, list)| list)
                .or(self.default_commands.as_ref())
                .map(|list| list.iter().map(String::as_str).collect())
                .unwrap_or_default(),
        }
    }

    /// Checks a command's target and value against its bounds; the target and value to record
    /// when it passes (only a bounded target's: an unbounded one has no step to check, and a
    /// twin inventing target names must not fill the device's state).
    fn setpoint<'m>(
        &self,
        msg: &'m Message,
        device: &str,
        entry: &twinguard_guest::Device,
    ) -> Result<Option<(&'m str, f64)>, Hold> {
        let target = match msg.get(self.fields.target) {
            // Quoted in the holds below only once bounds are known for it: then it is a name
            // from the registry or the settings.
            Ok(Some(Value::Text(t))) if !t.is_empty() => t.as_str(),
            Ok(None) => return Ok(None),
            Ok(Some(other)) => {
                return Err(malformed(
                    device,
                    format!(
                        "{} is {}, not a target name",
                        self.pointers.target,
                        other.describe()
                    ),
                ))
            }
            Err(err) => {
                return Err(malformed(
                    device,
                    format!("the payload cannot be read: {}", Clipped(&err.to_string())),
                ))
            }
        };
        let value = match msg.get(self.fields.value) {
            Ok(Some(v)) => v.as_f64().filter(|v| v.is_finite()),
            _ => None,
        };
        let bound =
            Bound::resolve(target, |name| entry.attribute(name), &self.bounds).map_err(|why| {
                // The registry is wrong, not the command; held all the same (fail closed).
                Hold::new(
                    Severity::Medium,
                    "setpoint-bounds-invalid",
                    format!(
                        "the device registry's bounds of {} for device {} do not read: {why}",
                        Quoted(target),
                        Quoted(device)
                    ),
                )
            })?;
        let Some((bound, origin)) = bound else {
            return if self.unbounded_allowed {
                Ok(None)
            } else {
                Err(Hold::new(
                    Severity::Medium,
                    "setpoint-unbounded",
                    format!(
                        "no bounds are known for {} of device {} (registry <target>.min/.max/.max-step, setting bounds.<target>); unbounded = quarantine",
                        Described(target),
                        Quoted(device)
                    ),
                ))
            };
        };
        let Some(value) = value else {
            return Err(malformed(
                device,
                format!(
                    "{} for {} is not a finite number",
                    self.pointers.value,
                    Quoted(target)
                ),
            ));
        };
        if bound.min.is_some_and(|min| value < min) || bound.max.is_some_and(|max| value > max) {
            return Err(Hold::new(
                Severity::Critical,
                "setpoint-out-of-bounds",
                format!(
                    "{} = {value} for device {} is outside {} ({origin})",
                    Quoted(target),
                    Quoted(device),
                    bound.range()
                ),
            ));
        }
        if let Some(step) = bound.max_step {
            let last = state::get_record::<LastValue>(&last_key(target)).unwrap_or_else(|_| {
                log::warn(&format!(
                    "command-guard: discarding the undecodable last {} of device {}",
                    Quoted(target),
                    Quoted(device)
                ));
                None
            });
            if let Some((last, moved)) = step_over(last.map(|l| l.0), value, step) {
                return Err(Hold::new(
                    Severity::High,
                    "setpoint-step",
                    format!(
                        "{} = {value} for device {} moves {moved} from the last accepted {last}, over max-step {step} ({origin})",
                        Quoted(target),
                        Quoted(device),
                    ),
                ));
            }
        }
        Ok(Some((target, value)))
    }

    /// Takes one token from the device's bucket: `max-per-minute` at once, refilled at that
    /// rate. A bucket that cannot be stored holds the command (fail closed): without it every
    /// command would find a full bucket.
    fn take_token(&self, msg: &Message, device: &str) -> Result<(), Hold> {
        let size = self.max_per_minute;
        // A device's first command, or state this version cannot read: a full bucket.
        let previous = state::get_record::<Bucket>(BUCKET_KEY).unwrap_or_else(|_| {
            log::warn(&format!(
                "command-guard: discarding the undecodable command bucket of device {}",
                Quoted(device)
            ));
            None
        });
        let (bucket, flooding) = Bucket::take(previous, msg.received_at_ms(), size);
        state::set_record(BUCKET_KEY, &bucket)
            .map_err(|err| state_hold(device, "cannot store the command rate", &err))?;
        if flooding {
            return Err(Hold::new(
                Severity::High,
                "command-flood",
                format!(
                    "device {} was sent more than {size} commands a minute (max-per-minute)",
                    Quoted(device)
                ),
            ));
        }
        Ok(())
    }

    /// The hold of a two-person command with no approver, or the issuer as approver. Who issued
    /// it is personal data: described, never quoted.
    fn unapproved(&self, command: &str, device: &str, issuer: &str, approver: &str) -> Hold {
        let approver = if approver.is_empty() {
            "nobody"
        } else {
            "the issuer"
        };
        let issuer = if issuer.is_empty() {
            "nobody".to_owned()
        } else {
            Described(issuer).to_string()
        };
        Hold::new(
            Severity::High,
            "command-unapproved",
            format!(
                "command {} to device {} needs a second person's approval at {} (issued by \
                 {issuer}, approved by {approver})",
                Quoted(command),
                Quoted(device),
                self.pointers.approver,
            ),
        )
    }

    /// Minute of the day at `ms` in the configured `utc-offset`.
    fn minute_of_day(&self, ms: u64) -> u32 {
        let minutes =
            i64::try_from(ms / 60_000).unwrap_or(i64::MAX) + i64::from(self.offset_minutes);
        // rem_euclid of 1440 fits in a u32.
        u32::try_from(minutes.rem_euclid(1440)).unwrap_or(0)
    }
}

/// The last accepted value and how far `value` moves from it, when that is over `max_step`;
/// `None` when it is not, or when there is no last value (the first command).
fn step_over(last: Option<f64>, value: f64, max_step: f64) -> Option<(f64, f64)> {
    let last = last?;
    let moved = (value - last).abs();
    (moved > max_step).then_some((last, moved))
}

/// The holds of a command not checked against any name yet: described, since the twin may
/// write anything there.
fn unknown_device(command: &str, device: &str) -> Hold {
    Hold::new(
        Severity::High,
        "command-unknown-device",
        format!(
            "command {} for device {} which the device registry does not know",
            Described(command),
            Quoted(device)
        ),
    )
}

/// See [`unknown_device`].
fn not_allowed(command: &str, device: &str, class: &str, allowed: &[&str]) -> Hold {
    Hold::new(
        Severity::High,
        "command-not-allowed",
        format!(
            "command {} is not allowed for device {} (class {}; allowed: {})",
            Described(command),
            Quoted(device),
            Quoted(class),
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        ),
    )
}

fn last_key(target: &str) -> String {
    format!("last:{target}")
}

fn malformed(device: &str, why: String) -> Hold {
    Hold::new(
        Severity::Medium,
        "command-malformed",
        format!("command for device {} is malformed: {why}", Quoted(device)),
    )
}

fn state_hold(device: &str, what: &str, err: &StateError) -> Hold {
    Hold::new(
        Severity::High,
        "state-error",
        format!(
            "{what} of device {}: the host refused to store it ({err}); held because the next \
             check would be blind",
            Quoted(device)
        ),
    )
}

#[cfg(test)]
mod tests;
