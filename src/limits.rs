//! The largest inputs the tool accepts, each with its reason. Every size read from a file, a
//! config or a flag is checked against these before anything is allocated for it; an input past
//! a limit gets an error naming the limit (see [`check`]).

use crate::error::{Error, Result};

/// Bin edges per layer (M). Counts are `(M − 1) × neurons` u32 per layer in one GPU storage
/// binding; the official grids stop at M = 1000, and past 65,536 edges a bin holds too few
/// profiling samples to mean anything.
pub const MAX_BIN_EDGES: usize = 1 << 16;

/// Neurons (channels) of one profiled layer: the widest torchvision ResNet stage has 2048 and
/// ViT-H 1280; 2^20 leaves room while keeping a header's claim from sizing a giant allocation.
pub const MAX_LAYER_NEURONS: usize = 1 << 20;

/// Layers in one profile or search: a network has at most a few dozen hookable layers.
pub const MAX_LAYERS: usize = 64;

/// Side of an image, decoded or after any transform step (resize, pad, crop), in pixels. One
/// 3 × 4096 × 4096 f32 sample is 192 MiB, beyond a typical storage binding already; ImageNet
/// images are ~500 pixels a side.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Steps of one attack (PGD): AutoAttack's APGD runs 100, robustness studies rarely past 1000;
/// each step is a full forward and backward pass.
pub const MAX_ATTACK_STEPS: usize = 10_000;

/// Restarts of one attack (PGD, APGD): AutoAttack's strongest settings use 5; each restart
/// repeats every step.
pub const MAX_ATTACK_RESTARTS: usize = 100;

/// Samples per batch (`--batch`, `batch` in a config). The loader keeps up to three batches
/// decoded in memory; the GPU pass chunks further by the adapter's limits anyway.
pub const MAX_BATCH: usize = 1 << 16;

/// Combinations of a parameter search's Cartesian product. Each is an AUROC over the
/// validation sets and is kept in the report (`results.json` lists every trial); the official
/// grids have 256.
pub const MAX_GRID_COMBINATIONS: usize = 100_000;

/// Candidates of one layer's grid (O × M × α): each is a GPU re-binning of the cached pairs.
pub const MAX_LAYER_CANDIDATES: usize = 4096;

/// Shards of one run (`--shard i/n`): a merge holds every shard's counts in memory at once.
pub const MAX_SHARDS: usize = 10_000;

/// Loader threads (`--threads`): decoding is CPU-bound, so more threads than cores only adds
/// memory (each holds part of a batch); 256 covers the largest machines.
pub const MAX_THREADS: usize = 256;

/// Residual blocks in one stage of a network (a WideResNet's `(depth − 4) / 6`, or blocks counted
/// in a checkpoint): ResNet-152's deepest stage has 36 and WRN-100 has 16; the bound keeps an
/// architecture named on the command line (`wrn-DEPTH-WIDTH`) from sizing an endless random
/// network in `nac selfcheck` / `nac bench`.
pub const MAX_BLOCKS_PER_STAGE: usize = 64;

/// Encoder blocks of a Vision Transformer: ViT-H has 32; the bound keeps `--arch` from sizing
/// an endless random network, and the layer names within `MAX_LAYERS`' reach for a profile.
pub const MAX_VIT_DEPTH: usize = 48;

/// Elements of one parameter tensor drawn by a random (synthetic) network: 2^30 f32 is 4 GiB,
/// past the largest storage buffer any adapter binds; a checkpoint's tensors are bounded by
/// the file instead. Keeps `nac selfcheck --arch wrn-28-16000` from a giant allocation.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 30;

/// Samples in one dataset or subset (`profile.samples`, the count an IDX/CIFAR/CSV/npy file
/// holds). ImageNet-21k has 14 M images; 2^28 keeps an index list (8 bytes a sample) under
/// 2 GiB and is far more than can be profiled in any reasonable time. A file's claim is
/// bounded by its actual size anyway; this bounds what a config asks for before any list of
/// indices is allocated.
pub const MAX_SAMPLES: usize = 1 << 28;

/// Bytes one gzip-compressed dataset file (IDX or CSV) may decompress to. An IDX file is read
/// only up to what its header claims (checked against this first); a CSV has no header, so
/// this is what bounds a gzip bomb. MNIST's training CSV is ~110 MB of text and the biggest
/// IDX sets a few GB; 8 GiB leaves room.
pub const MAX_DECOMPRESSED_BYTES: usize = 1 << 33;

/// Nesting of a dataset spec (`corrupt:…:corrupt:…`, `outliers:…`, slices of slices). Real
/// specs nest two or three deep; every level is a recursion when opening the spec and when
/// decoding each image, so this keeps a hostile spec from overflowing the stack.
pub const MAX_SPEC_DEPTH: usize = 32;

/// Steps of one transform (`preprocessing`). The presets have at most four; every step is a
/// pass over (and possibly a new allocation of) an image of up to `MAX_IMAGE_SIDE` squared.
pub const MAX_TRANSFORM_STEPS: usize = 64;

/// Bytes one decoder (PNG/JPEG, `image::Limits::max_alloc`) may allocate for one image: a
/// 16-bit RGBA image of `MAX_IMAGE_SIDE` squared is 128 MiB, so 512 MiB (the `image` crate's
/// own default) leaves room for its working buffers.
pub const MAX_DECODE_ALLOC: u64 = 512 << 20;

/// An error unless `value ≤ limit`; `what` names the input (file, field or flag).
pub fn check(what: &str, value: usize, limit: usize, name: &str) -> Result<()> {
    if value > limit {
        return Err(Error::Input(format!("{what} is {value}, over the limit of {limit} ({name}, see `nac::limits`)")));
    }
    Ok(())
}

/// `a × b`, or an error naming `what` when the product overflows `usize`.
pub fn mul(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::Input(format!("{what}: {a} × {b} overflows")))
}

/// The product of `dims`, or an error naming `what` when it overflows `usize`.
pub fn product(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| mul(what, acc, d))
}
