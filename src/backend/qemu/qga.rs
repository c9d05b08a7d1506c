//! A small asynchronous qemu-guest-agent client: delimited resynchronisation, commands, and
//! `guest-exec` with polling.
//!
//! The agent answers in order and without ids, so a reply left unread by a client that crashed
//! (or by our own call that timed out) would be taken as the answer to the next command. Every
//! fresh connection therefore sends 0xFF (which resets the agent's parser) and
//! `guest-sync-delimited` with a new id, and discards everything up to the matching reply; any
//! failure mid-call drops the connection so the next call resyncs.

use super::base64;
use super::error::{millis, QemuError};
use super::lines::{command_error, JsonLines};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often `guest-exec-status` is polled.
const EXEC_POLL: Duration = Duration::from_millis(10);

/// The outcome of a command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; `None` when the process was killed by a signal.
    pub exit_code: Option<i64>,
    /// Signal number, when killed by one.
    pub signal: Option<i64>,
    /// Captured stdout (lossily decoded).
    pub stdout: String,
    /// Captured stderr (lossily decoded).
    pub stderr: String,
}

impl ExecOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// A connection to a guest agent's chardev socket.
pub struct QgaClient {
    path: PathBuf,
    conn: Option<JsonLines>,
    timeout: Duration,
}

impl QgaClient {
    /// Connects to the agent socket at `path` and resyncs. `timeout` bounds the sync and, by
    /// default, every command.
    pub async fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, QemuError> {
        let mut c = QgaClient::lazy(path, timeout);
        c.resync().await?;
        Ok(c)
    }

    /// A client that connects (and resyncs) on its first command.
    pub fn lazy(path: impl AsRef<Path>, timeout: Duration) -> Self {
        QgaClient {
            path: path.as_ref().to_path_buf(),
            conn: None,
            timeout,
        }
    }

    /// The agent socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connection; the next command reconnects and resyncs.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// (Re)connects and discards everything up to the reply to a fresh `guest-sync-delimited`.
    pub async fn resync(&mut self) -> Result<(), QemuError> {
        self.conn = None;
        let mut conn = JsonLines::connect(&self.path).await?;
        let id = sync_id();
        let mut msg = vec![0xFF];
        msg.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        msg.push(b'\n');
        conn.send(&msg).await?;
        let shown = conn.path().to_string();
        let wait = async {
            loop {
                match conn.read_value().await {
                    Ok(v) if v.get("return").and_then(Value::as_u64) == Some(id) => return Ok(()),
                    // Stale replies, or a half line cut by the 0xFF reset: skip.
                    Ok(_) | Err(QemuError::Protocol { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| QemuError::NoHandshake {
                path: shown,
                ms: millis(self.timeout),
            })??;
        self.conn = Some(conn);
        Ok(())
    }

    /// Runs `command` with the default timeout and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QemuError> {
        let timeout = self.timeout;
        self.execute_timeout(command, arguments, timeout).await
    }

    /// Runs `command` within `timeout`. Any failure other than the agent's own error reply drops
    /// the connection, so no stale reply can be mistaken for a later command's.
    pub async fn execute_timeout(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QemuError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let res = tokio::time::timeout(timeout, async {
            if self.conn.is_none() {
                self.resync().await?;
            }
            let conn = self.conn.as_mut().ok_or_else(|| QemuError::Disconnected {
                path: self.path.display().to_string(),
                reason: "not connected".to_string(),
            })?;
            conn.send_value(&msg).await?;
            conn.read_value().await
        })
        .await;
        let reply = match res {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(e);
            }
            Err(_) => {
                self.conn = None;
                return Err(QemuError::timeout(command, timeout));
            }
        };
        if let Some(err) = reply.get("error") {
            return Err(command_error(command, err));
        }
        match reply.get("return") {
            Some(v) => Ok(v.clone()),
            None => {
                self.conn = None;
                Err(QemuError::Protocol {
                    path: self.path.display().to_string(),
                    detail: format!("reply to {command} has no return: {reply}"),
                })
            }
        }
    }

    /// Runs `path args...` in the guest, waits up to `timeout` for it to exit, and returns its
    /// exit status and output. A timeout leaves the process running in the guest.
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, QemuError> {
        let start = Instant::now();
        let ret = self
            .execute(
                "guest-exec",
                Some(json!({"path": path, "arg": args, "capture-output": true})),
            )
            .await?;
        let pid = ret
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| QemuError::Protocol {
                path: self.path.display().to_string(),
                detail: format!("guest-exec returned no pid: {ret}"),
            })?;
        loop {
            let st = self
                .execute("guest-exec-status", Some(json!({ "pid": pid })))
                .await?;
            if st.get("exited").and_then(Value::as_bool) == Some(true) {
                let data = |k: &str| {
                    let raw = st.get(k).and_then(Value::as_str).unwrap_or("");
                    String::from_utf8_lossy(&base64::decode(raw)).into_owned()
                };
                return Ok(ExecOutput {
                    exit_code: st.get("exitcode").and_then(Value::as_i64),
                    signal: st.get("signal").and_then(Value::as_i64),
                    stdout: data("out-data"),
                    stderr: data("err-data"),
                });
            }
            if start.elapsed() >= timeout {
                return Err(QemuError::timeout(&format!("guest-exec {path}"), timeout));
            }
            tokio::time::sleep(EXEC_POLL).await;
        }
    }
}

/// A sync id unlikely to repeat across processes (time) or within one (counter), so a reply
/// meant for a crashed client's sync never matches ours.
fn sync_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    let n = mixed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
    // The agent's JSON parser handles ids as int64; keep them positive and well inside that.
    n & 0x3FFF_FFFF_FFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake agent that, before answering a sync, replays what a crashed client left behind.
    fn fake_agent(path: &Path) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut polls = 0;
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    return;
                }
                let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
                let msg: Value = serde_json::from_slice(&line[start..]).unwrap();
                let mut bytes = match msg["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => {
                        // A stale reply, a line cut short, then 0xFF and the sync reply.
                        let mut b = b"{\"return\": {\"pid\": 231}}\n{\"retu\n\xff".to_vec();
                        b.extend(
                            json!({"return": msg["arguments"]["id"]})
                                .to_string()
                                .bytes(),
                        );
                        b
                    }
                    "guest-exec" => json!({"return": {"pid": 7}}).to_string().into_bytes(),
                    "guest-exec-status" => {
                        polls += 1;
                        let status = if polls < 3 {
                            json!({"return": {"exited": false}})
                        } else {
                            json!({"return": {"exited": true, "exitcode": 3,
                                "out-data": "aGVsbG8K", "err-data": "b29wcw=="}})
                        };
                        status.to_string().into_bytes()
                    }
                    _ => json!({"error": {"class": "CommandNotFound", "desc": "no"}})
                        .to_string()
                        .into_bytes(),
                };
                bytes.push(b'\n');
                w.write_all(&bytes).await.unwrap();
            }
        })
    }

    #[tokio::test]
    async fn resync_discards_stale_replies_and_exec_polls_to_exit() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let _srv = fake_agent(&sock);
        let mut c = QgaClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let out = c
            .exec("/bin/sh", &["-c", "x"], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.success());
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("hello\n", "oops")
        );
        let e = c.execute("guest-nope", None).await.unwrap_err();
        assert!(e.is_class("CommandNotFound"), "{e:?}");
    }

    #[tokio::test]
    async fn missing_agent_socket_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let e = QgaClient::connect(dir.path().join("x"), Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, QemuError::Gone { .. }), "{e:?}");
    }
}
