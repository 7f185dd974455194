//! Conv variants chosen by measurement: on first use of a (direction, shape) on an adapter,
//! every candidate of [`ConvVariant::CANDIDATES`] is compiled and timed on random data and the
//! fastest is kept, in memory and in a cache file per adapter and driver.
//!
//! The cache lives in `$NAC_TUNE_DIR`, else `$XDG_CACHE_HOME/nac`, else `~/.cache/nac`, as
//! `conv-<adapter hash>.json`. It is safe to delete. A file written for other kernel sources or
//! another version, or one that does not parse, is ignored (with a warning) and rewritten; a
//! folder that cannot be written only costs re-tuning next time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{encode_dispatches, BoundDispatch, ConvParams, ConvVariant, Kernels};
use crate::error::Result;
use crate::fingerprint::Fnv64;
use crate::gpu::Gpu;

/// How conv variants are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// [`ConvVariant::default_for`] the adapter type: deterministic, nothing measured.
    Fixed,
    /// Measured once per shape; remembered in `cache_dir` (no file if `None`).
    Measure { cache_dir: Option<PathBuf> },
}

impl Tuning {
    /// Measured, cached in the documented default folder.
    pub fn measured() -> Tuning {
        let dir = std::env::var_os("NAC_TUNE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("nac")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("nac")));
        Tuning::Measure { cache_dir: dir }
    }
}

/// What the cache file holds.
#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    /// The adapter, driver and kernel sources the timings belong to.
    identity: String,
    /// Shape key → variant name.
    choices: BTreeMap<String, String>,
    /// Choices measured since the file was last written.
    #[serde(skip)]
    unsaved: bool,
}

pub struct Tuner {
    tuning: Tuning,
    state: Mutex<Option<CacheFile>>,
}

/// Work (FLOP) of one tuning run: enough samples to fill a large GPU; on a CPU adapter, where
/// the speed hardly depends on the size, a few milliseconds, so a shape tunes in a fraction of
/// a second (sized by rows instead, the deepest ResNet stages took seconds each).
fn tune_flop(device: wgpu::DeviceType) -> u64 {
    match device {
        wgpu::DeviceType::Cpu => 100_000_000,
        _ => 8_000_000_000,
    }
}
/// A candidate whose first run is this much slower than the best so far is not timed again.
const PRUNE: f64 = 1.5;

impl Tuner {
    pub fn new(tuning: Tuning) -> Tuner {
        Tuner { tuning, state: Mutex::new(None) }
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// The cache file of this adapter, if there is a folder for it.
    pub fn cache_path(&self, gpu: &Gpu) -> Option<PathBuf> {
        match &self.tuning {
            Tuning::Measure { cache_dir: Some(dir) } => Some(dir.join(format!("conv-{:016x}.json", hash(&adapter_identity(gpu))))),
            _ => None,
        }
    }

    /// The variant for a conv call with parameters `p` (any batch; at most `batch` samples are
    /// used to time it).
    pub fn choose(&self, gpu: &Gpu, kernels: &Kernels, p: &ConvParams, backward: bool, batch: u32) -> Result<ConvVariant> {
        if self.tuning == Tuning::Fixed {
            return Ok(ConvVariant::default_for(gpu.info.device_type));
        }
        let key = format!("{} w{}", shape_key(p, backward), kernels.weights.name());
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let cache = state.get_or_insert_with(|| self.load(gpu));
        if let Some(variant) = cache.choices.get(&key).and_then(|name| ConvVariant::parse(name)) {
            return Ok(variant);
        }
        let variant = measure(gpu, kernels, p, backward, batch)?;
        cache.choices.insert(key, variant.name());
        cache.unsaved = true;
        Ok(variant)
    }

    /// Writes the choices measured since the last save (once per plan, not per shape).
    pub fn save(&self, gpu: &Gpu) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (Some(cache), Some(path)) = (state.as_mut(), self.cache_path(gpu)) else { return };
        if !cache.unsaved {
            return;
        }
        let saved = std::fs::create_dir_all(path.parent().unwrap())
            .map_err(|e| crate::Error::io(&path, e))
            .and_then(|_| crate::error::write_atomic(&path, serde_json::to_string_pretty(&*cache).unwrap().as_bytes()));
        match saved {
            Ok(()) => cache.unsaved = false,
            Err(e) => eprintln!("warning: could not save the conv tuning cache ({e}); the next run tunes again"),
        }
    }

    fn load(&self, gpu: &Gpu) -> CacheFile {
        let identity = adapter_identity(gpu);
        let fresh = CacheFile { identity: identity.clone(), choices: BTreeMap::new(), unsaved: false };
        let Some(path) = self.cache_path(gpu) else { return fresh };
        let Ok(text) = std::fs::read_to_string(&path) else { return fresh };
        match serde_json::from_str::<CacheFile>(&text) {
            Ok(file) if file.identity == identity => file,
            Ok(_) => {
                eprintln!("note: {} was tuned for other kernels or another version; tuning again", path.display());
                fresh
            }
            Err(e) => {
                eprintln!("warning: ignoring the unreadable conv tuning cache {} ({e}); tuning again", path.display());
                fresh
            }
        }
    }
}

fn hash(text: &str) -> u64 {
    let mut h = Fnv64::new();
    h.bytes(text.as_bytes());
    h.finish()
}

/// Adapter, driver, crate version and a hash of the conv sources: a cache written under any
/// other identity is stale.
fn adapter_identity(gpu: &Gpu) -> String {
    let i = &gpu.info;
    let sources = hash(&format!("{}{}", super::CONV_WGSL, super::CONV_DIRECT_WGSL));
    format!(
        "{} | {:?} | {} {} | vendor {:#x} device {:#x} | nac {} | kernels {sources:016x}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        i.vendor,
        i.device,
        env!("CARGO_PKG_VERSION")
    )
}

/// Direction and per-sample geometry: what a variant's speed depends on.
fn shape_key(p: &ConvParams, backward: bool) -> String {
    format!(
        "{} {}x{}x{} -> {}x{}x{} k{} s{} p{}",
        if backward { "backward" } else { "forward" },
        p.in_h,
        p.in_w,
        p.in_c,
        p.out_h,
        p.out_w,
        p.out_c,
        p.kernel,
        p.stride,
        p.pad
    )
}

/// Times every candidate on random data and returns the fastest.
fn measure(gpu: &Gpu, kernels: &Kernels, p: &ConvParams, backward: bool, batch: u32) -> Result<ConvVariant> {
    let rows_per_sample = if backward { p.in_h * p.in_w } else { p.out_h * p.out_w } as u64;
    let flop_per_sample = (2 * rows_per_sample * p.n_total as u64 * p.k_total as u64).max(1);
    let batch = (tune_flop(gpu.info.device_type).div_ceil(flop_per_sample).min(u32::MAX as u64) as u32).clamp(1, batch.max(1));
    let mut p = *p;
    p.batch = batch;
    p.m_total = batch * rows_per_sample as u32;
    p.flags = 0;
    let source_len = batch * if backward { p.out_h * p.out_w * p.out_c } else { p.in_h * p.in_w * p.in_c };
    let mut rng = crate::rng::Rng::new(0x7475_6e65);
    let mut random = |len: u32| -> Vec<f32> { (0..len).map(|_| rng.uniform(-0.5, 0.5)).collect() };
    let source = gpu.upload_f32("tuning source", &random(source_len));
    let weights = kernels.weights.upload(gpu, "tuning weights", &random(p.k_total * p.n_total));
    let output = gpu.storage_buffer("tuning output", p.m_total as u64 * p.n_total as u64 * 4);
    let unused = kernels.placeholder();
    let reads = [&source, &weights, unused, unused, unused];
    let time = |dispatches: &[BoundDispatch], repeats: u32| -> Result<f64> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            encode_dispatches(&mut pass, dispatches, repeats);
        }
        let start = Instant::now();
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        gpu.check_while("timing a conv variant")?;
        Ok(start.elapsed().as_secs_f64() / repeats as f64)
    };
    let device = gpu.info.device_type;
    let mut best: Option<(f64, ConvVariant)> = None;
    for variant in ConvVariant::CANDIDATES {
        let workgroups = variant.workgroups(&p, backward);
        if workgroups.iter().any(|&n| n > gpu.max_workgroups_per_dim()) {
            continue;
        }
        let small_grid = || ConvVariant::worth_splitting(variant.unsplit().workgroups(&p, backward), device);
        if variant.splits() > 1 && (!small_grid() || p.partial_sums_bytes(variant.splits()) > gpu.max_binding_bytes()) {
            continue;
        }
        let dispatches = kernels.conv_dispatches(gpu, variant, backward, &p, &reads, &output)?;
        // The fastest of several runs: on a shared CPU adapter a run can be slowed by anything
        // else on the machine, and the choice is cached for good. A candidate is dropped only
        // when two runs are both much slower than the best so far.
        let slower = |t: f64| best.is_some_and(|(b, _)| t > PRUNE * b);
        let mut t = time(&dispatches, 1)?;
        if slower(t) {
            t = t.min(time(&dispatches, 1)?);
            if slower(t) {
                continue;
            }
        }
        let t = t.min(time(&dispatches, 2)?);
        if best.is_none_or(|(b, _)| t < b) {
            best = Some((t, variant));
        }
    }
    Ok(best.map_or(ConvVariant::TILED, |(_, v)| v))
}
