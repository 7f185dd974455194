//! IDX images (and labels), raw or gzip, through `Dataset::from_idx_bytes` (what `idx:` uses).
//! First byte: bits 0-1 choose the images' encoding (0, 3: as given, 1: gzip the rest, 2: as
//! given, usually a gzip stream from the seeds); bit 2 splits the rest into images and labels
//! at the fraction the second byte gives.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (images, labels) = if mode & 4 != 0 && !rest.is_empty() {
        let at = rest[0] as usize * (rest.len() - 1) / 255;
        let (a, b) = rest[1..].split_at(at.min(rest.len() - 1));
        (a.to_vec(), Some(b.to_vec()))
    } else {
        (rest.to_vec(), None)
    };
    let (images, labels) = match mode & 3 {
        1 => (gzip(&images), labels.map(|l| gzip(&l))),
        _ => (images, labels),
    };
    if let Ok(set) = nac::data::Dataset::from_idx_bytes(&images, labels.as_deref()) {
        assert!(!set.is_empty());
        if let Some(l) = set.labels() {
            assert_eq!(l.len(), set.len());
        }
        for i in [0, set.len() / 2, set.len() - 1] {
            let image = set.image(i).unwrap();
            image.check().unwrap();
        }
        assert!(set.image(set.len()).is_err());
    }
});
