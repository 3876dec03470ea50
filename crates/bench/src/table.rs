//! The targets table of `latest.md`: its rows, and how figures are written
//! in it (and in the soaks' reports).

use std::fmt::Write as _;

/// One line of the targets table.
#[derive(Debug)]
pub struct Row {
    pub figure: String,
    pub direct: String,
    pub gateway: String,
    pub delta: String,
    pub target: String,
    pub met: Option<bool>,
}

pub fn row(
    figure: &str,
    direct: String,
    gateway: String,
    delta: String,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row {
        figure: figure.to_owned(),
        direct,
        gateway,
        delta,
        target: target.to_owned(),
        met,
    }
}

pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | direct | gateway | delta / ratio | target | met? |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {met} |",
            row.figure, row.direct, row.gateway, row.delta, row.target
        );
    }
    out
}

pub fn fmt_us(value: f64) -> String {
    if value.abs() >= 1_000.0 {
        format!("{:.2} ms", value / 1_000.0)
    } else {
        format!("{value:.1} µs")
    }
}

pub fn fmt_signed_us(value: f64) -> String {
    let sign = if value >= 0.0 { "+" } else { "−" };
    format!("{sign}{}", fmt_us(value.abs()))
}

pub fn fmt_count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
