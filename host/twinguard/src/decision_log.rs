//! The decision log: an optional, append-only, hash-chained record of every decision, for the
//! auditor who asks "what did the gateway do with this device's data, and can you prove the
//! record is complete?" (GDPR accountability, IEC 62443 SR 2.8/2.9 auditable events).
//!
//! ```toml
//! [decision-log]
//! path = "decisions.ndjson"   # the active file; relative to the config file's folder
//! max-bytes = 67108864        # rotate before the active file would exceed this (64 MiB)
//! keep-files = 0              # rotated files kept, the oldest deleted beyond (0 = keep all)
//! payload = "digest"          # or "redacted": also keep the payload as it left the chain
//! mode = 0o600                # permissions of the files this log creates (unix)
//! ```
//!
//! # Records
//!
//! One JSON object per line (NDJSON), keys in this order: `seq`, `time`, `received_at_ms`,
//! `device`, `topic`, `generation`, `action`, `quarantine` (quarantined messages only),
//! `chain`, `alerts`, `payload_in_sha256`, `payload_out_sha256`, `payload` or
//! `payload_base64` (`payload = "redacted"` only), `lost` (only when not 0), `prev`, `hash`.
//! `docs/decision-log.md` describes every field. The raw payload is never written: by default
//! only SHA-256 digests of the payload received and of the payload forwarded (or held).
//!
//! # The hash chain
//!
//! A record's line is its *body* (the JSON object above without `hash`, serialized compactly
//! with the fixed key order) with the final `}` replaced by `,"hash":"<64 hex>"}`, where
//!
//! ```text
//! hash = lowercase hex of SHA-256(body bytes)
//! prev = the previous record's hash; 64 zeros for the record with seq 0
//! ```
//!
//! The hash covers the exact bytes written, so a verifier needs no canonical-JSON rules: strip
//! the last 75 bytes of the line (`,"hash":"…"}`), append `}`, hash. Changing any byte of a
//! record changes its hash; removing or reordering records breaks `seq` (+1 per record, across
//! rotations and restarts) and `prev`. [`verify`] checks all of it and names the first record
//! that breaks. A chain proves order and completeness *between* its ends: whoever can rewrite
//! the files can also rewrite the tail and recompute every hash after the change, or cut off
//! the newest records. Anchor the end elsewhere: `twinguard audit verify` prints the last
//! hash, and each rotation logs it (tracing, `info`), so a log shipper or a periodic note in a
//! ticket turns "unbroken" into "unbroken and not truncated".
//!
//! # Writing
//!
//! [`DecisionLog::record`] runs on the evaluating threads: it builds the record's fields
//! (digests, trace) there and hands them to one writer thread over a bounded channel. When
//! the channel is full the caller waits (a decision is never dropped to keep the hot path
//! fast). The writer alone assigns `seq`, computes the chain, appends and rotates, so no lock
//! is held while hashing or writing. [`DecisionLog::flush`] (and dropping the last handle)
//! waits until everything recorded before it is written and fsynced.
//!
//! A write that fails is logged (`tracing::error`, naming the file, at most every ten
//! seconds) and counted in [`DecisionLogStats`]; the records of that write are lost, the file
//! is cut back to its last complete record, and the writer goes on with the next ones. The
//! next record written carries `lost`: how many decisions before it could not be logged, so
//! the gap is visible in the chain itself (the chain stays unbroken: `seq` is only given to
//! records that were written).
//!
//! # Rotation
//!
//! Before a record would take the active file past `max-bytes`, the file is fsynced and
//! renamed to `<path>.<seq of its first record, 20 digits>` (so names sort in chain order),
//! the folder is fsynced, and a new active file starts; its first record's `prev` is the last
//! hash of the rotated file. Beyond `keep-files` rotated files, the oldest are deleted; the
//! remaining chain then starts at a later seq, which [`verify`] accepts and reports as an
//! unverified start.
//!
//! # Restart
//!
//! On open, the log continues from the last record of the active file (or, when the active
//! file is empty or missing, of the newest rotated file): `seq + 1`, `prev = hash`. A last
//! line without its newline was torn by a crash in the middle of a write; it was never
//! flushed, so it is cut off (the file is truncated at the start of that line) and a warning
//! names the file, the byte offset and the number of bytes dropped. A *complete* last line
//! that is not a valid record (its hash does not recompute) is not a crash but damage or
//! tampering: opening fails, naming the file and offset, rather than continuing a chain from
//! a record that cannot be trusted; move the file aside (and keep it for the audit) to start
//! a new chain. One process writes a log at a time.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::judge::Stored;
use crate::{Action, Message, Outcome, Verdict};

/// `prev` of the record with seq 0.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The default `max-bytes`: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The smallest `max-bytes` accepted: below it, rotation would make a file per few records.
pub const MIN_MAX_BYTES: u64 = 4096;

/// Records waiting for the writer; beyond, [`DecisionLog::record`] waits.
const QUEUE: usize = 4096;

/// Records the writer appends with one write.
const MAX_BATCH: usize = 512;

/// How long a busy writer waits for records to gather before the next batch (the channel
/// holds [`QUEUE`]: 4096 records are 20 ms at 200,000 messages/s).
const GATHER: Duration = Duration::from_millis(1);

/// A write error is logged at most this often (all are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The bytes `,"hash":"` + 64 hex + `"}` at the end of every line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// The `[decision-log]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct DecisionLogConfig {
    /// The active file; relative paths are resolved against the config file's folder.
    pub path: PathBuf,
    /// Rotate before the active file would exceed this many bytes (at least
    /// [`MIN_MAX_BYTES`]; default [`DEFAULT_MAX_BYTES`]). A single record larger than this
    /// gets a file of its own.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept; the oldest beyond this are deleted (0, the default: keep all).
    #[serde(default)]
    pub keep_files: u64,
    /// What of the payload is kept besides its digests.
    #[serde(default)]
    pub payload: PayloadMode,
    /// Permissions of the files the log creates, on unix (default `0o600`: decisions name
    /// devices and topics, which may be personal data).
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_mode() -> u32 {
    0o600
}

/// What a record keeps of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadMode {
    /// Only the SHA-256 of the payload received and of the payload that left the chain.
    #[default]
    Digest,
    /// Also the payload as it left the chain (redactions applied; for a quarantined message,
    /// as it stood when it was held): `payload` as JSON when it is UTF-8 JSON, else
    /// `payload_base64`. Never the payload as received.
    Redacted,
}

impl DecisionLogConfig {
    /// A log at `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            keep_files: 0,
            payload: PayloadMode::Digest,
            mode: default_mode(),
        }
    }

    /// Checks the values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "decision-log.max-bytes = {}: at least {MIN_MAX_BYTES} (default {DEFAULT_MAX_BYTES})",
                self.max_bytes
            ));
        }
        if self.mode > 0o777 {
            return Err(format!(
                "decision-log.mode = {:#o}: permission bits only (e.g. 0o600)",
                self.mode
            ));
        }
        if self.path.file_name().is_none() {
            return Err(format!(
                "decision-log.path = {:?}: must name a file",
                self.path.display().to_string()
            ));
        }
        Ok(())
    }
}

/// Why the log could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionLogError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// A file could not be opened, read or prepared.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The last complete record of the file cannot be continued from.
    #[error(
        "{path}: the record at byte {offset} is not a valid decision record ({reason}); the \
         chain cannot be continued from it: move the file aside (keep it for the audit) to \
         start a new chain"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Records could not be written since the last flush, or the fsync failed.
    #[error("{path}: {lost} decision record(s) could not be written")]
    Write {
        /// The active file.
        path: PathBuf,
        /// Records lost since the previous flush.
        lost: u64,
        /// The last error seen.
        #[source]
        source: Option<io::Error>,
    },
    /// The writer thread could not be started.
    #[error("cannot start the decision-log writer thread")]
    Thread(#[source] io::Error),
    /// The writer thread is gone (it panicked).
    #[error("the decision-log writer thread has stopped")]
    Stopped,
}

/// The log's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecisionLogStats {
    /// Records written (not necessarily fsynced yet).
    pub written: u64,
    /// Decisions that could not be logged.
    pub lost: u64,
    /// Failed writes, renames and fsyncs.
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
}

/// The append-only decision log. Cheap to clone; every clone writes to the same chain.
/// Dropping the last clone writes and fsyncs what is queued and stops the writer.
///
/// ```no_run
/// use twinguard::decision_log::{DecisionLog, DecisionLogConfig};
/// use twinguard::{Action, ContentType, Message, Outcome};
///
/// let log = DecisionLog::open(&DecisionLogConfig::new("/var/lib/twinguard/decisions.ndjson"))?;
/// let message = Message::new("press-7", "plant/press-7/telemetry", ContentType::Json,
///     br#"{"temp": 21.5}"#.to_vec());
/// let outcome = Outcome::new(Action::Allow, message.payload.clone(), 1);
/// log.record(&message, &outcome);
/// log.flush()?; // written and fsynced
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DecisionLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    payload: PayloadMode,
    tx: Option<SyncSender<Msg>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

enum Msg {
    Record(Box<Record>),
    Flush(SyncSender<Result<(), DecisionLogError>>),
}

impl fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionLog")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// One line of the log, in the order its keys are written (the order the hash covers).
#[derive(Debug, Serialize)]
struct Record {
    seq: u64,
    /// Formatted by the writer, off the evaluating thread.
    #[serde(rename = "time", serialize_with = "rfc3339")]
    time_ms: u64,
    received_at_ms: u64,
    device: String,
    topic: String,
    generation: u64,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<Quarantine>,
    chain: Vec<Step>,
    alerts: Vec<AlertCode>,
    #[serde(serialize_with = "hex_digest")]
    payload_in_sha256: [u8; 32],
    #[serde(serialize_with = "hex_digest")]
    payload_out_sha256: [u8; 32],
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    lost: u64,
    prev: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The payload as a JSON value of the record: validated, not parsed into a tree. Kept byte
/// for byte unless it spans lines (a line break inside would end the NDJSON record), then
/// re-written compactly.
fn json_payload(payload: &[u8]) -> Option<Box<serde_json::value::RawValue>> {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_slice(payload).ok()?;
    if !raw.get().contains(['\n', '\r']) {
        return Some(raw);
    }
    let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    serde_json::value::to_raw_value(&value).ok()
}

fn hex_digest<S: serde::Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    let mut out = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(digest, &mut out);
    s.serialize_str(std::str::from_utf8(&out).unwrap_or_default())
}

fn rfc3339<S: serde::Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    // Past year 9999 (a broken clock) the formatter cannot write the time: clamp.
    const LAST_MS: u64 = 253_402_300_799_999;
    let at = UNIX_EPOCH + Duration::from_millis((*ms).min(LAST_MS));
    s.collect_str(&humantime::format_rfc3339_millis(at))
}

#[derive(Debug, Serialize)]
struct Quarantine {
    /// The policy that held it; `None` when the host did (no route, a refused forward).
    policy: Option<String>,
    reason: String,
    /// The quarantine store's record id; `None` when the store write failed or the caller
    /// did not say.
    record: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Step {
    policy: Arc<str>,
    version: Arc<str>,
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<&'static str>,
    fuel: u64,
    time_us: u64,
}

#[derive(Debug, Serialize)]
struct AlertCode {
    policy: Arc<str>,
    code: String,
    severity: crate::Severity,
}

impl DecisionLog {
    /// Opens (or creates) the log and starts its writer; continues the chain from the last
    /// record on disk (see the module documentation on restarts).
    pub fn open(config: &DecisionLogConfig) -> Result<Self, DecisionLogError> {
        config.validate().map_err(DecisionLogError::Config)?;
        let writer = Writer::open(config)?;
        let counters = Arc::clone(&writer.counters);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("twinguard-decision-log".into())
            .spawn(move || writer.run(&rx))
            .map_err(DecisionLogError::Thread)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: config.path.clone(),
                payload: config.payload,
                tx: Some(tx),
                writer: Mutex::new(Some(handle)),
                counters,
            }),
        })
    }

    /// The active file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Records a decision the caller did not store: no quarantine record id.
    pub fn record(&self, message: &Message, outcome: &Outcome) {
        self.send(message, outcome, None);
    }

    /// Records a decision with what the judge flow did with it in the quarantine store.
    pub fn record_stored(&self, message: &Message, outcome: &Outcome, stored: &Stored) {
        self.send(message, outcome, Some(stored));
    }

    /// Waits until everything recorded before this call is written and fsynced. An error
    /// when records were lost since the previous flush, or the fsync failed.
    pub fn flush(&self) -> Result<(), DecisionLogError> {
        let (ack, done) = mpsc::sync_channel(1);
        let tx = self.inner.tx.as_ref().ok_or(DecisionLogError::Stopped)?;
        tx.send(Msg::Flush(ack))
            .map_err(|_| DecisionLogError::Stopped)?;
        done.recv().map_err(|_| DecisionLogError::Stopped)?
    }

    /// The counters.
    pub fn stats(&self) -> DecisionLogStats {
        let c = &self.inner.counters;
        DecisionLogStats {
            written: c.written.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    fn send(&self, message: &Message, outcome: &Outcome, stored: Option<&Stored>) {
        let record = Box::new(Record::new(message, outcome, stored, self.inner.payload));
        let sent = self
            .inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Record(record)).is_ok());
        if !sent {
            // Only after the writer panicked; every record after is lost and counted.
            if self.inner.counters.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(
                    file = %self.inner.path.display(),
                    "decision log: the writer thread has stopped; decisions are not logged"
                );
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel makes the writer write what is queued, fsync and return.
        drop(self.tx.take());
        let handle = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Record {
    /// The fields the evaluating thread fills in; the writer adds `seq`, `lost` and `prev`.
    fn new(
        message: &Message,
        outcome: &Outcome,
        stored: Option<&Stored>,
        mode: PayloadMode,
    ) -> Self {
        let digest_in: [u8; 32] = Sha256::digest(&message.payload).into();
        let digest_out = if outcome.payload == message.payload {
            digest_in
        } else {
            Sha256::digest(&outcome.payload).into()
        };
        let quarantine = match &outcome.action {
            Action::Quarantine { policy, reason } => {
                let (record, store_error) = match stored {
                    Some(Stored::Record(id)) => (Some(*id), None),
                    Some(Stored::Failed(e)) => (None, Some(crate::error_chain(e))),
                    Some(Stored::Nothing) | None => (None, None),
                };
                Some(Quarantine {
                    policy: policy.clone(),
                    reason: reason.clone(),
                    record,
                    store_error,
                })
            }
            _ => None,
        };
        let chain = outcome
            .trace
            .iter()
            .map(|t| Step {
                policy: Arc::clone(&t.policy),
                version: Arc::clone(&t.version),
                verdict: t.verdict.name(),
                fault: match &t.verdict {
                    Verdict::Fault(f) => Some(f.code()),
                    _ => None,
                },
                fuel: t.fuel_used,
                time_us: u64::try_from(t.elapsed.as_micros()).unwrap_or(u64::MAX),
            })
            .collect();
        let alerts = outcome
            .alerts
            .iter()
            .map(|a| AlertCode {
                policy: Arc::clone(&a.policy),
                code: a.code.clone(),
                severity: a.severity,
            })
            .collect();
        let (payload, payload_base64) = match mode {
            PayloadMode::Digest => (None, None),
            PayloadMode::Redacted => match json_payload(&outcome.payload) {
                Some(raw) => (Some(raw), None),
                None => (None, Some(base64(&outcome.payload))),
            },
        };
        Self {
            seq: 0,
            time_ms: crate::now_ms(),
            received_at_ms: message.received_at_ms,
            device: message.device_id.clone(),
            topic: message.topic.clone(),
            generation: outcome.generation,
            action: outcome.action.name(),
            quarantine,
            chain,
            alerts,
            payload_in_sha256: digest_in,
            payload_out_sha256: digest_out,
            payload,
            payload_base64,
            lost: 0,
            prev: String::new(),
        }
    }

    /// The line (newline included) and its hash.
    fn encode(&self) -> (Vec<u8>, String) {
        // Serializing plain strings, numbers and a `Value` into memory cannot fail; should it,
        // the record still takes its place in the chain, saying so.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|e| {
            serde_json::to_vec(&serde_json::json!({
                "seq": self.seq,
                "error": format!("record could not be encoded: {e}"),
                "prev": self.prev,
            }))
            .unwrap_or_default()
        });
        let hash = sha256_hex(&line);
        line.pop(); // the closing `}`
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        (line, hash)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Standard base64 with padding (RFC 4648 §4): the crate's `base64` dependency belongs to the
/// admin feature, and this is the only use here.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- the writer ----

/// The chain's head: the next seq and the hash it links to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    next_seq: u64,
    prev: String,
}

struct Writer {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    max_bytes: u64,
    keep_files: u64,
    mode: u32,
    /// `None` after a rotation whose new file could not be created; retried on each write.
    file: Option<File>,
    /// Bytes of complete records in the active file.
    len: u64,
    /// A failed write may have left part of a line behind `len`: cut it before writing.
    dirty: bool,
    /// Seq of the active file's first record; `None` while it is empty.
    active_first: Option<u64>,
    /// What is on disk.
    head: Head,
    /// What is on disk plus the records in `buf`.
    staged: Head,
    buf: Vec<u8>,
    buffered: u64,
    /// Decisions lost since the last record written (the next one carries the count).
    lost: u64,
    /// Since the last flush.
    lost_since_flush: u64,
    last_error: Option<io::Error>,
    last_error_log: Option<Instant>,
    counters: Arc<Counters>,
}

impl Writer {
    fn open(config: &DecisionLogConfig) -> Result<Self, DecisionLogError> {
        let path = config.path.clone();
        let io_err = |source| DecisionLogError::Io {
            path: path.clone(),
            source,
        };
        let mut file = open_append(&path, config.mode).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let tail = read_tail(&mut file, len).map_err(io_err)?;
        if tail.complete_end < len {
            tracing::warn!(
                file = %path.display(),
                offset = tail.complete_end,
                bytes = len - tail.complete_end,
                "decision log: the last line is incomplete (a crash in the middle of a write); \
                 cutting it off at byte {} and continuing the chain from the record before it",
                tail.complete_end
            );
            file.set_len(tail.complete_end).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let corrupt = |path: &Path, offset, reason| DecisionLogError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let (head, active_first) = match tail.last {
            Some((offset, line)) => {
                let (last, hash) = check_line(&line).map_err(|r| corrupt(&path, offset, r))?;
                let first = first_seq(&path)
                    .map_err(io_err)?
                    .map_err(|r| corrupt(&path, 0, r))?;
                let head = Head {
                    next_seq: last.seq + 1,
                    prev: hash,
                };
                (head, Some(first))
            }
            // An empty active file: continue from the newest rotated one, if any.
            None => match rotated_files(&path).map_err(io_err)?.pop() {
                Some((_, rotated)) => {
                    let rotated_err = |source| DecisionLogError::Io {
                        path: rotated.clone(),
                        source,
                    };
                    let mut f = File::open(&rotated).map_err(rotated_err)?;
                    let len = f.metadata().map_err(rotated_err)?.len();
                    let tail = read_tail(&mut f, len).map_err(rotated_err)?;
                    let Some((offset, line)) = tail.last.filter(|_| tail.complete_end == len)
                    else {
                        return Err(corrupt(
                            &rotated,
                            tail.complete_end,
                            "a rotated file must end with a complete record".into(),
                        ));
                    };
                    let (last, hash) =
                        check_line(&line).map_err(|r| corrupt(&rotated, offset, r))?;
                    let head = Head {
                        next_seq: last.seq + 1,
                        prev: hash,
                    };
                    (head, None)
                }
                None => (
                    Head {
                        next_seq: 0,
                        prev: GENESIS.into(),
                    },
                    None,
                ),
            },
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // `validate` checked that the path names a file.
        let name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
        Ok(Self {
            dir,
            name,
            max_bytes: config.max_bytes,
            keep_files: config.keep_files,
            mode: config.mode,
            file: Some(file),
            len: tail.complete_end,
            dirty: false,
            active_first,
            staged: head.clone(),
            head,
            buf: Vec::new(),
            buffered: 0,
            lost: 0,
            lost_since_flush: 0,
            last_error: None,
            last_error_log: None,
            counters: Arc::default(),
            path,
        })
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        let mut acks = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(msg) = next {
                match msg {
                    Msg::Record(record) => self.append(*record),
                    Msg::Flush(ack) => acks.push(ack),
                }
                taken += 1;
                next = if taken < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            self.write_out();
            // Under load, let records gather rather than be woken for each one: a blocked
            // receiver costs every sender a futex wake (measured: ~10 % of a busy judge).
            // Idle, the next recv() blocks until a record comes.
            if taken > 1 && acks.is_empty() {
                std::thread::sleep(GATHER);
            }
            if !acks.is_empty() {
                let result = self.sync();
                for ack in acks.drain(..) {
                    let _ = ack.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(e.duplicate(&self.path)),
                    });
                }
            }
        }
        // Every handle is gone: what was queued is in `buf`.
        self.write_out();
        let _ = self.sync();
    }

    /// Adds one record to the batch, rotating first when it would not fit.
    fn append(&mut self, mut record: Record) {
        let (mut line, mut hash) = self.stage(&mut record);
        let used = self.len + self.buf.len() as u64;
        if used > 0 && used + line.len() as u64 > self.max_bytes {
            self.write_out();
            self.rotate();
            // A failed write rolled the head back: encode against what is on disk.
            (line, hash) = self.stage(&mut record);
        }
        self.buf.extend_from_slice(&line);
        self.buffered += 1;
        self.staged = Head {
            next_seq: record.seq + 1,
            prev: hash,
        };
    }

    fn stage(&self, record: &mut Record) -> (Vec<u8>, String) {
        record.seq = self.staged.next_seq;
        record.prev.clone_from(&self.staged.prev);
        record.lost = if self.buffered == 0 { self.lost } else { 0 };
        record.encode()
    }

    /// Appends the batch: on success the head moves; on failure its records are lost.
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.write_buf() {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                if self.active_first.is_none() {
                    self.active_first = Some(self.head.next_seq);
                }
                self.head = self.staged.clone();
                self.lost = 0;
                self.counters
                    .written
                    .fetch_add(self.buffered, Ordering::Relaxed);
            }
            Err(e) => {
                self.dirty = true;
                self.lost += self.buffered;
                self.lost_since_flush += self.buffered;
                self.counters
                    .lost
                    .fetch_add(self.buffered, Ordering::Relaxed);
                let what = format!("cannot append {} record(s)", self.buffered);
                self.failed(&what, e);
                self.staged = self.head.clone();
            }
        }
        self.buf.clear();
        self.buffered = 0;
    }

    fn write_buf(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let file = open_append(&self.path, self.mode)?;
            self.len = file.metadata()?.len();
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        if self.dirty {
            // Cut what a failed write may have left, so the next line starts a line.
            file.set_len(self.len)?;
            self.dirty = false;
        }
        file.write_all(&self.buf)
    }

    /// Fsyncs the active file; an error when records were lost since the last call.
    fn sync(&mut self) -> Result<(), DecisionLogError> {
        let synced = match self.file.as_ref().map(File::sync_data) {
            Some(Err(e)) => {
                self.failed("cannot fsync", io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
            _ => Ok(()),
        };
        let lost = std::mem::take(&mut self.lost_since_flush);
        match synced {
            Err(e) => Err(DecisionLogError::Write {
                path: self.path.clone(),
                lost,
                source: Some(e),
            }),
            Ok(()) if lost > 0 => Err(DecisionLogError::Write {
                path: self.path.clone(),
                lost,
                source: self
                    .last_error
                    .as_ref()
                    .map(|e| io::Error::new(e.kind(), e.to_string())),
            }),
            Ok(()) => Ok(()),
        }
    }

    /// Renames the full active file to `<path>.<first seq>` and starts a new one. On any
    /// failure the writer goes on appending to the file it has (a long file loses nothing).
    fn rotate(&mut self) {
        let Some(first) = self.active_first else {
            return;
        };
        if self.dirty {
            // The last write failed: the file may still hold part of a line.
            return;
        }
        if let Some(Err(e)) = self.file.as_ref().map(File::sync_all) {
            return self.failed("cannot fsync before rotating", e);
        }
        let mut name = self.name.clone();
        name.push(format!(".{first:020}"));
        let target = self.dir.join(name);
        if target.exists() {
            let e = io::Error::new(io::ErrorKind::AlreadyExists, "exists");
            return self.failed(&format!("cannot rotate to {}", target.display()), e);
        }
        if let Err(e) = fs::rename(&self.path, &target) {
            return self.failed(&format!("cannot rotate to {}", target.display()), e);
        }
        sync_dir(&self.dir);
        tracing::info!(
            file = %target.display(),
            first_seq = first,
            last_seq = self.head.next_seq - 1,
            last_hash = %self.head.prev,
            "decision log rotated"
        );
        self.file = None;
        self.len = 0;
        self.active_first = None;
        match open_append(&self.path, self.mode) {
            Ok(f) => self.file = Some(f),
            // Retried by the next write.
            Err(e) => self.failed("cannot create the new active file", e),
        }
        self.prune();
    }

    /// Deletes the oldest rotated files beyond `keep-files`.
    fn prune(&mut self) {
        if self.keep_files == 0 {
            return;
        }
        let files = match rotated_files(&self.path) {
            Ok(files) => files,
            Err(e) => return self.failed("cannot list rotated files", e),
        };
        let excess = files.len().saturating_sub(self.keep_files as usize);
        for (_, old) in &files[..excess] {
            match fs::remove_file(old) {
                Ok(()) => {
                    tracing::info!(file = %old.display(), "decision log: deleted (keep-files)")
                }
                Err(e) => tracing::warn!(
                    file = %old.display(),
                    "decision log: cannot delete a rotated file beyond keep-files: {e}"
                ),
            }
        }
    }

    fn failed(&mut self, what: &str, e: io::Error) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|at| now.duration_since(at) >= ERROR_LOG_EVERY)
        {
            self.last_error_log = Some(now);
            tracing::error!(
                file = %self.path.display(),
                lost = self.counters.lost.load(Ordering::Relaxed),
                "decision log: {what}: {e} (the next record written says how many were lost)"
            );
        }
        self.last_error = Some(e);
    }
}

impl DecisionLogError {
    /// A copy for every flush waiting on the same result (`io::Error` is not `Clone`).
    fn duplicate(&self, path: &Path) -> Self {
        match self {
            Self::Write { lost, source, .. } => Self::Write {
                path: path.to_path_buf(),
                lost: *lost,
                source: source
                    .as_ref()
                    .map(|e| io::Error::new(e.kind(), e.to_string())),
            },
            other => Self::Config(other.to_string()),
        }
    }
}

fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

/// Makes a rename durable (unix; elsewhere the rename is as durable as the system makes it).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), "decision log: cannot fsync the folder: {e}");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The rotated files of the log at `path` (`<name>.<20 digits>`), oldest first.
fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|n| n.strip_prefix('.'))
        else {
            continue;
        };
        if rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(seq) = rest.parse() {
                files.push((seq, entry.path()));
            }
        }
    }
    files.sort();
    Ok(files)
}

struct Tail {
    /// The offset after the last newline: where complete records end.
    complete_end: u64,
    /// The last complete line (without its newline) and its offset.
    last: Option<(u64, Vec<u8>)>,
}

/// Reads backwards from `len` to find the last complete line.
fn read_tail(file: &mut File, len: u64) -> io::Result<Tail> {
    const CHUNK: u64 = 64 * 1024;
    let mut start = len; // `buf` holds the bytes from `start` to `len`
    let mut buf = Vec::new();
    loop {
        if let Some(nl) = buf.iter().rposition(|&b| b == b'\n') {
            let complete_end = start + nl as u64 + 1;
            if let Some(before) = buf[..nl].iter().rposition(|&b| b == b'\n') {
                let line = buf[before + 1..nl].to_vec();
                return Ok(Tail {
                    complete_end,
                    last: Some((start + before as u64 + 1, line)),
                });
            }
            if start == 0 {
                return Ok(Tail {
                    complete_end,
                    last: Some((0, buf[..nl].to_vec())),
                });
            }
        } else if start == 0 {
            return Ok(Tail {
                complete_end: 0,
                last: None,
            });
        }
        let n = CHUNK.min(start);
        start -= n;
        // `n` is at most CHUNK, which fits in usize.
        let mut chunk = vec![0; n as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
}

/// The seq of the first record of a file (the file has at least one complete line).
fn first_seq(path: &Path) -> io::Result<Result<u64, String>> {
    let mut line = Vec::new();
    BufReader::new(File::open(path)?).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(check_line(&line).map(|(head, _)| head.seq))
}

// ---- verification ----

/// The fields of a record the chain is made of.
#[derive(Debug, Deserialize)]
struct Link {
    seq: u64,
    prev: String,
    #[serde(default)]
    lost: u64,
}

/// Checks one line (without its newline): its hash recomputes and its body is a record.
/// Returns the record's links and its hash.
fn check_line(line: &[u8]) -> Result<(Link, String), String> {
    let split = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .filter(|&at| at > 0)
        .ok_or("not a decision record (too short)")?;
    let (body, suffix) = line.split_at(split);
    let hash = suffix
        .strip_prefix(b",\"hash\":\"")
        .and_then(|s| s.strip_suffix(b"\"}"))
        .filter(|h| {
            h.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
        .ok_or("not a decision record (it does not end with its \"hash\")")?;
    // ASCII hex digits: valid UTF-8.
    let hash = String::from_utf8_lossy(hash).into_owned();
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    let computed = hex::encode(hasher.finalize());
    let mut body = body.to_vec();
    body.push(b'}');
    let link: Link =
        serde_json::from_slice(&body).map_err(|e| format!("not a decision record ({e})"))?;
    if computed != hash {
        return Err(format!(
            "its content does not match its hash (recorded {}…, computed {}…)",
            &hash[..12],
            &computed[..12]
        ));
    }
    if link.prev.len() != 64 {
        return Err("its prev is not a SHA-256".into());
    }
    Ok((link, hash))
}

/// What [`verify`] found when the chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Every file, in chain order.
    pub files: Vec<FileReport>,
    /// Records checked.
    pub records: u64,
    /// The seq of the first record.
    pub first_seq: u64,
    /// The seq of the last record.
    pub last_seq: u64,
    /// The `prev` of the first record.
    pub start_prev: String,
    /// Whether the chain starts at the beginning (seq 0, prev all zeros). When `false`, older
    /// records were deleted (`keep-files`) or not given: what came before `first_seq` is
    /// not verified.
    pub start_verified: bool,
    /// The hash of the last record: keep it elsewhere to detect a later truncation.
    pub last_hash: String,
    /// Decisions the writer could not log, as the records after them say (`lost`).
    pub lost: u64,
    /// Bytes after the last complete record of the last file that are not a complete line
    /// (a record being written, or torn by a crash): file and offset. Not verified; the
    /// writer cuts them off when it next opens the log.
    pub incomplete_tail: Option<(PathBuf, u64)>,
}

/// One file of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Its records.
    pub records: u64,
    /// Its first and last seq; `None` for an empty file.
    pub seqs: Option<(u64, u64)>,
}

/// What broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakKind {
    /// The record's bytes do not match its hash, it is not a record, or it does not link to
    /// the record before it (that one was altered or replaced).
    Altered,
    /// Records are missing before this one (a seq gap).
    Removed,
    /// The record is out of order (seq goes backwards, or the missing seq comes later).
    Reordered,
}

impl BreakKind {
    /// `altered`, `removed` or `reordered`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Altered => "altered",
            Self::Removed => "removed",
            Self::Reordered => "reordered",
        }
    }
}

/// The first record where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Break {
    /// The file.
    pub file: PathBuf,
    /// The line, from 1.
    pub line: u64,
    /// The record's seq, when the line has one.
    pub seq: Option<u64>,
    /// What broke.
    pub kind: BreakKind,
    /// In words.
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "record seq {seq}: ")?;
        }
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

/// Why [`verify`] did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chain is broken; the first broken record.
    #[error("decision log chain broken at {0}")]
    Broken(Break),
    /// A file could not be read.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No file holds a record.
    #[error("no decision records in the files given")]
    Empty,
}

/// Checks that `files` (the active file and rotated ones, in any order: they are ordered by
/// their first seq) hold one unbroken chain: every line is a record whose hash recomputes,
/// seq grows by exactly 1, and every `prev` is the hash of the record before it. The error
/// names the first record that breaks it.
pub fn verify(files: &[PathBuf]) -> Result<VerifyReport, VerifyError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Io { path, source }
    };
    // Order by the first record's seq (read without checking its hash: an altered first
    // record must still be reported where it is); files whose first line has no seq go last,
    // in the order given, and are reported when the walk reaches them.
    let mut ordered = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let first = peek_seq(path).map_err(io_err(path))?;
        ordered.push((first.unwrap_or(u64::MAX), i, path));
    }
    ordered.sort();
    let ordered: Vec<&PathBuf> = ordered.into_iter().map(|(_, _, p)| p).collect();

    let mut report = VerifyReport {
        files: Vec::new(),
        records: 0,
        first_seq: 0,
        last_seq: 0,
        start_prev: String::new(),
        start_verified: false,
        last_hash: String::new(),
        lost: 0,
        incomplete_tail: None,
    };
    let mut expect: Option<(u64, String)> = None;
    for (file_index, path) in ordered.iter().enumerate() {
        let mut reader = BufReader::new(File::open(path).map_err(io_err(path))?);
        let mut file = FileReport {
            path: path.to_path_buf(),
            records: 0,
            seqs: None,
        };
        let mut line = Vec::new();
        let mut number = 0u64;
        let mut offset = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            number += 1;
            let broken = |seq, kind, detail| {
                VerifyError::Broken(Break {
                    file: path.to_path_buf(),
                    line: number,
                    seq,
                    kind,
                    detail,
                })
            };
            if line.last() != Some(&b'\n') {
                if file_index + 1 == ordered.len() {
                    report.incomplete_tail = Some((path.to_path_buf(), offset));
                    break;
                }
                return Err(broken(
                    None,
                    BreakKind::Altered,
                    "an incomplete line in the middle of the chain".into(),
                ));
            }
            offset += n as u64;
            line.pop();
            let (link, hash) = match check_line(&line) {
                Ok(checked) => checked,
                Err(reason) => {
                    let seq = serde_json::from_slice::<Link>(&line).ok().map(|l| l.seq);
                    return Err(broken(seq, BreakKind::Altered, reason));
                }
            };
            let seq = link.seq;
            match &expect {
                None => {
                    if seq == 0 && link.prev != GENESIS {
                        return Err(broken(
                            Some(seq),
                            BreakKind::Altered,
                            "the record with seq 0 must have prev = 64 zeros".into(),
                        ));
                    }
                    report.first_seq = seq;
                    report.start_prev.clone_from(&link.prev);
                    report.start_verified = seq == 0;
                }
                Some((want, _)) if seq > *want => {
                    return Err(match find_seq(&ordered, file_index, number, *want)? {
                        Some((at, line_no)) => broken(
                            Some(seq),
                            BreakKind::Reordered,
                            format!(
                                "expected seq {want} here, found seq {seq}; seq {want} comes \
                                 later, at {}:{line_no}",
                                at.display()
                            ),
                        ),
                        None => broken(
                            Some(seq),
                            BreakKind::Removed,
                            if seq - want == 1 {
                                format!("the record with seq {want} before it is missing")
                            } else {
                                format!(
                                    "{} records before it are missing (seq {want} to {})",
                                    seq - want,
                                    seq - 1
                                )
                            },
                        ),
                    });
                }
                Some((want, _)) if seq < *want => {
                    return Err(broken(
                        Some(seq),
                        BreakKind::Reordered,
                        format!(
                            "expected seq {want} here: seq goes backwards (a record moved or \
                             copied)"
                        ),
                    ));
                }
                Some((want, prev)) => {
                    if link.prev != *prev {
                        return Err(broken(
                            Some(seq),
                            BreakKind::Altered,
                            format!(
                                "its prev does not match the hash of the record with seq {}: \
                                 that record was altered or replaced",
                                want - 1
                            ),
                        ));
                    }
                }
            }
            report.records += 1;
            report.lost += link.lost;
            report.last_seq = seq;
            file.records += 1;
            file.seqs = Some((file.seqs.map_or(seq, |(first, _)| first), seq));
            report.last_hash.clone_from(&hash);
            expect = Some((seq + 1, hash));
        }
        report.files.push(file);
    }
    if report.records == 0 {
        return Err(VerifyError::Empty);
    }
    Ok(report)
}

/// The `seq` of a file's first line, its hash unchecked.
fn peek_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut line = Vec::new();
    BufReader::new(File::open(path)?).read_until(b'\n', &mut line)?;
    Ok(serde_json::from_slice::<Link>(line.trim_ascii_end())
        .ok()
        .map(|l| l.seq))
}

/// Where the record with `seq` is, looking from line `after` of `ordered[from]` onwards.
fn find_seq(
    ordered: &[&PathBuf],
    from: usize,
    after: u64,
    seq: u64,
) -> Result<Option<(PathBuf, u64)>, VerifyError> {
    for (i, path) in ordered.iter().enumerate().skip(from) {
        let file = File::open(path).map_err(|source| VerifyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line_no = n as u64 + 1;
            let Ok(line) = line else { break };
            if i == from && line_no <= after {
                continue;
            }
            let Some(split) = line.len().checked_sub(HASH_SUFFIX_LEN) else {
                continue;
            };
            let mut body = line[..split].to_vec();
            body.push(b'}');
            if serde_json::from_slice::<Link>(&body).is_ok_and(|l| l.seq == seq) {
                return Ok(Some((path.to_path_buf(), line_no)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::{Alert, ContentType, PolicyTrace, Severity};

    fn message(device: &str, i: u64) -> Message {
        let mut m = Message::new(
            device,
            format!("plant/{device}/telemetry"),
            ContentType::Json,
            format!(r#"{{"i":{i},"owner":{{"email":"a@example.com"}}}}"#).into_bytes(),
        );
        m.received_at_ms = 1_795_647_723_000 + i;
        m
    }

    fn outcome(quarantine: bool) -> Outcome {
        let version: Arc<str> = "0123456789abcdef".into();
        let action = if quarantine {
            Action::Quarantine {
                policy: Some("range".into()),
                reason: "t out of range".into(),
            }
        } else {
            Action::Redact
        };
        let mut o = Outcome::new(action, br#"{"i":0,"owner":{}}"#.to_vec(), 7);
        o.trace = vec![
            PolicyTrace {
                policy: "pii".into(),
                version: Arc::clone(&version),
                verdict: Verdict::Redact(1),
                fuel_used: 1234,
                elapsed: Duration::from_micros(17),
            },
            PolicyTrace {
                policy: "range".into(),
                version: Arc::clone(&version),
                verdict: Verdict::Fault(crate::Fault::Fuel(10)),
                fuel_used: 10,
                elapsed: Duration::from_micros(3),
            },
        ];
        o.alerts = vec![Alert::new(
            "range",
            version,
            Severity::High,
            "policy-fault",
            "fuel",
        )];
        o
    }

    fn config(dir: &Path) -> DecisionLogConfig {
        let mut c = DecisionLogConfig::new(dir.join("decisions.ndjson"));
        c.max_bytes = MIN_MAX_BYTES;
        c
    }

    fn write(log: &DecisionLog, device: &str, range: std::ops::Range<u64>) {
        for i in range {
            let m = message(device, i);
            log.record_stored(&m, &outcome(i % 3 == 0), &Stored::Record(i));
        }
        log.flush().unwrap();
    }

    /// The rotated files, oldest first, then the active one.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("decisions.ndjson"))
            .collect();
        files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "ndjson"), p.clone()));
        files
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn put_lines(path: &Path, lines: &[String]) {
        fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    fn broken(files: &[PathBuf]) -> Break {
        match verify(files) {
            Err(VerifyError::Broken(b)) => b,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    /// A log across rotations and a restart: 40 records, several files.
    fn written(dir: &Path) -> Vec<PathBuf> {
        let log = DecisionLog::open(&config(dir)).unwrap();
        write(&log, "d1", 0..25);
        drop(log);
        let log = DecisionLog::open(&config(dir)).unwrap();
        write(&log, "d2", 25..40);
        assert_eq!(log.stats().written, 15);
        drop(log);
        files(dir)
    }

    #[test]
    fn a_log_across_rotation_and_restart_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let files = written(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        // Given in any order: ordered by first seq.
        let mut reversed = files.clone();
        reversed.reverse();
        let report = verify(&reversed).unwrap();
        assert_eq!(report.records, 40);
        assert_eq!((report.first_seq, report.last_seq), (0, 39));
        assert!(report.start_verified);
        assert_eq!(report.files.len(), files.len());
        assert_eq!(report.files[0].seqs.unwrap().0, 0);
        for path in &files {
            assert!(fs::metadata(path).unwrap().len() <= MIN_MAX_BYTES);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }

        let first: serde_json::Value = serde_json::from_str(&lines(&files[0])[0]).unwrap();
        assert_eq!(first["seq"], 0);
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["action"], "quarantine");
        assert_eq!(first["quarantine"]["record"], 0);
        assert_eq!(first["quarantine"]["reason"], "t out of range");
        assert_eq!(first["chain"][0]["policy"], "pii");
        assert_eq!(first["chain"][0]["fuel"], 1234);
        assert_eq!(first["chain"][0]["time_us"], 17);
        assert_eq!(first["chain"][1]["verdict"], "fault");
        assert_eq!(first["chain"][1]["fault"], "fuel");
        assert_eq!(first["alerts"][0]["code"], "policy-fault");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            first["payload_in_sha256"],
            sha256_hex(&message("d1", 0).payload)
        );
        assert!(
            first.get("payload").is_none(),
            "digest mode keeps no payload"
        );
        // The hash as documented: SHA-256 of the line without `,"hash":…`, closed by `}`.
        let line = &lines(&files[0])[0];
        let body = format!("{}}}", &line[..line.len() - HASH_SUFFIX_LEN]);
        assert_eq!(first["hash"], sha256_hex(body.as_bytes()));
        assert!(!line.contains("a@example.com"));
    }

    #[test]
    fn an_altered_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = written(dir.path());
        let mut l = lines(&files[1]);
        let seq: u64 = serde_json::from_str::<serde_json::Value>(&l[2]).unwrap()["seq"]
            .as_u64()
            .unwrap();
        l[2] = l[2].replace("\"action\":\"redact\"", "\"action\":\"allow\"");
        l[2] = l[2].replace("\"action\":\"quarantine\"", "\"action\":\"allow\"");
        put_lines(&files[1], &l);
        let b = broken(&files);
        assert_eq!((b.kind, b.seq, b.line), (BreakKind::Altered, Some(seq), 3));
        assert_eq!(b.file, files[1]);
        assert!(
            b.to_string()
                .contains(&format!("record seq {seq}: altered")),
            "{b}"
        );
    }

    #[test]
    fn an_altered_record_with_a_recomputed_hash_breaks_the_next_link() {
        let dir = tempfile::tempdir().unwrap();
        let files = written(dir.path());
        let mut l = lines(&files[0]);
        // Re-hash the forged record as the writer would: only the link of the next breaks.
        let forged = l[1].replace("\"device\":\"d1\"", "\"device\":\"dX\"");
        let body = format!("{}}}", &forged[..forged.len() - HASH_SUFFIX_LEN]);
        l[1] = format!(
            "{},\"hash\":\"{}\"}}",
            &body[..body.len() - 1],
            sha256_hex(body.as_bytes())
        );
        put_lines(&files[0], &l);
        let b = broken(&files);
        assert_eq!((b.kind, b.seq), (BreakKind::Altered, Some(2)));
        assert!(b.detail.contains("seq 1"), "{b}");
    }

    #[test]
    fn a_removed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = written(dir.path());
        let mut l = lines(&files[0]);
        l.remove(2);
        put_lines(&files[0], &l);
        let b = broken(&files);
        assert_eq!((b.kind, b.seq, b.line), (BreakKind::Removed, Some(3), 3));
        assert!(b.detail.contains("seq 2"), "{b}");
    }

    #[test]
    fn swapped_records_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = written(dir.path());
        let mut l = lines(&files[0]);
        l.swap(1, 2);
        put_lines(&files[0], &l);
        let b = broken(&files);
        assert_eq!((b.kind, b.seq, b.line), (BreakKind::Reordered, Some(2), 2));
        assert!(b.detail.contains("seq 1 comes later"), "{b}");
    }

    #[test]
    fn a_removed_middle_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = written(dir.path());
        let removed = files.remove(1);
        let (first, last) = verify(std::slice::from_ref(&removed)).unwrap().files[0]
            .seqs
            .unwrap();
        let b = broken(&files);
        assert_eq!(
            (b.kind, b.seq, b.line),
            (BreakKind::Removed, Some(last + 1), 1)
        );
        assert!(b.detail.contains(&format!("seq {first} to {last}")), "{b}");
    }

    #[test]
    fn a_chain_without_its_oldest_files_is_accepted_as_unverified_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.keep_files = 1;
        let log = DecisionLog::open(&c).unwrap();
        write(&log, "d1", 0..40);
        drop(log);
        let files = files(dir.path());
        assert_eq!(files.len(), 2, "one rotated file kept, and the active one");
        let report = verify(&files).unwrap();
        assert!(!report.start_verified);
        assert!(report.first_seq > 0);
        assert_eq!(report.last_seq, 39);
        assert_eq!(report.start_prev.len(), 64);
    }

    #[test]
    fn a_torn_last_line_is_cut_off_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let log = DecisionLog::open(&c).unwrap();
        write(&log, "d1", 0..3);
        drop(log);
        let good = fs::metadata(&c.path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&c.path).unwrap();
        f.write_all(b"{\"seq\":3,\"time\":\"2026-").unwrap();
        drop(f);
        // A verifier reading it sees an incomplete tail, not a broken chain.
        let report = verify(std::slice::from_ref(&c.path)).unwrap();
        assert_eq!(report.incomplete_tail, Some((c.path.clone(), good)));
        let log = DecisionLog::open(&c).unwrap();
        assert_eq!(fs::metadata(&c.path).unwrap().len(), good);
        write(&log, "d1", 3..5);
        drop(log);
        let report = verify(&files(dir.path())).unwrap();
        assert_eq!((report.records, report.last_seq), (5, 4));
        assert_eq!(report.incomplete_tail, None);
    }

    #[test]
    fn a_damaged_complete_last_line_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let log = DecisionLog::open(&c).unwrap();
        write(&log, "d1", 0..3);
        drop(log);
        let mut l = lines(&c.path);
        l[2] = l[2].replace("d1", "d9");
        put_lines(&c.path, &l);
        let e = DecisionLog::open(&c).unwrap_err();
        assert!(matches!(e, DecisionLogError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("move the file aside"), "{e}");
    }

    #[test]
    fn a_restart_after_rotation_continues_from_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let log = DecisionLog::open(&c).unwrap();
        write(&log, "d1", 0..20);
        drop(log);
        // As if the process stopped right after a rotation: the active file is gone.
        let active = lines(&c.path);
        let first = serde_json::from_str::<serde_json::Value>(&active[0]).unwrap()["seq"]
            .as_u64()
            .unwrap();
        let mut name = c.path.clone().into_os_string();
        name.push(format!(".{first:020}"));
        fs::rename(&c.path, &name).unwrap();
        let log = DecisionLog::open(&c).unwrap();
        write(&log, "d1", 20..22);
        drop(log);
        let report = verify(&files(dir.path())).unwrap();
        assert_eq!((report.records, report.last_seq), (22, 21));
    }

    #[test]
    fn concurrent_records_form_one_chain_with_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.max_bytes = 64 * 1024;
        c.payload = PayloadMode::Redacted;
        let log = DecisionLog::open(&c).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        let m = message(&format!("t{t}"), i);
                        log.record(&m, &outcome(false));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        log.flush().unwrap();
        assert_eq!(log.stats().written, 2000);
        let files = files(dir.path());
        assert!(files.len() > 1);
        let report = verify(&files).unwrap();
        assert_eq!((report.records, report.last_seq), (2000, 1999));
        let mut seen = std::collections::HashSet::new();
        for path in &files {
            for l in lines(path) {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                assert_eq!(v["payload"]["owner"], serde_json::json!({}));
                seen.insert((
                    v["device"].to_string(),
                    v["received_at_ms"].as_u64().unwrap(),
                ));
            }
        }
        assert_eq!(seen.len(), 2000);
    }

    #[test]
    fn non_json_payloads_are_kept_as_base64_in_redacted_mode() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let m = Message::new("d", "t", ContentType::Binary, vec![0, 1, 2]);
        let o = Outcome::new(Action::Allow, vec![0xff, 0xfe], 1);
        let r = Record::new(&m, &o, None, PayloadMode::Redacted);
        assert_eq!(r.payload_base64.as_deref(), Some("//4="));
        assert!(r.payload.is_none());
    }

    #[test]
    fn json_payloads_keep_their_bytes_unless_they_span_lines() {
        let m = Message::new("d", "t", ContentType::Json, b"{}".to_vec());
        let kept = Outcome::new(Action::Allow, br#"{"a": 1,  "b":[2]}"#.to_vec(), 1);
        let r = Record::new(&m, &kept, None, PayloadMode::Redacted);
        assert_eq!(
            r.payload.as_ref().map(|p| p.get()),
            Some(r#"{"a": 1,  "b":[2]}"#)
        );
        let lines = Outcome::new(Action::Allow, b"{\n  \"a\": 1\n}\n".to_vec(), 1);
        let r = Record::new(&m, &lines, None, PayloadMode::Redacted);
        assert_eq!(r.payload.as_ref().map(|p| p.get()), Some(r#"{"a":1}"#));
        // The record stays one line either way.
        let (line, _) = r.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
    }

    #[test]
    fn settings_out_of_range_name_the_key() {
        let mut c = DecisionLogConfig::new("d.ndjson");
        c.max_bytes = 0;
        assert!(c.validate().unwrap_err().contains("decision-log.max-bytes"));
        let mut c = DecisionLogConfig::new("d.ndjson");
        c.mode = 0o10000;
        assert!(c.validate().unwrap_err().contains("decision-log.mode"));
        let c: DecisionLogConfig =
            toml::from_str("path = \"d\"\npayload = \"redacted\"\nmode = 0o640").unwrap();
        assert_eq!(
            (c.payload, c.mode, c.max_bytes),
            (PayloadMode::Redacted, 0o640, DEFAULT_MAX_BYTES)
        );
        assert!(toml::from_str::<DecisionLogConfig>("path = \"d\"\nsize = 1").is_err());
    }
}
