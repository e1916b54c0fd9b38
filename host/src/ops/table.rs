//! Output of the operator commands: aligned tables and times for people, one JSON object per
//! line for scripts.
//!
//! Every cell is made safe for a terminal: values come from the host and, through it, from
//! agents (recipe arguments, names), so control characters (escape sequences) are shown
//! escaped, never sent to the operator's terminal.

use std::io::Write;

use serde::Serialize;

/// A table printed with columns padded to their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| safe(&c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>, out: &mut dyn Write| -> std::io::Result<()> {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            writeln!(out, "{}", s.trim_end())
        };
        line(self.headers.clone(), out)?;
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect(), out)?;
        }
        Ok(())
    }
}

/// `s` with control characters escaped (`\u{1b}`, `\n`, …).
pub fn safe(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `s` cut to `max` characters with an ellipsis.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Prints a listing the way every `ls` does: one JSON line per item with `--json`; otherwise a
/// table of `headers` with `row(item)` per item, or `none` on stderr when there is no item
/// (stdout then stays empty, so a script sees no rows rather than a message).
pub fn print_listing(
    out: &mut impl Write,
    json: bool,
    items: &[serde_json::Value],
    headers: &[&'static str],
    none: &str,
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        for i in items {
            json_line(out, i)?;
        }
        return Ok(());
    }
    let mut t = Table::new(headers);
    for i in items {
        t.row(row(i));
    }
    if t.is_empty() {
        eprintln!("{none}");
    } else {
        t.print(out)?;
    }
    Ok(())
}

/// Prints `v` as one JSON line.
pub fn json_line(out: &mut impl Write, v: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string(v)?)?;
    Ok(())
}

pub fn now_ms() -> i64 {
    crate::util::now_ms()
}

/// `3m ago`, `in 14m`, `just now`.
pub fn relative(ms: i64) -> String {
    relative_to(ms, now_ms())
}

pub fn relative_to(ms: i64, now: i64) -> String {
    let d = now - ms;
    let (abs, past) = if d >= 0 { (d, true) } else { (-d, false) };
    let s = abs / 1000;
    let span = if s < 2 {
        return "just now".into();
    } else if s < 90 {
        format!("{s}s")
    } else if s < 90 * 60 {
        format!("{}m", s / 60)
    } else if s < 36 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    };
    if past {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

/// `Some(ms)` as a relative time, else `-`.
pub fn opt_relative(ms: Option<i64>) -> String {
    ms.map(relative).unwrap_or_else(|| "-".into())
}

pub use happyx_core::util::utc;

/// A byte count for people: `512 B`, `3.4 KiB`, `1.2 MiB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1024.0 {
        format!("{n} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0)
    }
}

/// An optional value for a cell: its text, or `-`.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_142_285_000), "2026-12-01T16:24:45Z");
        assert_eq!(relative_to(0, 180_000), "3m ago");
        assert_eq!(relative_to(840_000, 0), "in 14m");
        assert_eq!(relative_to(1000, 1500), "just now");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 + 512), "3.5 KiB");
    }

    #[test]
    fn cells_are_safe_and_aligned() {
        assert_eq!(safe("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["1".into(), "x".into()]);
        t.row(vec!["12345".into(), "y\n".into()]);
        let mut out = Vec::new();
        t.print(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID     NAME\n1      x\n12345  y\\n\n"
        );
    }
}
