//! `nac eval` config text: `EvalConfig::parse` (TOML, then `validate`).
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::eval_config(data));
