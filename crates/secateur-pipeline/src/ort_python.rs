//! Locating the Python interpreter that has ONNX Runtime (used to cross-check exported models
//! and to compare latency): `SECATEUR_PYTHON`, then the project's `.venv`, then `python3`.

use std::path::PathBuf;
use std::process::Command;

/// The first interpreter that can import onnxruntime and numpy.
pub fn find() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SECATEUR_PYTHON").map(PathBuf::from),
        Some(PathBuf::from(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import onnxruntime, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}
