//! PNG/JPEG bytes through `nac::data::decode_image_bytes` (the decoder `folder:` datasets use),
//! then a small transform and a corruption of the decoded image.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = nac::data::decode_image_bytes("fuzz.png", data) {
        image.check().unwrap();
        assert!(image.width as usize <= nac::limits::MAX_IMAGE_SIDE);
        assert!(image.height as usize <= nac::limits::MAX_IMAGE_SIDE);
        if image.pixels.len() <= 1 << 16 {
            // resize:8 of a very thin image may pass MAX_IMAGE_SIDE: then both calls refuse it.
            let t = nac::data::Transform::parse("resize:8,center_crop:6,gray2rgb").unwrap();
            match (t.output_size(&image), t.apply(&image)) {
                (Ok(size), Ok(out)) => assert_eq!((size, out.len()), ((6, 6), 3 * 36)),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("output_size {a:?} and apply {:?} disagree", b.map(|v| v.len())),
            }
            let c = nac::data::Corruption::parse("gaussian_blur").unwrap();
            assert_eq!(c.apply(&image, 3, 1).pixels.len(), image.pixels.len());
        }
    }
});
