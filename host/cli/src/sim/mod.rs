//! A simulated plant that streams device messages, some of them attacks, for `twinguard demo`
//! and for testing policies against realistic traffic.
//!
//! Devices of four kinds (temperature, vibration, power meter, door reader) report in virtual
//! time with daily cycles and noise; attack scenarios are injected and **labelled**, so a scorer
//! can compare what the policies decided with the truth. Everything is deterministic per seed.
//! The message format is documented in `docs/simulator.md`.
//!
//! ```ignore
//! use crate::sim::{SimConfig, Simulator};
//!
//! let sim = Simulator::new(SimConfig { devices: 8, duration_ms: 3_600_000, ..SimConfig::default() });
//! let attacks = sim.filter(|m| m.label.is_some()).count();
//! assert!(attacks < 200);
//! ```

mod device;
mod scenario;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use twinguard::Message;

use device::{Device, Episode};
pub use scenario::{Label, Scenario, Unit};

/// Simulated time an episode needs to run its course (the longest, a drift, lasts an hour).
const EPISODE_ROOM_MS: u64 = 3_600_000;

/// 2026-11-25T00:00:00Z, the start of simulated time.
pub const START_MS: u64 = 1_764_028_800_000;

/// Parameters of a simulation run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of devices in the plant (mixed kinds, see `docs/simulator.md`).
    pub devices: u32,
    /// Simulated time covered, from [`START_MS`].
    pub duration_ms: u64,
    /// Stop after this many messages, whatever the duration.
    pub max_messages: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Inject attacks; `false` gives clean traffic only.
    pub attacks: bool,
    /// Attacks start after this much simulated time, so per-device baselines can form first
    /// (a detector that learns a device's normal behaviour cannot judge its first minutes).
    pub attack_start_ms: u64,
    /// Multiplies every attack probability.
    pub attack_intensity: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            devices: 200,
            duration_ms: 24 * 3_600_000,
            max_messages: None,
            seed: 42,
            attacks: true,
            attack_start_ms: 3_600_000,
            attack_intensity: 1.0,
        }
    }
}

/// One message of the stream, with its ground truth.
#[derive(Debug, Clone)]
pub struct SimMessage {
    /// What the host receives.
    pub message: Message,
    /// `None` for clean traffic; the scenario otherwise. Only the scorer may look at it.
    pub label: Option<Label>,
}

/// The plant: an iterator of messages in receive order.
#[derive(Debug)]
pub struct Simulator {
    config: SimConfig,
    rng: ChaCha8Rng,
    devices: Vec<Device>,
    /// Next event time per device, earliest first.
    queue: BinaryHeap<Reverse<(u64, u32)>>,
    /// Extra messages produced by the last event (replays, spoofs), emitted before the next one.
    pending: VecDeque<SimMessage>,
    emitted: u64,
    episodes: u32,
    rogues: u32,
}

impl Simulator {
    /// A plant as configured.
    pub fn new(config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let devices: Vec<Device> = (0..config.devices)
            .map(|i| Device::new(i, &mut rng))
            .collect();
        let mut queue = BinaryHeap::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            let first = START_MS + rng.random_range(0..d.kind.period_ms());
            queue.push(Reverse((first, u32::try_from(i).unwrap_or(u32::MAX))));
        }
        Self {
            config,
            rng,
            devices,
            queue,
            pending: VecDeque::new(),
            emitted: 0,
            episodes: 0,
            rogues: 0,
        }
    }

    /// The ids of every device of the plant, i.e. the inventory an identity policy should know.
    pub fn inventory(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.id.as_str())
    }

    fn next_episode(&mut self) -> u32 {
        self.episodes += 1;
        self.episodes
    }

    /// Runs device `i`'s next event at `now`: one message (maybe an attack), maybe extras.
    fn step(&mut self, i: usize, now: u64) -> SimMessage {
        let attacking = self.config.attacks && now >= START_MS + self.config.attack_start_ms;
        let p = self.config.attack_intensity;

        // Start an episode or pick a one-message attack; never both, and never two at once on a
        // device, so every message has exactly one truth.
        let mut single = None;
        if attacking && self.devices[i].episode.is_none() && now >= self.devices[i].quiet_until {
            let kind = self.devices[i].kind;
            let roll: f64 = self.rng.random();
            let mut acc = 0.0;
            for scenario in Scenario::ALL {
                if !scenario.applies_to(kind) {
                    continue;
                }
                acc += scenario.probability() * p;
                if roll < acc {
                    // An episode that could not finish before the run ends would be scored on
                    // its first, undetectable, messages: start none in the last hour.
                    let ends = START_MS + self.config.duration_ms;
                    if scenario.unit() == Unit::Episode && now + EPISODE_ROOM_MS > ends {
                        break;
                    }
                    if scenario.unit() == Unit::Episode {
                        let id = self.next_episode();
                        let episode = Episode::start(scenario, id, kind, &mut self.rng);
                        self.devices[i].episode = Some(episode);
                    } else {
                        single = Some(scenario);
                    }
                    break;
                }
            }
        }

        let mut extras = Vec::new();
        let mut tamper = None;
        if let Some(scenario) = single {
            let label = Label::new(scenario, self.next_episode());
            match scenario {
                Scenario::Replay => {
                    let (device, rng) = (&mut self.devices[i], &mut self.rng);
                    if let Some(old) = device.replayable(now, rng) {
                        extras.push(SimMessage {
                            message: device.deliver(old, now, rng),
                            label: Some(label),
                        });
                    }
                }
                Scenario::SpoofUnknown => {
                    self.rogues += 1;
                    extras.push(SimMessage {
                        message: device::rogue(self.rogues, now, &mut self.rng),
                        label: Some(label),
                    });
                }
                Scenario::SpoofIdentity => {
                    let n = self.devices.len();
                    if n > 1 {
                        let mut victim = self.rng.random_range(0..n);
                        if victim == i {
                            victim = (victim + 1) % n;
                        }
                        let forged =
                            self.devices[i].impersonate(&self.devices[victim], now, &mut self.rng);
                        extras.push(SimMessage {
                            message: forged,
                            label: Some(label),
                        });
                    }
                }
                _ => tamper = Some(label),
            }
            // Let the device's traffic settle before its next attack.
            self.devices[i].quiet_until = now + 10 * self.devices[i].kind.period_ms();
        }

        let out = self.devices[i].emit(now, tamper, &mut self.rng);
        self.pending.extend(extras);
        out
    }
}

impl Iterator for Simulator {
    type Item = SimMessage;

    fn next(&mut self) -> Option<SimMessage> {
        if self
            .config
            .max_messages
            .is_some_and(|max| self.emitted >= max)
        {
            return None;
        }
        if let Some(extra) = self.pending.pop_front() {
            self.emitted += 1;
            return Some(extra);
        }
        let Reverse((now, i)) = self.queue.pop()?;
        if now >= START_MS + self.config.duration_ms {
            return None;
        }
        let idx = i as usize;
        let msg = self.step(idx, now);
        let next = self.devices[idx].next_event(now, &mut self.rng);
        self.queue.push(Reverse((next, i)));
        self.emitted += 1;
        Some(msg)
    }
}

#[cfg(test)]
mod tests;
