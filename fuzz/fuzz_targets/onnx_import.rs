//! ONNX import of arbitrary bytes: an error naming the file, or a graph whose shapes check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzzed.onnx");
    let mut opts = secateur_onnx::ImportOptions::default();
    opts.other_dims = Some(8);
    match secateur_onnx::import_bytes_with(data, path, &opts) {
        Ok(g) => {
            let _ = g.infer_shapes();
        }
        Err(e) => assert!(e.to_string().contains("fuzzed.onnx"), "unnamed: {e}"),
    }
});
