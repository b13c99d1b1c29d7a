//! The syslog sink: RFC 5424 messages over UDP (RFC 5426) or over TCP with octet-counting
//! framing (RFC 6587), reconnecting with backoff.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::{check_syslog, is_printusascii};
use super::event::rfc3339;
use super::{lock, AlertSink, AlertsError, Facility, SecurityEvent, SinkError, SyslogConfig};
use super::{Transport, DEFAULT_SD_ID};
use crate::Severity;

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

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]` take a backslash. Control
/// characters (a CR or LF would let a policy's alert code forge a record for a receiver that
/// splits on them) are first written as visible escapes, whose backslash is then escaped too.
fn sd_escape(value: &str, out: &mut String) {
    for c in twinguard_core::text::escape_controls(value).chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::event::tests::event;

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
}
