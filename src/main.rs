//! The `nac` command line.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use nac::data::{self, Dataset, Transform};
use nac::error::{check_writable, write_atomic};
use nac::eval::adversarial::Attacker;
use nac::gpu::{describe_adapter, list_adapters, GpuOptions};
use nac::kernels::tune::Tuning;
use nac::kernels::WeightStorage;
use nac::model::synthetic::SyntheticModel;
use nac::model::ArchSpec;
use nac::nac::{
    class_balanced_subset, evaluate_checkpoints, params, LabelledImages, LayerParams, MeSettings, Preset, Profile, ProfileData, Shard,
};
use nac::npy::{NpyArray, NpyDtype};
use nac::rng::Rng;
use nac::{limits, reference, Engine, EngineOptions, Error, Result};

/// What `--preprocessing` says when the input array is used exactly as given.
const AS_GIVEN: &str = "none";

/// `println!` to standard output that ends the process quietly when the reader has gone
/// (`nac info | head`) instead of panicking, as `println!` does on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|_| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(name = "nac", version, about = "Neuron Activation Coverage on any GPU (wgpu + WGSL)")]
struct Cli {
    /// wgpu backend(s): vulkan, metal, dx12, gl (default: all; env NAC_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (env NAC_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Use each conv kernel's fixed default variant instead of the fastest one measured on this
    /// adapter (measured once per shape and cached: README, "Kernel tuning").
    #[arg(long, global = true)]
    no_tune: bool,
    /// Store conv weights on the GPU in f16 (half the memory and weight traffic; arithmetic
    /// stays f32); needs the adapter's SHADER_F16. Off by default: README, "f16 weights".
    #[arg(long, global = true)]
    f16_weights: bool,
    /// Store conv weights in f16 and run the conv kernels' K loops in f16 (activations rounded
    /// to f16 where read, products and sums in f16); needs SHADER_F16. Off by default: its
    /// accuracy cost is in the README, "f16 arithmetic".
    #[arg(long, global = true, conflicts_with = "f16_weights")]
    f16_compute: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where a command's images come from: a preprocessed array, or a dataset streamed through a
/// preprocessing.
#[derive(clap::Args)]
struct SourceArgs {
    /// Images, float32 N×3×H×W .npy, already preprocessed.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    input: Option<PathBuf>,
    /// A dataset spec (README, "Dataset specs"), decoded and preprocessed on worker threads
    /// while the GPU runs, in constant memory however large the set.
    #[arg(long)]
    data: Option<String>,
    /// With --input: a description of what was done to the array (recorded in the profile,
    /// compared when scoring). With --data: the transform to apply (a preset or steps), recorded
    /// in its canonical form.
    #[arg(long, default_value = AS_GIVEN)]
    preprocessing: String,
    /// Loader threads for --data (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Take only part INDEX of COUNT (`--shard 2/8`): a contiguous slice of the selected
    /// samples (after --balanced), for spreading a run over machines; `nac merge` sums
    /// profile shards, score shards concatenate (only shard 0 writes the CSV header).
    #[arg(long)]
    shard: Option<String>,
}

/// Shard `shard` of the selected samples `all`; an error when it holds none.
fn take_shard(all: Vec<usize>, shard: Shard) -> Result<Vec<usize>> {
    let range = shard.range(all.len());
    if range.is_empty() {
        return Err(Error::Input(format!("--shard {shard} selects none of the {} samples: use at most {} shards", all.len(), all.len())));
    }
    Ok(all[range].to_vec())
}

/// NCHW batches `(position in the selection, values, shape)` of a [`Source`].
type SourceBatches<'a> = Box<dyn Iterator<Item = Result<(usize, Cow<'a, [f32]>, [usize; 4])>> + 'a>;

/// An opened [`SourceArgs`].
enum Source {
    Array { path: PathBuf, data: Vec<f32>, shape: [usize; 4], preprocessing: String },
    Stream { dataset: Dataset, transform: Transform, threads: usize },
}

impl SourceArgs {
    fn shard(&self) -> Result<Option<Shard>> {
        self.shard.as_deref().map(Shard::parse).transpose()
    }

    fn open(&self) -> Result<Source> {
        match (&self.input, &self.data) {
            (Some(path), None) => {
                let (data, shape) = load_images(path)?;
                Ok(Source::Array { path: path.clone(), data, shape, preprocessing: self.preprocessing.clone() })
            }
            (None, Some(spec)) => {
                let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                limits::check("--threads", threads, limits::MAX_THREADS, "MAX_THREADS")?;
                Ok(Source::Stream { dataset: Dataset::open(spec)?, transform: Transform::parse(&self.preprocessing)?, threads })
            }
            _ => Err(Error::Input("give exactly one of --input X.npy and --data SPEC".into())),
        }
    }
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Array { shape, .. } => shape[0],
            Source::Stream { dataset, .. } => dataset.len(),
        }
    }

    /// The text a profile records: the description given with an array, the canonical form of
    /// the transform for a stream.
    fn preprocessing(&self) -> String {
        match self {
            Source::Array { preprocessing, .. } => preprocessing.clone(),
            Source::Stream { transform, .. } => transform.describe(),
        }
    }

    /// The samples to run: the `chosen` selection (all samples without), cut to `shard`; `None`
    /// when that is every sample in order.
    fn select(&self, chosen: Option<Vec<usize>>, shard: Option<Shard>) -> Result<Option<Vec<usize>>> {
        let Some(shard) = shard else { return Ok(chosen) };
        take_shard(chosen.unwrap_or_else(|| (0..self.len()).collect()), shard).map(Some)
    }

    /// Where sample `i` of the selection `indices` (all samples without) comes from.
    fn locate(&self, indices: Option<&[usize]>, i: usize) -> String {
        let index = indices.map_or(i, |s| s[i]);
        match self {
            Source::Array { path, .. } => format!("{}: sample {index}", path.display()),
            Source::Stream { dataset, .. } => dataset.locate(index),
        }
    }

    /// The attack stage of an adversarial `--data` set against `network` (see `Attacker`).
    fn attacker<'a>(&'a self, engine: &'a Engine, network: &nac::model::Network) -> Option<Attacker<'a>> {
        match self {
            Source::Stream { dataset, transform, .. } => Attacker::new(engine, network, dataset, transform),
            Source::Array { .. } => None,
        }
    }

    /// Samples through the network per selected sample: each run of an attack, then the pass.
    fn runs(&self) -> usize {
        match self {
            Source::Stream { dataset, .. } => 1 + dataset.adversarial().map_or(0, |a| a.attack.restarts()),
            Source::Array { .. } => 1,
        }
    }

    /// The selected samples as NCHW batches `(position, values, shape)`: the whole array at once
    /// (the engine chunks it), or the stream `batch` samples at a time from the loader, through
    /// `attacker` for an adversarial set.
    fn batches<'a, 'e: 'a>(
        &'a self,
        indices: Option<&'a [usize]>,
        batch: usize,
        attacker: Option<&'a mut Attacker<'e>>,
    ) -> SourceBatches<'a> {
        match self {
            Source::Array { data, shape, .. } => match indices {
                None => Box::new(std::iter::once(Ok((0, Cow::Borrowed(data.as_slice()), *shape)))),
                Some(chosen) => {
                    let per = shape[1] * shape[2] * shape[3];
                    let picked: Vec<f32> = chosen.iter().flat_map(|&i| data[i * per..(i + 1) * per].iter().copied()).collect();
                    Box::new(std::iter::once(Ok((0, Cow::Owned(picked), [chosen.len(), shape[1], shape[2], shape[3]]))))
                }
            },
            Source::Stream { dataset, transform, threads } => {
                let mut attacker = attacker;
                Box::new(data::batches(dataset, transform, indices, batch, *threads).map(move |b| {
                    let mut b = b?;
                    if let Some(attacker) = attacker.as_deref_mut() {
                        attacker.attack(&mut b, indices)?;
                    }
                    Ok((b.start, Cow::Owned(b.input), b.shape))
                }))
            }
        }
    }

    /// Names the source of the sample behind a non-finite result (`indices`: the selection).
    fn locate_error<'a>(&'a self, indices: Option<&'a [usize]>) -> impl Fn(Error) -> Error + 'a {
        move |e| e.locate_sample(|i| self.locate(indices, i))
    }
}

/// How a command runs its model.
#[derive(clap::Args)]
struct RunArgs {
    /// Architecture, when detection from tensor names is not wanted
    /// (resnet18_32x32, resnet18/34/50/101/152, wrn-DEPTH-WIDTH, dm-wrn-relu or dm-wrn-swish for
    /// RobustBench's DMWideResNet, vit-hHEADS).
    #[arg(long)]
    arch: Option<String>,
    /// Samples per GPU submission (larger inputs are chunked).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

impl RunArgs {
    fn arch(&self) -> Result<Option<ArchSpec>> {
        self.arch.as_deref().map(str::parse).transpose()
    }

    fn engine(&self, gpu: Device) -> Result<Engine> {
        engine_for_batch(gpu, self.batch)
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter with backend, type, driver, limits and features; mark the one used.
    Info,
    /// Logits for a float32 N×3×H×W NumPy array (already preprocessed), written as N×classes.
    Predict {
        /// Checkpoint (.safetensors, f32/f16/bf16, public PyTorch naming).
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        /// Output .npy (float32, N×classes).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Build a NAC profile (per-layer histograms of neuron states) from in-distribution data.
    Profile {
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        /// Labels of --input (1-D integer .npy); needed by --balanced (--data sets bring theirs).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Use the official class-balanced subset: min(floor(N/C), smallest class) samples per
        /// class, each class shuffled by NumPy's RandomState(--seed), as the official code draws
        /// it. Without it every input sample is profiled.
        #[arg(long)]
        balanced: Option<usize>,
        /// Seed of the balanced subset (the official default is 1; below 2^32).
        #[arg(long, default_value_t = nac::nac::select::OFFICIAL_SEED as u64)]
        seed: u64,
        /// Layers, comma-separated (default: the official list, deep to shallow: avgpool and
        /// stages 3, 2, 1 of a CNN; a ViT's layer_norm and its last three blocks).
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<String>>,
        /// Official defaults for O/M/α (spec §4): cifar10, cifar100, imagenet, imagenet-vit (spec
        /// §8; a Vision Transformer always takes these, the only published ViT values).
        #[arg(long, default_value = "cifar10")]
        preset: String,
        /// Per-layer override NAME:O/M/ALPHA (repeatable), e.g. layer3:100/500/1000.
        #[arg(long = "layer-params")]
        layer_params: Vec<String>,
        #[command(flatten)]
        run: RunArgs,
        /// Output profile (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// NAC-UE scores (higher = more in-distribution) of inputs against a profile, as CSV:
    /// index, score, per-layer scores, predicted class, max softmax.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        profile: PathBuf,
        /// The preprocessing must equal the profile's (see `nac profile --preprocessing`).
        #[command(flatten)]
        source: SourceArgs,
        /// If given, must equal the profile's layer list (a guard for scripts).
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<String>>,
        #[command(flatten)]
        run: RunArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a dataset spec's images as .npy for other tools: uint8 N×H×W×C as stored, or,
    /// with --preprocessing, float32 N×3×H×W after it; and the labels beside them.
    Export {
        /// A dataset spec (README, "Dataset specs"), e.g. corrupt:contrast:3:idx:FILE[0:1000].
        #[arg(long)]
        data: String,
        /// Transform the images (a preset or steps) into float32 N×3×H×W.
        #[arg(long)]
        preprocessing: Option<String>,
        /// The official class-balanced subset of this many samples (see `nac profile`).
        #[arg(long)]
        balanced: Option<usize>,
        #[arg(long, default_value_t = nac::nac::select::OFFICIAL_SEED as u64)]
        seed: u64,
        /// Only part INDEX of COUNT of the selected samples (see `nac profile --shard`).
        #[arg(long)]
        shard: Option<String>,
        /// Samples decoded per step (memory stays bounded by it).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        /// Labels output, int64 (default: OUT with `.labels.npy` for `.npy`).
        #[arg(long)]
        labels_out: Option<PathBuf>,
        /// The model an adversarial spec (`fgsm:`, `pgd:`, `apgd:`) attacks; the examples are
        /// written after --preprocessing, which the attack needs.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Architecture of --model, when detection from tensor names is not wanted.
        #[arg(long)]
        arch: Option<String>,
    },
    /// Convert a PyTorch checkpoint (`torch.save` .pth/.ckpt, a state dict possibly wrapped in
    /// {'state_dict': …} with `module.`/`model.` prefixes) to safetensors in the public naming.
    /// No Python runs: a restricted reader refuses anything but tensors and plain containers.
    Convert { input: PathBuf, out: PathBuf },
    /// Sum profiles built in shards (same model and settings) into one.
    Merge {
        #[arg(long)]
        out: PathBuf,
        /// Profiles to merge.
        #[arg(required = true, num_args = 2..)]
        profiles: Vec<PathBuf>,
    },
    /// NAC-ME of checkpoints on labelled training-domain data; picks the highest and, given
    /// test accuracies, reports the Spearman rank correlation.
    Me {
        /// Checkpoints, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        checkpoints: Vec<PathBuf>,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        labels: PathBuf,
        /// Test accuracy of each checkpoint, comma-separated, for the rank correlation.
        #[arg(long, value_delimiter = ',')]
        accuracies: Option<Vec<f64>>,
        /// The layer (default: each checkpoint's feature layer, avgpool or a ViT's layer_norm).
        #[arg(long)]
        layer: Option<String>,
        #[arg(long, default_value_t = 0.1)]
        alpha: f64,
        #[arg(long, default_value_t = 50)]
        m: usize,
        #[arg(long, default_value_t = 500.0)]
        o: f64,
        #[command(flatten)]
        run: RunArgs,
        /// Also write the report as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate NAC-UE (defaults, ID-only selection, APS) and the MSP / energy baselines on the
    /// datasets a TOML config names; writes results.json, results.csv, results.md and pictures.
    Eval {
        /// The config file (see README, "nac eval", and eval/fmnist.toml).
        config: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "out/eval")]
        out: PathBuf,
        /// CPU threads decoding images (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Evaluate these checkpoints instead of the config's `[[models]]` (repeatable; several
        /// give mean ± std), e.g. another shipped architecture on the same datasets.
        #[arg(long = "model")]
        models: Vec<PathBuf>,
    },
    /// NAC-UE, MSP and energy under distribution shift: the clean ID test set against the
    /// CIFAR-10-C corruptions × severities, natural shifts and combined perturbations in both
    /// orders; writes results.{json,csv,md} and pictures (see eval/fmnist-shift.toml).
    Shift {
        /// The config file (see `nac::eval::shift` and eval/fmnist-shift.toml).
        config: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "out/shift")]
        out: PathBuf,
        /// CPU threads decoding and corrupting images (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// The evaluation on the shipped Fashion-MNIST ResNet-18 and the bundled real subsets
    /// (offline); prints the table and writes everything to --out.
    Demo {
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Checkout holding weights/ and demo/ (default: where nac was built from).
        #[arg(long)]
        root: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
        /// Use every bundled sample even on a CPU adapter (slow there).
        #[arg(long)]
        full: bool,
    },
    /// Time the forward pass, the NAC pass and the CIFAR-10 grid search on this adapter;
    /// writes JSON.
    Bench {
        #[arg(long, default_value = "resnet18_32x32")]
        arch: String,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Input height and width (default 32; a ViT's own image size).
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Cached samples per set for the grid-search timing.
        #[arg(long, default_value_t = 1000)]
        search_samples: usize,
        #[arg(long, default_value = "bench.json")]
        out: PathBuf,
        /// Also measure the adapter's FP32 FMA peak; stages report their fraction of it.
        #[arg(long)]
        peak: bool,
    },
    /// Check this adapter's numbers: a random-weight network, forward + backward to every
    /// layer on the GPU, compared with the f64 CPU reference.
    Selfcheck {
        #[arg(long, default_value = "resnet18_32x32")]
        arch: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Input height and width (default 32; a ViT's own image size).
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let gpu = Device {
        adapter: GpuOptions::from_env().with_overrides(cli.backend.clone(), cli.adapter.clone()),
        tuning: if cli.no_tune { Tuning::Fixed } else { Tuning::measured() },
        weights: match (cli.f16_weights, cli.f16_compute) {
            (_, true) => WeightStorage::F16Compute,
            (true, false) => WeightStorage::F16,
            (false, false) => WeightStorage::F32,
        },
    };
    let result = match cli.command {
        Command::Info => info(&gpu.adapter),
        Command::Predict { model, source, out, run } => predict(gpu, model, &source, out, &run),
        Command::Selfcheck { arch, batch, size, seed } => selfcheck(gpu, &arch, batch, size, seed),
        Command::Profile { model, source, labels, balanced, seed, layers, preset, layer_params, run, out } => {
            let job = ProfileJob { model, source, labels, balanced, seed, layers, preset, layer_params, run, out };
            profile(gpu, job)
        }
        Command::Score { model, profile, source, layers, run, out } => score(gpu, ScoreJob { model, profile, source, layers, run, out }),
        Command::Merge { out, profiles } => merge(&profiles, &out),
        Command::Convert { input, out } => convert(&input, &out),
        Command::Export { data, preprocessing, balanced, seed, shard, batch, threads, out, labels_out, model, arch } => {
            export(gpu, ExportJob { data, preprocessing, balanced, seed, shard, batch, threads, out, labels_out, model, arch })
        }
        Command::Eval { config, out, threads, models } => nac::eval::EvalConfig::load(&config).and_then(|mut c| {
            if !models.is_empty() {
                c.models = models.into_iter().map(|path| nac::eval::config::ModelEntry { path, arch: None }).collect();
            }
            let engine = engine_for_batch(gpu, c.batch)?;
            evaluate(engine, &c, out, threads, "eval")
        }),
        Command::Shift { config, out, threads } => nac::eval::shift::ShiftConfig::load(&config).and_then(|c| shift(gpu, &c, out, threads)),
        Command::Demo { out, root, threads, full } => demo(gpu, out, root, threads, full),
        Command::Bench { arch, batch, size, repeats, search_samples, out, peak } => arch.parse().and_then(|arch| {
            let size = size.unwrap_or_else(|| default_side(arch));
            bench(gpu, nac::bench::BenchSettings { arch, batch, size, repeats, search_samples, peak }, &out)
        }),
        Command::Me { checkpoints, input, labels, accuracies, layer, alpha, m, o, run, out } => {
            let settings = MeSettings { layer, alpha, m, o };
            model_evaluation(gpu, &checkpoints, input, labels, accuracies, &settings, &run, out)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The adapter the command line asked for and how its conv kernels are chosen.
struct Device {
    adapter: GpuOptions,
    tuning: Tuning,
    weights: WeightStorage,
}

impl Device {
    fn engine(self, max_batch: usize) -> Result<Engine> {
        Engine::new(EngineOptions { gpu: self.adapter, max_batch, max_binding_bytes: None, tuning: self.tuning, weights: self.weights })
    }
}

/// An engine submitting up to `batch` samples at once; `--batch` within [1, MAX_BATCH].
fn engine_for_batch(gpu: Device, batch: usize) -> Result<Engine> {
    if batch == 0 {
        return Err(Error::Input("--batch must be at least 1".into()));
    }
    limits::check("--batch", batch, limits::MAX_BATCH, "MAX_BATCH")?;
    gpu.engine(batch)
}

/// Names the sample of `input` behind a non-finite result.
fn in_input(input: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| e.locate_sample(|i| format!("{}: sample {i}", input.display()))
}

fn demo(gpu: Device, out: PathBuf, root: Option<PathBuf>, threads: Option<usize>, full: bool) -> Result<()> {
    use nac::eval::demo::{default_root, demo_config, DemoSize};
    let engine = gpu.engine(64)?;
    let on_cpu = engine.gpu.info.device_type == wgpu::DeviceType::Cpu;
    let size = if on_cpu && !full { DemoSize::CPU } else { DemoSize::FULL };
    if size != DemoSize::FULL {
        eprintln!("demo: CPU adapter, so small prefixes of the bundled sets ({size:?}); --full takes all of them");
    }
    let config = demo_config(&root.unwrap_or_else(default_root), size)?;
    evaluate(engine, &config, out, threads, "demo")
}

fn evaluate(mut engine: Engine, config: &nac::eval::EvalConfig, out: PathBuf, threads: Option<usize>, what: &str) -> Result<()> {
    let started = Instant::now();
    eprintln!("{what}: {} ({:?})", engine.gpu.info.name, engine.gpu.info.backend);
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    limits::check("--threads", threads, limits::MAX_THREADS, "MAX_THREADS")?;
    let options = nac::eval::EvalOptions { out: out.clone(), threads, progress: true };
    let report = nac::eval::run(&mut engine, config, &options)?;
    out!("{}", nac::eval::report::markdown(&report));
    out!("{what}: wrote {}/results.{{json,csv,md}} and pictures/ in {:.1} s", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn shift(gpu: Device, config: &nac::eval::shift::ShiftConfig, out: PathBuf, threads: Option<usize>) -> Result<()> {
    let started = Instant::now();
    let mut engine = engine_for_batch(gpu, config.batch)?;
    eprintln!("shift: {} ({:?})", engine.gpu.info.name, engine.gpu.info.backend);
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    limits::check("--threads", threads, limits::MAX_THREADS, "MAX_THREADS")?;
    let options = nac::eval::EvalOptions { out: out.clone(), threads, progress: true };
    let report = nac::eval::shift::run(&mut engine, config, &options)?;
    out!("{}", nac::eval::shift::markdown(&report));
    out!("shift: wrote {}/results.{{json,csv,md}} and pictures/ in {:.1} s", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn bench(gpu: Device, settings: nac::bench::BenchSettings, out: &Path) -> Result<()> {
    limits::check("--size", settings.size, limits::MAX_IMAGE_SIDE, "MAX_IMAGE_SIDE")?;
    check_writable(out)?;
    let engine = engine_for_batch(gpu, settings.batch)?;
    let report = nac::bench::run_bench(&engine, &settings)?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Input(format!("serialising the benchmark: {e}")))?;
    write_atomic(out, json.as_bytes())?;
    out!("{json}");
    Ok(())
}

fn info(options: &GpuOptions) -> Result<()> {
    // Fails with an explanation of how to get an adapter when there is none.
    let engine = Engine::new(EngineOptions { gpu: options.clone(), ..Default::default() })?;
    let adapters = list_adapters(options)?;
    out!("{} adapter(s):\n", adapters.len());
    for a in &adapters {
        let chosen = a.get_info().name == engine.gpu.info.name && a.get_info().backend == engine.gpu.info.backend;
        write_stdout(format_args!("{}{}", if chosen { "* " } else { "  " }, describe_adapter(a)));
    }
    out!("\n* = used by nac (override with --adapter/--backend or NAC_ADAPTER/NAC_BACKEND)");
    Ok(())
}

/// A float32 N×C×H×W array and its shape.
fn load_images(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    let array = NpyArray::load(path)?;
    let data = array.to_f32(path)?;
    let shape: [usize; 4] =
        array.shape.as_slice().try_into().map_err(|_| {
            Error::Input(format!("{}: expected a 4-D float32 array N×3×H×W, found shape {:?}", path.display(), array.shape))
        })?;
    Ok((data, shape))
}

fn load_labels(path: &Path, samples: usize) -> Result<Vec<usize>> {
    let labels = NpyArray::load(path)?.to_labels(path)?;
    if labels.len() != samples {
        return Err(Error::Input(format!("{}: {} labels for {samples} input samples", path.display(), labels.len())));
    }
    Ok(labels)
}

fn progress_bar(what: &str, len: usize) -> ProgressBar {
    ProgressBar::new(len as u64).with_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} images, {{per_sec}}, eta {{eta}}")).unwrap(),
    )
}

fn predict(gpu: Device, model: PathBuf, source: &SourceArgs, out: PathBuf, run: &RunArgs) -> Result<()> {
    let shard = source.shard()?;
    let source = source.open()?;
    check_writable(&out)?;
    let mut engine = run.engine(gpu)?;
    let mut model = engine.load_model(&model, run.arch()?)?;
    let selected = source.select(None, shard)?;
    let samples = selected.as_ref().map_or(source.len(), Vec::len);
    let progress = progress_bar("predict", samples * source.runs());
    engine.set_progress(Some(progress.clone()));
    let mut attacker = source.attacker(&engine, &model.network);
    let mut logits = Vec::new();
    for batch in source.batches(selected.as_deref(), run.batch, attacker.as_mut()) {
        let (first, input, shape) = batch?;
        let part =
            engine.predict(&mut model, &input, shape).map_err(|e| e.locate_sample(|i| source.locate(selected.as_deref(), first + i)))?;
        logits.extend(part);
    }
    progress.finish_and_clear();
    let classes = model.network.num_classes();
    NpyArray::from_f32(vec![samples, classes], &logits).save(&out)?;
    eprintln!("wrote {} ({samples}×{classes} logits) using {}", out.display(), engine.gpu.info.name);
    Ok(())
}

/// The input side of a random network when `--size` is not given: 32, or a ViT's image size.
fn default_side(arch: ArchSpec) -> usize {
    match arch {
        ArchSpec::VisionTransformer(v) if v.image > 0 => v.image,
        _ => 32,
    }
}

fn selfcheck(gpu: Device, arch: &str, batch: usize, size: Option<usize>, seed: u64) -> Result<()> {
    let spec: ArchSpec = arch.parse()?;
    let size = size.unwrap_or_else(|| default_side(spec));
    limits::check("--size", size, limits::MAX_IMAGE_SIDE, "MAX_IMAGE_SIDE")?;
    limits::check("--batch", batch, limits::MAX_BATCH, "MAX_BATCH")?;
    limits::product("--batch × 3 × --size × --size", &[batch, 3, size, size])?;
    let engine = gpu.engine(EngineOptions::default().max_batch)?;
    out!("adapter: {} ({:?}, {:?})", engine.gpu.info.name, engine.gpu.info.backend, engine.gpu.info.device_type);
    let synthetic = SyntheticModel::new(spec, 10, seed)?;
    let mut model = engine.upload(synthetic.network.clone());
    let names = model.network.layer_names();
    let layers: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let shape = [batch, 3, size, size];
    let mut rng = Rng::new(seed.wrapping_add(1));
    let input: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal()).collect();

    let t = Instant::now();
    let got = engine.forward_backward(&mut model, &input, shape, &layers)?;
    let gpu_time = t.elapsed();
    let t = Instant::now();
    let want = reference::run(&synthetic.network, &input, shape, &layers)?;
    let cpu_time = t.elapsed();

    out!("{spec}, input {shape:?}: GPU pass {gpu_time:.2?} (first run, includes planning), CPU f64 reference {cpu_time:.2?}");
    let logits_err = reference::relative_error(&got.logits, &want.logits);
    out!("  logits   rel err {logits_err:.2e} (tolerance 1e-4)");
    let mut ok = logits_err <= 1e-4;
    for (g, w) in got.layers.iter().zip(&want.layers) {
        let (ez, eg) = (reference::relative_error(&g.z, &w.z), reference::relative_error(&g.g, &w.g));
        out!("  {:8} z rel err {ez:.2e}, g rel err {eg:.2e} (tolerance 1e-3)", g.name);
        ok &= ez <= 1e-3 && eg <= 1e-3;
    }
    if !ok {
        return Err(Error::Gpu(format!("selfcheck failed on {}: GPU results differ from the reference", engine.gpu.info.name)));
    }
    out!("ok: the GPU matches the CPU reference");
    Ok(())
}

struct ProfileJob {
    model: PathBuf,
    source: SourceArgs,
    labels: Option<PathBuf>,
    balanced: Option<usize>,
    seed: u64,
    layers: Option<Vec<String>>,
    preset: String,
    layer_params: Vec<String>,
    run: RunArgs,
    out: PathBuf,
}

fn profile(gpu: Device, job: ProfileJob) -> Result<()> {
    let shard = job.source.shard()?;
    let source = job.source.open()?;
    check_writable(&job.out)?;
    let mut engine = job.run.engine(gpu)?;
    let mut model = engine.load_model(&job.model, job.run.arch()?)?;
    let named: Preset = job.preset.parse()?;
    let preset = named.for_network(&model.network)?;
    if preset != named {
        eprintln!("{} is a Vision Transformer: preset {preset} (the official ViT values) instead of {named}", model.network.spec);
    }
    let layers = job.layers.unwrap_or_else(|| Preset::layers_for(&model.network));
    for layer in &layers {
        model.network.layer_index(layer)?;
    }
    let overrides = job.layer_params.iter().map(|t| LayerParams::parse(t)).collect::<Result<Vec<_>>>()?;
    let settings = params::resolve(&model.network, &layers, Some(preset), &overrides)?;
    let chosen = match job.balanced {
        None => None,
        Some(total) => {
            let labels = match (&source, &job.labels) {
                (Source::Stream { dataset, .. }, None) => dataset
                    .labels()
                    .ok_or_else(|| Error::Input(format!("--balanced needs labels, but `{}` has none", dataset.spec())))?
                    .to_vec(),
                (Source::Stream { .. }, Some(_)) => {
                    return Err(Error::Input("--labels goes with --input; a --data set brings its own labels".into()))
                }
                (Source::Array { .. }, Some(path)) => load_labels(path, source.len())?,
                (Source::Array { .. }, None) => return Err(Error::Input("--balanced needs --labels".into())),
            };
            let chosen = class_balanced_subset(&labels, model.network.num_classes(), total, job.seed)?;
            eprintln!("class-balanced subset: {} samples (seed {})", chosen.len(), job.seed);
            Some(chosen)
        }
    };
    let chosen = source.select(chosen, shard)?;
    let samples = chosen.as_ref().map_or(source.len(), Vec::len);
    let mut profile = Profile::new(&engine, &model.network, &settings, &source.preprocessing())?;
    profile.set_shard(shard);
    let bar = progress_bar("profile", samples * source.runs());
    engine.set_progress(Some(bar.clone()));
    let mut attacker = source.attacker(&engine, &model.network);
    profile
        .add_streamed(&engine, &mut model, samples, None, source.batches(chosen.as_deref(), job.run.batch, attacker.as_mut()))
        .map_err(source.locate_error(chosen.as_deref()))?;
    match &chosen {
        Some(indices) => profile.record_sources(indices.iter().copied()),
        None => profile.record_sources(0..source.len()),
    }
    profile.save(&engine, &job.out)?;
    bar.finish_and_clear();
    let described: Vec<String> = settings.iter().map(|p| p.to_string()).collect();
    eprintln!("wrote {} ({samples} samples; {}) using {}", job.out.display(), described.join(" "), engine.gpu.info.name);
    Ok(())
}

struct ScoreJob {
    model: PathBuf,
    profile: PathBuf,
    source: SourceArgs,
    layers: Option<Vec<String>>,
    run: RunArgs,
    out: PathBuf,
}

fn score(gpu: Device, job: ScoreJob) -> Result<()> {
    let shard = job.source.shard()?;
    let source = job.source.open()?;
    check_writable(&job.out)?;
    let mut engine = job.run.engine(gpu)?;
    let mut model = engine.load_model(&job.model, job.run.arch()?)?;
    let profile = Profile::load(&engine, &model.network, &job.profile)?;
    let in_profile = |e: Error| Error::Input(format!("profile {}: {e}", job.profile.display()));
    profile.check_preprocessing(&source.preprocessing()).map_err(in_profile)?;
    if let Some(layers) = &job.layers {
        profile.check_layers(layers).map_err(in_profile)?;
    }
    let selected = source.select(None, shard)?;
    let samples = selected.as_ref().map_or(source.len(), Vec::len);
    let bar = progress_bar("score", samples * source.runs());
    engine.set_progress(Some(bar.clone()));
    let mut attacker = source.attacker(&engine, &model.network);
    let batches = source.batches(selected.as_deref(), job.run.batch, attacker.as_mut());
    let scores = profile.score_streamed(&engine, &mut model, samples, batches).map_err(source.locate_error(selected.as_deref()))?;
    let csv = match shard {
        None => scores.to_csv(),
        Some(s) => {
            let text = scores.to_csv_from(s.range(source.len()).start);
            if s.index == 0 {
                text
            } else {
                text.split_once('\n').map_or(String::new(), |(_, rows)| rows.to_string())
            }
        }
    };
    write_atomic(&job.out, csv.as_bytes())?;
    bar.finish_and_clear();
    let mean = scores.score.iter().map(|&s| s as f64).sum::<f64>() / scores.score.len() as f64;
    eprintln!("wrote {} ({} samples, mean score {mean:.4}) using {}", job.out.display(), scores.score.len(), engine.gpu.info.name);
    Ok(())
}

struct ExportJob {
    data: String,
    preprocessing: Option<String>,
    balanced: Option<usize>,
    seed: u64,
    shard: Option<String>,
    batch: usize,
    threads: Option<usize>,
    out: PathBuf,
    labels_out: Option<PathBuf>,
    model: Option<PathBuf>,
    arch: Option<String>,
}

fn export(gpu: Device, job: ExportJob) -> Result<()> {
    let shard = job.shard.as_deref().map(Shard::parse).transpose()?;
    let dataset = Dataset::open(&job.data)?;
    limits::check("--batch", job.batch.max(1), limits::MAX_BATCH, "MAX_BATCH")?;
    // An adversarial set: the model it attacks, uploaded before anything is written.
    let attacked = match (dataset.adversarial(), &job.model, &job.preprocessing) {
        (None, None, _) => None,
        (None, Some(_), _) => return Err(Error::Input(format!("--model is for adversarial specs, and `{}` holds no attack", job.data))),
        (Some(_), None, _) => return Err(Error::Input(format!("`{}` is attacked against a model: give --model", job.data))),
        (Some(_), Some(_), None) => {
            return Err(Error::Input("an attack runs on the model input: give --preprocessing (the model's)".into()));
        }
        (Some(_), Some(path), Some(_)) => {
            let arch = job.arch.as_deref().map(str::parse).transpose()?;
            let network = nac::model::load(path, arch)?;
            Some((engine_for_batch(gpu, job.batch.max(1))?, network))
        }
    };
    let labels_out = job.labels_out.clone().unwrap_or_else(|| job.out.with_extension("labels.npy"));
    check_writable(&job.out)?;
    if dataset.labels().is_some() {
        check_writable(&labels_out)?;
    }
    let mut chosen: Vec<usize> = (0..dataset.len()).collect();
    if let Some(total) = job.balanced {
        let labels = dataset.labels().ok_or_else(|| Error::Input(format!("--balanced needs labels, but `{}` has none", dataset.spec())))?;
        let classes = labels.iter().max().map_or(0, |&m| m + 1);
        chosen = class_balanced_subset(labels, classes, total, job.seed)?;
    }
    if let Some(s) = shard {
        chosen = take_shard(chosen, s)?;
    }
    if chosen.is_empty() {
        return Err(Error::Input(format!("{}: no samples selected", dataset.spec())));
    }
    let bar = progress_bar("export", chosen.len());
    let first = dataset.image(chosen[0])?;
    nac::error::write_atomic_with(&job.out, |w| {
        let io = |e: std::io::Error| Error::io(&job.out, e);
        match &job.preprocessing {
            None => {
                let (h, w_, c) = (first.height as usize, first.width as usize, first.channels as usize);
                w.write_all(&nac::npy::header_bytes(NpyDtype::U8, &[chosen.len(), h, w_, c])).map_err(io)?;
                for &i in &chosen {
                    let image = dataset.image(i)?;
                    if (image.height, image.width, image.channels) != (first.height, first.width, first.channels) {
                        return Err(Error::Input(format!(
                            "{} is {}×{}×{}, but {} is {h}×{w_}×{c}: export without --preprocessing needs one image size (add resize/center_crop steps)",
                            dataset.locate(i),
                            image.height,
                            image.width,
                            image.channels,
                            dataset.locate(chosen[0])
                        )));
                    }
                    w.write_all(&image.pixels).map_err(io)?;
                    bar.inc(1);
                }
            }
            Some(p) => {
                let transform = Transform::parse(p)?;
                let (h, w_) = transform.output_size(&first)?;
                w.write_all(&nac::npy::header_bytes(NpyDtype::F32, &[chosen.len(), 3, h as usize, w_ as usize])).map_err(io)?;
                let threads = job.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
                limits::check("--threads", threads, limits::MAX_THREADS, "MAX_THREADS")?;
                let mut attacker = attacked.as_ref().and_then(|(engine, network)| Attacker::new(engine, network, &dataset, &transform));
                for b in data::batches(&dataset, &transform, Some(&chosen), job.batch.max(1), threads) {
                    let mut b = b?;
                    if let Some(attacker) = attacker.as_mut() {
                        attacker.attack(&mut b, Some(&chosen))?;
                    }
                    if b.shape[2..] != [h as usize, w_ as usize] {
                        return Err(Error::Input(format!(
                            "{} transforms to {}×{}, but the first sample to {h}×{w_}: one array needs one size",
                            dataset.locate(chosen[b.start]),
                            b.shape[2],
                            b.shape[3]
                        )));
                    }
                    w.write_all(bytemuck::cast_slice(&b.input)).map_err(io)?;
                    bar.inc(b.shape[0] as u64);
                }
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if let Some(labels) = dataset.labels() {
        NpyArray::from_labels(&chosen.iter().map(|&i| labels[i]).collect::<Vec<_>>()).save(&labels_out)?;
        eprintln!("wrote {} and {} ({} samples)", job.out.display(), labels_out.display(), chosen.len());
    } else {
        eprintln!("wrote {} ({} samples, no labels)", job.out.display(), chosen.len());
    }
    Ok(())
}

fn convert(input: &Path, out: &Path) -> Result<()> {
    check_writable(out)?;
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    if !nac::model::pth::is_pth(&bytes) {
        return Err(Error::Input(format!("{}: not a PyTorch zip checkpoint (torch.save of PyTorch ≥ 1.6)", input.display())));
    }
    let tensors = nac::model::pth::read(input, &bytes)?;
    let strip = tensors.iter().all(|t| t.name.starts_with("module."));
    let views = tensors
        .iter()
        .map(|t| {
            let name = if strip { &t.name["module.".len()..] } else { t.name.as_str() };
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Input(format!("{}: tensor `{name}`: {e}", input.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let st = safetensors::serialize(views, None).map_err(|e| Error::Input(format!("serialising {}: {e}", out.display())))?;
    let arch = nac::model::from_bytes(input, &bytes, None)
        .map(|n| n.spec.to_string())
        .unwrap_or_else(|e| format!("no architecture nac runs ({e})"));
    write_atomic(out, &st)?;
    eprintln!("wrote {} ({} tensors; {arch})", out.display(), tensors.len());
    Ok(())
}

fn merge(paths: &[PathBuf], out: &Path) -> Result<()> {
    check_writable(out)?;
    let parts = paths.iter().map(|p| ProfileData::load(p)).collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let merged = ProfileData::merge(&parts, &names)?;
    merged.save(out)?;
    eprintln!("wrote {} ({} profiles, {} samples)", out.display(), parts.len(), merged.header.samples);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn model_evaluation(
    gpu: Device,
    checkpoints: &[PathBuf],
    input: PathBuf,
    labels: PathBuf,
    accuracies: Option<Vec<f64>>,
    settings: &MeSettings,
    run: &RunArgs,
    out: Option<PathBuf>,
) -> Result<()> {
    let (data, shape) = load_images(&input)?;
    let labels = load_labels(&labels, shape[0])?;
    if let Some(path) = &out {
        check_writable(path)?;
    }
    let mut engine = run.engine(gpu)?;
    let bar = progress_bar("NAC-ME", shape[0] * checkpoints.len());
    engine.set_progress(Some(bar.clone()));
    let images = LabelledImages { input: &data, shape, labels: &labels };
    let report =
        evaluate_checkpoints(&engine, checkpoints, run.arch()?, images, settings, accuracies.as_deref()).map_err(in_input(&input))?;
    bar.finish_and_clear();
    out!("{:<48} {:>12} {:>12} {:>10}", "checkpoint", "NAC-ME", "train acc", "test acc");
    for (i, (path, r)) in report.checkpoints.iter().zip(&report.results).enumerate() {
        let test = report.test_accuracies.as_ref().map_or("-".to_string(), |a| format!("{:.4}", a[i]));
        let mark = if i == report.chosen { " <- chosen" } else { "" };
        out!("{:<48} {:>12.6e} {:>12.4} {:>10}{mark}", path.display(), r.value, r.correct as f64 / r.samples as f64, test);
    }
    match report.spearman {
        Some(rho) => out!("Spearman rank correlation (NAC-ME vs test accuracy): {rho:.4}"),
        None if report.test_accuracies.is_some() => {
            out!("Spearman rank correlation: undefined (fewer than two checkpoints, or a constant column)")
        }
        None => {}
    }
    if let Some(path) = out {
        let json = serde_json::json!({
            "settings": {"layer": settings.layer, "alpha": settings.alpha, "m": settings.m, "o": settings.o},
            "samples": shape[0],
            "checkpoints": report.checkpoints.iter().zip(&report.results).map(|(p, r)| serde_json::json!({
                "path": p.display().to_string(), "layer": r.layer, "nac_me": r.value, "correct": r.correct,
            })).collect::<Vec<_>>(),
            "test_accuracies": report.test_accuracies,
            "chosen": report.checkpoints[report.chosen].display().to_string(),
            "spearman": report.spearman,
        });
        write_atomic(&path, serde_json::to_string_pretty(&json).unwrap().as_bytes())?;
    }
    Ok(())
}
