//! NAC-UE from Rust: profile a model on in-distribution data, score new inputs, save the
//! profile, load it back, and merge profiles built in shards.
//!
//!     cargo run --release --example nac_ue                  # random-weight ResNet18_32x32
//!     cargo run --release --example nac_ue -- model.safetensors
//!
//! Inputs here are random noise; in real use they are preprocessed images (N×3×H×W, f32).

use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::ArchSpec;
use nac::nac::{params, Preset, Profile, ProfileData};
use nac::{Engine, EngineOptions};

fn main() -> nac::Result<()> {
    let engine = Engine::new(EngineOptions::default())?;
    println!("adapter: {}", engine.gpu.info.name);
    let mut model = match std::env::args().nth(1) {
        Some(path) => engine.load_model(path.as_ref(), None)?,
        None => engine.upload(SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 0)?.network),
    };

    // The official layers and CIFAR-10 defaults (O, M, α per layer; spec §4; a ViT's own, §8).
    let layers = Preset::layers_for(&model.network);
    let settings = params::resolve(&model.network, &layers, Some(Preset::Cifar10), &[])?;
    let size = 16;
    let shape = |n: usize| [n, 3, size, size];
    let (train_a, train_b, test) =
        (random_inputs(12, 3, size, size, 1), random_inputs(12, 3, size, size, 2), random_inputs(6, 3, size, size, 3));

    // Profile: every batch fed is added to the per-layer histograms on the GPU.
    let mut profile = Profile::new(&engine, &model.network, &settings, "none")?;
    profile.add(&engine, &mut model, &train_a, shape(12))?;
    profile.add(&engine, &mut model, &train_b, shape(12))?;

    // Score: one f32 per sample (higher = more in-distribution) plus per-layer scores.
    let scores = profile.score(&engine, &mut model, &test, shape(6))?;
    for i in 0..6 {
        let layers: Vec<String> = scores.layers.iter().zip(&scores.layer_scores).map(|(l, s)| format!("{l} {:.3}", s[i])).collect();
        println!("sample {i}: NAC-UE {:.4} ({}), class {}", scores.score[i], layers.join(", "), scores.predicted[i]);
    }

    // Save, load against the same model, and check that sharded profiling merges to the same.
    let dir = std::env::temp_dir();
    let (whole, shard_a, shard_b) = (dir.join("nac_whole.safetensors"), dir.join("nac_a.safetensors"), dir.join("nac_b.safetensors"));
    profile.save(&engine, &whole)?;
    let reloaded = Profile::load(&engine, &model.network, &whole)?;
    assert_eq!(reloaded.score(&engine, &mut model, &test, shape(6))?, scores);
    for (input, path) in [(&train_a, &shard_a), (&train_b, &shard_b)] {
        let mut shard = Profile::new(&engine, &model.network, &settings, "none")?;
        shard.add(&engine, &mut model, input, shape(12))?;
        shard.save(&engine, path)?;
    }
    let merged = ProfileData::merge(&[ProfileData::load(&shard_a)?, ProfileData::load(&shard_b)?], &["a".into(), "b".into()])?;
    assert_eq!(merged.counts, profile.counts(&engine)?);
    println!("profile of {} samples saved to {}; two shards merge to the same counts", merged.header.samples, whole.display());
    Ok(())
}
