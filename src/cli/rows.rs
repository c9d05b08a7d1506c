//! Rendering audit rows: a table for people (with colour on a terminal) or one JSON object per
//! line for programs.

use crate::audit::Row;
use crate::cli::style;
use crate::cli::table::Table;

/// Column headings of the audit table.
pub const HEAD: &[&str] = &[
    "SEQ", "TIME", "OP", "HANDLE", "OWNER", "EVENT", "DISK", "SLOT", "PATH", "OUTCOME", "TOOK",
];

/// Adds `row` to an audit table.
pub fn add(table: &mut Table, row: &Row) {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let event = match row.step {
        Some(step) => format!("{step} {}", row.event),
        None => row.event.to_string(),
    };
    let mut outcome = row.outcome.unwrap_or("").to_string();
    if let Some(e) = &row.error {
        outcome = format!("{outcome}: {e}");
    }
    if let Some(d) = &row.detail {
        outcome = if outcome.is_empty() {
            d.clone()
        } else {
            format!("{outcome} ({d})")
        };
    }
    let paint: Option<fn(&str) -> String> = match row.outcome {
        Some("failed" | "rolled-back") => Some(style::red),
        Some("ok") => Some(style::green),
        Some(_) => Some(style::yellow),
        None if row.event == "drift" => Some(style::yellow),
        None => None,
    };
    let event_paint: Option<fn(&str) -> String> = if row.event == "intent" {
        Some(style::dim)
    } else {
        None
    };
    table.painted(vec![
        (row.seq.to_string(), None),
        (row.time.clone(), None),
        (format!("{} {}", row.op, row.op_kind.unwrap_or("?")), None),
        (
            row.handle
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            None,
        ),
        (opt(&row.owner), None),
        (event, event_paint),
        (opt(&row.disk), None),
        (opt(&row.slot), None),
        (opt(&row.path), None),
        (outcome, paint),
        (
            row.duration_ms
                .map(|d| format!("{d:.1} ms"))
                .unwrap_or_default(),
            None,
        ),
    ]);
}

/// Renders rows as an audit table.
pub fn table(rows: &[Row]) -> String {
    let mut t = Table::new(HEAD);
    for r in rows {
        add(&mut t, r);
    }
    t.render()
}

/// One JSON line per row.
pub fn json_lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        // Serializing plain strings and numbers cannot fail; an empty line would show it if it did.
        out.push_str(&serde_json::to_string(r).unwrap_or_default());
        out.push('\n');
    }
    out
}
