//! Simulated devices: what each kind measures, how it varies, and how it is encoded.

use std::collections::VecDeque;
use std::f64::consts::TAU;

use rand::Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde_json::{json, Map, Value};

use super::scenario::{self, Label, Scenario};
use super::{SimMessage, START_MS};
use twinguard::{ContentType, Message};

const HOUR_MS: f64 = 3_600_000.0;
/// Climate and vibration sensors report once a minute, power meters every 15 s, each with a
/// jitter of a thirtieth of the period.
const SENSOR_PERIOD_MS: u64 = 60_000;
const METER_PERIOD_MS: u64 = 15_000;
/// Door readers report badge events at random, this often on average.
const DOOR_MEAN_MS: f64 = 300_000.0;
/// A flooding device sends this often.
const FLOOD_PERIOD_MS: u64 = 100;
/// How far back a replay attacker can reach, and how recent a capture it avoids.
const REPLAY_WINDOW_MS: u64 = 3_600_000;
const REPLAY_MIN_AGE_MS: u64 = 300_000;

/// A kind of device in the plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Hall temperature and humidity, JSON.
    Temperature,
    /// Machine vibration, CBOR.
    Vibration,
    /// Power meter, CBOR.
    Power,
    /// Door badge reader carrying the badge holder's personal data, JSON.
    Door,
}

impl Kind {
    /// The id prefix and `kind` field of this kind.
    pub fn name(self) -> &'static str {
        match self {
            Self::Temperature => "temperature",
            Self::Vibration => "vibration",
            Self::Power => "power",
            Self::Door => "access",
        }
    }

    /// The device-id prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Temperature => "temp",
            Self::Vibration => "vib",
            Self::Power => "power",
            Self::Door => "door",
        }
    }

    /// The topic's last segment.
    pub fn channel(self) -> &'static str {
        match self {
            Self::Door => "access",
            _ => "telemetry",
        }
    }

    /// The device class the plant's registry records (`docs/registry.md`).
    pub fn class(self) -> &'static str {
        match self {
            Self::Temperature => "climate-sensor",
            Self::Vibration => "vibration-sensor",
            Self::Power => "power-meter",
            Self::Door => "badge-reader",
        }
    }

    /// What the twin may set on a device of this kind: the setpoint's name, its bounds and the
    /// largest step of one command (as the registry records them), and the range the twin's
    /// own control loop keeps to.
    pub fn setpoint(self) -> Option<Setpoint> {
        match self {
            Self::Temperature => Some(Setpoint {
                target: "setpoint_c",
                min: 16.0,
                max: 28.0,
                max_step: 3.0,
                normal: (18.0, 26.0),
                step: (0.5, 2.0),
            }),
            Self::Power => Some(Setpoint {
                target: "limit_kw",
                min: 50.0,
                max: 400.0,
                max_step: 60.0,
                normal: (100.0, 350.0),
                step: (5.0, 40.0),
            }),
            _ => None,
        }
    }

    /// The encoding the kind's firmware uses.
    pub fn content_type(self) -> ContentType {
        match self {
            Self::Vibration | Self::Power => ContentType::Cbor,
            Self::Temperature | Self::Door => ContentType::Json,
        }
    }

    /// Whether the kind reports continuous measurements (drift, frozen values and spikes apply).
    pub fn is_sensor(self) -> bool {
        self != Self::Door
    }

    /// The reporting period (for a door reader, the mean time between badge events).
    pub(super) fn period_ms(self) -> u64 {
        match self {
            Self::Door => 300_000,
            Self::Power => METER_PERIOD_MS,
            _ => SENSOR_PERIOD_MS,
        }
    }

    /// The kind of device `i` in the plant: 30 % temperature, 25 % vibration, 25 % power,
    /// 20 % door readers.
    fn of(i: u32) -> Self {
        match i % 20 {
            0..=5 => Self::Temperature,
            6..=10 => Self::Vibration,
            11..=15 => Self::Power,
            _ => Self::Door,
        }
    }

    /// The metrics a kind reports.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Self::Temperature => &TEMPERATURE,
            Self::Vibration => &VIBRATION,
            Self::Power => &POWER,
            Self::Door => &DOOR,
        }
    }
}

/// A value the twin sets on a device, and the bounds the plant's registry gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setpoint {
    /// The command's `target`.
    pub target: &'static str,
    /// Lowest value the device may be set to.
    pub min: f64,
    /// Highest value the device may be set to.
    pub max: f64,
    /// Largest change of one command.
    pub max_step: f64,
    /// The range the twin's control loop keeps to.
    normal: (f64, f64),
    /// The smallest and largest change the twin makes at once.
    step: (f64, f64),
}

/// One measured quantity and how it behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// Name under `/metrics/`.
    pub name: &'static str,
    /// Mean level (devices differ by up to `spread` around it).
    pub level: f64,
    /// Device-to-device spread of the level.
    pub spread: f64,
    /// Amplitude of the cycle.
    pub amplitude: f64,
    /// Period of the cycle in hours (24: daily, 8: shifts).
    pub cycle_h: f64,
    /// Hour of the cycle's rising zero crossing.
    pub phase_h: f64,
    /// Measurement noise (standard deviation).
    pub noise: f64,
    /// Decimals the firmware reports.
    pub decimals: i32,
    /// The metric attacks tamper with (one per kind).
    pub primary: bool,
}

// A table row: positional arguments keep the metric tables below one line each.
#[allow(clippy::too_many_arguments)]
const fn metric(
    name: &'static str,
    level: f64,
    spread: f64,
    amplitude: f64,
    cycle_h: f64,
    phase_h: f64,
    noise: f64,
    decimals: i32,
    primary: bool,
) -> Metric {
    Metric {
        name,
        level,
        spread,
        amplitude,
        cycle_h,
        phase_h,
        noise,
        decimals,
        primary,
    }
}

const TEMPERATURE: [Metric; 2] = [
    metric("temperature_c", 21.5, 1.0, 1.5, 24.0, 9.0, 0.15, 2, true),
    metric("humidity_pct", 45.0, 4.0, 6.0, 24.0, 3.0, 0.4, 1, false),
];
const VIBRATION: [Metric; 2] = [
    metric("rms_mm_s", 3.0, 0.3, 0.4, 8.0, 0.0, 0.1, 3, true),
    metric("peak_g", 0.5, 0.05, 0.1, 8.0, 0.0, 0.02, 3, false),
];
const POWER: [Metric; 2] = [
    metric("power_kw", 80.0, 10.0, 20.0, 24.0, 8.0, 2.0, 2, true),
    metric("voltage_v", 230.0, 1.0, 1.5, 24.0, 0.0, 0.4, 2, false),
];
const DOOR: [Metric; 0] = [];

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Linus",
    "Frances", "Niklaus",
];
const LAST: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson",
    "Perlman", "Torvalds", "Allen", "Wirth",
];

/// Everyone who works at the plant, by full name: the staff list a pii detector is given.
pub fn staff() -> Vec<String> {
    FIRST
        .iter()
        .flat_map(|f| LAST.iter().map(move |l| format!("{f} {l}")))
        .collect()
}

/// A person, for badge events and leaked operator records.
pub(super) fn person<R: Rng>(rng: &mut R) -> (String, String) {
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let name = format!("{first} {last}");
    let email = format!(
        "{}.{}@example.com",
        first.to_lowercase(),
        last.to_lowercase()
    );
    (name, email)
}

/// An attack that spans several messages of one device.
#[derive(Debug, Clone)]
pub(super) struct Episode {
    label: Label,
    /// Messages emitted so far in the episode.
    step: u32,
    kind: EpisodeKind,
}

#[derive(Debug, Clone)]
enum EpisodeKind {
    /// Offset of the primary metric grows by `rate` per message for `half` messages, then
    /// shrinks back, so the attacker never makes a sudden step.
    Drift { rate: f64, half: u32 },
    /// The first reading is repeated `len` times.
    Frozen { len: u32, values: Option<Vec<f64>> },
    /// Extra messages every [`FLOOD_PERIOD_MS`] until `until`.
    Flood { until: u64 },
    /// The device reports every `every_ms` (a half to a third of its period) until `until`.
    SlowFlood { until: u64, every_ms: u64 },
}

impl Episode {
    pub(super) fn start<R: Rng>(scenario: Scenario, id: u32, kind: Kind, rng: &mut R) -> Self {
        let noise = kind
            .metrics()
            .iter()
            .find(|m| m.primary)
            .map_or(1.0, |m| m.noise);
        let kind = match scenario {
            Scenario::Drift => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                EpisodeKind::Drift {
                    rate: sign * noise * rng.random_range(0.6..1.0),
                    half: 30,
                }
            }
            Scenario::SlowDrift => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                EpisodeKind::Drift {
                    rate: sign * noise * rng.random_range(0.3..0.5),
                    half: 90,
                }
            }
            Scenario::Frozen => EpisodeKind::Frozen {
                len: 30,
                values: None,
            },
            Scenario::SlowFlood => {
                let period = kind.period_ms();
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // < period
                let every_ms = (period as f64 / rng.random_range(2.0..3.0)) as u64;
                EpisodeKind::SlowFlood { until: 0, every_ms }
            }
            // `until` is set by the device at the first message.
            _ => EpisodeKind::Flood { until: 0 },
        };
        Self {
            label: Label::new(scenario, id),
            step: 0,
            kind,
        }
    }
}

/// A captured message a replay attacker can re-send.
#[derive(Debug, Clone)]
pub(super) struct Capture {
    ts: u64,
    topic: String,
    content_type: ContentType,
    payload: Vec<u8>,
}

/// One device of the plant.
#[derive(Debug)]
pub(super) struct Device {
    pub(super) id: String,
    pub(super) kind: Kind,
    topic: String,
    seq: u64,
    /// Per-metric level offset of this device.
    levels: Vec<f64>,
    pub(super) episode: Option<Episode>,
    /// No new attack on this device before this time.
    pub(super) quiet_until: u64,
    next_regular: u64,
    last_received: u64,
    history: VecDeque<Capture>,
    /// The device id a `spoof-field` attack writes into the next message's payload.
    pub(super) spoof_as: Option<String>,
    /// A one-message attack waiting for the device's next message (`coordinated`).
    pub(super) pending: Option<Label>,
    /// The setpoint's value as the twin last set it.
    setpoint: f64,
}

impl Device {
    pub(super) fn new<R: Rng>(i: u32, rng: &mut R) -> Self {
        let kind = Kind::of(i);
        let id = format!("{}-{:04}", kind.prefix(), i + 1);
        let levels = kind
            .metrics()
            .iter()
            .map(|m| m.level + m.spread * rng.random_range(-1.0..1.0))
            .collect();
        let setpoint = kind.setpoint().map_or(0.0, |s| {
            let (lo, hi) = s.normal;
            round(rng.random_range(lo..hi), 0)
        });
        Self {
            topic: format!("plant/{id}/{}", kind.channel()),
            id,
            kind,
            seq: 0,
            levels,
            episode: None,
            quiet_until: 0,
            next_regular: 0,
            last_received: 0,
            history: VecDeque::new(),
            spoof_as: None,
            pending: None,
            setpoint,
        }
    }

    /// The true value of metric `m` at `now`, before noise.
    fn truth(&self, index: usize, now: u64) -> f64 {
        let m = &self.kind.metrics()[index];
        #[allow(clippy::cast_precision_loss)] // simulated hours fit an f64 exactly enough
        let hours = (now - START_MS) as f64 / HOUR_MS;
        self.levels[index] + m.amplitude * (TAU * (hours - m.phase_h) / m.cycle_h).sin()
    }

    /// A noisy reading of every metric, as the firmware would report them.
    fn readings<R: Rng>(&self, now: u64, rng: &mut R) -> Vec<f64> {
        self.kind
            .metrics()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let noise = Normal::new(0.0, m.noise).map_or(0.0, |n| n.sample(rng));
                round(self.truth(i, now) + noise, m.decimals)
            })
            .collect()
    }

    /// The payload map of a reading.
    fn document<R: Rng>(&self, seq: u64, now: u64, values: &[f64], rng: &mut R) -> Value {
        let mut metrics = Map::new();
        for (m, v) in self.kind.metrics().iter().zip(values) {
            metrics.insert(m.name.into(), json!(v));
        }
        let mut doc = json!({
            "device": self.id,
            "seq": seq,
            "ts": now,
            "kind": self.kind.name(),
        });
        if self.kind == Kind::Door {
            let (name, email) = person(rng);
            let badge = rng.random_range(10_000..99_999);
            doc["event"] = json!("badge");
            doc["badge"] = json!({"id": format!("B-{badge}"), "holder": name, "email": email});
            metrics.insert("door_open".into(), json!(1));
        }
        doc["metrics"] = Value::Object(metrics);
        doc
    }

    /// When the message sent at `ts` reaches the host: network latency, in order per device.
    fn receive<R: Rng>(&mut self, ts: u64, rng: &mut R) -> u64 {
        let at = (ts + rng.random_range(20..400)).max(self.last_received + 1);
        self.last_received = at;
        at
    }

    /// The device's message at `now`; `tamper` turns it into a one-message attack.
    pub(super) fn emit<R: Rng>(
        &mut self,
        now: u64,
        tamper: Option<Label>,
        rng: &mut R,
    ) -> SimMessage {
        self.seq += 1;
        let mut values = self.readings(now, rng);
        let mut label = None;
        if let Some(episode) = &mut self.episode {
            label = Some(episode.label.clone());
            let primary = self.kind.metrics().iter().position(|m| m.primary);
            match &mut episode.kind {
                EpisodeKind::Drift { rate, half } => {
                    let n = episode.step + 1;
                    let up = if n <= *half { n } else { 2 * *half - n };
                    if let Some(p) = primary {
                        let decimals = self.kind.metrics()[p].decimals;
                        values[p] = round(values[p] + *rate * f64::from(up), decimals);
                    }
                    if n + 1 >= 2 * *half {
                        self.episode = None;
                    }
                }
                EpisodeKind::Frozen { len, values: held } => {
                    let held = held.get_or_insert_with(|| values.clone());
                    values.clone_from(held);
                    if episode.step + 1 >= *len {
                        self.episode = None;
                    }
                }
                EpisodeKind::Flood { until } => {
                    if *until == 0 {
                        *until = now + 20_000;
                    }
                    if now >= *until {
                        self.episode = None;
                    }
                }
                EpisodeKind::SlowFlood { until, .. } => {
                    if *until == 0 {
                        *until = now + 40 * 60_000;
                    }
                    if now >= *until {
                        self.episode = None;
                    }
                }
            }
            if let Some(episode) = &mut self.episode {
                episode.step += 1;
            } else {
                // A learning detector needs about an hour of clean traffic to settle after an
                // episode; attacks on one device closer together would be scored on its state.
                self.quiet_until = now + 60 * self.kind.period_ms();
            }
        }

        let mut doc = self.document(self.seq, now, &values, rng);
        let mut secrets = Vec::new();
        if let Some(label) = &tamper {
            secrets = scenario::tamper_document(label.scenario, self.kind, &mut doc, rng);
            if let Some(other) = self.spoof_as.take() {
                doc["device"] = json!(other);
            }
        }
        let mut payload = encode(&doc, self.kind.content_type());
        if let Some(label) = &tamper {
            if label.scenario == Scenario::Malformed {
                scenario::corrupt(&mut payload, self.kind.content_type(), rng);
            }
        }
        let clean = tamper.is_none() && label.is_none();
        if clean {
            self.capture(now, &payload);
        }
        let received = self.receive(now, rng);
        let mut message = Message::new(
            self.id.clone(),
            self.topic.clone(),
            self.kind.content_type(),
            payload,
        );
        message.received_at_ms = received;
        SimMessage {
            message,
            label: tamper.map(|l| l.with_secrets(secrets)).or(label),
        }
    }

    fn capture(&mut self, now: u64, payload: &[u8]) {
        while self
            .history
            .front()
            .is_some_and(|c| c.ts + REPLAY_WINDOW_MS < now)
        {
            self.history.pop_front();
        }
        self.history.push_back(Capture {
            ts: now,
            topic: self.topic.clone(),
            content_type: self.kind.content_type(),
            payload: payload.to_vec(),
        });
    }

    /// A message captured 5–60 minutes before `now`, if any.
    pub(super) fn replayable<R: Rng>(&self, now: u64, rng: &mut R) -> Option<Capture> {
        let old: Vec<&Capture> = self
            .history
            .iter()
            .filter(|c| c.ts + REPLAY_MIN_AGE_MS <= now)
            .collect();
        if old.is_empty() {
            return None;
        }
        Some(old[rng.random_range(0..old.len())].clone())
    }

    /// A captured message re-sent now over this device's connection.
    pub(super) fn deliver<R: Rng>(&mut self, capture: Capture, now: u64, rng: &mut R) -> Message {
        let received = self.receive(now, rng);
        let mut message = Message::new(
            self.id.clone(),
            capture.topic,
            capture.content_type,
            capture.payload,
        );
        message.received_at_ms = received;
        message
    }

    /// When this device sends next, after an event at `now`.
    pub(super) fn next_event<R: Rng>(&mut self, now: u64, rng: &mut R) -> u64 {
        if self.next_regular <= now {
            self.next_regular = now + self.interval(rng);
        }
        match &self.episode {
            Some(Episode {
                kind: EpisodeKind::Flood { .. },
                ..
            }) => self.next_regular.min(now + FLOOD_PERIOD_MS),
            Some(Episode {
                kind: EpisodeKind::SlowFlood { every_ms, .. },
                ..
            }) => {
                // The regular schedule is replaced, not added to: the device only speeds up.
                self.next_regular = now + every_ms;
                self.next_regular
            }
            _ => self.next_regular,
        }
    }

    /// Whether the twin sends this device commands.
    pub(super) fn controllable(&self) -> bool {
        self.kind.setpoint().is_some()
    }

    /// When the twin next sends this device a command, after one at `now`: every 20 minutes
    /// on average, never within 2 minutes of the last.
    pub(super) fn next_command<R: Rng>(&self, now: u64, rng: &mut R) -> u64 {
        let mean = 1_200_000.0;
        let exp = Exp::new(1.0 / mean).map_or(mean, |e| e.sample(rng));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // positive, < 2^53
        let ms = exp as u64;
        now + ms.max(120_000)
    }

    /// The twin's command to this device at `now`: a setpoint change within the device's
    /// bounds, or the attack `label` names (an out-of-bounds setpoint, a command the class
    /// does not take).
    pub(super) fn command<R: Rng>(
        &mut self,
        now: u64,
        label: Option<Label>,
        rng: &mut R,
    ) -> SimMessage {
        let issuer = format!("twin-{}", self.kind.class());
        let doc = match (self.kind.setpoint(), label.as_ref().map(|l| l.scenario)) {
            (_, Some(Scenario::CommandUnknown)) | (None, _) => {
                const FOREIGN: [&str; 5] = [
                    "firmware",
                    "factory-reset",
                    "disable-interlock",
                    "open-valve",
                    "calibrate",
                ];
                json!({
                    "command": FOREIGN[rng.random_range(0..FOREIGN.len())],
                    "issued_by": issuer,
                    "ts": now,
                })
            }
            (Some(s), Some(_)) => {
                // Far outside the device's bounds, one way or the other.
                let span = s.max - s.min;
                let value = if rng.random_bool(0.5) {
                    s.max + span * rng.random_range(0.3..3.0)
                } else {
                    s.min - span * rng.random_range(0.3..3.0)
                };
                json!({"command": "set", "target": s.target, "value": round(value, 1),
                       "issued_by": issuer, "ts": now})
            }
            (Some(s), None) => {
                let (lo, hi) = s.normal;
                let step = rng.random_range(s.step.0..=s.step.1);
                let up = if self.setpoint + step > hi {
                    false
                } else {
                    self.setpoint - step < lo || rng.random_bool(0.5)
                };
                let value = round(
                    if up {
                        self.setpoint + step
                    } else {
                        self.setpoint - step
                    },
                    1,
                );
                self.setpoint = value;
                json!({"command": "set", "target": s.target, "value": value,
                       "issued_by": issuer, "ts": now})
            }
        };
        let received = self.receive(now, rng);
        let mut message = Message::new(
            self.id.clone(),
            format!("twin/{}/commands", self.id),
            ContentType::Json,
            serde_json::to_vec(&doc).unwrap_or_default(),
        );
        message.received_at_ms = received;
        SimMessage { message, label }
    }

    fn interval<R: Rng>(&self, rng: &mut R) -> u64 {
        if self.kind == Kind::Door {
            let exp = Exp::new(1.0 / DOOR_MEAN_MS).map_or(DOOR_MEAN_MS, |e| e.sample(rng));
            // Whole milliseconds; a badge event a millisecond after the last is still a burst.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let ms = exp as u64;
            ms.max(1_000)
        } else {
            let period = self.kind.period_ms();
            let jitter = period / 30;
            period - jitter + rng.random_range(0..=2 * jitter)
        }
    }

    /// A forged message: `attacker` publishes a plausible reading on `victim`'s topic.
    pub(super) fn impersonate<R: Rng>(&self, victim: &Self, now: u64, rng: &mut R) -> Message {
        let values = victim.readings(now, rng);
        let doc = victim.document(victim.seq + 1, now, &values, rng);
        let mut message = Message::new(
            self.id.clone(),
            victim.topic.clone(),
            victim.kind.content_type(),
            encode(&doc, victim.kind.content_type()),
        );
        message.received_at_ms = now + rng.random_range(20..400);
        message
    }
}

/// A device that is not in the plant's inventory, sending well-formed telemetry.
pub(super) fn rogue<R: Rng>(n: u32, now: u64, rng: &mut R) -> Message {
    let mut device = Device::new(0, rng);
    device.id = format!("rogue-{n:04}");
    device.topic = format!("plant/{}/telemetry", device.id);
    let sim = device.emit(now, None, rng);
    sim.message
}

fn encode(doc: &Value, content_type: ContentType) -> Vec<u8> {
    match content_type {
        ContentType::Cbor => twinguard::convert::json_to_cbor(doc),
        _ => serde_json::to_vec(doc).unwrap_or_default(),
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}
