//! The command path over a real Mosquitto: what the twin sends back to devices runs through a
//! chain of its own (command-guard), with the allowed commands and the setpoint bounds taken
//! from the device registry, and is held before it reaches a device when it is out of bounds,
//! not allowed for the device's class, or for a device the registry does not know.

use std::time::Duration;

use serde_json::{json, Value};
use twinguard_fixtures::broker::Broker;

use super::gateway::{held, setup, Peer, Serve};
use twinguard_fixtures as fixtures;

fn command(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn an_out_of_bounds_setpoint_from_the_twin_is_held_before_it_reaches_the_device() {
    let (_tmp, s) = setup();
    let broker = Broker::start(&s.dir, None);
    std::fs::write(
        s.dir.join("devices.csv"),
        "id,class,commands,setpoint_c.min,setpoint_c.max,setpoint_c.max-step\n\
         hvac-1,climate-sensor,set,16,28,3\n\
         meter-1,power-meter,,,,\n",
    )
    .unwrap();
    let config = s.dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[registry]
path = "devices.csv"

[[policy]]
name = "commands"
path = "{commands}"

[[policy]]
name = "identity"
path = "{identity}"
[policy.config]
topic-segment = 1
inventory = "registry"

[[route]]
filter = "twin/+/commands"
chain = ["commands"]

[[route]]
filter = "devices/+/telemetry"
chain = ["identity"]

[gateway]
broker = "mqtt://127.0.0.1:{port}"
client-id = "tg-commands"
# Device to twin.
[[gateway.input]]
filter = "devices/+/telemetry"
template = "devices/{{device}}/telemetry"
output = "twin/{{device}}/telemetry"
# Twin to device: the reverse direction, through the command chain.
[[gateway.input]]
filter = "twin/+/commands"
template = "twin/{{device}}/commands"
output = "devices/{{device}}/commands"

[quarantine]
path = "quarantine.db"
"#,
            commands = fixtures::wasm("command-guard").display(),
            identity = fixtures::wasm("identity-guard").display(),
            port = broker.port,
        ),
    )
    .unwrap();
    let device = Peer::connect("hvac-1-fw", broker.port, &["devices/+/commands"], false);
    let twin = Peer::connect("twin-ctl", broker.port, &["twin/+/telemetry"], false);
    let serve = Serve::subscribed(&config);

    let set = |value: f64| {
        command(
            json!({"command": "set", "target": "setpoint_c", "value": value, "issued_by": "twin"}),
        )
    };
    // In bounds, one step: reaches the device.
    twin.publish("twin/hvac-1/commands", set(21.0));
    // A compromised twin: far above the registry's 28 °C.
    twin.publish("twin/hvac-1/commands", set(85.0));
    // A command the device's registry entry does not list.
    twin.publish(
        "twin/hvac-1/commands",
        command(json!({"command": "firmware", "issued_by": "twin"})),
    );
    // A power meter takes no commands at all.
    twin.publish("twin/meter-1/commands", set(20.0));
    // A device the registry does not know.
    twin.publish("twin/ghost-9/commands", set(20.0));
    // In bounds again: the flow goes on after what was held.
    twin.publish("twin/hvac-1/commands", set(23.0));
    // The device side still flows to the twin.
    device.publish(
        "devices/hvac-1/telemetry",
        command(json!({"device": "hvac-1", "seq": 1})),
    );

    let got = device.collect(Duration::from_secs(20), |got| got.len() >= 2);
    let values: Vec<(String, Option<f64>)> = got
        .iter()
        .map(|(topic, payload)| {
            let v: Value = serde_json::from_slice(payload).unwrap();
            (topic.clone(), v["value"].as_f64())
        })
        .collect();
    assert_eq!(
        values,
        vec![
            ("devices/hvac-1/commands".to_owned(), Some(21.0)),
            ("devices/hvac-1/commands".to_owned(), Some(23.0)),
        ]
    );
    let telemetry = twin.collect(Duration::from_secs(20), |got| !got.is_empty());
    assert_eq!(telemetry.len(), 1, "{telemetry:?}");
    assert_eq!(telemetry[0].0, "twin/hvac-1/telemetry");

    let records = held(&s.dir.join("quarantine.db"), 4);
    assert_eq!(records.len(), 4, "{records:?}");
    let reason = |device: &str, needle: &str| {
        records
            .iter()
            .find(|r| r.device_id == device && r.reason.contains(needle))
            .unwrap_or_else(|| panic!("no record of {device} with {needle:?}: {records:#?}"))
    };
    let bounds = reason("hvac-1", "85");
    assert_eq!(bounds.policy.as_deref(), Some("commands"));
    assert_eq!(bounds.topic, "twin/hvac-1/commands");
    assert_eq!(
        bounds.destination.as_deref(),
        Some("devices/hvac-1/commands")
    );
    assert!(bounds.reason.contains("28"), "{}", bounds.reason);
    assert_eq!(
        reason("hvac-1", "a string (8 characters, \"f…\") is not allowed")
            .policy
            .as_deref(),
        Some("commands")
    );
    assert_eq!(
        reason("meter-1", "a string (3 characters")
            .policy
            .as_deref(),
        Some("commands")
    );
    // Held by the host before any chain: the registry does not list it.
    let ghost = reason("ghost-9", "ghost-9");
    assert_eq!(ghost.policy, None, "{ghost:?}");
    drop(serve);
}
