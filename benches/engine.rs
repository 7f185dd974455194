//! Throughput of the NAC pass (forward + backward to every layer) and of the forward pass
//! alone, on random-weight networks, in images per second on the default adapter.
//! Run: `cargo bench --bench engine` (set NAC_ADAPTER to pick a GPU). On lavapipe this only
//! shows that the path runs; speed figures come from a real GPU (see ARCHITECTURE.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use nac::model::synthetic::SyntheticModel;
use nac::model::ArchSpec;
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
    }
    group.finish();
}

criterion_group!(benches, bench_pass);
criterion_main!(benches);
