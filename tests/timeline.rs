//! `lunledger timeline` (issue #18): the picture's data agrees with the audit trail of the same
//! journal (slots, restarts, rollbacks, step durations), failures and teardowns left due are
//! marked, filters select what `replay` selects, and the page fetches nothing.

use lunledger_test_support as common;

use common::cli::{cli, small_config as config, text};
use lunledger::backend::sim::{FaultPlan, SimOp, SimVm};
use lunledger::backend::BackendError;
use lunledger::recovery::State;
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn timeline_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["timeline", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert!(o.status.success(), "timeline failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("timeline --json: {e}"))
}

fn demo_journal(dir: &Path) -> std::path::PathBuf {
    let j = dir.join("journal");
    let o = cli(&[
        "demo",
        "--journal",
        j.to_str().unwrap(),
        "--latency-ms",
        "5",
    ]);
    assert!(o.status.success(), "demo failed: {}", text(&o));
    j
}

#[test]
fn the_demo_journal_timeline_agrees_with_its_audit_trail() {
    let tmp = common::tempdir();
    let j = demo_journal(tmp.path());
    let tl = timeline_json(&j, &[]);
    let rows = json_lines(&cli(&["replay", j.to_str().unwrap(), "--json"]));
    assert!(rows.len() > 50, "demo journal has {} records", rows.len());

    // One lane per slot that held an attachment.
    let slots: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["event"] == "attach-reserved")
        .map(|r| r["slot"].as_str().unwrap().to_string())
        .collect();
    let lanes: BTreeSet<String> = tl["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["slot"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lanes, slots);
    assert_eq!(tl["records"]["seq"].as_array().unwrap().len(), rows.len());

    // The demo kills the shim once: one restart, at the recovery operation.
    let recoveries: Vec<u64> = rows
        .iter()
        .filter(|r| r["event"] == "op-started" && r["op_kind"] == "recovery")
        .map(|r| r["op"].as_u64().unwrap())
        .collect();
    let restarts = tl["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), recoveries.len());
    assert_eq!(restarts.len(), 1, "the demo restarts the shim once");
    assert_eq!(restarts[0]["op"].as_u64(), Some(recoveries[0]));
    assert!(restarts[0]["at"].as_u64() > restarts[0]["last_before"].as_u64());

    // The rollback: the same operation in both, marked, and named next to the restart.
    let rolled: Vec<u64> = rows
        .iter()
        .filter(|r| r["event"] == "op-rolled-back")
        .map(|r| r["op"].as_u64().unwrap())
        .collect();
    assert_eq!(rolled.len(), 1);
    let op = tl["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"].as_u64() == Some(rolled[0]))
        .expect("the rolled-back op is drawn");
    assert_eq!(op["outcome"], "rolled-back");
    let did: Vec<&str> = restarts[0]["did"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        did.iter()
            .any(|d| d.contains(&format!("rolled back op {}", rolled[0]))),
        "{did:?}"
    );

    // Every step outcome in the trail is a step span with the same duration.
    let t0 = tl["t0"].as_u64().unwrap();
    let mut spans = Vec::new();
    for lane in tl["lanes"].as_array().unwrap() {
        for a in lane["spans"].as_array().unwrap() {
            spans.extend(a["steps"].as_array().unwrap().iter().cloned());
            for m in a["mounts"].as_array().unwrap() {
                spans.extend(m["steps"].as_array().unwrap().iter().cloned());
            }
        }
    }
    let outcomes: Vec<&Value> = rows
        .iter()
        .filter(|r| r["event"] == "done" || r["event"] == "failed")
        .collect();
    assert!(!outcomes.is_empty());
    for r in outcomes {
        let stop = r["ts_micros"].as_u64().unwrap() - t0;
        let ms = r["duration_ms"].as_f64().unwrap();
        let s = spans
            .iter()
            .find(|s| s["stop"].as_u64() == Some(stop) && s["step"] == r["step"])
            .unwrap_or_else(|| panic!("no step span for record {}", r["seq"]));
        let d = (s["stop"].as_u64().unwrap() - s["start"].as_u64().unwrap()) as f64 / 1000.0;
        assert!((d - ms).abs() < 0.002, "record {}: {d} vs {ms}", r["seq"]);
    }
    // The demo ends with everything released: every attachment is gone.
    for lane in tl["lanes"].as_array().unwrap() {
        for a in lane["spans"].as_array().unwrap() {
            assert_eq!(a["end"], "gone", "{a}");
        }
    }
}

#[test]
fn the_page_is_self_contained_and_carries_the_data() {
    let tmp = common::tempdir();
    let j = demo_journal(tmp.path());
    let out = tmp.path().join("t.html");
    let o = cli(&["timeline", j.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    for fetch in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "fetch(",
        "XMLHttpRequest",
    ] {
        assert!(!page.contains(fetch), "the page would fetch: {fetch}");
    }
    assert!(page.contains("id=\"timeline-data\""));
    assert!(page.contains("window.onerror"));
}

#[test]
fn filters_select_what_replay_selects() {
    let tmp = common::tempdir();
    let j = demo_journal(tmp.path());
    let js = j.to_str().unwrap();
    for filter in [
        vec!["--owner", "c1"],
        vec!["--slot", "0:0"],
        vec!["--failed"],
        vec!["--from-seq", "20", "--to-seq", "60"],
        vec!["--step", "mount"],
    ] {
        let tl = timeline_json(&j, &filter);
        let mut args = vec!["replay", js, "--json"];
        args.extend_from_slice(&filter);
        let want: Vec<u64> = json_lines(&cli(&args))
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        let got: Vec<u64> = tl["records"]["seq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "filter {filter:?}");
    }
    // Only c1's operations are drawn for --owner c1.
    let tl = timeline_json(&j, &["--owner", "c1"]);
    for o in tl["ops"].as_array().unwrap() {
        if o["kind"] == "add" || o["kind"] == "release" {
            assert_eq!(o["owner"], "c1", "{o}");
        }
    }
    // The restart is context for any selection that spans it, and only for those.
    let c2 = timeline_json(&j, &["--owner", "c2"]);
    assert_eq!(c2["restarts"].as_array().unwrap().len(), 1);
    let early = timeline_json(&j, &["--to-seq", "20"]);
    assert_eq!(early["restarts"].as_array().unwrap().len(), 0);
    let o = cli(&["timeline", js, "--slot", "zero"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// A failed mount, and a release whose unplug keeps failing: the failed step and operation are
/// marked, and the attachment whose teardown is left due ends `due`.
#[test]
fn failures_and_teardowns_left_due_are_marked() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("journal");
    let vm = SimVm::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let records = rt.block_on(async {
        let opts = ManagerOptions::new(config());
        let m = Manager::open_with(&dir, opts, vm.host_backend(), vm.guest_backend())
            .await
            .unwrap();
        vm.set_faults(FaultPlan::new().fail_nth(SimOp::Mount, 1, "mount: bad superblock"));
        let req = |p: &str| {
            DiskRequest::new(p)
                .mount(MountConfig::default())
                .owner("c1")
        };
        assert!(m.add_virtual_disk(req("/d/a.img")).await.is_err());
        let b = m.add_virtual_disk(req("/d/b.img")).await.unwrap();
        vm.set_faults(FaultPlan::new().fail_always(
            SimOp::Unplug,
            BackendError::Failed("unplug: device busy".into()),
        ));
        // The release ends (the handle's references are gone); the teardown stays due.
        let _ = b.release().await;
        m.sync().await.unwrap();
        let recs: Vec<_> = m.journal().read_from(1).collect::<Result<_, _>>().unwrap();
        m.close().await.unwrap();
        recs
    });
    let tl = lunledger::timeline::build(&State::new(), &records);
    assert_eq!(tl.problem, None);
    let failed_ops: Vec<_> = tl.ops.iter().filter(|o| o.outcome == "failed").collect();
    assert!(
        failed_ops
            .iter()
            .any(|o| o.error.as_deref().unwrap_or("").contains("bad superblock")),
        "{failed_ops:?}"
    );
    let steps: Vec<_> = tl
        .lanes
        .iter()
        .flat_map(|l| &l.spans)
        .flat_map(|a| a.steps.iter().chain(a.mounts.iter().flat_map(|m| &m.steps)))
        .collect();
    assert!(steps
        .iter()
        .any(|s| s.step == "mount" && s.outcome == "failed"));
    assert!(steps
        .iter()
        .any(|s| s.step == "unplug" && s.outcome == "failed"));
    let b = tl
        .lanes
        .iter()
        .flat_map(|l| &l.spans)
        .find(|a| tl.disks[a.disk] == "/d/b.img")
        .unwrap();
    assert_eq!(b.end, lunledger::timeline::SpanEnd::Due);
    let a = tl
        .lanes
        .iter()
        .flat_map(|l| &l.spans)
        .find(|a| tl.disks[a.disk] == "/d/a.img")
        .unwrap();
    assert_eq!(a.end, lunledger::timeline::SpanEnd::Gone, "rolled back");
    assert!(tl.mark_count() > 0);
}
