//! Hostile dataset files, spec strings, transforms and configs: each ends in an error that names
//! the file, field or value and what was expected, never in a panic, an abort on a size read
//! from the input, a hang or a silently wrong result. The second half replays every fuzzing
//! regression in `tests/fuzz-regressions/<target>/` through the fuzz targets' entry points.

use std::io::Write;
use std::path::{Path, PathBuf};

use nac::data::{batches, Dataset, Image, Transform};
use nac::eval::EvalConfig;

#[path = "../fuzz/inputs.rs"]
mod fuzz_inputs;

/// A fuzz target's name and body.
type FuzzTarget = (&'static str, fn(&[u8]));

/// A fresh directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("nac-hostile-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error text of `result`, which must be an error.
fn error<T: std::fmt::Debug>(result: nac::Result<T>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{text}` does not mention `{part}`");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend(d.to_be_bytes());
    }
    out
}

fn gray(width: u32, height: u32) -> Image {
    Image { width, height, channels: 1, pixels: vec![100; (width * height) as usize] }
}

/// A valid 8-bit PNG of `width`×`height` (gray) with the given IHDR size claim.
fn png(width: u32, height: u32, rows: &[u8]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend(data);
        out.extend(&crc_input);
        out.extend(crc32(&crc_input).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(rows).unwrap();
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

// ---- 1. Transforms --------------------------------------------------------------------------

#[test]
fn transform_size_arguments_over_the_limit_are_refused_at_parse() {
    for (text, step) in [
        ("pad:100000", "pad:100000"),
        ("resize:99999999", "resize:99999999"),
        ("gray2rgb,resize:99999999999999999999999", "step 2"),
        ("center_crop:5000", "center_crop:5000"),
        ("center_crop:10x4097", "center_crop:10x4097"),
        ("resize:4097x3", "resize:4097x3"),
    ] {
        let e = error(Transform::parse(text));
        assert_mentions(&e, &[step, "4096", "MAX_IMAGE_SIDE"]);
    }
    // At the limit is fine.
    Transform::parse("resize:4096,pad:4096,center_crop:4096x1").unwrap();
}

#[test]
fn transform_outputs_over_the_limit_are_errors_naming_the_step() {
    // pad on a 4000-pixel-wide image: 4000 + 2·100 > 4096.
    let t = Transform::parse("pad:100,gray2rgb").unwrap();
    assert_mentions(&error(t.apply(&gray(4000, 2))), &["pad:100", "4200", "MAX_IMAGE_SIDE"]);
    // resize:S on an extreme aspect ratio: the longer side S·4000/1 explodes.
    let t = Transform::parse("resize:4096,gray2rgb").unwrap();
    assert_mentions(&error(t.apply(&gray(4000, 1))), &["resize:4096", "16384000", "MAX_IMAGE_SIDE"]);
}

#[test]
fn transform_with_too_many_steps_is_refused() {
    let text = vec!["gray2rgb"; 1000].join(",");
    assert_mentions(&error(Transform::parse(&text)), &["1000 steps", "MAX_TRANSFORM_STEPS"]);
}

#[test]
fn an_inconsistent_or_oversized_image_is_an_error() {
    let t = Transform::parse("gray2rgb").unwrap();
    let wrong = Image { width: 3, height: 3, channels: 1, pixels: vec![0; 8] };
    assert_mentions(&error(t.apply(&wrong)), &["9 bytes"]);
    let huge = Image { width: u32::MAX, height: u32::MAX, channels: 3, pixels: vec![] };
    assert!(huge.check().is_err());
    assert!(t.apply(&huge).is_err());
    // 1684887088 × 3649452082 × 3 = 2^64 + 32: with wrapping arithmetic 32 bytes would pass.
    let wrapped = Image { width: 1_684_887_088, height: 3_649_452_082, channels: 3, pixels: vec![0; 32] };
    assert!(wrapped.check().is_err());
    assert!(Transform::parse("resize:2,gray2rgb").unwrap().apply(&wrapped).is_err());
}

// ---- 2. Readers -----------------------------------------------------------------------------

#[test]
fn idx_header_claiming_more_images_than_the_file_holds() {
    let dir = TempDir::new("idx-claim");
    let mut bytes = idx_header(0x803, &[1_000_000, 28, 28]);
    bytes.extend(vec![7u8; 2 * 784]);
    let raw = dir.write("claim-images-idx3-ubyte", &bytes);
    let gz = dir.write("claim.gz", &gzip(&bytes));
    for path in [raw, gz] {
        let e = error(Dataset::open(&format!("idx:{}", path.display())));
        assert_mentions(&e, &[&path.display().to_string(), "1000000 images of 28×28", "2 whole"]);
    }
}

#[test]
fn idx_claim_over_the_decompression_limit_is_refused_before_reading() {
    let dir = TempDir::new("idx-huge");
    let mut bytes = idx_header(0x803, &[4_000_000_000, 4096, 4096]);
    bytes.extend([1, 2, 3]);
    let path = dir.write("huge.gz", &gzip(&bytes));
    let e = error(Dataset::open(&format!("idx:{}", path.display())));
    assert_mentions(&e, &["huge.gz", "MAX_DECOMPRESSED_BYTES"]);
}

#[test]
fn idx_gzip_bomb_is_read_only_as_far_as_the_header_claims() {
    // A 1×1×1 header followed by 256 MiB of zeros (compressed: a few hundred KB).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&idx_header(0x803, &[1, 1, 1])).unwrap();
    e.write_all(&[5]).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let dir = TempDir::new("idx-bomb");
    let path = dir.write("bomb.gz", &e.finish().unwrap());
    let started = std::time::Instant::now();
    let message = error(Dataset::open(&format!("idx:{}", path.display())));
    assert_mentions(&message, &["bomb.gz", "oversized", "1 images of 1×1", "more than 17"]);
    // Stopping after 18 bytes takes microseconds; inflating 256 MiB takes far longer.
    assert!(started.elapsed().as_millis() < 200, "took {:?}", started.elapsed());
}

#[test]
fn idx_sides_over_the_limit_and_empty_sets_are_errors() {
    let dir = TempDir::new("idx-side");
    let mut bytes = idx_header(0x803, &[1, 1, 100_000]);
    bytes.extend(vec![0u8; 100_000]);
    let path = dir.write("wide", &bytes);
    assert_mentions(&error(Dataset::open(&format!("idx:{}", path.display()))), &["wide", "100000", "MAX_IMAGE_SIDE"]);
    let path = dir.write("none", &idx_header(0x803, &[0, 28, 28]));
    assert_mentions(&error(Dataset::open(&format!("idx:{}", path.display()))), &["none", "no images"]);
}

#[test]
fn cifar_bad_files_name_the_file_and_offset() {
    let dir = TempDir::new("cifar");
    let empty = dir.write("empty.bin", &[]);
    assert_mentions(&error(Dataset::open(&format!("cifar10:{}", empty.display()))), &["empty.bin", "empty file", "3073"]);
    let mut record = vec![25u8, 3];
    record.extend(vec![0u8; 3072]);
    let coarse = dir.write("coarse.bin", &record);
    assert_mentions(
        &error(Dataset::open(&format!("cifar100:{}", coarse.display()))),
        &["coarse.bin", "coarse label 25", "offset 0", "< 20"],
    );
}

#[test]
fn csv_side_over_the_limit_is_refused() {
    let dir = TempDir::new("csv");
    let side = 4097usize;
    let mut row = "0,".repeat(side * side);
    row.push_str("1\n");
    let path = dir.write("wide.csv", row.as_bytes());
    assert_mentions(&error(Dataset::open(&format!("csv:{}", path.display()))), &["wide.csv", "line 1", "4097", "MAX_IMAGE_SIDE"]);
}

#[test]
fn csv_column_counts_are_checked_exactly() {
    // 2 columns is a 1×1 image and a label; 3 is no square; 17 = 4² + 1.
    let dir = TempDir::new("csv-columns");
    let open = |text: &str| Dataset::open(&format!("csv:{}", dir.write("x.csv", text.as_bytes()).display()));
    let set = open("9,4\n").unwrap();
    assert_eq!((set.len(), set.labels()), (1, Some(&[4][..])));
    let set = open(&format!("{}7\n", "1,".repeat(16))).unwrap();
    assert_eq!(set.image(0).unwrap().width, 4);
    assert_mentions(&error(open("1,2,3\n")), &["x.csv", "line 1", "3 columns"]);
    assert_mentions(&error(open("1\n")), &["x.csv", "line 1", "1 columns"]);
}

#[test]
fn device_files_are_refused_not_read_forever() {
    for spec in ["csv:/dev/zero", "idx:/dev/zero", "cifar10:/dev/zero"] {
        assert_mentions(&error(Dataset::open(spec)), &["/dev/zero", "not a regular file"]);
    }
}

#[test]
fn png_claiming_a_huge_size_is_an_error_naming_the_file() {
    let dir = TempDir::new("png");
    std::fs::create_dir_all(dir.0.join("flat")).unwrap();
    // A real 4097×1 image (one row), over MAX_IMAGE_SIDE.
    let mut row = vec![0u8];
    row.extend(vec![9u8; 4097]);
    dir.write("flat/wide.png", &png(4097, 1, &row));
    // A header claiming 100000×100000 with almost no data.
    dir.write("flat/giant.png", &png(100_000, 100_000, &[0; 16]));
    let set = Dataset::open(&format!("folder:{}", dir.0.join("flat").display())).unwrap();
    assert_eq!(set.len(), 2);
    let giant = error(set.image(0));
    assert_mentions(&giant, &["giant.png", "4096"]);
    let wide = error(set.image(1));
    assert_mentions(&wide, &["wide.png", "4096"]);
}

// ---- Spec strings ---------------------------------------------------------------------------

#[test]
fn deeply_nested_specs_are_refused_not_a_stack_overflow() {
    for spec in [
        format!("{}idx:x", "corrupt:invert:1:".repeat(100_000)),
        format!("{}idx:x", "outliers:".repeat(100_000)),
        format!("idx:x{}", "[0:1]".repeat(100_000)),
    ] {
        let e = error(Dataset::open(&spec));
        assert_mentions(&e, &["MAX_SPEC_DEPTH"]);
    }
}

#[test]
fn bad_spec_numbers_are_errors() {
    let dir = TempDir::new("spec");
    let mut bytes = idx_header(0x803, &[3, 2, 2]);
    bytes.extend([0u8; 12]);
    let path = dir.write("m", &bytes);
    let m = path.display().to_string();
    for (spec, parts) in [
        (format!("idx:{m}[0:99999999999999999999999]"), &["too large"][..]),
        (format!("idx:{m}[18446744073709551615:18446744073709551615]"), &["empty"][..]),
        (format!("idx:{m}[-1:2]"), &["`-1`"][..]),
        (format!("idx:{m}[0:2:0]"), &["step 0"][..]),
        (format!("idx:{m}[0:3:18446744073709551615]"), &[][..]),
        (format!("corrupt:invert:0:idx:{m}"), &["severity `0`"][..]),
        (format!("corrupt:invert:6:idx:{m}"), &["severity `6`"][..]),
        (format!("corrupt:invert:256:idx:{m}"), &["severity `256`"][..]),
        (format!("corrupt:nope:1:idx:{m}"), &["unknown corruption"][..]),
        (format!("outliers:99999999999999999999:idx:{m}"), &["64 bits"][..]),
        ("idx:".to_string(), &["needs a path"][..]),
    ] {
        let result = Dataset::open(&spec);
        if parts.is_empty() {
            // A step past the end takes the first sample only.
            assert_eq!(result.unwrap().len(), 1);
            continue;
        }
        assert_mentions(&error(result), parts);
    }
}

// ---- 3. Loader ------------------------------------------------------------------------------

#[test]
fn absurd_thread_counts_are_an_error() {
    let set = Dataset::from_images("t", vec![gray(2, 2); 3], None);
    let t = Transform::parse("gray2rgb").unwrap();
    let mut it = batches(&set, &t, None, 1, 1_000_000);
    assert_mentions(&error(it.next().unwrap()), &["1000000", "MAX_THREADS"]);
}

// ---- 4. Configs -----------------------------------------------------------------------------

const GOOD: &str = r#"
preprocessing = "fmnist"
batch = 8
[[models]]
path = "w.safetensors"
[profile]
data = "idx:a"
[id]
test = "idx:b"
[[ood]]
name = "one"
group = "near"
data = "csv:c"
[[ood]]
name = "two"
group = "far"
data = "csv:d"
"#;

fn config_error(dir: &TempDir, text: &str) -> String {
    let path = dir.write("bad.toml", text.as_bytes());
    let e = error(EvalConfig::load(&path));
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    e
}

#[test]
fn config_checks_everything_the_text_alone_can_tell() {
    let dir = TempDir::new("config");
    let path = dir.write("good.toml", GOOD.as_bytes());
    EvalConfig::load(&path).unwrap();
    for (from, to, parts) in [
        ("batch = 8", "batch = 100000000", &["batch", "MAX_BATCH"][..]),
        ("batch = 8", "batch = 0", &["batch must be at least 1"][..]),
        ("data = \"csv:d\"", "data = \"bogus:d\"", &["ood[1].data", "unknown kind `bogus`"][..]),
        ("data = \"csv:c\"", "data = \"corrupt:invert:9:csv:c\"", &["ood[0].data", "severity"][..]),
        ("data = \"idx:a\"", "data = \"idx:a[5:1]\"", &["profile.data", "empty"][..]),
        ("data = \"idx:a\"", "data = \"idx:a\"\nsamples = 0", &["profile.samples"][..]),
        ("data = \"idx:a\"", "data = \"idx:a\"\nsamples = 1000000000000", &["profile.samples", "MAX_SAMPLES"][..]),
        ("test = \"idx:b\"", "test = \"idx:b\"\nval = \"outliers:idx:b[x:]\"", &["id.val", "`x`"][..]),
        ("preprocessing = \"fmnist\"", "preprocessing = \"pad:100000\"", &["preprocessing", "MAX_IMAGE_SIDE"][..]),
        ("preprocessing = \"fmnist\"", "preprocessing = \"resize:0\"", &["preprocessing", "positive"][..]),
        ("path = \"w.safetensors\"", "path = \"\"", &["models[0].path"][..]),
    ] {
        assert!(GOOD.contains(from), "{from}");
        let e = config_error(&dir, &GOOD.replacen(from, to, 1));
        assert_mentions(&e, parts);
    }
    let e = config_error(&dir, &format!("{GOOD}\n[nac]\nlayers = []\n"));
    assert_mentions(&e, &["nac.layers"]);
    let e = config_error(&dir, &format!("{GOOD}\n[nac]\nparams = [\"avgpool:1/2/3\", \"x\"]\n"));
    assert_mentions(&e, &["nac.params[1]"]);
}

#[test]
fn cli_eval_of_a_bad_config_exits_1_naming_the_field() {
    let dir = TempDir::new("cli");
    let path = dir.write("bad.toml", GOOD.replacen("data = \"csv:d\"", "data = \"csv:d[0:1:0]\"", 1).as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nac"))
        .args(["eval", path.to_str().unwrap()])
        .env("NODEVICE_SELECT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_mentions(&stderr, &["bad.toml", "ood[1].data", "step 0"]);
}

// ---- Entry points added with these checks (not in the parent commit) -------------------------
// NEW-API: everything below uses functions this hardening added.

mod new_api {
    use super::*;

    #[test]
    fn output_size_gives_the_error_apply_gives_and_agrees_otherwise() {
        let t = Transform::parse("pad:100,gray2rgb").unwrap();
        let image = gray(4000, 2);
        assert_eq!(error(t.output_size(&image)), error(t.apply(&image)));
        let t = Transform::parse("resize:4096,gray2rgb").unwrap();
        assert_mentions(&error(t.output_size(&gray(4000, 1))), &["resize:4096", "16384000"]);
        let huge = Image { width: u32::MAX, height: u32::MAX, channels: 3, pixels: vec![] };
        assert!(t.output_size(&huge).is_err());
        let t = Transform::parse("resize:7,pad:3,center_crop:9x11,gray2rgb").unwrap();
        for image in [gray(1, 30), gray(30, 1), gray(5, 5)] {
            let (h, w) = t.output_size(&image).unwrap();
            assert_eq!(t.apply(&image).unwrap().len(), 3 * h as usize * w as usize);
        }
    }

    #[test]
    fn check_spec_parses_without_opening_files() {
        Dataset::check_spec("corrupt:gaussian_blur:3:idx:no/such/file[0:5:2]").unwrap();
        Dataset::check_spec("outliers:7:folder:/nowhere[::3]").unwrap();
        for (spec, part) in [
            ("idx:x[0:99999999999999999999999]", "too large"),
            ("idx:x[5:2]", "empty"),
            ("corrupt:invert:0:idx:x", "severity `0`"),
            ("corrupt:haze:1:idx:x", "unknown corruption"),
            ("outliers:99999999999999999999:idx:x", "64 bits"),
            ("nope:x", "unknown kind"),
            ("csv:", "needs a path"),
            ("idx:x]", "no `[`"),
        ] {
            assert_mentions(&error(Dataset::check_spec(spec)), &[spec, part]);
        }
        let deep = format!("{}idx:x", "outliers:".repeat(1000));
        assert_mentions(&error(Dataset::check_spec(&deep)), &["MAX_SPEC_DEPTH"]);
    }

    #[test]
    fn byte_entry_points_match_the_file_readers() {
        let mut idx = idx_header(0x803, &[2, 2, 3]);
        idx.extend(0..12u8);
        let mut labels = idx_header(0x801, &[2]);
        labels.extend([4, 1]);
        let set = Dataset::from_idx_bytes(&gzip(&idx), Some(&labels)).unwrap();
        assert_eq!((set.len(), set.labels()), (2, Some(&[4, 1][..])));
        assert_eq!(set.image(1).unwrap().pixels, (6..12).collect::<Vec<u8>>());
        let mut wrong = idx_header(0x801, &[3]);
        wrong.extend([0, 0, 0]);
        assert_mentions(&error(Dataset::from_idx_bytes(&idx, Some(&wrong))), &["3 labels for the 2 images"]);
        let set = Dataset::from_csv_bytes(&gzip(b"p,q,r\n1,2,3,4,5\n")).unwrap();
        assert_eq!((set.len(), set.labels()), (1, Some(&[5][..])));
        let mut rec = vec![7u8];
        rec.extend(vec![1u8; 3072]);
        assert_eq!(Dataset::from_cifar_bytes(&rec, false).unwrap().labels(), Some(&[7][..]));
        let mut row = vec![0u8];
        row.extend(vec![9u8; 4097]);
        assert_mentions(&error(nac::data::decode_image_bytes("w.png", &png(4097, 1, &row))), &["w.png", "4096"]);
        let image = nac::data::decode_image_bytes("ok.png", &png(2, 1, &[0, 5, 6])).unwrap();
        assert_eq!((image.width, image.height, image.pixels), (2, 1, vec![5, 6]));
    }

    #[test]
    fn eval_config_parse_names_the_origin_and_field() {
        let e = error(EvalConfig::parse(&GOOD.replacen("batch = 8", "batch = 0", 1), "x.toml"));
        assert_mentions(&e, &["x.toml", "batch"]);
        EvalConfig::parse(GOOD, "x.toml").unwrap();
    }

    // ---- Fuzzing regressions --------------------------------------------------------------------

    /// The inputs of `tests/fuzz-regressions/<target>/`, if any.
    fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions").join(target);
        let mut files: Vec<_> =
            std::fs::read_dir(&dir).map(|entries| entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect()).unwrap_or_default();
        files.sort();
        files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
    }

    #[test]
    fn fuzz_regressions_replay_without_panics() {
        let mut replayed = 0;
        // The dataset, transform and config targets' own bodies (`fuzz/inputs.rs`).
        let targets: [FuzzTarget; 6] = [
            ("idx", fuzz_inputs::idx),
            ("cifar", fuzz_inputs::cifar),
            ("csv", fuzz_inputs::csv),
            ("images", fuzz_inputs::images),
            ("transform", fuzz_inputs::transform),
            ("eval_config", fuzz_inputs::eval_config),
        ];
        for (target, run) in targets {
            for (path, data) in regressions(target) {
                eprintln!("{target}: {}", path.display());
                run(&data);
                replayed += 1;
            }
        }
        for (path, data) in regressions("spec") {
            eprintln!("spec: {}", path.display());
            let text = String::from_utf8_lossy(&data);
            let _ = Dataset::check_spec(&text);
            if !text.contains('/') && !text.contains("..") {
                // Relative to the test's folder: nothing there, so open fails after parsing.
                let _ = Dataset::open(&format!("{text}"));
            }
            replayed += 1;
        }
        eprintln!("{replayed} fuzzing regressions replayed");
    }
}

/// A `.npy` of uint8 with this shape and these data bytes (which need not match it).
fn npy(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = nac::npy::header_bytes(nac::npy::NpyDtype::U8, shape);
    out.extend(data);
    out
}

#[test]
fn npy_specs_with_hostile_shapes_are_errors() {
    let dir = TempDir::new("npy");
    for (name, shape, data, parts) in [
        ("overflow.npy", &[4294967296, 4294967296, 4294967296][..], vec![0u8; 10], &["overflow.npy"][..]),
        ("claim.npy", &[1000000000, 28, 28], vec![0u8; 784], &["claim.npy"][..]),
        ("wide.npy", &[1, 1, 5000], vec![0u8; 5000], &["wide.npy", "MAX_IMAGE_SIDE"][..]),
        ("rgba.npy", &[1, 2, 2, 4], vec![0u8; 16], &["rgba.npy", "C = 1 or 3"][..]),
        ("empty.npy", &[0, 28, 28], vec![], &["empty.npy"][..]),
        ("flat.npy", &[3, 0, 2], vec![], &["flat.npy", "empty"][..]),
    ] {
        let path = dir.write(name, &npy(shape, &data));
        let e = error(Dataset::open(&format!("npy:{}", path.display())));
        assert_mentions(&e, parts);
    }
    let images = dir.write("ok.npy", &npy(&[2, 1, 1], &[3, 4]));
    let labels = dir.write("labels.npy", &npy(&[3], &[0, 1, 2]));
    let e = error(Dataset::open(&format!("npy:{}:{}", images.display(), labels.display())));
    assert_mentions(&e, &["labels.npy", "3 labels for the 2 images"]);
}
