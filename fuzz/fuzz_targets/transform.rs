//! Transform text: `Transform::parse`, then `output_size` and `apply` on a small gray and a
//! small RGB image; the two must agree. Steps with a number over 256 are only sized, not
//! applied (a 4096² intermediate per input would slow fuzzing to a crawl).
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::transform(data));
