//! Aligned text tables for the CLI's default output, and the small formatters of JSON values
//! that fill them.

use serde_json::Value;
use std::io::{self, Write};

/// A table: headers, then rows of cells; numeric columns are right-aligned.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Prints the table on stdout (a closed pipe is not an error worth a message).
    pub fn print(&self) {
        let mut out = io::stdout().lock();
        let _ = self.write(&mut out);
        let _ = out.flush();
    }

    /// Writes the table; columns are separated by two spaces, the last has no padding.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let columns = self.headers.len();
        let cell = |row: &Vec<String>, i: usize| row.get(i).map_or("", |s| s.as_str()).to_owned();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        let mut numeric = vec![true; columns];
        for row in &self.rows {
            for (i, width) in widths.iter_mut().enumerate() {
                let text = cell(row, i);
                *width = (*width).max(text.chars().count());
                // An empty cell (a value that does not apply to this row) says nothing about
                // its column's alignment.
                if !(text.is_empty() || text == "-" || looks_numeric(&text)) {
                    numeric[i] = false;
                }
            }
        }
        if self.rows.is_empty() {
            numeric.iter_mut().for_each(|n| *n = false);
        }
        let line = |cells: Vec<String>, out: &mut dyn Write| -> io::Result<()> {
            let mut text = String::new();
            for (i, value) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(value.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(value);
                } else {
                    text.push_str(value);
                    if i + 1 < columns {
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(self.headers.iter().map(|h| h.to_string()).collect(), out)?;
        for row in &self.rows {
            line((0..columns).map(|i| cell(row, i)).collect(), out)?;
        }
        Ok(())
    }
}

fn looks_numeric(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'$')
}

/// A JSON value as a cell: strings bare, numbers as written, null as `-`.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_owned(),
        other => other.to_string(),
    }
}

/// An RFC 3339 timestamp as `YYYY-MM-DD HH:MM:SS` (UTC), or `-`.
pub fn time(value: &Value) -> String {
    match value.as_str() {
        // `get` and not indexing: whatever a server sends, a table never panics on it.
        Some(t) => match (t.get(..10), t.get(11..19)) {
            (Some(date), Some(clock)) => format!("{date} {clock}"),
            _ => t.to_owned(),
        },
        None => "-".to_owned(),
    }
}

/// Seconds as `4h`, `90m`, `45s`, `1d2h`.
pub fn duration(value: &Value) -> String {
    let Some(s) = value.as_u64() else {
        return text(value);
    };
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 86_400 && s % 3600 == 0 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let mut table = Table::new(&["ID", "POOL", "PRICE"]);
        table.row(vec!["7".into(), "h100-sxm.us-east".into(), "1.20".into()]);
        table.row(vec!["12".into(), "a100".into(), "10.05".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ID  POOL              PRICE\n 7  h100-sxm.us-east   1.20\n12  a100              10.05\n"
        );
    }

    #[test]
    fn values_format_for_people() {
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&json!("x")), "x");
        assert_eq!(
            time(&json!("2026-11-26T04:44:47.671Z")),
            "2026-11-26 04:44:47"
        );
        assert_eq!(duration(&json!(14_400)), "4h");
        assert_eq!(duration(&json!(5_400)), "90m");
        assert_eq!(duration(&json!(93_600)), "1d2h");
        assert_eq!(duration(&json!(61)), "61s");
    }
}
