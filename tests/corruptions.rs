//! The corruptions against goldens of the original `make_cifar_c.py` functions
//! (`tools/corruption_reference.py`; tolerances and why in tests/golden/corruptions/README.md).

use std::path::{Path, PathBuf};

use nac::data::Dataset;

use nac::data::{Corruption, Image};
use nac::npy::NpyArray;

mod common;

fn golden(name: &str) -> Option<NpyArray> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/corruptions").join(format!("{name}.npy"));
    path.exists().then(|| NpyArray::load(&path).unwrap())
}

fn image(a: &NpyArray, index: usize, w: u32, h: u32, c: u8) -> Image {
    let n = (w * h) as usize * c as usize;
    Image { width: w, height: h, channels: c, pixels: a.bytes[index * n..(index + 1) * n].to_vec() }
}

/// (input, seed, reference output) for each golden case of `corruption`.
fn cases(c: Corruption) -> Vec<(Image, u64, u8, Image)> {
    let inputs = golden("inputs").unwrap();
    let mut out = Vec::new();
    let rgb = golden(&format!("{}_rgb", c.name())).unwrap();
    for i in 0..2 {
        for s in 1..=5u8 {
            out.push((image(&inputs, i, 32, 32, 3), 100 * i as u64 + s as u64, s, image(&rgb, i * 5 + s as usize - 1, 32, 32, 3)));
        }
    }
    if let Some(gray) = golden(&format!("{}_gray", c.name())) {
        let input = image(&golden("gray").unwrap(), 0, 28, 28, 1);
        for s in 1..=5u8 {
            out.push((input.clone(), 200 + s as u64, s, image(&gray, s as usize - 1, 28, 28, 1)));
        }
    }
    out
}

/// Synthetic frost picture k, as `frost_picture` in the golden script.
fn frost_picture(k: usize) -> Image {
    let pixels = (0..200).flat_map(|y| (0..200).flat_map(move |x| (0..3).map(move |c| ((x * (3 + k) + y * (5 + c) + 17 * k) % 256) as u8)));
    Image { width: 200, height: 200, channels: 3, pixels: pixels.collect() }
}

fn run(c: Corruption, input: &Image, severity: u8, seed: u64) -> Image {
    if c == Corruption::Frost {
        let pictures: Vec<Image> = (0..5).map(frost_picture).collect();
        nac::data::frost_with(input, severity, seed, &pictures).unwrap()
    } else {
        c.apply(input, severity, seed).unwrap()
    }
}

/// Absolute differences per value: (largest, mean, fraction of values that differ).
fn differences(got: &Image, want: &Image) -> (u8, f64, f64) {
    assert_eq!((got.width, got.height, got.channels), (want.width, want.height, want.channels));
    let d: Vec<u8> = got.pixels.iter().zip(&want.pixels).map(|(&a, &b)| a.abs_diff(b)).collect();
    let n = d.len() as f64;
    (*d.iter().max().unwrap(), d.iter().map(|&v| v as f64).sum::<f64>() / n, d.iter().filter(|&&v| v > 0).count() as f64 / n)
}

/// Per golden case: at most `max` grey levels apart on at most a fraction `fraction` of the values.
fn check_close(c: Corruption, severities: std::ops::RangeInclusive<u8>, max: u8, fraction: f64) {
    for (input, seed, s, want) in cases(c).into_iter().filter(|case| severities.contains(&case.2)) {
        let (worst, _, differ) = differences(&run(c, &input, s, seed), &want);
        assert!(
            worst <= max && differ <= fraction,
            "{} severity {s} on a {}-channel image: {differ:.4} of the values differ, by up to {worst} (allowed {fraction}, {max})",
            c.name(),
            input.channels
        );
    }
}

#[test]
fn draws_and_deterministic_steps_reproduce_the_reference() {
    use Corruption::*;
    // NumPy's legacy stream reproduced draw for draw and the arithmetic in the reference's
    // order: equal up to a value that lands within a rounding error of a grey level.
    let equal = [GaussianNoise, ShotNoise, SpeckleNoise, DefocusBlur, GlassBlur, ZoomBlur, Frost, Fog, Brightness, Contrast];
    for c in equal.into_iter().chain([ElasticTransform, Pixelate, GaussianBlur, Saturate, Spatter]) {
        check_close(c, 1..=5, 1, 0.005);
    }
    // The line kernel against ImageMagick: one level where ImageMagick's float sum falls just
    // below an integer (a quarter of the values of a linear gradient), snow's flakes alike.
    check_close(MotionBlur, 1..=5, 1, 0.30);
    check_close(Snow, 1..=5, 1, 0.01);
}

#[test]
fn jpeg_matches_pil_within_the_codecs_differences() {
    // jpeg-encoder's 4:2:0 with libjpeg's chroma averaging and IJG tables, decoded by the
    // `image` crate, against PIL's libjpeg both ways: within a level on smooth content, a few on
    // noise (IDCT and upsampling differ); the compression error is the reference's within 10%.
    for (input, seed, s, want) in cases(Corruption::JpegCompression) {
        let got = run(Corruption::JpegCompression, &input, s, seed);
        let (_, mean, _) = differences(&got, &want);
        let noisy = seed % 200 >= 100 && input.channels == 3;
        assert!(mean <= if noisy { 3.5 } else { 1.2 }, "jpeg {s}: mean difference {mean:.3} from PIL");
        let error = |im: &Image| differences(im, &input).1;
        assert!(
            (error(&got) / error(&want) - 1.0).abs() <= 0.1,
            "jpeg {s}: compression error {:.3}, PIL's {:.3}",
            error(&got),
            error(&want)
        );
    }
}

#[test]
fn impulse_noise_hits_the_reference_share_of_salt_and_pepper() {
    // The reference draws from scikit-image's own generator: compare the shares of values set
    // to 0 and to 255 (binomial, within 4 standard deviations of the difference of two shares).
    for s in 1..=5u8 {
        let (mut ours, mut theirs, mut n) = ([0usize; 2], [0usize; 2], 0usize);
        for (input, seed, _, want) in cases(Corruption::ImpulseNoise).into_iter().filter(|case| case.2 == s) {
            let got = run(Corruption::ImpulseNoise, &input, s, seed);
            for ((&g, &w), &x) in got.pixels.iter().zip(&want.pixels).zip(&input.pixels) {
                assert!(g == x || g == 0 || g == 255, "impulse noise changed a value to {g}, not 0 or 255");
                ours[(g == 255) as usize] += (g == 0 || g == 255) as usize;
                theirs[(w == 255) as usize] += (w == 0 || w == 255) as usize;
            }
            n += input.pixels.len();
        }
        for k in 0..2 {
            let (p, q) = (ours[k] as f64 / n as f64, theirs[k] as f64 / n as f64);
            let sd = (2.0 * q.max(1e-3) * (1.0 - q) / n as f64).sqrt();
            assert!((p - q).abs() <= 4.0 * sd, "impulse {s}: share of {} {p:.4}, reference {q:.4}", [0, 255][k]);
        }
    }
}

#[test]
fn every_corruption_works_on_any_size_deterministically_and_gray_keeps_channel_r() {
    use nac::rng::Rng;
    let mut rng = Rng::new(5);
    let mut random = |w: u32, h: u32, c: u8| Image {
        width: w,
        height: h,
        channels: c,
        pixels: (0..w * h * c as u32).map(|_| rng.below(256) as u8).collect(),
    };
    let pictures: Vec<Image> = (0..5).map(frost_picture).collect();
    let apply = |c: Corruption, im: &Image, s: u8, seed: u64| match c {
        Corruption::Frost => nac::data::frost_with(im, s, seed, &pictures).unwrap(),
        _ => c.apply(im, s, seed).unwrap(),
    };
    for (w, h) in [(21, 13), (9, 30), (1, 1)] {
        let (rgb, gray) = (random(w, h, 3), random(w, h, 1));
        for &c in Corruption::all() {
            for s in [1, 5] {
                let a = apply(c, &rgb, s, 7);
                assert_eq!((a.width, a.height, a.channels), (w, h, 3), "{}", c.name());
                assert_eq!(a, apply(c, &rgb, s, 7), "{} is not deterministic", c.name());
                let g = apply(c, &gray, s, 7);
                let replicated = Image { channels: 3, pixels: gray.pixels.iter().flat_map(|&v| [v; 3]).collect(), ..gray.clone() };
                let r: Vec<u8> = apply(c, &replicated, s, 7).pixels.iter().step_by(3).copied().collect();
                assert_eq!(g.pixels, r, "{} on gray is not channel R of the replicated image", c.name());
                if w > 1 && s == 5 && c != Corruption::Saturate {
                    assert_ne!(a, rgb, "{} severity 5 left the image unchanged", c.name());
                }
            }
        }
    }
    let image = random(32, 32, 3);
    for c in [Corruption::GaussianNoise, Corruption::GlassBlur, Corruption::MotionBlur, Corruption::Fog, Corruption::ElasticTransform] {
        assert_ne!(c.apply(&image, 3, 1).unwrap(), c.apply(&image, 3, 2).unwrap(), "{} ignores its seed", c.name());
    }
    let bad = Image { width: 2, height: 2, channels: 3, pixels: vec![0; 5] };
    assert!(Corruption::Fog.apply(&bad, 1, 0).unwrap_err().to_string().contains("expected 1 or 3 channels"));
}

#[test]
fn the_lists_and_names() {
    let names = |l: &[Corruption]| l.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ");
    assert_eq!(
        names(Corruption::cifar10_c()),
        "gaussian_noise shot_noise impulse_noise defocus_blur glass_blur motion_blur zoom_blur snow frost fog brightness contrast elastic_transform pixelate jpeg_compression"
    );
    assert_eq!(names(Corruption::extras()), "speckle_noise gaussian_blur spatter saturate");
    for &c in Corruption::all() {
        assert_eq!(Corruption::parse(&c.name().to_uppercase().replace('_', "-")).unwrap(), c);
    }
}

#[test]
fn frost_without_its_pictures_fails_when_the_dataset_is_opened() {
    // The only test in this binary that reads NAC_FROST_DIR.
    let dir = common::temp_dir("frost");
    let set = dir.join("set.npy");
    let inputs = golden("inputs").unwrap();
    inputs.save(&set).unwrap();
    std::env::set_var("NAC_FROST_DIR", &dir);
    let spec = format!("corrupt:frost:2:npy:{}", set.display());
    let err = Dataset::open(&spec).unwrap_err().to_string();
    assert!(err.contains("frost1.png") && err.contains("tools/fetch_data.sh") && err.contains("NAC_FROST_DIR"), "{err}");
    for (k, name) in ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"].iter().enumerate() {
        let p = frost_picture(k);
        // PNG content under the .jpg names too, as the golden script writes them.
        image::save_buffer_with_format(
            dir.join(name),
            &p.pixels,
            p.width,
            p.height,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .unwrap();
    }
    let opened = Dataset::open(&spec).unwrap();
    let pictures: Vec<Image> = (0..5).map(frost_picture).collect();
    assert_eq!(opened.image(1).unwrap(), nac::data::frost_with(&image(&inputs, 1, 32, 32, 3), 2, 1, &pictures).unwrap());
    std::env::remove_var("NAC_FROST_DIR");
    std::fs::remove_dir_all(&dir).unwrap();
}
