//! `nac profile --data SPEC` and `nac score --data SPEC` stream a dataset through a
//! preprocessing: the result equals the same images preprocessed into an `.npy` and given with
//! `--input`, count for count and score for score, with or without the balanced subset.

mod common;

use common::{nac_ok as nac, s};

use nac::data::{self, Dataset, Transform};
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::ProfileData;
use nac::npy::NpyArray;

#[test]
fn streamed_sets_equal_preprocessed_arrays() {
    let dir = common::temp_dir("streaming");
    let model = dir.join("wrn.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 2).unwrap().save(&model, StorageDtype::F32).unwrap();
    let n = 23;
    let images: Vec<u8> = (0..n * 64).map(|i| ((i * 53 + i / 64 * 29) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 5 % 3) as u8).collect();
    let path = dir.join("set-images-idx3-ubyte");
    common::write_idx(&path, &images, n, &labels);
    let spec = format!("idx:{}", path.display());
    let preprocessing = "pad:2, gray2rgb,normalize:0.5:0.25";
    let transform = Transform::parse(preprocessing).unwrap();
    let batch = data::load_all(&Dataset::open(&spec).unwrap(), &transform, None, 2).unwrap();
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    NpyArray::from_f32(batch.shape.to_vec(), &batch.input).save(&x).unwrap();
    NpyArray::from_labels(batch.labels.as_ref().unwrap()).save(&y).unwrap();
    let canonical = transform.describe();
    let layers = ["--layers", "avgpool,block2,block1"];

    for balanced in [None, Some("9")] {
        let (streamed, arrayed) = (dir.join("streamed.safetensors"), dir.join("arrayed.safetensors"));
        let mut a =
            vec!["profile", "--model", s(&model), "--data", &spec, "--preprocessing", preprocessing, "--batch", "4", "--out", s(&streamed)];
        let mut b = vec!["profile", "--model", s(&model), "--input", s(&x), "--preprocessing", &canonical, "--out", s(&arrayed)];
        a.extend(layers);
        b.extend(layers);
        if let Some(count) = balanced {
            a.extend(["--balanced", count]);
            b.extend(["--balanced", count, "--labels", s(&y)]);
        }
        nac(&a);
        nac(&b);
        let (p, q) = (ProfileData::load(&streamed).unwrap(), ProfileData::load(&arrayed).unwrap());
        assert_eq!(p.header.preprocessing, canonical);
        assert_eq!(p.header.samples, if balanced.is_some() { 9 } else { n as u64 });
        assert_eq!(p.counts, q.counts, "balanced {balanced:?}");
        assert_eq!(p.header, q.header);
    }

    let profile = dir.join("streamed.safetensors");
    let (streamed, arrayed) = (dir.join("streamed.csv"), dir.join("arrayed.csv"));
    nac(&[
        "score",
        "--model",
        s(&model),
        "--profile",
        s(&profile),
        "--data",
        &spec,
        "--preprocessing",
        preprocessing,
        "--batch",
        "5",
        "--out",
        s(&streamed),
    ]);
    nac(&["score", "--model", s(&model), "--profile", s(&profile), "--input", s(&x), "--preprocessing", &canonical, "--out", s(&arrayed)]);
    let csv = std::fs::read_to_string(&streamed).unwrap();
    assert_eq!(csv.lines().count(), n + 1);
    assert_eq!(csv, std::fs::read_to_string(&arrayed).unwrap());

    let (success, err) = common::nac(&[
        "score",
        "--model",
        s(&model),
        "--profile",
        s(&profile),
        "--data",
        &spec,
        "--preprocessing",
        "pad:2,gray2rgb",
        "--out",
        s(&streamed),
    ]);
    assert!(!success && err.contains("was built with preprocessing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
