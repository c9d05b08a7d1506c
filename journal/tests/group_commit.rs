//! Group commit: many concurrent durable appends share flushes and lose nothing.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;
use std::collections::BTreeSet;

async fn run(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            durability,
            ..opts()
        },
    )
    .unwrap();
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 20;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let j = j.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..PER_TASK {
                let seq = j
                    .append_durable(vec![(
                        t,
                        Event::OpFailed {
                            error: format!("{t}/{i}"),
                        },
                    )])
                    .await
                    .unwrap();
                assert!(j.durable_seq() >= seq);
                seqs.push(seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for h in handles {
        for s in h.await.unwrap() {
            assert!(all.insert(s), "seq {s} assigned twice");
        }
    }
    let total = TASKS * PER_TASK;
    assert_eq!(all.len() as u64, total);
    assert_eq!(
        all.iter().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let st = j.stats();
    println!(
        "{durability:?}: appends={} flushes={} fdatasyncs={} largest_batch={} durable_waits={}",
        st.appended, st.flushes, st.fdatasyncs, st.largest_batch, st.durable_waits
    );
    assert_eq!(st.appended, total);
    assert!(st.flushes < st.appended, "no flush was shared: {st:?}");
    if durability == Durability::Sync {
        assert_eq!(st.fdatasyncs, st.flushes);
    } else {
        assert_eq!(st.fdatasyncs, 0);
    }
    drop(j);
    // Nothing lost across reopen, and every task's records are there in its own order.
    let j = Journal::open(dir.path(), opts()).unwrap();
    let recs = read_all(&j);
    assert_eq!(recs.len() as u64, total);
    for t in 0..TASKS {
        let mine: Vec<String> = recs
            .iter()
            .filter(|r| r.op == t)
            .map(|r| match &r.event {
                Event::OpFailed { error } => error.clone(),
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        let want: Vec<String> = (0..PER_TASK).map(|i| format!("{t}/{i}")).collect();
        assert_eq!(mine, want);
    }
    assert_eq!(j.verify().unwrap().problem, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_appends_share_flushes_flush_mode() {
    run(Durability::Flush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_appends_share_flushes_sync_mode() {
    run(Durability::Sync).await;
}
