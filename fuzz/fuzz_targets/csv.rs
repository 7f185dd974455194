//! Pixel-row CSV, plain or gzip, through `Dataset::from_csv_bytes` (what `csv:` uses). First
//! byte: bit 0 gzips the rest (otherwise it is used as given, maybe a gzip stream itself).
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 != 0 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(rest).unwrap();
        e.finish().unwrap()
    } else {
        rest.to_vec()
    };
    if let Ok(set) = nac::data::Dataset::from_csv_bytes(&bytes) {
        assert_eq!(set.labels().unwrap().len(), set.len());
        for i in [0, set.len() - 1] {
            let image = set.image(i).unwrap();
            image.check().unwrap();
            assert_eq!(image.width, image.height);
        }
    }
});
