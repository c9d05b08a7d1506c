//! Progress bars for long work (reading and folding many records). Drawn on stderr, and only when
//! stderr is a terminal, so output piped to a program or a file never holds bar fragments.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Below this many records the work takes well under a second: no bar, no flicker.
const MIN_RECORDS: u64 = 5_000;

/// A bar over `len` items labelled `what`; hidden when stderr is not a terminal or `len` is
/// small.
pub fn bar(len: u64, what: &'static str) -> ProgressBar {
    if len < MIN_RECORDS || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} records ({eta})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what);
    pb
}

/// A spinner for one long call over `len` records with no progress of its own (the integrity
/// scan); hidden as [`bar`] is.
pub fn spinner(len: u64, what: &'static str) -> ProgressBar {
    if len < MIN_RECORDS || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_message(what);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// A [`bar`] labelled `what`, driven by the library's long reads.
#[derive(Debug)]
pub struct Bar {
    what: &'static str,
    bar: ProgressBar,
}

impl Bar {
    /// A bar that appears once the work turns out long enough.
    pub fn new(what: &'static str) -> Self {
        Bar {
            what,
            bar: ProgressBar::hidden(),
        }
    }
}

impl crate::audit::Progress for Bar {
    fn start(&mut self, len: u64) {
        self.bar = bar(len, self.what);
    }
    fn step(&mut self) {
        self.bar.inc(1);
    }
    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
