//! Deterministic test messages: ~1 KB JSON telemetry documents with a known mix of outcomes.

use twinguard_core::{ContentType, Message};

use crate::policy::{Decision, Keys, PII_KEYS};

/// One message, as every engine receives it.
pub struct Sample {
    /// The device's (authenticated) id.
    pub device: String,
    /// The MQTT topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
    /// The same message for twinguard, built once.
    pub message: Message,
    /// What the generator made it to be.
    pub kind: Kind,
    /// The decision the generator expects.
    pub expect: Decision,
}

/// The generator's categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Clean,
    Pii,
    OutOfRange,
    NotANumber,
    Mismatch,
    Unknown,
}

impl Kind {
    pub const ALL: [Self; 6] = [
        Self::Clean,
        Self::Pii,
        Self::OutOfRange,
        Self::NotANumber,
        Self::Mismatch,
        Self::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean allow",
            Self::Pii => "PII (redact)",
            Self::OutOfRange => "out of range",
            Self::NotANumber => "not a number",
            Self::Mismatch => "topic/device mismatch",
            Self::Unknown => "unknown device",
        }
    }
}

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index into a slice of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        // usize fits in u64 on every target this runs on, and the result is below `len`.
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    /// True `pct` percent of the time.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// An element of `items`.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.index(items.len())]
    }

    /// A number in `lo..=hi` hundredths, as JSON: sometimes an integer when whole, else a float
    /// with up to two decimals.
    pub fn cents(&mut self, lo: i64, hi: i64) -> String {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1);
        let c = lo + i64::try_from(self.below(span)).unwrap_or(0);
        cents_json(c, self.chance(30))
    }
}

/// `c` hundredths as JSON: an integer when whole and `int`, else a float.
fn cents_json(c: i64, int: bool) -> String {
    if int && c % 100 == 0 {
        (c / 100).to_string()
    } else {
        // Exact enough: the shortest representation of c / 100 has at most two decimals.
        #[allow(clippy::cast_precision_loss)]
        let x = c as f64 / 100.0;
        serde_json::to_string(&x).unwrap_or_else(|_| "0".into())
    }
}

const KINDS: [&str; 6] = ["press", "meter", "oven", "pump", "robot", "valve"];
const STATUS: [&str; 5] = ["running", "idle", "maintenance", "starting", "stopping"];
const WORDS: [&str; 12] = [
    "nominal", "belt", "check", "spindle", "warm", "cycle", "bearing", "sensor", "ok", "noise",
    "drift", "load",
];

/// The 38 devices of the inventory.
pub fn inventory() -> Vec<String> {
    (0..38)
        .map(|i| format!("{}-{:02}", KINDS[i % KINDS.len()], i + 1))
        .collect()
}

/// `count` messages from `seed`.
pub fn samples(count: usize, seed: u64) -> Vec<Sample> {
    let inventory = inventory();
    let mut rng = Rng::new(seed);
    (0..count).map(|_| sample(&mut rng, &inventory)).collect()
}

fn sample(rng: &mut Rng, inventory: &[String]) -> Sample {
    let roll = rng.below(100);
    let kind = match roll {
        0..70 => Kind::Clean,
        70..80 => Kind::Pii,
        80..88 => Kind::OutOfRange,
        88..92 => Kind::NotANumber,
        92..96 => Kind::Mismatch,
        _ => Kind::Unknown,
    };
    let mut device = inventory[rng.index(inventory.len())].clone();
    let mut topic = format!("plant/{device}/telemetry");
    let mut fields = filler(rng);

    // In-range values (sometimes absent, sometimes exactly on a bound).
    let mut temp = if rng.chance(8) {
        None
    } else if rng.chance(3) {
        Some(rng.pick(&["-40", "150", "-40.0", "150.0"]).to_owned())
    } else {
        Some(rng.cents(-4000, 15000))
    };
    let mut kw = if rng.chance(8) {
        None
    } else if rng.chance(3) {
        Some(rng.pick(&["0", "400", "0.0", "400.0", "-0.0"]).to_owned())
    } else {
        Some(rng.cents(0, 40000))
    };
    let mut pii = Keys(0);

    match kind {
        Kind::Clean => {}
        Kind::Pii => pii = Keys(1 + u8::try_from(rng.below(7)).unwrap_or(0)),
        Kind::OutOfRange => {
            let (t, k) = match rng.below(3) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            if t {
                temp = Some(match rng.below(5) {
                    0 => rng.cents(-10_000, -4001),
                    1 => "1000000".to_owned(),
                    2 => "150.01".to_owned(),
                    _ => rng.cents(15_001, 40_000),
                });
            }
            if k {
                kw = Some(match rng.below(4) {
                    0 => rng.cents(-5000, -1),
                    1 => "400.01".to_owned(),
                    _ => rng.cents(40_001, 200_000),
                });
            }
        }
        Kind::NotANumber => {
            let bad = rng
                .pick(&[
                    "\"21.5\"",
                    "null",
                    "true",
                    "false",
                    "[21.5]",
                    "{\"value\":21.5}",
                    "\"\"",
                ])
                .to_owned();
            if rng.chance(50) {
                temp = Some(bad);
            } else {
                kw = Some(bad);
            }
        }
        Kind::Mismatch => {
            let other = loop {
                let other = &inventory[rng.index(inventory.len())];
                if *other != device {
                    break other.clone();
                }
            };
            topic = match rng.below(5) {
                0 => "plant".to_owned(),
                1 => format!("{device}/plant/telemetry"),
                2 => format!("plant/{}/telemetry", device.to_uppercase()),
                _ => format!("plant/{other}/telemetry"),
            };
        }
        Kind::Unknown => {
            device = if rng.chance(20) {
                format!("ghost-{}", rng.below(1000))
            } else {
                // Numbers above the inventory's 38.
                format!("{}-{:02}", rng.pick(&KINDS), 40 + rng.below(60))
            };
            topic = format!("plant/{device}/telemetry");
        }
    }
    // Quarantined messages sometimes carry PII too: quarantine wins.
    if matches!(
        kind,
        Kind::OutOfRange | Kind::NotANumber | Kind::Mismatch | Kind::Unknown
    ) && rng.chance(30)
    {
        pii = Keys(1 + u8::try_from(rng.below(7)).unwrap_or(0));
    }

    if let Some(t) = temp {
        fields.push(("temp_c".into(), t));
    }
    if let Some(k) = kw {
        fields.push(("kw".into(), k));
    }
    for key in pii.iter() {
        let value = if rng.chance(10) {
            "null".to_owned()
        } else {
            match key {
                "owner_email" => format!("\"owner{}@example.com\"", rng.below(500)),
                "owner_name" => rng
                    .pick(&["\"Ada Lovelace\"", "\"Grace Hopper\""])
                    .to_owned(),
                _ => format!("\"+44 20 7946 {:04}\"", rng.below(10_000)),
            }
        };
        fields.push((key.to_owned(), value));
    }
    // Shuffle (Fisher-Yates): field order varies from message to message.
    for i in (1..fields.len()).rev() {
        let j = rng.index(i + 1);
        fields.swap(i, j);
    }
    let mut payload = String::with_capacity(1200);
    payload.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            payload.push(',');
        }
        payload.push('"');
        payload.push_str(key);
        payload.push_str("\":");
        payload.push_str(value);
    }
    payload.push('}');

    let expect = match kind {
        Kind::Clean => Decision::Allow,
        Kind::Pii => Decision::Redact(pii),
        _ => Decision::Quarantine,
    };
    let payload = payload.into_bytes();
    Sample {
        message: Message::new(
            device.clone(),
            topic.clone(),
            ContentType::Json,
            payload.clone(),
        ),
        device,
        topic,
        payload,
        kind,
        expect,
    }
}

/// The other ~40 top-level fields: numbers, strings, two nested objects, and now and then a
/// nested `temp_c` or PII key that the policy must ignore (it reads top-level keys only).
fn filler(rng: &mut Rng) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = Vec::with_capacity(48);
    let mut put = |k: &str, v: String| f.push((k.to_owned(), v));
    put("seq", rng.below(10_000_000).to_string());
    put(
        "ts",
        (1_764_000_000_000 + rng.below(100_000_000)).to_string(),
    );
    put("status", format!("\"{}\"", rng.pick(&STATUS)));
    put("fw", format!("\"2.{}.{}\"", rng.below(20), rng.below(10)));
    put(
        "site",
        format!(
            "{{\"plant\":\"{}\",\"line\":{},\"cell\":\"c-{:02}\"}}",
            rng.pick(&["north", "south", "east"]),
            1 + rng.below(8),
            rng.below(40)
        ),
    );
    put(
        "vibration",
        format!(
            "{{\"x\":{},\"y\":{},\"z\":{}}}",
            rng.cents(0, 300),
            rng.cents(0, 300),
            rng.cents(0, 300)
        ),
    );
    put("alarm", rng.chance(5).to_string());
    put(
        "mode",
        format!("\"{}\"", rng.pick(&["auto", "manual", "service"])),
    );
    put("humidity", rng.cents(2000, 9000));
    put("pressure_kpa", rng.cents(9500, 10_500));
    put("rpm", rng.below(3000).to_string());
    put("shift", format!("\"{}\"", rng.pick(&["A", "B", "C"])));
    put("batch", format!("\"B-2026-{:04}\"", rng.below(10_000)));
    put(
        "serial",
        format!(
            "\"SN-{:08}-{:04X}\"",
            rng.below(100_000_000),
            rng.below(65_536)
        ),
    );
    put("uptime_s", rng.below(10_000_000).to_string());
    put(
        "location",
        format!("\"hall-{}/bay-{}\"", rng.below(9), rng.below(40)),
    );
    let words = 3 + rng.below(6);
    let comment: Vec<&str> = (0..words).map(|_| rng.pick(&WORDS)).collect();
    put("comment", format!("\"{}\"", comment.join(" ")));
    for i in 0..30 {
        let v = rng.below(100_000);
        put(
            &format!("sensor_{i:02}"),
            format!("{}.{:03}", v / 1000, v % 1000),
        );
    }
    if rng.chance(10) {
        put(
            "ambient",
            format!(
                "{{\"temp_c\":{},\"kw\":-5}}",
                rng.pick(&["999.5", "\"hot\""])
            ),
        );
    }
    if rng.chance(10) {
        put(
            "contact",
            format!(
                "{{\"{}\":\"someone@example.com\",\"{}\":\"Someone\"}}",
                PII_KEYS[1], PII_KEYS[2]
            ),
        );
    }
    f
}
