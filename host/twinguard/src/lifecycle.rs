//! The policy lifecycle: changes an operator makes while messages flow (push a new version,
//! roll back, remove a policy, change routes, reload from disk), each validated by building
//! the new generation before anything is activated or written.
//!
//! The config file stays the one source of truth. A change edits it in memory (keeping the
//! operator's comments and layout), builds and activates the generation from that text, and
//! only then replaces the file atomically. A change that fails leaves the active generation,
//! the file and the history as they were, and the error names the policy, file and cause.
//!
//! Pushed modules are kept content-addressed in `<state-dir>/modules/<sha256>.wasm` (with their
//! `.sig` when signed), and each policy's versions, newest first, in
//! `<state-dir>/history/<name>.json`: a rollback activates the previous one, byte for byte.
//!
//! ```no_run
//! use twinguard::lifecycle::Lifecycle;
//! use twinguard::Runtime;
//! let runtime = Runtime::from_config_file("twinguard.toml")?;
//! let lifecycle = Lifecycle::new(runtime, "twinguard.toml", "twinguard-state", 5)?;
//! let module = std::fs::read("pii_redact_v2.wasm")?;
//! let change = lifecycle.push("pii", &module, None)?;
//! println!("pii is now {:?} in generation {}", change.version, change.generation);
//! lifecycle.rollback("pii")?; // back to the version before
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shadow::ShadowReport;
use crate::{FileConfig, Runtime};

/// Why a change was refused. The active generation is unchanged in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// No such policy in the config.
    #[error("no policy named {0:?}")]
    NotFound(String),
    /// The request itself is wrong (empty module, bad name, nothing to roll back to).
    #[error("{0}")]
    Invalid(String),
    /// The new generation did not build: config, compile, contract version, signature, init.
    #[error("{what}: the new generation was not activated")]
    Rejected {
        /// The change attempted.
        what: String,
        /// Why it failed (file, policy, cause).
        #[source]
        cause: crate::Error,
    },
    /// Reading or writing the config file or the state directory failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The change would take policies off a route (or drop a route) and no waiver was given:
    /// switching enforcement off must be meant, and is logged when it is.
    #[error("{0}")]
    Unwaived(String),
    /// The config file is not valid TOML (it changed under us since it was checked).
    #[error("{}: not valid TOML", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error, with the position.
        #[source]
        source: toml_edit::TomlError,
    },
}

/// A change that is now active.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    /// The generation it created.
    pub generation: u64,
    /// The policy concerned, if one.
    pub policy: Option<String>,
    /// Its version now (SHA-256 of the module), if it still exists.
    pub version: Option<String>,
}

/// A policy as the lifecycle sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Its configured name.
    pub name: String,
    /// The active version (SHA-256 of the module).
    pub version: String,
    /// The module file.
    pub path: PathBuf,
    /// Versions kept for rollback, newest first; the first is the active one once the
    /// policy has been pushed at least once.
    pub history: Vec<String>,
    /// Its circuit breaker: policy-wide state and the devices it holds.
    pub breaker: BreakerInfo,
}

/// A policy's circuit breaker as the admin API shows it (see `twinguard_core::breaker`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BreakerInfo {
    /// Whether it is open for every device.
    pub open: bool,
    /// Faults among the policy's last 64 runs.
    pub recent_faults: u32,
    /// Faults since the policy was loaded.
    pub faults: u64,
    /// Messages evaluated since the policy was loaded.
    pub evaluations: u64,
    /// The devices it holds: their messages get the on-fault action without a run.
    pub held_devices: Vec<HeldInfo>,
}

/// One device a breaker holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldInfo {
    /// The device id.
    pub device: String,
    /// Faults among its last 16 messages when it was held.
    pub faults: u32,
    /// When, ms since the Unix epoch.
    pub since_ms: u64,
}

/// Counters of reloads and changes.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    /// Generations activated.
    pub activated: AtomicU64,
    /// Changes and reloads refused (the active generation kept).
    pub refused: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LifecycleStats {
    /// The last refusal's message.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Applies operator changes to a running [`Runtime`] (see the module documentation).
pub struct Lifecycle {
    runtime: Runtime,
    config_path: PathBuf,
    state_dir: PathBuf,
    keep: usize,
    /// One change at a time: each reads the file, builds, activates and writes it back.
    lock: Mutex<()>,
    stats: LifecycleStats,
}

impl Lifecycle {
    /// Manages `runtime`, built from `config_path`, keeping pushed modules and histories in
    /// `state_dir` (created if missing) and `keep` versions per policy (at least 2).
    pub fn new(
        runtime: Runtime,
        config_path: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        keep: usize,
    ) -> Result<Self, LifecycleError> {
        let state_dir = state_dir.into();
        for sub in ["modules", "history"] {
            let dir = state_dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        Ok(Self {
            runtime,
            config_path: config_path.into(),
            state_dir,
            keep: keep.max(2),
            lock: Mutex::new(()),
            stats: LifecycleStats::default(),
        })
    }

    /// The runtime it manages.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The config file it edits.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Counters.
    pub fn stats(&self) -> &LifecycleStats {
        &self.stats
    }

    /// Every active policy with its version, kept history and breaker.
    pub fn list(&self) -> Vec<PolicyInfo> {
        self.runtime
            .policies()
            .into_iter()
            .map(|p| PolicyInfo {
                history: self.history(&p.name),
                breaker: BreakerInfo {
                    open: p.breaker_open,
                    recent_faults: p.recent_faults,
                    faults: p.faults,
                    evaluations: p.evaluations,
                    held_devices: p
                        .held_devices
                        .iter()
                        .map(|h| HeldInfo {
                            device: h.device.clone(),
                            faults: h.faults,
                            since_ms: h.since_ms,
                        })
                        .collect(),
                },
                name: p.name,
                version: p.version,
                path: p.path,
            })
            .collect()
    }

    /// Closes `policy`'s breaker: every device it holds, or only `device`. An operator's
    /// decision, applied at once; nothing is written to the config.
    pub fn reset_breaker(
        &self,
        policy: &str,
        device: Option<&str>,
    ) -> Result<Change, LifecycleError> {
        check_name(policy)?;
        let found = match device {
            None => self.runtime.reset_breaker(policy),
            Some(device) => {
                if !self.runtime.policies().iter().any(|p| p.name == policy) {
                    false
                } else if self.runtime.release_device(policy, device) {
                    true
                } else {
                    return Err(LifecycleError::Invalid(format!(
                        "policy {policy:?} does not hold device {device:?}"
                    )));
                }
            }
        };
        if !found {
            return Err(LifecycleError::NotFound(policy.to_owned()));
        }
        tracing::info!(policy, device, "circuit breaker reset by the operator");
        Ok(Change {
            generation: self.runtime.policy_set().generation(),
            policy: Some(policy.to_owned()),
            version: None,
        })
    }

    /// Builds a generation from the config file as it is on disk and activates it: what the
    /// file watcher and `POST /v1/reload` do.
    pub fn reload_from_disk(&self) -> Result<Change, LifecycleError> {
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let what = format!("reload of {}", self.config_path.display());
        let config = FileConfig::from_file(&self.config_path)
            .map_err(|e| self.refused(&what, e))?
            .runtime;
        let generation = self
            .runtime
            .reload(&config)
            .map_err(|e| self.refused(&what, e))?;
        self.stats.activated.fetch_add(1, Ordering::Relaxed);
        Ok(Change {
            generation,
            policy: None,
            version: None,
        })
    }

    /// Makes `module` the new version of policy `name` (added, with an empty config, when the
    /// config has no such policy). `signature` is the content of its `.sig` file, kept next to
    /// it so `[signing]` can check it.
    pub fn push(
        &self,
        name: &str,
        module: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Change, LifecycleError> {
        check_module(name, module, "push of")?;
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut doc = self.read_doc()?;
        let current = policy_path(&doc, name).map(|p| self.resolve(&p));
        let mut history = self.history(name);
        // Every file this push writes, as it was: a refused push puts them all back.
        let mut undo = Undo::default();
        if history.is_empty() {
            // The version the operator configured becomes the first rollback target, copied
            // so that rolling back works even if that file is later overwritten.
            if let Some(path) = &current {
                if let Ok(bytes) = std::fs::read(path) {
                    let sig = std::fs::read(crate::signing::signature_path(path)).ok();
                    let stored = self.store_module(&bytes, sig.as_deref(), &mut undo);
                    history.push(undo.or_restore(stored)?);
                }
            }
        }
        let stored = self.store_module(module, signature, &mut undo);
        let digest = undo.or_restore(stored)?;
        set_policy_path(&mut doc, name, &self.module_path(&digest));
        let what = format!("push of {name:?} version {}", short(&digest));
        let activated = self.activate(&doc, &what);
        let generation = undo.or_restore(activated)?;
        history.retain(|d| *d != digest);
        history.insert(0, digest.clone());
        history.truncate(self.keep);
        self.write_history(name, &history)?;
        Ok(Change {
            generation,
            policy: Some(name.to_owned()),
            version: Some(digest),
        })
    }

    /// Activates the version of `name` before the current one, exactly as it was.
    pub fn rollback(&self, name: &str) -> Result<Change, LifecycleError> {
        check_name(name)?;
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut doc = self.read_doc()?;
        if policy_path(&doc, name).is_none() {
            return Err(LifecycleError::NotFound(name.to_owned()));
        }
        let mut history = self.history(name);
        if history.len() < 2 {
            return Err(LifecycleError::Invalid(format!(
                "rollback of {name:?}: no earlier version is kept (push a version first)"
            )));
        }
        let previous = history[1].clone();
        set_policy_path(&mut doc, name, &self.module_path(&previous));
        let what = format!("rollback of {name:?} to {}", short(&previous));
        let generation = self.activate(&doc, &what)?;
        history.remove(0);
        self.write_history(name, &history)?;
        Ok(Change {
            generation,
            policy: Some(name.to_owned()),
            version: Some(previous),
        })
    }

    /// Removes policy `name` and takes it out of every chain (a route whose chain empties
    /// stays, and forwards what it matches). When it sat in a chain, `waiver` must say why
    /// (see [`LifecycleError::Unwaived`]).
    pub fn remove(&self, name: &str, waiver: Option<&str>) -> Result<Change, LifecycleError> {
        check_name(name)?;
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut doc = self.read_doc()?;
        let before = enforcement(&doc);
        if !remove_policy(&mut doc, name) {
            return Err(LifecycleError::NotFound(name.to_owned()));
        }
        let what = format!("removal of {name:?}");
        self.waived(&what, &before, &doc, waiver)?;
        let generation = self.activate(&doc, &what)?;
        Ok(Change {
            generation,
            policy: Some(name.to_owned()),
            version: None,
        })
    }

    /// Replaces every route, in order. A change that takes a policy off a route's chain, or
    /// drops a route, needs a `waiver` saying why (see [`LifecycleError::Unwaived`]).
    pub fn set_routes(
        &self,
        routes: &[crate::RouteConfig],
        waiver: Option<&str>,
    ) -> Result<Change, LifecycleError> {
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut doc = self.read_doc()?;
        let before = enforcement(&doc);
        let mut array = toml_edit::ArrayOfTables::new();
        for route in routes {
            let mut t = toml_edit::Table::new();
            if !route.filter.is_empty() {
                t["filter"] = toml_edit::value(route.filter.as_str());
            }
            if let Some(class) = &route.class {
                t["class"] = toml_edit::value(class.as_str());
            }
            let mut names = toml_edit::Array::new();
            for n in &route.chain {
                names.push(n.as_str());
            }
            t["chain"] = toml_edit::value(names);
            array.push(t);
        }
        if array.is_empty() {
            doc.remove("route");
        } else {
            doc["route"] = toml_edit::Item::ArrayOfTables(array);
        }
        self.waived("route change", &before, &doc, waiver)?;
        let generation = self.activate(&doc, "route change")?;
        Ok(Change {
            generation,
            policy: None,
            version: None,
        })
    }

    /// Starts shadow mode for `name` with `module` as the candidate (see
    /// [`crate::shadow`]): it judges live traffic beside the active version, enforcing
    /// nothing. Replaces a candidate already running.
    pub fn shadow(
        &self,
        name: &str,
        module: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<ShadowReport, LifecycleError> {
        check_module(name, module, "candidate for")?;
        let _one = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut undo = Undo::default();
        let stored = self.store_module(module, signature, &mut undo);
        let digest = undo.or_restore(stored)?;
        let what = format!("candidate {} for {name:?}", short(&digest));
        // The file's [signing] applies to candidates as to everything else.
        let started = FileConfig::from_file(&self.config_path)
            .map_err(|e| self.refused(&what, e))
            .and_then(|config| {
                self.runtime
                    .start_shadow(name, &self.module_path(&digest), &config.runtime)
                    .map_err(|e| self.refused(&what, e))
            });
        undo.or_restore(started)?;
        tracing::info!("{what}: shadowing");
        self.shadow_report(name)
    }

    /// What the candidate for `name` has seen so far.
    pub fn shadow_report(&self, name: &str) -> Result<ShadowReport, LifecycleError> {
        match self.runtime.shadow_report() {
            Some(r) if r.policy == name => Ok(r),
            _ => Err(LifecycleError::NotFound(format!("{name} (no candidate)"))),
        }
    }

    /// Makes the candidate for `name` its active version (a push of the same module, with
    /// its validation and history), and ends the shadow.
    pub fn promote(&self, name: &str) -> Result<Change, LifecycleError> {
        let report = self.shadow_report(name)?;
        let path = self.module_path(&report.candidate_version);
        let module = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let signature = std::fs::read(crate::signing::signature_path(&path)).ok();
        let change = self.push(name, &module, signature.as_deref())?;
        self.runtime.stop_shadow();
        Ok(change)
    }

    /// Ends the shadow for `name` without changing anything; returns its last report.
    pub fn discard(&self, name: &str) -> Result<ShadowReport, LifecycleError> {
        self.shadow_report(name)?;
        self.runtime
            .stop_shadow()
            .ok_or_else(|| LifecycleError::NotFound(format!("{name} (no candidate)")))
    }

    /// Refuses a change that weakens a route unless `waiver` says why; logs it when it does.
    /// Signatures cover modules, not which routes run them: without this, emptying a chain
    /// would switch enforcement off under `require-signatures` with no signature involved.
    fn waived(
        &self,
        what: &str,
        before: &[(String, Vec<String>)],
        after: &toml_edit::DocumentMut,
        waiver: Option<&str>,
    ) -> Result<(), LifecycleError> {
        let weakened = weakened(before, &enforcement(after));
        if weakened.is_empty() {
            return Ok(());
        }
        let weakened = weakened.join("; ");
        match waiver.map(str::trim).filter(|w| !w.is_empty()) {
            Some(reason) => {
                let reason: String = reason.chars().take(200).collect();
                tracing::warn!(
                    reason = %twinguard_core::text::escape_controls(&reason),
                    "{what} removes enforcement on purpose: {weakened}"
                );
                Ok(())
            }
            None => {
                let e = LifecycleError::Unwaived(format!(
                    "{what} would remove enforcement ({weakened}); to mean it, give a reason: \
                     header x-twinguard-remove-enforcement (CLI: --remove-enforcement REASON)"
                ));
                self.note_refusal(e.to_string());
                Err(e)
            }
        }
    }

    /// Builds and activates the generation `doc` describes, then writes it to the file.
    fn activate(&self, doc: &toml_edit::DocumentMut, what: &str) -> Result<u64, LifecycleError> {
        let text = doc.to_string();
        let base = self.config_path.parent().unwrap_or_else(|| Path::new("."));
        let config = FileConfig::from_toml(&text, base)
            .map_err(|e| self.refused(what, e))?
            .runtime;
        let generation = self
            .runtime
            .reload(&config)
            .map_err(|e| self.refused(what, e))?;
        // Active now; the file follows, so a restart comes back to the same set. Should the
        // write fail, the error says so and the running set is still the new one.
        write_atomic(&self.config_path, text.as_bytes())?;
        self.stats.activated.fetch_add(1, Ordering::Relaxed);
        tracing::info!(generation, "{what}: activated");
        Ok(generation)
    }

    fn refused(&self, what: &str, cause: crate::Error) -> LifecycleError {
        let e = LifecycleError::Rejected {
            what: what.to_owned(),
            cause,
        };
        self.note_refusal(crate::error_chain(&e));
        e
    }

    fn note_refusal(&self, text: String) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!("{text}");
        *self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }

    fn read_doc(&self) -> Result<toml_edit::DocumentMut, LifecycleError> {
        let text =
            std::fs::read_to_string(&self.config_path).map_err(|e| io(&self.config_path, e))?;
        text.parse::<toml_edit::DocumentMut>()
            .map_err(|source| LifecycleError::Toml {
                path: self.config_path.clone(),
                source,
            })
    }

    /// A config path as the runtime resolves it (relative to the config's folder).
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.config_path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(p)
        } else {
            p.to_path_buf()
        }
    }

    fn module_path(&self, digest: &str) -> PathBuf {
        let path = self
            .state_dir
            .join("modules")
            .join(format!("{digest}.wasm"));
        std::path::absolute(&path).unwrap_or(path)
    }

    /// Stores a module (and its signature) by content, noting in `undo` what each file was;
    /// returns its digest.
    fn store_module(
        &self,
        bytes: &[u8],
        sig: Option<&[u8]>,
        undo: &mut Undo,
    ) -> Result<String, LifecycleError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.module_path(&digest);
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            undo.note(&path);
            write_atomic(&path, bytes)?;
        }
        let sig_file = crate::signing::signature_path(&path);
        undo.note(&sig_file);
        match sig {
            Some(sig) => write_atomic(&sig_file, sig)?,
            // A stale signature of other bytes cannot exist (the name is the digest), but an
            // unsigned push must not inherit one a signed push of the same bytes left. If the
            // push is refused, `undo` puts it back.
            None => {
                let _ = std::fs::remove_file(&sig_file);
            }
        }
        Ok(digest)
    }

    fn history_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("history").join(format!("{name}.json"))
    }

    fn history(&self, name: &str) -> Vec<String> {
        std::fs::read(self.history_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write_history(&self, name: &str, history: &[String]) -> Result<(), LifecycleError> {
        let text = serde_json::to_vec_pretty(history).unwrap_or_default();
        write_atomic(&self.history_path(name), &text)
    }
}

/// The files a change wrote, as they were before it: a refused change restores them, so that
/// refused means nothing changed (a refused unsigned re-push of the active module once
/// deleted its signature, and every later change under `require-signatures` failed).
#[derive(Default)]
struct Undo {
    /// Each file once, with its bytes before the change (`None`: it did not exist).
    before: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Undo {
    /// Remembers `path` as it is now, before its first write.
    fn note(&mut self, path: &Path) {
        if self.before.iter().all(|(p, _)| p != path) {
            self.before
                .push((path.to_path_buf(), std::fs::read(path).ok()));
        }
    }

    /// `result`, after putting every noted file back when it is an error.
    fn or_restore<T>(&mut self, result: Result<T, LifecycleError>) -> Result<T, LifecycleError> {
        if result.is_err() {
            for (path, bytes) in self.before.drain(..).rev() {
                let restored = match bytes {
                    Some(bytes) => write_atomic(&path, &bytes).err(),
                    None => std::fs::remove_file(&path)
                        .err()
                        .filter(|e| e.kind() != std::io::ErrorKind::NotFound)
                        .map(|e| io(&path, e)),
                };
                if let Some(e) = restored {
                    tracing::error!(
                        "cannot restore {} after a refused change: {e}",
                        path.display()
                    );
                }
            }
        }
        result
    }
}

fn check_name(name: &str) -> Result<(), LifecycleError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(LifecycleError::Invalid(format!(
            "policy name {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A pushed module's name and bytes, before anything is stored.
fn check_module(name: &str, module: &[u8], what: &str) -> Result<(), LifecycleError> {
    check_name(name)?;
    if module.is_empty() {
        return Err(LifecycleError::Invalid(format!(
            "{what} {name:?}: the module is empty"
        )));
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn io(path: &Path, source: std::io::Error) -> LifecycleError {
    LifecycleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes through a temporary file and a rename, so a reader (or a crash) sees the old
/// content or the new, never half of it. A symlink is written through (the file it points to
/// is replaced, the link stays), and the file keeps its mode and, where the process may, its
/// owner: a config can hold `[gateway] password`. A new file is readable by its owner only.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LifecycleError> {
    use std::io::Write;
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if is_link {
        std::fs::canonicalize(path).map_err(|e| io(path, e))?
    } else {
        path.to_path_buf()
    };
    let existing = std::fs::metadata(&target).ok();
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let mode = existing.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
            if let Some(m) = &existing {
                // Only root may give a file away; anyone else keeps the owner it has.
                let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = &existing;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, e)
    })
}

/// The `[[policy]]` tables of a config document.
fn policies_mut(doc: &mut toml_edit::DocumentMut) -> Option<&mut toml_edit::ArrayOfTables> {
    doc.get_mut("policy")?.as_array_of_tables_mut()
}

fn policy_path(doc: &toml_edit::DocumentMut, name: &str) -> Option<PathBuf> {
    doc.get("policy")?
        .as_array_of_tables()?
        .iter()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        .and_then(|t| t.get("path")?.as_str().map(PathBuf::from))
}

fn set_policy_path(doc: &mut toml_edit::DocumentMut, name: &str, path: &Path) {
    let path = path.to_string_lossy().into_owned();
    if let Some(policies) = policies_mut(doc) {
        if let Some(t) = policies
            .iter_mut()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        {
            t["path"] = toml_edit::value(path);
            return;
        }
    }
    let mut t = toml_edit::Table::new();
    t["name"] = toml_edit::value(name);
    t["path"] = toml_edit::value(path);
    match policies_mut(doc) {
        Some(policies) => policies.push(t),
        None => {
            let mut a = toml_edit::ArrayOfTables::new();
            a.push(t);
            doc["policy"] = toml_edit::Item::ArrayOfTables(a);
        }
    }
}

/// Removes the policy and its name from every chain; false when there was no such policy.
/// Each route's chain, keyed by what it matches, and the default chain.
fn enforcement(doc: &toml_edit::DocumentMut) -> Vec<(String, Vec<String>)> {
    let names = |item: Option<&toml_edit::Item>| -> Vec<String> {
        item.and_then(toml_edit::Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if let Some(routes) = doc.get("route").and_then(|r| r.as_array_of_tables()) {
        for r in routes {
            let mut key = String::from("route");
            if let Some(f) = r.get("filter").and_then(|f| f.as_str()) {
                key.push_str(&format!(" {f:?}"));
            }
            if let Some(c) = r.get("class").and_then(|c| c.as_str()) {
                key.push_str(&format!(" class {c:?}"));
            }
            out.push((key, names(r.get("chain"))));
        }
    }
    if let Some(chain) = doc.get("defaults").and_then(|d| d.get("chain")) {
        out.push(("the default chain".to_owned(), names(Some(chain))));
    }
    out
}

/// What `after` takes away from `before`: routes gone, policies gone from a chain.
fn weakened(before: &[(String, Vec<String>)], after: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, chain) in before {
        match after.iter().find(|(k, _)| k == key) {
            None if chain.is_empty() => {}
            None => out.push(format!("{key} dropped")),
            Some((_, now)) => {
                let lost: Vec<&str> = chain
                    .iter()
                    .filter(|p| !now.contains(p))
                    .map(String::as_str)
                    .collect();
                if !lost.is_empty() {
                    out.push(format!("{key} loses {}", lost.join(", ")));
                }
            }
        }
    }
    out
}

fn remove_policy(doc: &mut toml_edit::DocumentMut, name: &str) -> bool {
    let Some(policies) = policies_mut(doc) else {
        return false;
    };
    let Some(index) = policies
        .iter()
        .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
    else {
        return false;
    };
    policies.remove(index);
    if policies.is_empty() {
        doc.remove("policy");
    }
    let drop_name = |chain: &mut toml_edit::Item| {
        if let Some(a) = chain.as_array_mut() {
            a.retain(|v| v.as_str() != Some(name));
        }
    };
    if let Some(routes) = doc
        .get_mut("route")
        .and_then(|r| r.as_array_of_tables_mut())
    {
        for r in routes.iter_mut() {
            if let Some(chain) = r.get_mut("chain") {
                drop_name(chain);
            }
        }
    }
    if let Some(chain) = doc.get_mut("defaults").and_then(|d| d.get_mut("chain")) {
        drop_name(chain);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weakening_is_a_policy_off_a_chain_or_a_route_gone() {
        let doc = |text: &str| text.parse::<toml_edit::DocumentMut>().unwrap();
        let before = enforcement(&doc(
            "[defaults]\nchain = [\"a\"]\n[[route]]\nfilter = \"x/#\"\nchain = [\"a\", \"b\"]\n\
             [[route]]\nclass = \"meter\"\nchain = [\"c\"]\n",
        ));
        // Adding, reordering and adding routes weaken nothing.
        let stronger = enforcement(&doc(
            "[defaults]\nchain = [\"a\", \"d\"]\n[[route]]\nfilter = \"x/#\"\nchain = [\"b\", \"a\"]\n\
             [[route]]\nclass = \"meter\"\nchain = [\"c\"]\n[[route]]\nfilter = \"y/#\"\nchain = [\"a\"]\n",
        ));
        assert!(weakened(&before, &stronger).is_empty());
        let weaker = enforcement(&doc(
            "[defaults]\nchain = []\n[[route]]\nfilter = \"x/#\"\nchain = [\"b\"]\n",
        ));
        assert_eq!(
            weakened(&before, &weaker),
            [
                "route \"x/#\" loses a",
                "route class \"meter\" dropped",
                "the default chain loses a"
            ]
        );
    }

    const CONFIG: &str = r#"# operator's comment
[[policy]]
name = "a"   # keep me
path = "a.wasm"

[[policy]]
name = "b"
path = "b.wasm"

[defaults]
chain = ["a", "b"]

[[route]]
filter = "x/#"
chain = ["a", "b"]
"#;

    #[test]
    fn edits_keep_comments_and_touch_only_what_they_change() {
        let mut doc: toml_edit::DocumentMut = CONFIG.parse().unwrap();
        set_policy_path(&mut doc, "a", Path::new("/state/modules/ff.wasm"));
        let text = doc.to_string();
        assert!(text.contains("# operator's comment") && text.contains("# keep me"));
        assert_eq!(
            policy_path(&doc, "a").unwrap(),
            Path::new("/state/modules/ff.wasm")
        );
        assert_eq!(policy_path(&doc, "b").unwrap(), Path::new("b.wasm"));
        set_policy_path(&mut doc, "c", Path::new("c.wasm"));
        assert_eq!(policy_path(&doc, "c").unwrap(), Path::new("c.wasm"));

        assert!(remove_policy(&mut doc, "b"));
        assert!(!remove_policy(&mut doc, "b"));
        let text = doc.to_string();
        assert!(!text.contains("\"b\""), "{text}");
        assert!(text.contains("chain = [\"a\"]"), "{text}");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("pii-redact_v2.1").unwrap();
    }
}
