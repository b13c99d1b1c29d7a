//! The compare benchmark's policy as a twinguard guest (contract 0.2): quarantine a message
//! whose topic names another device or whose device is not in the inventory, or whose `temp_c`
//! / `kw` is not a number within bounds; else remove the PII keys present; else allow.
//!
//! Configuration: `inventory`, the device ids, comma-separated.

#![forbid(unsafe_code)]

use std::collections::HashSet;

use twinguard_guest::{
    declare, export_configured, Config, Configured, Decision, Envelope, Field, Message,
};

/// Range-checked fields and their inclusive bounds.
const RANGES: [(&str, f64, f64); 2] = [("/temp_c", -40.0, 150.0), ("/kw", 0.0, 400.0)];
/// Top-level PII keys, removed when present.
const PII: [&str; 3] = ["/operator_phone", "/owner_email", "/owner_name"];

export_configured!(Guard);

/// The inventory, parsed once per instance, and the handles of the declared fields.
struct Guard {
    inventory: HashSet<String>,
    /// `RANGES`' fields, in order.
    ranges: [Field; 2],
    /// `PII`'s fields, in order.
    pii: [Field; 3],
}

impl Configured for Guard {
    fn init(config: &Config) -> Result<Self, String> {
        config.check_keys(&["inventory"])?;
        let list = config
            .get("inventory")
            .ok_or("config `inventory` (comma-separated device ids) is required")?;
        let inventory = list
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        // Read on every message: handed over with the call instead of fetched per lookup.
        declare::envelope(Envelope::DEVICE_ID | Envelope::TOPIC)?;
        let ranges = [declare::field(RANGES[0].0)?, declare::field(RANGES[1].0)?];
        let pii = [
            declare::field(PII[0])?,
            declare::field(PII[1])?,
            declare::field(PII[2])?,
        ];
        Ok(Self {
            inventory,
            ranges,
            pii,
        })
    }

    fn evaluate(&self, msg: &Message) -> Decision {
        let device = msg.device_id();
        if msg.topic_segments().nth(1) != Some(device) {
            return Decision::quarantine("the topic names another device");
        }
        if !self.inventory.contains(device) {
            return Decision::quarantine("unknown device");
        }
        for ((pointer, lo, hi), field) in RANGES.into_iter().zip(self.ranges) {
            // Declared: read from the call itself, borrowed, no host call.
            match msg.get(field) {
                Ok(None) => {}
                Ok(Some(value)) => match value.as_f64() {
                    Some(x) if lo <= x && x <= hi => {}
                    Some(x) => {
                        return Decision::quarantine(format!("{pointer} = {x} is out of range"))
                    }
                    None => return Decision::quarantine(format!("{pointer} is not a number")),
                },
                Err(e) => return Decision::quarantine(format!("{pointer}: {e}")),
            }
        }
        let mut redact: Option<Decision> = None;
        for (pointer, field) in PII.into_iter().zip(self.pii) {
            if msg.get_has(field) {
                redact = Some(redact.unwrap_or_else(Decision::redact).remove(pointer));
            }
        }
        redact.unwrap_or_else(Decision::allow)
    }
}
