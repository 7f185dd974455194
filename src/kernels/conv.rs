//! The convolution kernel family: variants of one implicit GEMM (`shaders/conv_common.wgsl`),
//! chosen per (direction, shape) by measurement (`super::tune`) or by a fixed rule.

use super::ConvParams;

/// One way of running the conv GEMM. Every unsplit variant computes the same sums in the same
/// K order per output (tap by tap, channels ascending), so their results agree bit for bit; a
/// variant that splits K sums each part in that order and then adds the parts, which changes
/// only the rounding. All are tested against the f64 reference on the same shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvVariant {
    /// 64 × 64 output tiles staged through workgroup memory by 16 × 16 threads of 4 × 4
    /// outputs (`shaders/conv.wgsl`): what suits GPUs with fast shared memory.
    Tiled { splits: u32 },
    /// Register tiles without workgroup memory or barriers (`shaders/conv_direct.wgsl`):
    /// `lanes` invocations per workgroup, each with `rows` pixels × `4·vecs` channels; the
    /// strided data gradient is split into phases without structural zeros.
    Direct { lanes: u32, rows: u32, vecs: u32, splits: u32 },
}

// The direct kernel's private arrays (`MAX_ROWS`, `MAX_ACC` in `shaders/conv_direct.wgsl`) and
// the zeros after every weight buffer (`CONV_WEIGHT_TAIL`) bound its candidates; with shader
// runtime checks off these are the only guard.
const _: () = {
    let mut i = 0;
    while i < ConvVariant::CANDIDATES.len() {
        if let ConvVariant::Direct { rows, vecs, .. } = ConvVariant::CANDIDATES[i] {
            assert!(rows <= 16 && rows * vecs <= 64 && 4 * vecs as usize <= super::CONV_WEIGHT_TAIL);
        }
        i += 1;
    }
};

impl ConvVariant {
    pub const TILED: ConvVariant = ConvVariant::Tiled { splits: 1 };

    /// The family the tuner measures. Small on purpose: every candidate is compiled and timed
    /// once per shape on first use. The split-K ones (`splits > 1`: `splits` workgroups share
    /// each output tile's K range and a second dispatch adds their partial sums) are timed only
    /// where the unsplit grid is too small to fill the adapter ([`ConvVariant::worth_splitting`]).
    pub const CANDIDATES: [ConvVariant; 12] = [
        ConvVariant::TILED,
        ConvVariant::Direct { lanes: 8, rows: 4, vecs: 4, splits: 1 },
        ConvVariant::Direct { lanes: 8, rows: 6, vecs: 4, splits: 1 },
        ConvVariant::Direct { lanes: 8, rows: 8, vecs: 4, splits: 1 },
        ConvVariant::Direct { lanes: 8, rows: 8, vecs: 2, splits: 1 },
        ConvVariant::Direct { lanes: 8, rows: 16, vecs: 2, splits: 1 },
        ConvVariant::Direct { lanes: 64, rows: 2, vecs: 4, splits: 1 },
        ConvVariant::Direct { lanes: 64, rows: 4, vecs: 2, splits: 1 },
        ConvVariant::Tiled { splits: 4 },
        ConvVariant::Tiled { splits: 16 },
        ConvVariant::Direct { lanes: 8, rows: 4, vecs: 4, splits: 4 },
        ConvVariant::Direct { lanes: 64, rows: 2, vecs: 4, splits: 4 },
    ];

    /// Whether the kernel is one of the family's (any split count): only those are compiled, since
    /// the shaders run without runtime checks and size private arrays for them.
    pub fn is_known(self) -> bool {
        Self::CANDIDATES.iter().any(|c| c.unsplit() == self.unsplit())
    }

    /// The untuned choice (`--no-tune`): register tiles on CPU adapters, where workgroup
    /// memory and barriers are emulated (measured fastest on lavapipe, see `benches/NOTES.md`);
    /// shared-memory tiles elsewhere. Never split.
    pub fn default_for(device: wgpu::DeviceType) -> ConvVariant {
        match device {
            wgpu::DeviceType::Cpu => ConvVariant::Direct { lanes: 8, rows: 8, vecs: 4, splits: 1 },
            _ => ConvVariant::TILED,
        }
    }

    /// Stable name, used in the tuning cache and in `nac bench`: `tiled`, `direct-8x8x4`, and
    /// with split K a `-kS` suffix.
    pub fn name(self) -> String {
        let base = match self {
            ConvVariant::Tiled { .. } => "tiled".to_string(),
            ConvVariant::Direct { lanes, rows, vecs, .. } => format!("direct-{lanes}x{rows}x{vecs}"),
        };
        match self.splits() {
            1 => base,
            s => format!("{base}-k{s}"),
        }
    }

    /// The candidate of that name.
    pub fn parse(name: &str) -> Option<ConvVariant> {
        Self::CANDIDATES.into_iter().find(|v| v.name() == name)
    }

    /// Parts K is split into (1: not split).
    pub fn splits(self) -> u32 {
        match self {
            ConvVariant::Tiled { splits } | ConvVariant::Direct { splits, .. } => splits.max(1),
        }
    }

    /// The same kernel without split K: what a pipeline is compiled for (the split count is a
    /// call parameter).
    pub fn unsplit(self) -> ConvVariant {
        match self {
            ConvVariant::Tiled { .. } => ConvVariant::TILED,
            ConvVariant::Direct { lanes, rows, vecs, .. } => ConvVariant::Direct { lanes, rows, vecs, splits: 1 },
        }
    }

    /// Whether split-K candidates are worth timing for a call whose unsplit dispatch (of this
    /// variant) has `workgroups`: fewer than the adapter can run at once, estimated as 4 per
    /// CPU thread on a CPU adapter (its invocations run on the host's threads) and 1024 on a
    /// GPU (a hundred-odd compute units with several workgroups each).
    pub fn worth_splitting(workgroups: [u32; 3], device: wgpu::DeviceType) -> bool {
        let total: u64 = workgroups.iter().map(|&n| n as u64).product();
        let fills = match device {
            wgpu::DeviceType::Cpu => 4 * std::thread::available_parallelism().map_or(1, |n| n.get()) as u64,
            _ => 1024,
        };
        total < fills
    }

    /// Pipeline-overridable constants besides `BACKWARD`.
    pub(super) fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            ConvVariant::Tiled { .. } => Vec::new(),
            ConvVariant::Direct { lanes, rows, vecs, .. } => vec![("LANES", lanes as f64), ("ROWS", rows as f64), ("VECS", vecs as f64)],
        }
    }

    /// (GEMM rows, GEMM columns) one workgroup covers.
    fn tile(self) -> (u32, u32) {
        match self {
            ConvVariant::Tiled { .. } => (super::CONV_TILE, super::CONV_TILE),
            ConvVariant::Direct { lanes, rows, vecs, .. } => (lanes * rows, 4 * vecs),
        }
    }

    /// Phases of the dispatch: the direct data gradient runs one per `(iy mod s, ix mod s)`.
    fn phases(self, p: &ConvParams, backward: bool) -> u32 {
        match self {
            ConvVariant::Direct { .. } if backward => p.stride * p.stride,
            _ => 1,
        }
    }

    /// GEMM rows of one sample in one phase (the largest phase).
    fn rows_per_sample(self, p: &ConvParams, backward: bool) -> u64 {
        let (h, w) = if backward { (p.in_h, p.in_w) } else { (p.out_h, p.out_w) };
        match self {
            ConvVariant::Direct { .. } if backward => (h.div_ceil(p.stride) * w.div_ceil(p.stride)) as u64,
            _ => (h * w) as u64,
        }
    }

    /// Workgroup counts of a call with parameters `p` (its `batch` set).
    pub fn workgroups(self, p: &ConvParams, backward: bool) -> [u32; 3] {
        let (tile_m, tile_n) = self.tile();
        let rows = self.rows_per_sample(p, backward) * p.batch as u64;
        // Workgroup z: phase · splits + split.
        [p.n_total.div_ceil(tile_n), rows.div_ceil(tile_m as u64) as u32, self.phases(p, backward) * self.splits()]
    }

    /// The most samples whose dispatch keeps within `max_per_dim` workgroups per dimension.
    pub fn max_batch(self, p: &ConvParams, backward: bool, max_per_dim: u32) -> u64 {
        let (tile_m, _) = self.tile();
        (max_per_dim as u64 * tile_m as u64) / self.rows_per_sample(p, backward).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let names: Vec<String> = ConvVariant::CANDIDATES.iter().map(|v| v.name()).collect();
        for (i, v) in ConvVariant::CANDIDATES.iter().enumerate() {
            assert_eq!(ConvVariant::parse(&names[i]), Some(*v));
            assert!(!names[..i].contains(&names[i]), "duplicate name {}", names[i]);
        }
        assert_eq!(ConvVariant::parse("direct-8x99x4"), None);
        assert_eq!(ConvVariant::parse("tiled-k4"), Some(ConvVariant::Tiled { splits: 4 }));
        assert_eq!(ConvVariant::parse("direct-8x4x4-k4").map(ConvVariant::unsplit), ConvVariant::parse("direct-8x4x4"));
        assert!(ConvVariant::CANDIDATES.contains(&ConvVariant::default_for(wgpu::DeviceType::Cpu)));
        // Every split candidate's kernel is an unsplit candidate (the tuner times both).
        for v in ConvVariant::CANDIDATES {
            assert!(ConvVariant::CANDIDATES.contains(&v.unsplit()), "{}", v.name());
        }
    }
}
