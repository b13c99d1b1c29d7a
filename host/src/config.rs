//! The runtime configuration (TOML): policies, routes, defaults and engine settings.
//!
//! ```toml
//! [defaults]
//! unrouted = "quarantine"          # or "allow": messages whose topic matches no route
//! breaker-threshold = 5            # consecutive faults that trip a policy open (0 = never)
//! [defaults.limits]
//! fuel = 10_000_000
//! deadline-ms = 50
//!
//! [[policy]]
//! name = "pii"
//! path = "policies/pii_redact.wasm" # relative to this file
//! isolation = "reuse"              # or "fresh"
//! on-fault = "quarantine"          # or "allow"
//! [policy.config]                  # key-values handed to the policy's init
//! remove = "/owner/email"
//! [policy.limits]
//! fuel = 2_000_000
//!
//! [[route]]
//! filter = "plant/+/telemetry"     # MQTT topic filter; the first matching route wins
//! chain = ["pii"]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits::{Isolation, Limits, OnFault};
use crate::pipeline::TopicFilter;
use crate::Error;

/// What happens to a message whose topic matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unrouted {
    /// Fail closed (the default): quarantine it with the reason "no route matches".
    #[default]
    Quarantine,
    /// Forward it unchanged.
    Allow,
}

/// The whole configuration. Build it from TOML with [`Config::from_file`] or
/// [`Config::from_toml`], or in code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Defaults every policy inherits.
    pub defaults: Defaults,
    /// Engine-wide settings.
    pub engine: EngineConfig,
    /// The policies, in any order.
    #[serde(rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    /// The routes, in order: the first whose filter matches a topic decides its chain.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `twinguard serve`: the brokers and the topics it reads and writes there: one
    /// `[gateway]` table, or one `[[gateway]]` entry per broker. The runtime itself ignores
    /// them, so one file configures a whole gateway.
    #[serde(rename = "gateway", deserialize_with = "crate::gateway::one_or_many")]
    pub gateways: Vec<crate::gateway::GatewayConfig>,
    /// `twinguard serve`: where quarantined messages are kept.
    pub quarantine: Option<crate::gateway::QuarantineConfig>,
    /// Where security events go besides the outcome (file, syslog).
    pub alerts: Option<crate::alerts::AlertsConfig>,
    /// `twinguard serve`: the admin API (HTTPS) and where pushed modules are kept.
    pub admin: Option<crate::admin::AdminConfig>,
    /// Which keys sign policy modules, and whether a signature is required.
    pub signing: crate::signing::SigningConfig,
}

/// Defaults for every policy, and what happens to unrouted messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Defaults {
    /// Limits of a policy that does not set its own.
    pub limits: Limits,
    /// Isolation mode of a policy that does not set its own.
    pub isolation: Isolation,
    /// Fault action of a policy that does not set its own.
    pub on_fault: OnFault,
    /// Consecutive faults after which a policy's circuit breaker opens (0 = never).
    pub breaker_threshold: u32,
    /// What happens to a message that matches no route.
    pub unrouted: Unrouted,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            isolation: Isolation::default(),
            on_fault: OnFault::default(),
            breaker_threshold: 5,
            unrouted: Unrouted::default(),
        }
    }
}

/// Engine-wide settings. The instance pool is shared by every policy (and, during a reload,
/// by two generations), so size it for all of them at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct EngineConfig {
    /// Live instances the pooling allocator can hold at once, over all policies.
    pub max_instances: u32,
    /// The largest memory cap any policy may set, in bytes (the pool's slot size).
    pub max_memory_bytes: u64,
    /// Epoch tick in milliseconds: the granularity of deadlines.
    pub epoch_tick_ms: u64,
    /// Idle instances kept per policy in `reuse` mode (0 = twice the available parallelism).
    pub idle_instances: u32,
    /// Where compiled components are kept between runs (relative to the config file); no
    /// cache when unset. Must be writable only by the operator: see `docs/signing-and-cache.md`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick_ms: 1,
            idle_instances: 0,
            cache_dir: None,
        }
    }
}

/// One policy: a component file, its configuration and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, used in routes, traces, alerts and state namespaces.
    pub name: String,
    /// The component file; relative paths are resolved against the config file's folder.
    pub path: PathBuf,
    /// Key-values handed to the policy's `init`. TOML strings, numbers and booleans are
    /// accepted and passed as text.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Limits this policy overrides; the rest come from `[defaults.limits]`.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// Isolation mode (default from `[defaults]`).
    pub isolation: Option<Isolation>,
    /// Fault action (default from `[defaults]`).
    pub on_fault: Option<OnFault>,
    /// Breaker threshold (default from `[defaults]`).
    pub breaker_threshold: Option<u32>,
}

/// A configuration value handed to a policy: text, number or boolean.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Per-policy overrides of [`Limits`]; unset fields inherit the defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)] // each field mirrors the Limits field of the same name
pub struct LimitsOverride {
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub state_bytes: Option<u64>,
    pub state_devices: Option<u64>,
    pub decision_bytes: Option<u64>,
}

impl LimitsOverride {
    /// These overrides applied to `base`.
    pub fn apply(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            state_bytes: self.state_bytes.unwrap_or(base.state_bytes),
            state_devices: self.state_devices.unwrap_or(base.state_devices),
            decision_bytes: self.decision_bytes.unwrap_or(base.decision_bytes),
        }
    }
}

/// A route: an MQTT topic filter and the ordered chain of policies it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RouteConfig {
    /// MQTT topic filter (`+` one level, `#` the rest).
    pub filter: String,
    /// Policy names, run in this order.
    pub chain: Vec<String>,
}

impl Config {
    /// Reads and validates a TOML config file; relative policy paths become relative to the
    /// file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "config".into(),
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base, &path.display().to_string())
    }

    /// Parses and validates TOML text; relative policy paths are resolved against `base`.
    ///
    /// ```
    /// let config = twinguard::Config::from_toml(
    ///     r#"
    ///     [[policy]]
    ///     name = "pass"
    ///     path = "allow_all.wasm"
    ///     [[route]]
    ///     filter = "plant/#"
    ///     chain = ["pass"]
    ///     "#,
    ///     "/etc/twinguard",
    /// )?;
    /// assert_eq!(config.policies[0].path, std::path::Path::new("/etc/twinguard/allow_all.wasm"));
    /// # Ok::<(), twinguard::Error>(())
    /// ```
    pub fn from_toml(text: &str, base: impl AsRef<Path>) -> Result<Self, Error> {
        Self::parse(text, base.as_ref(), "<inline>")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Self, Error> {
        let mut config: Self = toml::from_str(text).map_err(|e| Error::Config {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for policy in &mut config.policies {
            if policy.path.is_relative() {
                policy.path = base.join(&policy.path);
            }
        }
        // Every file a config names is relative to the config's folder.
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for tls in config.gateways.iter_mut().filter_map(|g| g.tls.as_mut()) {
            rebase(&mut tls.ca);
            tls.cert.as_mut().map(rebase);
            tls.key.as_mut().map(rebase);
        }
        if let Some(q) = config.quarantine.as_mut() {
            rebase(&mut q.path);
        }
        if let Some(file) = config.alerts.as_mut().and_then(|a| a.file.as_mut()) {
            rebase(file);
        }
        if let Some(admin) = config.admin.as_mut() {
            rebase(&mut admin.cert);
            rebase(&mut admin.key);
            admin.client_ca.as_mut().map(rebase);
            admin.token_file.as_mut().map(rebase);
            rebase(&mut admin.state_dir);
        }
        config.engine.cache_dir.as_mut().map(rebase);
        config.signing.trusted_keys.iter_mut().for_each(rebase);
        config.validate().map_err(|message| Error::Config {
            origin: origin.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Checks names, references, filters and limits. The message names the entry.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let engine = &self.engine;
        if engine.max_instances == 0 {
            return Err("engine.max-instances must be at least 1".into());
        }
        if engine.epoch_tick_ms == 0 {
            return Err("engine.epoch-tick-ms must be at least 1".into());
        }
        for (i, p) in self.policies.iter().enumerate() {
            if !valid_name(&p.name) {
                return Err(format!(
                    "policy #{} name {:?}: use 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'",
                    i + 1,
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("policy {:?} is defined twice", p.name));
            }
            let limits = self.limits_of(p);
            check_limits(&limits, engine).map_err(|e| format!("policy {:?}: {e}", p.name))?;
        }
        check_limits(&self.defaults.limits, engine).map_err(|e| format!("defaults.limits: {e}"))?;
        for (i, r) in self.routes.iter().enumerate() {
            TopicFilter::parse(&r.filter)
                .map_err(|e| format!("route #{} filter {:?}: {e}", i + 1, r.filter))?;
            for name in &r.chain {
                if !names.contains(name.as_str()) {
                    return Err(format!(
                        "route #{} ({:?}) names policy {name:?}, which is not defined",
                        i + 1,
                        r.filter
                    ));
                }
            }
        }
        let mut gateway_names = HashSet::new();
        for g in &self.gateways {
            let named = |e: String| {
                if self.gateways.len() > 1 {
                    format!("gateway {:?}: {e}", g.name())
                } else {
                    e
                }
            };
            g.validate().map_err(named)?;
            if !gateway_names.insert(g.name()) {
                return Err(format!(
                    "gateway {:?}: two gateways share this name (set name = \"…\" on each; \
                     quarantined records use it to find their broker again)",
                    g.name()
                ));
            }
        }
        if let Some(a) = &self.alerts {
            a.validate()?;
        }
        if let Some(a) = &self.admin {
            a.validate()?;
        }
        self.signing.validate()?;
        Ok(())
    }

    /// The effective limits of a policy: its overrides on top of `[defaults.limits]`.
    pub fn limits_of(&self, policy: &PolicyConfig) -> Limits {
        policy.limits.apply(self.defaults.limits)
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_limits(limits: &Limits, engine: &EngineConfig) -> Result<(), String> {
    if limits.fuel == 0 {
        return Err("fuel must be at least 1".into());
    }
    if limits.deadline_ms == 0 {
        return Err("deadline-ms must be at least 1".into());
    }
    if limits.memory_bytes > engine.max_memory_bytes {
        return Err(format!(
            "memory-bytes {} exceeds engine.max-memory-bytes {}",
            limits.memory_bytes, engine.max_memory_bytes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "/base").unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_overrides_merge() {
        let c = Config::from_toml(
            "[defaults.limits]\nfuel = 5\n[[policy]]\nname = \"a\"\npath = \"a.wasm\"\n\
             [policy.limits]\ndeadline-ms = 7\n[policy.config]\nn = 3\nflag = true\n",
            "/base",
        )
        .unwrap();
        let limits = c.limits_of(&c.policies[0]);
        assert_eq!((limits.fuel, limits.deadline_ms), (5, 7));
        assert_eq!(c.policies[0].config["n"].to_string(), "3");
        assert_eq!(c.policies[0].config["flag"].to_string(), "true");
        assert_eq!(c.defaults.unrouted, Unrouted::Quarantine);
    }

    #[test]
    fn errors_name_the_entry() {
        assert!(err("[[policy]]\nname = \"a\"\npath = \"a\"\nfuel = 1\n").contains("fuel"));
        assert!(err("[[policy]]\nname = \"a b\"\npath = \"a\"\n").contains("\"a b\""));
        let twice =
            "[[policy]]\nname = \"a\"\npath = \"a\"\n[[policy]]\nname = \"a\"\npath = \"b\"\n";
        assert!(err(twice).contains("defined twice"));
        let dangling = "[[route]]\nfilter = \"a/#\"\nchain = [\"nope\"]\n";
        assert!(err(dangling).contains("\"nope\", which is not defined"));
        let bad_filter = "[[route]]\nfilter = \"a/#/b\"\nchain = []\n";
        assert!(err(bad_filter).contains("route #1 filter"));
        let zero = "[[policy]]\nname = \"a\"\npath = \"a\"\n[policy.limits]\nfuel = 0\n";
        assert!(err(zero).contains("policy \"a\": fuel must be at least 1"));
        assert!(err("[defaults]\nunrouted = \"drop\"\n").contains("unrouted"));
        assert!(
            err("[[policy]]\nname = \"a\"\npath = \"a\"\n[policy.config]\nx = [1]\n")
                .contains("config")
        );
    }
}
