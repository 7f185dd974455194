//! `nac export`: a dataset spec's images as `.npy` for other tools — uint8 as stored, or
//! float32 N×3×H×W after a preprocessing, equal to what the loader feeds the network — with
//! the labels beside them; the balanced subset and shards select the same samples as
//! `nac profile` does.

mod common;

use common::{nac_ok as nac, s};

use nac::data::{self, Dataset, Transform};
use nac::nac::class_balanced_subset;
use nac::npy::{NpyArray, NpyDtype};

#[test]
fn export_writes_what_the_loader_reads() {
    let dir = common::temp_dir("export");
    let n = 17;
    let images: Vec<u8> = (0..n * 64).map(|i| ((i * 37 + i / 64 * 5) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 2 % 3) as u8).collect();
    let path = dir.join("set-images-idx3-ubyte");
    common::write_idx(&path, &images, n, &labels);
    let spec = format!("idx:{}", path.display());

    let raw = dir.join("raw.npy");
    nac(&["export", "--data", &spec, "--out", s(&raw)]);
    let array = NpyArray::load(&raw).unwrap();
    assert_eq!((array.dtype, array.shape.clone()), (NpyDtype::U8, vec![n, 8, 8, 1]));
    assert_eq!(array.bytes, images);
    let got_labels = NpyArray::load(&dir.join("raw.labels.npy")).unwrap().to_labels(&raw).unwrap();
    assert_eq!(got_labels, labels.iter().map(|&l| l as usize).collect::<Vec<_>>());

    let float = dir.join("float.npy");
    nac(&["export", "--data", &spec, "--preprocessing", "pad:2,gray2rgb,normalize:0.5:0.25", "--batch", "4", "--out", s(&float)]);
    let transform = Transform::parse("pad:2,gray2rgb,normalize:0.5:0.25").unwrap();
    let want = data::load_all(&Dataset::open(&spec).unwrap(), &transform, None, 2).unwrap();
    let array = NpyArray::load(&float).unwrap();
    assert_eq!(array.shape, want.shape.to_vec());
    assert_eq!(array.to_f32(&float).unwrap(), want.input);

    // The balanced subset's shard 1 of 3: the samples `nac profile --balanced 9 --shard 1/3` takes.
    let part = dir.join("part.npy");
    let labels_out = dir.join("part-labels.npy");
    nac(&["export", "--data", &spec, "--balanced", "9", "--shard", "1/3", "--out", s(&part), "--labels-out", s(&labels_out)]);
    let all: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let chosen = class_balanced_subset(&all, 3, 9, 1).unwrap();
    let want: Vec<u8> = chosen[3..6].iter().flat_map(|&i| images[i * 64..(i + 1) * 64].to_vec()).collect();
    assert_eq!(NpyArray::load(&part).unwrap().bytes, want);
    let got = NpyArray::load(&labels_out).unwrap().to_labels(&labels_out).unwrap();
    assert_eq!(got, chosen[3..6].iter().map(|&i| all[i]).collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}
