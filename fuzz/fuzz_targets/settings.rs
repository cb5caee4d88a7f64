//! `optimize --config` settings files (TOML): parse, apply over the defaults, validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secateur::pipeline::optimize::config::{OptimizeConfig, OptimizeFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = toml::from_str::<OptimizeFile>(text) {
        let mut c = OptimizeConfig::default();
        if file.apply(&mut c).is_ok() {
            let _ = c.validate();
        }
    }
});
