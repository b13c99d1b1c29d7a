//! The JSON-lines file sink: the record to keep when a SIEM may be down.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{lock, AlertSink, AlertsError, SecurityEvent, SinkError};

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
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        // Alerts quote devices and reasons: readable by the service's user only when created.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|source| AlertsError::File {
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
