//! Checkpoints: what `nac::model::load` does after reading the file (safetensors parsing,
//! architecture detection, building the network).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nac::model::from_bytes(std::path::Path::new("fuzz.safetensors"), data, None);
});
