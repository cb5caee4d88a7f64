//! CIFAR-10 binary batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = secateur_data::cifar::parse(data, Path::new("fuzzed.bin")) {
        assert!(e.to_string().contains("fuzzed.bin"), "unnamed: {e}");
    }
});
