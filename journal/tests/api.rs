//! Core API behaviour: round trips, restart, durability waits, config, tail, halt, InUse.

mod common;
use common::*;
use lunledger_journal::*;
use lunledger_model::*;

#[test]
fn every_event_round_trips_through_the_store_and_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let events = every_event();
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        for (i, e) in events.iter().enumerate() {
            let seq = j.append(i as u64, e.clone()).unwrap();
            assert_eq!(seq, i as u64 + 1);
        }
        j.wait_durable_blocking(j.last_seq()).unwrap();
        let recs = read_all(&j);
        assert_eq!(recs.len(), events.len());
        for (r, e) in recs.iter().zip(&events) {
            assert_eq!(&r.event, e);
            assert_eq!(decode_record(&encode_record(r).unwrap()).unwrap(), *r);
        }
    }
    let j = Journal::open(dir.path(), opts()).unwrap();
    let got: Vec<Event> = read_all(&j).into_iter().map(|r| r.event).collect();
    assert_eq!(got, events);
}

#[test]
fn restart_keeps_seq_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        for i in 0..10 {
            j.append(i, Event::OpFinished).unwrap();
        }
        // Not waited for: Drop must flush.
    }
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        assert_eq!(j.last_seq(), 10);
        assert_eq!(j.durable_seq(), 10);
        assert_eq!(j.open_report().tail_quarantined, None);
        assert_eq!(j.append(99, Event::OpAbandoned).unwrap(), 11);
        j.wait_durable_blocking(11).unwrap();
        let v = j.verify().unwrap();
        assert_eq!(v.problem, None, "{v:?}");
        assert_eq!(v.records_checked, 11);
    }
    let j = Journal::open(dir.path(), opts()).unwrap();
    let recs = read_all(&j);
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    assert_eq!(recs[0].prev_hash, [0u8; 32]);
    for w in recs.windows(2) {
        assert_eq!(w[1].prev_hash, j.stored_hash(w[0].seq).unwrap().unwrap());
    }
    assert_eq!(j.first_seq().unwrap(), Some(1));
    assert_eq!(
        j.newest(3)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
    assert_eq!(
        j.read_range(4, 6)
            .map(|r| r.unwrap().seq)
            .collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(j.read_range(6, 4).count(), 0);
}

#[test]
fn second_opener_gets_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    match Journal::open(dir.path(), opts()) {
        Err(JournalError::InUse { dir: d, .. }) => assert_eq!(d, dir.path()),
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(j);
    Journal::open(dir.path(), opts()).unwrap();
}

/// Child half of `second_process_gets_in_use`: opens the journal named by the environment and
/// reports the outcome on stdout.
#[test]
#[ignore]
fn child_open_probe() {
    let Some(dir) = std::env::var_os("LUNLEDGER_PROBE_DIR") else {
        return;
    };
    match Journal::open(&dir, opts()) {
        Err(JournalError::InUse { .. }) => println!("PROBE:INUSE"),
        Err(e) => println!("PROBE:ERR {e}"),
        Ok(_) => println!("PROBE:OPENED"),
    }
}

#[test]
fn second_process_gets_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _j = Journal::open(dir.path(), opts()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--ignored", "--exact", "child_open_probe", "--nocapture"])
        .env("LUNLEDGER_PROBE_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PROBE:INUSE"), "child said: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_durable_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    let last = j
        .append_durable(vec![(1, Event::OpFinished), (1, Event::OpAbandoned)])
        .await
        .unwrap();
    assert_eq!(last, 2);
    assert!(j.durable_seq() >= 2);
    let s = j.append(2, Event::OpFinished).unwrap();
    j.wait_durable(s).await.unwrap();
    assert!(j.durable_seq() >= 3);
    assert!(matches!(
        j.wait_durable(100).await,
        Err(JournalError::NotAssigned { seq: 100, last: 3 })
    ));
    assert_eq!(j.append_durable(vec![]).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_durable_appends_ride_on_the_idle_flush() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            flush_every_ms: Some(20),
            ..opts()
        },
    )
    .unwrap();
    j.append(1, Event::OpFinished).unwrap();
    let t0 = std::time::Instant::now();
    while j.durable_seq() < 1 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "never flushed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), opts()).unwrap();
    j.append(1, Event::OpFinished).unwrap();
    let mut t = j.tail(1);
    assert_eq!(t.next().await.unwrap().seq, 1);
    let j2 = j.clone();
    let h = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        j2.append(2, Event::OpAbandoned).unwrap();
    });
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), t.next())
        .await
        .expect("tail did not see the append")
        .unwrap();
    assert_eq!((r.seq, r.event), (2, Event::OpAbandoned));
    h.await.unwrap();
    j.halt();
    assert!(matches!(t.next().await, Err(JournalError::Halted)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_fails_appends_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = Journal::open(dir.path(), opts()).unwrap();
        j.append_durable(vec![(1, Event::OpFinished)])
            .await
            .unwrap();
        j.halt();
        assert!(matches!(
            j.append(1, Event::OpFinished),
            Err(JournalError::Halted)
        ));
        assert!(matches!(
            j.append_durable(vec![(1, Event::OpFinished)]).await,
            Err(JournalError::Halted)
        ));
    }
    let j = Journal::open(dir.path(), opts()).unwrap();
    assert_eq!(j.last_seq(), 1);
}

#[test]
fn journal_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Journal>();
}

#[test]
fn steady_non_durable_stream_still_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(
        dir.path(),
        JournalOptions {
            flush_every_ms: Some(30),
            ..opts()
        },
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    // Appends every ~2 ms for 300 ms: the writer never idles for 30 ms.
    while t0.elapsed() < std::time::Duration::from_millis(300) {
        j.append(1, Event::OpFinished).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        j.durable_seq() > 0,
        "no periodic flush under a steady stream"
    );
    assert!(j.stats().flushes >= 2, "{:?}", j.stats());
}
