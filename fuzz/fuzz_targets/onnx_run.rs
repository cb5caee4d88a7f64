//! Import → plan → one inference at batch 1 on small valid inputs: no panic at any stage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secateur_runtime::{ExecPlan, FormatPolicy, PlanConfig};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut opts = secateur_onnx::ImportOptions::default();
    opts.other_dims = Some(8);
    let Ok(graph) = secateur_onnx::import_bytes_with(data, Path::new("fuzzed.onnx"), &opts) else {
        return;
    };
    let mut config = PlanConfig::new(1, 1);
    config.policy = FormatPolicy::Dense;
    let Ok(mut plan) = ExecPlan::compile(&graph, config) else {
        return;
    };
    let inputs = secateur_testkit::plain_inputs(&graph);
    let slices: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let _ = plan.run_inputs(&slices);
});
