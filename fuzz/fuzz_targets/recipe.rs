//! Pruning recipes (TOML): parse, validate, and ask what data they need.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match secateur::recipe::Recipe::from_toml(text, "fuzzed.toml") {
        Ok(r) => {
            let _ = r.validate();
            let _ = r.needs_data();
        }
        Err(e) => assert!(format!("{e:#}").contains("fuzzed.toml"), "unnamed: {e:#}"),
    }
});
