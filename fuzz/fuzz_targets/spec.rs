//! Dataset spec text: `Dataset::check_spec` (the grammar alone), and for specs without `/` or
//! `..`, `Dataset::open` in a temporary folder of small valid files (m, l: IDX images and
//! labels; g: gzip IDX; v: CSV; c, test_batch.bin: CIFAR-10; h: CIFAR-100; n, nl: npy images
//! and labels; d: class folders of PNGs; e: a flat folder of PNGs), reading a few images.
//! What `check_spec` refuses, `open` must refuse too.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nac::data::Dataset;
use nac::npy::NpyDtype;

fn npy(dtype: NpyDtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = nac::npy::header_bytes(dtype, shape);
    out.extend(data);
    out
}

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nac-fuzz-spec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["d/a", "d/b", "e"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
        idx.extend((0..60u8).map(|i| i * 4));
        let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 3];
        labels.extend([1, 7, 2]);
        let cifar = |label_bytes: &[u8]| {
            let mut out = Vec::new();
            for k in 0..2u8 {
                out.extend(label_bytes);
                out.extend((0..3072u32).map(|p| (p as u8).wrapping_add(k)));
            }
            out
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx).unwrap();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("m", idx.clone()),
            ("l", labels),
            ("g", gz.finish().unwrap()),
            ("v", b"a,b,c,d,e\n1,2,3,4,7\n255,0,10,20,3\n".to_vec()),
            ("c", cifar(&[3])),
            ("test_batch.bin", cifar(&[9])),
            ("h", cifar(&[4, 42])),
            ("n", npy(NpyDtype::U8, &[2, 3, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])),
            ("nl", npy(NpyDtype::I64, &[2], &[1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])),
            ("d/a/x.png", include_bytes!("../seeds/images/gray.png").to_vec()),
            ("d/b/y.png", include_bytes!("../seeds/images/rgb.png").to_vec()),
            ("e/z.PNG", include_bytes!("../seeds/images/rgba.png").to_vec()),
            ("e/w.jpg", include_bytes!("../seeds/images/python.jpg").to_vec()),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        std::env::set_current_dir(&dir).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    folder();
    let checked = Dataset::check_spec(text);
    if text.contains('/') || text.contains("..") || text.contains('\0') || text.contains('~') {
        return;
    }
    match Dataset::open(text) {
        Ok(set) => {
            assert!(checked.is_ok(), "check_spec refused `{text}` but open accepted it");
            assert!(!set.is_empty());
            for i in [0, set.len() - 1] {
                set.image(i).unwrap().check().unwrap();
            }
            if let Some(l) = set.labels() {
                assert_eq!(l.len(), set.len());
            }
        }
        Err(_) => {}
    }
});
