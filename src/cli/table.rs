//! Plain-text tables: columns padded to their widest cell. Colour is applied after padding, so
//! escape codes never skew the alignment.

/// A function that colours a cell's text.
pub type Paint = fn(&str) -> String;

/// A cell: its text and how to colour it, if at all.
pub type Cell = (String, Option<Paint>);

/// A table being built.
#[derive(Debug)]
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of plain cells.
    pub fn row(&mut self, cells: Vec<String>) {
        self.painted(cells.into_iter().map(|c| (c, None)).collect());
    }

    /// Adds a row whose cells may each be painted.
    /// Cell text is shown with control characters escaped ([`crate::cli::style::printable`]).
    pub fn painted(&mut self, cells: Vec<Cell>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|(c, p)| (crate::cli::style::printable(&c).into_owned(), p))
                .collect(),
        );
    }

    /// The widths each column needs.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, (c, _)) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// Renders the heading (bold) and rows with the given widths.
    pub fn render_with(&self, widths: &[usize], heading: bool) -> String {
        let mut out = String::new();
        if heading {
            let cells: Vec<Cell> = self
                .head
                .iter()
                .map(|h| (h.to_string(), Some(crate::cli::style::bold as Paint)))
                .collect();
            out.push_str(&line(&cells, widths));
        }
        for r in &self.rows {
            out.push_str(&line(r, widths));
        }
        out
    }

    /// Renders heading and rows.
    pub fn render(&self) -> String {
        self.render_with(&self.widths(), true)
    }
}

fn line(cells: &[Cell], widths: &[usize]) -> String {
    let mut s = String::new();
    let last = cells.len().saturating_sub(1);
    for (i, (c, paint)) in cells.iter().enumerate() {
        let w = widths.get(i).copied().unwrap_or(0);
        let pad = if i == last {
            String::new()
        } else {
            " ".repeat(w.saturating_sub(c.chars().count()) + 2)
        };
        match paint {
            Some(p) => s.push_str(&p(c)),
            None => s.push_str(c),
        }
        s.push_str(&pad);
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}
