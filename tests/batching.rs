//! Batching invariants: per-sample results must not depend on batch size, batch order,
//! chunking or a mix of input sizes in one set (each input size runs its own plan, and a plan
//! can be rebuilt with more capacity mid-set). Property tests shuffle all of them against each
//! sample computed on its own.

mod common;

use nac::kernels::WeightStorage;
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::ArchSpec;
use nac::nac::{LayerParams, PooledStates, Profile};
use nac::rng::Rng;
use nac::{Engine, EngineOptions, Model};

const LAYERS: [&str; 3] = ["avgpool", "block3", "block1"];
const SIZES: [usize; 3] = [8, 12, 10];

fn model(engine: &Engine) -> Model {
    engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, 21).unwrap().network)
}

/// One sample of a set: its side and its `3 × side × side` values.
struct Sample {
    side: usize,
    input: Vec<f32>,
}

fn samples(rng: &mut Rng, n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let side = SIZES[rng.below(SIZES.len())];
            Sample { side, input: random_inputs(1, 3, side, side, 100 + i as u64) }
        })
        .collect()
}

/// A partition of `0..samples.len()` into ranges of equal input size, cut at every size change
/// and at random places, returned in a random order whose first range is a single sample (so a
/// later, larger batch of the same size rebuilds that plan with more capacity).
fn shuffled_batches(rng: &mut Rng, samples: &[Sample]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for i in 1..=samples.len() {
        if i == samples.len() || samples[i].side != samples[i - 1].side || rng.below(3) == 0 {
            ranges.push(start..i);
            start = i;
        }
    }
    for i in (1..ranges.len()).rev() {
        ranges.swap(i, rng.below(i + 1));
    }
    if let Some(single) = ranges.iter().position(|r| r.len() == 1) {
        ranges.swap(0, single);
    }
    ranges
}

fn batch_of(samples: &[Sample], range: std::ops::Range<usize>) -> (usize, Vec<f32>, [usize; 4]) {
    let side = samples[range.start].side;
    let input = samples[range.clone()].iter().flat_map(|s| s.input.iter().copied()).collect();
    (range.start, input, [range.len(), 3, side, side])
}

/// One sample's pooled pairs per layer, and its (class, max softmax, energy).
type SampleResult = (Vec<Vec<f32>>, (usize, f32, f32));

/// Per sample: each layer's pooled pairs and the prediction summary.
fn per_sample(engine: &Engine, pooled: &PooledStates) -> Vec<SampleResult> {
    per_sample_of(engine, pooled, &LAYERS)
}

fn per_sample_of(engine: &Engine, pooled: &PooledStates, layers: &[&str]) -> Vec<SampleResult> {
    let layers: Vec<Vec<f32>> = layers.iter().map(|l| pooled.read_values(engine, l).unwrap()).collect();
    let predicted = pooled.predictions();
    (0..pooled.samples)
        .map(|i| {
            let pairs = layers
                .iter()
                .map(|v| {
                    let per = v.len() / pooled.samples;
                    v[i * per..(i + 1) * per].to_vec()
                })
                .collect();
            (pairs, (predicted.class[i], predicted.max_softmax[i], predicted.energy[i]))
        })
        .collect()
}

/// Pooling a set whose batches mix input sizes, arrive in any order and in any sizes (first a
/// single sample), on engines that chunk differently, gives every sample exactly what pooling
/// it alone gives.
#[test]
fn pooled_pairs_do_not_depend_on_batching_order_or_input_sizes() {
    check_pooling_invariance(WeightStorage::F32, 7);
}

/// The same with f16 arithmetic in the conv kernels: each output's f16 sum runs in the same
/// order whatever the batch.
#[test]
fn f16_arithmetic_pooled_pairs_do_not_depend_on_batching() {
    check_pooling_invariance(WeightStorage::F16Compute, 8);
}

fn check_pooling_invariance(weights: WeightStorage, seed: u64) {
    let mut rng = Rng::new(seed);
    let set = samples(&mut rng, 13);
    let alone_engine = common::engine_with(EngineOptions { weights, ..EngineOptions::default() });
    let mut alone_model = model(&alone_engine);
    let alone: Vec<_> = set
        .iter()
        .map(|s| {
            let pooled = PooledStates::compute(&alone_engine, &mut alone_model, &s.input, [1, 3, s.side, s.side], &LAYERS, None).unwrap();
            per_sample(&alone_engine, &pooled).remove(0)
        })
        .collect();
    assert!(alone.windows(2).any(|w| w[0].0 != w[1].0), "samples must differ, or the test proves nothing");

    for (trial, max_batch) in [64, 3, 2, 5].into_iter().enumerate() {
        let engine = common::engine_with(EngineOptions { max_batch, weights, ..EngineOptions::default() });
        let mut model = model(&engine);
        let ranges = shuffled_batches(&mut rng, &set);
        let batches: Vec<_> = ranges.iter().map(|r| Ok(batch_of(&set, r.clone()))).collect();
        let pooled = PooledStates::compute_streamed(&engine, &mut model, set.len(), &LAYERS, None, batches).unwrap();
        for (i, (got, want)) in per_sample(&engine, &pooled).iter().zip(&alone).enumerate() {
            assert!(
                got == want,
                "{} trial {trial} (max batch {max_batch}, batches {ranges:?}): sample {i} of side {} differs from pooling it alone",
                weights.name(),
                set[i].side
            );
        }
    }
}

/// A Vision Transformer's pooled pairs (class token of `encoder.ln`, token sums of `ln_2`):
/// attention mixes the tokens of a sample, never the samples of a batch, so any batching and
/// chunking gives each sample what pooling it alone gives, bit for bit.
#[test]
fn vit_pooled_pairs_do_not_depend_on_batching() {
    let spec = ArchSpec::VisionTransformer(nac::model::arch::VitSpec { image: 8, patch: 4, depth: 2, width: 12, heads: 3, mlp: 16 });
    let network = SyntheticModel::new(spec, 4, 5).unwrap().network;
    let layers = ["layer_norm", "layer_1", "layer_0"];
    let mut rng = Rng::new(9);
    let set: Vec<Sample> = (0..9).map(|i| Sample { side: 8, input: random_inputs(1, 3, 8, 8, 200 + i) }).collect();
    let alone_engine = common::engine();
    let mut alone_model = alone_engine.upload(network.clone());
    let alone: Vec<_> = set
        .iter()
        .map(|s| {
            let pooled = PooledStates::compute(&alone_engine, &mut alone_model, &s.input, [1, 3, 8, 8], &layers, None).unwrap();
            per_sample_of(&alone_engine, &pooled, &layers).remove(0)
        })
        .collect();
    assert!(alone.windows(2).any(|w| w[0].0 != w[1].0), "samples must differ, or the test proves nothing");
    for (trial, max_batch) in [64, 2, 4].into_iter().enumerate() {
        let engine = common::engine_with(EngineOptions { max_batch, ..EngineOptions::default() });
        let mut model = engine.upload(network.clone());
        let ranges = shuffled_batches(&mut rng, &set);
        let batches: Vec<_> = ranges.iter().map(|r| Ok(batch_of(&set, r.clone()))).collect();
        let pooled = PooledStates::compute_streamed(&engine, &mut model, set.len(), &layers, None, batches).unwrap();
        for (i, (got, want)) in per_sample_of(&engine, &pooled, &layers).iter().zip(&alone).enumerate() {
            assert!(got == want, "trial {trial} (max batch {max_batch}, batches {ranges:?}): sample {i} differs from pooling it alone");
        }
    }
}

/// Profiles and scores: adding the same samples in other batch sizes and orders (a small first
/// batch, then larger ones that rebuild the plan) gives the same histograms, and scoring a
/// shuffled set gives each sample its own score.
#[test]
fn profiles_and_scores_do_not_depend_on_batching() {
    let mut rng = Rng::new(8);
    let side = 12;
    let n = 11;
    let input = random_inputs(n, 3, side, side, 5);
    let per = 3 * side * side;
    let params: Vec<LayerParams> = vec![
        LayerParams::new("avgpool", 2.0, 50, 10.0),
        LayerParams::new("block3", 1.0, 500, 100.0),
        LayerParams::new("block1", 3.0, 50, 0.01),
    ];

    let whole_engine = common::engine();
    let mut whole_model = model(&whole_engine);
    let mut whole = Profile::new(&whole_engine, &whole_model.network, &params, "").unwrap();
    whole.add(&whole_engine, &mut whole_model, &input, [n, 3, side, side]).unwrap();
    let counts = whole.counts(&whole_engine).unwrap();
    let scores = whole.score(&whole_engine, &mut whole_model, &input, [n, 3, side, side]).unwrap();
    assert!(counts.iter().all(|c| c.iter().sum::<u32>() > 0));

    for max_batch in [4, 64, 2] {
        let engine = common::engine_with(EngineOptions { max_batch, ..EngineOptions::default() });
        let mut model = model(&engine);
        let mut profile = Profile::new(&engine, &model.network, &params, "").unwrap();
        let mut start = 0;
        for len in [1, 7, 3] {
            profile.add(&engine, &mut model, &input[start * per..(start + len) * per], [len, 3, side, side]).unwrap();
            start += len;
        }
        assert_eq!(profile.counts(&engine).unwrap(), counts, "max batch {max_batch}");

        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let shuffled: Vec<f32> = order.iter().flat_map(|&i| input[i * per..(i + 1) * per].iter().copied()).collect();
        let got = profile.score(&engine, &mut model, &shuffled, [n, 3, side, side]).unwrap();
        for (k, &i) in order.iter().enumerate() {
            assert_eq!(got.score[k], scores.score[i], "max batch {max_batch}: sample {i} scored at position {k}");
            assert_eq!(got.predicted[k], scores.predicted[i]);
        }
    }
}

/// A profile fed batches of two input sizes scores each sample as a profile fed them in one
/// order would: the histogram calls follow the plan that ran each batch.
#[test]
fn profiles_of_mixed_input_sizes_equal_per_size_profiles() {
    let engine = common::engine_with(EngineOptions { max_batch: 3, ..EngineOptions::default() });
    let mut m = model(&engine);
    let params = vec![LayerParams::new("avgpool", 2.0, 50, 10.0), LayerParams::new("block2", 1.0, 50, 1.0)];
    let small = random_inputs(5, 3, 8, 8, 31);
    let large = random_inputs(4, 3, 16, 16, 32);
    let mut mixed = Profile::new(&engine, &m.network, &params, "").unwrap();
    mixed.add(&engine, &mut m, &small[..3 * 64], [1, 3, 8, 8]).unwrap();
    mixed.add(&engine, &mut m, &large, [4, 3, 16, 16]).unwrap();
    mixed.add(&engine, &mut m, &small[3 * 64..], [4, 3, 8, 8]).unwrap();

    let other = common::engine();
    let mut m2 = model(&other);
    let mut reference = Profile::new(&other, &m2.network, &params, "").unwrap();
    reference.add(&other, &mut m2, &large, [4, 3, 16, 16]).unwrap();
    reference.add(&other, &mut m2, &small, [5, 3, 8, 8]).unwrap();
    assert_eq!(mixed.counts(&engine).unwrap(), reference.counts(&other).unwrap());
}

/// `nac eval` on image folders whose image size changes from one batch to the next (no resize
/// in the preprocessing), with the same four images as ID test set and, in another order, as
/// OOD set: the only right AUROC for every method is 50 %.
#[test]
fn eval_of_mixed_size_folders_scores_identical_sets_alike() {
    let dir = common::temp_dir("batching-eval");
    let (images, reversed) = (dir.join("images"), dir.join("reversed"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&reversed).unwrap();
    for (i, side) in [8u32, 8, 12, 12].into_iter().enumerate() {
        let img = image::GrayImage::from_fn(side, side, |x, y| image::Luma([((x * 31 + y * 17 + i as u32 * 57) % 256) as u8]));
        img.save(images.join(format!("{i}.png"))).unwrap();
        img.save(reversed.join(format!("{}.png", 3 - i))).unwrap();
    }
    let model = dir.join("model.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 9)
        .unwrap()
        .save(&model, nac::model::weights::StorageDtype::F32)
        .unwrap();
    let (folder, other_order) = (format!("folder:{}", images.display()), format!("folder:{}", reversed.display()));
    let config = format!(
        "preprocessing = \"gray2rgb\"\nbatch = 2\npictures = false\n[[models]]\npath = \"{}\"\n[profile]\ndata = \"{folder}\"\n[id]\ntest = \"{folder}\"\n[[ood]]\nname = \"same\"\ngroup = \"near\"\ndata = \"{other_order}\"\n[nac]\nlayers = [\"avgpool\", \"block3\", \"block1\"]\n",
        model.display()
    );
    let path = dir.join("eval.toml");
    std::fs::write(&path, config).unwrap();
    let config = nac::eval::EvalConfig::load(&path).unwrap();
    let mut engine = common::engine();
    let options = nac::eval::EvalOptions { out: dir.join("out"), threads: 2, progress: false };
    let report = nac::eval::run(&mut engine, &config, &options).unwrap();
    for method in &report.models[0].methods {
        assert_eq!(method.sets[0].metrics.auroc, 0.5, "{}: identical ID and OOD sets", method.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A whole set streamed through `add_streamed` / `score_streamed` in shuffled batches of mixed
/// input sizes equals adding and scoring each sample on its own.
#[test]
fn streamed_profiles_and_scores_equal_per_sample_runs() {
    let mut rng = Rng::new(9);
    let set = samples(&mut rng, 11);
    let params = vec![LayerParams::new("avgpool", 2.0, 50, 10.0), LayerParams::new("block2", 1.0, 500, 1.0)];
    let alone_engine = common::engine();
    let mut alone_model = model(&alone_engine);
    let mut alone = Profile::new(&alone_engine, &alone_model.network, &params, "").unwrap();
    for s in &set {
        alone.add(&alone_engine, &mut alone_model, &s.input, [1, 3, s.side, s.side]).unwrap();
    }
    let alone_scores: Vec<f32> =
        set.iter().map(|s| alone.score(&alone_engine, &mut alone_model, &s.input, [1, 3, s.side, s.side]).unwrap().score[0]).collect();

    for max_batch in [64, 2] {
        let engine = common::engine_with(EngineOptions { max_batch, ..EngineOptions::default() });
        let mut m = model(&engine);
        let mut streamed = Profile::new(&engine, &m.network, &params, "").unwrap();
        let batches: Vec<_> = shuffled_batches(&mut rng, &set).into_iter().map(|r| Ok(batch_of(&set, r))).collect();
        streamed.add_streamed(&engine, &mut m, set.len(), None, batches).unwrap();
        assert_eq!(streamed.counts(&engine).unwrap(), alone.counts(&alone_engine).unwrap(), "max batch {max_batch}");
        let batches: Vec<_> = shuffled_batches(&mut rng, &set).into_iter().map(|r| Ok(batch_of(&set, r))).collect();
        let scores = streamed.score_streamed(&engine, &mut m, set.len(), batches).unwrap();
        assert_eq!(scores.score, alone_scores, "max batch {max_batch}");
    }
}
