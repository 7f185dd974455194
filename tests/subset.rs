//! The official class-balanced profiling subset against NumPy goldens
//! (`tools/subset_reference.py` → `tests/golden/balanced_subsets.json`): the same label lists,
//! sizes and seeds choose exactly the same samples, including when a class is smaller than
//! `n / C`; the MT19937 stream equals NumPy's `RandomState`.

use nac::nac::class_balanced_subset;
use nac::rng::Mt19937;
use serde_json::Value;

/// The label lists of the golden script, built from the same formulas.
fn labels(kind: &str, count: usize, classes: usize) -> Vec<usize> {
    match kind {
        "mod" => (0..count).map(|i| i % classes).collect(),
        "skewed" => (0..count)
            .map(|i| {
                let v = ((i as u64 * 2654435761) % 1000) as usize * (classes * (classes + 1) / 2) / 1000;
                (0..classes).find(|&c| v < (c + 1) * (c + 2) / 2).unwrap()
            })
            .collect(),
        other => panic!("unknown label kind {other}"),
    }
}

fn goldens() -> Value {
    serde_json::from_str(include_str!("golden/balanced_subsets.json")).unwrap()
}

#[test]
fn mt19937_streams_equal_numpy_random_state() {
    for stream in goldens()["streams"].as_array().unwrap() {
        let mut rng = Mt19937::new(stream["seed"].as_u64().unwrap() as u32);
        let want: Vec<u64> = stream["first"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let got: Vec<u64> = (0..want.len()).map(|_| rng.next_u32() as u64).collect();
        assert_eq!(got, want, "seed {}", stream["seed"]);
    }
}

#[test]
fn balanced_subsets_equal_the_official_code() {
    let cases = goldens()["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 8);
    for case in &cases {
        let (count, classes) = (case["count"].as_u64().unwrap() as usize, case["classes"].as_u64().unwrap() as usize);
        let labels = labels(case["labels"].as_str().unwrap(), count, classes);
        let sizes: Vec<usize> = (0..classes).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
        let want_sizes: Vec<usize> = case["class_sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(sizes, want_sizes, "the label formula must match the script's");
        let (n, seed) = (case["n"].as_u64().unwrap() as usize, case["seed"].as_u64().unwrap());
        let want: Vec<usize> = case["chosen"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(
            class_balanced_subset(&labels, classes, n, seed).unwrap(),
            want,
            "{} labels over {classes} classes, n {n}, seed {seed}",
            count
        );
    }
}
