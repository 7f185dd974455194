//! Sharded runs: `--shard i/n` profiles merged equal one run count for count (with and without
//! the balanced subset), score shards concatenate into the one-run CSV, predict shards into
//! its logits, and a merge with a missing, repeated or foreign shard is an error naming it.

mod common;

use common::{nac, nac_ok as ok};

use std::path::{Path, PathBuf};

use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::ProfileData;
use nac::npy::NpyArray;

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

struct Setup {
    dir: PathBuf,
    model: String,
    spec: String,
}

fn setup(tag: &str) -> Setup {
    let dir = common::temp_dir(tag);
    let model = dir.join("wrn.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 6).unwrap().save(&model, StorageDtype::F32).unwrap();
    let n = 22;
    let images: Vec<u8> = (0..n * 64).map(|i| ((i * 41 + i / 64 * 13) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 3) as u8).collect();
    let path = dir.join("set-images-idx3-ubyte");
    common::write_idx(&path, &images, n, &labels);
    Setup { model: model.display().to_string(), spec: format!("idx:{}", path.display()), dir }
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn merged_shards_equal_one_run() {
    let s = setup("shards");
    let base = format!("profile --model {} --data {} --preprocessing pad:2,gray2rgb --layers avgpool,block2 --batch 3", s.model, s.spec);
    for balanced in ["", " --balanced 12"] {
        let whole = file(&s.dir, "whole.safetensors");
        ok(&args(&format!("{base}{balanced} --out {whole}")));
        let parts: Vec<String> = (0..4).map(|i| file(&s.dir, &format!("part{i}.safetensors"))).collect();
        for (i, part) in parts.iter().enumerate() {
            ok(&args(&format!("{base}{balanced} --shard {i}/4 --out {part}")));
        }
        let merged = file(&s.dir, "merged.safetensors");
        let mut merge = args(&format!("merge --out {merged}"));
        merge.extend(parts.iter().rev().cloned());
        ok(&merge);
        let (a, b) = (ProfileData::load(Path::new(&whole)).unwrap(), ProfileData::load(Path::new(&merged)).unwrap());
        assert_eq!(a.counts, b.counts, "balanced `{balanced}`");
        assert_eq!(a.header, b.header);
        assert_eq!(b.header.samples, if balanced.is_empty() { 22 } else { 12 });
        // The header records the source samples counted, as index ranges.
        let counted: u64 = b.header.sources.iter().map(|r| r[1] - r[0]).sum();
        assert_eq!(counted, b.header.samples);
        if balanced.is_empty() {
            assert_eq!(b.header.sources, vec![[0, 22]]);
        }

        let (success, err) = nac(&[args(&format!("merge --out {merged}")), parts[..3].to_vec()].concat());
        assert!(!success && err.contains("shard 3/4 missing"), "{err}");
        let (success, err) =
            nac(&[args(&format!("merge --out {merged}")), vec![parts[0].clone(), parts[1].clone(), parts[1].clone(), parts[3].clone()]]
                .concat());
        assert!(!success && err.contains("shard 1/4 is given twice") && err.contains("part1.safetensors"), "{err}");
        let (success, err) = nac(&[args(&format!("merge --out {merged}")), vec![whole.clone(), parts[0].clone()]].concat());
        assert!(!success && err.contains("whole.safetensors is not a shard"), "{err}");
    }
    let (success, err) = nac(&args(&format!("{base} --shard 4/4 --out {}", file(&s.dir, "x.safetensors"))));
    assert!(!success && err.contains("--shard `4/4`"), "{err}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn score_and_predict_shards_concatenate_into_one_run() {
    let s = setup("shards-score");
    let profile = file(&s.dir, "p.safetensors");
    ok(&args(&format!("profile --model {} --data {} --preprocessing pad:2,gray2rgb --out {profile}", s.model, s.spec)));
    let score = format!("score --model {} --profile {profile} --data {} --preprocessing pad:2,gray2rgb --batch 4", s.model, s.spec);
    let whole = file(&s.dir, "whole.csv");
    ok(&args(&format!("{score} --out {whole}")));
    let mut joined = String::new();
    for i in 0..3 {
        let part = file(&s.dir, &format!("part{i}.csv"));
        ok(&args(&format!("{score} --shard {i}/3 --out {part}")));
        joined.push_str(&std::fs::read_to_string(&part).unwrap());
    }
    assert_eq!(joined, std::fs::read_to_string(&whole).unwrap());

    let predict = format!("predict --model {} --data {} --preprocessing pad:2,gray2rgb", s.model, s.spec);
    let whole = file(&s.dir, "whole.npy");
    ok(&args(&format!("{predict} --out {whole}")));
    let mut logits = Vec::new();
    for i in 0..3 {
        let part = file(&s.dir, &format!("part{i}.npy"));
        ok(&args(&format!("{predict} --shard {i}/3 --out {part}")));
        logits.extend(NpyArray::load(Path::new(&part)).unwrap().to_f32(Path::new(&part)).unwrap());
    }
    assert_eq!(logits, NpyArray::load(Path::new(&whole)).unwrap().to_f32(Path::new(&whole)).unwrap());
    std::fs::remove_dir_all(&s.dir).unwrap();
}
