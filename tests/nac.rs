//! NAC kernels and the profile library against independent CPU references (f64): binning of
//! states on and around every edge, histograms with and without workgroup accumulation, scores,
//! pooled pairs of a real pass, chunking, sharded profiling + merge, and profile files.

mod common;

use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::ArchSpec;
use nac::nac::{BinEdges, Binning, CachedValues, Counted, LayerParams, ModelIdentity, PooledStates, Profile, ProfileData};
use nac::rng::Rng;
use nac::{Engine, EngineOptions, Model};

fn identity() -> ModelIdentity {
    ModelIdentity { arch: "test".into(), fingerprint: "test:0".into() }
}

/// States that probe the binning: each f32 threshold, its f32 predecessor, the nearest f32 to
/// each float64 edge, 0, 1, 0.5, values above the last edges, and uniform random values.
fn probing_states(edges: &BinEdges, rng: &mut Rng, count: usize) -> Vec<f32> {
    let mut special: Vec<f32> = vec![0.0, 1.0, 0.5, 1.01, 1.1, 1.2, 1.5, f32::MIN_POSITIVE, 1.0 - f32::EPSILON / 2.0];
    for (&t, &e) in edges.thresholds.iter().zip(&edges.edges) {
        special.extend([t, f32::from_bits(t.to_bits().saturating_sub(1)), e as f32, f32::from_bits(t.to_bits() + 1)]);
    }
    (0..count).map(|i| if i % 2 == 0 { special[rng.below(special.len())] } else { rng.next_f64() as f32 }).collect()
}

/// CPU histogram `[bins][neurons]` with the official float64 comparison.
fn cpu_histogram(states: &[f32], neurons: usize, edges: &BinEdges) -> Vec<u32> {
    let mut counts = vec![0u32; edges.bins() * neurons];
    for (i, &s) in states.iter().enumerate() {
        if let Some(b) = edges.bin_of(s) {
            counts[b * neurons + i % neurons] += 1;
        }
    }
    counts
}

fn state_cache(engine: &Engine, samples: usize, layers: &[(&str, usize, &[f32])]) -> PooledStates {
    PooledStates::from_host(engine, "test:0", CachedValues::States, samples, layers, None).unwrap()
}

#[test]
fn histograms_of_states_on_every_edge_match_float64_binning() {
    let engine = common::engine();
    let mut rng = Rng::new(41);
    // M = 5000 has 4999 bins, more than workgroup memory holds: the global-atomics path.
    for (m, binning) in [
        (4, Binning::LogSymmetric),
        (50, Binning::LogSymmetric),
        (51, Binning::Uniform),
        (500, Binning::LogSymmetric),
        (1000, Binning::LogSymmetric),
        (5000, Binning::LogSymmetric),
    ] {
        for (samples, neurons) in [(1, 1), (37, 7), (5, 65), (3, 257)] {
            let edges = binning.edges(m).unwrap();
            let states = probing_states(&edges, &mut rng, samples * neurons);
            let layer = LayerParams::new("x", 1.0, m, 1.0);
            let mut profile = Profile::for_layout(&engine, &identity(), &[(layer, neurons)], "", binning, Counted::All).unwrap();
            profile.add_pooled(&engine, &state_cache(&engine, samples, &[("x", neurons, &states)])).unwrap();
            let got = profile.counts(&engine).unwrap().remove(0);
            assert_eq!(got, cpu_histogram(&states, neurons, &edges), "M {m} {binning:?}, {samples}×{neurons}");
            // A state of exactly 1.0 is counted in the bin ending at 1.01 (log-symmetric) and in
            // no bin (uniform); only states above 1, which a sigmoid never makes, reach [1.01, 1.2).
            let one = edges.bin_of(1.0);
            assert_eq!(one, if binning == Binning::LogSymmetric { Some(edges.bins() - 2) } else { None });
        }
    }
}

#[test]
fn scores_of_states_match_the_cpu_reference() {
    let engine = common::engine();
    let mut rng = Rng::new(42);
    let layers = [
        ("a", 65usize, LayerParams::new("a", 3.0, 50, 1.0)),
        ("b", 7, LayerParams::new("b", 1.5, 500, 1.0)),
        ("c", 300, LayerParams::new("c", 2.0, 1000, 1.0)),
    ];
    let (profiled, scored) = (33usize, 9usize);
    let mut profile = Profile::for_layout(
        &engine,
        &identity(),
        &layers.iter().map(|(_, n, p)| (p.clone(), *n)).collect::<Vec<_>>(),
        "",
        Binning::LogSymmetric,
        Counted::All,
    )
    .unwrap();
    let make = |rng: &mut Rng, samples: usize| -> Vec<Vec<f32>> {
        layers.iter().map(|(_, n, p)| probing_states(&BinEdges::log_symmetric(p.m).unwrap(), rng, samples * n)).collect()
    };
    let (train, test) = (make(&mut rng, profiled), make(&mut rng, scored));
    let cache = |values: &[Vec<f32>], samples| {
        let refs: Vec<(&str, usize, &[f32])> = layers.iter().zip(values).map(|((name, n, _), v)| (*name, *n, v.as_slice())).collect();
        state_cache(&engine, samples, &refs)
    };
    profile.add_pooled(&engine, &cache(&train, profiled)).unwrap();
    let scores = profile.score_pooled(&engine, &cache(&test, scored)).unwrap();
    let coverage = profile.coverage(&engine).unwrap();
    for (l, (_, neurons, p)) in layers.iter().enumerate() {
        let edges = BinEdges::log_symmetric(p.m).unwrap();
        let counts = cpu_histogram(&train[l], *neurons, &edges);
        // Coverage (the NAC-ME reduction), every layer from one dispatch each in one pass.
        let want: f64 = counts.iter().map(|&c| (c as f64 / p.o).min(1.0)).sum::<f64>() / p.m as f64 / *neurons as f64;
        assert!((coverage[l] - want).abs() <= 1e-6, "layer {l} coverage {} vs {want}", coverage[l]);
        for t in 0..scored {
            let want: f64 = (0..*neurons)
                .map(|n| edges.bin_of(test[l][t * neurons + n]).map_or(0.0, |b| (counts[b * neurons + n] as f64 / p.o).min(1.0)))
                .sum::<f64>()
                / *neurons as f64;
            let got = scores.layer_scores[l][t] as f64;
            assert!((got - want).abs() <= 1e-6, "layer {l} sample {t}: {got} vs {want}");
        }
    }
    for t in 0..scored {
        let mean = scores.layer_scores.iter().map(|l| l[t] as f64).sum::<f64>() / layers.len() as f64;
        assert!((scores.score[t] as f64 - mean).abs() <= 1e-6 && scores.score[t] > 0.0, "sample {t}");
    }
}

#[test]
fn pairs_are_turned_into_states_and_bins_like_the_reference() {
    let engine = common::engine();
    let mut rng = Rng::new(43);
    let (samples, neurons) = (23, 129);
    for alpha in [0.001, 1.0, 100.0, 5000.0] {
        let mut pairs = Vec::with_capacity(samples * neurons * 2);
        for i in 0..samples * neurons {
            // Some exact zeros (dead channels): state exactly 0.5, on an edge.
            let z = if i % 11 == 0 { 0.0 } else { rng.uniform(0.0, 3.0) };
            pairs.extend([z, rng.normal() * 0.05]);
        }
        let edges = BinEdges::log_symmetric(500).unwrap();
        let layer = LayerParams::new("x", 1.0, 500, alpha);
        let mut profile = Profile::for_layout(&engine, &identity(), &[(layer, neurons)], "", Binning::LogSymmetric, Counted::All).unwrap();
        let cache = PooledStates::from_host(&engine, "test:0", CachedValues::Pairs, samples, &[("x", neurons, &pairs)], None).unwrap();
        profile.add_pooled(&engine, &cache).unwrap();
        let got = profile.counts(&engine).unwrap().remove(0);
        // The state as the kernel forms it (f32 product, f32 α, 1/(1+e^−x)); GPU exp may differ
        // from the CPU's in the last bits, so a state within 1e-6 of an edge may move one bin.
        let states: Vec<f32> = pairs.chunks_exact(2).map(|p| 1.0 / (1.0 + (-(alpha as f32 * (p[0] * p[1]))).exp())).collect();
        let want = cpu_histogram(&states, neurons, &edges);
        let near = states.iter().filter(|&&s| edges.edges[1..edges.edges.len() - 1].iter().any(|&e| (s as f64 - e).abs() <= 1e-6)).count();
        let moved: u32 = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).sum::<u32>() / 2;
        assert!(moved as usize <= near, "α {alpha}: {moved} samples moved, only {near} are within 1e-6 of an edge");
        assert_eq!(got.iter().sum::<u32>(), want.iter().sum::<u32>(), "α {alpha}: every state is in some bin");
        eprintln!("α {alpha}: {moved} of {near} near-edge states moved");
    }
}

fn small_model(engine: &Engine, seed: u64) -> Model {
    engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, seed).unwrap().network)
}

const SIZE: usize = 12;

fn wrn_params() -> Vec<LayerParams> {
    vec![
        LayerParams::new("avgpool", 2.0, 50, 100.0),
        LayerParams::new("block3", 1.0, 500, 10.0),
        LayerParams::new("block2", 3.0, 50, 1.0),
        LayerParams::new("block1", 1.0, 1000, 0.1),
    ]
}

#[test]
fn pooled_pairs_and_predictions_of_a_pass_match_the_readback() {
    let engine = common::engine();
    let mut model = small_model(&engine, 7);
    let n = 5;
    let input = random_inputs(n, 3, SIZE, SIZE, 8);
    let shape = [n, 3, SIZE, SIZE];
    let layers = ["block1", "block2", "block3", "avgpool"];
    let pass = engine.forward_backward(&mut model, &input, shape, &layers).unwrap();
    let cache = PooledStates::compute(&engine, &mut model, &input, shape, &layers, Some(&[0, 1, 2, 3, 4])).unwrap();
    for out in &pass.layers {
        let [_, c, h, w] = out.shape;
        let got = cache.read_values(&engine, &out.name).unwrap();
        let mut want = Vec::new();
        for bc in 0..n * c {
            let sum = |v: &[f32]| v[bc * h * w..(bc + 1) * h * w].iter().map(|&x| x as f64).sum::<f64>();
            want.extend([sum(&out.z), sum(&out.g)]);
        }
        common::assert_close(&format!("pairs {}", out.name), &got, &want, 1e-5);
    }
    let predicted = cache.predictions();
    for b in 0..n {
        let row: Vec<f64> = pass.logits[b * 5..(b + 1) * 5].iter().map(|&x| x as f64).collect();
        let best = (0..5).fold(0, |k, c| if row[c] > row[k] { c } else { k });
        let top = row[best];
        let softmax = 1.0 / row.iter().map(|x| (x - top).exp()).sum::<f64>();
        let energy = top + row.iter().map(|x| (x - top).exp()).sum::<f64>().ln();
        assert_eq!(predicted.class[b], best);
        assert!((predicted.max_softmax[b] as f64 - softmax).abs() < 1e-6, "{} vs {softmax}", predicted.max_softmax[b]);
        assert!((predicted.energy[b] as f64 - energy).abs() <= 1e-5 * energy.abs().max(1.0), "{} vs {energy}", predicted.energy[b]);
        assert_eq!(predicted.correct[b], best == b, "sample {b}");
    }
}

#[test]
fn chunked_runs_equal_one_pass_and_shards_merge_to_one_profile() {
    let engine = common::engine();
    let chunked_engine = common::engine_with(EngineOptions { max_batch: 2, ..EngineOptions::default() });
    let mut model = small_model(&engine, 9);
    let mut chunked_model = small_model(&chunked_engine, 9);
    let n = 7;
    let input = random_inputs(n, 3, SIZE, SIZE, 10);
    let per = 3 * SIZE * SIZE;
    let shape = |k: usize| [k, 3, SIZE, SIZE];

    let mut whole = Profile::new(&engine, &model.network, &wrn_params(), "test").unwrap();
    whole.add(&engine, &mut model, &input, shape(n)).unwrap();
    let mut chunked = Profile::new(&chunked_engine, &chunked_model.network, &wrn_params(), "test").unwrap();
    chunked.add(&chunked_engine, &mut chunked_model, &input, shape(n)).unwrap();
    let counts = whole.counts(&engine).unwrap();
    assert_eq!(chunked.counts(&chunked_engine).unwrap(), counts, "4+2+1 chunks");
    for (c, p) in counts.iter().zip(wrn_params()) {
        let neurons = c.len() / (p.m - 1);
        assert_eq!(c.iter().sum::<u32>() as usize, n * neurons, "{}: every state counted once", p.layer);
    }
    let scores = whole.score(&engine, &mut model, &input, shape(n)).unwrap();
    assert_eq!(chunked.score(&chunked_engine, &mut chunked_model, &input, shape(n)).unwrap(), scores);
    assert!(scores.score.iter().all(|s| s.is_finite() && *s > 0.0 && *s <= 1.0));

    // Three shards (3 + 2 + 2 samples), each saved to its own file, merged.
    let dir = common::temp_dir("profiles");
    let mut names = Vec::new();
    let mut parts = Vec::new();
    for (i, range) in [0..3, 3..5, 5..7].into_iter().enumerate() {
        let mut shard = Profile::new(&engine, &model.network, &wrn_params(), "test").unwrap();
        shard.add(&engine, &mut model, &input[range.start * per..range.end * per], shape(range.len())).unwrap();
        let path = dir.join(format!("shard{i}.safetensors"));
        shard.save(&engine, &path).unwrap();
        parts.push(ProfileData::load(&path).unwrap());
        names.push(path.display().to_string());
    }
    let merged = ProfileData::merge(&parts, &names).unwrap();
    assert_eq!(merged.counts, counts);
    assert_eq!(merged.header, whole.to_data(&engine).unwrap().header);
    let merged_profile = Profile::from_data(&engine, &model.network, merged).unwrap();
    assert_eq!(merged_profile.score(&engine, &mut model, &input, shape(n)).unwrap(), scores);

    // Shards built with other settings do not merge, and the error names the difference.
    let mut other = wrn_params();
    other[1].alpha = 11.0;
    let odd = Profile::new(&engine, &model.network, &other, "test").unwrap().to_data(&engine).unwrap();
    let err = ProfileData::merge(&[parts[0].clone(), odd], &["a".into(), "b".into()]).unwrap_err().to_string();
    assert!(err.contains("cannot merge b into a") && err.contains("block3"), "{err}");
    let reprocessed = Profile::new(&engine, &model.network, &wrn_params(), "other").unwrap().to_data(&engine).unwrap();
    let err = ProfileData::merge(&[parts[0].clone(), reprocessed], &["a".into(), "b".into()]).unwrap_err().to_string();
    assert!(err.contains("preprocessing"), "{err}");
}

#[test]
fn profile_files_round_trip_and_refuse_other_models() {
    let engine = common::engine();
    let mut model = small_model(&engine, 11);
    let input = random_inputs(3, 3, SIZE, SIZE, 12);
    let mut profile = Profile::new(&engine, &model.network, &wrn_params(), "pad+normalise").unwrap();
    profile.add(&engine, &mut model, &input, [3, 3, SIZE, SIZE]).unwrap();
    let dir = common::temp_dir("profiles");
    let path = dir.join("profile.safetensors");
    profile.save(&engine, &path).unwrap();
    let data = ProfileData::load(&path).unwrap();
    assert_eq!(data, profile.to_data(&engine).unwrap());
    let h = &data.header;
    assert_eq!((h.format.as_str(), h.version, h.samples, h.preprocessing.as_str()), ("nac-profile", 1, 3, "pad+normalise"));
    assert_eq!(h.layers[1].edges, BinEdges::log_symmetric(500).unwrap().edges);
    assert_eq!(h.model_fingerprint, model.network.fingerprint());
    let loaded = Profile::load(&engine, &model.network, &path).unwrap();
    assert_eq!(loaded.counts(&engine).unwrap(), data.counts);

    // Another model of the same architecture: refused, naming both fingerprints.
    let other = small_model(&engine, 12);
    let err = Profile::load(&engine, &other.network, &path).err().unwrap().to_string();
    assert!(
        err.contains("profile.safetensors") && err.contains(&h.model_fingerprint) && err.contains(&other.network.fingerprint()),
        "{err}"
    );
    // Another architecture: the layer that does not fit is named.
    let wide = engine.upload(SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 2 }, 5, 1).unwrap().network);
    let err = Profile::load(&engine, &wide.network, &path).err().unwrap().to_string();
    assert!(err.contains("`avgpool` has 64 neurons, the model's has 128"), "{err}");
    assert!(profile.check_preprocessing("pad+normalise").is_ok());
    let official: Vec<String> = ["avgpool", "block3", "block2", "block1"].iter().map(|s| s.to_string()).collect();
    assert!(loaded.check_layers(&official).is_ok());
    let err = loaded.check_layers(&official[..2]).unwrap_err().to_string();
    assert!(err.contains("covers layers avgpool,block3,block2,block1, not avgpool,block3"), "{err}");
    assert!(profile.check_preprocessing("none").unwrap_err().to_string().contains("pad+normalise"));

    // Damaged files are named and explained.
    let bytes = std::fs::read(&path).unwrap();
    for (name, damaged) in [("truncated", bytes[..bytes.len() - 8].to_vec()), ("garbage", b"not a profile at all".to_vec())] {
        let p = dir.join(format!("{name}.safetensors"));
        std::fs::write(&p, damaged).unwrap();
        let err = ProfileData::load(&p).unwrap_err().to_string();
        assert!(err.contains(&format!("{name}.safetensors")), "{err}");
    }
    let weights = dir.join("weights.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 5, 1)
        .unwrap()
        .save(&weights, nac::model::weights::StorageDtype::F32)
        .unwrap();
    assert!(ProfileData::load(&weights).unwrap_err().to_string().contains("not a NAC profile"));
}

#[test]
fn correct_only_profiles_count_only_correct_samples() {
    let engine = common::engine();
    let mut model = small_model(&engine, 13);
    let n = 6;
    let input = random_inputs(n, 3, SIZE, SIZE, 14);
    let shape = [n, 3, SIZE, SIZE];
    let predicted = PooledStates::compute(&engine, &mut model, &input, shape, &["avgpool"], None).unwrap().predictions().class;
    // Half the labels right.
    let labels: Vec<usize> = predicted.iter().enumerate().map(|(i, &p)| if i % 2 == 0 { p } else { (p + 1) % 5 }).collect();
    let params = [LayerParams::new("avgpool", 2.0, 50, 0.1)];
    let mut masked = Profile::with_binning(&engine, &model.network, &params, "", Binning::Uniform, Counted::Correct).unwrap();
    masked.add_labelled(&engine, &mut model, &input, shape, &labels).unwrap();
    let counts = masked.counts(&engine).unwrap().remove(0);
    assert_eq!(counts.iter().sum::<u32>() as usize, 3 * model.network.fc.in_features, "three correct samples");
    // The same from the even samples alone, counting everything.
    let per = 3 * SIZE * SIZE;
    let even: Vec<f32> = (0..n).step_by(2).flat_map(|i| input[i * per..(i + 1) * per].to_vec()).collect();
    let mut all = Profile::with_binning(&engine, &model.network, &params, "", Binning::Uniform, Counted::All).unwrap();
    all.add(&engine, &mut model, &even, [3, 3, SIZE, SIZE]).unwrap();
    assert_eq!(all.counts(&engine).unwrap().remove(0), counts);
    assert!(masked.add(&engine, &mut model, &input, shape).is_err());
    assert!(masked.add_labelled(&engine, &mut model, &input, shape, &labels[..5]).is_err());
}
