//! `nac eval` config text: `EvalConfig::parse` (TOML, then `validate`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = nac::eval::EvalConfig::parse(text, "fuzz.toml") {
        assert!(config.batch >= 1 && config.batch <= nac::limits::MAX_BATCH);
        let _ = config.preset();
    }
});
