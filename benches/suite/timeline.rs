//! The timeline of a long history (`cargo bench --bench suite -- --timeline`, issue #18): time
//! to write the HTML file for the cached 1M-record journal, its size, and the time to first
//! paint in headless Chromium. Baselines measured in the same run, interleaved: writing the
//! file against the fold of the same records (what any audit of them costs at least), the big
//! page's first paint against the demo-sized page's (what the browser costs for any page).

use crate::history;
use crate::report::median;
use lunledger::journal::{Journal, JournalOptions, Record};
use lunledger::recovery::State;
use lunledger::timeline;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

// Shared with the browser tests.
use lunledger_test_support::chromium;

const ROUNDS: usize = 3;
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the timeline benchmark on the cached journal of `large` records of history.
pub fn run(cache: &Path, tmp: &Path, large: u64) {
    let h = history::get(cache, large, 10_000);
    let dir = h.journal_dir();
    let t = Instant::now();
    let records: Vec<Record> = {
        let j = Journal::open(&dir, JournalOptions::default()).expect("open journal");
        let recs = j
            .read_range(1, j.last_seq())
            .collect::<Result<_, _>>()
            .expect("read records");
        drop(j);
        recs
    };
    let read = t.elapsed();
    println!(
        "timeline: {} records read in {:.0} ms",
        records.len(),
        read.as_secs_f64() * 1e3
    );
    let page = tmp.join("timeline-1m.html");
    let (mut fold_ms, mut write_ms) = (Vec::new(), Vec::new());
    let mut size = 0;
    let mut marks = 0;
    for _ in 0..ROUNDS {
        // A: the fold alone.
        let t = Instant::now();
        let st = State::fold(records.iter()).expect("fold");
        fold_ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&st);
        // B: build, render and write the page.
        let t = Instant::now();
        let tl = timeline::build(&State::new(), &records);
        let html = timeline::html::render(&tl, "bench");
        std::fs::write(&page, html.as_bytes()).expect("write page");
        write_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(tl.problem, None);
        size = html.len();
        marks = tl.mark_count();
    }
    let (f, w) = (median(&mut fold_ms), median(&mut write_ms));
    println!(
        "  write the page: {w:.0} ms (median of {ROUNDS}; {:?}), fold alone {f:.0} ms: ratio {:.2}",
        write_ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
        w / f
    );
    println!(
        "  page size {:.1} MiB ({:.1} bytes/record), {marks} marks",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / records.len() as f64
    );
    cli_end_to_end(&dir, tmp);
    browser(&page, tmp, &records);
}

/// The command a person runs, from the journal directory to the file (private copy included).
fn cli_end_to_end(dir: &Path, tmp: &Path) {
    let out = tmp.join("timeline-cli.html");
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_lunledger"))
        .args(["timeline"])
        .arg(dir)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run lunledger timeline");
    assert!(
        o.status.success(),
        "lunledger timeline: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!(
        "  `lunledger timeline <journal> -o FILE` end to end: {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_file(&out);
}

/// First paint of the big page against a small one, interleaved.
fn browser(page: &Path, tmp: &Path, records: &[Record]) {
    if !Path::new(chromium::CHROMIUM).exists() {
        println!(
            "  first paint: not measured ({} is missing)",
            chromium::CHROMIUM
        );
        return;
    }
    // The baseline page: the first 200 records, about the demo's size.
    let small = tmp.join("timeline-small.html");
    let n = records.len().min(200);
    let tl = timeline::build(&State::new(), &records[..n]);
    std::fs::write(&small, timeline::html::render(&tl, "small")).expect("write small page");
    let (mut big_paint, mut small_paint, mut big_wall, mut small_wall) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (p, paint, wall) in [
            (&small, &mut small_paint, &mut small_wall),
            (&page.to_path_buf(), &mut big_paint, &mut big_wall),
        ] {
            let url = chromium::file_url(p, "");
            let run =
                chromium::dump_dom(&url, 0, BROWSER_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
            let dom = &run.stdout;
            assert_eq!(
                chromium::body_attr(dom, "data-errors"),
                None,
                "script errors"
            );
            let state = chromium::body_attr(dom, "data-render");
            assert!(
                matches!(state.as_deref(), Some("done" | "drawn")),
                "the page did not finish: {state:?}"
            );
            // The first frame's time, or (dumped before that frame) the end of the first
            // render, which precedes it.
            let ms: f64 = chromium::body_attr(dom, "data-paint-ms")
                .or_else(|| chromium::body_attr(dom, "data-render-ms"))
                .and_then(|v| v.parse().ok())
                .expect("data-render-ms");
            paint.push(ms);
            wall.push(run.wall.as_secs_f64() * 1e3);
            if p == &page.to_path_buf() {
                let drawn = chromium::body_attr(dom, "data-marks").unwrap_or_default();
                println!("  big page: {drawn} marks drawn at the whole-history zoom");
            }
        }
    }
    // Wall time until a picture exists (a screenshot: start, load, render, capture), without
    // --dump-dom's serialization of the whole page (the big page's data is most of it).
    let (mut big_shot, mut small_shot) = (Vec::new(), Vec::new());
    let png = tmp.join("shot.png");
    for _ in 0..ROUNDS {
        for (p, wall) in [
            (&small, &mut small_shot),
            (&page.to_path_buf(), &mut big_shot),
        ] {
            let run =
                chromium::screenshot(&chromium::file_url(p, ""), &png, 1400, 900, BROWSER_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{e}"));
            wall.push(run.wall.as_secs_f64() * 1e3);
        }
    }
    let (bs, ss) = (median(&mut big_shot), median(&mut small_shot));
    let (bp, sp) = (median(&mut big_paint), median(&mut small_paint));
    let (bw, sw) = (median(&mut big_wall), median(&mut small_wall));
    println!(
        "  first paint (page's performance.now() after its first frame): {bp:.0} ms for {} records, {sp:.0} ms for {n}: ratio {:.1}",
        records.len(),
        bp / sp
    );
    println!(
        "  chromium wall time to a screenshot (start, load, render, capture, exit): {bs:.0} ms vs {ss:.0} ms: ratio {:.1}",
        bs / ss
    );
    println!(
        "  chromium wall time with --dump-dom (serializes the page, data included): {bw:.0} ms vs {sw:.0} ms: ratio {:.1}",
        bw / sw
    );
}
