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

pub use device::staff;
use device::{Device, Episode};
pub use scenario::{Label, Scenario, Unit};

/// Simulated time an episode needs to run its course (the longest, a slow drift, lasts three
/// hours).
const EPISODE_ROOM_MS: u64 = 3 * 3_600_000;

/// Marks a queue entry as the twin's next command to the device, not the device's message.
const COMMAND: u32 = 1 << 31;

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
        let mut queue = BinaryHeap::with_capacity(devices.len() * 2);
        for (i, d) in devices.iter().enumerate() {
            let first = START_MS + rng.random_range(0..d.kind.period_ms());
            // Fewer than 2^31 devices: `--devices` is a u32 and this is far beyond memory.
            let i = u32::try_from(i).unwrap_or(COMMAND - 1);
            queue.push(Reverse((first, i)));
            if d.controllable() {
                queue.push(Reverse((d.next_command(START_MS, &mut rng), i | COMMAND)));
            }
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

    /// The ids of every device of the plant, in registry order.
    #[cfg(test)]
    pub fn inventory(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.id.as_str())
    }

    /// The plant's device registry as CSV (`docs/registry.md`): every device with its class,
    /// reporting period, line and location, and for a device the twin controls, the commands
    /// it takes and its setpoint's bounds. The demo's configuration is generated from it.
    pub fn registry(&self) -> String {
        let mut targets: Vec<&'static str> = Vec::new();
        for d in &self.devices {
            if let Some(s) = d.kind.setpoint() {
                if !targets.contains(&s.target) {
                    targets.push(s.target);
                }
            }
        }
        let mut csv = String::from("id,class,period-s,line,location,commands");
        for t in &targets {
            csv.push_str(&format!(",{t}.min,{t}.max,{t}.max-step"));
        }
        csv.push('\n');
        for (i, d) in self.devices.iter().enumerate() {
            // A door reader reports events, not on a period.
            let period = if d.kind.is_sensor() {
                (d.kind.period_ms() / 1000).to_string()
            } else {
                String::new()
            };
            let setpoint = d.kind.setpoint();
            let commands = if setpoint.is_some() { "set" } else { "" };
            csv.push_str(&format!(
                "{},{},{period},{},hall-{},{commands}",
                d.id,
                d.kind.class(),
                1 + i % 4,
                1 + i % 7
            ));
            for t in &targets {
                match setpoint.filter(|s| s.target == *t) {
                    Some(s) => csv.push_str(&format!(",{},{},{}", s.min, s.max, s.max_step)),
                    None => csv.push_str(",,,"),
                }
            }
            csv.push('\n');
        }
        csv
    }

    /// The classes of the plant's devices, in first-seen order.
    pub fn classes(&self) -> Vec<&'static str> {
        let mut classes = Vec::new();
        for d in &self.devices {
            if !classes.contains(&d.kind.class()) {
                classes.push(d.kind.class());
            }
        }
        classes
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
        let pending = self.devices[i].pending.take();
        if attacking
            && pending.is_none()
            && self.devices[i].episode.is_none()
            && now >= self.devices[i].quiet_until
        {
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
        let mut tamper = pending;
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
                Scenario::SpoofField => {
                    let n = self.devices.len();
                    if n > 1 {
                        let mut other = self.rng.random_range(0..n);
                        if other == i {
                            other = (other + 1) % n;
                        }
                        self.devices[i].spoof_as = Some(self.devices[other].id.clone());
                        tamper = Some(label);
                    }
                }
                Scenario::Coordinated => {
                    // Three to six other sensors, each at its next report: one moment for the
                    // plant (a minute), several devices.
                    let n = self.devices.len();
                    let want = self.rng.random_range(3..=6);
                    let mut joined = 0;
                    for _ in 0..4 * want {
                        if joined == want {
                            break;
                        }
                        let j = self.rng.random_range(0..n);
                        let d = &mut self.devices[j];
                        if j != i
                            && d.kind.is_sensor()
                            && d.episode.is_none()
                            && d.pending.is_none()
                            && now >= d.quiet_until
                        {
                            d.pending = Some(label.clone());
                            d.quiet_until = now + 10 * d.kind.period_ms();
                            joined += 1;
                        }
                    }
                    tamper = Some(label);
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

    /// The twin's command to device `i` at `now`, maybe an attack on the command path.
    fn command(&mut self, i: usize, now: u64) -> SimMessage {
        let attacking = self.config.attacks && now >= START_MS + self.config.attack_start_ms;
        let mut label = None;
        if attacking {
            let roll: f64 = self.rng.random();
            let p = Scenario::CommandBounds.probability() * self.config.attack_intensity;
            if roll < p {
                label = Some(Label::new(Scenario::CommandBounds, self.next_episode()));
            } else if roll < 2.0 * p {
                label = Some(Label::new(Scenario::CommandUnknown, self.next_episode()));
            }
        }
        self.devices[i].command(now, label, &mut self.rng)
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
        if i & COMMAND != 0 {
            let idx = (i & !COMMAND) as usize;
            let msg = self.command(idx, now);
            let next = self.devices[idx].next_command(now, &mut self.rng);
            self.queue.push(Reverse((next, i)));
            self.emitted += 1;
            return Some(msg);
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
