//! GPU energy through NVML (feature `nvml`): the device's total-energy counter (millijoules)
//! read before and after a run. The library is loaded at run time; a machine without an
//! NVIDIA driver gets an error saying so.

use crate::error::{CostError, Result};
use crate::rapl::Measured;
use std::time::Instant;

/// Runs `f` `runs` times on GPU `index` and reads its energy counter around the runs.
pub fn measure(index: u32, runs: usize, f: &mut dyn FnMut()) -> Result<Measured> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| {
        CostError::Counter(format!("NVML is not available (no NVIDIA driver?): {e}"))
    })?;
    let dev = nvml
        .device_by_index(index)
        .map_err(|e| CostError::Counter(format!("GPU {index}: {e}")))?;
    let before = dev
        .total_energy_consumption()
        .map_err(|e| CostError::Counter(format!("GPU {index} has no energy counter: {e}")))?;
    let t = Instant::now();
    for _ in 0..runs.max(1) {
        f();
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = dev
        .total_energy_consumption()
        .map_err(|e| CostError::Counter(e.to_string()))?;
    Ok(Measured {
        joules_per_run: (after.saturating_sub(before)) as f64 * 1e-3 / runs.max(1) as f64,
        domain: format!("gpu{index}"),
        runs: runs.max(1),
        seconds,
        method: format!(
            "measured with NVML (GPU {index} total energy) over {} runs, {seconds:.2} s",
            runs.max(1)
        ),
    })
}
