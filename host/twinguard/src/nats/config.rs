//! `[nats]`: the cluster `serve` reads device messages from when it is scaled out.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::gateway::{Input, InputConfig};

/// Where and how `serve` reads from a NATS JetStream cluster, sharing the stream's
/// partitions with the other instances (see README, "Scaling out").
///
/// ```toml
/// [nats]
/// servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
/// instance = "twinguard-1"
/// partitions = 12      # as in the server's mapping: {{partition(12,1)}}
/// replicas = 3
/// [[nats.input]]
/// filter = "plant/+/telemetry"
/// template = "plant/{device}/telemetry"
/// output = "twin/{device}/telemetry"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsConfig {
    /// The cluster's client URLs (`nats://host:port`, or `tls://` with `[nats.tls]`); the
    /// client connects to one and fails over to the others.
    pub servers: Vec<String>,
    /// This instance's name, unique among the instances: partitions are leased to it, and its
    /// quarantine records name it.
    pub instance: String,
    /// Credentials, when the cluster asks for them.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// The JetStream stream of device messages (default `TWINGUARD_DEVICES`).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// The first subject token of every partitioned message: the server maps a device's
    /// subject to `<prefix>.<partition>.<subject>` (default `part`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How many partitions the server's mapping makes; every instance must agree with it.
    pub partitions: u32,
    /// Replicas of the stream, if `serve` creates it, and of the lease and checkpoint buckets
    /// (default 1; 3 on a 3-node cluster, so a node's loss loses nothing).
    #[serde(default = "one")]
    pub replicas: usize,
    /// Create the stream when it is missing (default true), capturing `<prefix>.*.>` and
    /// keeping messages `stream-max-age-s` (default a day).
    #[serde(default = "yes")]
    pub create_stream: bool,
    /// How long the stream keeps messages, if `serve` creates it. A checkpoint older than this
    /// cannot be replayed from exactly.
    #[serde(default = "default_stream_age")]
    pub stream_max_age_s: u64,
    /// The buckets' name prefix: `<bucket>-leases` (who owns which partition),
    /// `<bucket>-checkpoints` (each partition's state and stream position) and the object
    /// store `<bucket>-checkpoint-bodies` (states larger than one message). Default
    /// `twinguard`.
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// How long a partition's lease lasts unrenewed (default 6,000 ms): an instance that
    /// dies loses its partitions to the others after this, plus one renewal period (a third).
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
    /// A checkpoint is written after this many messages of a partition (default 256) ...
    #[serde(default = "default_cp_messages")]
    pub checkpoint_messages: usize,
    /// ... or this long after the first message it does not cover (default 200 ms).
    #[serde(default = "default_cp_ms")]
    pub checkpoint_ms: u64,
    /// How a passing message reaches its twin subject: `"jetstream"` (default; published and
    /// acknowledged by the stream that captures the twin subjects, deduplicated there by
    /// `Nats-Msg-Id`) or `"core"` (plain publish, flushed; for subscribers without a stream).
    #[serde(default)]
    pub forward: Forward,
    /// Subject where each security event is published as JSON; none when unset.
    pub alerts_subject: Option<String>,
    /// The largest payload judged (default 1 MiB); a larger one is quarantined unjudged, as
    /// in the MQTT gateway.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Each device's share (`[nats.device-budget]`), on the message's stream time, so a replay
    /// of a partition sheds what the first pass shed.
    #[serde(default)]
    pub device_budget: crate::budget::DeviceBudget,
    /// TLS towards the cluster.
    pub tls: Option<NatsTls>,
    /// What to read, in MQTT topic form (devices publish over NATS's MQTT listener; `a/b/c`
    /// is the NATS subject `a.b.c`), and where each message goes when it passes.
    #[serde(rename = "input")]
    pub inputs: Vec<InputConfig>,
}

/// `[nats.tls]`: the CA that signs the servers' certificates, and a client certificate when
/// the cluster verifies clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of the CA(s).
    pub ca: PathBuf,
    /// PEM certificate chain presented to the servers; needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// How a passing message reaches its twin subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forward {
    /// Published to a stream and acknowledged by it before the input's checkpoint.
    #[default]
    Jetstream,
    /// Published and flushed to the server; nothing confirms a subscriber got it.
    Core,
}

fn default_stream() -> String {
    "TWINGUARD_DEVICES".into()
}
fn default_prefix() -> String {
    "part".into()
}
fn default_bucket() -> String {
    "twinguard".into()
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_stream_age() -> u64 {
    86_400
}
fn default_lease() -> u64 {
    6_000
}
fn default_cp_messages() -> usize {
    256
}
fn default_cp_ms() -> u64 {
    200
}
fn default_max_message_bytes() -> usize {
    crate::gateway::DEFAULT_MAX_MESSAGE_BYTES
}

/// A NATS name token (stream, bucket, instance, prefix): no wildcards, dots or spaces.
fn token(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{what} {s:?}: use 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

impl NatsConfig {
    /// Checks everything that can be checked without the network; the error names the key.
    pub fn validate(&self) -> Result<Vec<Input>, crate::Invalid> {
        self.check().map_err(crate::Invalid::from)
    }

    fn check(&self) -> Result<Vec<Input>, String> {
        if self.servers.is_empty() {
            return Err("nats.servers is empty: name at least one nats://host:port".into());
        }
        for s in &self.servers {
            let plain = s.starts_with("nats://");
            let tls = s.starts_with("tls://");
            if !(plain || tls) || s.parse::<async_nats::ServerAddr>().is_err() {
                return Err(format!(
                    "nats.servers: {s:?} is not nats://host:port or tls://host:port"
                ));
            }
            if tls && self.tls.is_none() {
                return Err(format!(
                    "nats.servers: {s:?} is tls:// but there is no [nats.tls] (ca = …)"
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("nats.tls: cert and key go together".into());
            }
        }
        token("nats.instance", &self.instance)?;
        token("nats.stream", &self.stream)?;
        token("nats.prefix", &self.prefix)?;
        token("nats.bucket", &self.bucket)?;
        if self.partitions == 0 || self.partitions > 4096 {
            return Err(format!(
                "nats.partitions = {}: give the server mapping's partition count (1 to 4096)",
                self.partitions
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("nats.replicas = {}: 1 to 5", self.replicas));
        }
        if self.lease_ms < 1_000 {
            return Err(format!(
                "nats.lease-ms = {}: at least 1000 (renewed every third)",
                self.lease_ms
            ));
        }
        if self.checkpoint_messages == 0 || self.checkpoint_ms == 0 {
            return Err(
                "nats.checkpoint-messages and nats.checkpoint-ms must be at least 1".into(),
            );
        }
        if self.max_message_bytes == 0 {
            return Err("nats.max-message-bytes must be at least 1".into());
        }
        if self.stream_max_age_s == 0 {
            return Err("nats.stream-max-age-s must be at least 1".into());
        }
        self.device_budget
            .check("nats.device-budget.rate", "nats.device-budget.burst")?;
        if self.inputs.is_empty() {
            return Err("nats: no [[nats.input]]: nothing to read".into());
        }
        if let Some(i) = self.inputs.iter().position(|i| i.device_property.is_some()) {
            return Err(format!(
                "nats.input #{}: device-property: NATS's MQTT listener carries no user properties; name the device in the topic",
                i + 1
            ));
        }
        crate::gateway::validate_inputs(&self.inputs, false, "nats")
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

#[cfg(test)]
mod tests {
    use crate::FileConfig;

    const GOOD: &str = r#"
[nats]
servers = ["nats://127.0.0.1:4222", "nats://10.0.0.2:4222"]
instance = "tg-1"
partitions = 12
[[nats.input]]
filter = "plant/+/telemetry"
template = "plant/{device}/telemetry"
output = "twin/{device}/telemetry"
"#;

    fn error(edit: impl Fn(&str) -> String) -> String {
        match FileConfig::from_toml(&edit(GOOD), ".") {
            Ok(_) => panic!("accepted:\n{}", edit(GOOD)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_table_reads_with_its_defaults() {
        let file = FileConfig::from_toml(GOOD, ".").unwrap();
        let n = file.nats.unwrap();
        assert_eq!(n.stream, "TWINGUARD_DEVICES");
        assert_eq!(n.prefix, "part");
        assert_eq!(n.lease_ms, 6_000);
        assert_eq!(n.forward, super::Forward::Jetstream);
        assert_eq!(n.validate().unwrap().len(), 1);
    }

    #[test]
    fn every_bad_key_is_named() {
        for (edit, want) in [
            (
                GOOD.replace(r#""nats://127.0.0.1:4222", "#, "")
                    .replace(r#"["nats://10.0.0.2:4222"]"#, "[]"),
                "nats.servers is empty",
            ),
            (
                GOOD.replace("nats://10.0.0.2:4222", "http://10.0.0.2:4222"),
                "\"http://10.0.0.2:4222\" is not nats://",
            ),
            (
                GOOD.replace("nats://10.0.0.2:4222", "tls://10.0.0.2:4222"),
                "no [nats.tls]",
            ),
            (
                GOOD.replace("partitions = 12", "partitions = 0"),
                "nats.partitions = 0",
            ),
            (
                GOOD.replace(r#"instance = "tg-1""#, r#"instance = "tg.1""#),
                "nats.instance \"tg.1\"",
            ),
            (
                GOOD.replace("partitions = 12", "partitions = 12\nlease-ms = 10"),
                "nats.lease-ms = 10",
            ),
            (
                GOOD.replace("partitions = 12", "partitions = 12\nreplicas = 7"),
                "nats.replicas = 7",
            ),
            (
                GOOD.replace(
                    "partitions = 12",
                    "partitions = 12\ncheckpoint-messages = 0",
                ),
                "checkpoint-messages",
            ),
            (
                GOOD.replace(
                    "partitions = 12",
                    "partitions = 12\nforward = \"carrier-pigeon\"",
                ),
                "carrier-pigeon",
            ),
            (
                GOOD.replace("partitions = 12", "partitions = 12\nlease = 3"),
                "unknown field `lease`",
            ),
            (
                GOOD.replace(
                    "template = \"plant/{device}/telemetry\"",
                    "template = \"plant/+/telemetry\"\ndevice-property = \"id\"",
                ),
                "nats.input #1: device-property",
            ),
            (
                GOOD.replace(
                    "template = \"plant/{device}/telemetry\"",
                    "template = \"plant/{id}/telemetry\"",
                ),
                "nats.input #1",
            ),
            (
                GOOD.split("[[nats.input]]").next().unwrap().to_owned(),
                "missing field `input`",
            ),
        ] {
            let e = error(|_| edit.clone());
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }
}
