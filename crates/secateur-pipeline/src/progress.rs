//! Progress display: a progress bar on a terminal, plain log lines otherwise (CI logs, pipes),
//! or, when a caller installs a [`Sink`] (the Python package's progress callback), every update
//! handed to that function instead.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, RwLock};

/// Receives every progress update: stage label, position, total, message.
pub type Sink = Arc<dyn Fn(&str, u64, u64, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Runs `f` with `sink` receiving the progress updates instead of the terminal (none: the
/// terminal); the previous sink is restored afterwards.
pub fn with_sink<R>(sink: Option<Sink>, f: impl FnOnce() -> R) -> R {
    let previous = replace_sink(sink);
    let out = f();
    replace_sink(previous);
    out
}

fn replace_sink(sink: Option<Sink>) -> Option<Sink> {
    match SINK.write() {
        Ok(mut s) => std::mem::replace(&mut *s, sink),
        Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), sink),
    }
}

fn current_sink() -> Option<Sink> {
    SINK.read().ok().and_then(|s| s.clone())
}

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
        let terminal = std::io::stderr().is_terminal() && current_sink().is_none();
        let bar = terminal.then(|| {
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
    /// always when `force` is set; with a sink installed, hands every update to it.
    pub fn update(&mut self, pos: u64, total: u64, msg: &str, force: bool) {
        if let Some(sink) = current_sink() {
            sink(&self.label, pos, total, msg);
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_sink_receives_updates_while_installed_only() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink: Sink = Arc::new(move |label, pos, total, msg| {
            s.lock()
                .unwrap()
                .push(format!("{label} {pos}/{total} {msg}"))
        });
        with_sink(Some(sink), || {
            let mut r = Reporter::new("search", 4);
            r.update(1, 4, "one", false);
            r.update(2, 4, "two", false);
        });
        Reporter::new("after", 1).update(1, 1, "not seen", true);
        assert_eq!(*seen.lock().unwrap(), ["search 1/4 one", "search 2/4 two"]);
    }
}
