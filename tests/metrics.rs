//! OOD metrics against scikit-learn (tests/golden/metrics.json, written by
//! tools/metrics_reference.py) and hand-checked cases.

use nac::eval::metrics::{accuracy, auroc, id_only_threshold, mean_std, ood_metrics, roc_curve};

#[derive(serde::Deserialize)]
struct Golden {
    sklearn: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    id: Vec<f32>,
    ood: Vec<f32>,
    auroc: f64,
    fpr95: f64,
    aupr_in: f64,
    aupr_out: f64,
    roc_fpr: Option<Vec<f64>>,
    roc_tpr: Option<Vec<f64>>,
}

fn golden() -> Golden {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn golden_metrics_match_sklearn() {
    let g = golden();
    assert!(g.cases.len() >= 12, "sklearn {}: {} cases", g.sklearn, g.cases.len());
    for c in &g.cases {
        let m = ood_metrics(&c.id, &c.ood).unwrap();
        for (what, got, want) in [
            ("auroc", m.auroc, c.auroc),
            ("fpr95", m.fpr95, c.fpr95),
            ("aupr_in", m.aupr_in, c.aupr_in),
            ("aupr_out", m.aupr_out, c.aupr_out),
        ] {
            assert!((got - want).abs() <= 1e-6, "{} {what}: {got} vs sklearn {} {want}", c.name, g.sklearn);
        }
        let fast = auroc(&c.id, &c.ood);
        assert!((fast - m.auroc).abs() <= 1e-12, "{}: fast auroc {fast} vs {}", c.name, m.auroc);
    }
}

#[test]
fn golden_roc_curves_match_sklearn() {
    let g = golden();
    let mut checked = 0;
    for c in g.cases.iter().filter(|c| c.roc_fpr.is_some()) {
        let (fpr, tpr) = roc_curve(&c.id, &c.ood);
        assert_eq!(&fpr, c.roc_fpr.as_ref().unwrap(), "{} fpr", c.name);
        assert_eq!(&tpr, c.roc_tpr.as_ref().unwrap(), "{} tpr", c.name);
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn separated_and_inverted() {
    let id: Vec<f32> = (0..50).map(|i| 1.0 + i as f32).collect();
    let ood: Vec<f32> = (0..30).map(|i| -(i as f32)).collect();
    let m = ood_metrics(&id, &ood).unwrap();
    assert_eq!((m.auroc, m.fpr95), (1.0, 0.0));
    assert!((m.aupr_in - 1.0).abs() < 1e-12 && (m.aupr_out - 1.0).abs() < 1e-12, "{m:?}");
    assert_eq!(auroc(&id, &ood), 1.0);
    let m = ood_metrics(&ood, &id).unwrap();
    assert_eq!((m.auroc, m.fpr95), (0.0, 1.0));
    assert_eq!(auroc(&ood, &id), 0.0);
    // all tied: chance level, and −0.0 ties with +0.0
    assert_eq!(auroc(&[0.0, -0.0], &[-0.0, 0.0, 0.0]), 0.5);
    assert_eq!(ood_metrics(&[0.0, -0.0], &[-0.0]).unwrap().auroc, 0.5);
}

#[test]
fn non_finite_and_empty_sets_are_errors() {
    let err = ood_metrics(&[0.1, 0.2], &[0.3, f32::NAN, 0.0]).unwrap_err().to_string();
    assert!(err.contains("OOD") && err.contains("score 1") && err.contains("NaN"), "{err}");
    let err = ood_metrics(&[0.1, 0.2, f32::INFINITY], &[0.3]).unwrap_err().to_string();
    assert!(err.contains("ID score 2") && err.contains("inf"), "{err}");
    let err = ood_metrics(&[], &[0.3]).unwrap_err().to_string();
    assert!(err.contains("ID") && err.contains("empty"), "{err}");
    assert!(ood_metrics(&[0.3], &[]).unwrap_err().to_string().contains("OOD score set is empty"));
}

#[test]
fn id_only_thresholds() {
    let val: Vec<f32> = (1..=100).map(|i| i as f32).collect();
    let test: Vec<f32> = (1..=200).map(|i| i as f32 / 2.0).collect(); // 0.5, 1.0, ..., 100
    let ood = [0.0, 3.0, 5.5, 6.0, 7.0, 50.0, 200.0, -1.0];
    let t = id_only_threshold(&val, &test, &ood, 0.05);
    // 5 of 100 validation scores (1..=5) lie below 6
    assert_eq!(t.threshold, 6.0);
    assert_eq!(t.id_test_fpr, 11.0 / 200.0); // 0.5 ..= 5.5
    assert_eq!(t.ood_tpr, 4.0 / 8.0); // 0, 3, 5.5, -1
    let val_fpr = id_only_threshold(&val, &val, &ood, 0.05).id_test_fpr;
    assert!(val_fpr <= 0.05 && val_fpr == 0.05);
    let t = id_only_threshold(&val, &val, &ood, 0.01);
    assert_eq!((t.threshold, t.id_test_fpr), (2.0, 0.01));
    // q·n not an integer: rounds down, never above the target
    for n in [7usize, 33, 101, 999] {
        let v: Vec<f32> = (0..n).map(|i| (i * 7919 % n) as f32).collect();
        for q in [0.01, 0.05, 0.1, 0.5] {
            let t = id_only_threshold(&v, &v, &[], q);
            assert!(t.id_test_fpr <= q && t.id_test_fpr > q - 1.0 / n as f64, "n {n} q {q}: {t:?}");
            assert!(t.ood_tpr.is_nan());
        }
    }
    // ties at the threshold flag fewer, never more
    let tied = [1.0f32, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let t = id_only_threshold(&tied, &tied, &[], 0.2);
    assert_eq!((t.threshold, t.id_test_fpr), (1.0, 0.0));
    assert_eq!(id_only_threshold(&tied, &tied, &[], 1.0).id_test_fpr, 1.0);
}

#[test]
fn mean_std_and_accuracy() {
    assert_eq!(mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).0, 5.0);
    let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    assert!((m - 5.0).abs() < 1e-15 && (s - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
    assert_eq!(mean_std(&[3.5]), (3.5, 0.0));
    assert_eq!(mean_std(&[1.0, 2.0]), (1.5, 0.5f64.sqrt()));
    assert!(mean_std(&[]).0.is_nan());
    assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 0, 3, 0]), 0.5);
}
