//! Hot reload by polling: a thread that watches a config file and every policy file it names,
//! and reloads the [`Runtime`] when they change.
//!
//! Polling (size and modification time, every `interval`) rather than inotify: it works on
//! every file system, in containers and on bind mounts, costs one `stat` per file per
//! interval, and sees a policy replaced by `cp` or by an atomic `mv` alike.
//!
//! - **Debounced**: a change is acted on only once the files have stayed the same for one
//!   more interval, so a file caught half-written is not loaded.
//! - **Last good generation wins**: the new config is parsed with [`FileConfig::from_file`] and
//!   applied with [`Runtime::reload`], which compiles everything before swapping. On any error
//!   the active generation stays, the error is logged (`tracing`, warn) and counted in
//!   [`WatchStatus`], and the files are not retried until they change again.
//! - The evaluating threads see only the swap: the compile happens on the watcher's thread.
//! - What is reloaded is the policies and routes; the service tables of the file
//!   (`[gateway]`, `[quarantine]`, `[alerts]`, `[admin]`) are read by their owners at start-up
//!   only. A reload compares them with the ones the process started with ([`ServiceTables`])
//!   and warns, naming them, that their edits take effect after a restart (while policies and
//!   routes still reload); [`WatchStatus::restart_needed`] lists them too.
//! - [`Watcher::reload`] reloads on demand (`twinguard serve` on SIGHUP), on the watcher's
//!   thread and by the same steps.
//!
//! ```no_run
//! use std::time::Duration;
//! use twinguard::{watch::Watcher, Runtime};
//!
//! let runtime = Runtime::from_config_file("twinguard.toml")?;
//! let watcher = Watcher::spawn(runtime.clone(), "twinguard.toml", Duration::from_secs(1))?;
//! // ... evaluate with `runtime`; edits to the files take effect within about two intervals.
//! println!("generation {}", watcher.status().generation);
//! drop(watcher); // stops and joins the thread
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::{error_chain as chain, Config, FileConfig, Runtime};

/// A running watcher. Dropping it stops the thread (within one interval) and joins it.
pub struct Watcher {
    runtime: Runtime,
    shared: Arc<Shared>,
    /// Closing it stops the thread; a request asks for a reload now.
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// A reload asked for by the process (a signal), answered with its result.
struct Request {
    trigger: String,
    reply: mpsc::Sender<Result<u64, String>>,
}

/// The tables of a config file that their services read once, at start-up: `[gateway]`,
/// `[quarantine]`, `[alerts]` and `[admin]` (those compiled in). A reload applies policies and
/// routes only; comparing these with the ones a process started with tells which edits wait
/// for a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTables {
    #[cfg(feature = "gateway")]
    gateways: Vec<crate::gateway::GatewayConfig>,
    // The types below live with their services and are compared by their Debug text, which
    // shows every field.
    #[cfg(feature = "store")]
    quarantine: Option<String>,
    #[cfg(feature = "store")]
    state: Option<String>,
    #[cfg(feature = "alerts")]
    alerts: Option<String>,
    #[cfg(feature = "admin")]
    admin: Option<String>,
}

impl ServiceTables {
    /// The service tables of `file`.
    pub fn of(file: &FileConfig) -> Self {
        // Without any service feature, `file` has nothing to read.
        let _ = file;
        Self {
            #[cfg(feature = "gateway")]
            gateways: file.gateways.clone(),
            #[cfg(feature = "store")]
            quarantine: file.quarantine.as_ref().map(|q| format!("{q:?}")),
            #[cfg(feature = "store")]
            state: file.state.as_ref().map(|s| format!("{s:?}")),
            #[cfg(feature = "alerts")]
            alerts: file.alerts.as_ref().map(|a| format!("{a:?}")),
            #[cfg(feature = "admin")]
            admin: file.admin.as_ref().map(|a| format!("{a:?}")),
        }
    }

    /// The tables that differ in `now`, named as in the file (`[gateway]`, `[quarantine]`,
    /// `[state]`, `[alerts]`, `[admin]`); empty when none does.
    pub fn changed(&self, now: &Self) -> Vec<&'static str> {
        let _ = now;
        #[allow(unused_mut)]
        let mut changed = Vec::new();
        #[cfg(feature = "gateway")]
        if self.gateways != now.gateways {
            changed.push("[gateway]");
        }
        #[cfg(feature = "store")]
        if self.quarantine != now.quarantine {
            changed.push("[quarantine]");
        }
        #[cfg(feature = "store")]
        if self.state != now.state {
            changed.push("[state]");
        }
        #[cfg(feature = "alerts")]
        if self.alerts != now.alerts {
            changed.push("[alerts]");
        }
        #[cfg(feature = "admin")]
        if self.admin != now.admin {
            changed.push("[admin]");
        }
        changed
    }
}

/// What the watcher has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    /// The runtime's active generation.
    pub generation: u64,
    /// Reloads that succeeded.
    pub reloads: u64,
    /// Reload attempts that failed (the previous generation stayed active).
    pub failures: u64,
    /// The error of the latest failure, with the file it concerns.
    pub last_error: Option<String>,
    /// Service tables of the file as last read that differ from the ones at start (see
    /// [`ServiceTables::changed`]): their edits take effect after a restart.
    pub restart_needed: Vec<&'static str>,
}

/// What the watcher's thread reports to the [`Watcher`].
#[derive(Default)]
struct Shared {
    counters: Mutex<Counters>,
    /// Reload attempts so far, bumped under `counters`' lock with each attempt's result: a
    /// poller reads it without the lock and asks for [`Watcher::status`] (which takes the lock,
    /// so it sees that result) only when it moved.
    attempts: AtomicU64,
}

#[derive(Default)]
struct Counters {
    reloads: u64,
    failures: u64,
    last_error: Option<String>,
    restart_needed: Vec<&'static str>,
}

/// Size and modification time of each watched file (`None`: missing or unreadable).
type Fingerprint = Vec<Option<(u64, SystemTime)>>;

impl Watcher {
    /// Starts watching `config` (the file `runtime` was built from) and the policy files it
    /// names, checking every `interval`. The files as they are now are taken as the active
    /// generation's, so spawn it right after building the runtime. So are its service tables
    /// (a process that has read the file already passes what it read: [`Self::spawn_from`]).
    pub fn spawn(
        runtime: Runtime,
        config: impl Into<PathBuf>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let config = config.into();
        let file = FileConfig::from_file(&config).ok();
        Self::start(runtime, config, file.as_ref(), interval)
    }

    /// [`Self::spawn`] for a process that started its services from `started` (the file it
    /// read at start-up): a reload warns when the file's service tables differ from those.
    pub fn spawn_from(
        runtime: Runtime,
        config: impl Into<PathBuf>,
        started: &FileConfig,
        interval: Duration,
    ) -> std::io::Result<Self> {
        Self::start(runtime, config.into(), Some(started), interval)
    }

    fn start(
        runtime: Runtime,
        config: PathBuf,
        started: Option<&FileConfig>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        // The baseline is taken here, not on the thread: an edit made right after `spawn`
        // returns must count as a change.
        let paths = watched(&config, started.map(|f| &f.runtime));
        let applied = fingerprint(&paths);
        let shared = Arc::new(Shared::default());
        let (requests, received) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("twinguard-watch".into())
            .spawn({
                let (runtime, shared) = (runtime.clone(), Arc::clone(&shared));
                let watch = Watch {
                    config,
                    paths,
                    applied,
                    interval,
                    services: started.map(ServiceTables::of),
                };
                move || watch.run(&runtime, &shared, &received)
            })?;
        Ok(Self {
            runtime,
            shared,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Reloads now, on the watcher's thread, as a change of the files would (the config is
    /// read again, policies and routes are applied, a broken file keeps the last good
    /// generation, changed service tables are warned about), and logs the result with
    /// `trigger` (e.g. `SIGHUP`). Blocks until done; returns the new generation, or the error.
    pub fn reload(&self, trigger: &str) -> Result<u64, String> {
        let (reply, answer) = mpsc::channel();
        let sent = self.requests.as_ref().is_some_and(|r| {
            r.send(Request {
                trigger: trigger.to_owned(),
                reply,
            })
            .is_ok()
        });
        if !sent {
            return Err("the config watcher has stopped".into());
        }
        answer
            .recv()
            .unwrap_or_else(|_| Err("the config watcher has stopped".into()))
    }

    /// Reload attempts so far, succeeded or failed, read without a lock: a caller that polls
    /// often (a broker's every tick) asks for [`status`](Self::status) only when it moved.
    pub fn attempts(&self) -> u64 {
        self.shared.attempts.load(Ordering::Acquire)
    }

    /// The counters so far and the active generation.
    pub fn status(&self) -> WatchStatus {
        let c = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        WatchStatus {
            generation: self.runtime.policy_set().generation(),
            reloads: c.reloads,
            failures: c.failures,
            last_error: c.last_error.clone(),
            restart_needed: c.restart_needed.clone(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The config file first, then each policy's component.
fn watched(config_path: &Path, config: Option<&Config>) -> Vec<PathBuf> {
    let mut paths = vec![config_path.to_path_buf()];
    if let Some(c) = config {
        paths.extend(c.policies.iter().map(|p| p.path.clone()));
        // A signature that arrives after its module, or a rotated key, must trigger a reload
        // too (a missing file fingerprints as absent, so its arrival is a change).
        paths.extend(
            c.policies
                .iter()
                .map(|p| crate::signing::signature_path(&p.path)),
        );
        paths.extend(c.signing.trusted_keys.iter().cloned());
        // The registry: an operator's export from the asset inventory, edited live.
        paths.extend(c.registry.iter().map(|r| r.path.clone()));
    }
    paths
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

/// The watcher thread's state.
struct Watch {
    config: PathBuf,
    /// The config file and the policy files of the last config that parsed.
    paths: Vec<PathBuf>,
    /// The files as they were at the last reload attempt (or at the start).
    applied: Fingerprint,
    interval: Duration,
    /// The service tables the process started with (`None`: the file did not parse then).
    services: Option<ServiceTables>,
}

impl Watch {
    fn run(mut self, runtime: &Runtime, shared: &Shared, requests: &mpsc::Receiver<Request>) {
        let mut pending: Option<Fingerprint> = None;
        loop {
            match requests.recv_timeout(self.interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(request) => {
                    pending = None;
                    let result = self.reload(runtime, shared, &request.trigger);
                    let _ = request.reply.send(result);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = fingerprint(&self.paths);
            if now == self.applied {
                pending = None;
                continue;
            }
            // Debounce: act only on a state seen twice in a row, one interval apart.
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            pending = None;
            // The result is logged and counted; nobody waits for it.
            let _ = self.reload(runtime, shared, "file change");
        }
    }

    fn reload(&mut self, runtime: &Runtime, shared: &Shared, trigger: &str) -> Result<u64, String> {
        let config_path = &self.config;
        let mut restart_needed = None;
        // The files as this attempt reads them, each taken before it is read: an edit made
        // while a (slow) reload runs differs from it, so the next poll reloads again. Taken
        // after the attempt, such an edit was recorded as applied and never loaded.
        let config_print = fingerprint(std::slice::from_ref(config_path));
        let mut read: Option<Fingerprint> = None;
        let result = FileConfig::from_file(config_path).and_then(|file| {
            if let Some(started) = &self.services {
                let changed = started.changed(&ServiceTables::of(&file));
                if !changed.is_empty() {
                    tracing::warn!(
                        config = %config_path.display(),
                        "{} changed: takes effect after a restart (only policies and routes \
                         reload; the running services keep the settings they started with)",
                        changed.join(", ")
                    );
                }
                restart_needed = Some(changed);
            }
            let config = file.runtime;
            // The new file may name other policy files: watch those from now on, even if
            // this reload fails (fixing a missing policy file must trigger a retry).
            self.paths = watched(config_path, Some(&config));
            read = Some(fingerprint(&self.paths));
            runtime.reload(&config)
        });
        // A failed state is not retried until something changes.
        let mut applied = read.unwrap_or_else(|| fingerprint(&self.paths));
        if let (Some(first), Some(config)) = (applied.first_mut(), config_print.into_iter().next())
        {
            *first = config;
        }
        self.applied = applied;
        let mut c = shared
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tables) = restart_needed {
            c.restart_needed = tables;
        }
        // Under the lock: a poller that sees the new count then waits for it in `status`.
        shared.attempts.fetch_add(1, Ordering::Release);
        match result {
            Ok(generation) => {
                c.reloads += 1;
                tracing::info!(config = %config_path.display(), generation, trigger, "policies reloaded");
                Ok(generation)
            }
            Err(e) => {
                c.failures += 1;
                let message = format!("reloading {}: {}", config_path.display(), chain(&e));
                tracing::warn!(
                    "reload on {trigger} failed, the previous policies stay active: {message}"
                );
                c.last_error = Some(message.clone());
                Err(message)
            }
        }
    }
}

#[cfg(all(test, feature = "gateway"))]
mod tests {
    use super::*;

    fn tables(extra: &str) -> ServiceTables {
        let text = format!(
            "[gateway]\nbroker = \"mqtt://h:1883\"\nclient-id = \"tg\"\n{extra}\n\
             [[gateway.input]]\nfilter = \"d/+\"\ntemplate = \"d/{{device}}\"\noutput = \"t/{{device}}\"\n\
             [quarantine]\npath = \"q.db\"\n[alerts]\ndedup-window-ms = 0\n"
        );
        ServiceTables::of(&FileConfig::from_toml(&text, ".").unwrap())
    }

    #[test]
    fn changed_service_tables_are_named() {
        let started = tables("");
        assert!(started.changed(&tables("")).is_empty());
        assert_eq!(started.changed(&tables("inflight = 8")), ["[gateway]"]);
        let with_state = |extra: &str| {
            let text = format!("[quarantine]\npath = \"q.db\"\n{extra}");
            ServiceTables::of(&FileConfig::from_toml(&text, ".").unwrap())
        };
        assert_eq!(
            with_state("").changed(&with_state("[state]\npersist = false\n")),
            ["[state]"]
        );
        let both = FileConfig::from_toml(
            "[gateway]\nbroker = \"mqtt://h:1883\"\nclient-id = \"tg\"\nmax-message-bytes = 9\n\
             [[gateway.input]]\nfilter = \"d/+\"\ntemplate = \"d/{device}\"\noutput = \"t/{device}\"\n\
             [quarantine]\npath = \"q.db\"\n[alerts]\ndedup-window-ms = 5\n",
            ".",
        )
        .unwrap();
        assert_eq!(
            started.changed(&ServiceTables::of(&both)),
            ["[gateway]", "[alerts]"]
        );
        let none = ServiceTables::of(&FileConfig::from_toml("", ".").unwrap());
        assert_eq!(
            started.changed(&none),
            ["[gateway]", "[quarantine]", "[alerts]"]
        );
    }
}
