//! `.npy` parsing: `NpyArray::parse`, then both conversions the CLI uses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.npy");
    if let Ok(array) = nac::npy::NpyArray::parse(path, data) {
        let _ = array.to_f32(path);
        let _ = array.to_labels(path);
    }
});
