//! IDX images (and labels), raw or gzip, through `Dataset::from_idx_bytes` (what `idx:` uses).
//! First byte: bits 0-1 choose the images' encoding (0, 3: as given, 1: gzip the rest, 2: as
//! given, usually a gzip stream from the seeds); bit 2 splits the rest into images and labels
//! at the fraction the second byte gives.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::idx(data));
