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
#[derive(Debug)]
pub struct QmpClient {
    path: PathBuf,
    conn: Option<JsonLines>,
    timeout: Duration,
    next_id: u64,
    events: VecDeque<Value>,
    greeting: Option<Value>,
    /// Set while a command is being written: a timeout that cuts a write short leaves half a
    /// line in the stream, which would garble the next command, so the connection is dropped.
    writing: bool,
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
            writing: false,
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
            Err(_) => {
                if self.writing {
                    self.conn = None;
                    self.writing = false;
                }
                Err(QemuError::timeout(&format!("QMP {command}"), timeout))
            }
        }
    }

    /// Takes the events received so far (oldest first).
    pub fn take_events(&mut self) -> Vec<Value> {
        self.events.drain(..).collect()
    }

    /// Waits up to `timeout` for an event that `matches`, checking queued events first; other
    /// events stay queued. `Ok(None)` on timeout. Only a hint: events are not replayed to a client
    /// that reconnects, so callers confirm with a query.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, QemuError> {
        if let Some(i) = self.events.iter().position(&matches) {
            return Ok(self.events.remove(i));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(self.not_connected());
            };
            let msg = match tokio::time::timeout_at(deadline, conn.read_value()).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    self.conn = None;
                    return Err(e);
                }
                Ok(Ok(m)) => m,
            };
            if msg.get("event").is_none() {
                // A late reply to a command that timed out.
                continue;
            }
            if matches(&msg) {
                return Ok(Some(msg));
            }
            if self.events.len() >= MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(msg);
        }
    }

    async fn send_reconnecting(&mut self, command: &str, msg: &Value) -> Result<(), QemuError> {
        if self.conn.is_none() && command != "qmp_capabilities" {
            Box::pin(self.reconnect()).await?;
        }
        self.writing = true;
        let res = self.send_once_or_reconnect(command, msg).await;
        self.writing = false;
        res
    }

    async fn send_once_or_reconnect(
        &mut self,
        command: &str,
        msg: &Value,
    ) -> Result<(), QemuError> {
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
                // The handshake above cleared the flag; this write is ours again.
                self.writing = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake QEMU monitor serving one connection: greets (unless `greet` is false), then
    /// answers each command with the lines `reply` returns for (command, id).
    fn fake_qemu(
        path: &Path,
        greet: bool,
        mut reply: impl FnMut(&str, &Value) -> Vec<String> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            if greet {
                w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                    .await
                    .unwrap();
            }
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let msg: Value = serde_json::from_str(&line).unwrap();
                let cmd = msg["execute"].as_str().unwrap_or("").to_string();
                for out in reply(&cmd, &msg["id"]) {
                    if out == "CLOSE" {
                        return;
                    }
                    w.write_all(format!("{out}\n").as_bytes()).await.unwrap();
                }
            }
        })
    }

    fn ok(id: &Value, ret: Value) -> String {
        json!({"return": ret, "id": id}).to_string()
    }

    #[tokio::test]
    async fn skips_stale_replies_queues_events_and_types_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let _srv = fake_qemu(&sock, true, |cmd, id| match cmd {
            "qmp_capabilities" => vec![ok(id, json!({}))],
            "query-status" => vec![
                json!({"event": "DEVICE_DELETED", "data": {"device": "x"}}).to_string(),
                ok(&json!("ll-old"), json!("stale")),
                json!({"error": {"class": "GenericError", "desc": "parse"}}).to_string(),
                ok(id, json!({"status": "prelaunch"})),
            ],
            _ => vec![
                json!({"error": {"class": "CommandNotFound", "desc": "nope"}, "id": id})
                    .to_string(),
            ],
        });
        let mut c = QmpClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let st = c.execute("query-status", None).await.unwrap();
        assert_eq!(st["status"], "prelaunch");
        assert_eq!(c.take_events().len(), 1);
        let e = c.execute("bogus", None).await.unwrap_err();
        assert!(e.is_class("CommandNotFound"), "{e:?}");
    }

    #[tokio::test]
    async fn wait_event_finds_the_matching_event_and_keeps_others() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let _srv = fake_qemu(&sock, true, |cmd, id| match cmd {
            "qmp_capabilities" => vec![ok(id, json!({}))],
            _ => vec![
                ok(id, json!({})),
                json!({"event": "OTHER"}).to_string(),
                json!({"event": "DEVICE_DELETED", "data": {"device": "d1"}}).to_string(),
            ],
        });
        let mut c = QmpClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        c.execute("device_del", None).await.unwrap();
        let is_d1 = |e: &Value| e["data"]["device"] == "d1";
        let ev = c.wait_event(Duration::from_secs(2), is_d1).await.unwrap();
        assert_eq!(ev.unwrap()["event"], "DEVICE_DELETED");
        assert_eq!(c.take_events().len(), 1);
        let none = c
            .wait_event(Duration::from_millis(50), is_d1)
            .await
            .unwrap();
        assert!(none.is_none());
    }

    #[tokio::test]
    async fn a_timeout_keeps_the_connection_and_the_late_reply_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let mut slow_id = Value::Null;
        let _srv = fake_qemu(&sock, true, move |cmd, id| match cmd {
            "qmp_capabilities" => vec![ok(id, json!({}))],
            "slow" => {
                slow_id = id.clone();
                vec![]
            }
            _ => vec![ok(&slow_id, json!("late")), ok(id, json!("fresh"))],
        });
        let mut c = QmpClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let e = c
            .execute_timeout("slow", None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, QemuError::Timeout { .. }), "{e:?}");
        assert_eq!(c.execute("next", None).await.unwrap(), json!("fresh"));
    }

    #[tokio::test]
    async fn peer_gone_no_greeting_and_closed_connection_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let e = QmpClient::connect(&missing, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, QemuError::Gone { .. }), "{e:?}");

        let mute = dir.path().join("mute.sock");
        let _m = fake_qemu(&mute, false, |_, _| vec![]);
        let e = QmpClient::connect(&mute, Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, QemuError::NoHandshake { .. }), "{e:?}");

        let closing = dir.path().join("closing.sock");
        let _c = fake_qemu(&closing, true, |cmd, id| match cmd {
            "qmp_capabilities" => vec![ok(id, json!({}))],
            _ => vec!["CLOSE".to_string()],
        });
        let mut c = QmpClient::connect(&closing, Duration::from_secs(1))
            .await
            .unwrap();
        let e = c.execute("query-status", None).await.unwrap_err();
        assert!(matches!(e, QemuError::Disconnected { .. }), "{e:?}");
        assert!(!c.is_connected());
        // The fake served its one connection and is gone: the reconnect says so.
        let e = c.execute("query-status", None).await.unwrap_err();
        assert!(e.is_connection(), "{e:?}");
    }
}
