//! What policies remember, kept across restarts: per-device state (`state-set`), policy-wide
//! state (`global-*`) and the last forwarded values (`keep-last`), in one SQLite file.
//!
//! [`StateDb`] is the runtime's [`StateJournal`]: every change is queued on the evaluating
//! thread (no lock, no I/O) and written by one writer thread, which group-commits, whether
//! or not anyone waits: what queues within 5 ms of the first change goes into one commit,
//! each row written once however often it changed. Two barriers let a front end acknowledge
//! a message only once its state is committed, and end the 5 ms early: [`StateDb::sync`] (the
//! changes the calling thread made; [`Judge::with_state`] calls it after every evaluation
//! that changed something) and [`StateDb::after_commit`] (everything queued so far; the
//! gateway's acknowledging task waits on it once per batch). Whether a front end waits at
//! all is `[state] ack-after-commit` (see [`StateConfig::ack_after_commit`]).
//!
//! # What survives what
//!
//! WAL mode, `synchronous = NORMAL`: a commit is written to the WAL file before `sync`
//! returns, so the state of every acknowledged message survives the process being killed
//! (`kill -9`, a panic, an OOM kill). A power loss or kernel crash can lose the last commits
//! before the WAL is fsynced (at each checkpoint); an fsync per message would cost more than
//! the evaluation (`BENCHMARKS.md`), and the quarantine store, which holds the messages
//! themselves, does fsync every commit.
//!
//! If the file cannot be written (disk full, removed), messages still flow: the state in
//! memory is whole, only a restart before the file takes writes again would forget it. The
//! failure is logged (at most every ten seconds) and counted in
//! [`StateDbStats::failed_commits`]; the changes it carried are kept, one per key (the latest),
//! and written with the next commit or a retry a second later, so the file catches up once it
//! can be written.
//!
//! [`Judge::with_state`]: crate::judge::Judge::with_state

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};
use serde::Deserialize;

use crate::{Runtime, Scope, StateChange, StateJournal};

/// `[state]`: where `serve` and the Mosquitto plugin keep policies' state across restarts.
///
/// ```toml
/// [state]
/// path = "state.db"   # default: beside the quarantine store, "<its name>.state.db"
/// persist = true      # false: state lives in memory only, and a restart forgets it
/// ack-after-commit = true  # default: true for serve, false for the plugin
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StateConfig {
    /// The SQLite file; relative to the config file's folder.
    pub path: Option<PathBuf>,
    /// Whether state is kept at all (default `true`).
    #[serde(default = "yes")]
    pub persist: bool,
    /// Whether a message is acknowledged only once the state its judging changed is committed.
    /// Unset: yes for `serve` (one commit covers a batch of acknowledgements), no for the
    /// Mosquitto plugin (each message would wait on the broker's thread: `BENCHMARKS.md`).
    /// Without the wait the writer still commits every 5 ms while changes come, so a killed
    /// process forgets only what changed in its last moments.
    pub ack_after_commit: Option<bool>,
}

fn yes() -> bool {
    true
}

impl StateConfig {
    /// Whether a front end waits for state commits before acknowledging: `[state]
    /// ack-after-commit`, else the front end's `default`.
    pub fn acks_after_commit(config: Option<&Self>, default: bool) -> bool {
        config.and_then(|c| c.ack_after_commit).unwrap_or(default)
    }

    /// The file state goes to, given the quarantine store's file (`None`: not persisted).
    pub fn file(config: Option<&Self>, quarantine: &Path) -> Option<PathBuf> {
        match config {
            Some(c) if !c.persist => None,
            Some(Self { path: Some(p), .. }) => Some(p.clone()),
            _ => Some(quarantine.with_extension("state.db")),
        }
    }
}

/// The schema this build writes and reads (SQLite's `user_version`); a newer file is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// The most changes one commit carries, so that a burst is committed in a few steps and the
/// first waiting caller is not held behind an unbounded batch.
const MAX_BATCH: usize = 4096;

/// How long the writer gathers changes after the first one of a commit, unless someone waits
/// for the commit. A steady flow then costs one commit per this long, and a row changed many
/// times in it (a device's last sequence number) is written once. Committing whatever had
/// queued each time the writer woke cost a commit per few messages; on a busy machine that CPU
/// came out of the evaluating threads' share (BENCHMARKS.md). A caller that waits, through
/// [`StateDb::sync`] or [`StateDb::after_commit`], wakes the writer at once.
const GATHER: Duration = Duration::from_millis(5);

/// Changes that end the gathering early: every this many queued wakes the writer, which
/// commits once it holds this many (so a burst is committed at least every twice this many).
/// A commit costs ~55 µs plus ~1 µs per row (the state bench's writer alone, BENCHMARKS.md),
/// so past this many the fixed part is under a third and waiting saves little, while
/// committing now overlaps the commit with the threads still queueing.
const ENOUGH: usize = 128;

/// How long a failed commit's changes wait for a retry when nothing else is queued.
const RETRY: Duration = Duration::from_secs(1);

/// One row of the file: scope, policy, device, key.
type RowKey = (u8, Box<str>, Box<str>, Box<str>);

const SCHEMA: &str = "
CREATE TABLE state (
    -- 0: a policy's per-device state; 1: policy-wide; 2: a device's last forwarded value.
    scope INTEGER NOT NULL,
    policy TEXT NOT NULL,   -- '' for last values
    device TEXT NOT NULL,   -- '' for policy-wide state
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (scope, policy, device, key)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// Why the state file could not be opened, read or written; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDbError {
    /// SQLite refused an operation.
    #[error("state file {}: {op}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer twinguard, or is not a state file.
    #[error("state file {}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file could not be created.
    #[error("state file {}: cannot create: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
    /// A commit failed, or the writer thread has stopped; the message says which.
    #[error("state file {}: {detail}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// What [`StateDb::restore`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries handed to the runtime.
    pub entries: u64,
    /// Entries this build cannot read (a last value in an unknown encoding), left out.
    pub skipped: u64,
}

/// What the writer did since the file was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateDbStats {
    /// Changes written.
    pub changes: u64,
    /// Commits (each carries one batch of changes).
    pub commits: u64,
    /// Commits that failed; their changes are retried with the next commit.
    pub failed_commits: u64,
}

/// The state file and its writer thread: hand it to
/// [`RuntimeBuilder::journal`](crate::RuntimeBuilder::journal), then [`restore`](Self::restore)
/// into the runtime before traffic flows. Clones share the file and the writer; the writer
/// commits what is queued and stops when the last clone (and the runtime's) is dropped.
///
/// ```no_run
/// use std::sync::Arc;
/// use twinguard::state::StateDb;
/// use twinguard::{Config, Runtime};
///
/// let db = StateDb::open("state.db")?;
/// let runtime = Runtime::builder(Config::from_file("twinguard.toml")?)
///     .journal(Arc::new(db.clone()))
///     .build()?;
/// let restored = db.restore(&runtime)?;
/// println!("{} entries restored", restored.entries);
/// // ... evaluate a message, then, before acknowledging it:
/// db.sync()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StateDb {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Tells this file apart in a thread's list of files it has unsynced changes for.
    id: u64,
    /// `Sender` is `Sync`: every thread sends through it without a lock, and one thread's
    /// sends arrive in the order it made them. `None` only while dropping.
    queue: Option<Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    /// Changes queued since the file was opened, counted after each is sent.
    queued: AtomicU64,
}

#[derive(Default)]
struct Stats {
    changes: AtomicU64,
    commits: AtomicU64,
    failed: AtomicU64,
}

enum Op {
    Put {
        scope: u8,
        policy: Box<str>,
        device: Box<str>,
        key: Box<str>,
        value: Option<Box<[u8]>>,
    },
    /// Answered once every change queued before it is committed.
    Barrier(Answer),
}

type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The files this thread queued changes for since its last `sync` of each.
    static UNSYNCED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl StateDb {
    /// Opens (or creates, readable by its owner only) the state file and starts its writer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateDbError> {
        let path = path.as_ref();
        let conn = open_file(path, true)?;
        let (queue, ops) = mpsc::channel();
        let stats = Arc::new(Stats::default());
        let writer = {
            let (file, stats) = (path.to_path_buf(), stats.clone());
            std::thread::Builder::new()
                .name("twinguard-state".into())
                .spawn(move || write_loop(conn, &file, &ops, &stats))
                .map_err(|e| StateDbError::Write {
                    path: path.to_path_buf(),
                    detail: format!("cannot start the writer thread: {e}"),
                })?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                queue: Some(queue),
                writer: Some(writer),
                stats,
                queued: AtomicU64::new(0),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Puts everything this file holds back into `runtime` (see
    /// [`Runtime::restore_state`]). Call it before the first message.
    pub fn restore(&self, runtime: &Runtime) -> Result<Restored, StateDbError> {
        restore_from(&self.inner.path, runtime)
    }

    /// Returns once every change the calling thread queued is committed; at once when it
    /// queued none. Front ends call it after evaluating and before acknowledging.
    pub fn sync(&self) -> Result<(), StateDbError> {
        let id = self.inner.id;
        let unsynced = UNSYNCED.with_borrow_mut(|ids| match ids.iter().position(|i| *i == id) {
            Some(at) => {
                ids.swap_remove(at);
                true
            }
            None => false,
        });
        if !unsynced {
            return Ok(());
        }
        self.sync_all()
    }

    /// Returns once every change queued so far, by any thread, is committed: [`sync`]
    /// for changes other threads made (a message judged on another thread and handed over).
    ///
    /// [`sync`]: Self::sync
    pub fn sync_all(&self) -> Result<(), StateDbError> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.after_commit(move |result| {
            let _ = answer.send(result);
        });
        answered
            .recv()
            .unwrap_or_else(|_| Err(self.write_error("the writer thread has stopped".into())))
    }

    /// Changes queued since the file was opened, by every thread. A front end that
    /// acknowledges in batches skips [`after_commit`](Self::after_commit) when it is the
    /// figure its last commit covered: nothing new to wait for.
    pub fn queued(&self) -> u64 {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// Calls `done` once every change queued so far, by any thread, is committed (or the
    /// commit failed), on the writer thread: keep it short. What a front end that
    /// acknowledges in batches uses, off the evaluating threads: a change queued before this
    /// call (it happened before, e.g. through a channel) is covered.
    pub fn after_commit(&self, done: impl FnOnce(Result<(), StateDbError>) + Send + 'static) {
        let path = self.inner.path.clone();
        let answer = move |result: Result<(), String>| {
            done(result.map_err(|detail| StateDbError::Write { path, detail }));
        };
        let Some(queue) = &self.inner.queue else {
            return answer(Err("the writer thread has stopped".into()));
        };
        if let Err(mpsc::SendError(Op::Barrier(answer))) = queue.send(Op::Barrier(Box::new(answer)))
        {
            return answer(Err("the writer thread has stopped".into()));
        }
        self.wake_writer();
    }

    /// What the writer did so far.
    pub fn stats(&self) -> StateDbStats {
        let s = &self.inner.stats;
        StateDbStats {
            changes: s.changes.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            failed_commits: s.failed.load(Ordering::Relaxed),
        }
    }

    fn write_error(&self, detail: String) -> StateDbError {
        StateDbError::Write {
            path: self.inner.path.clone(),
            detail,
        }
    }

    /// Ends the writer's gathering (see [`GATHER`]): it commits what is queued now.
    fn wake_writer(&self) {
        if let Some(writer) = &self.inner.writer {
            writer.thread().unpark();
        }
    }

    fn queue(&self, op: Op) {
        // A send fails only once the writer has stopped; `sync` reports that.
        if let Some(queue) = &self.inner.queue {
            let _ = queue.send(op);
        }
        // Release: whoever reads the count after this also finds the change in the queue.
        let before = self.inner.queued.fetch_add(1, Ordering::Release);
        // A burst is committed as it comes, ENOUGH changes at a time, not after it.
        if (before + 1).is_multiple_of(ENOUGH as u64) {
            self.wake_writer();
        }
        let id = self.inner.id;
        UNSYNCED.with_borrow_mut(|ids| {
            if !ids.contains(&id) {
                ids.push(id);
            }
        });
    }
}

impl StateJournal for StateDb {
    fn record(&self, change: StateChange<'_>) {
        let (scope, policy, device) = match change.scope {
            Scope::Device { policy, device } => (0, policy, device),
            Scope::Global { policy } => (1, policy, ""),
            Scope::LastValue { device } => (2, "", device),
        };
        self.queue(Op::Put {
            scope,
            policy: policy.into(),
            device: device.into(),
            key: change.key.into(),
            value: change.value.map(Into::into),
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed everything queued.
        self.queue.take();
        if let Some(w) = self.writer.take() {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// Puts what the file at `path` holds into `runtime`, reading only: what `quarantine replay`
/// does so that it judges with the devices' current state while `serve` keeps the file.
pub fn restore_from(path: &Path, runtime: &Runtime) -> Result<Restored, StateDbError> {
    let conn = open_file(path, false)?;
    let sql = |op| {
        move |source| StateDbError::Sqlite {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let mut rows = conn
        .prepare("SELECT scope, policy, device, key, value FROM state")
        .map_err(sql("reading state"))?;
    let mut rows = rows.query([]).map_err(sql("reading state"))?;
    let mut restored = Restored::default();
    while let Some(row) = rows.next().map_err(sql("reading state"))? {
        let scope: i64 = row.get(0).map_err(sql("reading state"))?;
        let policy: String = row.get(1).map_err(sql("reading state"))?;
        let device: String = row.get(2).map_err(sql("reading state"))?;
        let key: String = row.get(3).map_err(sql("reading state"))?;
        let value: Vec<u8> = row.get(4).map_err(sql("reading state"))?;
        let scope = match scope {
            0 => Scope::Device {
                policy: &policy,
                device: &device,
            },
            1 => Scope::Global { policy: &policy },
            2 => Scope::LastValue { device: &device },
            _ => {
                restored.skipped += 1;
                continue;
            }
        };
        let change = StateChange {
            scope,
            key: &key,
            value: Some(&value),
        };
        if runtime.restore_state(change) {
            restored.entries += 1;
        } else {
            restored.skipped += 1;
        }
    }
    Ok(restored)
}

fn open_file(path: &Path, create: bool) -> Result<Connection, StateDbError> {
    let sql = |op| {
        move |source| StateDbError::Sqlite {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    if !create && !path.exists() {
        return Err(StateDbError::Invalid {
            path: path.to_path_buf(),
            detail: "no such file".into(),
        });
    }
    // State can hold what policies chose to remember about devices: the owner's only.
    if create {
        crate::store::create_owner_only(path).map_err(|source| StateDbError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let flags = if create {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql("open"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| match source {
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::NotADatabase => {
                StateDbError::Invalid {
                    path: path.to_path_buf(),
                    detail: "not an SQLite file".into(),
                }
            }
            source => StateDbError::Sqlite {
                path: path.to_path_buf(),
                op: "open",
                source,
            },
        })?;
    if version > SCHEMA_VERSION {
        return Err(StateDbError::Invalid {
            path: path.to_path_buf(),
            detail: format!(
                "schema version {version} is newer than this build's ({SCHEMA_VERSION}): \
                 written by a newer twinguard"
            ),
        });
    }
    if version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sql("open"))?;
        if tables > 0 {
            return Err(StateDbError::Invalid {
                path: path.to_path_buf(),
                detail: "an SQLite file with tables of its own, not a twinguard state file".into(),
            });
        }
    }
    if create {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(sql("enabling WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StateDbError::Invalid {
                path: path.to_path_buf(),
                detail: format!("SQLite refused WAL mode (journal mode stays {mode})"),
            });
        }
        // See the module documentation: a kill loses nothing committed, a power loss may lose
        // the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("setting synchronous = NORMAL"))?;
        // A checkpoint (copying the WAL into the file, with an fsync) every 8,192 pages
        // instead of SQLite's 1,000: small commits come often here, and each checkpoint costs
        // the writer an fsync. The WAL file is cut back to 64 MiB after one.
        conn.pragma_update(None, "wal_autocheckpoint", 8192_i64)
            .map_err(sql("open"))?;
        conn.pragma_update(None, "journal_size_limit", 64_i64 << 20)
            .map_err(sql("open"))?;
        if version == 0 {
            conn.execute_batch(SCHEMA)
                .map_err(sql("creating the schema"))?;
        }
    }
    Ok(conn)
}

/// Changes taken off the queue and not yet committed, the latest per row, with the callers
/// waiting for the next commit.
#[derive(Default)]
struct Batch {
    /// A failed commit's rows stay here, and later changes to a row replace them. In key
    /// order, which is the table's, so that neighbouring rows are written one after another
    /// into the same pages.
    rows: BTreeMap<RowKey, Option<Box<[u8]>>>,
    /// Changes taken since the last successful commit; several may be one row.
    changes: u64,
    /// Operations taken for this commit: at most [`MAX_BATCH`].
    taken: usize,
    waiting: Vec<Answer>,
    /// The queue is closed and empty: the last commit.
    closed: bool,
}

impl Batch {
    fn take(&mut self, op: Op) {
        self.taken += 1;
        match op {
            Op::Put {
                scope,
                policy,
                device,
                key,
                value,
            } => {
                self.rows.insert((scope, policy, device, key), value);
                self.changes += 1;
            }
            Op::Barrier(answer) => self.waiting.push(answer),
        }
    }

    /// Takes what is queued now.
    fn drain(&mut self, ops: &Receiver<Op>) {
        while self.taken < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => self.take(op),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Takes what is queued for up to [`GATHER`], and no longer once someone waits for the
    /// commit or [`ENOUGH`] are taken. Parked rather than blocked on the queue, so that a
    /// change queued meanwhile does not wake this thread (a syscall on the evaluating
    /// thread); a caller that waits unparks it, and a spurious unpark only drains early.
    fn gather(&mut self, ops: &Receiver<Op>) {
        let until = Instant::now() + GATHER;
        loop {
            self.drain(ops);
            if !self.waiting.is_empty() || self.closed || self.taken >= ENOUGH {
                return;
            }
            match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return,
            }
        }
    }
}

fn write_loop(mut conn: Connection, path: &Path, ops: &Receiver<Op>, stats: &Stats) {
    let mut batch = Batch::default();
    let mut last_logged: Option<Instant> = None;
    loop {
        // A failed commit's changes are retried after RETRY if nothing new comes.
        let first = if batch.rows.is_empty() {
            ops.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            ops.recv_timeout(RETRY)
        };
        match first {
            Ok(op) => {
                batch.take(op);
                batch.gather(ops);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => batch.closed = true,
        }
        let result = if batch.rows.is_empty() {
            Ok(())
        } else {
            commit(&mut conn, &batch.rows).map_err(|e| e.to_string())
        };
        match &result {
            Ok(()) if !batch.rows.is_empty() => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.changes.fetch_add(batch.changes, Ordering::Relaxed);
                batch.rows.clear();
                batch.changes = 0;
            }
            Ok(()) => {}
            Err(e) if batch.closed => tracing::error!(
                file = %path.display(),
                "state file: closing with {} changes it could not commit: {e}; a restart will \
                 not have them",
                batch.rows.len()
            ),
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_logged = Some(Instant::now());
                    tracing::error!(
                        file = %path.display(),
                        "state file: cannot commit {} changes: {e}; they are kept in memory and \
                         retried, a restart before the file takes writes again would forget \
                         them ({} failed commits so far)",
                        batch.rows.len(),
                        stats.failed.load(Ordering::Relaxed)
                    );
                }
            }
        }
        for answer in batch.waiting.drain(..) {
            answer(result.clone());
        }
        batch.taken = 0;
        if batch.closed {
            return;
        }
    }
}

/// Writes `rows` in one transaction.
fn commit(
    conn: &mut Connection,
    rows: &BTreeMap<RowKey, Option<Box<[u8]>>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT INTO state (scope, policy, device, key, value) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT DO UPDATE SET value = excluded.value",
        )?;
        let mut delete = tx.prepare_cached(
            "DELETE FROM state WHERE scope = ?1 AND policy = ?2 AND device = ?3 AND key = ?4",
        )?;
        for ((scope, policy, device, key), value) in rows {
            match value {
                Some(v) => put.execute(params![scope, policy, device, key, v])?,
                None => delete.execute(params![scope, policy, device, key])?,
            };
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(scope: Scope<'a>, key: &'a str, value: Option<&'a [u8]>) -> StateChange<'a> {
        StateChange { scope, key, value }
    }

    fn rows(path: &Path) -> Vec<(i64, String, String, String, Vec<u8>)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT scope, policy, device, key, value FROM state ORDER BY 1, 2, 3, 4")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn a_synced_change_is_in_the_file_and_restores_into_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        let dev = Scope::Device {
            policy: "replay",
            device: "d1",
        };
        db.record(change(dev, "last", Some(b"1")));
        db.record(change(dev, "last", Some(b"2")));
        db.record(change(dev, "gone", Some(b"x")));
        db.record(change(dev, "gone", None));
        db.record(change(
            Scope::Global { policy: "badge" },
            "door",
            Some(b"7"),
        ));
        // A last value in an encoding this build does not write: kept, skipped on restore.
        db.record(change(Scope::LastValue { device: "d1" }, "/t", Some(&[99])));
        db.sync().unwrap();
        // Nothing queued since: returns at once.
        db.sync().unwrap();
        let got = rows(&path);
        let row = |scope, policy: &str, device: &str, key: &str, value: &[u8]| {
            (
                scope,
                policy.into(),
                device.into(),
                key.into(),
                value.to_vec(),
            )
        };
        assert_eq!(
            got,
            vec![
                row(0, "replay", "d1", "last", b"2"),
                row(1, "badge", "", "door", b"7"),
                row(2, "", "d1", "/t", &[99]),
            ]
        );
        let stats = db.stats();
        assert_eq!((stats.changes, stats.failed_commits), (6, 0));
        assert!(stats.commits >= 1);
        let runtime = Runtime::new(crate::Config::default()).unwrap();
        let restored = db.restore(&runtime).unwrap();
        assert_eq!(
            restored,
            Restored {
                entries: 2,
                skipped: 1
            }
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn dropping_the_last_handle_commits_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        let scope = Scope::Device {
            policy: "p",
            device: "d",
        };
        // From another thread, which never syncs.
        let other = db.clone();
        std::thread::spawn(move || other.record(change(scope, "k", Some(b"v"))))
            .join()
            .unwrap();
        drop(db);
        assert_eq!(rows(&path).len(), 1);
        // Reopening keeps what is there.
        let again = StateDb::open(&path).unwrap();
        drop(again);
        assert_eq!(rows(&path).len(), 1);
    }

    #[test]
    fn a_row_changed_many_times_before_a_commit_is_written_once_per_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        // Counts the row writes SQLite makes (an upsert that updates fires the update trigger).
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE writes (n INTEGER NOT NULL); INSERT INTO writes VALUES (0);\
                 CREATE TRIGGER count_insert AFTER INSERT ON state BEGIN UPDATE writes SET n = n + 1; END;\
                 CREATE TRIGGER count_update AFTER UPDATE ON state BEGIN UPDATE writes SET n = n + 1; END;",
            )
            .unwrap();
        let scope = Scope::Device {
            policy: "replay",
            device: "press-07",
        };
        for seq in 0..1_000_u32 {
            db.record(change(scope, "last-seq", Some(&seq.to_le_bytes())));
        }
        db.sync().unwrap();
        assert_eq!(rows(&path)[0].4, 999_u32.to_le_bytes().to_vec());
        let writes: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT n FROM writes", [], |r| r.get(0))
            .unwrap();
        let stats = db.stats();
        assert_eq!(stats.changes, 1_000);
        // However the writer split the changes into commits, no commit wrote the row twice.
        assert!(
            writes.unsigned_abs() <= stats.commits,
            "{writes} writes, {stats:?}"
        );
    }

    #[test]
    fn a_failed_commits_changes_are_written_once_the_file_takes_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        let scope = Scope::Device {
            policy: "p",
            device: "d",
        };
        db.record(change(scope, "before", Some(b"1")));
        db.sync().unwrap();
        // The file refuses writes, as a full disk would.
        let breaker = Connection::open(&path).unwrap();
        breaker
            .execute_batch(
                "CREATE TRIGGER no_insert BEFORE INSERT ON state BEGIN SELECT RAISE(ABORT, 'disk full'); END;\
                 CREATE TRIGGER no_update BEFORE UPDATE ON state BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .unwrap();
        db.record(change(scope, "lost?", Some(b"2")));
        db.record(change(scope, "before", Some(b"3")));
        let e = db.sync().unwrap_err().to_string();
        assert!(e.contains("disk full"), "{e}");
        // One commit, or two if the writer took the changes one by one.
        assert!(db.stats().failed_commits >= 1, "{:?}", db.stats());
        // Writable again: the failed changes are retried without anything new being queued
        // (a second later) ...
        breaker
            .execute_batch("DROP TRIGGER no_insert; DROP TRIGGER no_update;")
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while db.stats().commits < 2 {
            assert!(Instant::now() < end, "no retry: {:?}", db.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
        let want = vec![
            (
                0,
                "p".to_string(),
                "d".to_string(),
                "before".to_string(),
                b"3".to_vec(),
            ),
            (
                0,
                "p".to_string(),
                "d".to_string(),
                "lost?".to_string(),
                b"2".to_vec(),
            ),
        ];
        assert_eq!(rows(&path), want);
        // ... and a later change to the same row wins over a retried one.
        let breaker_again = "CREATE TRIGGER no_update BEFORE UPDATE ON state BEGIN SELECT RAISE(ABORT, 'disk full'); END;";
        breaker.execute_batch(breaker_again).unwrap();
        db.record(change(scope, "before", Some(b"4")));
        assert!(db.sync().is_err());
        breaker.execute_batch("DROP TRIGGER no_update;").unwrap();
        db.record(change(scope, "before", Some(b"5")));
        db.sync().unwrap();
        assert_eq!(rows(&path)[0].4, b"5".to_vec());
    }

    #[test]
    fn foreign_newer_and_non_sqlite_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE mine (x)")
            .unwrap();
        let e = StateDb::open(&foreign).unwrap_err().to_string();
        assert!(
            e.contains("foreign.db") && e.contains("not a twinguard state file"),
            "{e}"
        );

        let newer = dir.path().join("newer.db");
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 9")
            .unwrap();
        let e = StateDb::open(&newer).unwrap_err().to_string();
        assert!(
            e.contains("newer.db") && e.contains("schema version 9"),
            "{e}"
        );

        let text = dir.path().join("text.db");
        std::fs::write(&text, b"not a database at all, just some text").unwrap();
        let e = StateDb::open(&text).unwrap_err().to_string();
        assert!(
            e.contains("text.db") && e.contains("not an SQLite file"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&text).unwrap(),
            b"not a database at all, just some text"
        );

        let runtime = Runtime::new(crate::Config::default()).unwrap();
        let e = restore_from(&dir.path().join("absent.db"), &runtime)
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.db") && e.contains("no such file"), "{e}");
    }

    #[test]
    fn the_default_file_sits_beside_the_quarantine_store() {
        let q = Path::new("/var/lib/twinguard/quarantine.db");
        assert_eq!(
            StateConfig::file(None, q).unwrap(),
            Path::new("/var/lib/twinguard/quarantine.state.db")
        );
        let off = StateConfig {
            path: None,
            persist: false,
            ack_after_commit: None,
        };
        assert_eq!(StateConfig::file(Some(&off), q), None);
        let own = StateConfig {
            path: Some("/x/s.db".into()),
            persist: true,
            ack_after_commit: Some(false),
        };
        assert!(StateConfig::acks_after_commit(None, true));
        assert!(!StateConfig::acks_after_commit(None, false));
        assert!(StateConfig::acks_after_commit(Some(&off), true));
        assert!(!StateConfig::acks_after_commit(Some(&own), true));
        assert_eq!(
            StateConfig::file(Some(&own), q).unwrap(),
            Path::new("/x/s.db")
        );
    }
}
