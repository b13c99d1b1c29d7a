use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::*;
use twinguard::ContentType;

fn run(config: SimConfig) -> Vec<SimMessage> {
    Simulator::new(config).collect()
}

fn day(seed: u64) -> Vec<SimMessage> {
    run(SimConfig {
        devices: 60,
        duration_ms: 12 * 3_600_000,
        seed,
        // Enough attacks of every kind in a short run.
        attack_intensity: 4.0,
        ..SimConfig::default()
    })
}

fn doc(m: &Message) -> Option<Value> {
    match m.content_type {
        ContentType::Json => serde_json::from_slice(&m.payload).ok(),
        ContentType::Cbor => twinguard::convert::cbor_to_json(&m.payload).ok(),
        _ => None,
    }
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    let a = day(7);
    let b = day(7);
    let c = day(8);
    assert_eq!(a.len(), b.len());
    assert!(a
        .iter()
        .zip(&b)
        .all(|(x, y)| x.message == y.message && x.label == y.label));
    assert!(a.len() != c.len() || a.iter().zip(&c).any(|(x, y)| x.message != y.message));
}

#[test]
fn every_scenario_is_injected_and_clean_traffic_dominates() {
    let stream = day(1);
    let mut per: HashMap<Scenario, usize> = HashMap::new();
    for m in &stream {
        if let Some(l) = &m.label {
            *per.entry(l.scenario).or_default() += 1;
        }
    }
    for s in Scenario::ALL {
        assert!(per.get(&s).copied().unwrap_or(0) > 0, "{s} never injected");
    }
    let attacks: usize = per.values().sum();
    assert!(attacks * 2 < stream.len(), "{attacks} of {}", stream.len());
}

#[test]
fn clean_messages_follow_the_documented_format() {
    let stream = run(SimConfig {
        devices: 40,
        duration_ms: 2 * 3_600_000,
        attacks: false,
        ..SimConfig::default()
    });
    assert!(stream.iter().all(|m| m.label.is_none()));
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    let mut last_rx: HashMap<String, u64> = HashMap::new();
    let mut kinds = HashSet::new();
    let mut commands = 0;
    for m in &stream {
        let msg = &m.message;
        let d = doc(msg).unwrap_or_else(|| panic!("unparsable clean payload of {}", msg.device_id));
        let rx = last_rx.insert(msg.device_id.clone(), msg.received_at_ms);
        assert!(rx.is_none_or(|rx| rx < msg.received_at_ms));
        if msg.topic.ends_with("/commands") {
            // The twin's setpoint changes: within the device's bounds, one small step at a time.
            commands += 1;
            assert_eq!(msg.topic, format!("twin/{}/commands", msg.device_id));
            assert_eq!(d["command"], "set");
            let kind = if msg.device_id.starts_with("temp") {
                device::Kind::Temperature
            } else {
                device::Kind::Power
            };
            let s = kind.setpoint().unwrap();
            assert_eq!(d["target"], s.target);
            let v = d["value"].as_f64().unwrap();
            assert!(v >= s.min && v <= s.max, "{d}");
            continue;
        }
        assert_eq!(d["device"], msg.device_id.as_str());
        assert_eq!(msg.topic.split('/').nth(1), Some(msg.device_id.as_str()));
        let seq = d["seq"].as_i64().unwrap_or(-1);
        let ts = d["ts"].as_u64().unwrap_or(0);
        assert!(d["metrics"].is_object());
        assert!(msg.received_at_ms > ts && msg.received_at_ms < ts + 1_000);
        let prev = last_seq.insert(msg.device_id.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "{} seq", msg.device_id);
        kinds.insert(d["kind"].as_str().unwrap_or("").to_owned());
        if d["kind"] == "access" {
            assert!(d["badge"]["email"]
                .as_str()
                .is_some_and(|e| e.contains('@')));
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(commands > 20, "{commands} commands");
    assert!(stream
        .iter()
        .any(|m| m.message.content_type == ContentType::Cbor));
}

#[test]
fn attack_messages_carry_what_their_label_says() {
    let stream = day(3);
    let mut seen: HashMap<String, Vec<twinguard::Bytes>> = HashMap::new();
    for m in &stream {
        let msg = &m.message;
        let Some(label) = &m.label else {
            seen.entry(msg.device_id.clone())
                .or_default()
                .push(msg.payload.clone());
            continue;
        };
        match label.scenario {
            Scenario::SpoofUnknown => assert!(msg.device_id.starts_with("rogue-")),
            Scenario::SpoofIdentity => {
                assert_ne!(msg.topic.split('/').nth(1), Some(msg.device_id.as_str()));
            }
            Scenario::Replay => assert!(
                seen.get(&msg.device_id)
                    .is_some_and(|old| old.contains(&msg.payload)),
                "a replay re-sends an earlier message of the same device"
            ),
            Scenario::Oversized => assert!(msg.payload.len() > 64 * 1024),
            Scenario::Malformed => {
                let d = doc(msg);
                assert!(d.as_ref().is_none_or(|d| !d["seq"].is_u64()), "{d:?}");
            }
            Scenario::PiiLeak => {
                assert_eq!(label.secrets.len(), 3);
                let d = doc(msg).unwrap_or_default();
                assert_eq!(d["operator"]["email"], label.secrets[1].as_str());
            }
            Scenario::Spike
            | Scenario::Drift
            | Scenario::Frozen
            | Scenario::Flood
            | Scenario::SlowFlood
            | Scenario::SlowDrift
            | Scenario::Coordinated => {
                assert!(doc(msg).is_some());
            }
            Scenario::SpoofField => {
                let d = doc(msg).unwrap_or_default();
                assert_ne!(d["device"], msg.device_id.as_str());
                assert_eq!(msg.topic.split('/').nth(1), Some(msg.device_id.as_str()));
            }
            Scenario::SeqReset => assert!(doc(msg).unwrap_or_default()["seq"].as_u64() < Some(4)),
            Scenario::ClockSkew => {
                let ts = doc(msg).unwrap_or_default()["ts"].as_u64().unwrap_or(0);
                assert!(ts.abs_diff(msg.received_at_ms) >= 300_000, "{ts}");
            }
            Scenario::PiiHidden => {
                assert!(!label.secrets.is_empty());
                let d = doc(msg).unwrap_or_default().to_string();
                assert!(label.secrets.iter().all(|s| d.contains(s.as_str())), "{d}");
                assert!(!d.contains("\"operator\""), "not the listed field: {d}");
            }
            Scenario::CommandBounds => {
                let d = doc(msg).unwrap_or_default();
                let kind = if msg.device_id.starts_with("temp") {
                    device::Kind::Temperature
                } else {
                    device::Kind::Power
                };
                let s = kind.setpoint().unwrap();
                let v = d["value"].as_f64().unwrap();
                assert!(v < s.min || v > s.max, "{d}");
            }
            Scenario::CommandUnknown => {
                assert_ne!(doc(msg).unwrap_or_default()["command"], "set");
            }
        }
    }
}

#[test]
fn episodes_have_their_shape() {
    let stream = day(5);
    let mut episodes: HashMap<(Scenario, u32), Vec<&SimMessage>> = HashMap::new();
    for m in &stream {
        if let Some(l) = &m.label {
            if l.scenario.unit() == Unit::Episode {
                episodes.entry((l.scenario, l.episode)).or_default().push(m);
            }
        }
    }
    let mut shapes = HashSet::new();
    for ((scenario, _), msgs) in &episodes {
        let end = stream.last().map_or(0, |m| m.message.received_at_ms);
        let cut_short = msgs
            .last()
            .is_some_and(|m| m.message.received_at_ms + 3_600_000 > end);
        match scenario {
            Scenario::Frozen if !cut_short => {
                assert_eq!(msgs.len(), 30);
                let metrics: HashSet<String> = msgs
                    .iter()
                    .filter_map(|m| doc(&m.message))
                    .map(|d| d["metrics"].to_string())
                    .collect();
                assert_eq!(metrics.len(), 1, "a frozen device repeats one reading");
            }
            Scenario::Drift if !cut_short => assert_eq!(msgs.len(), 59),
            Scenario::SlowDrift if !cut_short => assert_eq!(msgs.len(), 179),
            Scenario::SlowFlood if !cut_short => {
                // Two to three times the device's rate for 40 minutes.
                let first = msgs.first().map_or(0, |m| m.message.received_at_ms);
                let last = msgs.last().map_or(0, |m| m.message.received_at_ms);
                assert!(
                    (2_390_000..=2_460_000).contains(&(last - first)),
                    "{}",
                    last - first
                );
                let period = if msgs[0].message.device_id.starts_with("power") {
                    15
                } else {
                    60
                };
                let per_period = msgs.len() as u64 * period * 1000 / (last - first);
                assert!((2..=3).contains(&per_period), "{per_period} per period");
            }
            Scenario::Flood => {
                let first = msgs.first().map_or(0, |m| m.message.received_at_ms);
                let last = msgs.last().map_or(0, |m| m.message.received_at_ms);
                assert!(
                    msgs.len() > 150 || cut_short,
                    "{} flood messages",
                    msgs.len()
                );
                assert!(last - first <= 21_000);
            }
            _ => {}
        }
        shapes.insert(*scenario);
    }
    assert_eq!(shapes.len(), 5);
}

#[test]
fn message_cap_and_inventory() {
    let sim = Simulator::new(SimConfig {
        devices: 25,
        max_messages: Some(100),
        ..SimConfig::default()
    });
    let inventory: Vec<String> = sim.inventory().map(str::to_owned).collect();
    assert_eq!(inventory.len(), 25);
    assert_eq!(inventory.iter().collect::<HashSet<_>>().len(), 25);
    assert_eq!(sim.count(), 100);
}

#[test]
fn the_registry_lists_every_device_with_its_class_and_bounds() {
    let sim = Simulator::new(SimConfig {
        devices: 40,
        ..SimConfig::default()
    });
    let csv = sim.registry();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,class,period-s,line,location,commands,setpoint_c.min,setpoint_c.max,setpoint_c.max-step,limit_kw.min,limit_kw.max,limit_kw.max-step")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let ids: Vec<&str> = sim.inventory().collect();
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), ids);
    for r in &rows {
        assert_eq!(r.len(), 12, "{r:?}");
        match r[1] {
            "climate-sensor" => assert_eq!(r[2..9], ["60", r[3], r[4], "set", "16", "28", "3"]),
            "power-meter" => assert_eq!(
                (r[2], r[5], &r[9..]),
                ("15", "set", &["50", "400", "60"][..])
            ),
            "vibration-sensor" => assert_eq!((r[2], r[5]), ("60", "")),
            "badge-reader" => assert_eq!((r[2], r[5]), ("", "")),
            other => panic!("class {other}"),
        }
    }
    assert_eq!(sim.classes().len(), 4);
}
