//! The whole config file: the runtime's part (`[[policy]]`, `[[route]]`, `[defaults]`,
//! `[engine]`, `[signing]`, see [`Config`]) plus the services' tables (`[gateway]`,
//! `[quarantine]`, `[alerts]`, `[admin]`, `[decision-log]`).
//!
//! The runtime's part is the core's [`Config`], so an embedder that needs no service reads
//! the same keys with the same errors; this type only adds the services' tables and resolves
//! their paths against the file's folder. A table whose feature is compiled out is refused by
//! name, never silently ignored.

#[cfg(feature = "gateway")]
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Config, Defaults, EngineConfig, Error, PolicyConfig, RouteConfig};

/// The whole config file: [`Config`] for the runtime, and the services' tables.
///
/// ```
/// let file = twinguard::FileConfig::from_toml(
///     r#"
///     [[policy]]
///     name = "pass"
///     path = "allow_all.wasm"
///     [[route]]
///     filter = "plant/#"
///     chain = ["pass"]
///     [quarantine]
///     path = "quarantine.db"
///     "#,
///     "/etc/twinguard",
/// )?;
/// assert_eq!(file.runtime.policies.len(), 1);
/// # #[cfg(feature = "store")]
/// assert_eq!(
///     file.quarantine.unwrap().path,
///     std::path::Path::new("/etc/twinguard/quarantine.db")
/// );
/// # Ok::<(), twinguard::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FileConfig {
    /// What the [`Runtime`](crate::Runtime) needs: policies, routes, defaults, engine, signing.
    pub runtime: Config,
    /// `twinguard serve`: the brokers and the topics it reads and writes there: one
    /// `[gateway]` table, or one `[[gateway]]` entry per broker.
    #[cfg(feature = "gateway")]
    pub gateways: Vec<crate::gateway::GatewayConfig>,
    /// `twinguard serve` scaled out: the NATS JetStream cluster it shares partitions of
    /// (`[nats]`; see [`crate::nats`]).
    #[cfg(feature = "nats")]
    pub nats: Option<crate::nats::NatsConfig>,
    /// Where quarantined messages are kept (`serve` and the Mosquitto plugin need it).
    #[cfg(feature = "store")]
    pub quarantine: Option<crate::store::QuarantineConfig>,
    /// Where policies' state is kept across restarts (`[state]`; by default beside the
    /// quarantine store).
    #[cfg(feature = "store")]
    pub state: Option<crate::state::StateConfig>,
    /// Where security events go besides the outcome (file, syslog).
    #[cfg(feature = "alerts")]
    pub alerts: Option<crate::alerts::AlertsConfig>,
    /// `twinguard serve`: the admin API (HTTPS) and where pushed modules are kept.
    #[cfg(feature = "admin")]
    pub admin: Option<crate::admin::AdminConfig>,
    /// The hash-chained log of every decision (`[decision-log]`; see `docs/decision-log.md`).
    #[cfg(all(feature = "store", feature = "alerts"))]
    pub decision_log: Option<crate::decision_log::DecisionLogConfig>,
    /// Metrics and health endpoints (`[telemetry]`; see `docs/metrics.md`).
    #[cfg(feature = "telemetry")]
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
}

/// The file as serde reads it: the core's tables field by field (so unknown keys and their
/// positions are reported as the core reports them) and the services' tables.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct Raw {
    defaults: Defaults,
    engine: EngineConfig,
    #[serde(rename = "policy")]
    policies: Vec<PolicyConfig>,
    #[serde(rename = "route")]
    routes: Vec<RouteConfig>,
    signing: crate::signing::SigningConfig,
    registry: Option<crate::registry::RegistryConfig>,
    #[cfg(feature = "gateway")]
    #[serde(rename = "gateway", deserialize_with = "crate::gateway::one_or_many")]
    gateways: Vec<crate::gateway::GatewayConfig>,
    #[cfg(feature = "nats")]
    nats: Option<crate::nats::NatsConfig>,
    #[cfg(feature = "store")]
    quarantine: Option<crate::store::QuarantineConfig>,
    #[cfg(feature = "store")]
    state: Option<crate::state::StateConfig>,
    #[cfg(feature = "alerts")]
    alerts: Option<crate::alerts::AlertsConfig>,
    #[cfg(feature = "admin")]
    admin: Option<crate::admin::AdminConfig>,
    #[cfg(all(feature = "store", feature = "alerts"))]
    decision_log: Option<crate::decision_log::DecisionLogConfig>,
    #[cfg(feature = "telemetry")]
    telemetry: Option<crate::telemetry::TelemetryConfig>,
}

impl FileConfig {
    /// Reads and validates a config file; every relative path becomes relative to the file's
    /// folder.
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

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: impl AsRef<Path>) -> Result<Self, Error> {
        Self::parse(text, base.as_ref(), "<inline>")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Self, Error> {
        let invalid = |message: String| Error::Config {
            origin: origin.to_string(),
            message,
        };
        let raw: Raw =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().into()))?;
        let runtime = Config {
            defaults: raw.defaults,
            engine: raw.engine,
            policies: raw.policies,
            routes: raw.routes,
            signing: raw.signing,
            registry: raw.registry,
        }
        .resolved(base, origin)?;
        #[allow(unused_mut)] // which tables exist depends on the features
        let mut file = Self {
            runtime,
            #[cfg(feature = "gateway")]
            gateways: raw.gateways,
            #[cfg(feature = "nats")]
            nats: raw.nats,
            #[cfg(feature = "store")]
            quarantine: raw.quarantine,
            #[cfg(feature = "store")]
            state: raw.state,
            #[cfg(feature = "alerts")]
            alerts: raw.alerts,
            #[cfg(feature = "admin")]
            admin: raw.admin,
            #[cfg(all(feature = "store", feature = "alerts"))]
            decision_log: raw.decision_log,
            #[cfg(feature = "telemetry")]
            telemetry: raw.telemetry,
        };
        file.rebase(base);
        file.validate().map_err(invalid)?;
        Ok(file)
    }

    /// Every file a service table names is relative to the config's folder.
    fn rebase(&mut self, base: &Path) {
        #[allow(unused)] // unused when every service is compiled out
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        #[cfg(feature = "gateway")]
        for tls in self.gateways.iter_mut().filter_map(|g| g.tls.as_mut()) {
            rebase(&mut tls.ca);
            tls.cert.as_mut().map(rebase);
            tls.key.as_mut().map(rebase);
        }
        #[cfg(feature = "nats")]
        if let Some(tls) = self.nats.as_mut().and_then(|n| n.tls.as_mut()) {
            rebase(&mut tls.ca);
            tls.cert.as_mut().map(rebase);
            tls.key.as_mut().map(rebase);
        }
        #[cfg(feature = "store")]
        if let Some(q) = self.quarantine.as_mut() {
            rebase(&mut q.path);
        }
        #[cfg(feature = "store")]
        if let Some(p) = self.state.as_mut().and_then(|s| s.path.as_mut()) {
            rebase(p);
        }
        #[cfg(feature = "alerts")]
        if let Some(file) = self.alerts.as_mut().and_then(|a| a.file.as_mut()) {
            rebase(file);
        }
        #[cfg(feature = "admin")]
        if let Some(admin) = self.admin.as_mut() {
            rebase(&mut admin.cert);
            rebase(&mut admin.key);
            admin.client_ca.as_mut().map(rebase);
            admin.token_file.as_mut().map(rebase);
            rebase(&mut admin.state_dir);
        }
        #[cfg(all(feature = "store", feature = "alerts"))]
        if let Some(log) = self.decision_log.as_mut() {
            rebase(&mut log.path);
        }
    }

    /// Checks the services' tables (the runtime's part was checked by [`Config::resolved`]).
    fn validate(&self) -> Result<(), String> {
        #[cfg(feature = "gateway")]
        {
            let mut names = HashSet::new();
            for g in &self.gateways {
                let named = |e: crate::Invalid| {
                    let e = String::from(e);
                    if self.gateways.len() > 1 {
                        format!("gateway {:?}: {e}", g.name())
                    } else {
                        e
                    }
                };
                g.validate().map_err(named)?;
                if !names.insert(g.name()) {
                    return Err(format!(
                        "gateway {:?}: two gateways share this name (set name = \"…\" on each; \
                         quarantined records use it to find their broker again)",
                        g.name()
                    ));
                }
            }
        }
        #[cfg(feature = "nats")]
        if let Some(n) = &self.nats {
            n.validate().map_err(String::from)?;
        }
        #[cfg(feature = "alerts")]
        if let Some(a) = &self.alerts {
            a.validate()?;
        }
        #[cfg(feature = "admin")]
        if let Some(a) = &self.admin {
            a.validate()?;
        }
        #[cfg(all(feature = "store", feature = "alerts"))]
        if let Some(log) = &self.decision_log {
            log.validate()?;
        }
        #[cfg(feature = "telemetry")]
        if let Some(t) = &self.telemetry {
            t.validate()?;
        }
        Ok(())
    }
}
