//! Transform text: `Transform::parse`, then `output_size` and `apply` on a small gray and a
//! small RGB image; the two must agree. Steps with a number over 256 are only sized, not
//! applied (a 4096² intermediate per input would slow fuzzing to a crawl).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nac::data::{Image, Transform};

fuzz_target!(|data: &[u8]| {
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
});
