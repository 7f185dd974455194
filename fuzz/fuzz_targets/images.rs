//! PNG/JPEG bytes through `nac::data::decode_image_bytes` (the decoder `folder:` datasets use),
//! then a small transform and a corruption of the decoded image.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::images(data));
