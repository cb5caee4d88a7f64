//! `secateur._native`, the extension module under the Python package: the command line run
//! in-process (the package's `secateur` entry point), the `--json` results of `inspect`,
//! `prune`, `profile` and `bench` as JSON text, and the stages of an `optimize` search
//! ([`search::Search`]) with a remote evaluator ([`search::Worker`]) for the Ray executor.
//! Errors raise `secateur.SecateurError` carrying secateur's message; progress goes to a
//! Python callable.

mod search;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use secateur_pipeline::progress::Sink;
use std::sync::Arc;

create_exception!(
    _native,
    SecateurError,
    PyException,
    "An error reported by secateur (bad input, settings that cannot work, a failed stage)."
);

/// A Python exception carrying an error's message with its causes.
pub(crate) fn py_err(e: impl std::fmt::Display) -> PyErr {
    SecateurError::new_err(format!("{e:#}"))
}

/// A progress sink calling `callback(stage, done, total, message)`; a failing callback is
/// reported once on stderr and otherwise ignored (it must not stop a long run).
pub(crate) fn sink(callback: Option<Py<PyAny>>) -> Option<Sink> {
    let callback = callback?;
    let failed = std::sync::atomic::AtomicBool::new(false);
    Some(Arc::new(
        move |stage: &str, done: u64, total: u64, msg: &str| {
            Python::attach(|py| {
                if let Err(e) = callback.call1(py, (stage, done, total, msg))
                    && !failed.swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    eprintln!("secateur: the progress callback failed: {e}");
                }
            })
        },
    ))
}

/// The secateur version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Runs the command line `secateur ARGS...` in this process; returns the exit status.
#[pyfunction]
fn cli(py: Python<'_>, args: Vec<String>) -> i32 {
    let argv: Vec<String> = std::iter::once("secateur".to_string())
        .chain(args)
        .collect();
    py.detach(|| secateur::cli::main_with(argv))
}

/// Runs `secateur ARGS... --json` for inspect, prune, profile or bench and returns the JSON
/// results it would print (one per result) as a JSON array.
#[pyfunction]
#[pyo3(signature = (args, progress=None))]
fn command_json(
    py: Python<'_>,
    args: Vec<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    use clap::Parser;
    use secateur::cli::{Cli, Command};
    let mut argv: Vec<String> = std::iter::once("secateur".to_string())
        .chain(args)
        .collect();
    argv.push("--json".into());
    let cli = Cli::try_parse_from(&argv).map_err(|e| py_err(e.render()))?;
    if !matches!(
        cli.command,
        Command::Inspect(_) | Command::Prune(_) | Command::Profile(_) | Command::Bench(_)
    ) {
        return Err(py_err(
            "only inspect, prune, profile and bench return results as objects; run other commands with secateur.cli([...])",
        ));
    }
    let sink = sink(progress);
    let values = py
        .detach(|| {
            secateur_pipeline::progress::with_sink(sink, || {
                secateur::commands::capture_json(|| secateur::cli::run(&cli))
            })
        })
        .map_err(py_err)?;
    serde_json::to_string(&values).map_err(py_err)
}

/// The optimize request (JSON) that a command line `optimize ...` asks for, with its
/// `executor` and `ray_address` (the package's entry point drives the Ray executor itself).
#[pyfunction]
fn optimize_request(args: Vec<String>) -> PyResult<String> {
    use clap::Parser;
    use secateur::cli::{Cli, Command};
    let argv: Vec<String> = ["secateur".to_string(), "optimize".to_string()]
        .into_iter()
        .chain(args)
        .collect();
    let cli = Cli::try_parse_from(&argv).map_err(|e| py_err(e.render()))?;
    let Command::Optimize(a) = &cli.command else {
        return Err(py_err("not an optimize command line"));
    };
    let request = secateur::commands::optimize::request(a);
    serde_json::to_string(&serde_json::json!({
        "request": request,
        "executor": a.executor,
        "ray_address": a.ray_address,
    }))
    .map_err(py_err)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SecateurError", m.py().get_type::<SecateurError>())?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(command_json, m)?)?;
    m.add_function(wrap_pyfunction!(optimize_request, m)?)?;
    m.add_class::<search::Search>()?;
    m.add_class::<search::Worker>()?;
    Ok(())
}
