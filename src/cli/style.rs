//! Colour for people: ANSI colour only when stdout is a terminal and NO_COLOR is unset.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether stdout gets colour.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
}

fn paint(code: &str, s: &str) -> String {
    if enabled() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
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
    paint("31", s)
}

/// Green: success.
pub fn green(s: &str) -> String {
    paint("32", s)
}

/// Yellow: things recovery settled or that need attention.
pub fn yellow(s: &str) -> String {
    paint("33", s)
}

/// Bold: headings.
pub fn bold(s: &str) -> String {
    paint("1", s)
}

/// Dim: intents and other quiet lines.
pub fn dim(s: &str) -> String {
    paint("2", s)
}
