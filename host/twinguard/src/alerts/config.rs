//! The `[alerts]` configuration (the module docs show the TOML) and its validation, whose
//! messages name the key (`alerts.…`) and the value.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::AlertsError;

/// The STRUCTURED-DATA id used when `sd-id` is not configured. RFC 5424 wants private ids as
/// `name@<private enterprise number>`; 32473 is the number reserved for documentation
/// (RFC 5612), so operators with their own number should set theirs.
pub const DEFAULT_SD_ID: &str = "twinguard@32473";

/// The `[alerts]` table. Embed it in a larger config as `alerts: AlertsConfig` (or an
/// `Option`), then call [`validate`](Self::validate) or let
/// [`Alerts::from_config`](super::Alerts::from_config) do it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AlertsConfig {
    /// JSON-lines file the events are appended to; relative paths are resolved against the
    /// folder given to [`Alerts::from_config`](super::Alerts::from_config) (the config file's).
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
pub(super) fn check_syslog(s: &SyslogConfig) -> Result<(), String> {
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

pub(super) fn is_printusascii(b: u8) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
