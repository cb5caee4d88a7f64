//! NumPy `.npy` parsing: a decoded array or an error naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = secateur_data::npy::parse(data, Path::new("fuzzed.npy")) {
        assert!(e.to_string().contains("fuzzed.npy"), "unnamed: {e}");
    }
});
