//! One module per subcommand; each turns parsed arguments into calls of the library crates
//! and prints the result (a readable table, or JSON with `--json`).

pub mod bench;
pub mod bench_kernels;
pub mod bench_predict;
pub mod bench_train;
pub mod convert;
pub mod eval;
pub mod inspect;
pub mod optimize;
pub mod profile;
pub mod prune;
pub mod train;

use serde::Serialize;
use std::cell::RefCell;

thread_local! {
    /// Set while [`capture_json`] runs a command: its `--json` result lands here.
    static CAPTURED: RefCell<Option<Vec<serde_json::Value>>> = const { RefCell::new(None) };
}

/// Prints a command's `--json` result, or hands it to [`capture_json`] when one is running.
pub fn emit_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let captured = CAPTURED.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|v| serde_json::to_value(value).map(|x| v.push(x)))
    });
    match captured {
        Some(r) => Ok(r?),
        None => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(())
        }
    }
}

/// Runs `f` (a command run with `--json`) and returns the JSON results it emitted instead of
/// printing them (the Python package returns them as objects).
pub fn capture_json(
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let out = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    r.map(|()| out)
}
