//! Pixel-row CSV, plain or gzip, through `Dataset::from_csv_bytes` (what `csv:` uses). First
//! byte: bit 0 gzips the rest (otherwise it is used as given, maybe a gzip stream itself).
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::csv(data));
