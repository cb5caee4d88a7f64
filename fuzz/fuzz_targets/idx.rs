//! IDX (MNIST) parsing, images (3 dimensions) and labels (1), gzipped or not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    for ndims in [1, 3] {
        if let Err(e) = secateur_data::idx::parse(data, Path::new("fuzzed-idx"), ndims) {
            assert!(e.to_string().contains("fuzzed-idx"), "unnamed: {e}");
        }
    }
});
