//! The timeline page in a real browser (feature `browser-tests`; Debian's Chromium at
//! /usr/bin/chromium, which must be there: a missing browser fails these tests). The page runs
//! headless; any JavaScript error fails the test; the DOM must show what the journal holds
//! (lanes, marks, restart markers), and a screenshot of the demo journal's timeline is saved
//! to `<target>/timeline-demo.png`.

use lunledger_test_support as common;

use common::chromium::{body_attr, dump_dom, file_url, screenshot};
use common::cli::{cli, small_config as config, text};
use lunledger::backend::sim::SimVm;
use lunledger::{DiskRequest, Manager, ManagerOptions, MountConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

/// Writes the timeline of `journal` as HTML and JSON; returns (page, data).
fn timeline(journal: &Path, out: &Path) -> (PathBuf, Value) {
    let page = out.join("timeline.html");
    let o = cli(&[
        "timeline",
        journal.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "timeline: {}", text(&o));
    let o = cli(&["timeline", journal.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "timeline --json: {}", text(&o));
    let data = serde_json::from_slice(&o.stdout).unwrap();
    (page, data)
}

/// Runs `lunledger demo` with its journal in `dir/journal`, then writes its timeline into `dir`
/// ([`timeline`]).
fn demo_timeline(dir: &Path) -> (PathBuf, Value) {
    let journal = dir.join("journal");
    let o = cli(&["demo", "--journal", journal.to_str().unwrap()]);
    assert!(o.status.success(), "demo: {}", text(&o));
    timeline(&journal, dir)
}

/// The number of the add the demo's recovery rolled back, from the timeline's data.
fn rolled_back_op(data: &Value) -> u64 {
    data["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "rolled-back")
        .unwrap()["op"]
        .as_u64()
        .unwrap()
}

/// The DOM of `url` once the page's first render ran. Chromium's `--dump-dom` was seen (2 runs
/// in ~10, only with other tests loading both cores) to dump a page whose inline script had not
/// run yet, with no script error: such a dump is taken again (at most twice, said on stderr,
/// and kept as `<target>/timeline-unfinished-dom.html` for a look).
fn dump_rendered(url: &str) -> String {
    let mut last = String::new();
    for attempt in 1..=3 {
        let run = dump_dom(url, 0, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        let state = body_attr(&run.stdout, "data-render");
        if state.as_deref() != Some("pending") || body_attr(&run.stdout, "data-errors").is_some() {
            return run.stdout;
        }
        eprintln!("attempt {attempt}: chromium dumped {url} before its script ran; again");
        let _ = std::fs::write(
            target_dir().join("timeline-unfinished-dom.html"),
            &run.stdout,
        );
        last = run.stdout;
    }
    last
}

/// The page ran to the end without a script error.
fn assert_clean(dom: &str) {
    assert_eq!(
        body_attr(dom, "data-errors"),
        None,
        "script errors: {dom:.4000}"
    );
    let errors_at = dom.find("id=\"js-errors\">").expect("error area") + 15;
    assert!(
        dom[errors_at..].starts_with("</pre>"),
        "script errors: {}",
        &dom[errors_at..errors_at + 500.min(dom.len() - errors_at)]
    );
    // `drawn` once the first render is done, `done` after the frame that shows it (a dump
    // taken at the load event may come before that frame).
    let state = body_attr(dom, "data-render");
    assert!(
        matches!(state.as_deref(), Some("drawn" | "done")),
        "the page did not finish: {state:?}"
    );
}

/// The drawing alone (the page also holds its script and the legend, which name the same
/// classes).
fn svg_of(dom: &str) -> &str {
    let start = dom.find("<svg id=\"svg\"").expect("the drawing");
    let end = start + dom[start..].find("</svg>").expect("the drawing's end");
    &dom[start..end]
}

fn attr_num(dom: &str, name: &str) -> usize {
    body_attr(dom, name)
        .unwrap_or_else(|| panic!("no {name} on body"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

fn marks_in(data: &Value) -> usize {
    let mut n = 0;
    for lane in data["lanes"].as_array().unwrap() {
        for a in lane["spans"].as_array().unwrap() {
            n += 1 + a["steps"].as_array().unwrap().len();
            for m in a["mounts"].as_array().unwrap() {
                n += 1 + m["steps"].as_array().unwrap().len();
            }
        }
    }
    n + data["ops"].as_array().unwrap().len()
        + data["restarts"].as_array().unwrap().len()
        + data["drift"].as_array().unwrap().len()
}

#[test]
fn the_demo_timeline_renders_in_chromium_and_shows_the_crash_and_the_rollback() {
    let tmp = common::tempdir();
    let (page, data) = demo_timeline(tmp.path());
    let dom = &dump_rendered(&file_url(&page, ""));
    assert_clean(dom);
    let svg = svg_of(dom);

    let lanes = data["lanes"].as_array().unwrap().len();
    assert!(lanes >= 8, "the demo uses {lanes} slots");
    assert_eq!(attr_num(dom, "data-lanes"), lanes);
    assert_eq!(svg.matches("<g class=\"lane\"").count(), lanes);
    for lane in data["lanes"].as_array().unwrap() {
        let slot = lane["slot"].as_str().unwrap();
        assert!(
            svg.contains(&format!("data-slot=\"{slot}\"")),
            "lane {slot}"
        );
    }
    // At the whole-history zoom every mark is drawn one by one.
    assert_eq!(attr_num(dom, "data-marks"), marks_in(&data));
    assert!(
        !svg.contains("class=\"agg "),
        "a small journal is never aggregated"
    );

    // The crash: one restart marker, at the recovery operation, with what recovery did.
    let restarts = data["restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 1);
    assert_eq!(attr_num(dom, "data-restarts"), 1);
    let op = restarts[0]["op"].as_u64().unwrap();
    assert_eq!(svg.matches("class=\"restart\"").count(), 1);
    assert!(svg.contains(&format!("data-op=\"{op}\" class=\"restart\"")));
    assert!(svg.contains("shim restart 1"), "restart label");
    // The rollback: the add recovery rolled back is drawn as such and named by the marker.
    let rolled = data["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "rolled-back")
        .expect("the demo rolls an add back");
    assert!(svg.contains("class=\"op rolled-back\""));
    assert!(svg.contains(&format!("rolled back op {} (add)", rolled["op"])));
    // Read-only layers are labelled, and the legend explains the colours.
    assert!(svg.contains("[RO] layer-base.vhdx"));
    assert!(dom.contains("rolled back by recovery"));
    assert!(dom.contains("shim restart (shaded: journal silent)"));

    let png = target_dir().join("timeline-demo.png");
    let _ = std::fs::remove_file(&png);
    screenshot(&file_url(&page, ""), &png, 1400, 640, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a blank screenshot? {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn a_link_selects_an_operation_and_dims_the_rest() {
    let tmp = common::tempdir();
    let (page, data) = demo_timeline(tmp.path());
    let rolled = rolled_back_op(&data);
    let plain = dump_rendered(&file_url(&page, ""));
    assert_clean(&plain);
    assert!(
        !svg_of(&plain).contains(" dim\""),
        "nothing is dimmed without a selection"
    );
    let dom = &dump_rendered(&file_url(&page, &format!("op={rolled}")));
    assert_clean(dom);
    let dimmed = svg_of(dom).matches(" dim\"").count();
    let marks = attr_num(dom, "data-marks");
    assert!(dimmed > marks / 2, "{dimmed} of {marks} marks dimmed");
    assert!(dimmed < marks, "the selected op stays lit");
    // The rolled-back op's own bar is not dimmed.
    assert!(svg_of(dom).contains("class=\"op rolled-back\""));
    assert!(dom.contains(&format!("selected: op {rolled}")));
}

/// A long history is drawn as aggregates per pixel at the whole-history zoom, and as single
/// marks once zoomed in.
#[test]
fn wide_zoom_draws_aggregates_and_zooming_in_draws_marks() {
    let tmp = common::tempdir();
    let journal = tmp.path().join("journal");
    let vm = SimVm::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = Manager::open_with(
            &journal,
            ManagerOptions::new(config()),
            vm.host_backend(),
            vm.guest_backend(),
        )
        .await
        .unwrap();
        for _ in 0..2500 {
            let h = m
                .add_virtual_disk(DiskRequest::new("/d/churn.img").mount(MountConfig::default()))
                .await
                .unwrap();
            h.release().await.unwrap();
        }
        m.close().await.unwrap();
    });
    let (page, data) = timeline(&journal, tmp.path());
    let all = marks_in(&data);
    assert!(all > 10_000, "{all} marks");
    let wide = dump_rendered(&file_url(&page, ""));
    assert_clean(&wide);
    assert!(
        svg_of(&wide).contains("class=\"agg "),
        "aggregates at wide zoom"
    );
    let drawn = attr_num(&wide, "data-marks");
    assert!(drawn < all / 4, "{drawn} of {all} marks drawn at wide zoom");
    // The first 1% of the history: every attachment there is drawn on its own.
    let end = data["end"].as_u64().unwrap();
    let view = format!("view=0,{}", end / 100);
    let close = dump_rendered(&file_url(&page, &view));
    assert_clean(&close);
    let lane0 = svg_of(&close)
        .split("<g class=\"lane\"")
        .nth(1)
        .expect("a lane");
    assert!(
        !lane0.contains("class=\"agg "),
        "no aggregate when zoomed in"
    );
    assert!(
        lane0.contains("class=\"att"),
        "single attachments when zoomed in"
    );
}

/// Hover, click, wheel and drag, dispatched by a harness page that holds the timeline in a
/// frame (file pages may reach each other only with --allow-file-access-from-files, given to
/// this run alone).
#[test]
fn hover_shows_the_records_click_selects_wheel_zooms_and_drag_pans() {
    let tmp = common::tempdir();
    let (page, data) = demo_timeline(tmp.path());
    let rolled = rolled_back_op(&data);
    let harness = tmp.path().join("harness.html");
    std::fs::write(&harness, HARNESS).unwrap();
    let run = common::chromium::run(
        &file_url(&harness, ""),
        &[
            "--allow-file-access-from-files".into(),
            "--window-size=1400,900".into(),
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
        ],
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let open = "<pre id=\"out\">";
    let at = run.stdout.find(open).expect("harness output") + open.len();
    let end = at
        + run.stdout[at..]
            .find("</pre>")
            .unwrap_or_else(|| panic!("no end of the output: {}", &run.stdout[at..]));
    let raw = run.stdout[at..end]
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"");
    assert!(!raw.starts_with("ERR"), "harness: {raw}");
    let out: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(page.file_name().unwrap(), "timeline.html");
    // Hover on the rolled-back add: the tooltip names it and lists its records, the rollback
    // record with its reason among them.
    assert_eq!(out["tipHidden"], false, "{out}");
    let tip = out["tip"].as_str().unwrap();
    assert!(tip.contains(&format!("op {rolled} add")), "{tip}");
    assert!(tip.contains("op-rolled-back"), "{tip}");
    assert!(tip.contains("the caller never received a handle"), "{tip}");
    // Click: the op is selected, the rest dimmed.
    assert_eq!(
        out["selection"].as_str().unwrap(),
        format!("selected: op {rolled} (click empty space to clear)")
    );
    let (dimmed, marks) = (
        out["dimmed"].as_u64().unwrap(),
        out["marks"].as_u64().unwrap(),
    );
    assert!(dimmed > 0 && dimmed < marks, "{dimmed} of {marks}");
    // The wheel zooms in (the axis is relabelled with a finer step), dragging pans.
    assert_ne!(out["axisBefore"], out["axisZoomed"], "{out}");
    assert_ne!(out["axisZoomed"], out["axisPanned"], "{out}");
    assert_eq!(
        out["errors"],
        Value::Null,
        "script errors in the page: {out}"
    );
}

const HARNESS: &str = r#"<!DOCTYPE html><html><body>
<iframe id="f" src="timeline.html" width="1380" height="800"></iframe><pre id="out"></pre>
<script>
var out = {};
function done() { document.getElementById('out').textContent = JSON.stringify(out); }
function axis(d) { return Array.prototype.map.call(d.querySelectorAll('#svg .axis text'), function (t) { return t.textContent; }).join('|'); }
document.getElementById('f').onload = function () {
  try {
    var w = this.contentWindow, d = this.contentDocument;
    var el = d.querySelector('#svg rect.op.rolled-back');
    var r = el.getBoundingClientRect();
    el.dispatchEvent(new w.MouseEvent('mousemove', { bubbles: true, clientX: r.left + 2, clientY: r.top + 2 }));
    var tip = d.getElementById('tip');
    out.tipHidden = tip.hidden;
    out.tip = tip.textContent;
    el.dispatchEvent(new w.MouseEvent('click', { bubbles: true }));
    out.dimmed = d.querySelectorAll('#svg .dim').length;
    out.marks = d.querySelectorAll('#svg [data-k]').length;
    out.selection = d.getElementById('selection').textContent;
    out.axisBefore = axis(d);
    var svg = d.getElementById('svg'), box = svg.getBoundingClientRect();
    d.getElementById('chart').dispatchEvent(new w.WheelEvent('wheel', { bubbles: true, cancelable: true, deltaY: -300, clientX: box.left + box.width / 2, clientY: box.top + 100 }));
    // Waits (by timers: frames may not come to a frame in a headless run) for the redraw.
    function changed(from, then, tries) {
      if (axis(d) !== from || tries <= 0) { then(); return; }
      setTimeout(function () { changed(from, then, tries - 1); }, 50);
    }
    changed(out.axisBefore, function () {
      out.axisZoomed = axis(d);
      svg.dispatchEvent(new w.MouseEvent('mousedown', { bubbles: true, clientX: 700, clientY: 200, buttons: 1 }));
      w.dispatchEvent(new w.MouseEvent('mousemove', { bubbles: true, clientX: 450, clientY: 200, buttons: 1 }));
      w.dispatchEvent(new w.MouseEvent('mouseup', { bubbles: true }));
      changed(out.axisZoomed, function () {
        out.axisPanned = axis(d);
        out.errors = d.body.dataset.errors || null;
        done();
      }, 40);
    }, 40);
  } catch (e) { document.getElementById('out').textContent = 'ERR ' + e + ' ' + e.stack; }
};
</script></body></html>
"#;
