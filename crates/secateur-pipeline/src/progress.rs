//! Progress display: a progress bar on a terminal, plain log lines otherwise (CI logs, pipes).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// Reports progress of a sequence of items.
pub struct Reporter {
    bar: Option<ProgressBar>,
    label: String,
    last_line: std::time::Instant,
}

impl Reporter {
    pub fn new(label: &str, total: u64) -> Self {
        Self::build(label, total, None)
    }

    /// Two reporters drawn one above the other (epochs over batches): on a terminal both bars
    /// stay visible and advance; separate bars would overwrite each other's line.
    pub fn nested(outer: (&str, u64), inner: (&str, u64)) -> (Self, Self) {
        let multi = MultiProgress::new();
        (
            Self::build(outer.0, outer.1, Some(&multi)),
            Self::build(inner.0, inner.1, Some(&multi)),
        )
    }

    fn build(label: &str, total: u64, multi: Option<&MultiProgress>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = match multi {
                Some(m) => m.add(ProgressBar::new(total)),
                None => ProgressBar::new(total),
            };
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        Reporter {
            bar,
            label: label.to_string(),
            last_line: std::time::Instant::now(),
        }
    }

    /// Moves to `pos` with a message; without a terminal, prints a line at most every 10 s and
    /// always when `force` is set.
    pub fn update(&mut self, pos: u64, total: u64, msg: &str, force: bool) {
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(pos);
                b.set_message(msg.to_string());
            }
            None => {
                if force || self.last_line.elapsed().as_secs() >= 10 {
                    eprintln!("{} {pos}/{total} {msg}", self.label);
                    self.last_line = std::time::Instant::now();
                }
            }
        }
    }

    /// Ends the bar and leaves it on screen at its last position (a finished run shows what
    /// it did: `epochs [====] 4/4`).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            if let Some(len) = b.length() {
                b.set_position(len);
            }
            b.finish();
        }
    }

    /// Ends the bar and removes it (inner bars whose work the outer one summarises).
    pub fn finish_and_clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
