//! Colour for people. Whether stdout gets colour is anstream's decision (the conventions
//! people set: NO_COLOR, CLICOLOR, CLICOLOR_FORCE, TERM=dumb, and whether stdout is a
//! terminal); the escape codes are anstyle's.

use anstream::{AutoStream, ColorChoice};
use anstyle::{AnsiColor, Effects, Style};
use std::sync::OnceLock;

/// Whether stdout gets colour.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| AutoStream::choice(&std::io::stdout()) != ColorChoice::Never)
}

fn paint(style: Style, s: &str) -> String {
    if enabled() {
        format!("{style}{s}{style:#}")
    } else {
        s.to_string()
    }
}

fn fg(c: AnsiColor) -> Style {
    Style::new().fg_color(Some(c.into()))
}

/// `s` with every control character (escape sequences, newlines, NUL, ...) written as an
/// escape (`\u{1b}`, `\n`): text read from a journal is shown as it is, and can neither drive
/// the terminal nor fake a line of our own output.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Red: failures.
pub fn red(s: &str) -> String {
    paint(fg(AnsiColor::Red), s)
}

/// Green: success.
pub fn green(s: &str) -> String {
    paint(fg(AnsiColor::Green), s)
}

/// Yellow: things recovery settled or that need attention.
pub fn yellow(s: &str) -> String {
    paint(fg(AnsiColor::Yellow), s)
}

/// Bold: headings.
pub fn bold(s: &str) -> String {
    paint(Style::new().effects(Effects::BOLD), s)
}

/// Dim: intents and other quiet lines.
pub fn dim(s: &str) -> String {
    paint(Style::new().effects(Effects::DIMMED), s)
}
