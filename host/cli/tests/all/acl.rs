//! The broker's ACL is part of the security of `serve` (the gateway reads a device's identity
//! from its topic): `examples/mosquitto-acl/acl`, as shipped, on a real Mosquitto with
//! passwords, confines each device to its own telemetry and keeps the twin and alert topics
//! for twinguard.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinguard_fixtures::broker::Broker;

use crate::gateway::{seq_of, setup, write_config, Peer, Serve};

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mosquitto-acl")
        .join(name)
}

/// A Mosquitto password file with these users.
fn passwords(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let file = dir.join("passwd");
    std::fs::write(&file, "").unwrap();
    for (user, password) in users {
        let out = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&file)
            .args([user, password])
            .output()
            .expect("mosquitto_passwd (package mosquitto, installed by scripts/test.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

#[test]
fn the_example_acl_confines_each_device_and_reserves_the_twin_for_twinguard() {
    let (_tmp, s) = setup();
    let passwd = passwords(
        &s.dir,
        &[
            ("twinguard", "gw-secret"),
            ("twin-app", "app-secret"),
            ("d1", "d1-secret"),
            ("d2", "d2-secret"),
        ],
    );
    // The fixture's own config says allow_anonymous true; Mosquitto takes the last value.
    let broker = Broker::start_with(
        &s.dir,
        None,
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            example("acl").display()
        ),
    );
    each_device_is_confined(&s, &broker);
}

/// The same rules through the dynamic security plugin, set up by the shipped script.
#[test]
fn the_dynamic_security_script_confines_each_device_the_same_way() {
    let (_tmp, s) = setup();
    let plugin = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("mosquitto_dynamic_security.so"))
    .find(|p| p.exists())
    .expect("mosquitto_dynamic_security.so (package mosquitto, installed by scripts/test.sh)");
    let dynsec = s.dir.join("dynamic-security.json");
    let init = Command::new("mosquitto_ctrl")
        .args(["dynsec", "init"])
        .arg(&dynsec)
        .args(["admin", "admin-secret"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let broker = Broker::start_with(
        &s.dir,
        None,
        &format!(
            "allow_anonymous false\nplugin {}\nplugin_opt_config_file {}\n",
            plugin.display(),
            dynsec.display()
        ),
    );
    let script = Command::new(example("dynamic-security.sh"))
        .env(
            "CTRL",
            format!(
                "mosquitto_ctrl -h 127.0.0.1 -p {} -u admin -P admin-secret",
                broker.port
            ),
        )
        .env("TWINGUARD_PASSWORD", "gw-secret")
        .env("TWIN_APP_PASSWORD", "app-secret")
        .args(["d1:d1-secret", "d2:d2-secret"])
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{}{}",
        String::from_utf8_lossy(&script.stdout),
        String::from_utf8_lossy(&script.stderr)
    );
    each_device_is_confined(&s, &broker);
}

/// With users twinguard, twin-app, d1 and d2 on `broker`: d1 can neither publish as d2 nor
/// straight to the twin or the alerts topic, and its own telemetry passes through twinguard.
fn each_device_is_confined(s: &crate::gateway::Setup, broker: &Broker) {
    // One worker: everything the gateway forwards reaches the twin in the order the broker
    // delivered it, so the last message arriving means every earlier one would have.
    let config = write_config(
        s,
        "serve.toml",
        &format!("mqtt://127.0.0.1:{}", broker.port),
        "tg-acl",
        "username = \"twinguard\"\npassword = \"gw-secret\"\nworkers = 1\n",
    );
    let twin = Peer::connect_as(
        "twin-app",
        broker.port,
        &["twin/+/telemetry", "twinguard/alerts"],
        false,
        Some(("twin-app", "app-secret")),
    );
    let serve = Serve::subscribed(&config);
    assert!(
        serve.wait_for(
            "the broker refuses clients without credentials",
            Duration::from_secs(30)
        ),
        "{}",
        serve.text()
    );

    let d1 = Peer::connect_as("d1", broker.port, &[], false, Some(("d1", "d1-secret")));
    // As another device, straight to the twin, and a forged security event: the broker drops
    // each (MQTT 3.1.1 still acknowledges them).
    d1.publish(
        "devices/d2/telemetry",
        br#"{"seq":1,"spoofed":true}"#.to_vec(),
    );
    d1.publish(
        "twin/d1/telemetry",
        br#"{"seq":2,"past":"twinguard"}"#.to_vec(),
    );
    d1.publish(
        "twinguard/alerts",
        br#"{"code":"all-clear","seq":3}"#.to_vec(),
    );
    // Its own telemetry goes through twinguard to the twin.
    d1.publish("devices/d1/telemetry", br#"{"seq":4,"temp":21}"#.to_vec());
    let got = twin.collect(Duration::from_secs(30), |got| {
        got.iter().any(|(_, p)| seq_of(p) == Some(4))
    });
    assert_eq!(
        got.iter()
            .map(|(t, p)| (t.as_str(), seq_of(p)))
            .collect::<Vec<_>>(),
        [("twin/d1/telemetry", Some(4))],
        "{}",
        serve.text()
    );

    // A client without credentials is not let in at all.
    let anonymous = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-t",
            "devices/d1/telemetry",
            "-m",
            r#"{"seq":5}"#,
            "-q",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    drop(serve);
}
