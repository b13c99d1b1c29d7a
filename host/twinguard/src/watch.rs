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
//! - What is reloaded is the policies and routes; other tables of the file (`[quarantine]`,
//!   `[alerts]`, `[gateway]`) are read by their owners at start-up only.
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
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::{error_chain as chain, Config, FileConfig, Runtime};

/// A running watcher. Dropping it stops the thread (within one interval) and joins it.
pub struct Watcher {
    runtime: Runtime,
    shared: Arc<Mutex<Counters>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
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
}

#[derive(Default)]
struct Counters {
    reloads: u64,
    failures: u64,
    last_error: Option<String>,
}

/// Size and modification time of each watched file (`None`: missing or unreadable).
type Fingerprint = Vec<Option<(u64, SystemTime)>>;

impl Watcher {
    /// Starts watching `config` (the file `runtime` was built from) and the policy files it
    /// names, checking every `interval`. The files as they are now are taken as the active
    /// generation's, so spawn it right after building the runtime.
    pub fn spawn(
        runtime: Runtime,
        config: impl Into<PathBuf>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let config = config.into();
        // The baseline is taken here, not on the thread: an edit made right after `spawn`
        // returns must count as a change.
        let paths = watched(
            &config,
            FileConfig::from_file(&config)
                .ok()
                .map(|f| f.runtime)
                .as_ref(),
        );
        let applied = fingerprint(&paths);
        let shared = Arc::new(Mutex::new(Counters::default()));
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("twinguard-watch".into())
            .spawn({
                let (runtime, shared) = (runtime.clone(), Arc::clone(&shared));
                let watch = Watch {
                    config,
                    paths,
                    applied,
                    interval,
                };
                move || watch.run(&runtime, &shared, &stopped)
            })?;
        Ok(Self {
            runtime,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The counters so far and the active generation.
    pub fn status(&self) -> WatchStatus {
        let c = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        WatchStatus {
            generation: self.runtime.policy_set().generation(),
            reloads: c.reloads,
            failures: c.failures,
            last_error: c.last_error.clone(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.stop.take();
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
}

impl Watch {
    fn run(mut self, runtime: &Runtime, shared: &Mutex<Counters>, stopped: &mpsc::Receiver<()>) {
        let mut pending: Option<Fingerprint> = None;
        loop {
            match stopped.recv_timeout(self.interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
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
            self.reload(runtime, shared);
        }
    }

    fn reload(&mut self, runtime: &Runtime, shared: &Mutex<Counters>) {
        let config_path = &self.config;
        let result = FileConfig::from_file(config_path).and_then(|file| {
            let config = file.runtime;
            // The new file may name other policy files: watch those from now on, even if
            // this reload fails (fixing a missing policy file must trigger a retry).
            self.paths = watched(config_path, Some(&config));
            runtime.reload(&config)
        });
        // Taken after the attempt: a failed state is not retried until something changes.
        self.applied = fingerprint(&self.paths);
        let mut c = shared.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(generation) => {
                c.reloads += 1;
                tracing::info!(config = %config_path.display(), generation, "policies reloaded");
            }
            Err(e) => {
                c.failures += 1;
                let message = format!("reloading {}: {}", config_path.display(), chain(&e));
                tracing::warn!("reload failed, the previous policies stay active: {message}");
                c.last_error = Some(message);
            }
        }
    }
}
