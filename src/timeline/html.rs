//! Renders a [`Timeline`] as one self-contained HTML page: the data as embedded JSON, the
//! drawing code and styles inlined (`assets/`), nothing fetched, so the file opens offline and
//! can be attached to a bug report.

use super::Timeline;
use std::fmt::Write as _;

const CSS: &str = include_str!("assets/timeline.css");
const JS: &str = include_str!("assets/timeline.js");

/// The page for `timeline`, titled after `source` (the journal's name).
pub fn render(timeline: &Timeline, source: &str) -> String {
    let json = embed_json(&timeline.to_json());
    let title = escape(source);
    let mut page = String::with_capacity(json.len() + CSS.len() + JS.len() + 2048);
    // Writing into a String cannot fail.
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lunledger timeline: {title}</title>
<style>{CSS}</style>
</head>
<body data-render="pending">
<pre id="js-errors"></pre>
<script>
// Any script error is shown on the page and counted, so a headless browser test sees it.
window.onerror = function (msg, src, line, col) {{
  var el = document.getElementById('js-errors');
  if (el) el.textContent += 'error: ' + msg + ' (line ' + line + ':' + col + ')\n';
  document.body.dataset.errors = String(Number(document.body.dataset.errors || 0) + 1);
}};
</script>
<header><h1>lunledger timeline: {title}</h1>
<div id="summary"></div><div id="problem"></div>
<div id="controls"><button id="zoom-in">zoom in</button><button id="zoom-out">zoom out</button><button id="fit">fit</button> <span id="selection"></span></div>
</header>
<div id="chart"><svg id="svg" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="legend"></div>
<div id="tip" hidden></div>
<script type="application/json" id="timeline-data">{json}</script>
<script>{JS}</script>
</body></html>
"#
    );
    page
}

/// JSON made safe inside a `<script>` element: `<` only occurs inside JSON strings, where
/// `\u003c` means the same, and without it no `</script>` can end the element early.
fn embed_json(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// Text made safe inside HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_end_tag_in_the_data_cannot_end_the_data_element() {
        let t = Timeline {
            disks: vec!["/x/</script><script>alert(1)</script>.img".into()],
            ..Timeline::default()
        };
        let page = render(&t, "j<b>");
        assert_eq!(
            page.matches("</script>").count(),
            3,
            "only the page's own scripts end"
        );
        assert!(page.contains("lunledger timeline: j&lt;b&gt;"));
        let start = page.find("id=\"timeline-data\">").unwrap() + 19;
        let end = start + page[start..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        assert_eq!(
            back["disks"][0],
            "/x/</script><script>alert(1)</script>.img"
        );
    }
}
