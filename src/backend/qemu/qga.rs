//! A small asynchronous qemu-guest-agent client: delimited resynchronisation, commands, and
//! `guest-exec` with polling.
//!
//! The agent answers in order and without ids, so a reply left unread by a client that crashed
//! (or by our own call that timed out) would be taken as the answer to the next command. Every
//! fresh connection therefore sends 0xFF (which resets the agent's parser) and
//! `guest-sync-delimited` with a new id, and discards everything up to the matching reply; any
//! failure mid-call drops the connection so the next call resyncs.
//!
//! `guest-exec` results need the same care one level up: the agent keeps each result, keyed by
//! pid only, until someone asks for it with `guest-exec-status`, and a client killed mid-exec
//! never does. Once guest pids wrap, a status query for a new process answers with the old
//! process's result first. So every command runs under a tiny `sh` wrapper that prints a
//! per-call nonce before it `exec`s the command, [`QgaClient::exec`] accepts a result only if
//! its stdout starts with that nonce, and a result that does not is collected (the query
//! removes it from the agent) and discarded; past a bound it is a
//! [`QemuError::ExecMismatch`], never an answer. Results of our own calls that timed out are
//! collected before the next call.

use super::base64;
use super::error::{millis, QemuError};
use super::lines::{command_error, JsonLines};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often `guest-exec-status` is polled.
const EXEC_POLL: Duration = Duration::from_millis(10);

/// The wrapper every `guest-exec` runs, as `/bin/sh -c BIND_SCRIPT NONCE PATH ARGS...`: it
/// prints `lunledger-exec NONCE` as the first line of stdout (busybox's `echo` is a builtin that
/// writes with one syscall, so nothing is left buffered) and replaces itself with the command.
const BIND_SCRIPT: &str = "echo \"lunledger-exec $0\" && exec \"$@\"";

/// How many results for our pid that belong to other processes one call collects and discards
/// before it gives up. Each one needs an uncollected result for the same pid from an earlier
/// wrap of the pid space, so more than a few means something else is wrong.
const MAX_STALE: u32 = 8;

/// How many timed-out calls' pids a client remembers, to collect their results later.
const MAX_ABANDONED: usize = 64;

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
#[derive(Debug)]
pub struct QgaClient {
    path: PathBuf,
    conn: Option<JsonLines>,
    timeout: Duration,
    /// Pids of our `guest-exec` calls that timed out: their results are still in the agent and
    /// are collected (and discarded) before the next call.
    abandoned: Vec<i64>,
    /// Bumped on every new connection and every `guest-exec` given up on: a command sent
    /// before the current epoch (by us, or by a client that died) may still be running in the
    /// guest. See [`QgaClient::epoch`].
    epoch: u64,
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
            abandoned: Vec::new(),
            epoch: 0,
        }
    }

    /// Changes whenever commands this client cannot see the end of may still be running in the
    /// guest: after every (re)connection (a client before us may have died mid-command) and
    /// after every `guest-exec` whose wait timed out. Callers that must not run concurrently
    /// with such leftovers wait for them when the epoch changed (see `QemuGuest`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Connects and resyncs if there is no connection, so [`QgaClient::epoch`] is current.
    pub async fn ensure_connected(&mut self) -> Result<(), QemuError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.resync())
            .await
            .map_err(|_| QemuError::NoHandshake {
                path: self.path.display().to_string(),
                ms: millis(timeout),
            })?
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
        let id = fresh_id();
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
        self.epoch += 1;
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
                return Err(QemuError::timeout(
                    &format!("guest agent {command}"),
                    timeout,
                ));
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
    /// exit status and output. A timeout leaves the process running in the guest (its result is
    /// collected by a later call).
    ///
    /// The result is bound to this call: the command runs under `/bin/sh` (see `BIND_SCRIPT`),
    /// which prints a fresh nonce first; a result without it belongs to another process that
    /// had the same pid, and is collected and discarded. After `MAX_STALE` such results the
    /// call fails with [`QemuError::ExecMismatch`].
    pub async fn exec(
        &mut self,
        path: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, QemuError> {
        let start = Instant::now();
        self.collect_abandoned().await;
        let nonce = fresh_id().to_string();
        let tag = format!("lunledger-exec {nonce}\n");
        let mut argv = vec!["-c", BIND_SCRIPT, nonce.as_str(), path];
        argv.extend_from_slice(args);
        let ret = self
            .execute(
                "guest-exec",
                Some(json!({"path": "/bin/sh", "arg": argv, "capture-output": true})),
            )
            .await?;
        let pid = ret
            .get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| QemuError::Protocol {
                path: self.path.display().to_string(),
                detail: format!("guest-exec returned no pid: {ret}"),
            })?;
        let mut stale = 0;
        loop {
            let st = match self
                .execute("guest-exec-status", Some(json!({ "pid": pid })))
                .await
            {
                Ok(st) => st,
                Err(e) => {
                    if e.is_connection() || matches!(e, QemuError::Timeout { .. }) {
                        self.abandon(pid);
                    }
                    return Err(e);
                }
            };
            if st.get("exited").and_then(Value::as_bool) == Some(true) {
                let data = |k: &str| {
                    let raw = st.get(k).and_then(Value::as_str).unwrap_or("");
                    String::from_utf8_lossy(&base64::decode(raw)).into_owned()
                };
                let stdout = data("out-data");
                if let Some(rest) = stdout.strip_prefix(&tag) {
                    return Ok(ExecOutput {
                        exit_code: st.get("exitcode").and_then(Value::as_i64),
                        signal: st.get("signal").and_then(Value::as_i64),
                        stdout: rest.to_string(),
                        stderr: data("err-data"),
                    });
                }
                // Another process's result for a reused pid: this query collected it.
                stale += 1;
                let first = stdout.lines().next().unwrap_or("").to_string();
                tracing::warn!(
                    pid,
                    stale,
                    first_line = %first,
                    "discarded a guest-exec result that belongs to another process"
                );
                if stale >= MAX_STALE {
                    return Err(QemuError::ExecMismatch {
                        pid,
                        detail: format!(
                            "{stale} results for this pid belong to other processes \
                             (last began {first:?}, expected the nonce {nonce})"
                        ),
                    });
                }
                continue;
            }
            if start.elapsed() >= timeout {
                self.abandon(pid);
                return Err(QemuError::timeout(
                    &format!("guest agent guest-exec {path}"),
                    timeout,
                ));
            }
            tokio::time::sleep(EXEC_POLL).await;
        }
    }

    /// Remembers a pid whose result we will not wait for, to collect it later.
    fn abandon(&mut self, pid: i64) {
        self.epoch += 1;
        if self.abandoned.len() >= MAX_ABANDONED {
            self.abandoned.remove(0);
        }
        self.abandoned.push(pid);
    }

    /// Collects (and discards) the results of our timed-out calls whose processes have exited,
    /// so they cannot answer for a later process with the same pid. Best effort: a pid still
    /// running is kept, and a connection failure leaves the rest for the next call.
    async fn collect_abandoned(&mut self) {
        let pids = std::mem::take(&mut self.abandoned);
        for (i, &pid) in pids.iter().enumerate() {
            match self
                .execute("guest-exec-status", Some(json!({ "pid": pid })))
                .await
            {
                Ok(st) if st.get("exited").and_then(Value::as_bool) == Some(true) => {
                    tracing::debug!(pid, "collected the result of a timed-out guest-exec");
                }
                Ok(_) => self.abandoned.push(pid),
                // The agent no longer knows the pid: nothing left to collect.
                Err(QemuError::Command { .. }) => {}
                Err(_) => {
                    self.abandoned.extend_from_slice(&pids[i..]);
                    return;
                }
            }
        }
    }
}

/// A sync id or exec nonce unlikely to repeat across processes (time) or within one (counter),
/// so a reply meant for a crashed client's sync or command never matches ours.
fn fresh_id() -> u64 {
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
            let (mut polls, mut nonce) = (0, String::new());
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
                    "guest-exec" => {
                        nonce = msg["arguments"]["arg"][2]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        json!({"return": {"pid": 7}}).to_string().into_bytes()
                    }
                    "guest-exec-status" => {
                        polls += 1;
                        let status = if polls < 3 {
                            json!({"return": {"exited": false}})
                        } else {
                            let out = format!("lunledger-exec {nonce}\nhello\n");
                            json!({"return": {"exited": true, "exitcode": 3,
                                "out-data": b64(out.as_bytes()), "err-data": "b29wcw=="}})
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

    /// Standard padded base64, for the fakes' `out-data`.
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// A fake agent whose pid 7 has been reused: `status(poll, argv)` answers the n-th
    /// `guest-exec-status` for the `arg` list of the last `guest-exec`.
    fn fake_reused_pid<F>(path: &Path, status: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(u32, &[String]) -> Value + Send + 'static,
    {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let (mut polls, mut argv) = (0, Vec::new());
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    return;
                }
                let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
                let msg: Value = serde_json::from_slice(&line[start..]).unwrap();
                let reply = match msg["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => json!({"return": msg["arguments"]["id"]}),
                    "guest-exec" => {
                        argv = msg["arguments"]["arg"]
                            .as_array()
                            .map(|a| a.iter().map(|v| v.as_str().unwrap_or("").to_string()))
                            .into_iter()
                            .flatten()
                            .collect();
                        polls = 0;
                        json!({"return": {"pid": 7}})
                    }
                    "guest-exec-status" => {
                        polls += 1;
                        json!({"return": status(polls, &argv)})
                    }
                    _ => json!({"error": {"class": "CommandNotFound", "desc": "no"}}),
                };
                let mut bytes = reply.to_string().into_bytes();
                bytes.push(b'\n');
                w.write_all(&bytes).await.unwrap();
            }
        })
    }

    /// An exited process's status with `stdout`.
    fn exited(stdout: &str) -> Value {
        json!({"exited": true, "exitcode": 0, "out-data": b64(stdout.as_bytes()), "err-data": ""})
    }

    /// What our own process prints: the nonce line the client asked for (the argument after
    /// the wrapper script), then `body`.
    fn ours(argv: &[String], body: &str) -> Value {
        let nonce = argv.get(2).map(String::as_str).unwrap_or("");
        exited(&format!("lunledger-exec {nonce}\n{body}"))
    }

    #[tokio::test]
    async fn exec_discards_a_stale_result_left_for_a_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        // The agent still holds the result of an earlier pid 7 nobody collected (a shim killed
        // mid-exec): it answers with that one first, then with ours.
        let _srv = fake_reused_pid(&sock, |poll, argv| match poll {
            1 => exited("lunledger-exec 4242\nM /dev/sda /mnt/stale\n"),
            2 => json!({"exited": false}),
            _ => ours(argv, "M /dev/sdb /mnt/live\n"),
        });
        let mut c = QgaClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let out = c
            .exec("/bin/sh", &["-c", "x", "sh"], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(out.stdout, "M /dev/sdb /mnt/live\n");
    }

    #[tokio::test]
    async fn exec_reply_bound_to_another_process_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        // Every result the agent gives for our pid belongs to some other process.
        let _srv = fake_reused_pid(&sock, |poll, _| {
            exited(&format!("lunledger-exec {poll}\nM /dev/sda /mnt/stale\n"))
        });
        let mut c = QgaClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let res = c
            .exec("/bin/sh", &["-c", "x", "sh"], Duration::from_secs(2))
            .await;
        assert!(
            matches!(res, Err(QemuError::ExecMismatch { pid: 7, .. })),
            "{res:?}"
        );
        // Whether our own command took effect is unknown: the manager treats it as uncertain.
        if let Err(e) = res {
            let b = crate::backend::BackendError::from(e);
            assert!(
                matches!(b, crate::backend::BackendError::Unavailable(_)),
                "{b:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_timed_out_exec_is_collected_before_the_next_one() {
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = log.clone();
        let _srv = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let (mut next_pid, mut nonces) = (7, std::collections::HashMap::new());
            let started = Instant::now();
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).await.unwrap() == 0 {
                    return;
                }
                let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
                let msg: Value = serde_json::from_slice(&line[start..]).unwrap();
                let reply = match msg["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => json!({"return": msg["arguments"]["id"]}),
                    "guest-exec" => {
                        let nonce = msg["arguments"]["arg"][2].as_str().unwrap().to_string();
                        nonces.insert(next_pid, nonce);
                        seen.lock().unwrap().push(format!("exec {next_pid}"));
                        next_pid += 1;
                        json!({"return": {"pid": next_pid - 1}})
                    }
                    "guest-exec-status" => {
                        let pid = msg["arguments"]["pid"].as_i64().unwrap();
                        // pid 7 exits 100 ms after it started, long after its caller gave up.
                        let gave_up = pid == 8 || started.elapsed() > Duration::from_millis(100);
                        seen.lock()
                            .unwrap()
                            .push(format!("status {pid} exited={gave_up}"));
                        let nonce = nonces.get(&pid).cloned().unwrap_or_default();
                        if gave_up {
                            let out = format!("lunledger-exec {nonce}\npid {pid}\n");
                            json!({"return": {"exited": true, "exitcode": 0,
                                "out-data": b64(out.as_bytes())}})
                        } else {
                            json!({"return": {"exited": false}})
                        }
                    }
                    _ => json!({"error": {"class": "CommandNotFound", "desc": "no"}}),
                };
                let mut bytes = reply.to_string().into_bytes();
                bytes.push(b'\n');
                w.write_all(&bytes).await.unwrap();
            }
        });
        let mut c = QgaClient::connect(&sock, Duration::from_secs(2))
            .await
            .unwrap();
        let e = c
            .exec("/bin/sleep", &["100"], Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(matches!(e, QemuError::Timeout { .. }), "{e:?}");
        assert_eq!(c.abandoned, vec![7]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let out = c
            .exec("/bin/true", &[], Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(out.stdout, "pid 8\n");
        let log = log.lock().unwrap().clone();
        let first_exec_8 = log.iter().position(|l| l == "exec 8").unwrap();
        let collected_7 = log.iter().position(|l| l == "status 7 exited=true");
        assert!(
            collected_7.is_some_and(|i| i < first_exec_8),
            "pid 7's result was not collected before the next exec: {log:?}"
        );
        assert!(c.abandoned.is_empty(), "{:?}", c.abandoned);
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
