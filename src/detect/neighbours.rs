//! Detectors of distances to the profiling features, on the GPU (`shaders/distance.wgsl`, our
//! own tiled kernel; no external index): KNN and a Gaussian KDE, both on L2-normalised features.

use super::perturb::{FeatureLoss, InputLoss};
use super::{logsumexp, per_row, softmax, Context, Detector, PassSet};
use crate::engine::Engine;
use crate::error::{Error, Result};

const DISTANCE_WGSL: &str = include_str!("../../shaders/distance.wgsl");
const TILE: usize = 16;

/// OpenOOD's normaliser `x / ‖x‖ + 1e-10` (the 1e-10 is added after the division), in f64,
/// with `‖x‖`.
fn normalised_row(f: &[f32]) -> (Vec<f64>, f64) {
    let norm = f.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    (f.iter().map(|&v| if norm > 0.0 { v as f64 / norm } else { 0.0 } + 1e-10).collect(), norm)
}

fn normalised(set: &PassSet) -> Vec<f32> {
    set.feature_rows().flat_map(|f| normalised_row(f).0.into_iter().map(|v| v as f32)).collect()
}

/// The normalised profiling features on the GPU and the distance kernel over them.
struct Bank {
    pipeline: wgpu::ComputePipeline,
    refs: wgpu::Buffer,
    count: usize,
    dim: usize,
}

impl Bank {
    fn new(engine: &Engine, train: &PassSet) -> Result<Self> {
        let gpu = &engine.gpu;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("distance"),
            source: wgpu::ShaderSource::Wgsl(DISTANCE_WGSL.into()),
        });
        let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("distances"),
            layout: None,
            module: &module,
            entry_point: Some("distances"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling the distance kernel: {e}")));
        }
        let bytes = (train.features.len() * 4) as u64;
        if bytes > gpu.max_binding_bytes() {
            return Err(Error::Input(format!(
                "{bytes} bytes of profiling features exceed this adapter's binding limit; use fewer samples"
            )));
        }
        Ok(Bank { pipeline, refs: gpu.upload_f32("neighbour bank", &normalised(train)), count: train.samples(), dim: train.dim })
    }

    /// Calls `row(q, distances)` with the squared distances of every normalised query of `set`
    /// to every reference, a block of queries at a time (each block's output fits one binding).
    fn each_row(&self, engine: &Engine, set: &PassSet, mut row: impl FnMut(usize, &[f32])) -> Result<()> {
        let gpu = &engine.gpu;
        let queries = normalised(set);
        let per_block = ((gpu.max_binding_bytes() / (4 * self.count as u64)) as usize)
            .min(gpu.max_workgroups_per_dim() as usize * TILE)
            .min((gpu.max_binding_bytes() / (4 * self.dim as u64)) as usize)
            .max(1);
        for start in (0..set.samples()).step_by(per_block) {
            let n = per_block.min(set.samples() - start);
            let q = gpu.upload_f32("neighbour queries", &queries[start * self.dim..(start + n) * self.dim]);
            let out = gpu.storage_buffer("distances", (n * self.count * 4) as u64);
            let params: [u32; 4] = [n as u32, self.count as u32, self.dim as u32, 0];
            let uniform = gpu.uniform_buffer("distance params", bytemuck::bytes_of(&params));
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("distances"),
                layout: &self.pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: q.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: self.refs.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: out.as_entire_binding() },
                ],
            });
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("distances"), timestamp_writes: None });
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(self.count.div_ceil(TILE) as u32, n.div_ceil(TILE) as u32, 1);
            }
            gpu.queue.submit([encoder.finish()]);
            gpu.check_while("computing neighbour distances")?;
            let d = gpu.read_f32(&out, n * self.count)?;
            for (i, r) in d.chunks_exact(self.count).enumerate() {
                row(start + i, r);
            }
        }
        Ok(())
    }
}

/// KNN: minus the squared distance to the K-th nearest normalised profiling feature (faiss's
/// `IndexFlatL2` returns squared distances, and OpenOOD negates its K-th).
pub struct Knn {
    k: usize,
    bank: Option<Bank>,
}

impl Knn {
    pub fn new(k: usize) -> Self {
        Knn { k, bank: None }
    }
}

impl Detector for Knn {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        if self.k == 0 || self.k > train.samples() {
            return Err(Error::Input(format!("KNN: K={} needs 1 ≤ K ≤ {} profiling samples", self.k, train.samples())));
        }
        self.bank = Some(Bank::new(cx.engine, train)?);
        Ok(())
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let bank = self.bank.as_ref().expect("fitted");
        let mut kth = vec![0f64; set.samples()];
        let mut scratch = Vec::with_capacity(bank.count);
        bank.each_row(cx.engine, set, |i, row| {
            scratch.clear();
            scratch.extend_from_slice(row);
            kth[i] = *scratch.select_nth_unstable_by(self.k - 1, f32::total_cmp).1 as f64;
        })?;
        per_row(kth.into_iter(), "KNN", |d| -d)
    }
}

/// Gaussian KDE on normalised features: `log (1/N) Σ_i exp(−‖x − x_i‖² / (2h²))` (not in
/// OpenOOD; the second study's density baseline, on KNN's normalised features so that the
/// bandwidth `h` does not depend on the feature scale).
pub struct Kde {
    bandwidth: f64,
    bank: Option<Bank>,
    /// The normalised profiling features in f64 on the host, for the "+ip" gradient only.
    host_bank: Vec<f64>,
    with_gradient: bool,
}

impl Kde {
    pub fn new(bandwidth: f64) -> Self {
        Kde { bandwidth, bank: None, host_bank: Vec::new(), with_gradient: false }
    }

    /// KDE with input perturbation ("+ip"): the KDE score of `x' = x − ε·sign⁺(∇ₓ loss)/std`
    /// with the loss `−score`, whose gradient at the normalised feature `q` is
    /// `(q − Σ_i w_i x_i)/h²`, `w = softmax_i(−‖q − x_i‖²/(2h²))`, taken back through the
    /// normalisation (`(I − q̂q̂ᵀ)/‖x‖`). Computed exactly in f64 on the host: O(N·D) per sample.
    pub fn with_input_perturbation(bandwidth: f64) -> Self {
        Kde { with_gradient: true, ..Kde::new(bandwidth) }
    }
}

impl FeatureLoss for Kde {
    fn gradient(&self, features: &[f32]) -> Result<Vec<f64>> {
        let dim = self.bank.as_ref().expect("fitted").dim;
        let scale = -0.5 / (self.bandwidth * self.bandwidth);
        Ok(features
            .chunks(dim)
            .flat_map(|f| {
                let (q, norm) = normalised_row(f);
                let terms: Vec<f64> =
                    self.host_bank.chunks(dim).map(|b| scale * b.iter().zip(&q).map(|(b, q)| (q - b).powi(2)).sum::<f64>()).collect();
                let mut g_q: Vec<f64> = q.iter().map(|q| q / self.bandwidth.powi(2)).collect();
                for (w, b) in softmax(&terms).into_iter().zip(self.host_bank.chunks(dim)) {
                    g_q.iter_mut().zip(b).for_each(|(g, b)| *g -= w * b / self.bandwidth.powi(2));
                }
                if norm == 0.0 {
                    return vec![0.0; dim];
                }
                let unit: Vec<f64> = f.iter().map(|&v| v as f64 / norm).collect();
                let along: f64 = unit.iter().zip(&g_q).map(|(u, g)| u * g).sum();
                g_q.iter().zip(&unit).map(|(g, u)| (g - u * along) / norm).collect()
            })
            .collect())
    }
}

impl Detector for Kde {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        self.bank = Some(Bank::new(cx.engine, train)?);
        if self.with_gradient {
            self.host_bank = train.feature_rows().flat_map(|f| normalised_row(f).0).collect();
        }
        Ok(())
    }

    fn input_loss(&self) -> Option<InputLoss<'_>> {
        self.with_gradient.then_some(InputLoss::Layer { layer: None, loss: self })
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let bank = self.bank.as_ref().expect("fitted");
        let scale = -0.5 / (self.bandwidth * self.bandwidth);
        let mut density = vec![0f64; set.samples()];
        bank.each_row(cx.engine, set, |i, row| {
            let terms: Vec<f64> = row.iter().map(|&d| scale * d as f64).collect();
            density[i] = logsumexp(&terms) - (bank.count as f64).ln();
        })?;
        per_row(density.into_iter(), "KDE", |d| d)
    }
}
