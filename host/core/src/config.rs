//! The runtime configuration (TOML): policies, routes, defaults and engine settings.
//!
//! ```toml
//! [defaults]
//! unrouted = "quarantine"          # or "allow": messages whose topic matches no route
//! breaker-threshold = 5            # faults of a device's last 16 messages that hold it (0 = never)
//! breaker-rate = 50                # % of a policy's last 64 runs that open it for all (0 = never)
//! breaker-cooldown-ms = 60_000     # how long a held device or an open policy stays so
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
use crate::{CompileLimits, Error, Invalid};

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
    /// Which keys sign policy modules, and whether a signature is required.
    pub signing: crate::signing::SigningConfig,
    /// The device registry, when there is one (`[registry]`).
    pub registry: Option<crate::registry::RegistryConfig>,
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
    /// Faults among a device's last 16 messages after which that device is held: its
    /// messages get the on-fault action without running the policy (0 = never).
    pub breaker_threshold: u32,
    /// Percent of a policy's last 64 runs that must fault, across devices, for its breaker to
    /// open for every device (0 = never).
    pub breaker_rate: u32,
    /// How long a held device, or an open policy, stays so before it is judged again.
    pub breaker_cooldown_ms: u64,
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
            breaker_rate: 50,
            breaker_cooldown_ms: 60_000,
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
    /// The key that authenticates cache entries (relative to the config file); default
    /// `<cache-dir>/cache.key`, made on first use. Keep it outside the cache directory when
    /// others may write there: see `docs/signing-and-cache.md`.
    pub cache_key_file: Option<PathBuf>,
    /// Bytes of code in one component (see [`CompileLimits`]).
    pub max_code_bytes: u64,
    /// Bytes of one function body (see [`CompileLimits`]).
    pub max_function_bytes: u64,
    /// Locals one function declares (see [`CompileLimits`]).
    pub max_function_locals: u64,
    /// Locals × branch targets of one function (see [`CompileLimits`]).
    pub max_function_weight: u64,
    /// Names the policies' compiled code for a profiler (see [`Profiler`]).
    pub profiler: Profiler,
}

/// Whether the engine tells a profiler where each policy's compiled functions lie. Off by
/// default: it costs nothing per message, but appends to a file in `/tmp` (the name `perf`
/// reads) on every load, so it is for profiling sessions, not production.
///
/// ```toml
/// [engine]
/// profiler = "perf-map"   # then: perf record -p <pid>; perf report
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profiler {
    /// Nothing written.
    #[default]
    None,
    /// `/tmp/perf-<pid>.map`, which Linux `perf` reads to name JIT code: a policy's functions
    /// appear under their own names when its component keeps its name section (built without
    /// `strip`), else as `wasm[N]::function[M]`.
    PerfMap,
}

impl EngineConfig {
    /// The bounds on what the host compiles.
    pub fn compile_limits(&self) -> CompileLimits {
        CompileLimits {
            max_code_bytes: self.max_code_bytes,
            max_function_bytes: self.max_function_bytes,
            max_function_locals: self.max_function_locals,
            max_function_weight: self.max_function_weight,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick_ms: 1,
            idle_instances: 0,
            cache_dir: None,
            cache_key_file: None,
            max_code_bytes: CompileLimits::default().max_code_bytes,
            max_function_bytes: CompileLimits::default().max_function_bytes,
            max_function_locals: CompileLimits::default().max_function_locals,
            max_function_weight: CompileLimits::default().max_function_weight,
            profiler: Profiler::None,
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
    /// Breaker threshold per device (default from `[defaults]`).
    pub breaker_threshold: Option<u32>,
    /// Policy-wide breaker rate in percent (default from `[defaults]`).
    pub breaker_rate: Option<u32>,
    /// Breaker cool-down in milliseconds (default from `[defaults]`).
    pub breaker_cooldown_ms: Option<u64>,
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
    pub global_state_bytes: Option<u64>,
    pub decision_bytes: Option<u64>,
    pub redact_edits: Option<u64>,
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
            global_state_bytes: self.global_state_bytes.unwrap_or(base.global_state_bytes),
            decision_bytes: self.decision_bytes.unwrap_or(base.decision_bytes),
            redact_edits: self.redact_edits.unwrap_or(base.redact_edits),
        }
    }
}

/// A route: an MQTT topic filter and the ordered chain of policies it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RouteConfig {
    /// MQTT topic filter (`+` one level, `#` the rest). Empty (absent): every topic, for a
    /// route that picks by `class`.
    #[serde(default)]
    pub filter: String,
    /// The device class the route is for (`[registry]`): the route matches a message whose
    /// topic matches `filter` and whose device has this class.
    #[serde(default)]
    pub class: Option<String>,
    /// Policy names, run in this order.
    pub chain: Vec<String>,
}

impl RouteConfig {
    /// The topic filter, `#` when the route gives only a class.
    pub fn filter_text(&self) -> &str {
        if self.filter.is_empty() {
            "#"
        } else {
            &self.filter
        }
    }

    /// The route as a metric label names it: `filter`, `filter class=c` or `class=c`.
    pub fn describe_plain(&self) -> String {
        match &self.class {
            Some(c) if self.filter.is_empty() => format!("class={c}"),
            Some(c) => format!("{} class={c}", self.filter),
            None => self.filter.clone(),
        }
    }

    /// How errors and metrics name the route: its filter, and its class if any.
    pub fn describe(&self) -> String {
        match &self.class {
            Some(c) if self.filter.is_empty() => format!("class {c:?}"),
            Some(c) => format!("{:?}, class {c:?}", self.filter),
            None => format!("{:?}", self.filter),
        }
    }
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
    /// let config = twinguard_core::Config::from_toml(
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
    /// # Ok::<(), twinguard_core::Error>(())
    /// ```
    pub fn from_toml(text: &str, base: impl AsRef<Path>) -> Result<Self, Error> {
        Self::parse(text, base.as_ref(), "<inline>")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Self, Error> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolved(base, origin)
    }

    /// Makes every relative path (policies, cache folder, trusted keys) relative to `base`,
    /// then validates; errors name `origin`. For a wrapper that deserializes this config as
    /// part of a larger file (the `twinguard` crate's file config does).
    pub fn resolved(mut self, base: &Path, origin: &str) -> Result<Self, Error> {
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for policy in &mut self.policies {
            rebase(&mut policy.path);
        }
        self.engine.cache_dir.as_mut().map(rebase);
        self.engine.cache_key_file.as_mut().map(rebase);
        if let Some(r) = self.registry.as_mut() {
            rebase(&mut r.path);
        }
        self.signing.trusted_keys.iter_mut().for_each(rebase);
        self.check().map_err(|message| Error::Config {
            origin: origin.to_string(),
            message,
        })?;
        Ok(self)
    }

    /// Checks names, references, filters and limits. The message names the entry.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.check().map_err(Invalid::from)
    }

    fn check(&self) -> Result<(), String> {
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
        let mut filters: Vec<(TopicFilter, Option<&str>)> = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let route = format!("route #{} ({})", i + 1, r.describe());
            if r.filter.is_empty() && r.class.is_none() {
                return Err(format!(
                    "route #{}: give a topic `filter`, a device `class`, or both",
                    i + 1
                ));
            }
            if r.class.is_some() && self.registry.is_none() {
                return Err(format!(
                    "{route} picks by class, but there is no [registry] to give devices a class"
                ));
            }
            let filter = TopicFilter::parse(r.filter_text())
                .map_err(|e| format!("route #{} filter {:?}: {e}", i + 1, r.filter))?;
            // A route that can never run is a mistake in every case we know of (a catch-all
            // placed first, a pasted duplicate): refuse it rather than judge by another chain.
            // An earlier route shadows this one when its filter covers this one's and it takes
            // any class (or this one's).
            let class = r.class.as_deref();
            if let Some(j) = filters
                .iter()
                .position(|(f, c)| f.covers(&filter) && (c.is_none() || *c == class))
            {
                return Err(format!(
                    "{route} can never match: route #{} ({}) before it matches every message \
                     it does (routes are tried in order; put the more specific one first)",
                    j + 1,
                    self.routes[j].describe()
                ));
            }
            filters.push((filter, class));
            if r.chain.is_empty() {
                return Err(format!(
                    "{route} has an empty chain, which would forward every message unjudged; \
                     name at least one policy (a policy that allows everything makes that \
                     explicit)"
                ));
            }
            let mut seen = HashSet::new();
            for name in &r.chain {
                if !names.contains(name.as_str()) {
                    return Err(format!(
                        "{route} names policy {name:?}, which is not defined"
                    ));
                }
                if !seen.insert(name.as_str()) {
                    return Err(format!(
                        "{route} names policy {name:?} twice; a policy runs once per message \
                         (define a second [[policy]] with another name to run it twice)"
                    ));
                }
            }
        }
        self.signing.validate().map_err(String::from)?;
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
    // Below one WebAssembly page no module can instantiate, so every message would fault.
    if limits.memory_bytes < 65_536 {
        return Err(format!(
            "memory-bytes {} is below one WebAssembly page (65536): no policy could run",
            limits.memory_bytes
        ));
    }
    // The smallest decision (allow, no alert) needs a few bytes; less faults every message.
    if limits.decision_bytes < 64 {
        return Err(format!(
            "decision-bytes {} is below 64: every decision would be refused",
            limits.decision_bytes
        ));
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
        let bad_filter = "[[route]]\nfilter = \"a/#/b\"\nchain = [\"a\"]\n";
        assert!(err(bad_filter).contains("route #1 filter"));
        let zero = "[[policy]]\nname = \"a\"\npath = \"a\"\n[policy.limits]\nfuel = 0\n";
        assert!(err(zero).contains("policy \"a\": fuel must be at least 1"));
        assert!(err("[defaults]\nunrouted = \"drop\"\n").contains("unrouted"));
        assert!(
            err("[[policy]]\nname = \"a\"\npath = \"a\"\n[policy.config]\nx = [1]\n")
                .contains("config")
        );
    }

    #[test]
    fn footguns_are_refused_naming_the_route_or_limit() {
        let policy = "[[policy]]\nname = \"a\"\npath = \"a\"\n";
        let empty = format!("{policy}[[route]]\nfilter = \"a/#\"\nchain = []\n");
        assert!(
            err(&empty).contains("route #1 (\"a/#\") has an empty chain"),
            "{}",
            err(&empty)
        );
        let twice = format!("{policy}[[route]]\nfilter = \"a/#\"\nchain = [\"a\", \"a\"]\n");
        assert!(
            err(&twice).contains("names policy \"a\" twice"),
            "{}",
            err(&twice)
        );
        let route = |f: &str| format!("[[route]]\nfilter = \"{f}\"\nchain = [\"a\"]\n");
        let shadowed = format!("{policy}{}{}", route("plant/#"), route("plant/+/telemetry"));
        let e = err(&shadowed);
        assert!(
            e.contains("route #2 (\"plant/+/telemetry\") can never match: route #1 (\"plant/#\")"),
            "{e}"
        );
        let duplicate = format!("{policy}{}{}", route("a/b"), route("a/b"));
        assert!(err(&duplicate).contains("can never match"));
        // The specific one first is what the error asks for: accepted.
        let ordered = format!("{policy}{}{}", route("plant/+/telemetry"), route("plant/#"));
        assert!(Config::from_toml(&ordered, ".").is_ok());
        // `$SYS/#` after `#` is reachable: `#` does not match `$` topics.
        let sys = format!("{policy}{}{}", route("#"), route("$SYS/#"));
        assert!(Config::from_toml(&sys, ".").is_ok());
        let limit = |k: &str| format!("{policy}[policy.limits]\n{k} = 0\n");
        assert!(
            err(&limit("memory-bytes")).contains("memory-bytes 0 is below one WebAssembly page")
        );
        assert!(err(&limit("decision-bytes")).contains("decision-bytes 0 is below 64"));
    }
}
