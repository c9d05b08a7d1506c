//! A child process appending durably is killed with SIGKILL; every acknowledged record survives
//! and the journal reopens with an intact chain.

use lunledger_journal::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Child half: appends durably forever, printing each acknowledged seq.
#[test]
#[ignore]
fn child_append_forever() {
    let Some(dir) = std::env::var_os("LUNLEDGER_KILL_DIR") else {
        return;
    };
    let j = Journal::open(&dir, JournalOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut hs = Vec::new();
        for w in 0..8u64 {
            let j = j.clone();
            hs.push(tokio::spawn(async move {
                for i in 0.. {
                    let seq = j
                        .append_durable(vec![(
                            w,
                            Event::OpFailed {
                                error: format!("{w}/{i}"),
                            },
                        )])
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {seq}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_append_forever",
            "--nocapture",
        ])
        .env("LUNLEDGER_KILL_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut max_acked = 0u64;
    let start = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    while start.elapsed() < Duration::from_millis(700) {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(s) = l.strip_prefix("ACK ") {
                    max_acked = max_acked.max(s.trim().parse().unwrap());
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(max_acked > 0, "child acknowledged nothing");
    let j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    println!(
        "acked {max_acked}, recovered {}, report {:?}",
        j.last_seq(),
        j.open_report()
    );
    assert!(j.last_seq() >= max_acked, "lost acknowledged records");
    assert_eq!(j.verify().unwrap().problem, None);
}
