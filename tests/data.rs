//! `nac::data`: every format on small files written here in exactly that format, the spec
//! grammar, transforms against hand-computed values, the batch loader and the corruptions.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use nac::data::{batches, load_all, synthetic_outliers, Corruption, Dataset, Image, Transform};
use nac::npy::{NpyArray, NpyDtype};

/// A fresh directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("nac-data-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn open_err(spec: &str) -> String {
    match Dataset::open(spec) {
        Ok(d) => panic!("`{spec}` opened ({} samples) but should have failed", d.len()),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "error `{message}` does not mention `{part}`");
    }
}

fn gray(width: u32, height: u32, pixels: Vec<u8>) -> Image {
    Image { width, height, channels: 1, pixels }
}

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend(data);
    out
}

/// 3 images of 2×3 (H×W) with pixel (n, y, x) = 10n + 3y + x, labels 7, 8, 9.
fn idx_pair() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3u8).flat_map(|n| (0..6u8).map(move |p| 10 * n + p)).collect();
    (idx_bytes(0x803, &[3, 2, 3], &pixels), idx_bytes(0x801, &[3], &[7, 8, 9]))
}

#[test]
fn idx_raw_and_gzip_with_sibling_labels() {
    let dir = TempDir::new("idx");
    let (images, labels) = idx_pair();
    std::fs::write(dir.path("t-images-idx3-ubyte"), &images).unwrap();
    std::fs::write(dir.path("t-labels-idx1-ubyte"), &labels).unwrap();
    std::fs::write(dir.path("g-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
    std::fs::write(dir.path("g-labels-idx1-ubyte.gz"), gzip(&labels)).unwrap();
    // Gzip is detected by content, not by name.
    std::fs::write(dir.path("plain-name"), gzip(&images)).unwrap();
    let raw_spec = format!("idx:{}", dir.path("t-images-idx3-ubyte").display());
    for spec in [
        raw_spec.clone(),
        format!("idx:{}", dir.path("g-images-idx3-ubyte.gz").display()),
        format!("idx:{}:{}", dir.path("plain-name").display(), dir.path("t-labels-idx1-ubyte").display()),
    ] {
        let d = Dataset::open(&spec).unwrap();
        assert_eq!(d.len(), 3, "{spec}");
        assert_eq!(d.spec(), spec);
        assert_eq!(d.labels(), Some(&[7, 8, 9][..]), "{spec}");
        assert_eq!(d.image(2).unwrap(), gray(3, 2, vec![20, 21, 22, 23, 24, 25]), "{spec}");
    }
    assert_eq!(Dataset::open(&raw_spec).unwrap().name(), "t-images-idx3-ubyte");
    assert_eq!(Dataset::open(&format!("idx:{}", dir.path("g-images-idx3-ubyte.gz").display())).unwrap().name(), "g-images-idx3-ubyte");
    // No sibling: no labels.
    assert_eq!(Dataset::open(&format!("idx:{}", dir.path("plain-name").display())).unwrap().labels(), None);

    // A labels file of the wrong count.
    std::fs::write(dir.path("c-images-idx3-ubyte"), &images).unwrap();
    std::fs::write(dir.path("c-labels-idx1-ubyte"), idx_bytes(0x801, &[2], &[1, 2])).unwrap();
    assert_mentions(
        &open_err(&format!("idx:{}", dir.path("c-images-idx3-ubyte").display())),
        &["c-labels-idx1-ubyte", "2 labels", "3 images"],
    );
}

#[test]
fn idx_errors_name_the_file_and_what_was_expected() {
    let dir = TempDir::new("idx-errors");
    let (images, _) = idx_pair();
    let truncated = dir.path("trunc-images-idx3-ubyte");
    std::fs::write(&truncated, &images[..images.len() - 1]).unwrap();
    let message = open_err(&format!("idx:{}", truncated.display()));
    assert_mentions(&message, &[&truncated.display().to_string(), "truncated", "need 34 bytes", "has 33"]);

    let bad = dir.path("bad-images-idx3-ubyte");
    std::fs::write(&bad, idx_bytes(0x804, &[3, 2, 3], &images[16..])).unwrap();
    assert_mentions(&open_err(&format!("idx:{}", bad.display())), &[&bad.display().to_string(), "0x00000804", "0x00000803"]);

    let missing = dir.path("missing-images-idx3-ubyte");
    assert_mentions(&open_err(&format!("idx:{}", missing.display())), &[&missing.display().to_string()]);
}

/// CIFAR records with planes value(n, c, p) = (n·50 + c·7 + p) mod 256.
fn cifar_records(label_bytes: &[[u8; 2]], cifar100: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, labels) in label_bytes.iter().enumerate() {
        out.extend(if cifar100 { &labels[..] } else { &labels[1..] });
        for c in 0..3 {
            out.extend((0..1024).map(|p| ((n * 50 + c * 7 + p) % 256) as u8));
        }
    }
    out
}

fn check_cifar_pixels(d: &Dataset) {
    for n in 0..3 {
        let image = d.image(n).unwrap();
        assert_eq!((image.width, image.height, image.channels), (32, 32, 3));
        for p in 0..1024 {
            for c in 0..3 {
                assert_eq!(image.pixels[p * 3 + c] as usize, (n * 50 + c * 7 + p) % 256, "image {n} pixel {p} channel {c}");
            }
        }
    }
}

#[test]
fn cifar10_and_cifar100_binary_batches() {
    let dir = TempDir::new("cifar");
    let labels = [[0, 3], [0, 9], [0, 1]];
    std::fs::write(dir.path("test_batch.bin"), cifar_records(&labels, false)).unwrap();
    let d = Dataset::open(&format!("cifar10:{}:test", dir.0.display())).unwrap();
    assert_eq!((d.len(), d.labels(), d.name().as_str()), (3, Some(&[3, 9, 1][..]), "cifar10_test"));
    check_cifar_pixels(&d);
    let single = Dataset::open(&format!("cifar10:{}", dir.path("test_batch.bin").display())).unwrap();
    assert_eq!(single.image(1).unwrap(), d.image(1).unwrap());

    let fine = [[4, 55], [19, 99], [0, 0]];
    std::fs::write(dir.path("test.bin"), cifar_records(&fine, true)).unwrap();
    let d = Dataset::open(&format!("cifar100:{}:test", dir.0.display())).unwrap();
    assert_eq!(d.labels(), Some(&[55, 99, 0][..]));
    check_cifar_pixels(&d);

    let mut bytes = cifar_records(&labels, false);
    bytes.truncate(bytes.len() - 10);
    let truncated = dir.path("trunc.bin");
    std::fs::write(&truncated, bytes).unwrap();
    assert_mentions(
        &open_err(&format!("cifar10:{}", truncated.display())),
        &[&truncated.display().to_string(), "record 2", "byte offset 6146"],
    );

    let mut bytes = cifar_records(&labels, false);
    bytes[3073] = 12;
    std::fs::write(dir.path("label.bin"), bytes).unwrap();
    assert_mentions(&open_err(&format!("cifar10:{}", dir.path("label.bin").display())), &["label 12", "byte offset 3073"]);

    // train = data_batch_1..5: a missing one is named.
    assert_mentions(&open_err(&format!("cifar10:{}:train", dir.0.display())), &["data_batch_1.bin"]);
}

#[test]
fn image_folders_with_classes_and_flat() {
    let dir = TempDir::new("folder");
    let classes = dir.path("classes");
    for class in ["dog", "cat"] {
        std::fs::create_dir_all(classes.join(class)).unwrap();
    }
    std::fs::create_dir_all(classes.join("empty")).unwrap();
    let rgb = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
    rgb.save(classes.join("cat/b.png")).unwrap();
    let luma = image::GrayImage::from_fn(2, 2, |x, y| image::Luma([(x + 2 * y) as u8 * 50]));
    luma.save(classes.join("cat/a.PNG")).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 100, 50])).save(classes.join("dog/c.jpg")).unwrap();
    std::fs::write(classes.join("dog/notes.txt"), "not an image").unwrap();

    let d = Dataset::open(&format!("folder:{}", classes.display())).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d.name(), "classes");
    assert_eq!(d.labels(), Some(&[0, 0, 1][..]), "cat (a.PNG, b.png) then dog (c.jpg)");
    assert_eq!(d.image(0).unwrap(), gray(2, 2, vec![0, 50, 100, 150]));
    assert_eq!(d.image(1).unwrap(), Image { width: 3, height: 2, channels: 3, pixels: rgb.into_raw() });
    let jpeg = d.image(2).unwrap();
    assert_eq!((jpeg.width, jpeg.height, jpeg.channels), (8, 8, 3));
    assert!(jpeg.pixels.chunks(3).all(|p| p[0].abs_diff(200) < 8 && p[1].abs_diff(100) < 8 && p[2].abs_diff(50) < 8));

    let flat = dir.path("flat");
    std::fs::create_dir_all(&flat).unwrap();
    image::RgbaImage::from_pixel(2, 1, image::Rgba([1, 2, 3, 4])).save(flat.join("x.png")).unwrap();
    std::fs::write(flat.join("y.png"), b"\x89PNG garbage").unwrap();
    let d = Dataset::open(&format!("folder:{}", flat.display())).unwrap();
    assert_eq!((d.len(), d.labels()), (2, None));
    assert_eq!(d.image(0).unwrap(), Image { width: 2, height: 1, channels: 3, pixels: vec![1, 2, 3, 1, 2, 3] });
    assert_mentions(&d.image(1).unwrap_err().to_string(), &[&flat.join("y.png").display().to_string(), "decode"]);

    std::fs::create_dir_all(dir.path("none")).unwrap();
    assert_mentions(&open_err(&format!("folder:{}", dir.path("none").display())), &["no .png/.jpg/.jpeg images"]);
}

#[test]
fn npy_uint8_arrays_with_labels() {
    let dir = TempDir::new("npy");
    let gray_path = dir.path("gray.npy");
    NpyArray { shape: vec![2, 2, 3], dtype: NpyDtype::U8, bytes: (0..12).collect() }.save(&gray_path).unwrap();
    let rgb_path = dir.path("rgb.npy");
    NpyArray { shape: vec![2, 1, 2, 3], dtype: NpyDtype::U8, bytes: (100..112).collect() }.save(&rgb_path).unwrap();
    let labels_path = dir.path("labels.npy");
    NpyArray::from_labels(&[4, 2]).save(&labels_path).unwrap();
    assert_eq!(NpyArray::load(&labels_path).unwrap().dtype, NpyDtype::I64);

    let d = Dataset::open(&format!("npy:{}", gray_path.display())).unwrap();
    assert_eq!((d.len(), d.labels(), d.name().as_str()), (2, None, "gray"));
    assert_eq!(d.image(1).unwrap(), gray(3, 2, (6..12).collect()));
    let d = Dataset::open(&format!("npy:{}:{}", rgb_path.display(), labels_path.display())).unwrap();
    assert_eq!(d.labels(), Some(&[4, 2][..]));
    assert_eq!(d.image(1).unwrap(), Image { width: 2, height: 1, channels: 3, pixels: (106..112).collect() });

    let float_path = dir.path("float.npy");
    NpyArray::from_f32(vec![1, 2, 2], &[0.0; 4]).save(&float_path).unwrap();
    assert_mentions(&open_err(&format!("npy:{}", float_path.display())), &[&float_path.display().to_string(), "uint8", "float32"]);
    let four_channels = dir.path("four.npy");
    NpyArray { shape: vec![1, 1, 1, 4], dtype: NpyDtype::U8, bytes: vec![0; 4] }.save(&four_channels).unwrap();
    assert_mentions(&open_err(&format!("npy:{}", four_channels.display())), &["C = 1 or 3"]);
}

#[test]
fn pixel_row_csv_plain_and_gzip() {
    let dir = TempDir::new("csv");
    let text = "p1,p2,p3,p4,label\n0,1,2,3,5\n255,254,253,252,0\n";
    std::fs::write(dir.path("small.csv"), text).unwrap();
    std::fs::write(dir.path("small_gz.csv.gz"), gzip(text.as_bytes())).unwrap();
    for (file, name) in [("small.csv", "small"), ("small_gz.csv.gz", "small_gz")] {
        let d = Dataset::open(&format!("csv:{}", dir.path(file).display())).unwrap();
        assert_eq!((d.len(), d.labels(), d.name().as_str()), (2, Some(&[5, 0][..]), name));
        assert_eq!(d.image(0).unwrap(), gray(2, 2, vec![0, 1, 2, 3]));
        assert_eq!(d.image(1).unwrap(), gray(2, 2, vec![255, 254, 253, 252]));
    }
    std::fs::write(dir.path("bad.csv"), "0,1,2,3,5\n0,1,2,3,4\n0,x,2,3,1\n").unwrap();
    assert_mentions(&open_err(&format!("csv:{}", dir.path("bad.csv").display())), &["bad.csv", "line 3, column 2", "`x`"]);
    std::fs::write(dir.path("range.csv"), "0,1,256,3,5\n").unwrap();
    assert_mentions(&open_err(&format!("csv:{}", dir.path("range.csv").display())), &["line 1, column 3", "0-255"]);
    std::fs::write(dir.path("ragged.csv"), "0,1,2,3,5\n0,1,2,5\n").unwrap();
    assert_mentions(&open_err(&format!("csv:{}", dir.path("ragged.csv").display())), &["line 2", "4 columns, expected 5"]);
}

/// 10 gray 3×3 images with distinct pixels, labels 0..10.
fn small_set() -> Dataset {
    let images = (0..10u8).map(|n| gray(3, 3, (0..9).map(|p| n * 20 + p).collect())).collect();
    Dataset::from_images("small", images, Some((0..10).collect()))
}

#[test]
fn slices_corruptions_outliers_and_subsets() {
    let dir = TempDir::new("specs");
    std::fs::write(dir.path("s.csv"), (0..6).map(|n| format!("{n},{n},{n},{n},{n}\n")).collect::<String>()).unwrap();
    let base = format!("csv:{}", dir.path("s.csv").display());
    let d = Dataset::open(&format!("{base}[2:4]")).unwrap();
    assert_eq!((d.len(), d.labels()), (2, Some(&[2, 3][..])));
    assert_eq!(d.image(0).unwrap().pixels, vec![2; 4]);
    assert_eq!(d.name(), "s[2:4]");
    assert_eq!(Dataset::open(&format!("{base}[:2]")).unwrap().labels(), Some(&[0, 1][..]));
    assert_eq!(Dataset::open(&format!("{base}[4:]")).unwrap().labels(), Some(&[4, 5][..]));
    assert_eq!(Dataset::open(&format!("{base}[4:100]")).unwrap().len(), 2);
    assert_mentions(&open_err(&format!("{base}[5:5]")), &["empty"]);
    assert_mentions(&open_err(&format!("{base}[a:2]")), &["`a`"]);
    assert_eq!(Dataset::open(&format!("{base}[1::2]")).unwrap().labels(), Some(&[1, 3, 5][..]));
    let strided = Dataset::open(&format!("{base}[:5:3]")).unwrap();
    assert_eq!(strided.labels(), Some(&[0, 3][..]));
    assert_eq!(strided.image(1).unwrap().pixels, vec![3; 4]);
    assert_eq!(strided.locate(1), format!("{base}[:5:3]: entry 1 (sample 3 of the source data)"));
    assert_mentions(&open_err(&format!("{base}[0:4:0]")), &["step 0"]);
    assert_mentions(&open_err(&format!("{base}[0:4:1:1]")), &["[a:b:step]"]);

    let corrupt = Dataset::open(&format!("corrupt:invert:3:{base}")).unwrap();
    assert_eq!((corrupt.len(), corrupt.labels().map(<[usize]>::len)), (6, Some(6)));
    assert_eq!(corrupt.image(2).unwrap().pixels, vec![253; 4]);
    // A slice of a corrupted set equals corrupting the slice: seeds are the base indices.
    let noisy = Dataset::open(&format!("corrupt:gaussian_noise:5:{base}[3:5]")).unwrap();
    let whole = Dataset::open(&format!("corrupt:gaussian_noise:5:{base}")).unwrap();
    assert_eq!(noisy.image(1).unwrap(), whole.image(4).unwrap());
    assert_mentions(&open_err(&format!("corrupt:haze:3:{base}")), &["unknown corruption `haze`"]);
    assert_mentions(&open_err(&format!("corrupt:contrast:6:{base}")), &["severity `6`"]);

    let outliers = Dataset::open(&format!("outliers:{base}")).unwrap();
    assert_eq!((outliers.len(), outliers.labels()), (6, None));
    assert_eq!(outliers.image(3).unwrap(), synthetic_outliers(&Dataset::open(&base).unwrap(), 0).image(3).unwrap());
    let seeded = synthetic_outliers(&Dataset::open(&base).unwrap(), 9);
    assert_eq!(seeded.spec(), format!("outliers:9:{base}"));
    assert_eq!(Dataset::open(seeded.spec()).unwrap().image(0).unwrap(), seeded.image(0).unwrap());

    let set = small_set();
    let sub = set.subset(&[7, 2, 7]).unwrap();
    assert_eq!((sub.len(), sub.labels()), (3, Some(&[7, 2, 7][..])));
    assert_eq!(sub.image(1).unwrap(), set.image(2).unwrap());
    assert_eq!(sub.locate(1), format!("{}: entry 1 (sample 2 of the source data)", set.spec()));
    assert_eq!(set.locate(4), format!("{}: sample 4", set.spec()));
    assert_eq!(sub.subset(&[1]).unwrap().image(0).unwrap(), set.image(2).unwrap());
    assert_mentions(&set.subset(&[1, 10]).unwrap_err().to_string(), &["subset index 10", "entry 1", "10 samples"]);
    assert_mentions(&set.image(10).unwrap_err().to_string(), &["index 10"]);
    assert_mentions(&open_err("nope:x"), &["unknown kind `nope`"]);
}

#[track_caller]
fn assert_values(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5, "value {i}: {g} vs {w} ({got:?})");
    }
}

#[test]
fn transform_steps_against_hand_computed_values() {
    // pad 1 + gray2rgb + normalize: a 2×2 image becomes 4×4 per channel.
    let image = gray(2, 2, vec![0, 51, 102, 255]);
    let t = Transform::parse("pad:1,gray2rgb,normalize:0.1/0.2/0.3:0.5").unwrap();
    assert_eq!(t.output_size(&image).unwrap(), (4, 4));
    let out = t.apply(&image).unwrap();
    for (c, mean) in [0.1f32, 0.2, 0.3].into_iter().enumerate() {
        let b = -mean / 0.5;
        let v = |x: f32| (x - mean) / 0.5;
        #[rustfmt::skip]
        let want = [b, b, b, b,  b, v(0.0), v(0.2), b,  b, v(0.4), v(1.0), b,  b, b, b, b];
        assert_values(&out[c * 16..(c + 1) * 16], &want);
    }
    // Without gray2rgb a gray image cannot feed the model.
    assert_mentions(&Transform::parse("pad:1").unwrap().apply(&image).unwrap_err().to_string(), &["1 channel", "gray2rgb"]);
    assert_mentions(&Transform::parse("normalize:0.1/0.2/0.3:0.5").unwrap().apply(&image).unwrap_err().to_string(), &["gray2rgb first"]);

    // Bilinear, half-pixel centers: 2 → 4 samples at -0.25 (clamped), 0.25, 0.75, 1.25.
    let up = Transform::parse("resize:4x4,gray2rgb").unwrap().apply(&gray(2, 2, vec![0, 255, 255, 0])).unwrap();
    let row = |a: f32, b: f32| [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b];
    let (r0, r1) = (row(0.0, 1.0), row(1.0, 0.0));
    let mix = |wa: f32| -> Vec<f32> { r0.iter().zip(&r1).map(|(a, b)| wa * a + (1.0 - wa) * b).collect() };
    let want: Vec<f32> = [mix(1.0), mix(0.75), mix(0.25), mix(0.0)].concat();
    assert_values(&up[..16], &want);
    assert_values(&up[16..32], &want);
    // 4 → 2 samples at 0.5 and 2.5: the mean of each 2×2 block.
    let down = Transform::parse("resize:2,gray2rgb").unwrap().apply(&gray(4, 4, (0..16).map(|v| v * 10).collect())).unwrap();
    let block =
        |y: u32, x: u32| (0..2).flat_map(|dy| (0..2).map(move |dx| ((y + dy) * 4 + x + dx) as f32 * 10.0)).sum::<f32>() / 4.0 / 255.0;
    assert_values(&down[..4], &[block(0, 0), block(0, 2), block(2, 0), block(2, 2)]);
    // resize:S sets the shorter side, the longer one is truncated (torchvision).
    assert_eq!(Transform::parse("resize:4").unwrap().output_size(&gray(3, 5, vec![0; 15])).unwrap(), (6, 4));
    assert_eq!(Transform::preset("imagenet").unwrap().output_size(&gray(500, 375, vec![0; 500 * 375])).unwrap(), (224, 224));

    // Center crop: top = round((h − S)/2), ties to even (Python): 7→2: 2.5 → 2; 5→2: 1.5 → 2.
    let column = |h: u32| gray(1, h, (0..h as u8).collect());
    let crop = |h: u32, s: u32| -> Vec<f32> {
        let out = Transform::parse(&format!("center_crop:{s}x1,gray2rgb")).unwrap().apply(&column(h)).unwrap();
        out[..s as usize].iter().map(|v| v * 255.0).collect()
    };
    assert_values(&crop(7, 2), &[2.0, 3.0]);
    assert_values(&crop(5, 2), &[2.0, 3.0]);
    assert_values(&crop(4, 2), &[1.0, 2.0]);
    assert_values(&crop(6, 3), &[2.0, 3.0, 4.0]);
    // Larger than the image: zero padding, ⌊(S − h)/2⌋ above.
    assert_values(&crop(2, 5), &[0.0, 0.0, 1.0, 0.0, 0.0]);

    assert_mentions(&Transform::parse("pad:2,blur:3").unwrap_err().to_string(), &["step 2", "unknown step `blur`"]);
    assert_mentions(&Transform::parse("normalize:0.5:0").unwrap_err().to_string(), &["positive"]);
    assert_mentions(&Transform::parse("resize:0").unwrap_err().to_string(), &["positive integer"]);
}

#[test]
fn presets_describe_and_round_trip() {
    assert_eq!(Transform::preset("fmnist").unwrap().describe(), "pad:2,gray2rgb,normalize:0.286:0.353");
    assert_eq!(Transform::preset("none").unwrap().describe(), "gray2rgb");
    for name in ["cifar10", "cifar100", "fmnist", "imagenet", "none"] {
        let t = Transform::preset(name).unwrap();
        assert_eq!(Transform::parse(name).unwrap(), t);
        assert_eq!(Transform::parse(&t.describe()).unwrap(), t, "{name}: {}", t.describe());
        assert_eq!(Transform::parse(&t.describe()).unwrap().describe(), t.describe());
    }
    let t = Transform::parse("resize:8x6, center_crop:4x2 ,normalize:0.5:0.25").unwrap();
    assert_eq!(t.describe(), "resize:8x6,center_crop:4x2,normalize:0.5:0.25");
    assert_mentions(&Transform::preset("svhn").unwrap_err().to_string(), &["svhn", "fmnist"]);

    // fmnist: 28×28 → 32×32, black border = (0 − 0.286)/0.353, every channel equal.
    let out = Transform::preset("fmnist").unwrap().apply(&gray(28, 28, vec![255; 784])).unwrap();
    assert_eq!(out.len(), 3 * 32 * 32);
    assert!((out[0] + 0.286 / 0.353).abs() < 1e-6 && (out[2 * 32 + 2] - (1.0 - 0.286) / 0.353).abs() < 1e-6);
    assert_eq!(out[..1024], out[2048..]);
    // cifar10 per channel.
    let out = Transform::preset("cifar10").unwrap().apply(&Image { width: 1, height: 1, channels: 3, pixels: vec![255, 0, 51] }).unwrap();
    assert_values(&out, &[(1.0 - 0.4914) / 0.247, -0.4822 / 0.2435, (0.2 - 0.4465) / 0.2616]);
}

#[test]
fn batches_match_load_all_and_carry_labels() {
    let set = small_set();
    let t = Transform::preset("none").unwrap();
    let all = load_all(&set, &t, None, 2).unwrap();
    assert_eq!((all.start, all.shape), (0, [10, 3, 3, 3]));
    assert_eq!(all.labels, Some((0..10).collect()));
    assert_eq!(all.input[27..54], t.apply(&set.image(1).unwrap()).unwrap()[..]);

    let parts: Vec<_> = batches(&set, &t, None, 4, 3).collect::<nac::Result<_>>().unwrap();
    assert_eq!(parts.iter().map(|b| (b.start, b.shape[0])).collect::<Vec<_>>(), [(0, 4), (4, 4), (8, 2)]);
    assert_eq!(parts.iter().flat_map(|b| b.input.clone()).collect::<Vec<_>>(), all.input);
    assert_eq!(parts.iter().flat_map(|b| b.labels.clone().unwrap()).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());

    // Chosen indices, in their order; 1 thread or many give the same.
    let order = [9, 0, 3, 3, 5];
    let chosen = load_all(&set, &t, Some(&order), 1).unwrap();
    assert_eq!(chosen.labels, Some(order.to_vec()));
    for threads in [1, 2, 5, 16] {
        let parts: Vec<_> = batches(&set, &t, Some(&order), 2, threads).collect::<nac::Result<_>>().unwrap();
        assert_eq!(parts.iter().flat_map(|b| b.input.clone()).collect::<Vec<_>>(), chosen.input, "{threads} threads");
    }
    assert_mentions(&load_all(&set, &t, Some(&[1, 12]), 2).unwrap_err().to_string(), &["index 12"]);
    assert_mentions(&batches(&set, &t, None, 0, 2).next().unwrap().unwrap_err().to_string(), &["batch size"]);
    assert_eq!(batches(&set, &t, Some(&[]), 4, 2).count(), 0);
    assert!(load_all(&set, &t, Some(&[]), 2).is_err());
}

#[test]
fn batches_dropped_early_do_not_hang_and_report_mismatched_sizes() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let images = (0..200).map(|n| gray(16, 16, vec![n as u8; 256])).collect();
        let set = Dataset::from_images("many", images, None);
        let t = Transform::preset("imagenet").unwrap();
        let mut it = batches(&set, &t, None, 4, 3);
        let first = it.next().unwrap().unwrap();
        drop(it);
        let _ = tx.send(first.shape);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).expect("dropping the batch iterator hung"), [4, 3, 224, 224]);

    let mut images: Vec<Image> = (0..8).map(|_| gray(3, 3, vec![1; 9])).collect();
    images[5] = gray(4, 3, vec![1; 12]);
    let set = Dataset::from_images("mixed", images, None);
    let results: Vec<_> = batches(&set, &Transform::preset("none").unwrap(), None, 4, 3).collect();
    assert_eq!(results.len(), 2, "the iterator stops after the error");
    assert!(results[0].is_ok());
    let message = results[1].as_ref().unwrap_err().to_string();
    assert_mentions(&message, &["sample 5", "[3, 3, 4]", "sample 4", "[3, 3, 3]"]);
    // In a subset the message names the sample of the source, not only the entry.
    let subset = set.subset(&[0, 5, 1]).unwrap();
    let message = load_all(&subset, &Transform::preset("none").unwrap(), None, 2).unwrap_err().to_string();
    assert_mentions(&message, &["entry 1 (sample 5 of the source data)", "[3, 3, 4]"]);
    // A resize step fixes it.
    assert!(load_all(&set, &Transform::parse("resize:3x3,gray2rgb").unwrap(), None, 2).is_ok());
}

fn random_image(seed: u64, channels: u8) -> Image {
    let mut rng = nac::rng::Rng::new(seed);
    let (width, height) = (32, 24);
    Image { width, height, channels, pixels: (0..width * height * channels as u32).map(|_| rng.below(256) as u8).collect() }
}

#[test]
fn corruptions_are_deterministic_change_the_image_and_keep_its_size() {
    for channels in [1, 3] {
        let image = random_image(channels as u64, channels);
        // Frost needs its pictures: tests/corruptions.rs covers it.
        for &c in Corruption::all().iter().filter(|&&c| c != Corruption::Frost) {
            assert_eq!(Corruption::parse(c.name()).unwrap(), c);
            for severity in [1, 5] {
                let a = c.apply(&image, severity, 11).unwrap();
                assert_eq!(a, c.apply(&image, severity, 11).unwrap(), "{} is not deterministic", c.name());
                assert_eq!(
                    (a.width, a.height, a.channels, a.pixels.len()),
                    (image.width, image.height, image.channels, image.pixels.len())
                );
                // A gray image has no saturation to change.
                if !(c == Corruption::Saturate && channels == 1) {
                    assert_ne!(a, image, "{} severity {severity} left the image unchanged", c.name());
                }
            }
        }
        for c in [Corruption::GaussianNoise, Corruption::ShotNoise, Corruption::ImpulseNoise, Corruption::PixelShuffle] {
            assert_ne!(c.apply(&image, 5, 1).unwrap(), c.apply(&image, 5, 2).unwrap(), "{} ignores its seed", c.name());
        }
        // Pixel shuffle permutes whole pixels.
        let shuffled = Corruption::PixelShuffle.apply(&image, 3, 5).unwrap();
        let mut before: Vec<&[u8]> = image.pixels.chunks(channels as usize).collect();
        let mut after: Vec<&[u8]> = shuffled.pixels.chunks(channels as usize).collect();
        before.sort();
        after.sort();
        assert_eq!(before, after);
    }
    assert_eq!(Corruption::parse("Gaussian-Noise").unwrap(), Corruption::GaussianNoise);
    // Contrast at severity 5 pulls everything to the mean; brightness raises the value.
    let image = gray(2, 1, vec![0, 200]);
    assert_eq!(Corruption::Contrast.apply(&image, 5, 0).unwrap().pixels, vec![85, 115]);
    // 0.3 · 255 = 76.5, truncated as CIFAR-10-C's np.uint8 does.
    assert_eq!(Corruption::Brightness.apply(&image, 5, 0).unwrap().pixels, vec![76, 255]);

    let set = Dataset::from_images("r", (0..8).map(|i| random_image(i, 3)).collect(), Some(vec![1; 8]));
    let outliers = synthetic_outliers(&set, 3);
    assert_eq!((outliers.len(), outliers.labels(), outliers.name().as_str()), (8, None, "r_outliers"));
    assert_eq!(
        outliers.image(0).unwrap(),
        Corruption::GaussianNoise.apply(&set.image(0).unwrap(), 5, 3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap()
    );
    assert_eq!(outliers.image(6).unwrap(), outliers.image(6).unwrap());
    assert_ne!(outliers.image(5).unwrap(), set.image(5).unwrap());
}
