//! The bodies of the dataset, transform and config fuzz targets, shared with the replay of
//! their regression inputs in `tests/hostile_data.rs`, so a replayed input is checked exactly as
//! the fuzzer checked it (each target and the test use some of these).
#![allow(dead_code)]

use std::io::Write;

use nac::data::{Image, Transform};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// IDX images (and labels), raw or gzip, through `Dataset::from_idx_bytes` (what `idx:` uses).
/// First byte: bits 0-1 choose the images' encoding (0, 3: as given, 1: gzip the rest, 2: as
/// given, usually a gzip stream from the seeds); bit 2 splits the rest into images and labels
/// at the fraction the second byte gives.
pub fn idx(data: &[u8]) {
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
}

/// One CIFAR-10/100 binary batch through `Dataset::from_cifar_bytes` (what `cifar10:`/
/// `cifar100:` use). First byte: bit 0 chooses CIFAR-100.
pub fn cifar(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if let Ok(set) = nac::data::Dataset::from_cifar_bytes(rest, mode & 1 != 0) {
        let labels = set.labels().unwrap();
        assert_eq!(labels.len(), set.len());
        let classes = if mode & 1 != 0 { 100 } else { 10 };
        assert!(labels.iter().all(|&l| l < classes));
        for i in [0, set.len() - 1] {
            let image = set.image(i).unwrap();
            assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
        }
    }
}

/// Pixel-row CSV, plain or gzip, through `Dataset::from_csv_bytes` (what `csv:` uses). First
/// byte: bit 0 gzips the rest (otherwise it is used as given, maybe a gzip stream itself).
pub fn csv(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 != 0 { gzip(rest) } else { rest.to_vec() };
    if let Ok(set) = nac::data::Dataset::from_csv_bytes(&bytes) {
        assert_eq!(set.labels().unwrap().len(), set.len());
        for i in [0, set.len() - 1] {
            let image = set.image(i).unwrap();
            image.check().unwrap();
            assert_eq!(image.width, image.height);
        }
    }
}

/// PNG/JPEG bytes through `nac::data::decode_image_bytes` (the decoder `folder:` datasets use),
/// then a small transform and a corruption of the decoded image.
pub fn images(data: &[u8]) {
    if let Ok(image) = nac::data::decode_image_bytes("fuzz.png", data) {
        image.check().unwrap();
        assert!(image.width as usize <= nac::limits::MAX_IMAGE_SIDE);
        assert!(image.height as usize <= nac::limits::MAX_IMAGE_SIDE);
        if image.pixels.len() <= 1 << 16 {
            // resize:8 of a very thin image may pass MAX_IMAGE_SIDE: then both calls refuse it.
            let t = Transform::parse("resize:8,center_crop:6,gray2rgb").unwrap();
            match (t.output_size(&image), t.apply(&image)) {
                (Ok(size), Ok(out)) => assert_eq!((size, out.len()), ((6, 6), 3 * 36)),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("output_size {a:?} and apply {:?} disagree", b.map(|v| v.len())),
            }
            let c = nac::data::Corruption::parse("gaussian_blur").unwrap();
            assert_eq!(c.apply(&image, 3, 1).unwrap().pixels.len(), image.pixels.len());
        }
    }
}

/// Transform text: `Transform::parse`, then `output_size` and `apply` on a small gray and a
/// small RGB image; the two must agree. Steps with a number over 256 are only sized, not
/// applied (a 4096² intermediate per input would slow fuzzing to a crawl).
pub fn transform(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(t) = Transform::parse(text) else { return };
    assert_eq!(Transform::parse(&t.describe()).unwrap(), t, "describe round trip");
    let big = text.split(|c: char| !c.is_ascii_digit()).any(|run| run.len() > 3 || run.parse::<u32>().is_ok_and(|v| v > 256));
    let images = [
        Image { width: 7, height: 5, channels: 1, pixels: (0..35).collect() },
        Image { width: 3, height: 4, channels: 3, pixels: (0..36).collect() },
        Image { width: 1, height: 9, channels: 1, pixels: vec![7; 9] },
    ];
    for image in &images {
        let size = t.output_size(image);
        if big {
            continue;
        }
        match (size, t.apply(image)) {
            (Ok((h, w)), Ok(out)) => assert_eq!(out.len(), 3 * h as usize * w as usize),
            (Err(_), Ok(_)) => panic!("output_size failed but apply succeeded"),
            _ => {}
        }
    }
}

/// `nac eval` config text: `EvalConfig::parse` (TOML, then `validate`).
pub fn eval_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = nac::eval::EvalConfig::parse(text, "fuzz.toml") {
        assert!(config.batch >= 1 && config.batch <= nac::limits::MAX_BATCH);
        let _ = config.preset();
    }
}
