//! The durable quarantine store: every message a policy quarantined, with the outcome that
//! put it there, in one SQLite file.
//!
//! The gateway acknowledges a device's message only once its outcome is durable, so
//! [`QuarantineStore::put`] returns only after the record is committed and fsynced (WAL mode,
//! `synchronous = FULL`): a crash of the process or of the machine afterwards cannot lose it.
//!
//! # Group commit
//!
//! An fsync costs milliseconds; one per message would cap a gateway at a few hundred
//! quarantined messages per second. Every write therefore goes to one writer thread through a
//! channel. The writer takes whatever has queued up while it was busy (up to
//! [`MAX_BATCH`] operations), runs each in its own savepoint inside one transaction, commits
//! once, and then answers each caller. A caller blocks only on its own answer: many threads
//! putting at once share one fsync instead of queueing behind each other's, and a slow disk
//! never holds a lock that evaluating threads need. One operation's failure (its savepoint is
//! rolled back) does not fail the others of its batch; a failed commit fails them all, and
//! none of them returned `Ok`.
//!
//! Reads ([`get`](QuarantineStore::get), [`list`](QuarantineStore::list),
//! [`count`](QuarantineStore::count)) use a second, read-only connection and see every write
//! that has returned. Other processes (the `twinguard quarantine` CLI next to a running
//! gateway) may open the same file: WAL lets readers and the writer proceed together, and a
//! busy timeout absorbs the short waits between two writing processes.
//!
//! ```no_run
//! use twinguard::store::{QuarantineStore, Query, Status};
//! use twinguard::{Action, ContentType, Message, Outcome};
//!
//! let store = QuarantineStore::open("quarantine.db")?;
//! let message = Message::new("press-7", "plant/press-7/telemetry", ContentType::Json, br#"{"t":900}"#.to_vec());
//! // In the gateway the outcome comes from `Runtime::evaluate`.
//! let action = Action::Quarantine { policy: Some("range-guard".into()), reason: "t out of range".into() };
//! let outcome = Outcome::new(action, message.payload.clone(), 1);
//! let id = store.put(&message, &outcome, Some("twin/press-7/telemetry"))?; // durable now
//! let held = store.list(&Query { status: Some(Status::Held), ..Query::default() })?;
//! assert!(held.iter().any(|r| r.id == id));
//! # Ok::<(), twinguard::store::StoreError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::now_ms;
use crate::{Action, Alert, ContentType, Message, Outcome, Severity};

/// Where `twinguard serve` and the Mosquitto plugin keep quarantined messages (the `[quarantine]` table).
///
/// ```toml
/// [quarantine]
/// path = "quarantine.db"
/// max-age-days = 30
/// max-entries = 1000000
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct QuarantineConfig {
    /// The SQLite file; relative to the config file's folder.
    pub path: PathBuf,
    /// Records older than this are deleted (checked every minute).
    pub max_age_days: Option<u64>,
    /// At most this many records are kept, the newest.
    pub max_entries: Option<u64>,
}

impl QuarantineConfig {
    /// The retention these settings ask for, if any.
    pub fn retention(&self) -> Option<Retention> {
        (self.max_age_days.is_some() || self.max_entries.is_some()).then(|| Retention {
            max_age_ms: self.max_age_days.map(|d| d.saturating_mul(86_400_000)),
            max_entries: self.max_entries,
        })
    }
}

/// The schema version this build writes and reads (SQLite's `user_version`). A file with a
/// newer version is refused rather than misread.
///
/// - 1: the first schema.
/// - 2: `source`, the gateway a record came from (added in place to a version 1 file).
pub const SCHEMA_VERSION: i64 = 2;

/// The most operations one commit carries. Large enough that a burst of puts shares a few
/// fsyncs; small enough that the first caller of a batch is not kept waiting on thousands.
pub const MAX_BATCH: usize = 512;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per transaction by [`QuarantineStore::purge`] and
/// [`QuarantineStore::apply_retention`], so a large clean-up never stalls puts for long.
const DELETE_CHUNK: u64 = 5_000;

/// The columns of a record, in the order [`read_row`] expects them.
const COLUMNS: &str = "id, stored_at_ms, received_at_ms, device_id, topic, destination, \
     content_type, payload, redacted_payload, attributes, policy, reason, versions, alerts, \
     generation, status, status_at_ms, note, source";

const SCHEMA: &str = "
CREATE TABLE quarantine (
    -- AUTOINCREMENT: an id is never reused after a purge, so an id an operator noted down
    -- cannot come to mean another message.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    stored_at_ms     INTEGER NOT NULL,
    received_at_ms   INTEGER NOT NULL,
    device_id        TEXT    NOT NULL,
    topic            TEXT    NOT NULL,
    destination      TEXT,
    content_type     TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    redacted_payload BLOB,
    attributes       TEXT    NOT NULL,
    policy           TEXT,
    reason           TEXT    NOT NULL,
    versions         TEXT    NOT NULL,
    alerts           TEXT    NOT NULL,
    generation       INTEGER NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('held', 'released', 'replayed')),
    status_at_ms     INTEGER NOT NULL,
    note             TEXT,
    source           TEXT
);
CREATE INDEX quarantine_status ON quarantine (status, id);
CREATE INDEX quarantine_device ON quarantine (device_id, id);
CREATE INDEX quarantine_age ON quarantine (stored_at_ms);
";

const INSERT: &str = "INSERT INTO quarantine (stored_at_ms, received_at_ms, device_id, topic, \
     destination, content_type, payload, redacted_payload, attributes, policy, reason, versions, \
     alerts, generation, status, status_at_ms, source) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'held', ?1, ?15)";

/// An SQLite error, shared so that every operation of a failed commit can carry it.
pub type SqliteError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the quarantine store. Each names the store's file, and the operation or record
/// concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// [`QuarantineStore::open_existing`] found no file.
    #[error("no quarantine store at {}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is not an SQLite database.
    #[error("{} is not a quarantine store: not an SQLite database", path.display())]
    NotSqlite {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SQLite database, but not one this store made.
    #[error("{} is not a quarantine store: an SQLite database without twinguard's schema{}", path.display(), tables_note(tables))]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The tables it has.
        tables: Vec<String>,
    },
    /// The file was written by a newer twinguard, with a schema this build does not know.
    #[error(
        "quarantine store {} has schema version {found}, newer than version {supported} that this \
         twinguard knows: open it with a newer twinguard",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The newest version this build knows ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// The file could not be created.
    #[error("quarantine store {}: cannot create it", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("quarantine store {}: {op} failed", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The operation, e.g. `put` or `open`.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: SqliteError,
    },
    /// No record has this id.
    #[error("quarantine store {}: no record {id}", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
        /// The id asked for.
        id: u64,
    },
    /// A record's column does not decode (edited by hand, or damaged).
    #[error("quarantine store {}: record {id} is damaged: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The record.
        id: u64,
        /// Which column and why.
        detail: String,
    },
    /// The caller asked for something the store does not do.
    #[error("quarantine store {}: {op}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// What is wrong with the request.
        detail: String,
    },
    /// The writer thread is gone (it panicked); nothing more can be written.
    #[error("quarantine store {}: {op} not done, the writer thread has stopped", path.display())]
    Closed {
        /// The file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
    },
}

fn tables_note(tables: &[String]) -> String {
    if tables.is_empty() {
        String::new()
    } else {
        format!(" (it has tables {})", tables.join(", "))
    }
}

impl StoreError {
    fn sqlite(path: &Path, op: &'static str, e: rusqlite::Error) -> Self {
        Self::Sqlite {
            path: path.to_path_buf(),
            op,
            source: Arc::new(e),
        }
    }
}

/// Where a quarantined message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held for review: the state every record starts in.
    Held,
    /// An operator released it to its destination.
    Released,
    /// It was evaluated again through the policies of the day and acted on.
    Replayed,
}

impl Status {
    /// `held`, `released` or `replayed`, as stored and as the CLI takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Released => "released",
            Self::Replayed => "replayed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "held" => Ok(Self::Held),
            "released" => Ok(Self::Released),
            "replayed" => Ok(Self::Replayed),
            other => Err(format!(
                "unknown status {other:?} (expected held, released or replayed)"
            )),
        }
    }
}

/// One policy of the chain that judged a quarantined message: which version said what. Kept
/// so that a record can be explained after the policies have been upgraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// The policy's configured name.
    pub policy: String,
    /// Its version (content digest).
    pub version: String,
    /// Its verdict: `allow`, `redact`, `quarantine`, `alert` or `fault`.
    pub verdict: String,
}

/// A quarantined message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's id: increasing in the order of storing, never reused.
    pub id: u64,
    /// When it was stored, milliseconds since the Unix epoch; retention ages count from here.
    pub stored_at_ms: u64,
    /// When the host received the message.
    pub received_at_ms: u64,
    /// The device's identity.
    pub device_id: String,
    /// The topic it was published on.
    pub topic: String,
    /// The output topic the message would have gone to; `None` when it had none (unrouted).
    pub destination: Option<String>,
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// The payload exactly as the device sent it: what a replay evaluates again.
    pub payload: Vec<u8>,
    /// The payload as the chain left it, when a policy before the quarantining one redacted
    /// it: what a release should forward, so a release does not undo a redaction.
    pub redacted_payload: Option<Vec<u8>>,
    /// The transport attributes, in order (keys may repeat, as MQTT 5 user properties do).
    pub attributes: Vec<(String, String)>,
    /// The policy that quarantined it; `None` when no route matched the topic.
    pub policy: Option<String>,
    /// Why.
    pub reason: String,
    /// Every policy that ran on it, with its version and verdict, in chain order.
    pub versions: Vec<PolicyVersion>,
    /// Every alert raised on it.
    pub alerts: Vec<Alert>,
    /// The generation of the policy set that judged it.
    pub generation: u64,
    /// Where it stands.
    pub status: Status,
    /// When the status was last set (the storing time for a held record).
    pub status_at_ms: u64,
    /// The operator's note from the last status change.
    pub note: Option<String>,
    /// The gateway that received it (its configured name), so a release goes back to the
    /// same broker; `None` for messages stored by other front ends.
    pub source: Option<String>,
}

/// Which records [`QuarantineStore::list`] returns, in id order. Every criterion given must
/// hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only records in this status.
    pub status: Option<Status>,
    /// Only records of this device.
    pub device: Option<String>,
    /// Only records quarantined by this policy.
    pub policy: Option<String>,
    /// Only records with a larger id: the last id of the previous page, to page through.
    pub after_id: Option<u64>,
    /// At most this many records; all when `None`.
    pub limit: Option<u64>,
}

/// Which records [`QuarantineStore::purge`] deletes. Every criterion given must hold; at
/// least one must be given, so that an empty request cannot empty the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// Only these records; each must exist, or nothing is purged.
    pub ids: Vec<u64>,
    /// Only records stored more than this many milliseconds ago.
    pub older_than_ms: Option<u64>,
    /// Only records in this status.
    pub status: Option<Status>,
}

/// Limits [`QuarantineStore::apply_retention`] enforces. Records are deleted oldest first
/// whatever their status: retention protects the disk, and an operator who must keep held
/// records longer sets longer limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete records stored more than this many milliseconds ago.
    pub max_age_ms: Option<u64>,
    /// Keep at most this many records, the newest.
    pub max_entries: Option<u64>,
}

/// The body of a write: runs on the writer thread, given its connection and the file's path
/// (for errors); returns the id stored or the number of rows changed.
type Work = dyn FnOnce(&Connection, &Path) -> Result<u64, StoreError> + Send;

/// A write for the writer thread: the operation's name (for errors), the work, and where to
/// send its result. The work runs inside a savepoint of the batch's transaction.
struct Job {
    op: &'static str,
    work: Box<Work>,
    reply: mpsc::SyncSender<Result<u64, StoreError>>,
}

/// The durable quarantine store: one SQLite file, a writer thread that group-commits, and a
/// read connection. `Send + Sync`; clones share everything, and the writer thread stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct QuarantineStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Puts committed, puts failed, and the nanoseconds callers waited for their commits.
    writes: AtomicU64,
    write_failures: AtomicU64,
    write_nanos: AtomicU64,
    /// `None` only while dropping, so that the writer sees the channel close.
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    reader: Mutex<Connection>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is empty; joining makes
        // the file fully closed (WAL checkpointed) when the last clone is gone.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl fmt::Debug for QuarantineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuarantineStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Integers are stored as SQLite's signed 64 bits; values past `i64::MAX` (never a real
/// timestamp or generation) are stored as `i64::MAX` rather than refused, because refusing a
/// quarantine put would lose the message.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl QuarantineStore {
    /// Opens the store at `path`, creating the file and its schema when absent.
    ///
    /// Refused with a clear error: a file that is not SQLite, an SQLite file with other
    /// tables and no twinguard schema, and a schema newer than [`SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens an existing store: [`StoreError::Missing`] when the file does not exist, and an
    /// error when it exists but holds no store. For tools that inspect a store, which must
    /// not leave an empty one behind a mistyped path.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Self, StoreError> {
        let missing = || StoreError::Missing {
            path: path.to_path_buf(),
        };
        if !create && !path.exists() {
            return Err(missing());
        }
        let sql = |op| move |e| StoreError::sqlite(path, op, e);
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        // The store holds raw payloads, personal data included: a new database is created
        // readable by the service's user only (SQLite gives its -wal and -shm files the
        // database's permissions).
        if create {
            create_owner_only(path).map_err(|source| StoreError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let writer = Connection::open_with_flags(path, flags).map_err(sql("open"))?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sql("open"))?;
        // The version is read before anything is changed: a file this build cannot read is
        // left exactly as it was.
        let found = user_version(&writer).map_err(|e| not_sqlite_or(path, "open", e))?;
        check_version(path, found)?;
        if found == 0 {
            // Someone else's database is refused before its journal mode is touched; an
            // empty one becomes a store, unless the caller only inspects stores.
            let tables = table_names(&writer).map_err(sql("open"))?;
            if !create || !tables.is_empty() {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                    tables,
                });
            }
        }
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(sql("enabling WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                path: path.to_path_buf(),
                op: "open",
                detail: format!("SQLite refused WAL mode (journal mode stays {mode})"),
            });
        }
        // FULL: the WAL is fsynced at every commit, which is what makes a returned put durable
        // across a power loss and not only a process crash.
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous = FULL"))?;
        // Keep the WAL file from staying at its high-water mark after a burst.
        writer
            .pragma_update(None, "journal_size_limit", 64_i64 << 20)
            .map_err(sql("open"))?;
        if found < SCHEMA_VERSION {
            create_schema(&writer, path)?;
        }

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(sql("open"))?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(sql("open"))?;

        let (jobs, queue) = mpsc::channel();
        let writer_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("quarantine-writer".into())
            .spawn(move || write_loop(&writer, &writer_path, &queue))
            .map_err(|e| StoreError::Invalid {
                path: path.to_path_buf(),
                op: "open",
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writes: AtomicU64::new(0),
                write_failures: AtomicU64::new(0),
                write_nanos: AtomicU64::new(0),
                jobs: Some(jobs),
                writer: Some(writer),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stores a quarantined message with its outcome and returns the new record's id. The
    /// record is committed and fsynced when this returns `Ok`: only then may the message be
    /// acknowledged to the device. `destination` is the output topic the message would have
    /// been forwarded to.
    ///
    /// Concurrent puts from many threads share one commit (see the module documentation).
    /// An outcome whose action is not quarantine is refused: the record would explain
    /// nothing.
    pub fn put(
        &self,
        message: &Message,
        outcome: &Outcome,
        destination: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.put_from(message, outcome, destination, None)
    }

    /// [`put`](Self::put), recording which gateway (`source`, its configured name) received
    /// the message: where a release or replay publishes it again.
    pub fn put_from(
        &self,
        message: &Message,
        outcome: &Outcome,
        destination: Option<&str>,
        source: Option<&str>,
    ) -> Result<u64, StoreError> {
        let Action::Quarantine { policy, reason } = &outcome.action else {
            return Err(StoreError::Invalid {
                path: self.inner.path.clone(),
                op: "put",
                detail: format!(
                    "the outcome is {}, not quarantine; only quarantined messages are stored",
                    outcome.action.name()
                ),
            });
        };
        // Encoding happens here, on the caller's thread, so that the writer thread does
        // nothing but SQL.
        let versions: Vec<PolicyVersion> = outcome
            .trace
            .iter()
            .map(|t| PolicyVersion {
                policy: t.policy.to_string(),
                version: t.version.to_string(),
                verdict: t.verdict.name().to_string(),
            })
            .collect();
        let row = NewRow {
            stored_at_ms: to_i64(now_ms()),
            received_at_ms: to_i64(message.received_at_ms),
            device_id: message.device_id.clone(),
            topic: message.topic.clone(),
            destination: destination.map(str::to_string),
            content_type: message.content_type.as_str(),
            payload: message.payload.to_vec(),
            redacted_payload: outcome.redacted.then(|| outcome.payload.to_vec()),
            attributes: to_json(&message.attributes),
            policy: policy.clone(),
            reason: reason.clone(),
            versions: to_json(&versions),
            alerts: to_json(&outcome.alerts),
            generation: to_i64(outcome.generation),
            source: source.map(str::to_string),
        };
        let started = std::time::Instant::now();
        let put = self.submit("put", move |conn, path| {
            let mut insert = conn
                .prepare_cached(INSERT)
                .map_err(|e| StoreError::sqlite(path, "put", e))?;
            insert
                .execute(params![
                    row.stored_at_ms,
                    row.received_at_ms,
                    row.device_id,
                    row.topic,
                    row.destination,
                    row.content_type,
                    row.payload,
                    row.redacted_payload,
                    row.attributes,
                    row.policy,
                    row.reason,
                    row.versions,
                    row.alerts,
                    row.generation,
                    row.source,
                ])
                .map_err(|e| StoreError::sqlite(path, "put", e))?;
            // Rowids of an AUTOINCREMENT table are positive.
            Ok(u64::try_from(conn.last_insert_rowid()).unwrap_or(0))
        });
        let i = &self.inner;
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        i.write_nanos.fetch_add(waited, Ordering::Relaxed);
        match &put {
            Ok(_) => i.writes.fetch_add(1, Ordering::Relaxed),
            Err(_) => i.write_failures.fetch_add(1, Ordering::Relaxed),
        };
        put
    }

    /// What the store's writes did since it was opened, for metrics.
    pub fn write_stats(&self) -> WriteStats {
        let i = &self.inner;
        WriteStats {
            writes: i.writes.load(Ordering::Relaxed),
            failures: i.write_failures.load(Ordering::Relaxed),
            waited: std::time::Duration::from_nanos(i.write_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Held records and when the oldest of them was stored (ms since the Unix epoch), for
    /// metrics: what waits for an operator.
    pub fn held(&self) -> Result<(u64, Option<u64>), StoreError> {
        let path = self.path();
        let (n, oldest): (i64, Option<i64>) = self
            .reader()
            .query_row(
                "SELECT count(*), min(stored_at_ms) FROM quarantine WHERE status = 'held'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| StoreError::sqlite(path, "count", e))?;
        Ok((
            u64::try_from(n).unwrap_or(0),
            oldest.and_then(|t| u64::try_from(t).ok()),
        ))
    }

    /// Whether a put would be committed now: the writer thread answers and a write
    /// transaction can be opened on the file (`/readyz`).
    pub fn probe(&self) -> Result<(), StoreError> {
        self.submit("probe", |conn, path| {
            // Writing the header's version with the value it has is a real write to the file
            // (committed with the group, fsynced) that changes nothing.
            let version = user_version(conn).map_err(|e| StoreError::sqlite(path, "probe", e))?;
            conn.pragma_update(None, "user_version", version)
                .map_err(|e| StoreError::sqlite(path, "probe", e))?;
            Ok(0)
        })
        .map(|_| ())
    }

    /// The record with this id, or `None`.
    pub fn get(&self, id: u64) -> Result<Option<Record>, StoreError> {
        let path = self.path();
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        let reader = self.reader();
        let mut stmt = reader
            .prepare_cached(&format!("SELECT {COLUMNS} FROM quarantine WHERE id = ?1"))
            .map_err(|e| StoreError::sqlite(path, "get", e))?;
        let raw = stmt
            .query_row([key], read_row)
            .optional()
            .map_err(|e| StoreError::sqlite(path, "get", e))?;
        raw.map(|r| r.decode(path)).transpose()
    }

    /// The records matching `query`, in id order.
    pub fn list(&self, query: &Query) -> Result<Vec<Record>, StoreError> {
        let path = self.path();
        let mut sql = format!("SELECT {COLUMNS} FROM quarantine WHERE id > ?1");
        let mut args: Vec<rusqlite::types::Value> =
            vec![to_i64(query.after_id.unwrap_or(0)).into()];
        if let Some(status) = query.status {
            args.push(status.as_str().to_string().into());
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(device) = &query.device {
            args.push(device.clone().into());
            sql.push_str(&format!(" AND device_id = ?{}", args.len()));
        }
        if let Some(policy) = &query.policy {
            args.push(policy.clone().into());
            sql.push_str(&format!(" AND policy = ?{}", args.len()));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = query.limit {
            args.push(to_i64(limit).into());
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
        }
        let reader = self.reader();
        let mut stmt = reader
            .prepare_cached(&sql)
            .map_err(|e| StoreError::sqlite(path, "list", e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), read_row)
            .map_err(|e| StoreError::sqlite(path, "list", e))?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(
                raw.map_err(|e| StoreError::sqlite(path, "list", e))?
                    .decode(path)?,
            );
        }
        Ok(out)
    }

    /// How many records are in this status, or in all when `None`.
    pub fn count(&self, status: Option<Status>) -> Result<u64, StoreError> {
        let path = self.path();
        let reader = self.reader();
        let n: i64 = match status {
            Some(s) => reader.query_row(
                "SELECT count(*) FROM quarantine WHERE status = ?1",
                [s.as_str()],
                |r| r.get(0),
            ),
            None => reader.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0)),
        }
        .map_err(|e| StoreError::sqlite(path, "count", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Sets a record's status, with an operator's note (replacing the previous note), and
    /// stamps the time. Durable when it returns. [`StoreError::NotFound`] when no record has
    /// this id.
    pub fn set_status(
        &self,
        id: u64,
        status: Status,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let note = note.map(str::to_string);
        let changed = self.submit("set status", move |conn, path| {
            let n = conn
                .prepare_cached(
                    "UPDATE quarantine SET status = ?2, status_at_ms = ?3, note = ?4 WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![to_i64(id), status.as_str(), to_i64(now_ms()), note])
                })
                .map_err(|e| StoreError::sqlite(path, "set status", e))?;
            Ok(n as u64)
        })?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                path: self.inner.path.clone(),
                id,
            });
        }
        Ok(())
    }

    /// Deletes the records matching `purge` and returns how many. With ids, every id must
    /// exist or nothing is deleted ([`StoreError::NotFound`] names the first missing one).
    pub fn purge(&self, purge: &Purge) -> Result<u64, StoreError> {
        if purge.ids.is_empty() && purge.older_than_ms.is_none() && purge.status.is_none() {
            return Err(StoreError::Invalid {
                path: self.inner.path.clone(),
                op: "purge",
                detail: "no criterion given (ids, age or status); refusing to purge everything"
                    .into(),
            });
        }
        let cutoff = purge
            .older_than_ms
            .map(|age| to_i64(now_ms().saturating_sub(age)));
        let status = purge.status.map(Status::as_str);
        if purge.ids.is_empty() {
            return self.delete_chunked("purge", move || {
                let mut sql = String::from("SELECT id FROM quarantine WHERE 1");
                let mut args: Vec<rusqlite::types::Value> = Vec::new();
                if let Some(c) = cutoff {
                    args.push(c.into());
                    sql.push_str(&format!(" AND stored_at_ms < ?{}", args.len()));
                }
                if let Some(s) = status {
                    args.push(s.to_string().into());
                    sql.push_str(&format!(" AND status = ?{}", args.len()));
                }
                (sql, args)
            });
        }
        let ids = purge.ids.clone();
        self.submit("purge", move |conn, path| {
            let err = |e| StoreError::sqlite(path, "purge", e);
            let mut exists = conn
                .prepare_cached("SELECT 1 FROM quarantine WHERE id = ?1")
                .map_err(err)?;
            for &id in &ids {
                let found = match i64::try_from(id) {
                    Ok(key) => exists.exists([key]).map_err(err)?,
                    Err(_) => false,
                };
                if !found {
                    return Err(StoreError::NotFound {
                        path: path.to_path_buf(),
                        id,
                    });
                }
            }
            let mut delete = conn
                .prepare_cached(
                    "DELETE FROM quarantine WHERE id = ?1 \
                     AND (?2 IS NULL OR stored_at_ms < ?2) AND (?3 IS NULL OR status = ?3)",
                )
                .map_err(err)?;
            let mut n = 0;
            for &id in &ids {
                n += delete
                    .execute(params![to_i64(id), cutoff, status])
                    .map_err(err)? as u64;
            }
            Ok(n)
        })
    }

    /// Enforces the retention limits and returns how many records were deleted. Deletes in
    /// chunks of a few thousand records per commit, so puts interleave with a large
    /// clean-up.
    pub fn apply_retention(&self, retention: &Retention) -> Result<u64, StoreError> {
        let mut deleted = 0;
        if let Some(age) = retention.max_age_ms {
            let cutoff = to_i64(now_ms().saturating_sub(age));
            deleted += self.delete_chunked("retention", move || {
                (
                    "SELECT id FROM quarantine WHERE stored_at_ms < ?1".to_string(),
                    vec![cutoff.into()],
                )
            })?;
        }
        if let Some(max) = retention.max_entries {
            // Ids grow with storing time, so the newest `max` records are the `max` largest
            // ids; everything below the smallest of those goes.
            let keep = to_i64(max);
            deleted += self.delete_chunked("retention", move || {
                (
                    "SELECT id FROM quarantine WHERE id < \
                     (SELECT id FROM quarantine ORDER BY id DESC LIMIT 1 OFFSET ?1 - 1) \
                     OR ?1 = 0"
                        .to_string(),
                    vec![keep.into()],
                )
            })?;
        }
        Ok(deleted)
    }

    /// Deletes the records whose ids the query selects, [`DELETE_CHUNK`] per transaction,
    /// until a chunk comes back short.
    fn delete_chunked(
        &self,
        op: &'static str,
        select: impl Fn() -> (String, Vec<rusqlite::types::Value>),
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let (sql, args) = select();
            let n = self.submit(op, move |conn, path| {
                let sql = format!(
                    "DELETE FROM quarantine WHERE id IN ({sql} ORDER BY id LIMIT {DELETE_CHUNK})"
                );
                let n = conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(args)))
                    .map_err(|e| StoreError::sqlite(path, op, e))?;
                Ok(n as u64)
            })?;
            total += n;
            if n < DELETE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Hands a write to the writer thread and waits for its own result (and only for it).
    fn submit(
        &self,
        op: &'static str,
        work: impl FnOnce(&Connection, &Path) -> Result<u64, StoreError> + Send + 'static,
    ) -> Result<u64, StoreError> {
        let closed = || StoreError::Closed {
            path: self.inner.path.clone(),
            op,
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            op,
            work: Box::new(work),
            reply,
        };
        let jobs = self.inner.jobs.as_ref().ok_or_else(closed)?;
        jobs.send(job).map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while reading leaves the connection usable: SQLite statements are reset
        // when dropped.
        self.inner
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a store's puts did since it was opened ([`QuarantineStore::write_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteStats {
    /// Records committed.
    pub writes: u64,
    /// Puts that failed (the message was not acknowledged).
    pub failures: u64,
    /// Time callers waited for their commits, summed.
    pub waited: std::time::Duration,
}

/// Creates `path`, empty and readable by its owner only, unless it exists; what SQLite then
/// opens keeps those permissions (and gives them to its -wal and -shm files).
pub(crate) fn create_owner_only(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // Another process made it meanwhile: SQLite opens it as it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

/// A put's columns, encoded on the caller's thread.
struct NewRow {
    stored_at_ms: i64,
    received_at_ms: i64,
    device_id: String,
    topic: String,
    destination: Option<String>,
    content_type: &'static str,
    payload: Vec<u8>,
    redacted_payload: Option<Vec<u8>>,
    attributes: String,
    policy: Option<String>,
    reason: String,
    versions: String,
    alerts: String,
    generation: i64,
    source: Option<String>,
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising plain data (strings, numbers, lists) to a string cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// The writer thread: one transaction per batch of queued jobs, one savepoint per job.
fn write_loop(conn: &Connection, path: &Path, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(conn, path, batch);
    }
}

fn run_batch(conn: &Connection, path: &Path, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e: SqliteError = Arc::new(e);
        for job in batch {
            let _ = job.reply.send(Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                op: job.op,
                source: Arc::clone(&e),
            }));
        }
        return;
    }
    let mut done = Vec::with_capacity(batch.len());
    for job in batch {
        let result = conn
            .execute_batch("SAVEPOINT job")
            .map_err(|e| StoreError::sqlite(path, job.op, e))
            .and_then(|()| {
                let result = (job.work)(conn, path);
                let end = if result.is_ok() {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                conn.execute_batch(end)
                    .map_err(|e| StoreError::sqlite(path, job.op, e))?;
                result
            });
        done.push((job.op, job.reply, result));
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        // Nothing of the batch is durable: every caller hears so, none hears `Ok`.
        let _ = conn.execute_batch("ROLLBACK");
        let e: SqliteError = Arc::new(e);
        for (op, reply, result) in done {
            let _ = reply.send(result.and(Err(StoreError::Sqlite {
                path: path.to_path_buf(),
                op,
                source: Arc::clone(&e),
            })));
        }
        return;
    }
    for (_, reply, result) in done {
        // A caller that gave up waiting is no reason to stop.
        let _ = reply.send(result);
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get(0))?;
    names.collect()
}

fn not_sqlite_or(path: &Path, op: &'static str, e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        StoreError::NotSqlite {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::sqlite(path, op, e)
    }
}

fn check_version(path: &Path, found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Creates the schema in one transaction, after checking again under the write lock: two
/// processes opening a new file at once must not both create it.
fn create_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |e| StoreError::sqlite(path, "creating the schema", e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let result = (|| {
        let found = user_version(conn).map_err(sql)?;
        check_version(path, found)?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        if found == 1 {
            // Version 2 only adds a column; old records have no source.
            conn.execute_batch("ALTER TABLE quarantine ADD COLUMN source TEXT")
                .map_err(sql)?;
            return conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql);
        }
        let tables = table_names(conn).map_err(sql)?;
        if !tables.is_empty() {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                tables,
            });
        }
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql)
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A row as SQLite returns it, before the JSON columns and names are decoded.
struct RawRow {
    id: i64,
    stored_at_ms: i64,
    received_at_ms: i64,
    device_id: String,
    topic: String,
    destination: Option<String>,
    content_type: String,
    payload: Vec<u8>,
    redacted_payload: Option<Vec<u8>>,
    attributes: String,
    policy: Option<String>,
    reason: String,
    versions: String,
    alerts: String,
    generation: i64,
    status: String,
    status_at_ms: i64,
    note: Option<String>,
    source: Option<String>,
}

fn read_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: r.get(0)?,
        stored_at_ms: r.get(1)?,
        received_at_ms: r.get(2)?,
        device_id: r.get(3)?,
        topic: r.get(4)?,
        destination: r.get(5)?,
        content_type: r.get(6)?,
        payload: r.get(7)?,
        redacted_payload: r.get(8)?,
        attributes: r.get(9)?,
        policy: r.get(10)?,
        reason: r.get(11)?,
        versions: r.get(12)?,
        alerts: r.get(13)?,
        generation: r.get(14)?,
        status: r.get(15)?,
        status_at_ms: r.get(16)?,
        note: r.get(17)?,
        source: r.get(18)?,
    })
}

/// An alert as stored: [`Alert`] itself is only `Serialize`.
#[derive(Deserialize)]
struct StoredAlert {
    policy: Arc<str>,
    version: Arc<str>,
    severity: Severity,
    code: String,
    detail: String,
}

impl RawRow {
    fn decode(self, path: &Path) -> Result<Record, StoreError> {
        let id = u64::try_from(self.id).unwrap_or(0);
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            id,
            detail,
        };
        fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, String> {
            serde_json::from_str(text).map_err(|e| format!("{column}: {e}"))
        }
        let unsigned = |column: &str, v: i64| {
            u64::try_from(v).map_err(|_| corrupt(format!("{column}: negative ({v})")))
        };
        let attributes: Vec<(String, String)> =
            json("attributes", &self.attributes).map_err(corrupt)?;
        let versions: Vec<PolicyVersion> = json("versions", &self.versions).map_err(corrupt)?;
        let alerts: Vec<StoredAlert> = json("alerts", &self.alerts).map_err(corrupt)?;
        Ok(Record {
            id,
            stored_at_ms: unsigned("stored_at_ms", self.stored_at_ms)?,
            received_at_ms: unsigned("received_at_ms", self.received_at_ms)?,
            device_id: self.device_id,
            topic: self.topic,
            destination: self.destination,
            content_type: self
                .content_type
                .parse()
                .map_err(|e| corrupt(format!("content_type: {e}")))?,
            payload: self.payload,
            redacted_payload: self.redacted_payload,
            attributes,
            policy: self.policy,
            reason: self.reason,
            versions,
            alerts: alerts
                .into_iter()
                .map(|a| Alert::new(a.policy, a.version, a.severity, a.code, a.detail))
                .collect(),
            generation: unsigned("generation", self.generation)?,
            status: self
                .status
                .parse()
                .map_err(|e| corrupt(format!("status: {e}")))?,
            status_at_ms: unsigned("status_at_ms", self.status_at_ms)?,
            note: self.note,
            source: self.source,
        })
    }
}

/// Applies a [`Retention`] every minute on a thread of its own, until dropped. `serve` and the
/// Mosquitto plugin both keep their store this way.
pub struct Sweeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts sweeping `store` (the first pass runs at once).
    pub fn start(store: QuarantineStore, retention: Retention) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("twinguard-retention".into())
            .spawn(move || loop {
                if let Err(e) = store.apply_retention(&retention) {
                    tracing::warn!("quarantine retention: {e}");
                }
                if stopped.recv_timeout(Duration::from_secs(60))
                    != Err(mpsc::RecvTimeoutError::Timeout)
                {
                    return;
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for s in [Status::Held, Status::Released, Status::Replayed] {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        let err = "gone".parse::<Status>().unwrap_err();
        assert!(err.contains("\"gone\"") && err.contains("held"), "{err}");
    }

    #[test]
    fn integers_past_i64_are_clamped_not_refused() {
        assert_eq!(to_i64(7), 7);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
    }

    #[test]
    fn store_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<QuarantineStore>();
    }

    #[test]
    fn a_damaged_json_column_names_the_record_and_column() {
        let raw = RawRow {
            id: 9,
            stored_at_ms: 1,
            received_at_ms: 1,
            device_id: "d".into(),
            topic: "t".into(),
            destination: None,
            content_type: "json".into(),
            payload: Vec::new(),
            redacted_payload: None,
            attributes: "{not json".into(),
            policy: None,
            reason: String::new(),
            versions: "[]".into(),
            alerts: "[]".into(),
            generation: 0,
            status: "held".into(),
            status_at_ms: 1,
            source: None,
            note: None,
        };
        let err = raw.decode(Path::new("q.db")).unwrap_err().to_string();
        assert!(
            err.contains("q.db") && err.contains("record 9") && err.contains("attributes"),
            "{err}"
        );
    }
}
