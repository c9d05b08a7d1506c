//! A small asynchronous QMP client: greeting and capabilities negotiation, commands with a
//! per-call timeout, events queued aside, and reconnection after QEMU restarts or the connection
//! breaks.
//!
//! QEMU serves one client per monitor: a second connection is accepted but gets no greeting
//! until the first one closes, which shows here as [`QemuError::NoHandshake`].

use super::error::{millis, QemuError};
use super::lines::{command_error, JsonLines};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Events kept for [`QmpClient::take_events`]; older ones are dropped first. Nothing in the
/// backend depends on events (they are not replayed to a reconnecting client), so a bound is safe.
const MAX_EVENTS: usize = 1024;

/// A QMP connection to one QEMU monitor socket.
pub struct QmpClient {
    path: PathBuf,
    conn: Option<JsonLines>,
    timeout: Duration,
    next_id: u64,
    events: VecDeque<Value>,
    greeting: Option<Value>,
}

impl QmpClient {
    /// Connects to the monitor at `path` and negotiates capabilities. `timeout` bounds the
    /// handshake and, by default, every command.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, QemuError> {
        let mut c = QmpClient::lazy(path, timeout);
        c.reconnect().await?;
        Ok(c)
    }

    /// A client that connects on its first command.
    pub fn lazy(path: impl AsRef<Path>, timeout: Duration) -> Self {
        QmpClient {
            path: path.as_ref().to_path_buf(),
            conn: None,
            timeout,
            next_id: 1,
            events: VecDeque::new(),
            greeting: None,
        }
    }

    /// The monitor socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The greeting of the current connection (QEMU's version), once connected.
    pub fn greeting(&self) -> Option<&Value> {
        self.greeting.as_ref()
    }

    /// Whether a connection is open (it may still turn out broken on the next command).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Closes the connection; the next command reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Drops any connection and connects afresh: greeting, then `qmp_capabilities`.
    pub async fn reconnect(&mut self) -> Result<(), QemuError> {
        self.conn = None;
        let mut conn = JsonLines::connect(&self.path).await?;
        let shown = conn.path().to_string();
        let greeting = tokio::time::timeout(self.timeout, conn.read_value())
            .await
            .map_err(|_| QemuError::NoHandshake {
                path: shown.clone(),
                ms: millis(self.timeout),
            })??;
        if greeting.get("QMP").is_none() {
            return Err(QemuError::Protocol {
                path: shown,
                detail: format!("expected a QMP greeting, got {greeting}"),
            });
        }
        self.greeting = Some(greeting);
        self.conn = Some(conn);
        self.execute("qmp_capabilities", None).await.map(|_| ())
    }

    /// Runs `command` with the client's default timeout and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        let timeout = self.timeout;
        self.execute_timeout(command, arguments, timeout).await
    }

    /// Runs `command` within `timeout`. A connection that is closed or found broken before the
    /// command was written is re-established once; a connection that breaks after it was written
    /// gives [`QemuError::Disconnected`] (the effect is unknown). After a timeout the connection
    /// is kept: replies carry our id, so a late reply is recognised and skipped.
    pub async fn execute_timeout(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QemuError> {
        let id = format!("ll-{}", self.next_id);
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let fut = async {
            self.send_reconnecting(command, &msg).await?;
            self.await_reply(command, &id).await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(QemuError::timeout(command, timeout)),
        }
    }

    /// Takes the events received so far (oldest first).
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    async fn send_reconnecting(&mut self, command: &str, msg: &Value) -> Result<(), QemuError> {
        if self.conn.is_none() && command != "qmp_capabilities" {
            Box::pin(self.reconnect()).await?;
        }
        let first = match self.conn.as_mut() {
            Some(c) => c.send_value(msg).await,
            None => Err(self.not_connected()),
        };
        match first {
            Ok(()) => Ok(()),
            // A write that failed never reached a live QEMU, so resending on a new connection
            // cannot run the command twice.
            Err(e) if e.is_connection() && command != "qmp_capabilities" => {
                Box::pin(self.reconnect()).await?;
                match self.conn.as_mut() {
                    Some(c) => c.send_value(msg).await,
                    None => Err(self.not_connected()),
                }
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    async fn await_reply(&mut self, command: &str, id: &str) -> Result<Value, QemuError> {
        loop {
            let read = match self.conn.as_mut() {
                Some(c) => c.read_value().await,
                None => Err(self.not_connected()),
            };
            let msg = match read {
                Ok(m) => m,
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            };
            if msg.get("event").is_some() {
                if self.events.len() >= MAX_EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_str) != Some(id) {
                // A reply to a command whose caller timed out earlier.
                continue;
            }
            if let Some(err) = msg.get("error") {
                return Err(command_error(command, err));
            }
            return Ok(msg.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    fn not_connected(&self) -> QemuError {
        QemuError::Disconnected {
            path: self.path.display().to_string(),
            reason: "not connected".to_string(),
        }
    }
}
