//! Statistics helpers and the one summary table.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of `v` (sorted in place), nearest rank.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

pub fn median(v: &mut [f64]) -> f64 {
    pct(v, 50.0)
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A target a figure is judged against.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The ratio must be at most this.
    RatioAtMost(f64),
    /// The value must be at most this.
    ValueAtMost(f64),
    /// The value must be at least this.
    ValueAtLeast(f64),
}

pub struct Row {
    pub id: String,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<(String, f64)>,
    pub target: Option<Target>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|(_, b)| self.value / b)
    }

    pub fn verdict(&self) -> Option<bool> {
        Some(match self.target? {
            Target::RatioAtMost(t) => self.ratio()? <= t,
            Target::ValueAtMost(t) => self.value <= t,
            Target::ValueAtLeast(t) => self.value >= t,
        })
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtMost(t)) => format!("ratio <= {t}"),
            Some(Target::ValueAtMost(t)) => format!("<= {} {}", fmt_num(t), self.unit),
            Some(Target::ValueAtLeast(t)) => format!(">= {} {}", fmt_num(t), self.unit),
        }
    }
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        id: &str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: Option<(&str, f64)>,
        target: Option<Target>,
    ) {
        let row = Row {
            id: id.to_string(),
            figure: figure.into(),
            value,
            unit,
            baseline: baseline.map(|(n, v)| (n.to_string(), v)),
            target,
        };
        let ratio = row
            .ratio()
            .map(|r| format!(" ratio {}", fmt_num(r)))
            .unwrap_or_default();
        eprintln!(
            "  [{}] {}: {} {}{}",
            row.id,
            row.figure,
            fmt_num(row.value),
            row.unit,
            ratio
        );
        self.rows.push(row);
    }

    /// Prints the table as Markdown (so it can be pasted into docs/performance.md as is).
    pub fn print(&self) {
        println!();
        println!("| # | figure | value | same-run baseline | ratio | target | result |");
        println!("|---|---|---:|---|---:|---|---|");
        for r in &self.rows {
            let base = r
                .baseline
                .as_ref()
                .map(|(n, v)| format!("{n}: {} {}", fmt_num(*v), r.unit))
                .unwrap_or_default();
            let ratio = r.ratio().map(fmt_num).unwrap_or_default();
            let verdict = match r.verdict() {
                Some(true) => "PASS",
                Some(false) => "**FAIL**",
                None => "",
            };
            println!(
                "| {} | {} | {} {} | {} | {} | {} | {} |",
                r.id,
                r.figure,
                fmt_num(r.value),
                r.unit,
                base,
                ratio,
                r.target_text(),
                verdict
            );
        }
        let judged: Vec<_> = self.rows.iter().filter_map(|r| r.verdict()).collect();
        let pass = judged.iter().filter(|v| **v).count();
        println!();
        println!("targets: {pass} PASS, {} FAIL", judged.len() - pass);
    }
}
