//! Each device's fair share, enforced before any policy sees its messages: by the gateway
//! (`[gateway.device-budget]`) and inside the broker by the Mosquitto plugin
//! (`plugin_opt_device_budget_rate`).
//!
//! In the gateway, messages of one device go to one worker (its order must hold), so a device
//! that floods fills its worker's queue, and every device sharing that worker waits behind it;
//! past the gateway's throughput the broker's queue for the gateway's session overflows and
//! drops messages of *other* devices. Inside the broker, the plugin judges on the broker's one
//! thread, so a flood's judgements take every other client's turn. A token bucket per device,
//! checked as messages arrive, sheds a device's excess there: dropped unjudged, counted and
//! alerted (`device-over-budget`, once per episode), never queued ahead of others. Storing the
//! excess instead would spend the store's write rate, which every device shares, on the flood.

use std::collections::HashMap;
use std::time::Instant;

use serde::Deserialize;

/// Messages per second one device may send (sustained) and at once: `[gateway.device-budget]`
/// for the gateway, `plugin_opt_device_budget_rate` and `_burst` for the Mosquitto plugin.
///
/// ```toml
/// [gateway.device-budget]
/// rate = 1000      # per second, sustained (default)
/// burst = 10000    # at once above the rate (default: 10 s of rate)
/// ```
///
/// A device of a plant sends a reading every few seconds; the default leaves three orders of
/// magnitude of room and still stops one device from taking the gateway. `rate = 0` turns the
/// budget off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceBudget {
    /// Messages per second, sustained; 0 turns the budget off.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Messages at once above the rate (default: 10 s of `rate`).
    pub burst: Option<f64>,
}

fn default_rate() -> f64 {
    1000.0
}

impl Default for DeviceBudget {
    fn default() -> Self {
        Self {
            rate: default_rate(),
            burst: None,
        }
    }
}

impl DeviceBudget {
    /// Checks the numbers; the error names the setting, `rate` and `burst` being the keys'
    /// names as the front end spells them (`gateway.device-budget.rate`,
    /// `plugin_opt_device_budget_rate`).
    pub fn check(&self, rate: &str, burst: &str) -> Result<(), String> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(format!(
                "{rate} {}: a number of messages per second, 0 or more (0 turns the budget off)",
                self.rate
            ));
        }
        if let Some(b) = self.burst {
            if !b.is_finite() || b < 1.0 {
                return Err(format!("{burst} {b}: at least 1 message"));
            }
        }
        Ok(())
    }

    /// Messages at once: `burst`, or 10 s of `rate`.
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(self.rate * 10.0).max(1.0)
    }

    /// The security event's content for a device gone over this budget (`device-over-budget`,
    /// medium), `setting` naming where the budget is configured. The device id is cut to
    /// [`SHOWN`] characters: the event carries it whole in its own field.
    pub fn alert(&self, device: &str, setting: &str) -> twinguard_core::Alert {
        twinguard_core::Alert::new(
            "twinguard",
            env!("CARGO_PKG_VERSION"),
            twinguard_core::Severity::Medium,
            "device-over-budget",
            format!(
                "device \"{}\" sends faster than its budget ({} messages/s, {} at once): \
                 its excess is shed before judgement so that other devices keep their share \
                 ({setting})",
                shown(device),
                self.rate,
                self.burst()
            ),
        )
    }
}

/// Characters of a device id shown in a budget's log lines and alert details.
pub const SHOWN: usize = 128;

/// A device id for a budget's log line: controls escaped, at most [`SHOWN`] characters.
pub fn shown(device: &str) -> std::borrow::Cow<'_, str> {
    twinguard_core::text::bounded(device, SHOWN)
}

/// What [`Budgets::take`] says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget.
    Pass,
    /// Over budget: shed.
    Shed {
        /// The first shed message of an episode: the one to raise an alert for.
        first: bool,
    },
    /// Within budget, and the end of an episode: the device's bucket has refilled, so it kept
    /// to its rate for as long as the burst lasts.
    Resumed {
        /// Messages shed in the episode.
        shed: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Messages shed in the current episode; 0 outside one. An episode ends only when the
    /// bucket is full again: a device held at its rate passes one message per refilled
    /// token, and ending the episode on each of those would raise an alert per token (at a
    /// steady 10,000/s against 1,000/s, a thousand alerts and warnings a second, which cost
    /// the connection's task more than the shedding saved).
    shed: u64,
}

/// Buckets tracked at most before idle ones are forgotten (a full bucket and a missing one
/// are the same).
const TRACKED: usize = 100_000;

/// The token buckets of every device seen, owned by one task or thread (no lock).
///
/// ```
/// use std::time::Instant;
/// use twinguard::budget::{Budgets, DeviceBudget, Verdict};
///
/// let budget = DeviceBudget { rate: 10.0, burst: Some(2.0) };
/// let mut budgets = Budgets::new(&budget).expect("rate above 0: on");
/// let now = Instant::now();
/// assert_eq!(budgets.take("press-7", now), Verdict::Pass);
/// assert_eq!(budgets.take("press-7", now), Verdict::Pass);
/// assert_eq!(budgets.take("press-7", now), Verdict::Shed { first: true });
/// assert_eq!(budgets.take("press-8", now), Verdict::Pass);
/// ```
pub struct Budgets {
    rate: f64,
    burst: f64,
    /// Keyed by the device id's hash under a per-process random key, not by the id: a bucket
    /// costs the same for a 64 KiB id as for a short one, so ids a hostile device makes up
    /// cost memory by their number only (bounded by the sweep), never by their length.
    /// Colliding with a victim's key needs the process's key.
    buckets: HashMap<u64, Bucket>,
    ids: std::collections::hash_map::RandomState,
    /// When to sweep next: grows when a sweep frees little, so sweeps stay amortised.
    sweep_at: usize,
    /// Episodes a sweep ended without a message to say so: devices, and messages they shed.
    swept: (u64, u64),
}

impl Budgets {
    /// Buckets for `budget`; `None` when it is off.
    pub fn new(budget: &DeviceBudget) -> Option<Self> {
        (budget.rate > 0.0).then(|| Self {
            rate: budget.rate,
            burst: budget.burst(),
            buckets: HashMap::new(),
            ids: std::collections::hash_map::RandomState::new(),
            sweep_at: TRACKED,
            swept: (0, 0),
        })
    }

    /// One message of `device` at `now`.
    pub fn take(&mut self, device: &str, now: Instant) -> Verdict {
        if self.buckets.len() >= self.sweep_at {
            self.sweep(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self
            .buckets
            .entry(std::hash::BuildHasher::hash_one(&self.ids, device))
            .or_insert(Bucket {
                tokens: burst,
                last: now,
                shed: 0,
            });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        let ended = if bucket.shed > 0 && bucket.tokens >= burst {
            std::mem::take(&mut bucket.shed)
        } else {
            0
        };
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            if ended > 0 {
                Verdict::Resumed { shed: ended }
            } else {
                Verdict::Pass
            }
        } else {
            let first = bucket.shed == 0;
            bucket.shed += 1;
            Verdict::Shed { first }
        }
    }

    /// Forgets the devices whose bucket has refilled. A device forgotten in an episode ended
    /// it (it kept to its rate), but no message of its will say so: those are counted for
    /// [`swept`](Self::swept).
    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let mut swept = self.swept;
        self.buckets.retain(|_, b| {
            let keep =
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst;
            if !keep && b.shed > 0 {
                swept.0 += 1;
                swept.1 += b.shed;
            }
            keep
        });
        self.swept = swept;
        self.sweep_at = (self.buckets.len() * 2).max(TRACKED);
    }

    /// Episodes that ended when their devices were forgotten since the last call, as
    /// (devices, messages they shed); `None` when there were none. A front end logs it beside
    /// the [`Verdict::Resumed`] lines, which these devices will not get.
    pub fn swept(&mut self) -> Option<(u64, u64)> {
        (self.swept.0 > 0).then(|| std::mem::take(&mut self.swept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budgets(rate: f64, burst: f64) -> Budgets {
        Budgets::new(&DeviceBudget {
            rate,
            burst: Some(burst),
        })
        .unwrap()
    }

    #[test]
    fn a_device_over_its_budget_is_shed_and_others_are_not() {
        let mut b = budgets(10.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(b.take("flood", t0), Verdict::Pass);
        }
        assert_eq!(b.take("flood", t0), Verdict::Shed { first: true });
        assert_eq!(b.take("flood", t0), Verdict::Shed { first: false });
        // Another device has its own bucket.
        assert_eq!(b.take("calm", t0), Verdict::Pass);
        // 100 ms later one token has come back: one passes, and the episode goes on (no new
        // alert for the next shed message).
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take("flood", t1), Verdict::Pass);
        assert_eq!(b.take("flood", t1), Verdict::Shed { first: false });
        // Held at its rate for a long time: still one episode.
        for ms in 1..=1000 {
            let t = t1 + Duration::from_millis(100 * ms);
            assert_eq!(b.take("flood", t), Verdict::Pass);
            assert_eq!(b.take("flood", t), Verdict::Shed { first: false });
        }
        // Quiet long enough to refill the burst, never beyond it: the episode ends with the
        // first message after it, which says how many were shed.
        let t2 = t1 + Duration::from_secs(200);
        assert_eq!(b.take("flood", t2), Verdict::Resumed { shed: 1003 });
        for _ in 0..4 {
            assert_eq!(b.take("flood", t2), Verdict::Pass);
        }
        assert_eq!(b.take("flood", t2), Verdict::Shed { first: true });
    }

    #[test]
    fn rate_zero_is_off_and_bad_numbers_are_named() {
        assert!(Budgets::new(&DeviceBudget {
            rate: 0.0,
            burst: None
        })
        .is_none());
        for (rate, burst, key) in [
            (-1.0, None, "rate"),
            (f64::NAN, None, "rate"),
            (10.0, Some(0.5), "burst"),
        ] {
            let e = DeviceBudget { rate, burst }
                .check("x.rate", "x.burst")
                .unwrap_err();
            assert!(e.starts_with(&format!("x.{key} ")), "{e}");
        }
        assert_eq!(DeviceBudget::default().burst(), 10_000.0);
    }

    #[test]
    fn refilled_buckets_are_forgotten() {
        let mut b = budgets(1.0, 2.0);
        let t0 = Instant::now();
        b.sweep_at = 10;
        for i in 0..10 {
            b.take(&format!("d{i}"), t0);
        }
        // Ten seconds on, all ten are full again: the next device's arrival sweeps them.
        assert_eq!(b.swept(), None);
        b.take("late", t0 + Duration::from_secs(10));
        assert_eq!(b.buckets.len(), 1);
        assert_eq!(b.sweep_at, TRACKED);
        // None of them was shedding: no episode ended unseen.
        assert_eq!(b.swept(), None);
    }

    #[test]
    fn an_episode_the_sweep_ends_is_counted() {
        let mut b = budgets(1.0, 2.0);
        let t0 = Instant::now();
        b.sweep_at = 2;
        for _ in 0..5 {
            b.take("flood", t0);
        }
        b.take("calm", t0);
        // Later, both refilled; a third device's arrival sweeps them, so "flood" will never
        // send the message that would end its episode.
        b.take("late", t0 + Duration::from_secs(10));
        assert_eq!(b.swept(), Some((1, 3)));
        assert_eq!(b.swept(), None);
        assert_eq!(b.take("flood", t0 + Duration::from_secs(11)), Verdict::Pass);
    }
}
