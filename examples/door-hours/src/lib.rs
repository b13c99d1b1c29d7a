//! door-hours: badge events are accepted only within the plant's opening hours, read in the
//! plant's own time zone (so the rule holds across daylight-saving changes), and one badge seen
//! at two doors within a minute (a cloned or shared badge) is held back.
//!
//! The door is the device: every badge reader publishes its own events. The badge id is read
//! from the payload (`/badge` by default). Where a badge was last seen is policy-wide state
//! (one namespace for every door), updated with compare-and-swap, so two gateway workers
//! judging two doors at once still see each other.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use twinguard_guest::declare::{self, Envelope, Field};
use twinguard_guest::findings::{Finding, Findings};
use twinguard_guest::state::global;
use twinguard_guest::text::Quoted;
use twinguard_guest::time::{self, TimeOfDay, TimeZone};
use twinguard_guest::{export_configured, Config, Configured, Decision, Message, Severity};

/// The settings, checked once when the policy loads.
struct DoorHours {
    zone: TimeZone,
    zone_name: String,
    open: TimeOfDay,
    close: TimeOfDay,
    badge: Field,
    within_ms: u64,
}

/// Where a badge was last seen.
#[derive(Serialize, Deserialize, PartialEq)]
struct Seen {
    door: String,
    at_ms: u64,
}

impl Configured for DoorHours {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["zone", "open", "close", "badge", "two-doors-within-s"])?;
        let zone_name = config
            .get("zone")
            .ok_or("zone: required, the plant's IANA time zone (e.g. \"Europe/Berlin\")")?
            .to_owned();
        let time_of = |key: &str, default: &str| {
            TimeOfDay::parse(config.get(key).unwrap_or(default)).map_err(|e| format!("{key}: {e}"))
        };
        let within_s: u64 = config.parse("two-doors-within-s")?.unwrap_or(60);
        declare::envelope(Envelope::DEVICE_ID)?;
        Ok(Self {
            zone: time::zone(&zone_name).map_err(|e| format!("zone: {e}"))?,
            zone_name,
            open: time_of("open", "06:00")?,
            close: time_of("close", "22:00")?,
            badge: declare::field(config.pointer("badge")?.unwrap_or("/badge"))?,
            within_ms: within_s.saturating_mul(1000),
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        // Not a badge event (a heartbeat, a door-state report): nothing to judge here.
        let Some(badge) = msg.get_str(self.badge) else {
            return Decision::allow();
        };
        let door = msg.device_id();
        let mut findings = Findings::new("door-hours");

        let local = time::local(msg.received_at_ms(), &self.zone);
        if !TimeOfDay::of(&local).within(self.open, self.close) {
            findings.push(Finding::detection(
                Severity::Medium,
                "badge-out-of-hours",
                format!(
                    "badge {} at door {} at {:02}:{:02} {} time, outside {}-{}",
                    Quoted(badge),
                    Quoted(door),
                    local.hour(),
                    local.minute(),
                    self.zone_name,
                    self.open,
                    self.close
                ),
            ));
        }

        let now = Seen {
            door: door.to_owned(),
            at_ms: msg.received_at_ms(),
        };
        let key = format!("badge/{badge}");
        let mut before = None;
        let stored = global::update(&key, |old| {
            // May run more than once (another worker swapped in between): no side effects.
            before = old.and_then(|b| serde_json::from_slice::<Seen>(b).ok());
            serde_json::to_vec(&now).ok()
        });
        match stored {
            Ok(_) => {
                if let Some(prev) = before.filter(|p| p.door != now.door) {
                    let gap = now.at_ms.abs_diff(prev.at_ms);
                    if gap < self.within_ms {
                        findings.push(Finding::detection(
                            Severity::High,
                            "badge-at-two-doors",
                            format!(
                                "badge {} at door {} {} s after door {}",
                                Quoted(badge),
                                Quoted(door),
                                gap / 1000,
                                Quoted(&prev.door)
                            ),
                        ));
                    }
                }
            }
            // Fail closed: without the record, the next door cannot be checked.
            Err(err) => findings.push(Finding::quarantine(format!(
                "cannot record where badge {} was seen: {err}",
                Quoted(badge)
            ))),
        }
        findings.decide()
    }
}

export_configured!(DoorHours);
