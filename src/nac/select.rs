//! The official profiling subset (spec §3), drawn exactly as the official code's `TrainSubset`
//! (`openood/postprocessors/nac/utils.py`, `balanced=True, valid_num=n`) draws it: per class,
//! present in order of first appearance, `np.random.RandomState(seed).shuffle` of the class's
//! indices in dataset order (a fresh generator per class), then the first
//! `min(⌊n / C⌋, smallest class)` of them, `C` being the number of classes present. Every
//! selected sample is used, correctly classified or not.

use crate::error::{Error, Result};
use crate::rng::Mt19937;

/// The official seed (`TrainSubset(rand_seed=1)`).
pub const OFFICIAL_SEED: u32 = 1;

/// Indices (ascending) of the official class-balanced subset of `total` samples. `classes` is
/// the model's class count: a label at or above it is an error.
pub fn class_balanced_subset(labels: &[usize], classes: usize, total: usize, seed: u64) -> Result<Vec<usize>> {
    if let Some(i) = labels.iter().position(|&l| l >= classes) {
        return Err(Error::Input(format!("label {i} is {}, but there are {classes} classes", labels[i])));
    }
    let seed = u32::try_from(seed).map_err(|_| Error::Input(format!("seed {seed}: NumPy's RandomState takes seeds below 2^32")))?;
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut slot = vec![usize::MAX; classes];
    for (i, &label) in labels.iter().enumerate() {
        if slot[label] == usize::MAX {
            slot[label] = members.len();
            members.push(Vec::new());
        }
        members[slot[label]].push(i);
    }
    let smallest = members.iter().map(Vec::len).min().unwrap_or(0);
    let per_class = (total / members.len().max(1)).min(smallest);
    if per_class == 0 {
        return Err(Error::Input(format!(
            "a class-balanced subset of {total} samples over the {} classes present is empty",
            members.len()
        )));
    }
    let mut chosen = Vec::with_capacity(per_class * members.len());
    for class in &mut members {
        Mt19937::new(seed).shuffle(class);
        chosen.extend_from_slice(&class[..per_class]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_checked_and_capped_by_the_smallest_class() {
        let labels: Vec<usize> = (0..100).map(|i| (i * 7) % 3).collect();
        let a = class_balanced_subset(&labels, 3, 31, 5).unwrap();
        assert_eq!(a.len(), 30);
        for c in 0..3 {
            assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 10);
        }
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, class_balanced_subset(&labels, 3, 31, 6).unwrap());
        assert!(class_balanced_subset(&labels, 3, 2, 0).is_err());
        // 300 / 3 = 100 per class, but class 1 has 33: every class gives 33 (as the official code).
        assert_eq!(class_balanced_subset(&labels, 3, 300, 0).unwrap().len(), 99);
        assert!(class_balanced_subset(&[0, 1, 5], 2, 2, 0).unwrap_err().to_string().contains("label 2"));
        assert!(class_balanced_subset(&labels, 3, 30, 1 << 32).unwrap_err().to_string().contains("2^32"));
    }
}
