//! A JSON-lines connection over a unix socket: the framing QMP and the guest agent share.

use super::error::QemuError;
use serde_json::Value;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Lines longer than this are a protocol error rather than a reason to grow without bound.
const MAX_LINE: usize = 64 << 20;

/// One connected JSON-lines stream.
#[derive(Debug)]
pub(crate) struct JsonLines {
    path: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Bytes of a line read so far; kept here (not in the read future) so a read cancelled by a
    /// timeout loses nothing and the next read continues the same line.
    partial: Vec<u8>,
}

impl JsonLines {
    /// Connects; a refused or missing socket means the peer is gone.
    pub(crate) async fn connect(path: &Path) -> Result<Self, QemuError> {
        let shown = path.display().to_string();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| QemuError::Gone {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let (r, w) = stream.into_split();
        Ok(JsonLines {
            path: shown,
            reader: BufReader::new(r),
            writer: w,
            partial: Vec::new(),
        })
    }

    /// The socket path, for messages.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Writes `bytes` (one or more complete lines) and flushes.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), QemuError> {
        let res = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        }
        .await;
        res.map_err(|e| self.disconnected(e.to_string()))
    }

    /// Serializes `value` as one line and sends it.
    pub(crate) async fn send_value(&mut self, value: &Value) -> Result<(), QemuError> {
        let mut line = value.to_string().into_bytes();
        line.push(b'\n');
        self.send(&line).await
    }

    /// Reads the next non-empty line, with any leading 0xFF sync bytes (guest-sync-delimited)
    /// stripped, as JSON. Not a timeout: callers wrap it. Cancel-safe.
    pub(crate) async fn read_value(&mut self) -> Result<Value, QemuError> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.partial)
                .await
                .map_err(|e| self.disconnected(e.to_string()))?;
            if n == 0 {
                return Err(self.disconnected("end of stream".to_string()));
            }
            if self.partial.last() != Some(&b'\n') {
                if self.partial.len() > MAX_LINE {
                    return Err(self.protocol(format!("line longer than {MAX_LINE} bytes")));
                }
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
            let body = &line[start..];
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(body).map_err(|e| {
                self.protocol(format!(
                    "bad JSON ({e}): {}",
                    String::from_utf8_lossy(body).trim()
                ))
            });
        }
    }

    fn disconnected(&self, reason: String) -> QemuError {
        QemuError::Disconnected {
            path: self.path.clone(),
            reason,
        }
    }

    fn protocol(&self, detail: String) -> QemuError {
        QemuError::Protocol {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Parses a QMP/QGA `{"error": {"class", "desc"}}` object into a command error.
pub(crate) fn command_error(command: &str, error: &Value) -> QemuError {
    let field = |k: &str| {
        error
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    QemuError::Command {
        command: command.to_string(),
        class: field("class"),
        desc: field("desc"),
    }
}
