//! What can go wrong: setting the sinks up ([`AlertsError`]) and delivering an event to one
//! ([`SinkError`]).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;

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
