//! `[gateway]`: where `twinguard serve` connects, what it reads and where it writes.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::mqtt::Protocol;
use super::template::{strip_share, Template};
use crate::ContentType;
use crate::TopicFilter;

/// One gateway's settings: a `[gateway]` table of the config file, or one `[[gateway]]` entry
/// each when twinguard serves several brokers.
///
/// ```toml
/// [gateway]
/// broker = "mqtts://broker.plant.local:8883"
/// client-id = "twinguard-1"
/// alerts-topic = "twinguard/alerts"
/// [gateway.tls]
/// ca = "ca.pem"
/// cert = "twinguard.pem"
/// key = "twinguard.key"
/// [[gateway.input]]
/// filter = "devices/+/telemetry"
/// template = "devices/{device}/telemetry"
/// output = "twin/{device}/telemetry"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GatewayConfig {
    /// The name quarantined records carry, so that a release goes back to the broker the
    /// message came from (default: the client id). Unique among the gateways.
    pub name: Option<String>,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Messages judged at once (default: half the cores, at least one). Messages of one
    /// device always go to the same worker, so each device's order holds.
    pub workers: Option<usize>,
    /// `mqtt://host:port` (plain) or `mqtts://host:port` (TLS; `[gateway.tls]` required).
    pub broker: String,
    /// The MQTT client id. Keep it stable: the broker keeps this session's unacknowledged
    /// messages for it across a restart of twinguard, which is what makes delivery
    /// at-least-once.
    pub client_id: String,
    /// Optional credentials.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// Keep-alive interval in seconds (default 30).
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Messages in flight towards the twin topics at once (default 64). Input is acknowledged
    /// only when its outcome is durable, so this also bounds what the broker keeps unacked.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// The largest payload, in bytes, a message may have to be judged (default 1 MiB). A
    /// message over it is quarantined without evaluation (its first `max-message-bytes` bytes
    /// are kept, with the size and SHA-256 of the whole in the reason) and acknowledged, and
    /// the flow goes on. The gateway reads packets up to MQTT's own maximum, so a big message
    /// never breaks the connection; the broker's `message_size_limit` bounds what it may send.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Topic where each security event is published as JSON (QoS 1); none when unset.
    pub alerts_topic: Option<String>,
    /// What a retained message the broker replays on (re)subscribing is: `"skip"` (default)
    /// or `"judge"`: see `Retained`.
    #[serde(default)]
    pub retained: Retained,
    /// Each device's share of the gateway (`[gateway.device-budget]`, on by default: 1,000
    /// messages/s sustained, 10,000 at once); past it a device's messages are shed with an
    /// alert. See [`super::budget`].
    #[serde(default)]
    pub device_budget: super::budget::DeviceBudget,
    /// The broker's counter of messages it dropped on full queues, watched on a connection of
    /// its own (default Mosquitto's `$SYS/broker/publish/messages/dropped`; `""` turns it
    /// off). A rise is logged as a warning and shown as `twinguard_gateway_broker_dropped`:
    /// drops the gateway cannot otherwise see.
    #[serde(default = "default_broker_drops_topic")]
    pub broker_drops_topic: String,
    /// TLS settings, required by an `mqtts://` broker.
    pub tls: Option<TlsConfig>,
    /// What to read, and where each message goes when it passes.
    #[serde(rename = "input")]
    pub inputs: Vec<InputConfig>,
}

/// Reads `gateway` as either one table (`[gateway]`) or an array of them (`[[gateway]]`),
/// keeping serde's own errors (which name the key) for both.
pub(crate) fn one_or_many<'de, D>(d: D) -> Result<Vec<GatewayConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<GatewayConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a [gateway] table or [[gateway]] entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let one =
                GatewayConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            Ok(vec![one])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<GatewayConfig>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(Visitor)
}

fn default_broker_drops_topic() -> String {
    "$SYS/broker/publish/messages/dropped".into()
}

fn default_keep_alive() -> u64 {
    30
}

fn default_inflight() -> u16 {
    64
}

/// 1 MiB: what the gateway accepted before the limit was a key (rumqttc's packet limit).
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// A delivery with the retain flag set is the broker replaying the last message it stored for
/// a topic, because the gateway (re)subscribed: not a new reading. Live messages reach a
/// subscriber with the flag clear (MQTT 3.1.1 3.3.1.3; MQTT 5 unless retain-as-published),
/// and the persistent session queues what devices send while the gateway is away, so skipping
/// replays loses no reading. Judged again, one retained reading would reach the twin once per
/// restart or reconnect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retained {
    /// Acknowledge and count it (`twinguard_gateway_messages_total{stage="retained_skipped"}`),
    /// judge and forward nothing.
    #[default]
    Skip,
    /// Judge it like any message: for twins that want a device's stored last value when the
    /// gateway first subscribes, at the price of a copy per reconnect (replay-guard, with a
    /// sequence number in the payload, quarantines the repeats).
    Judge,
}

/// TLS towards the broker: hostname verification is always on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that sign the broker's certificate.
    pub ca: PathBuf,
    /// PEM certificate chain presented to the broker (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// One input: a subscription, how its topics name the device, and the output topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct InputConfig {
    /// MQTT filter to subscribe to. A plain filter (the default to use) loses nothing: the
    /// broker queues its messages on the gateway's persistent session while it is away.
    /// `$share/<group>/…` lets several gateways split the load, but loses the messages
    /// published while the broker restarts and the gateway reconnects (Mosquitto queues
    /// nothing for a disconnected member of a shared subscription); `serve` warns at start.
    pub filter: String,
    /// Template of the topics it delivers; `{device}` is the device identity.
    pub template: String,
    /// Template of the output topic, filled from the input's variables.
    pub output: String,
    /// Content type of the payloads (`json`, `cbor`, `text`, `binary`; default json).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// MQTT 5 only: take the device identity from this user property instead of the
    /// topic's `{device}`. Only sound where the broker sets or checks the property (a
    /// device can write any property it likes); a message without it is quarantined.
    pub device_property: Option<String>,
}

/// Validates `[[<table>.input]]` entries; `v5`: whether the transport carries MQTT 5 user
/// properties (`device-property` needs them). The error names the entry and the key.
pub(crate) fn validate_inputs(
    configs: &[InputConfig],
    v5: bool,
    table: &str,
) -> Result<Vec<Input>, String> {
    let mut inputs = Vec::new();
    for (i, input) in configs.iter().enumerate() {
        let at = format!("{table}.input #{} ({:?})", i + 1, input.filter);
        let delivers = TopicFilter::parse(strip_share(&input.filter))
            .map_err(|e| format!("{at}: filter: {e}"))?;
        let template =
            Template::parse(&input.template).map_err(|e| format!("{at}: template: {e}"))?;
        if let Some(p) = &input.device_property {
            if !v5 {
                return Err(format!(
                    "{at}: device-property {p:?} needs MQTT 5 user properties: set protocol = \"5\""
                ));
            }
            if p.is_empty() {
                return Err(format!("{at}: device-property is empty"));
            }
        } else if !template.variables().any(|v| v == "device") {
            return Err(format!(
                "{at}: template {:?} has no {{device}}: the device identity comes from it \
                 (or from an MQTT 5 user property: device-property = \"…\")",
                input.template
            ));
        }
        let output = Template::parse(&input.output).map_err(|e| format!("{at}: output: {e}"))?;
        if let Some(missing) = output
            .variables()
            // With device-property, {device} comes from the property when the topic
            // does not name it.
            .filter(|v| !(*v == "device" && input.device_property.is_some()))
            .find(|v| !template.variables().any(|t| t == *v))
        {
            return Err(format!(
                "{at}: output {:?} uses {{{missing}}}, which the template does not capture",
                input.output
            ));
        }
        let content_type = input
            .content_type
            .parse()
            .map_err(|e| format!("{at}: content-type: {e}"))?;
        inputs.push(Input {
            filter: input.filter.clone(),
            delivers,
            template,
            output,
            content_type,
            device_property: input.device_property.clone(),
        });
    }
    Ok(inputs)
}

fn default_content_type() -> String {
    "json".into()
}

/// A validated input.
#[derive(Debug, Clone)]
pub struct Input {
    /// The subscription, as configured (`$share/…` included).
    pub filter: String,
    /// The topics that subscription delivers (the filter without its share prefix).
    pub delivers: TopicFilter,
    /// Template of those topics.
    pub template: Template,
    /// Template of the output topic.
    pub output: Template,
    /// Content type of the payloads.
    pub content_type: ContentType,
    /// The user property that names the device, when the topic does not.
    pub device_property: Option<String>,
}

impl Input {
    /// Whether the subscription is shared (`$share/<group>/…`): several gateways split the
    /// load, and messages published while the broker restarts and the gateway reconnects are
    /// lost.
    pub fn is_shared(&self) -> bool {
        self.filter != strip_share(&self.filter)
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address (also the name the broker's certificate must carry).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl GatewayConfig {
    /// Checks everything that can be checked without the network; the error names the key.
    pub fn validate(&self) -> Result<(BrokerAddr, Vec<Input>), crate::Invalid> {
        self.check().map_err(crate::Invalid::from)
    }

    fn check(&self) -> Result<(BrokerAddr, Vec<Input>), String> {
        let broker = parse_broker(&self.broker)?;
        if broker.tls && self.tls.is_none() {
            return Err(format!(
                "gateway.broker {:?} is mqtts:// but there is no [gateway.tls] (ca = …)",
                self.broker
            ));
        }
        if !broker.tls && self.tls.is_some() {
            return Err(format!(
                "gateway.broker {:?} is plain mqtt:// but [gateway.tls] is set: use mqtts://",
                self.broker
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err("gateway.tls: cert and key go together (mutual TLS)".into());
            }
        }
        if self.client_id.is_empty() || self.client_id.len() > 23 * 4 {
            return Err(format!(
                "gateway.client-id {:?}: give a stable, non-empty id",
                self.client_id
            ));
        }
        if self.inputs.is_empty() {
            return Err("gateway: no [[gateway.input]]: nothing to read".into());
        }
        if self.inflight == 0 {
            return Err("gateway.inflight must be at least 1".into());
        }
        if self.max_message_bytes == 0 {
            return Err("gateway.max-message-bytes must be at least 1".into());
        }
        self.device_budget
            .check("gateway.device-budget.rate", "gateway.device-budget.burst")?;
        let inputs = validate_inputs(&self.inputs, self.protocol == Protocol::V5, "gateway")?;
        if self.workers == Some(0) {
            return Err("gateway.workers must be at least 1".into());
        }
        Ok((broker, inputs))
    }

    /// The name records and logs use: `name`, or the client id.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.client_id)
    }

    /// Worker count: configured, or half the cores (at least one). The broker, the network
    /// tasks and often the broker itself share the machine: on 2 cores, 2 workers gained 6 %
    /// throughput and cost 4x the p50 latency at low load (BENCHMARKS.md).
    pub(crate) fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        })
    }

    pub(crate) fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_s.max(5))
    }
}

fn parse_broker(url: &str) -> Result<BrokerAddr, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "gateway.broker {url:?}: use mqtt://host:port or mqtts://host:port"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("gateway.broker {url:?}: bad port {p:?}"))?,
        ),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("gateway.broker {url:?}: no host"));
    }
    Ok(BrokerAddr {
        host: host.to_owned(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<GatewayConfig, String> {
        toml::from_str(&format!(
            "broker = \"mqtt://127.0.0.1:1883\"\nclient-id = \"tg\"\n{extra}\n\
             [[input]]\nfilter = \"$share/g/devices/+/telemetry\"\n\
             template = \"devices/{{device}}/telemetry\"\noutput = \"twin/{{device}}/telemetry\"\n"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn valid_config() {
        let (broker, inputs) = config("").unwrap().validate().unwrap();
        assert_eq!(
            broker,
            BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(inputs.len(), 1);
        assert!(inputs[0].delivers.matches("devices/a/telemetry"));
    }

    #[test]
    fn refusals_name_the_key() {
        let c = |broker: &str, tls: &str| {
            let mut g = config(tls).unwrap();
            g.broker = broker.into();
            g.validate().unwrap_err()
        };
        assert!(c("tcp://x:1", "").contains("mqtt://host:port"));
        assert!(c("mqtt://x:port", "").contains("bad port"));
        assert!(c("mqtts://x:8883", "").contains("[gateway.tls]"));
        assert!(c("mqtt://x:1883", "[tls]\nca = \"ca.pem\"").contains("use mqtts://"));
        assert!(
            c("mqtts://x:8883", "[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"")
                .contains("cert and key")
        );
        let mut g = config("").unwrap();
        g.inputs[0].output = "twin/{site}/x".into();
        assert!(g.validate().unwrap_err().contains("{site}"));
        g.inputs[0].template = "devices/+/x".into();
        assert!(g.validate().unwrap_err().contains("template"));
        let mut g = config("").unwrap();
        g.inputs[0].template = "devices/{id}/telemetry".into();
        g.inputs[0].output = "twin/x".into();
        assert!(g.validate().unwrap_err().contains("no {device}"));
        assert!(config("bogus = 1").unwrap_err().contains("bogus"));
    }

    #[test]
    fn max_message_bytes_defaults_to_1_mib_and_is_at_least_1() {
        let g = config("").unwrap();
        assert_eq!(g.max_message_bytes, 1 << 20);
        assert_eq!(
            config("max-message-bytes = 4096")
                .unwrap()
                .max_message_bytes,
            4096
        );
        let err = config("max-message-bytes = 0")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("gateway.max-message-bytes"), "{err}");
    }

    #[test]
    fn shared_inputs_are_told_apart() {
        let mut g = config("").unwrap();
        assert!(g.validate().unwrap().1[0].is_shared());
        g.inputs[0].filter = "devices/+/telemetry".into();
        assert!(!g.validate().unwrap().1[0].is_shared());
    }

    /// The example configuration is lossless across a broker restart: no `$share` input.
    #[test]
    fn the_example_config_uses_plain_filters() {
        let file = crate::FileConfig::from_toml(
            include_str!("../../../../examples/serve.toml"),
            "../../examples",
        )
        .unwrap();
        for g in &file.gateways {
            let (_, inputs) = g.validate().unwrap();
            assert!(inputs.iter().all(|i| !i.is_shared()), "{inputs:?}");
            assert_eq!(g.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        }
        assert!(!file.gateways.is_empty());
    }

    #[test]
    fn mqtt5_identity_needs_mqtt5() {
        let mut g = config("").unwrap();
        g.inputs[0].device_property = Some("device-id".into());
        assert!(g.validate().unwrap_err().contains("protocol = \"5\""));
        g.protocol = Protocol::V5;
        // The identity comes from the property: the template need not name the device,
        // and the output may still use {device}.
        g.inputs[0].template = "devices/+/telemetry".into();
        assert!(g.validate().unwrap_err().contains("template"));
        g.inputs[0].template = "devices/{id}/telemetry".into();
        g.validate().unwrap();
        let err = toml::from_str::<GatewayConfig>(
            "protocol = \"4\"\nbroker = \"mqtt://h\"\nclient-id = \"c\"\ninput = []",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected `3.1.1` or `5`"), "{err}");
    }

    #[test]
    fn one_table_or_several_gateways() {
        let gateway = |name: &str, array: bool| {
            format!(
                "{}\nname = \"{name}\"\nbroker = \"mqtt://h:1883\"\nclient-id = \"tg\"\n\
                 [[gateway.input]]\nfilter = \"d/+\"\ntemplate = \"d/{{device}}\"\noutput = \"t/{{device}}\"\n",
                if array { "[[gateway]]" } else { "[gateway]" }
            )
        };
        let one = crate::FileConfig::from_toml(&gateway("a", false), ".").unwrap();
        assert_eq!(one.gateways.len(), 1);
        let two = format!("{}{}", gateway("a", true), gateway("b", true));
        let two = crate::FileConfig::from_toml(&two, ".").unwrap();
        let names: Vec<_> = two.gateways.iter().map(GatewayConfig::name).collect();
        assert_eq!(names, ["a", "b"]);
        let same = format!("{}{}", gateway("a", true), gateway("a", true));
        let err = crate::FileConfig::from_toml(&same, ".")
            .unwrap_err()
            .to_string();
        assert!(err.contains("two gateways share this name"), "{err}");
        // Errors inside an entry still name the key, and which gateway.
        let typo = format!(
            "{}{}",
            gateway("a", true),
            gateway("b", true).replace("broker", "borker")
        );
        let err = crate::FileConfig::from_toml(&typo, ".")
            .unwrap_err()
            .to_string();
        assert!(err.contains("borker"), "{err}");
        let bad = format!(
            "{}{}",
            gateway("a", true),
            gateway("b", true).replace("mqtt://h", "tcp://h")
        );
        let err = crate::FileConfig::from_toml(&bad, ".")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway \"b\"") && err.contains("mqtt://host:port"),
            "{err}"
        );
        let err = crate::FileConfig::from_toml("gateway = 3", ".")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[[gateway]]"), "{err}");
    }
}
