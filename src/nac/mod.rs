//! Neuron Activation Coverage: bins, per-layer hyperparameters, profiles (histograms on the
//! GPU), NAC-UE scoring, pooled-state caches for re-binning, NAC-ME and profiling-set selection.

pub mod bins;
pub mod file;
mod gpu;
pub mod me;
pub mod params;
pub mod pooled;
pub mod profile;
pub mod search;
pub mod select;

pub use bins::BinEdges;
pub use file::{Binning, Counted, ProfileData, ProfileHeader, Shard};
pub use me::{evaluate_checkpoints, nac_me, nac_me_pooled, pearson, spearman, CheckpointReport, LabelledImages, MeResult, MeSettings};
pub use params::{LayerParams, Preset};
pub use pooled::{CachedValues, LayerStats, PooledStates, Predicted};
pub use profile::{ModelIdentity, Profile, Scores};
pub use search::{search, Grid, LayerGrid, SearchResult, SearchSets, Trial};
pub use select::class_balanced_subset;
