//! The plugin's options: the `plugin_opt_<key> <value>` lines that follow the `plugin` line in
//! `mosquitto.conf` (Mosquitto strips the prefix). They are read once, at start-up: Mosquitto
//! 2.0 does not hand them again on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use twinguard::budget::DeviceBudget;
use twinguard::ContentType;

/// Where a message's device identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The MQTT client id (the default).
    ClientId,
    /// The MQTT username. With `use_identity_as_username true` on a TLS listener that
    /// requires client certificates, Mosquitto sets it to the certificate's CN.
    Username,
}

/// The parsed options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `config`: the twinguard TOML config (policies, routes, `[quarantine]`, `[alerts]`).
    pub config: PathBuf,
    /// `identity`: `client-id` (default) or `username`.
    pub identity: Identity,
    /// `alerts_topic`: each security event is published there as JSON; none when unset.
    pub alerts_topic: Option<String>,
    /// `alerts_qos`: 0, 1 (default) or 2.
    pub alerts_qos: u8,
    /// `content_type`: how payloads are read when the PUBLISH carries no MQTT 5 content type:
    /// `json` (default), `cbor`, `text` or `binary`.
    pub content_type: ContentType,
    /// `reload_ms`: how often the config and policy files are checked for changes (default
    /// 1000; 0 turns hot reload off).
    pub reload: Option<Duration>,
    /// `workers`: threads that judge MQTT 3.1/3.1.1 messages off the broker's thread (default
    /// 0: every message is judged inline, on the broker's thread). See [`crate::workers`].
    pub workers: usize,
    /// `metrics_listen`: the address (`127.0.0.1:9465`) of a plain-HTTP listener answering
    /// `/metrics`, `/healthz` and `/readyz`. None (the default): no listener and no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// `metrics_service_name`: the `service.name` resource attribute of those metrics
    /// (default `twinguard-mosquitto`).
    pub metrics_service_name: String,
    /// `device_budget_rate` (messages/s, default 1000; 0 turns it off) and
    /// `device_budget_burst` (default 10 s of the rate): each identity's share of the broker,
    /// checked before a message is judged. Its excess is denied unjudged.
    pub device_budget: DeviceBudget,
    /// `device_budget_exempt`: identities (comma-separated) the budget does not apply to,
    /// such as a bridge that carries many devices, or `twinguard serve`'s own client when the
    /// plugin guards the broker in front of it.
    pub device_budget_exempt: Vec<String>,
}

/// The default `metrics_service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "twinguard-mosquitto";

/// The most `workers` accepted: more threads than this only contend.
pub const MAX_WORKERS: usize = 64;

/// Every key the plugin knows, for the message about an unknown one.
pub const KEYS: &[&str] = &[
    "config",
    "identity",
    "alerts_topic",
    "alerts_qos",
    "content_type",
    "reload_ms",
    "workers",
    "metrics_listen",
    "metrics_service_name",
    "device_budget_rate",
    "device_budget_burst",
    "device_budget_exempt",
];

impl Options {
    /// Parses `(key, value)` pairs as Mosquitto hands them. The error names the option
    /// (`plugin_opt_<key>`) and the value.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut config = None;
        let mut options = Self {
            config: PathBuf::new(),
            identity: Identity::ClientId,
            alerts_topic: None,
            alerts_qos: 1,
            content_type: ContentType::Json,
            reload: Some(Duration::from_millis(1000)),
            workers: 0,
            metrics_listen: None,
            metrics_service_name: DEFAULT_SERVICE_NAME.to_string(),
            device_budget: DeviceBudget::default(),
            device_budget_exempt: Vec::new(),
        };
        let mut service_name_set = false;
        for (key, value) in pairs {
            let bad = |why: &str| format!("plugin_opt_{key} {value:?}: {why}");
            match key {
                "config" => config = Some(PathBuf::from(value)),
                "identity" => {
                    options.identity = match value {
                        "client-id" | "clientid" => Identity::ClientId,
                        "username" => Identity::Username,
                        _ => return Err(bad("expected client-id or username")),
                    }
                }
                "alerts_topic" => {
                    if value.is_empty() || value.contains(['+', '#']) {
                        return Err(bad("a topic name, without wildcards"));
                    }
                    options.alerts_topic = Some(value.to_string());
                }
                "alerts_qos" => {
                    options.alerts_qos = match value {
                        "0" => 0,
                        "1" => 1,
                        "2" => 2,
                        _ => return Err(bad("expected 0, 1 or 2")),
                    }
                }
                "content_type" => {
                    options.content_type = value.parse().map_err(|e: String| bad(&e))?
                }
                "reload_ms" => {
                    let ms: u64 = value
                        .parse()
                        .map_err(|_| bad("milliseconds, a whole number (0 = off)"))?;
                    options.reload = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "workers" => {
                    options.workers = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_WORKERS)
                        .ok_or_else(|| {
                            bad(&format!("a whole number from 0 (inline) to {MAX_WORKERS}"))
                        })?;
                }
                "metrics_listen" => {
                    options.metrics_listen = Some(value.parse().map_err(|_| {
                        bad("an IP address and a port, e.g. 127.0.0.1:9465 ([::1]:9465 for IPv6)")
                    })?);
                }
                "metrics_service_name" => {
                    if value.trim().is_empty() {
                        return Err(bad("a name for the service.name attribute, not empty"));
                    }
                    options.metrics_service_name = value.to_string();
                    service_name_set = true;
                }
                "device_budget_rate" => {
                    options.device_budget.rate = value.parse().map_err(|_| {
                        bad("messages per second, a number (0 turns the budget off)")
                    })?;
                }
                "device_budget_burst" => {
                    options.device_budget.burst = Some(
                        value
                            .parse()
                            .map_err(|_| bad("messages at once, a number (at least 1)"))?,
                    );
                }
                "device_budget_exempt" => {
                    options.device_budget_exempt = value
                        .split(',')
                        .map(str::trim)
                        .filter(|id| !id.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                _ => {
                    return Err(format!(
                        "unknown option plugin_opt_{key} (known: plugin_opt_{})",
                        KEYS.join(", plugin_opt_")
                    ))
                }
            }
        }
        options.config = config.ok_or_else(|| {
            "plugin_opt_config is missing: give the path of the twinguard config file".to_string()
        })?;
        options.device_budget.check(
            "plugin_opt_device_budget_rate",
            "plugin_opt_device_budget_burst",
        )?;
        if service_name_set && options.metrics_listen.is_none() {
            return Err("plugin_opt_metrics_service_name has no effect without \
                        plugin_opt_metrics_listen (no metrics are recorded without a listener)"
                .to_string());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_key() {
        let o = Options::parse([("config", "/etc/twinguard.toml")]).unwrap();
        assert_eq!(o.config, PathBuf::from("/etc/twinguard.toml"));
        assert_eq!(o.identity, Identity::ClientId);
        assert_eq!((o.alerts_topic, o.alerts_qos), (None, 1));
        assert_eq!(o.content_type, ContentType::Json);
        assert_eq!(o.reload, Some(Duration::from_secs(1)));
        assert_eq!(o.workers, 0);
        assert_eq!(o.metrics_listen, None);
        assert_eq!(o.metrics_service_name, "twinguard-mosquitto");
        assert_eq!(o.device_budget, DeviceBudget::default());

        let o = Options::parse([
            ("config", "c.toml"),
            ("identity", "username"),
            ("alerts_topic", "twinguard/alerts"),
            ("alerts_qos", "0"),
            ("content_type", "cbor"),
            ("reload_ms", "0"),
            ("workers", "3"),
            ("metrics_listen", "127.0.0.1:9465"),
            ("metrics_service_name", "broker-a"),
            ("device_budget_rate", "50"),
            ("device_budget_burst", "5"),
            ("device_budget_exempt", "bridge-1, serve-a,"),
        ])
        .unwrap();
        assert_eq!(o.device_budget_exempt, ["bridge-1", "serve-a"]);
        assert_eq!(
            o.device_budget,
            DeviceBudget {
                rate: 50.0,
                burst: Some(5.0)
            }
        );
        assert_eq!(o.identity, Identity::Username);
        assert_eq!(o.alerts_topic.as_deref(), Some("twinguard/alerts"));
        assert_eq!(o.alerts_qos, 0);
        assert_eq!(o.content_type, ContentType::Cbor);
        assert_eq!(o.reload, None);
        assert_eq!(o.workers, 3);
        assert_eq!(o.metrics_listen, Some("127.0.0.1:9465".parse().unwrap()));
        assert_eq!(o.metrics_service_name, "broker-a");
        let o = Options::parse([("config", "c"), ("metrics_listen", "[::1]:0")]).unwrap();
        assert_eq!(o.metrics_listen, Some("[::1]:0".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_option() {
        let err = |pairs: &[(&str, &str)]| Options::parse(pairs.iter().copied()).unwrap_err();
        assert!(err(&[]).contains("plugin_opt_config is missing"));
        let e = err(&[("config", "c"), ("identity", "cn")]);
        assert!(e.contains("plugin_opt_identity \"cn\""), "{e}");
        assert!(err(&[("config", "c"), ("alerts_topic", "a/#")]).contains("wildcards"));
        assert!(err(&[("config", "c"), ("alerts_qos", "3")]).contains("alerts_qos"));
        assert!(err(&[("config", "c"), ("content_type", "xml")]).contains("unknown content"));
        assert!(err(&[("config", "c"), ("reload_ms", "-1")]).contains("reload_ms"));
        for bad in ["-1", "65", "two"] {
            let e = err(&[("config", "c"), ("workers", bad)]);
            assert!(
                e.contains("plugin_opt_workers") && e.contains("0 (inline) to 64"),
                "{e}"
            );
        }
        for bad in ["9465", "localhost:9465", "127.0.0.1", "127.0.0.1:99999", ""] {
            let e = err(&[("config", "c"), ("metrics_listen", bad)]);
            assert!(
                e.contains(&format!("plugin_opt_metrics_listen {bad:?}"))
                    && e.contains("an IP address and a port"),
                "{e}"
            );
        }
        let e = err(&[("config", "c"), ("metrics_service_name", " ")]);
        assert!(e.contains("plugin_opt_metrics_service_name"), "{e}");
        let e = err(&[("config", "c"), ("metrics_service_name", "b")]);
        assert!(e.contains("without plugin_opt_metrics_listen"), "{e}");
        for (key, bad) in [
            ("device_budget_rate", "fast"),
            ("device_budget_rate", "-1"),
            ("device_budget_burst", "0.5"),
            ("device_budget_burst", "many"),
        ] {
            let e = err(&[("config", "c"), (key, bad)]);
            assert!(e.starts_with(&format!("plugin_opt_{key} ")), "{e}");
        }
        let e = err(&[("config", "c"), ("confg", "x")]);
        assert!(e.contains("unknown option plugin_opt_confg"), "{e}");
    }
}
