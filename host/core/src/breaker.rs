//! A policy's circuit breaker: faults are accounted **per device first**, so one device can
//! never switch a policy off (or to quarantine-all) for everyone else.
//!
//! - **A device is held** when `breaker-threshold` of its last [`DEVICE_WINDOW`] messages made
//!   the policy fault (a run, or every second message alike). Its messages then get the
//!   policy's on-fault action without running the policy ([`Fault::DeviceHeld`]), and an
//!   alert `device-held` names it once; every other device is judged as before.
//! - **The policy-wide breaker opens** on a fault *rate* across the devices still judged:
//!   `breaker-rate` percent of the last [`POLICY_WINDOW`] runs (counted once the window is
//!   full). A held device no longer runs, so it cannot fill the window by itself.
//! - Both close after `breaker-cooldown-ms` (the next message runs again, and a device that
//!   still faults is soon held again), or at once by [`Runtime::reset_breaker`] /
//!   [`Runtime::release_device`](crate::Runtime::release_device) (`twinguard policy breaker …`).
//!
//! Cost: the hot path reads two atomics while nothing faults; per-device records exist only
//! for devices that faulted recently (at most [`MAX_TRACKED`]), and are dropped once their
//! window is clean again.
//!
//! [`Runtime::reset_breaker`]: crate::Runtime::reset_breaker
//! [`Fault::DeviceHeld`]: crate::Fault::DeviceHeld

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::message::now_ms;

/// Messages of one device the per-device count looks back on.
pub const DEVICE_WINDOW: u32 = 16;
/// Runs of a policy (across devices) the policy-wide rate looks back on.
pub const POLICY_WINDOW: u32 = 64;
/// Devices with a fault record kept per policy; past it, new devices' faults count
/// policy-wide only.
pub const MAX_TRACKED: usize = 10_000;

/// The settings of one policy's breaker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerSettings {
    /// Faults among a device's last 16 messages that hold the device (0 = never).
    pub threshold: u32,
    /// Percent of the policy's last 64 runs that open it for everyone (0 = never).
    pub rate: u32,
    /// How long a held device or an open breaker stays so.
    pub cooldown_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Device {
    /// The last messages' outcomes, newest in bit 0 (1 = fault).
    bits: u16,
    /// When it was held (ms since the epoch); 0 = judged normally.
    held_since: u64,
}

/// What the breaker lets happen to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Run the policy.
    Run,
    /// The device is held after this many faults of its last 16 messages.
    DeviceHeld(u32),
    /// The policy is open for everyone after this many faults of its last 64 runs.
    Open(u32),
}

/// What recording a run changed, for an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tripped {
    /// This device is now held (faults of its last 16).
    Device(u32),
    /// The policy is now open for everyone (faults of its last 64).
    Policy(u32),
}

/// A device held by a policy's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldDevice {
    /// The device id.
    pub device: String,
    /// Faults among its last 16 messages when it was held.
    pub faults: u32,
    /// When it was held, ms since the Unix epoch.
    pub since_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    /// The policy's last runs, newest in bit 0 (1 = fault); written only while it has a
    /// fault in it, so a healthy policy's runs write nothing here.
    window: AtomicU64,
    /// Runs recorded into `window`, saturating at 64.
    filled: AtomicU32,
    /// When the policy-wide breaker opened (ms since the epoch); 0 = closed.
    open_since: AtomicU64,
    devices: DashMap<String, Device>,
    /// `devices.len()`, kept so the hot path need not visit the map's shards.
    tracked: AtomicUsize,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            window: AtomicU64::new(0),
            filled: AtomicU32::new(0),
            open_since: AtomicU64::new(0),
            devices: DashMap::new(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Whether `device`'s message may run the policy.
    pub fn gate(&self, device: &str) -> Gate {
        let open_since = self.open_since.load(Ordering::Relaxed);
        if open_since != 0 {
            if now_ms().saturating_sub(open_since) < self.settings.cooldown_ms {
                return Gate::Open(self.window.load(Ordering::Relaxed).count_ones());
            }
            // Cooled down: judge again, from a clean window.
            self.close();
        }
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return Gate::Run;
        }
        let Some(mut d) = self.devices.get_mut(device) else {
            return Gate::Run;
        };
        if d.held_since == 0 {
            return Gate::Run;
        }
        if now_ms().saturating_sub(d.held_since) < self.settings.cooldown_ms {
            return Gate::DeviceHeld(d.bits.count_ones());
        }
        *d = Device::default();
        Gate::Run
    }

    /// Records a run of the policy on `device`'s message; says what it tripped, if anything.
    pub fn record(&self, device: &str, faulted: bool) -> Option<Tripped> {
        let tripped = self.record_device(device, faulted);
        if tripped.is_some() {
            // A device now held stops running: its faults no longer count policy-wide.
            return tripped;
        }
        self.record_policy(faulted)
    }

    fn record_device(&self, device: &str, faulted: bool) -> Option<Tripped> {
        if self.settings.threshold == 0 || (!faulted && self.tracked.load(Ordering::Relaxed) == 0) {
            return None;
        }
        if !faulted {
            // Only a device with a record has anything to update.
            let clean = {
                let mut d = self.devices.get_mut(device)?;
                d.bits <<= 1;
                d.bits == 0 && d.held_since == 0
            };
            if clean && self.devices.remove(device).is_some() {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
            return None;
        }
        if !self.devices.contains_key(device) {
            if self.tracked.load(Ordering::Relaxed) >= MAX_TRACKED {
                return None;
            }
            if self
                .devices
                .insert(device.to_string(), Device::default())
                .is_none()
            {
                self.tracked.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut d = self.devices.get_mut(device)?;
        d.bits = (d.bits << 1) | 1;
        let faults = d.bits.count_ones();
        if d.held_since == 0 && faults >= self.settings.threshold {
            d.held_since = now_ms().max(1);
            return Some(Tripped::Device(faults));
        }
        None
    }

    fn record_policy(&self, faulted: bool) -> Option<Tripped> {
        if self.settings.rate == 0 {
            return None;
        }
        let window = self.window.load(Ordering::Relaxed);
        if window == 0 && !faulted {
            return None;
        }
        let fault = u64::from(faulted);
        let window = self
            .window
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w << 1) | fault)
            })
            .map_or(0, |w| (w << 1) | fault);
        let filled = self
            .filled
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n + 1).min(POLICY_WINDOW))
            })
            .map_or(POLICY_WINDOW, |n| (n + 1).min(POLICY_WINDOW));
        let faults = window.count_ones();
        let over =
            u64::from(faults) * 100 >= u64::from(self.settings.rate) * u64::from(POLICY_WINDOW);
        if filled >= POLICY_WINDOW && over && self.open_since.load(Ordering::Relaxed) == 0 {
            self.open_since.store(now_ms().max(1), Ordering::Relaxed);
            return Some(Tripped::Policy(faults));
        }
        None
    }

    /// Whether the policy-wide breaker is open now.
    pub fn is_open(&self) -> bool {
        let since = self.open_since.load(Ordering::Relaxed);
        since != 0 && now_ms().saturating_sub(since) < self.settings.cooldown_ms
    }

    /// Faults among the policy's last 64 runs.
    pub fn recent_faults(&self) -> u32 {
        self.window.load(Ordering::Relaxed).count_ones()
    }

    /// How many devices are held now (what [`held`](Self::held) would list).
    pub fn held_count(&self) -> usize {
        let now = now_ms();
        self.devices
            .iter()
            .filter(|d| {
                d.held_since != 0 && now.saturating_sub(d.held_since) < self.settings.cooldown_ms
            })
            .count()
    }

    /// The devices held now.
    pub fn held(&self) -> Vec<HeldDevice> {
        let now = now_ms();
        let mut held: Vec<HeldDevice> = self
            .devices
            .iter()
            .filter(|d| {
                d.held_since != 0 && now.saturating_sub(d.held_since) < self.settings.cooldown_ms
            })
            .map(|d| HeldDevice {
                device: d.key().clone(),
                faults: d.bits.count_ones(),
                since_ms: d.held_since,
            })
            .collect();
        held.sort_by(|a, b| a.device.cmp(&b.device));
        held
    }

    /// Closes the policy-wide breaker and forgets its window.
    pub fn close(&self) {
        self.open_since.store(0, Ordering::Relaxed);
        self.window.store(0, Ordering::Relaxed);
        self.filled.store(0, Ordering::Relaxed);
    }

    /// Closes everything: the policy-wide breaker and every device's record.
    pub fn reset(&self) {
        self.close();
        self.devices.clear();
        self.tracked.store(0, Ordering::Relaxed);
    }

    /// Releases one device; whether it was held.
    pub fn release(&self, device: &str) -> bool {
        match self.devices.remove(device) {
            Some((_, d)) => {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                d.held_since != 0
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, rate: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            threshold,
            rate,
            cooldown_ms: 3_600_000,
        })
    }

    #[test]
    fn a_device_faulting_every_other_message_is_held_alone() {
        let b = breaker(5, 50);
        let mut tripped = None;
        // Faults at messages 0, 2, 4, 6 and 8: the fifth holds the device.
        for i in 0..9 {
            assert_eq!(b.gate("bad"), Gate::Run, "message {i}");
            tripped = tripped.or(b.record("bad", i % 2 == 0));
            assert_eq!(b.gate("good"), Gate::Run);
            assert_eq!(b.record("good", false), None);
        }
        assert_eq!(tripped, Some(Tripped::Device(5)));
        assert_eq!(b.gate("bad"), Gate::DeviceHeld(5));
        assert_eq!(b.gate("good"), Gate::Run);
        assert!(!b.is_open());
        assert_eq!(b.held()[0].device, "bad");
        assert!(b.release("bad"));
        assert_eq!(b.gate("bad"), Gate::Run);
    }

    #[test]
    fn many_devices_faulting_open_the_policy_for_everyone() {
        let b = breaker(5, 50);
        let mut tripped = None;
        // Each device faults once: none is held, the rate opens the policy.
        for i in 0..64 {
            tripped = tripped.or(b.record(&format!("d{i}"), true));
        }
        assert_eq!(tripped, Some(Tripped::Policy(64)));
        assert!(matches!(b.gate("anyone"), Gate::Open(_)));
        b.reset();
        assert_eq!(b.gate("anyone"), Gate::Run);
        assert!(b.held().is_empty());
    }

    #[test]
    fn clean_devices_leave_no_record_and_cost_no_write() {
        let b = breaker(5, 50);
        for _ in 0..1000 {
            assert_eq!(b.record("d", false), None);
        }
        assert_eq!(b.tracked.load(Ordering::Relaxed), 0);
        assert_eq!(b.window.load(Ordering::Relaxed), 0);
        b.record("d", true);
        for _ in 0..16 {
            b.record("d", false);
        }
        assert_eq!(
            b.tracked.load(Ordering::Relaxed),
            0,
            "a clean window drops the record"
        );
    }
}
