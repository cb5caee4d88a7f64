//! Hardware profiles (TOML): parse and validate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = secateur_cost::profile::HardwareProfile::from_toml(text, "fuzzed.toml") {
        assert!(e.to_string().contains("fuzzed.toml"), "unnamed: {e}");
    }
});
