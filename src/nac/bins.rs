//! Bin edges for neuron states `s ∈ [0, 1]`, exactly as the official NAC code builds them
//! (float64), and f32 thresholds that reproduce its float64 comparisons for f32 states.
//!
//! The official code compares a float32 state against float64 edges. For an f32 `s` and an f64
//! edge `t`, `s ≥ t` holds exactly when `s ≥ T` with `T` the smallest f32 not below `t`, so a
//! kernel that compares against `T` in f32 assigns every state to the same bin as float64 does,
//! including states that lie exactly on an edge.

use crate::error::{Error, Result};
use crate::limits;

/// `M` edges `t_0 < … < t_{M−1}` defining `M − 1` half-open bins `[t_i, t_{i+1})`.
#[derive(Clone, Debug, PartialEq)]
pub struct BinEdges {
    /// The edges in float64, as the reference computes them.
    pub edges: Vec<f64>,
    /// `thresholds[i]` = the smallest f32 ≥ `edges[i]`.
    pub thresholds: Vec<f32>,
}

/// The smallest f32 that is not below `t`.
fn f32_ceiling(t: f64) -> f32 {
    let nearest = t as f32;
    if (nearest as f64) >= t {
        nearest
    } else {
        f32::from_bits(if nearest >= 0.0 { nearest.to_bits() + 1 } else { nearest.to_bits() - 1 })
    }
}

/// NumPy's `linspace(start, stop, n)` in float64 (`start + i·step`, last element exactly `stop`).
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

impl BinEdges {
    fn from_edges(edges: Vec<f64>) -> Self {
        let thresholds = edges.iter().map(|&t| f32_ceiling(t)).collect();
        BinEdges { edges, thresholds }
    }

    /// NAC-UE edges (spec §2): `M` even; `x = log_1000(linspace(1, √1000, M/2))` runs 0 → 0.5,
    /// edges `= x[..M/2−1] ++ reverse(1 − x)`, the last of those raised by 0.01 (to 1.01), then
    /// 1.2 appended. Dense around 0.5; the final bin `[1.01, 1.2)` is never hit.
    pub fn log_symmetric(m: usize) -> Result<Self> {
        Self::check_log_symmetric(m)?;
        let n = m / 2;
        let x: Vec<f64> = linspace(1.0, 1000f64.sqrt(), n).into_iter().map(|v| v.ln() / 1000f64.ln()).collect();
        let mut edges: Vec<f64> = x[..n - 1].to_vec();
        edges.extend(x.iter().rev().map(|v| 1.0 - v));
        *edges.last_mut().unwrap() += 0.01;
        edges.push(1.2);
        Ok(Self::from_edges(edges))
    }

    /// NAC-ME edges (spec §6): `linspace(0, 1, M)`, `M − 1` bins; a state of exactly 1.0 falls in
    /// no bin.
    pub fn uniform(m: usize) -> Result<Self> {
        Self::check_uniform(m)?;
        Ok(Self::from_edges(linspace(0.0, 1.0, m)))
    }

    /// Whether [`BinEdges::log_symmetric`] accepts `m`: even, at least 4, at most
    /// `MAX_BIN_EDGES`. Checked before anything is allocated for `m` edges.
    pub fn check_log_symmetric(m: usize) -> Result<()> {
        if m < 4 || !m.is_multiple_of(2) {
            return Err(Error::Input(format!("NAC-UE needs an even number of bin edges M ≥ 4, got M = {m}")));
        }
        limits::check("M (bin edges)", m, limits::MAX_BIN_EDGES, "MAX_BIN_EDGES")
    }

    /// Whether [`BinEdges::uniform`] accepts `m`: at least 2, at most `MAX_BIN_EDGES`.
    pub fn check_uniform(m: usize) -> Result<()> {
        if m < 2 {
            return Err(Error::Input(format!("uniform bins need at least 2 edges, got M = {m}")));
        }
        limits::check("M (bin edges)", m, limits::MAX_BIN_EDGES, "MAX_BIN_EDGES")
    }

    /// Number of bins, `M − 1`.
    pub fn bins(&self) -> usize {
        self.edges.len() - 1
    }

    /// The bin of an f32 state under the official float64 comparison, or `None` outside all bins.
    pub fn bin_of(&self, state: f32) -> Option<usize> {
        let s = state as f64;
        let above = self.edges.partition_point(|&t| t <= s);
        (above >= 1 && above < self.edges.len()).then(|| above - 1)
    }

    /// The same bin computed the way the kernels do: f32 comparisons against `thresholds`.
    pub fn bin_of_f32(&self, state: f32) -> Option<usize> {
        let above = self.thresholds.partition_point(|&t| t <= state);
        (above >= 1 && above < self.thresholds.len()).then(|| above - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_symmetric_edges_match_the_spec_for_m50() {
        let b = BinEdges::log_symmetric(50).unwrap();
        assert_eq!(b.edges.len(), 50);
        assert_eq!(b.bins(), 49);
        let rounded: Vec<f64> = b.edges.iter().map(|e| (e * 1000.0).round() / 1000.0).collect();
        assert_eq!(&rounded[..4], &[0.0, 0.119, 0.183, 0.228]);
        assert_eq!(rounded[23], 0.494);
        assert_eq!(b.edges[24], 0.5);
        assert_eq!(rounded[25], 0.506);
        assert_eq!(rounded[47], 0.881);
        assert!((b.edges[48] - 1.01).abs() < 1e-15 && b.edges[49] == 1.2);
        // Symmetric around 0.5 (before the +0.01 on the last inner edge).
        for i in 1..24 {
            assert!((b.edges[i] + b.edges[48 - i] - 1.0).abs() < 1e-12, "edge {i}");
        }
        assert!(b.edges.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn invalid_counts_are_errors() {
        assert!(BinEdges::log_symmetric(51).is_err());
        assert!(BinEdges::log_symmetric(2).is_err());
        assert!(BinEdges::uniform(1).is_err());
        assert!(BinEdges::log_symmetric(usize::MAX - 1).is_err(), "checked before allocating");
        assert!(BinEdges::uniform(usize::MAX).is_err(), "checked before allocating");
    }

    #[test]
    fn special_states_land_as_the_spec_says() {
        for m in [50, 500, 1000] {
            let b = BinEdges::log_symmetric(m).unwrap();
            assert_eq!(b.bin_of(0.0), Some(0));
            assert_eq!(b.bin_of(1.0), Some(m - 3), "1.0 falls in the bin ending at 1.01");
            assert_eq!(b.bin_of(0.5), Some(m / 2 - 1), "0.5 opens the bin [0.5, next)");
            assert_eq!(b.bin_of(-0.0), Some(0));
            assert_eq!(b.bin_of(f32::from_bits(1)), Some(0));
        }
        let u = BinEdges::uniform(50).unwrap();
        assert_eq!(u.bin_of(1.0), None, "NAC-ME: exactly 1.0 is in no bin");
        assert_eq!(u.bin_of(0.0), Some(0));
        assert_eq!(u.bin_of(-1e-30), None);
    }

    /// Around every edge (the f32 values just below, at and just above its threshold), the f32
    /// threshold comparison gives the float64 answer.
    #[test]
    fn f32_thresholds_reproduce_float64_comparisons_at_every_edge() {
        for b in [
            BinEdges::log_symmetric(50).unwrap(),
            BinEdges::log_symmetric(500).unwrap(),
            BinEdges::log_symmetric(1000).unwrap(),
            BinEdges::uniform(50).unwrap(),
        ] {
            for &t in &b.thresholds {
                for bits in [t.to_bits().saturating_sub(2), t.to_bits().saturating_sub(1), t.to_bits(), t.to_bits() + 1] {
                    let s = f32::from_bits(bits);
                    assert_eq!(b.bin_of_f32(s), b.bin_of(s), "state {s:e} next to threshold {t:e}");
                }
                let nearest = t as f64;
                assert!(b.edges.iter().any(|&e| nearest >= e && (t.to_bits() == 0 || (f32::from_bits(t.to_bits() - 1) as f64) < e)));
            }
        }
    }
}
