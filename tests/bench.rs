//! What `nac bench` measures with: per-stage GPU timing of a pass (every stage present, the
//! FLOP it counts equal to the network's convolutions counted independently) and the FP32 peak
//! kernel against a CPU evaluation of the same FMA chains.

mod common;

use nac::kernels::{ElementwiseParams, Kernel, Kernels};
use nac::model::arch::{Body, Conv, VitSpec};
use nac::model::synthetic::{random_inputs, SyntheticModel};
use nac::model::ArchSpec;
use nac::nac::PooledStates;

/// Forward FLOP (`2 · out pixels · out channels · in channels · k²` per conv) of a WideResNet
/// on `side × side` inputs, from the network description alone.
fn forward_flop(body: &Body, side: usize) -> u64 {
    let conv = |c: &Conv, side: usize| -> (u64, usize) {
        let out = (side + 2 * c.padding - c.kernel) / c.stride + 1;
        ((2 * out * out * c.out_channels * c.in_channels * c.kernel * c.kernel) as u64, out)
    };
    let Body::WideResNet { stem, stages, .. } = body else { panic!("a WideResNet") };
    let (mut total, mut side) = conv(stem, side);
    for block in stages.iter().flatten() {
        let (f1, out) = conv(&block.conv1, side);
        let (f2, _) = conv(&block.conv2, out);
        let fs = block.shortcut.as_ref().map_or(0, |s| conv(s, side).0);
        total += f1 + f2 + fs;
        side = out;
    }
    total
}

#[test]
fn stage_times_cover_the_pass_and_count_its_convolutions() {
    let engine = common::engine();
    let network = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 2 }, 5, 4).unwrap().network;
    let want_forward = forward_flop(&network.body, 12);
    let mut model = engine.upload(network);
    let n = 3;
    let input = random_inputs(n, 3, 12, 12, 9);
    let stages = PooledStates::time_stages(&engine, &mut model, &input, [n, 3, 12, 12], &["avgpool", "block1"]).unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "input",
            "stem",
            "block1 forward",
            "block2 forward",
            "block3 forward",
            "head",
            "block3 backward",
            "block2 backward",
            "NAC kernels"
        ]
    );
    assert!(stages.iter().all(|s| s.samples == n && s.seconds >= 0.0 && s.seconds < 60.0), "{stages:?}");
    assert!(stages.last().unwrap().seconds > 0.0 && stages.last().unwrap().flop == 0, "{stages:?}");
    assert!(stages.iter().filter(|s| s.name.contains("forward") || s.name.contains("backward")).all(|s| s.seconds > 0.0), "{stages:?}");
    let forward: u64 = stages.iter().filter(|s| s.name == "stem" || s.name.ends_with("forward")).map(|s| s.flop).sum();
    assert_eq!(forward, want_forward * n as u64);
    // The data gradient of a stage is a GEMM at least as large as its forward.
    for k in [2, 3] {
        let flop = |name: String| stages.iter().find(|s| s.name == name).unwrap().flop;
        assert!(flop(format!("block{k} backward")) >= flop(format!("block{k} forward")));
    }
}

/// A ViT's stages, and its forward FLOP counted by hand: the patch GEMM, each block's four
/// linear layers, and attention's two products (scores, weighted values) of `2·H·T²·dh` each.
#[test]
fn vit_stage_times_count_its_gemms_and_attention() {
    let engine = common::engine();
    let v = VitSpec { image: 12, patch: 4, depth: 2, width: 16, heads: 2, mlp: 24 };
    let mut model = engine.upload(SyntheticModel::new(ArchSpec::VisionTransformer(v), 5, 4).unwrap().network);
    let n = 2;
    let input = random_inputs(n, 3, 12, 12, 9);
    let stages = engine.time_stages(&mut model, &input, [n, 3, 12, 12], &["layer_norm", "layer_0"], None).unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["input", "stem", "layer_0 forward", "layer_1 forward", "head", "layer_1 backward", "layer_0 backward"]);
    let (t, d) = (v.tokens() as u64, v.width as u64);
    let patch = 2 * (t - 1) * d * 3 * (v.patch as u64).pow(2);
    let block = 2 * t * (3 * d * d + d * d + 2 * d * v.mlp as u64) + 2 * 2 * v.heads as u64 * t * t * v.head_dim() as u64;
    let forward: u64 = stages.iter().filter(|s| s.name == "stem" || s.name.ends_with("forward")).map(|s| s.flop).sum();
    assert_eq!(forward, (patch + v.depth as u64 * block) * n as u64);
    // layer_0's backward stops at its ln_2: only the MLP's two data gradients.
    let last = stages.iter().find(|s| s.name == "layer_0 backward").unwrap();
    assert_eq!(last.flop, 2 * t * 2 * d * v.mlp as u64 * n as u64);
}

#[test]
fn the_peak_kernel_computes_its_fma_chains() {
    let engine = common::engine();
    let (threads, iterations) = (1000u32, 37u32);
    let params = ElementwiseParams { total: threads, width: iterations, ..Default::default() };
    let kernels = Kernels::new(&engine.gpu).unwrap();
    let out = kernels
        .run_single(
            &engine.gpu,
            Kernel::PeakFma,
            bytemuck::bytes_of(&params),
            [threads.div_ceil(256), 1, 1],
            &[None, None, None],
            threads as usize,
        )
        .unwrap();
    for (i, &got) in out.iter().enumerate() {
        let s = (i as u32 & 1023) as f64 * 1e-4;
        let mut want = 0.0;
        for chain in 0..8 {
            for lane in 0..4 {
                let mut a = s + 0.1 * lane as f64 + 0.01 * chain as f64;
                for _ in 0..iterations {
                    a = a * 0.9999 + 1e-4;
                }
                want += a;
            }
        }
        assert!((got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "invocation {i}: {got} vs {want}");
    }
}
