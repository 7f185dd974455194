//! Throughput of the NAC pass (forward + backward to every layer), of the forward pass alone,
//! of profiling and scoring fused into the pass, and of re-binning cached pooled pairs (one
//! parameter-search combination), on random-weight networks, on the default adapter.
//! Run: `cargo bench --bench engine` (set NAC_ADAPTER to pick a GPU). On lavapipe this only
//! shows that the path runs; speed figures come from a real GPU (see ARCHITECTURE.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use nac::model::synthetic::SyntheticModel;
use nac::model::ArchSpec;
use nac::nac::{params, CachedValues, PooledStates, Preset, Profile};
use nac::rng::Rng;
use nac::{Engine, EngineOptions};

fn bench_pass(c: &mut Criterion) {
    let engine = Engine::new(EngineOptions::default()).expect("benchmarks need a GPU adapter");
    let on_cpu = engine.gpu.info.device_type == wgpu::DeviceType::Cpu;
    let batch = if on_cpu { 2 } else { 128 };
    let mut group = c.benchmark_group(format!("pass/{}", engine.gpu.info.name));
    group.sample_size(10);
    for (spec, size) in [(ArchSpec::ResNet18_32x32, 32), (ArchSpec::WideResNet { depth: 16, width: 4 }, 32)] {
        let synthetic = SyntheticModel::new(spec, 10, 0).unwrap();
        let mut model = engine.upload(synthetic.network);
        let shape = [batch, 3, size, size];
        let mut rng = Rng::new(1);
        let input: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal()).collect();
        let names = model.network.layer_names();
        let layers: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        group.throughput(Throughput::Elements(batch as u64));
        // Warm-up builds the plans, so the timed loop measures only batches.
        engine.forward_backward(&mut model, &input, shape, &layers).unwrap();
        engine.predict(&mut model, &input, shape).unwrap();
        group.bench_function(BenchmarkId::new("forward+backward", spec), |b| {
            b.iter(|| engine.forward_backward(&mut model, &input, shape, &layers).unwrap())
        });
        group.bench_function(BenchmarkId::new("forward", spec), |b| b.iter(|| engine.predict(&mut model, &input, shape).unwrap()));
        // NAC-UE scoring fused into the pass (official layers, CIFAR-10 defaults): compare
        // with forward+backward to see what the NAC kernels add.
        let official = Preset::layers_for(&model.network);
        let settings = params::resolve(&model.network, &official, Some(Preset::Cifar10), &[]).unwrap();
        let mut profile = Profile::new(&engine, &model.network, &settings, "bench").unwrap();
        profile.add(&engine, &mut model, &input, shape).unwrap();
        group.bench_function(BenchmarkId::new("profile+score", spec), |b| {
            b.iter(|| profile.score(&engine, &mut model, &input, shape).unwrap())
        });
    }
    group.finish();
}

/// One parameter-search step on cached pairs: profile 1000 samples and score 1000 more, for the
/// ResNet18_32x32 official layers (avgpool 512, layer3 256, layer2 128, layer1 64 neurons).
fn bench_rebinning(c: &mut Criterion) {
    let engine = Engine::new(EngineOptions::default()).expect("benchmarks need a GPU adapter");
    let network = SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 0).unwrap().network;
    let layers = [("avgpool", 512usize), ("layer3", 256), ("layer2", 128), ("layer1", 64)];
    let samples = 1000;
    let mut rng = Rng::new(2);
    let pairs: Vec<Vec<f32>> = layers.iter().map(|(_, n)| (0..samples * n * 2).map(|_| rng.normal() * 0.1).collect()).collect();
    let refs: Vec<(&str, usize, &[f32])> = layers.iter().zip(&pairs).map(|((l, n), p)| (*l, *n, p.as_slice())).collect();
    let cache = PooledStates::from_host(&engine, &network.fingerprint(), CachedValues::Pairs, samples, &refs, None).unwrap();
    let names: Vec<String> = layers.iter().map(|(l, _)| l.to_string()).collect();
    let settings = params::resolve(&network, &names, Some(Preset::Cifar10), &[]).unwrap();
    let mut group = c.benchmark_group(format!("rebin/{}", engine.gpu.info.name));
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * samples as u64));
    group.bench_function("profile+score 1000+1000 cached samples", |b| {
        b.iter(|| {
            let mut profile = Profile::new(&engine, &network, &settings, "bench").unwrap();
            profile.add_pooled(&engine, &cache).unwrap();
            profile.score_pooled(&engine, &cache).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_pass, bench_rebinning);
criterion_main!(benches);
