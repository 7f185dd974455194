//! Every kernel against the f64 CPU reference on fresh random inputs of awkward sizes (odd
//! channels, 1×1 spatial, batch 1, sizes that are not multiples of the 64×64 tile or the
//! 16-deep K step). Outputs are poisoned with NaN before each run (see `run_single`).
//! Tolerance: normwise relative error ≤ 1e-5 for every kernel in f32.

mod common;

use common::{assert_close, engine, random_vec};
use nac::engine::{pack_backward, pack_forward};
use nac::kernels::{
    conv_flags, flat_workgroups, loss_targets, nac_flags, pairs_workgroups, pool_flags, ConvParams, ConvVariant, ElementwiseParams, Kernel,
    Kernels, LinearParams, NacParams, PoolParams, TransformerParams, WeightStorage, ATTENTION_TOKENS_PER_THREAD, ELEMENTWISE_RELU,
    ELEMENTWISE_SWISH, TRANSFORMER_RESIDUAL,
};
use nac::model::arch::{Conv, LayerNorm, Linear, LN_EPS};
use nac::reference;
use nac::reference::vit;
use nac::rng::Rng;
use nac::{Engine, Loss, Target};

const KERNEL_TOL: f64 = 1e-5;

fn nchw_to_nhwc(x: &[f64], [b, c, h, w]: [usize; 4]) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for n in 0..b {
        for ch in 0..c {
            for p in 0..h * w {
                out[(n * h * w + p) * c + ch] = x[(n * c + ch) * h * w + p];
            }
        }
    }
    out
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

struct Setup {
    engine: Engine,
    kernels: Kernels,
    rng: Rng,
}

fn setup(seed: u64) -> Setup {
    let engine = engine();
    let kernels = Kernels::new(&engine.gpu).unwrap();
    Setup { engine, kernels, rng: Rng::new(seed) }
}

impl Setup {
    fn run(&self, kernel: Kernel, params: &[u8], workgroups: [u32; 3], reads: &[Option<&[f32]>], out_len: usize) -> Vec<f32> {
        self.kernels.run_single(&self.engine.gpu, kernel, params, workgroups, reads, out_len).unwrap()
    }

    /// One call of a conv variant; the output is NaN-poisoned first.
    fn conv(&self, variant: ConvVariant, backward: bool, p: &ConvParams, reads: &[Option<&[f32]>], out_len: usize) -> Vec<f32> {
        self.kernels.run_conv(&self.engine.gpu, variant, backward, p, reads, out_len).unwrap()
    }

    fn flat(&self, threads: usize) -> [u32; 3] {
        flat_workgroups(threads as u32, self.engine.gpu.max_workgroups_per_dim())
    }

    fn random_conv(&mut self, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Conv {
        let weight = random_vec(&mut self.rng, cout * cin * k * k, (2.0 / (cin * k * k) as f32).sqrt());
        Conv { name: "test".into(), out_channels: cout, in_channels: cin, kernel: k, stride, padding: pad, padding_end: pad, weight }
    }
}

/// (batch, in channels, height, width, out channels, kernel, stride, padding)
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);
const CONV_CASES: &[ConvCase] = &[
    (1, 3, 7, 9, 5, 3, 1, 1),
    (2, 7, 1, 1, 65, 1, 1, 0),
    (3, 5, 11, 6, 17, 3, 2, 1),
    (2, 3, 15, 13, 64, 7, 2, 3),
    (2, 66, 5, 5, 33, 1, 2, 0),
    (5, 17, 9, 9, 130, 3, 1, 1),
    (1, 64, 8, 8, 64, 3, 1, 1),
    (3, 31, 4, 4, 7, 3, 2, 1),
    // Stride 3 with odd sizes: phases of unequal size in the direct data gradient.
    (2, 9, 10, 7, 6, 3, 3, 1),
    (1, 5, 5, 8, 3, 1, 3, 0),
];

/// GEMM parameters of a conv (forward: M = output pixels, N = cout; data gradient: M = input
/// pixels, N = cin).
#[allow(clippy::too_many_arguments)]
fn conv_params(
    b: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    flags: u32,
    backward: bool,
) -> ConvParams {
    let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let (m, n, kk) = if backward { (b * h * w, cin, k * k * cout) } else { (b * oh * ow, cout, k * k * cin) };
    let u = |v: usize| v as u32;
    ConvParams {
        batch: u(b),
        in_h: u(h),
        in_w: u(w),
        in_c: u(cin),
        out_h: u(oh),
        out_w: u(ow),
        out_c: u(cout),
        kernel: u(k),
        stride: u(stride),
        pad: u(pad),
        m_total: u(m),
        n_total: u(n),
        k_total: u(kk),
        flags,
        splits: 0,
        _pad: 0,
    }
}

/// Every conv variant against the f64 reference, and the unsplit ones against each other: they
/// accumulate each output in the same K order with the same fused multiply-adds (skipped taps
/// only add zeros), so they must agree exactly. Split-K variants add their parts' sums at the
/// end, so they agree with the reference at the same tolerance but not bit for bit.
fn check_variants(s: &Setup, backward: bool, p: &ConvParams, reads: &[Option<&[f32]>], want: &[f64], what: &str) {
    check_variants_within(s, backward, p, reads, want, what, KERNEL_TOL);
}

/// [`check_variants`] at another tolerance.
fn check_variants_within(s: &Setup, backward: bool, p: &ConvParams, reads: &[Option<&[f32]>], want: &[f64], what: &str, tol: f64) {
    let first = s.conv(ConvVariant::CANDIDATES[0], backward, p, reads, want.len());
    for variant in ConvVariant::CANDIDATES {
        let got = s.conv(variant, backward, p, reads, want.len());
        assert_close(&format!("{what} {}", variant.name()), &got, want, tol);
        if variant.splits() > 1 {
            continue;
        }
        if let Some(i) = (0..got.len()).find(|&i| got[i] != first[i]) {
            panic!("{what}: {} differs from {} at {i}: {} vs {}", variant.name(), ConvVariant::CANDIDATES[0].name(), got[i], first[i]);
        }
    }
}

/// The kernels run without runtime checks, their private arrays sized for the family: a conv
/// variant outside it is refused by name, never compiled.
#[test]
fn conv_variants_outside_the_family_are_refused() {
    let mut s = setup(18);
    let x = random_vec(&mut s.rng, 3 * 7 * 9, 1.0);
    let weights = random_vec(&mut s.rng, 27 * 5, 1.0);
    let p = conv_params(1, 3, 7, 9, 5, 3, 1, 1, 0, false);
    let odd = ConvVariant::Direct { lanes: 8, rows: 32, vecs: 4, splits: 1 };
    let err = s.kernels.run_conv(&s.engine.gpu, odd, false, &p, &[Some(&x), Some(&weights), None, None, None], 63 * 5).unwrap_err();
    assert!(err.to_string().contains("direct-8x32x4") && err.to_string().contains("CANDIDATES"), "{err}");
}

#[test]
fn conv_forward_with_every_epilogue() {
    let mut s = setup(11);
    for (case, &(b, cin, h, w, cout, k, stride, pad)) in CONV_CASES.iter().enumerate() {
        let conv = s.random_conv(cin, cout, k, stride, pad);
        let x = to_f64(&random_vec(&mut s.rng, b * cin * h * w, 1.0));
        let (y, yshape) = reference::conv2d(&x, [b, cin, h, w], &conv);
        let [_, _, oh, ow] = yshape;
        let bias = random_vec(&mut s.rng, cout, 0.5);
        let residual = random_vec(&mut s.rng, b * oh * ow * cout, 1.0);
        let packed = pack_forward(&conv, &vec![1.0; cout]);
        for flags in [0, conv_flags::BIAS, conv_flags::BIAS | conv_flags::RESIDUAL | conv_flags::RELU] {
            let mut want = nchw_to_nhwc(&y, yshape);
            for (i, v) in want.iter_mut().enumerate() {
                let mut t = *v;
                if flags & conv_flags::BIAS != 0 {
                    t += bias[i % cout] as f64;
                }
                if flags & conv_flags::RESIDUAL != 0 {
                    t += residual[i] as f64;
                }
                if flags & conv_flags::RELU != 0 {
                    t = t.max(0.0);
                }
                *v = t;
            }
            let p = conv_params(b, cin, h, w, cout, k, stride, pad, flags, false);
            let xin = to_f32(&nchw_to_nhwc(&x, [b, cin, h, w]));
            let reads = [Some(&xin[..]), Some(&packed[..]), Some(&bias[..]), Some(&residual[..]), None];
            check_variants(&s, false, &p, &reads, &want, &format!("conv forward case {case} flags {flags}"));
        }
    }
}

#[test]
fn conv_backward_data_with_every_epilogue() {
    let mut s = setup(12);
    for (case, &(b, cin, h, w, cout, k, stride, pad)) in CONV_CASES.iter().enumerate() {
        let conv = s.random_conv(cin, cout, k, stride, pad);
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let dy = to_f64(&random_vec(&mut s.rng, b * cout * oh * ow, 1.0));
        let dx = reference::conv2d_backward_data(&dy, [b, cout, oh, ow], &conv, (h, w));
        let dx_exact = nchw_to_nhwc(&dx, [b, cin, h, w]);
        let scale = random_vec(&mut s.rng, cin, 1.0);
        let residual = random_vec(&mut s.rng, dx.len(), 0.5);
        let mask = random_vec(&mut s.rng, dx.len(), 1.0);
        let packed = pack_backward(&conv, &vec![1.0; cout]);
        let dy_nhwc = to_f32(&nchw_to_nhwc(&dy, [b, cout, oh, ow]));
        for flags in [
            0,
            conv_flags::MASK,
            conv_flags::RESIDUAL,
            conv_flags::RESIDUAL | conv_flags::MASK | conv_flags::SCALE,
            conv_flags::MASK | conv_flags::SCALE | conv_flags::RESIDUAL | conv_flags::RESIDUAL_LAST,
        ] {
            let last = flags & conv_flags::RESIDUAL_LAST != 0;
            let want: Vec<f64> = dx_exact
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let mut t = v;
                    if flags & conv_flags::RESIDUAL != 0 && !last {
                        t += residual[i] as f64;
                    }
                    if flags & conv_flags::MASK != 0 && mask[i] <= 0.0 {
                        t = 0.0;
                    }
                    if flags & conv_flags::SCALE != 0 {
                        t *= scale[i % cin] as f64;
                    }
                    if flags & conv_flags::RESIDUAL != 0 && last {
                        t += residual[i] as f64;
                    }
                    t
                })
                .collect();
            let p = conv_params(b, cin, h, w, cout, k, stride, pad, flags, true);
            let reads = [Some(&dy_nhwc[..]), Some(&packed[..]), Some(&scale[..]), Some(&residual[..]), Some(&mask[..])];
            check_variants(&s, true, &p, &reads, &want, &format!("conv backward case {case} flags {flags}"));
        }
    }
}

fn swish(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn swish_grad(x: f64) -> f64 {
    let s = 1.0 / (1.0 + (-x).exp());
    s * (1.0 + x * (1.0 - s))
}

/// TF-style SAME padding (a DMWideResNet's `conv_0`: 0 before, 1 after the image, so the
/// kernels' `pad` is 0 and only the output size sees the padding after), forward with bias and
/// data gradient with the Swish-derivative mask, scale and residual, on every variant; odd and
/// even sides, stride 2 and 3, 1×1 kernels.
#[test]
fn asymmetric_padding_conv_with_swish_epilogue() {
    let mut s = setup(16);
    let cases: &[ConvCase] = &[
        (2, 3, 7, 8, 5, 3, 2, 0),
        (1, 17, 9, 9, 33, 3, 2, 0),
        (3, 5, 2, 3, 66, 3, 2, 0),
        (2, 6, 10, 7, 4, 3, 3, 0),
        (2, 4, 5, 6, 7, 1, 2, 0),
    ];
    for (case, &(b, cin, h, w, cout, k, stride, _)) in cases.iter().enumerate() {
        let mut conv = s.random_conv(cin, cout, k, stride, 0);
        conv.padding_end = 1;
        let x = to_f64(&random_vec(&mut s.rng, b * cin * h * w, 1.0));
        let (y, yshape) = reference::conv2d(&x, [b, cin, h, w], &conv);
        let [_, _, oh, ow] = yshape;
        assert_eq!((oh, ow), ((h + 1 - k) / stride + 1, (w + 1 - k) / stride + 1));
        let with_out = |mut p: ConvParams, backward: bool| {
            (p.out_h, p.out_w) = (oh as u32, ow as u32);
            if !backward {
                p.m_total = (b * oh * ow) as u32;
            }
            p
        };
        let bias = random_vec(&mut s.rng, cout, 0.5);
        let want: Vec<f64> = nchw_to_nhwc(&y, yshape).iter().enumerate().map(|(i, v)| v + bias[i % cout] as f64).collect();
        let p = with_out(conv_params(b, cin, h, w, cout, k, stride, 0, conv_flags::BIAS, false), false);
        let xin = to_f32(&nchw_to_nhwc(&x, [b, cin, h, w]));
        let packed = pack_forward(&conv, &vec![1.0; cout]);
        check_variants(
            &s,
            false,
            &p,
            &[Some(&xin[..]), Some(&packed[..]), Some(&bias[..]), None, None],
            &want,
            &format!("SAME conv forward case {case}"),
        );

        let dy = to_f64(&random_vec(&mut s.rng, b * cout * oh * ow, 1.0));
        let dx = nchw_to_nhwc(&reference::conv2d_backward_data(&dy, yshape, &conv, (h, w)), [b, cin, h, w]);
        let scale = random_vec(&mut s.rng, cin, 1.0);
        let residual = random_vec(&mut s.rng, dx.len(), 0.5);
        // Swish inputs well into both tails.
        let pre = random_vec(&mut s.rng, dx.len(), 6.0);
        let packed = pack_backward(&conv, &vec![1.0; cout]);
        let dy_nhwc = to_f32(&nchw_to_nhwc(&dy, yshape));
        for last in [false, true] {
            let flags =
                conv_flags::MASK_SWISH | conv_flags::SCALE | conv_flags::RESIDUAL | if last { conv_flags::RESIDUAL_LAST } else { 0 };
            let want: Vec<f64> = (0..dx.len())
                .map(|i| {
                    let r = residual[i] as f64;
                    let t = if last { dx[i] } else { dx[i] + r };
                    let t = t * swish_grad(pre[i] as f64) * scale[i % cin] as f64;
                    if last {
                        t + r
                    } else {
                        t
                    }
                })
                .collect();
            let p = with_out(conv_params(b, cin, h, w, cout, k, stride, 0, flags, true), true);
            let reads = [Some(&dy_nhwc[..]), Some(&packed[..]), Some(&scale[..]), Some(&residual[..]), Some(&pre[..])];
            check_variants(&s, true, &p, &reads, &want, &format!("SAME conv backward case {case} residual last {last}"));
        }
    }
}

/// Swish after a scale-shift and alone, and the Swish-derivative mask of the average pool's
/// backward, against f64; inputs into both tails (where sigmoid saturates).
#[test]
fn swish_kernels() {
    let mut s = setup(17);
    for &shape in &[[1, 3, 7, 9], [2, 65, 1, 1], [5, 7, 11, 6], [2, 257, 3, 5]] {
        let [b, c, h, w] = shape;
        let n = b * c * h * w;
        let mut x = random_vec(&mut s.rng, n, 4.0);
        x[0] = -90.0;
        x[n - 1] = 90.0;
        let scale = random_vec(&mut s.rng, c, 1.0);
        let shift = random_vec(&mut s.rng, c, 0.5);
        let params = ElementwiseParams {
            total: n as u32,
            batch: b as u32,
            channels: c as u32,
            height: h as u32,
            width: w as u32,
            flags: 0,
            _pad: [0; 2],
        };
        let want: Vec<f64> = x.iter().enumerate().map(|(i, &v)| swish(v as f64 * scale[i % c] as f64 + shift[i % c] as f64)).collect();
        let p = ElementwiseParams { flags: ELEMENTWISE_SWISH, ..params };
        let got = s.run(Kernel::ScaleShift, bytemuck::bytes_of(&p), s.flat(n), &[Some(&x), Some(&scale), Some(&shift)], n);
        assert_close(&format!("scale_shift swish {shape:?}"), &got, &want, KERNEL_TOL);
        let want: Vec<f64> = x.iter().map(|&v| swish(v as f64)).collect();
        let got = s.run(Kernel::Swish, bytemuck::bytes_of(&params), s.flat(n), &[Some(&x), None, None], n);
        assert_close(&format!("swish {shape:?}"), &got, &want, KERNEL_TOL);

        let dfeat = random_vec(&mut s.rng, b * c, 1.0);
        let broadcast = nchw_to_nhwc(&reference::global_avg_pool_backward(&to_f64(&dfeat), shape), shape);
        let want: Vec<f64> = broadcast.iter().enumerate().map(|(i, &v)| v * swish_grad(x[i] as f64) * scale[i % c] as f64).collect();
        let p = PoolParams {
            batch: b as u32,
            in_h: h as u32,
            in_w: w as u32,
            channels: c as u32,
            out_h: h as u32,
            out_w: w as u32,
            total: n as u32,
            flags: pool_flags::MASK_SWISH | pool_flags::SCALE,
        };
        let got = s.run(Kernel::AvgPoolBackward, bytemuck::bytes_of(&p), s.flat(n), &[Some(&dfeat), Some(&x), Some(&scale)], n);
        assert_close(&format!("avg_pool_backward swish {shape:?}"), &got, &want, KERNEL_TOL);
    }
}

/// (batch, channels, height, width): odd channels, 1×1 and 2×2 spatial, non-square.
const ACTIVATION_SHAPES: &[[usize; 4]] = &[[1, 3, 7, 9], [2, 65, 1, 1], [3, 17, 2, 2], [5, 7, 11, 6], [2, 257, 3, 5]];

#[test]
fn layout_and_elementwise_kernels() {
    let mut s = setup(13);
    for &shape in ACTIVATION_SHAPES {
        let [b, c, h, w] = shape;
        let n = b * c * h * w;
        let x = random_vec(&mut s.rng, n, 1.0);
        let params = |flags: u32| ElementwiseParams {
            total: n as u32,
            batch: b as u32,
            channels: c as u32,
            height: h as u32,
            width: w as u32,
            flags,
            _pad: [0; 2],
        };
        let got = s.run(Kernel::NchwToNhwc, bytemuck::bytes_of(&params(0)), s.flat(n), &[Some(&x), None, None], n);
        assert_close(&format!("nchw_to_nhwc {shape:?}"), &got, &nchw_to_nhwc(&to_f64(&x), shape), 0.0);

        let scale = random_vec(&mut s.rng, c, 1.0);
        let shift = random_vec(&mut s.rng, c, 0.5);
        for relu in [false, true] {
            let want: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let t = v as f64 * scale[i % c] as f64 + shift[i % c] as f64;
                    if relu {
                        t.max(0.0)
                    } else {
                        t
                    }
                })
                .collect();
            let p = params(if relu { ELEMENTWISE_RELU } else { 0 });
            let got = s.run(Kernel::ScaleShift, bytemuck::bytes_of(&p), s.flat(n), &[Some(&x), Some(&scale), Some(&shift)], n);
            assert_close(&format!("scale_shift {shape:?} relu {relu}"), &got, &want, KERNEL_TOL);
        }

        // Mask with exact zeros and negative zeros: only strictly positive passes.
        let mut z = random_vec(&mut s.rng, n, 1.0);
        z.iter_mut().step_by(5).for_each(|v| *v = 0.0);
        z.iter_mut().skip(2).step_by(7).for_each(|v| *v = -0.0);
        let want: Vec<f64> = x.iter().zip(&z).map(|(&g, &m)| if m > 0.0 { g as f64 } else { 0.0 }).collect();
        let got = s.run(Kernel::ReluMask, bytemuck::bytes_of(&params(0)), s.flat(n), &[Some(&x), Some(&z), None], n);
        assert_close(&format!("relu_mask {shape:?}"), &got, &want, 0.0);
    }
}

#[test]
fn pooling_kernels() {
    let mut s = setup(14);
    for &shape in ACTIVATION_SHAPES {
        let [b, c, h, w] = shape;
        let n = b * c * h * w;
        let x = random_vec(&mut s.rng, n, 1.0);
        let x_nhwc = to_f32(&nchw_to_nhwc(&to_f64(&x), shape));

        let (pooled, pshape) = reference::max_pool_3x3_s2(&to_f64(&x), shape);
        let [_, _, oh, ow] = pshape;
        let p = PoolParams {
            batch: b as u32,
            in_h: h as u32,
            in_w: w as u32,
            channels: c as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            total: pooled.len() as u32,
            flags: 0,
        };
        let got = s.run(Kernel::MaxPool, bytemuck::bytes_of(&p), s.flat(pooled.len()), &[Some(&x_nhwc), None, None], pooled.len());
        assert_close(&format!("max_pool {shape:?}"), &got, &nchw_to_nhwc(&pooled, pshape), 0.0);

        // Its backward, on the random input and on one with ties (after a ReLU: many zeros,
        // where the first maximum in scan order takes the gradient).
        let relu_x: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
        for (what, input) in [("random", &x), ("ties", &relu_x)] {
            let dy = random_vec(&mut s.rng, pooled.len(), 1.0);
            let want = reference::max_pool_3x3_s2_backward(&to_f64(&dy), &to_f64(input), shape);
            let input_nhwc = to_f32(&nchw_to_nhwc(&to_f64(input), shape));
            let dy_nhwc = to_f32(&nchw_to_nhwc(&to_f64(&dy), pshape));
            let p = PoolParams { total: n as u32, ..p };
            let got = s.run(Kernel::MaxPoolBackward, bytemuck::bytes_of(&p), s.flat(n), &[Some(&dy_nhwc), Some(&input_nhwc), None], n);
            assert_close(&format!("max_pool_backward {what} {shape:?}"), &got, &nchw_to_nhwc(&want, shape), KERNEL_TOL);
        }

        let avg = reference::global_avg_pool(&to_f64(&x), shape);
        let p = PoolParams { out_h: 1, out_w: 1, total: (b * c) as u32, ..p };
        let got = s.run(Kernel::AvgPool, bytemuck::bytes_of(&p), s.flat(b * c), &[Some(&x_nhwc), None, None], b * c);
        assert_close(&format!("avg_pool {shape:?}"), &got, &avg, KERNEL_TOL);

        let dfeat = random_vec(&mut s.rng, b * c, 1.0);
        let mask = random_vec(&mut s.rng, n, 1.0);
        let scale = random_vec(&mut s.rng, c, 1.0);
        let broadcast = nchw_to_nhwc(&reference::global_avg_pool_backward(&to_f64(&dfeat), shape), shape);
        for flags in [0, pool_flags::MASK | pool_flags::SCALE] {
            let want: Vec<f64> = broadcast
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if flags == 0 {
                        v
                    } else if mask[i] > 0.0 {
                        v * scale[i % c] as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            let p = PoolParams { out_h: h as u32, out_w: w as u32, total: n as u32, flags, ..p };
            let got = s.run(Kernel::AvgPoolBackward, bytemuck::bytes_of(&p), s.flat(n), &[Some(&dfeat), Some(&mask), Some(&scale)], n);
            assert_close(&format!("avg_pool_backward {shape:?} flags {flags}"), &got, &want, KERNEL_TOL);
        }
    }
}

/// The pooling kernel of NAC (`pairs`): (Σ_hw z, Σ_hw g) per sample and neuron, into a chunk's
/// own pairs or at set-wide positions of a cache (the slots before the chunk stay poisoned),
/// and a sample's pairs bit for bit the same in a batch as alone.
#[test]
fn nac_pooling_kernel() {
    let mut s = setup(15);
    // (batch, positions, neurons): one position; positions not a multiple of the 8 lanes;
    // neurons below, around and well above the 32-neuron block.
    for (b, hw, n) in [(1, 1, 1), (3, 7, 31), (2, 9, 33), (5, 1000, 3), (2, 16, 512), (4, 63, 65)] {
        let z = random_vec(&mut s.rng, b * hw * n, 1.0);
        let g = random_vec(&mut s.rng, b * hw * n, 1.0);
        let mut want = Vec::with_capacity(2 * b * n);
        for sample in 0..b {
            for neuron in 0..n {
                let sum = |v: &[f32]| (0..hw).map(|k| v[(sample * hw + k) * n + neuron] as f64).sum::<f64>();
                want.extend([sum(&z), sum(&g)]);
            }
        }
        let max = s.engine.gpu.max_workgroups_per_dim();
        let run = |samples: usize, z: &[f32], g: &[f32], flags: u32, offset: usize| {
            let p = NacParams {
                batch: samples as u32,
                hw: hw as u32,
                neurons: n as u32,
                flags,
                sample_offset: offset as u32,
                ..Default::default()
            };
            let workgroups = pairs_workgroups(samples as u32, n as u32, max);
            s.run(Kernel::NacPairs, bytemuck::bytes_of(&p), workgroups, &[Some(z), Some(g), None, None], 2 * (offset + samples) * n)
        };
        let what = format!("pairs b {b} hw {hw} neurons {n}");
        let chunk = run(b, &z, &g, nac_flags::CHUNK_PAIRS, 3);
        assert_close(&format!("{what}, chunk"), &chunk[..2 * b * n], &want, KERNEL_TOL);
        assert!(chunk[2 * b * n..].iter().all(|v| v.is_nan()), "{what}: wrote past the chunk's pairs");
        let cached = run(b, &z, &g, 0, 3);
        assert!(cached[..6 * n].iter().all(|v| v.is_nan()), "{what}: wrote before the chunk's set-wide slots");
        assert_eq!(
            cached[6 * n..].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            chunk[..2 * b * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let last = (b - 1) * hw * n..b * hw * n;
        let alone = run(1, &z[last.clone()], &g[last], nac_flags::CHUNK_PAIRS, 0);
        assert_eq!(
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            chunk[2 * (b - 1) * n..2 * b * n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{what}: alone"
        );
    }
}

#[test]
fn classifier_head_kernels() {
    let mut s = setup(15);
    // (batch, features, classes): a single class pair, odd sizes, ImageNet-sized head.
    for &(b, f, classes) in &[(1, 5, 2), (3, 513, 10), (7, 64, 101), (2, 2048, 1000)] {
        let fc = Linear {
            out_features: classes,
            in_features: f,
            weight: random_vec(&mut s.rng, classes * f, (1.0 / f as f32).sqrt()),
            bias: random_vec(&mut s.rng, classes, 0.1),
        };
        let x = random_vec(&mut s.rng, b * f, 1.0);
        let p = LinearParams {
            batch: b as u32,
            in_features: f as u32,
            out_features: classes as u32,
            total: (b * classes) as u32,
            ..Default::default()
        };
        let logits = s.run(
            Kernel::LinearForward,
            bytemuck::bytes_of(&p),
            s.flat(b * classes),
            &[Some(&x), Some(&fc.weight), Some(&fc.bias)],
            b * classes,
        );
        assert_close(&format!("linear_forward {b}×{f}→{classes}"), &logits, &reference::linear(&to_f64(&x), b, &fc), KERNEL_TOL);

        // Large logits check the max-subtraction of the softmax; every target, two temperatures.
        let big: Vec<f32> = random_vec(&mut s.rng, b * classes, 30.0);
        let labels: Vec<usize> = (0..b).map(|i| (i * 7 + 3) % classes).collect();
        let label_values: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        for (target, kernel_target) in
            [(Target::Uniform, loss_targets::UNIFORM), (Target::Label, loss_targets::LABEL), (Target::Prediction, loss_targets::PREDICTION)]
        {
            for temperature in [1.0f32, 1000.0] {
                let loss = Loss { target, temperature };
                let p = LinearParams { target: kernel_target, temperature, ..p };
                let grad =
                    s.run(Kernel::LossGrad, bytemuck::bytes_of(&p), s.flat(b), &[Some(&big), Some(&label_values), None], b * classes);
                let targets = reference::loss_targets(&to_f64(&big), b, classes, loss, Some(&labels));
                let (_, want) = reference::ce_loss_and_grad(&to_f64(&big), b, classes, &targets, temperature as f64);
                assert_close(&format!("loss_grad {b}×{classes} {loss:?}"), &grad, &want, KERNEL_TOL);
            }
        }

        let dy = random_vec(&mut s.rng, b * classes, 0.1);
        let p = LinearParams { total: (b * f) as u32, ..p };
        let dx = s.run(Kernel::LinearBackward, bytemuck::bytes_of(&p), s.flat(b * f), &[Some(&dy), Some(&fc.weight), None], b * f);
        assert_close(
            &format!("linear_backward {b}×{classes}→{f}"),
            &dx,
            &reference::linear_backward_data(&to_f64(&dy), b, &fc),
            KERNEL_TOL,
        );
    }
}

/// (batch, tokens, width, heads) of the transformer kernel tests: one token pair, odd head
/// widths, a width that is no multiple of 4, and the shipped ViT's sequence.
const TOKEN_SHAPES: &[(usize, usize, usize, usize)] = &[(1, 2, 4, 1), (3, 5, 12, 3), (2, 17, 20, 4), (1, 65, 64, 4)];

/// LayerNorm on rows offset by 100 (see `transformer_token_and_norm_kernels`).
const LN_TOL: f64 = 1e-4;

fn transformer_params(b: usize, t: usize, d: usize, heads: usize, threads: usize) -> TransformerParams {
    TransformerParams {
        total: threads as u32,
        batch: b as u32,
        tokens: t as u32,
        width: d as u32,
        heads: heads as u32,
        head_dim: (d / heads) as u32,
        row_stride: 1,
        eps: LN_EPS as f32,
        scale: 1.0 / ((d / heads) as f32).sqrt(),
        ..Default::default()
    }
}

fn random_layer_norm(rng: &mut Rng, d: usize) -> LayerNorm {
    LayerNorm { name: "ln".into(), gamma: random_vec(rng, d, 1.0), beta: random_vec(rng, d, 0.5) }
}

#[test]
fn transformer_token_and_norm_kernels() {
    let mut s = setup(16);
    for &(b, t, d, heads) in TOKEN_SHAPES {
        let what = format!("b {b} t {t} d {d}");
        let n = b * t * d;
        let patches = random_vec(&mut s.rng, b * (t - 1) * d, 1.0);
        let (cls, pos) = (random_vec(&mut s.rng, d, 1.0), random_vec(&mut s.rng, t * d, 1.0));
        let p = transformer_params(b, t, d, heads, n);
        let got = s.run(Kernel::TokensForward, bytemuck::bytes_of(&p), s.flat(n), &[Some(&patches), Some(&cls), Some(&pos), None], n);
        // One f32 rounding of each sum.
        assert_close(&format!("tokens_forward {what}"), &got, &vit::tokens_forward(&to_f64(&patches), b, &cls, &pos), 1e-7);

        let dx = random_vec(&mut s.rng, n, 1.0);
        let np = b * (t - 1) * d;
        let p = transformer_params(b, t, d, heads, np);
        let got = s.run(Kernel::TokensBackward, bytemuck::bytes_of(&p), s.flat(np), &[Some(&dx), None, None, None], np);
        let want: Vec<f64> = (0..b).flat_map(|i| to_f64(&dx[(i * t + 1) * d..(i + 1) * t * d])).collect();
        assert_close(&format!("tokens_backward {what}"), &got, &want, 0.0);

        // Rows with a large common offset: a one-pass variance (E[x²] − mean² cancels four
        // digits) would miss by ~1e-3; the f32 mean itself carries |mean|·2⁻²³·√d ≈ 1e-4.
        let x: Vec<f32> = random_vec(&mut s.rng, n, 1.0).iter().enumerate().map(|(i, v)| v + 100.0 * ((i / d) % 3) as f32).collect();
        let ln = random_layer_norm(&mut s.rng, d);
        let rows = b * t;
        let p = TransformerParams { width: d as u32, ..transformer_params(b, t, d, heads, rows) };
        let got = s.run(Kernel::LayerNorm, bytemuck::bytes_of(&p), s.flat(rows), &[Some(&x), Some(&ln.gamma), Some(&ln.beta), None], n);
        let want = vit::layer_norm(&to_f64(&x), rows, d, &ln);
        assert_close(&format!("layer_norm {what}"), &got, &want, LN_TOL);
        // The class token of each sample only (encoder.ln before the head).
        let p = TransformerParams { row_stride: t as u32, ..transformer_params(b, t, d, heads, b) };
        let got = s.run(Kernel::LayerNorm, bytemuck::bytes_of(&p), s.flat(b), &[Some(&x), Some(&ln.gamma), Some(&ln.beta), None], b * d);
        let class_rows: Vec<f64> = (0..b).flat_map(|i| want[i * t * d..][..d].to_vec()).collect();
        assert_close(&format!("layer_norm class token {what}"), &got, &class_rows, LN_TOL);

        let dy = random_vec(&mut s.rng, n, 1.0);
        let extra = random_vec(&mut s.rng, n, 1.0);
        let base = vit::layer_norm_backward_data(&to_f64(&dy), &to_f64(&x), rows, d, &ln);
        for residual in [false, true] {
            let p =
                TransformerParams { flags: if residual { TRANSFORMER_RESIDUAL } else { 0 }, ..transformer_params(b, t, d, heads, rows) };
            let reads = [Some(x.as_slice()), Some(dy.as_slice()), Some(ln.gamma.as_slice()), residual.then_some(extra.as_slice())];
            let got = s.run(Kernel::LayerNormBackward, bytemuck::bytes_of(&p), s.flat(rows), &reads, n);
            let want: Vec<f64> = base.iter().zip(&extra).map(|(&v, &e)| if residual { v + e as f64 } else { v }).collect();
            assert_close(&format!("layer_norm_backward {what} residual {residual}"), &got, &want, LN_TOL);
        }
        let dcls = random_vec(&mut s.rng, b * d, 1.0);
        let class_x: Vec<f64> = (0..b).flat_map(|i| to_f64(&x[i * t * d..][..d])).collect();
        let p = TransformerParams { row_stride: t as u32, ..transformer_params(b, t, d, heads, b) };
        let got =
            s.run(Kernel::LayerNormBackward, bytemuck::bytes_of(&p), s.flat(b), &[Some(&x), Some(&dcls), Some(&ln.gamma), None], b * d);
        assert_close(
            &format!("layer_norm_backward class token {what}"),
            &got,
            &vit::layer_norm_backward_data(&to_f64(&dcls), &class_x, b, d, &ln),
            LN_TOL,
        );
        let p = transformer_params(b, t, d, heads, n);
        let got = s.run(Kernel::ScatterClassToken, bytemuck::bytes_of(&p), s.flat(n), &[Some(&dcls), None, None, None], n);
        let want: Vec<f64> = (0..n).map(|i| if (i / d) % t == 0 { dcls[i / (t * d) * d + i % d] as f64 } else { 0.0 }).collect();
        assert_close(&format!("scatter_class_token {what}"), &got, &want, 0.0);

        // GELU over a wide range, with its tails.
        let pre: Vec<f32> = random_vec(&mut s.rng, n, 3.0);
        let p = transformer_params(b, t, d, heads, n);
        let got = s.run(Kernel::Gelu, bytemuck::bytes_of(&p), s.flat(n), &[Some(&pre), None, None, None], n);
        assert_close(&format!("gelu {what}"), &got, &vit::gelu(&to_f64(&pre)), KERNEL_TOL);
        let got = s.run(Kernel::GeluBackward, bytemuck::bytes_of(&p), s.flat(n), &[Some(&dy), Some(&pre), None, None], n);
        assert_close(&format!("gelu_backward {what}"), &got, &vit::gelu_backward(&to_f64(&dy), &to_f64(&pre)), KERNEL_TOL);
    }
}

#[test]
fn attention_kernels() {
    let mut s = setup(17);
    for &(b, t, d, heads) in TOKEN_SHAPES {
        // A sharp case too: scores near ±100, whose exp overflows f32 without the row maximum;
        // their f32 rounding (|s|·2⁻²³·√dh ≈ 5e-5) bounds its tolerance.
        for (spread, tol) in [(1.0, KERNEL_TOL), (6.0, 2e-4)] {
            let what = format!("b {b} t {t} d {d} heads {heads} spread {spread}");
            let qkv = random_vec(&mut s.rng, b * t * 3 * d, spread);
            let (want_out, want_probs) = vit::attention(&to_f64(&qkv), b, t, d, heads);
            let rows = b * heads * t;
            let p = transformer_params(b, t, d, heads, rows);
            let probs = s.run(Kernel::AttentionProbs, bytemuck::bytes_of(&p), s.flat(rows), &[Some(&qkv), None, None, None], rows * t);
            assert_close(&format!("attention_probs {what}"), &probs, &want_probs, tol);
            let n = b * t * d;
            let threads = b * t.div_ceil(ATTENTION_TOKENS_PER_THREAD) * d;
            let p = transformer_params(b, t, d, heads, threads);
            let out = s.run(Kernel::AttentionValues, bytemuck::bytes_of(&p), s.flat(threads), &[Some(&probs), Some(&qkv), None, None], n);
            assert_close(&format!("attention_values {what}"), &out, &want_out, tol);

            let d_out = random_vec(&mut s.rng, n, 1.0);
            let probs = to_f32(&want_probs);
            let p = transformer_params(b, t, d, heads, rows);
            let reads = [Some(d_out.as_slice()), Some(qkv.as_slice()), Some(probs.as_slice()), None];
            let d_scores = s.run(Kernel::AttentionBackwardScores, bytemuck::bytes_of(&p), s.flat(rows), &reads, rows * t);
            // Softmax's gradient is orthogonal to the constant direction: each row sums to 0, up
            // to the rounding of its terms P·(dP − P·dP), |dP| ≤ dh·max|dO|·max|v|.
            let worst = d_scores.chunks(t).map(|r| r.iter().map(|&v| v as f64).sum::<f64>().abs()).fold(0.0, f64::max);
            let max_abs = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
            let bound = 1e-5 * (d / heads) as f64 * max_abs(&d_out) * max_abs(&qkv);
            assert!(worst <= bound, "attention_backward_scores {what}: a row sums to {worst:e} (bound {bound:e})");
            let n3 = b * t * 3 * d;
            let threads = b * t.div_ceil(ATTENTION_TOKENS_PER_THREAD) * 3 * d;
            let p = transformer_params(b, t, d, heads, threads);
            let reads = [Some(d_scores.as_slice()), Some(qkv.as_slice()), Some(probs.as_slice()), Some(d_out.as_slice())];
            let d_qkv = s.run(Kernel::AttentionBackwardQkv, bytemuck::bytes_of(&p), s.flat(threads), &reads, n3);
            let want = vit::attention_backward(&to_f64(&d_out), &to_f64(&qkv), &want_probs, b, t, d, heads);
            assert_close(&format!("attention backward {what}"), &d_qkv, &want, tol);
        }
    }
}

/// With f16 weight storage every conv variant, in both directions, computes exactly the f32
/// arithmetic on the f16-rounded weights: against the f64 reference with those rounded weights
/// at the f32 kernel tolerance, on every conv case, the variants agreeing bit for bit. What
/// the rounding itself costs a whole pass is measured in `tests/network.rs`.
#[test]
fn conv_with_f16_weights_is_f32_arithmetic_on_rounded_weights() {
    check_f16_convs(WeightStorage::F16, |_| KERNEL_TOL);
}

/// With f16 arithmetic every conv variant, in both directions, computes the conv of the
/// f16-rounded activations and weights to within f16 accumulation: normwise relative error
/// ≤ 2⁻¹¹·√K against the f64 reference on the rounded operands (K = the GEMM's depth: the
/// rounding errors of K sums add up like a random walk), the unsplit variants agreeing bit for
/// bit (the same f16 operations in the same order).
#[test]
fn conv_with_f16_arithmetic_is_within_f16_accumulation_error() {
    check_f16_convs(WeightStorage::F16Compute, |k| 2f64.powi(-11) * (k as f64).sqrt());
}

/// Every conv case in both directions with f16 `storage`, against the f64 reference on the
/// f16-rounded weights (and, with f16 arithmetic, activations) at `tolerance(K)`.
fn check_f16_convs(storage: WeightStorage, tolerance: impl Fn(u32) -> f64) {
    let engine = engine();
    let kernels = Kernels::with_weights(&engine.gpu, storage).unwrap();
    let mut s = Setup { engine, kernels, rng: Rng::new(13) };
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    let operand = |v: Vec<f32>| if storage == WeightStorage::F16Compute { round(&v) } else { v };
    for (case, &(b, cin, h, w, cout, k, stride, pad)) in CONV_CASES.iter().enumerate() {
        let mut conv = s.random_conv(cin, cout, k, stride, pad);
        let packed_forward = pack_forward(&conv, &vec![1.0; cout]);
        let packed_backward = pack_backward(&conv, &vec![1.0; cout]);
        conv.weight = round(&conv.weight);
        let x = to_f64(&operand(random_vec(&mut s.rng, b * cin * h * w, 1.0)));
        let (y, yshape) = reference::conv2d(&x, [b, cin, h, w], &conv);
        let xin = to_f32(&nchw_to_nhwc(&x, [b, cin, h, w]));
        let p = conv_params(b, cin, h, w, cout, k, stride, pad, 0, false);
        let reads = [Some(&xin[..]), Some(&packed_forward[..]), None, None, None];
        let what = format!("{} conv forward case {case}", storage.name());
        check_variants_within(&s, false, &p, &reads, &nchw_to_nhwc(&y, yshape), &what, tolerance(p.k_total));
        let [_, _, oh, ow] = yshape;
        let dy = to_f64(&operand(random_vec(&mut s.rng, b * cout * oh * ow, 1.0)));
        let dx = reference::conv2d_backward_data(&dy, [b, cout, oh, ow], &conv, (h, w));
        let dy_nhwc = to_f32(&nchw_to_nhwc(&dy, [b, cout, oh, ow]));
        let p = conv_params(b, cin, h, w, cout, k, stride, pad, 0, true);
        let reads = [Some(&dy_nhwc[..]), Some(&packed_backward[..]), None, None, None];
        let what = format!("{} conv backward case {case}", storage.name());
        check_variants_within(&s, true, &p, &reads, &nchw_to_nhwc(&dx, [b, cin, h, w]), &what, tolerance(p.k_total));
    }
}
