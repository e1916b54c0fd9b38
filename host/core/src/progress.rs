//! Progress of long command-line work (export, import, prune, verify-public, audit verify) on
//! stderr.
//!
//! Drawn only when stderr is a terminal: a pipe, a log file or a script sees exactly the bytes
//! it saw before (stdout carries the result either way). The bar is cleared when the work ends,
//! so the terminal keeps only the command's own lines. Set `HAPPYX_PROGRESS=never` to silence it
//! on a terminal too; `always` draws it to a non-terminal stderr (for checking it).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress is drawn: `HAPPYX_PROGRESS` (`never`, `always`) or stderr is a terminal.
fn wanted() -> bool {
    match std::env::var("HAPPYX_PROGRESS").as_deref() {
        Ok("never") => false,
        Ok("always") => true,
        _ => std::io::stderr().is_terminal(),
    }
}

/// One progress line for one piece of work, cleared when dropped.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    /// What [`Progress::doing`] last showed (set again only when it changes).
    doing: std::sync::Mutex<String>,
}

impl Progress {
    /// Nothing drawn (the server's own passes, and any non-terminal stderr).
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            doing: Default::default(),
        }
    }

    /// A counter of `unit`s done, for work whose total is not known ahead (rows streamed,
    /// items examined): `⠋ export 12,345 rows  4s  agent_runs`.
    pub fn counter(what: &str, unit: &str) -> Self {
        if !wanted() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let template = format!("{{spinner}} {what} {{human_pos}} {unit}  {{elapsed}}  {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        // Drawn at once: short work shows its line too.
        bar.tick();
        Progress {
            bar,
            doing: Default::default(),
        }
    }

    /// A bar over `total` steps: `verify-public [=====>    ] 12/40  /public/runs`.
    pub fn bar(what: &str, total: u64) -> Self {
        if !wanted() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let template = format!("{what} [{{bar:30}}] {{human_pos}}/{{human_len}}  {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.tick();
        Progress {
            bar,
            doing: Default::default(),
        }
    }

    /// `n` more done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Grows the total by `n` (work discovered along the way).
    pub fn add_total(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// What is being worked on now (a table, a kind, a path) — never a value: the line may be
    /// on a shared screen.
    pub fn doing(&self, what: &str) {
        if let Ok(mut last) = self.doing.lock()
            && *last != what
        {
            what.clone_into(&mut last);
            self.bar.set_message(what.to_string());
        }
    }

    /// One more done, in `what` (cheap when `what` is unchanged: once per row is fine).
    pub fn tick_in(&self, what: &str) {
        if self.is_drawn() {
            self.doing(what);
            self.bar.inc(1);
        }
    }

    /// Whether anything is drawn.
    pub fn is_drawn(&self) -> bool {
        !self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The command's result follows on stdout; the terminal keeps no half-drawn line.
        self.bar.finish_and_clear();
    }
}
