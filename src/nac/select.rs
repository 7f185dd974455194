//! The official profiling subset (spec §3): `floor(n / C)` samples per class, each class
//! shuffled with a fixed seed; every selected sample is used, correctly classified or not.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Indices (ascending) of a class-balanced subset of `total` samples over `classes` classes.
/// Class `c` is shuffled by Fisher-Yates with `Rng::new(seed + c)` and its first `total / C`
/// samples are taken, so the choice is reproducible and independent across classes.
pub fn class_balanced_subset(labels: &[usize], classes: usize, total: usize, seed: u64) -> Result<Vec<usize>> {
    let per_class = total / classes.max(1);
    if classes == 0 || per_class == 0 {
        return Err(Error::Input(format!("a class-balanced subset of {total} samples over {classes} classes is empty")));
    }
    let mut chosen = Vec::with_capacity(per_class * classes);
    for c in 0..classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        if members.len() < per_class {
            return Err(Error::Input(format!(
                "class {c} has {} samples, fewer than the {per_class} a balanced subset of {total} needs",
                members.len()
            )));
        }
        let mut rng = Rng::new(seed.wrapping_add(c as u64));
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i + 1));
        }
        chosen.extend_from_slice(&members[..per_class]);
    }
    if let Some(i) = labels.iter().position(|&l| l >= classes) {
        return Err(Error::Input(format!("label {i} is {}, but there are {classes} classes", labels[i])));
    }
    chosen.sort_unstable();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_reproducible_and_checked() {
        let labels: Vec<usize> = (0..100).map(|i| (i * 7) % 3).collect();
        let a = class_balanced_subset(&labels, 3, 31, 5).unwrap();
        assert_eq!(a.len(), 30);
        for c in 0..3 {
            assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 10);
        }
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, class_balanced_subset(&labels, 3, 31, 5).unwrap());
        assert_ne!(a, class_balanced_subset(&labels, 3, 31, 6).unwrap());
        assert!(class_balanced_subset(&labels, 3, 2, 0).is_err());
        assert!(class_balanced_subset(&labels, 3, 300, 0).unwrap_err().to_string().contains("class 0"));
        assert!(class_balanced_subset(&[0, 1, 5], 2, 2, 0).unwrap_err().to_string().contains("label 2"));
    }
}
