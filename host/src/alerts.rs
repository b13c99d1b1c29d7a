//! Alert sinks: every alert of an [`Outcome`] becomes one [`SecurityEvent`] (the JSON schema in
//! `docs/alerts.md`) and goes to every configured sink: a JSON-lines file, syslog (RFC 5424)
//! over UDP or TCP, and any [`AlertSink`] the embedder adds (the gateway's MQTT alerts topic).
//!
//! ```toml
//! [alerts]
//! file = "alerts.ndjson"           # JSON lines, appended, flushed per event; relative to the config
//! dedup-window-ms = 60000          # identical alerts within this window are sent once (0 = off)
//! dedup-max-keys = 10000           # distinct alerts tracked at once; more are sent untracked
//! queue-capacity = 1024            # events waiting per sink; beyond that they are dropped and counted
//! [[alerts.syslog]]
//! address = "127.0.0.1:514"        # host:port
//! transport = "udp"                # or "tcp" (octet-counting framing, RFC 6587)
//! facility = "local0"              # kern, user, ..., local0-local7
//! # hostname = "gw-1"              # default: this machine's name
//! # sd-id = "twinguard@32473"      # the STRUCTURED-DATA id (32473: the documentation PEN)
//! ```
//!
//! # Rate limiting
//!
//! Alerts are identical when device, policy, code and detail are equal. The first one is sent
//! and opens a window of `dedup-window-ms`; repeats inside it are only counted. The count goes
//! out in the next event for that alert after the window: the next occurrence (its `count` is the
//! repeats plus itself), or, when none comes, a summary event once the window has closed
//! (checked about every second), on [`Alerts::flush`], or at shutdown. Every occurrence is thus
//! counted exactly once: the sum of `count` over the events sent is the number of alerts raised.
//!
//! # Failure
//!
//! Each sink has its own worker thread and bounded queue, so the thread evaluating messages never
//! waits on a disk, a network or another sink: a full queue drops the event for that sink and
//! counts it. A sink that fails is counted and logged (once when it starts failing, once when it
//! recovers) and does not hold up the others; its events are not retried, so the JSON-lines file
//! is the record to keep when a SIEM may be down. [`Alerts::stats`] reports all counters.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Action, Alert, BoxError, Message, Outcome, Severity};

/// The version of the [`SecurityEvent`] schema; raised on any change a consumer could notice
/// other than a new field.
pub const SCHEMA_VERSION: u32 = 1;

/// The STRUCTURED-DATA id used when `sd-id` is not configured. RFC 5424 wants private ids as
/// `name@<private enterprise number>`; 32473 is the number reserved for documentation
/// (RFC 5612), so operators with their own number should set theirs.
pub const DEFAULT_SD_ID: &str = "twinguard@32473";

/// The action taken on the message that raised the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the names say it; see Action
pub enum EventAction {
    Allow,
    Redact,
    Alert,
    Quarantine,
}

impl From<&Action> for EventAction {
    fn from(action: &Action) -> Self {
        match action {
            Action::Allow => Self::Allow,
            Action::Redact => Self::Redact,
            Action::Alert => Self::Alert,
            Action::Quarantine { .. } => Self::Quarantine,
        }
    }
}

impl EventAction {
    /// `allow`, `redact`, `alert` or `quarantine`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Redact => "redact",
            Self::Alert => "alert",
            Self::Quarantine => "quarantine",
        }
    }
}

/// One security event as every sink sends it. The schema is documented in `docs/alerts.md`;
/// fields are only ever added within a [`SCHEMA_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// [`SCHEMA_VERSION`] of the producer.
    pub schema_version: u32,
    /// Unique id (a UUIDv7, so ids sort by time); a summary of repeats gets its own.
    pub id: String,
    /// When the (last) alert this event stands for was raised, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `time` as milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The device the message came from.
    pub device_id: String,
    /// The message's topic.
    pub topic: String,
    /// What was done with the message.
    pub action: EventAction,
    /// The policy that raised the alert (`twinguard` for the host's own events).
    pub policy: String,
    /// That policy's version (content digest).
    pub policy_version: String,
    /// How serious.
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `device-spoofing`.
    pub code: String,
    /// Detail for the analyst.
    pub detail: String,
    /// The generation of the policy set that evaluated the message.
    pub generation: u64,
    /// How many identical alerts this event stands for (1 unless repeats were rate-limited).
    pub count: u64,
    /// When the first of those `count` alerts was raised (RFC 3339).
    pub first_seen: String,
    /// When the last of them was raised (RFC 3339); equals `time`.
    pub last_seen: String,
}

impl SecurityEvent {
    /// The event for one alert raised at `time_ms`, standing for itself alone.
    pub fn from_alert(
        device_id: &str,
        topic: &str,
        action: EventAction,
        generation: u64,
        alert: &Alert,
        time_ms: u64,
    ) -> Self {
        let time = rfc3339(time_ms);
        Self {
            schema_version: SCHEMA_VERSION,
            id: new_id(),
            time: time.clone(),
            time_ms,
            device_id: device_id.to_owned(),
            topic: topic.to_owned(),
            action,
            policy: alert.policy.to_string(),
            policy_version: alert.version.to_string(),
            severity: alert.severity,
            code: alert.code.clone(),
            detail: alert.detail.clone(),
            generation,
            count: 1,
            first_seen: time.clone(),
            last_seen: time,
        }
    }

    /// One event per alert of `outcome`, raised now. Not rate-limited: hand them to
    /// [`Alerts::send_all`] for that.
    pub fn from_outcome(message: &Message, outcome: &Outcome) -> Vec<Self> {
        events_at(message, outcome, SystemClock.now_ms())
    }

    /// The event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a SecurityEvent holds only strings and integers")
    }

    /// The event as a JSON payload, e.g. for an MQTT alerts topic.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a SecurityEvent holds only strings and integers")
    }

    fn set_span(&mut self, count: u64, first_ms: u64) {
        self.count = count;
        self.first_seen = rfc3339(first_ms.min(self.time_ms));
    }
}

fn events_at(message: &Message, outcome: &Outcome, time_ms: u64) -> Vec<SecurityEvent> {
    let action = EventAction::from(&outcome.action);
    outcome
        .alerts
        .iter()
        .map(|alert| {
            SecurityEvent::from_alert(
                &message.device_id,
                &message.topic,
                action,
                outcome.generation,
                alert,
                time_ms,
            )
        })
        .collect()
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// RFC 3339 UTC with milliseconds. Times past year 9999 (a broken clock) are clamped: the
/// formatter cannot write them, and an alert must still go out.
fn rfc3339(ms: u64) -> String {
    const LAST_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Where the dispatcher reads the time. Injectable so rate limiting can be tested without
/// sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a misconfigured host; 0 is as good an answer as any.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// The `[alerts]` table. Embed it in a larger config as `alerts: AlertsConfig` (or an
/// `Option`), then call [`validate`](Self::validate) or let [`Alerts::from_config`] do it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlertsConfig {
    /// JSON-lines file the events are appended to; relative paths are resolved against the
    /// folder given to [`Alerts::from_config`] (the config file's).
    pub file: Option<PathBuf>,
    /// Syslog receivers.
    pub syslog: Vec<SyslogConfig>,
    /// Identical alerts within this many milliseconds are sent once, with a count (0 = every
    /// alert is sent).
    pub dedup_window_ms: u64,
    /// Distinct alerts tracked for rate limiting at once. Details often carry values, so
    /// without a bound a stream of distinct alerts would grow memory without end; alerts
    /// beyond it are sent untracked.
    pub dedup_max_keys: usize,
    /// Events waiting per sink; a sink that falls further behind loses events (counted).
    pub queue_capacity: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            file: None,
            syslog: Vec::new(),
            dedup_window_ms: 60_000,
            dedup_max_keys: 10_000,
            queue_capacity: 1024,
        }
    }
}

/// One syslog receiver (`[[alerts.syslog]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the receiver; a name is resolved when the sink starts (UDP) or at each
    /// connection (TCP).
    pub address: String,
    /// UDP (default) or TCP.
    #[serde(default)]
    pub transport: Transport,
    /// The syslog facility (default `local0`).
    #[serde(default)]
    pub facility: Facility,
    /// HOSTNAME in the header; this machine's name when unset.
    pub hostname: Option<String>,
    /// SD-ID of the structured data element (default [`DEFAULT_SD_ID`]).
    pub sd_id: Option<String>,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One datagram per event (RFC 5426); never blocks, loses events silently when the
    /// network does.
    #[default]
    Udp,
    /// A stream with octet-counting framing (RFC 6587); reconnects with backoff.
    Tcp,
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("transport {other:?}: expected \"udp\" or \"tcp\"")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

// By hand, so that the error names the key and the value whatever format embeds the table.
impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A syslog facility (RFC 5424 §6.2.1), by its usual name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Facility {
    /// `local0`, the usual choice for an application's own messages.
    pub const LOCAL0: Self = Self(16);

    /// The numeric code (0-23).
    pub fn code(self) -> u8 {
        self.0
    }

    /// The name, e.g. `local0`.
    pub fn name(self) -> &'static str {
        FACILITIES[usize::from(self.0)]
    }
}

impl Default for Facility {
    fn default() -> Self {
        Self::LOCAL0
    }
}

impl FromStr for Facility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FACILITIES
            .iter()
            .position(|name| *name == s)
            .and_then(|i| u8::try_from(i).ok())
            .map(Self)
            .ok_or_else(|| format!("facility {s:?}: expected one of {}", FACILITIES.join(", ")))
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Facility {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl AlertsConfig {
    /// Parses a TOML document holding an `[alerts]` table (and nothing else), and validates it.
    ///
    /// ```
    /// let c = twinguard::alerts::AlertsConfig::from_toml(
    ///     "[alerts]\nfile = \"alerts.ndjson\"\n[[alerts.syslog]]\naddress = \"127.0.0.1:514\"\n",
    /// )?;
    /// assert_eq!(c.syslog[0].transport, twinguard::alerts::Transport::Udp);
    /// # Ok::<(), twinguard::alerts::AlertsError>(())
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, AlertsError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            #[serde(default)]
            alerts: AlertsConfig,
        }
        let doc: Document = toml::from_str(text)
            .map_err(|e| AlertsError::Config(e.to_string().trim_end().to_string()))?;
        doc.alerts.validate().map_err(AlertsError::Config)?;
        Ok(doc.alerts)
    }

    /// Checks every value; the message names the key (`alerts.…`) and the value.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(file) = &self.file {
            if file.as_os_str().is_empty() {
                return Err("alerts.file is empty; leave it out for no file".into());
            }
        }
        if self.queue_capacity == 0 {
            return Err("alerts.queue-capacity must be at least 1".into());
        }
        if self.dedup_window_ms > 0 && self.dedup_max_keys == 0 {
            return Err(
                "alerts.dedup-max-keys must be at least 1 (or set dedup-window-ms = 0)".into(),
            );
        }
        for (i, s) in self.syslog.iter().enumerate() {
            check_syslog(s).map_err(|e| format!("alerts.syslog #{} {e}", i + 1))?;
        }
        Ok(())
    }
}

/// The checks of one syslog entry; the message starts with the key.
fn check_syslog(s: &SyslogConfig) -> Result<(), String> {
    check_address(&s.address).map_err(|e| format!("address {:?}: {e}", s.address))?;
    if let Some(host) = &s.hostname {
        if host.is_empty() || host.len() > 255 || !host.bytes().all(is_printusascii) {
            return Err(format!(
                "hostname {host:?}: use 1-255 printable ASCII characters, no spaces"
            ));
        }
    }
    if let Some(id) = &s.sd_id {
        let ok = (1..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| is_printusascii(b) && !matches!(b, b'=' | b']' | b'"'));
        if !ok {
            return Err(format!(
                "sd-id {id:?}: use 1-32 printable ASCII characters without spaces, '=', ']' \
                 or '\"', e.g. {DEFAULT_SD_ID:?}"
            ));
        }
    }
    Ok(())
}

fn is_printusascii(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// `host:port`, where host is an IP address (IPv6 in brackets) or a DNS name; no resolution.
fn check_address(address: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected host:port, e.g. \"127.0.0.1:514\"";
    if let Ok(a) = address.parse::<SocketAddr>() {
        return if a.port() == 0 {
            Err("port 0 is not a receiver's port".into())
        } else {
            Ok(())
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(EXPECTED.into());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if name_ok {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is neither an IP address nor a DNS name; {EXPECTED}"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why the alert sinks could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    /// The `[alerts]` configuration is invalid; the message names the key and the value.
    #[error("invalid alerts config: {0}")]
    Config(String),
    /// The JSON-lines file cannot be opened for appending.
    #[error("alerts.file {}: cannot open for appending", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A syslog address does not resolve, or no socket could be made for it.
    #[error("alerts.syslog address {address:?}: {source}")]
    Syslog {
        /// The configured address.
        address: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start the alert worker thread for sink {sink}")]
    Thread {
        /// The sink's name.
        sink: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Why a sink could not take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// Writing or sending failed.
    #[error("{target}: {source}")]
    Io {
        /// The file or address.
        target: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A TCP receiver is down and the next connection attempt is not due yet; the event is
    /// not sent.
    #[error("{target}: not connected; next attempt in {} ms", retry_in.as_millis())]
    Backoff {
        /// The address.
        target: String,
        /// Until the next attempt.
        retry_in: Duration,
    },
    /// An embedder's sink failed.
    #[error("{0}")]
    Other(BoxError),
}

// ---------------------------------------------------------------------------------------------
// Sinks

/// Somewhere events go. Called from the sink's own worker thread, one event at a time, so an
/// implementation may block (within reason: its queue fills meanwhile).
pub trait AlertSink: Send + Sync + 'static {
    /// Delivers one event. An error is counted and logged; the event is not retried.
    fn send(&self, event: &SecurityEvent) -> Result<(), SinkError>;
}

/// JSON lines appended to a file, one event per line, written with one `write` call per event
/// so concurrent appenders (and `tail -f`) never see half a line.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileSink {
    /// Opens (or creates) the file for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AlertsError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| AlertsError::File {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }
}

impl AlertSink for FileSink {
    fn send(&self, event: &SecurityEvent) -> Result<(), SinkError> {
        let mut line = event.to_json_bytes();
        line.push(b'\n');
        let mut file = lock(&self.file);
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|source| SinkError::Io {
                target: self.path.display().to_string(),
                source,
            })
    }
}

/// Syslog RFC 5424 over UDP or TCP. The message is
/// `<PRI>1 TIMESTAMP HOSTNAME twinguard PROCID MSGID [SD-ID id=… device=… …] {JSON event}`.
#[derive(Debug)]
pub struct SyslogSink {
    format: SyslogFormat,
    conn: Conn,
}

#[derive(Debug)]
enum Conn {
    Udp { target: String, socket: UdpSocket },
    Tcp(Mutex<TcpConn>),
}

/// TCP connect and write timeout: long enough for a loaded SIEM, short enough that a black hole
/// only delays the TCP sink's own queue.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct TcpConn {
    address: String,
    stream: Option<TcpStream>,
    backoff: Duration,
    retry_at: Option<Instant>,
}

impl SyslogSink {
    /// A sink for `config`. UDP resolves the address now; TCP connects on the first event.
    pub fn new(config: &SyslogConfig) -> Result<Self, AlertsError> {
        check_syslog(config).map_err(|e| AlertsError::Config(format!("alerts.syslog {e}")))?;
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| header_field(&gethostname::gethostname().to_string_lossy(), 255));
        let format = SyslogFormat {
            facility: config.facility,
            hostname,
            sd_id: config
                .sd_id
                .clone()
                .unwrap_or_else(|| DEFAULT_SD_ID.to_owned()),
            procid: std::process::id().to_string(),
        };
        let conn = match config.transport {
            Transport::Udp => {
                let error = |source| AlertsError::Syslog {
                    address: config.address.clone(),
                    source,
                };
                let addr = resolve(&config.address).map_err(error)?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = UdpSocket::bind(local).map_err(error)?;
                // Connected, so that an ICMP "port unreachable" comes back as an error to count.
                socket.connect(addr).map_err(error)?;
                socket.set_nonblocking(true).map_err(error)?;
                Conn::Udp {
                    target: format!("udp://{}", config.address),
                    socket,
                }
            }
            Transport::Tcp => Conn::Tcp(Mutex::new(TcpConn {
                address: config.address.clone(),
                stream: None,
                backoff: BACKOFF_MIN,
                retry_at: None,
            })),
        };
        Ok(Self { format, conn })
    }
}

fn resolve(address: &str) -> io::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address"))
}

impl AlertSink for SyslogSink {
    fn send(&self, event: &SecurityEvent) -> Result<(), SinkError> {
        let line = self.format.line(event);
        match &self.conn {
            Conn::Udp { target, socket } => match socket.send(line.as_bytes()) {
                Ok(_) => Ok(()),
                Err(source) => Err(SinkError::Io {
                    target: target.clone(),
                    source,
                }),
            },
            Conn::Tcp(conn) => {
                let mut frame = Vec::with_capacity(line.len() + 8);
                frame.extend_from_slice(line.len().to_string().as_bytes());
                frame.push(b' ');
                frame.extend_from_slice(line.as_bytes());
                lock(conn).send(&frame)
            }
        }
    }
}

impl TcpConn {
    fn send(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        if let Some(stream) = &self.stream {
            // A receiver that restarted has closed our connection; a write would still
            // succeed into the kernel's buffer and the event be lost, so look first.
            if peer_closed(stream) {
                tracing::debug!(address = %self.address, "syslog receiver closed the connection");
                self.stream = None;
            }
        }
        if let Some(stream) = &mut self.stream {
            match stream.write_all(frame) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // Reconnect at once: a broken connection is the common case, not a dead
                    // receiver, and the frame may be half written so this one is unusable.
                    tracing::debug!(address = %self.address, error = %e, "syslog write failed");
                    self.stream = None;
                }
            }
        }
        let now = Instant::now();
        if let Some(at) = self.retry_at {
            if now < at {
                return Err(SinkError::Backoff {
                    target: format!("tcp://{}", self.address),
                    retry_in: at - now,
                });
            }
        }
        match self.connect_and_write(frame) {
            Ok(stream) => {
                self.stream = Some(stream);
                self.backoff = BACKOFF_MIN;
                self.retry_at = None;
                Ok(())
            }
            Err(source) => {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Err(SinkError::Io {
                    target: format!("tcp://{}", self.address),
                    source,
                })
            }
        }
    }

    fn connect_and_write(&self, frame: &[u8]) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in self.address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, TCP_TIMEOUT) {
                Ok(mut stream) => {
                    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
                    stream.set_nodelay(true)?;
                    stream.write_all(frame)?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
        }))
    }
}

/// Whether the receiver has closed the connection (or it broke). Syslog receivers never send,
/// so anything readable is either the end of the stream or stray bytes to discard.
fn peer_closed(mut stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 256];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).is_err() || closed
}

#[derive(Debug)]
struct SyslogFormat {
    facility: Facility,
    hostname: String,
    sd_id: String,
    procid: String,
}

/// RFC 5424 severity for an alert severity.
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

impl SyslogFormat {
    /// The whole message. MSG is the JSON event without a BOM (RFC 5424's MSG-ANY): collectors
    /// hand MSG to JSON parsers, and many of those refuse a leading BOM.
    fn line(&self, event: &SecurityEvent) -> String {
        use std::fmt::Write as _;
        let pri = u16::from(self.facility.code()) * 8 + u16::from(syslog_severity(event.severity));
        let mut out = String::with_capacity(512 + event.detail.len() * 2);
        let _ = write!(
            out,
            "<{pri}>1 {} {} twinguard {} {} [{}",
            rfc3339(event.time_ms),
            self.hostname,
            self.procid,
            header_field(&event.code, 32),
            self.sd_id,
        );
        let count = event.count.to_string();
        let generation = event.generation.to_string();
        let params: [(&str, &str); 10] = [
            ("id", &event.id),
            ("device", &event.device_id),
            ("topic", &event.topic),
            ("action", event.action.as_str()),
            ("policy", &event.policy),
            ("version", &event.policy_version),
            ("severity", severity_name(event.severity)),
            ("code", &event.code),
            ("count", &count),
            ("generation", &generation),
        ];
        for (name, value) in params {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            sd_escape(value, &mut out);
            out.push('"');
        }
        out.push_str("] ");
        out.push_str(&event.to_json());
        out
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// A header field (HOSTNAME, MSGID): printable ASCII only, at most `max` characters, `-` (the
/// NILVALUE) when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii() && is_printusascii(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` take a backslash.
fn sd_escape(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatcher

/// Counters of one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// The sink's name, e.g. `file:alerts.ndjson` or `syslog-tcp:10.0.0.5:6514`.
    pub name: String,
    /// Events delivered.
    pub sent: u64,
    /// Events the sink failed to deliver.
    pub failed: u64,
    /// Events dropped because the sink's queue was full (or its worker had stopped).
    pub dropped: u64,
}

/// Counters of the dispatcher, from [`Alerts::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    /// Alerts handed in (occurrences).
    pub alerts: u64,
    /// Events emitted to the sinks, summaries included.
    pub events: u64,
    /// Repeats counted instead of sent (they go out later in some event's `count`).
    pub suppressed: u64,
    /// Alerts sent without rate limiting because `dedup-max-keys` distinct alerts were tracked.
    pub untracked: u64,
    /// Per sink, in configuration order (file, syslog entries, then added sinks).
    pub sinks: Vec<SinkStats>,
}

/// The alert dispatcher: rate-limits alerts and fans the events out to every sink, each on its
/// own worker thread. Cheap to clone; the sinks shut down (pending repeats flushed, queues
/// drained for up to 5 s) when the last clone is dropped.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alerts")
            .field("sinks", &self.inner.sinks.len())
            .field("dedup_window_ms", &self.inner.window_ms)
            .finish_non_exhaustive()
    }
}

/// Sets up an [`Alerts`]: the configured sinks plus any the embedder adds, and the clock.
pub struct AlertsBuilder {
    config: AlertsConfig,
    sinks: Vec<(String, Arc<dyn AlertSink>)>,
    clock: Option<Arc<dyn Clock>>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    window_ms: u64,
    max_keys: usize,
    dedup: Mutex<Dedup>,
    sinks: Vec<SinkSlot>,
    alerts: AtomicU64,
    events: AtomicU64,
    suppressed: AtomicU64,
    untracked: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
    workers_done: Mutex<Receiver<()>>,
    /// Dropped to stop the sweeper thread.
    _stop_sweeper: Option<mpsc::Sender<()>>,
}

struct SinkSlot {
    name: String,
    tx: Option<SyncSender<Job>>,
    counters: Arc<SinkCounters>,
}

#[derive(Default)]
struct SinkCounters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

enum Job {
    Event(Arc<SecurityEvent>),
    /// Answered once every job queued before it is done.
    Flush(mpsc::Sender<()>),
}

#[derive(Default)]
struct Dedup {
    entries: HashMap<DedupKey, DedupEntry>,
    next_sweep_ms: u64,
}

#[derive(PartialEq, Eq, Hash)]
struct DedupKey {
    device_id: String,
    policy: String,
    code: String,
    detail: String,
}

struct DedupEntry {
    /// When the last event for this key was sent; repeats until `+ window` are counted.
    window_start_ms: u64,
    /// Repeats counted since then.
    suppressed: u64,
    first_suppressed_ms: u64,
    /// The latest repeat, the template of a summary.
    last: Option<SecurityEvent>,
}

/// How often pending repeats of closed windows are looked for, at most.
const SWEEP_EVERY_MS: u64 = 1000;
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

impl Alerts {
    /// Starts the sinks of `config` with the system clock. A relative `file` is resolved
    /// against `base` (the config file's folder).
    pub fn from_config(config: &AlertsConfig, base: &Path) -> Result<Self, AlertsError> {
        Self::builder(config, base).build()
    }

    /// A builder with `config`'s settings and sinks, to which sinks and a clock can be added.
    pub fn builder(config: &AlertsConfig, base: &Path) -> AlertsBuilder {
        let mut config = config.clone();
        if let Some(file) = &mut config.file {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        AlertsBuilder {
            config,
            sinks: Vec::new(),
            clock: None,
        }
    }

    /// Rate-limits the alerts of `outcome` and sends the resulting events to every sink. Never
    /// blocks on a sink. Returns the events sent, e.g. to publish them on an MQTT topic (the
    /// summaries of repeats sent later by the sweeper or by [`flush`](Self::flush) reach only
    /// the sinks: add an [`AlertSink`] to receive every event).
    pub fn handle(&self, message: &Message, outcome: &Outcome) -> Vec<SecurityEvent> {
        if outcome.alerts.is_empty() {
            return Vec::new();
        }
        let events = events_at(message, outcome, self.inner.clock.now_ms());
        self.inner.process(events)
    }

    /// Like [`handle`](Self::handle), for events built elsewhere (e.g. by
    /// [`SecurityEvent::from_outcome`]). Each counts as one occurrence at its `time_ms`.
    pub fn send_all(&self, events: &[SecurityEvent]) -> Vec<SecurityEvent> {
        if events.is_empty() {
            return Vec::new();
        }
        self.inner.process(events.to_vec())
    }

    /// Sends the pending repeat counts now (as summary events) and waits until every sink has
    /// handled everything queued so far, for at most 5 s. Returns whether all sinks were done
    /// in time.
    pub fn flush(&self) -> bool {
        self.flush_timeout(SHUTDOWN_WAIT)
    }

    /// [`flush`](Self::flush) with a chosen bound on the wait.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.inner.flush_pending();
        self.inner.drain(Instant::now() + timeout)
    }

    /// The counters so far.
    pub fn stats(&self) -> AlertStats {
        let i = &self.inner;
        AlertStats {
            alerts: i.alerts.load(Ordering::Relaxed),
            events: i.events.load(Ordering::Relaxed),
            suppressed: i.suppressed.load(Ordering::Relaxed),
            untracked: i.untracked.load(Ordering::Relaxed),
            sinks: i
                .sinks
                .iter()
                .map(|s| SinkStats {
                    name: s.name.clone(),
                    sent: s.counters.sent.load(Ordering::Relaxed),
                    failed: s.counters.failed.load(Ordering::Relaxed),
                    dropped: s.counters.dropped.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

impl AlertsBuilder {
    /// Adds a sink under `name` (used in stats and logs).
    pub fn sink(mut self, name: impl Into<String>, sink: impl AlertSink) -> Self {
        self.sinks.push((name.into(), Arc::new(sink)));
        self
    }

    /// Uses `clock` instead of the system clock. Repeats are then summarised only by the next
    /// occurrence or [`Alerts::flush`]: the background sweeper, which would race a test
    /// moving the clock, is not started.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the configuration, opens the sinks and starts their workers.
    pub fn build(self) -> Result<Alerts, AlertsError> {
        let config = self.config;
        config.validate().map_err(AlertsError::Config)?;
        let mut sinks: Vec<(String, Arc<dyn AlertSink>)> = Vec::new();
        if let Some(path) = &config.file {
            sinks.push((
                format!("file:{}", path.display()),
                Arc::new(FileSink::open(path)?),
            ));
        }
        for s in &config.syslog {
            sinks.push((
                format!("syslog-{}:{}", s.transport, s.address),
                Arc::new(SyslogSink::new(s)?),
            ));
        }
        sinks.extend(self.sinks);

        let (done_tx, done_rx) = mpsc::channel();
        let mut slots = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for (i, (name, sink)) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
            let counters = Arc::new(SinkCounters::default());
            let worker = {
                let (label, counters, done) =
                    (name.clone(), Arc::clone(&counters), done_tx.clone());
                thread::Builder::new()
                    .name(format!("tg-alerts-{i}"))
                    .spawn(move || run_worker(&label, &*sink, &rx, &counters, done))
                    .map_err(|source| AlertsError::Thread {
                        sink: name.clone(),
                        source,
                    })?
            };
            workers.push(worker);
            slots.push(SinkSlot {
                name,
                tx: Some(tx),
                counters,
            });
        }
        drop(done_tx);

        let sweeper = self.clock.is_none() && config.dedup_window_ms > 0;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let inner = Arc::new(Inner {
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            window_ms: config.dedup_window_ms,
            max_keys: config.dedup_max_keys,
            dedup: Mutex::new(Dedup::default()),
            sinks: slots,
            alerts: AtomicU64::new(0),
            events: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
            workers: Mutex::new(workers),
            workers_done: Mutex::new(done_rx),
            _stop_sweeper: sweeper.then_some(stop_tx),
        });
        if sweeper {
            let weak = Arc::downgrade(&inner);
            let every = Duration::from_millis(config.dedup_window_ms.clamp(1, SWEEP_EVERY_MS));
            // Detached: it holds only a weak reference and ends when the dispatcher does.
            thread::Builder::new()
                .name("tg-alerts-sweep".into())
                .spawn(move || run_sweeper(&weak, &stop_rx, every))
                .map_err(|source| AlertsError::Thread {
                    sink: "sweeper".into(),
                    source,
                })?;
        }
        Ok(Alerts { inner })
    }
}

fn run_worker(
    name: &str,
    sink: &dyn AlertSink,
    rx: &Receiver<Job>,
    counters: &SinkCounters,
    _done: mpsc::Sender<()>,
) {
    let mut failing = false;
    for job in rx {
        match job {
            Job::Event(event) => match sink.send(&event) {
                Ok(()) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        tracing::info!(sink = name, "alert sink recovered");
                    }
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        tracing::debug!(sink = name, error = %e, "alert sink failed");
                    } else {
                        failing = true;
                        tracing::warn!(
                            sink = name,
                            error = %e,
                            "alert sink failing; its events are counted as failed until it recovers"
                        );
                    }
                }
            },
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn run_sweeper(inner: &Weak<Inner>, stop: &Receiver<()>, every: Duration) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = inner.clock.now_ms();
        let mut out = Vec::new();
        inner.lock_dedup().sweep(now, inner.window_ms, &mut out);
        inner.emit_all(out);
    }
}

impl Inner {
    fn lock_dedup(&self) -> MutexGuard<'_, Dedup> {
        lock(&self.dedup)
    }

    fn process(&self, events: Vec<SecurityEvent>) -> Vec<SecurityEvent> {
        self.alerts
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if self.window_ms == 0 {
            self.emit_all(events.clone());
            return events;
        }
        let mut out = Vec::new();
        {
            let mut dedup = self.lock_dedup();
            for event in events {
                self.rate_limit(&mut dedup, event, &mut out);
            }
            let now = self.clock.now_ms();
            if now >= dedup.next_sweep_ms {
                dedup.sweep(now, self.window_ms, &mut out);
            }
        }
        self.emit_all(out.clone());
        out
    }

    fn rate_limit(
        &self,
        dedup: &mut Dedup,
        mut event: SecurityEvent,
        out: &mut Vec<SecurityEvent>,
    ) {
        let key = DedupKey {
            device_id: event.device_id.clone(),
            policy: event.policy.clone(),
            code: event.code.clone(),
            detail: event.detail.clone(),
        };
        let t = event.time_ms;
        event.set_span(1, t);
        match dedup.entries.get_mut(&key) {
            Some(entry) if t < entry.window_start_ms.saturating_add(self.window_ms) => {
                if entry.suppressed == 0 {
                    entry.first_suppressed_ms = t;
                }
                entry.suppressed += 1;
                entry.last = Some(event);
                self.suppressed.fetch_add(1, Ordering::Relaxed);
            }
            Some(entry) => {
                if entry.suppressed > 0 {
                    event.set_span(entry.suppressed + 1, entry.first_suppressed_ms);
                }
                entry.window_start_ms = t;
                entry.suppressed = 0;
                entry.last = None;
                out.push(event);
            }
            None => {
                if dedup.entries.len() >= self.max_keys {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                } else {
                    dedup.entries.insert(
                        key,
                        DedupEntry {
                            window_start_ms: t,
                            suppressed: 0,
                            first_suppressed_ms: 0,
                            last: None,
                        },
                    );
                }
                out.push(event);
            }
        }
    }

    fn flush_pending(&self) {
        let mut out = Vec::new();
        for entry in self.lock_dedup().entries.values_mut() {
            entry.take_summary(&mut out);
        }
        self.emit_all(out);
    }

    fn emit_all(&self, events: Vec<SecurityEvent>) {
        for event in events {
            self.events.fetch_add(1, Ordering::Relaxed);
            let event = Arc::new(event);
            for slot in &self.sinks {
                let Some(tx) = &slot.tx else { continue };
                if let Err(e) = tx.try_send(Job::Event(Arc::clone(&event))) {
                    let dropped = slot.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Logged at 1, 2, 4, 8, … drops: visible, but not a flood of its own.
                    if dropped.is_power_of_two() {
                        let why = match e {
                            TrySendError::Full(_) => "queue full",
                            TrySendError::Disconnected(_) => "worker stopped",
                        };
                        tracing::warn!(sink = %slot.name, dropped, why, "alert events dropped");
                    }
                }
            }
        }
    }

    /// Waits until every worker has handled what was queued before now.
    fn drain(&self, deadline: Instant) -> bool {
        let mut acks = Vec::new();
        for slot in &self.sinks {
            let Some(tx) = &slot.tx else { continue };
            let (ack_tx, ack_rx) = mpsc::channel();
            let mut job = Job::Flush(ack_tx);
            loop {
                match tx.try_send(job) {
                    Ok(()) => {
                        acks.push(ack_rx);
                        break;
                    }
                    Err(TrySendError::Full(j)) if Instant::now() < deadline => {
                        job = j;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return false,
                }
            }
        }
        acks.iter().all(|ack| {
            ack.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
        })
    }
}

impl Dedup {
    /// Forgets every alert whose window has closed, emitting the repeats it counted.
    fn sweep(&mut self, now: u64, window_ms: u64, out: &mut Vec<SecurityEvent>) {
        self.entries.retain(|_, entry| {
            if now < entry.window_start_ms.saturating_add(window_ms) {
                return true;
            }
            entry.take_summary(out);
            false
        });
        self.next_sweep_ms = now.saturating_add(window_ms.min(SWEEP_EVERY_MS));
    }
}

impl DedupEntry {
    /// The repeats counted so far, as one event (a copy of the latest repeat with a new id).
    fn take_summary(&mut self, out: &mut Vec<SecurityEvent>) {
        if let Some(mut event) = self.last.take() {
            event.id = new_id();
            event.set_span(self.suppressed, self.first_suppressed_ms);
            out.push(event);
        }
        self.suppressed = 0;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush_pending();
        // Closing the queues ends the workers once they have sent what is queued.
        for slot in &mut self.sinks {
            slot.tx = None;
        }
        // Each worker holds a sender and none sends: disconnection means all have finished.
        let _ = lock(&self.workers_done).recv_timeout(SHUTDOWN_WAIT);
        for worker in std::mem::take(&mut *lock(&self.workers)) {
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                tracing::warn!("alert sink still busy at shutdown; leaving it behind");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value stays consistent between statements; a panic elsewhere must not
    // stop the alerts.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(device: &str, detail: &str) -> SecurityEvent {
        let alert = Alert {
            policy: "replay-guard".into(),
            version: "abc123".into(),
            severity: Severity::High,
            code: "replay".into(),
            detail: detail.into(),
        };
        SecurityEvent::from_alert(
            device,
            "plant/x/telemetry",
            EventAction::Quarantine,
            3,
            &alert,
            1_700_000_000_123,
        )
    }

    #[test]
    fn times_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn sd_values_escape_quote_backslash_bracket() {
        let mut out = String::new();
        sd_escape(r#"a"b\c]d=e"#, &mut out);
        assert_eq!(out, r#"a\"b\\c\]d=e"#);
    }

    #[test]
    fn syslog_line_has_pri_header_sd_and_json() {
        let format = SyslogFormat {
            facility: "local4".parse().unwrap(),
            hostname: "gw-1".into(),
            sd_id: DEFAULT_SD_ID.into(),
            procid: "42".into(),
        };
        let e = event("press\"7]", "seq 3 <= 5");
        let line = format.line(&e);
        // local4 = 20; high -> err (3): 20 * 8 + 3.
        let head =
            "<163>1 2023-11-14T22:13:20.123Z gw-1 twinguard 42 replay [twinguard@32473 id=\"";
        assert!(line.starts_with(head), "{line}");
        assert!(line.contains(r#" device="press\"7\]" "#), "{line}");
        let json = line
            .split_once("] {")
            .map(|(_, j)| format!("{{{j}"))
            .unwrap();
        let back: SecurityEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn severities_map_to_syslog() {
        let all = [
            (Severity::Critical, 2),
            (Severity::High, 3),
            (Severity::Medium, 4),
            (Severity::Low, 5),
            (Severity::Info, 6),
        ];
        for (s, code) in all {
            assert_eq!(syslog_severity(s), code);
        }
    }

    #[test]
    fn header_fields_are_printable_and_bounded() {
        assert_eq!(header_field("", 32), "-");
        assert_eq!(header_field("a b\té", 32), "a_b__");
        assert_eq!(header_field(&"x".repeat(40), 32).len(), 32);
    }

    #[test]
    fn facilities_parse_by_name() {
        assert_eq!("kern".parse::<Facility>().unwrap().code(), 0);
        assert_eq!("local7".parse::<Facility>().unwrap().code(), 23);
        assert_eq!(Facility::default().name(), "local0");
        let err = "local9".parse::<Facility>().unwrap_err();
        assert!(
            err.starts_with("facility \"local9\": expected one of kern"),
            "{err}"
        );
    }

    #[test]
    fn addresses_are_checked_without_resolving() {
        for ok in [
            "127.0.0.1:514",
            "[::1]:6514",
            "siem.plant.local:514",
            "siem:1",
        ] {
            check_address(ok).unwrap();
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "host:99999",
            ":514",
            "a b:514",
            "[::1:514",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_serialize_in_schema_order() {
        let json = event("d", "x").to_json();
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
                .unwrap()
                .keys()
                .cloned()
                .collect();
        assert_eq!(
            keys,
            [
                "schema_version",
                "id",
                "time",
                "time_ms",
                "device_id",
                "topic",
                "action",
                "policy",
                "policy_version",
                "severity",
                "code",
                "detail",
                "generation",
                "count",
                "first_seen",
                "last_seen"
            ]
        );
        assert_ne!(event("d", "x").id, event("d", "x").id);
    }
}
