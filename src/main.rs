//! The `nac` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use nac::gpu::{describe_adapter, list_adapters, GpuOptions};
use nac::model::synthetic::SyntheticModel;
use nac::model::ArchSpec;
use nac::npy::NpyArray;
use nac::rng::Rng;
use nac::{reference, Engine, EngineOptions, Error, Result};

#[derive(Parser)]
#[command(name = "nac", version, about = "Neuron Activation Coverage on any GPU (wgpu + WGSL)")]
struct Cli {
    /// wgpu backend(s): vulkan, metal, dx12, gl (default: all; env NAC_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (env NAC_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
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
        /// Input array, float32, shape N×3×H×W.
        #[arg(long)]
        input: PathBuf,
        /// Output .npy (float32, N×classes).
        #[arg(long)]
        out: PathBuf,
        /// Architecture, when detection from tensor names is not wanted
        /// (resnet18_32x32, resnet18/34/50/101/152, wrn-DEPTH-WIDTH).
        #[arg(long)]
        arch: Option<String>,
        /// Samples per GPU submission.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Check this adapter's numbers: a random-weight network, forward + backward to every
    /// layer on the GPU, compared with the f64 CPU reference.
    Selfcheck {
        #[arg(long, default_value = "resnet18_32x32")]
        arch: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Input height and width.
        #[arg(long, default_value_t = 32)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let gpu = GpuOptions::from_env().with_overrides(cli.backend.clone(), cli.adapter.clone());
    let result = match cli.command {
        Command::Info => info(&gpu),
        Command::Predict { model, input, out, arch, batch } => predict(gpu, model, input, out, arch, batch),
        Command::Selfcheck { arch, batch, size, seed } => selfcheck(gpu, &arch, batch, size, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(options: &GpuOptions) -> Result<()> {
    // Fails with an explanation of how to get an adapter when there is none.
    let engine = Engine::new(EngineOptions { gpu: options.clone(), ..Default::default() })?;
    let adapters = list_adapters(options)?;
    println!("{} adapter(s):\n", adapters.len());
    for a in &adapters {
        let chosen = a.get_info().name == engine.gpu.info.name && a.get_info().backend == engine.gpu.info.backend;
        print!("{}{}", if chosen { "* " } else { "  " }, describe_adapter(a));
    }
    println!("\n* = used by nac (override with --adapter/--backend or NAC_ADAPTER/NAC_BACKEND)");
    Ok(())
}

fn parse_arch(arch: Option<String>) -> Result<Option<ArchSpec>> {
    arch.map(|a| a.parse()).transpose()
}

fn predict(gpu: GpuOptions, model: PathBuf, input: PathBuf, out: PathBuf, arch: Option<String>, batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::Input("--batch must be at least 1".into()));
    }
    let array = NpyArray::load(&input)?;
    let data = array.to_f32(&input)?;
    let shape: [usize; 4] = array.shape.as_slice().try_into().map_err(|_| {
        Error::Input(format!("{}: expected a 4-D float32 array N×3×H×W, found shape {:?}", input.display(), array.shape))
    })?;
    let engine = Engine::new(EngineOptions { gpu, max_batch: batch, ..Default::default() })?;
    let mut model = engine.load_model(&model, parse_arch(arch)?)?;
    let per_sample = shape[1] * shape[2] * shape[3];
    let progress = ProgressBar::new(shape[0] as u64).with_style(
        ProgressStyle::with_template("{spinner} predict [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}").unwrap(),
    );
    let mut logits = Vec::with_capacity(shape[0] * model.network.num_classes());
    for start in (0..shape[0]).step_by(batch) {
        let n = batch.min(shape[0] - start);
        let chunk = &data[start * per_sample..(start + n) * per_sample];
        logits.extend(engine.predict(&mut model, chunk, [n, shape[1], shape[2], shape[3]])?);
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    NpyArray::from_f32(vec![shape[0], model.network.num_classes()], &logits).save(&out)?;
    eprintln!("wrote {} ({}×{} logits) using {}", out.display(), shape[0], model.network.num_classes(), engine.gpu.info.name);
    Ok(())
}

fn selfcheck(gpu: GpuOptions, arch: &str, batch: usize, size: usize, seed: u64) -> Result<()> {
    let spec: ArchSpec = arch.parse()?;
    let engine = Engine::new(EngineOptions { gpu, ..Default::default() })?;
    println!("adapter: {} ({:?}, {:?})", engine.gpu.info.name, engine.gpu.info.backend, engine.gpu.info.device_type);
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

    println!("{spec}, input {shape:?}: GPU pass {gpu_time:.2?} (first run, includes planning), CPU f64 reference {cpu_time:.2?}");
    let logits_err = reference::relative_error(&got.logits, &want.logits);
    println!("  logits   rel err {logits_err:.2e} (tolerance 1e-4)");
    let mut ok = logits_err <= 1e-4;
    for (g, w) in got.layers.iter().zip(&want.layers) {
        let (ez, eg) = (reference::relative_error(&g.z, &w.z), reference::relative_error(&g.g, &w.g));
        println!("  {:8} z rel err {ez:.2e}, g rel err {eg:.2e} (tolerance 1e-3)", g.name);
        ok &= ez <= 1e-3 && eg <= 1e-3;
    }
    if !ok {
        return Err(Error::Gpu(format!("selfcheck failed on {}: GPU results differ from the reference", engine.gpu.info.name)));
    }
    println!("ok: the GPU matches the CPU reference");
    Ok(())
}
