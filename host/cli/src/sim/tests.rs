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
    for m in &stream {
        let msg = &m.message;
        let d = doc(msg).unwrap_or_else(|| panic!("unparsable clean payload of {}", msg.device_id));
        assert_eq!(d["device"], msg.device_id.as_str());
        assert_eq!(msg.topic.split('/').nth(1), Some(msg.device_id.as_str()));
        let seq = d["seq"].as_i64().unwrap_or(-1);
        let ts = d["ts"].as_u64().unwrap_or(0);
        assert!(d["metrics"].is_object());
        assert!(msg.received_at_ms > ts && msg.received_at_ms < ts + 1_000);
        let prev = last_seq.insert(msg.device_id.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "{} seq", msg.device_id);
        let rx = last_rx.insert(msg.device_id.clone(), msg.received_at_ms);
        assert!(rx.is_none_or(|rx| rx < msg.received_at_ms));
        kinds.insert(d["kind"].as_str().unwrap_or("").to_owned());
        if d["kind"] == "access" {
            assert!(d["badge"]["email"]
                .as_str()
                .is_some_and(|e| e.contains('@')));
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(stream
        .iter()
        .any(|m| m.message.content_type == ContentType::Cbor));
}

#[test]
fn attack_messages_carry_what_their_label_says() {
    let stream = day(3);
    let mut seen: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
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
            Scenario::Spike | Scenario::Drift | Scenario::Frozen | Scenario::Flood => {
                assert!(doc(msg).is_some());
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
    assert_eq!(shapes.len(), 3);
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
