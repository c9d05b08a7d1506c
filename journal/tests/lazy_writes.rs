//! Records nobody waits on do not wake the writer for each one, yet are stored soon and lost by
//! nothing: an operation's outcomes ride with its next durable intent.

mod common;
use common::*;
use lunledger_journal::*;
use std::time::Duration;

fn event(i: u64) -> Event {
    Event::OpFailed {
        error: format!("r{i}"),
    }
}

fn no_flusher() -> JournalOptions {
    JournalOptions {
        flush_every_ms: None,
        ..opts()
    }
}

/// What a manager's operation does: a durable intent, then outcomes nobody waits on, then the
/// next durable intent. Only the durable requests should wake the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_nobody_waits_on_ride_with_the_next_durable_request() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), no_flusher()).unwrap();
    const ROUNDS: u64 = 200;
    const LAZY: u64 = 4;
    let before = j.stats();
    for r in 0..ROUNDS {
        j.append_durable(vec![(r, event(r))]).await.unwrap();
        for i in 0..LAZY {
            j.append(r, event(r * 100 + i)).unwrap();
        }
    }
    let seq = j.append_durable(vec![(ROUNDS, event(0))]).await.unwrap();
    let st = j.stats();
    let wakes = st.wakes - before.wakes;
    let durable_requests = ROUNDS + 1;
    println!(
        "{} records, {durable_requests} durable requests, {wakes} wakes",
        st.appended
    );
    // Every record would wake the writer without the linger: (1 + LAZY) x ROUNDS. A lazy record
    // wakes it only when the linger ran out before it came (a descheduled test thread), so allow
    // that for half the rounds.
    assert!(
        wakes <= durable_requests + ROUNDS / 2,
        "{wakes} wakes for {durable_requests} durable requests and {} lazy records",
        ROUNDS * LAZY
    );
    assert_eq!(j.durable_seq(), seq);
    assert_eq!(seq, ROUNDS * (1 + LAZY) + 1);
    drop(j);
    let j = Journal::open(dir.path(), opts()).unwrap();
    let recs = read_all(&j);
    assert_eq!(recs.len() as u64, seq);
    assert_eq!(
        recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=seq).collect::<Vec<_>>()
    );
}

/// A lone record nobody waits on still reaches the store promptly, whether the writer lingers
/// after a batch or sleeps with no deadline (no background flush configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_record_nobody_waits_on_is_stored_soon() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), no_flusher()).unwrap();
    let limit = Duration::from_secs(10);
    for (case, pause) in [("lingering writer", 0), ("sleeping writer", 50)] {
        j.append_durable(vec![(1, event(1))]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let seq = j.append(2, event(2)).unwrap();
        let mut tail = j.tail(seq);
        let t = std::time::Instant::now();
        let rec = tokio::time::timeout(limit, tail.next())
            .await
            .unwrap_or_else(|_| panic!("{case}: record {seq} not stored within {limit:?}"))
            .unwrap();
        assert_eq!(rec.seq, seq, "{case}");
        println!("{case}: stored after {:?}", t.elapsed());
    }
}

/// Records nobody waits on, appended while the writer lingers and then the journal is closed at
/// once, are stored and flushed by the close: the linger never strands them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_lingering_writer_keeps_its_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20u64 {
        let j = Journal::open(dir.path(), no_flusher()).unwrap();
        let first = j.append_durable(vec![(round, event(round))]).await.unwrap();
        for i in 0..50 {
            j.append(round, event(i)).unwrap();
        }
        drop(j);
        let j = Journal::open(dir.path(), opts()).unwrap();
        assert_eq!(j.last_seq(), first + 50, "round {round}");
        assert_eq!(j.open_report().lost_records, None);
    }
}
