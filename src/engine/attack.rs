//! L∞ adversarial examples on the GPU against the cross-entropy to the labels: FGSM, PGD (with
//! an optional random start and restarts) and APGD-CE (AutoAttack's step-size schedule and
//! momentum). Every step is a forward pass, a backward pass to the input and update kernels
//! (`shaders/attack.wgsl`, `shaders/apgd.wgsl`) on the device; a chunk's steps are recorded in
//! one submission and only the final examples are read back. The ε-ball and the [0, 1] box are
//! in pixel space, before the preprocessing's normalisation, which the attack is told. Random
//! starts are drawn per sample from (seed, restart, the sample's id), so an example does not
//! depend on the batch it came in.

use super::{check_request, Engine, Loss, Model, PassRequest, Target};
use crate::error::{Error, Result, NOT_FINITE_HELP};
use crate::kernels::{flat_workgroups, ApgdParams, AttackParams, Kernel};
use crate::limits;
use crate::rng::Rng;

/// The per-channel normalisation the input went through: `x = (pixel − mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelSpace {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttackKind {
    /// One step of size ε along the sign of the gradient (Goodfellow et al., 2015).
    Fgsm,
    /// `steps` steps of `step_size`, each projected onto the ε-ball and the box (Madry et al.,
    /// 2018); with `random_start`, from a uniform draw in the ε-ball seeded by it. With
    /// `restarts` > 1 (which needs a random start), a sample keeps the first run that fools the
    /// model, else the last run's example.
    Pgd { steps: usize, step_size: f32, random_start: Option<u64>, restarts: usize },
    /// APGD-CE (Croce & Hein, 2020) as AutoAttack's `APGDAttack` (L∞, loss `ce`): a random
    /// start scaled to the ε-ball's corner, step 2ε halved at the checkpoints where the loss
    /// rose in at most ρ of the steps since the last one (or neither the step nor the best loss
    /// changed), restarting from the best point; momentum 0.75. A sample the model gets right
    /// and some iterate fools comes back as the last fooling iterate, any other as the clean
    /// input (AutoAttack's `perturb`). Restarts attack again with new starts, keeping the first
    /// fooling example.
    Apgd { iterations: usize, rho: f32, restarts: usize, seed: u64 },
}

impl AttackKind {
    /// APGD-CE with AutoAttack's defaults: 100 iterations, ρ = 0.75, one restart, seed 0.
    pub const APGD_DEFAULT: AttackKind = AttackKind::Apgd { iterations: 100, rho: 0.75, restarts: 1, seed: 0 };
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attack {
    pub kind: AttackKind,
    /// L∞ radius in pixel units (8/255 is the usual CIFAR budget).
    pub epsilon: f32,
}

/// How far outside [0, 1] a clean pixel may lie (rounding of the preprocessing) before the
/// input is refused as not an image in that pixel space.
const BOX_SLACK: f32 = 1e-4;

impl Attack {
    /// Checks ε, steps, step size, ρ and restarts (as `Engine::attack` does first).
    pub fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(Error::Input(format!("attack ε {}: expected a value in [0, 1] (pixel units)", self.epsilon)));
        }
        let (name, steps) = match self.kind {
            AttackKind::Fgsm => return Ok(()),
            AttackKind::Pgd { steps, step_size, random_start, restarts } => {
                if !(step_size.is_finite() && step_size > 0.0) {
                    return Err(Error::Input(format!("PGD step size {step_size}: expected a finite value > 0")));
                }
                if restarts > 1 && random_start.is_none() {
                    return Err(Error::Input(format!("PGD with {restarts} restarts needs a random start (each restart draws a new one)")));
                }
                ("PGD", steps)
            }
            AttackKind::Apgd { iterations, rho, .. } => {
                if !(rho.is_finite() && (0.0..=1.0).contains(&rho)) {
                    return Err(Error::Input(format!("APGD ρ {rho}: expected a value in [0, 1]")));
                }
                ("APGD", iterations)
            }
        };
        if steps == 0 {
            return Err(Error::Input(format!("{name} needs at least one step")));
        }
        limits::check(&format!("{name} steps"), steps, limits::MAX_ATTACK_STEPS, "MAX_ATTACK_STEPS")?;
        let restarts = self.restarts();
        if restarts == 0 {
            return Err(Error::Input(format!("{name} needs at least one restart")));
        }
        limits::check(&format!("{name} restarts"), restarts, limits::MAX_ATTACK_RESTARTS, "MAX_ATTACK_RESTARTS")
    }

    /// How many times the attack runs (each run all its steps).
    pub fn restarts(&self) -> usize {
        match self.kind {
            AttackKind::Fgsm => 1,
            AttackKind::Pgd { restarts, .. } | AttackKind::Apgd { restarts, .. } => restarts,
        }
    }

    /// Sample `id`'s random start in run `restart`, in pixel units, from its clean pixels;
    /// `None` starts at the clean input.
    pub fn random_start(&self, clean: &[f32], restart: usize, id: usize) -> Option<Vec<f32>> {
        let mixed = |seed: u64| {
            Rng::new(seed ^ (id as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ (restart as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7))
        };
        let eps = self.epsilon;
        match self.kind {
            AttackKind::Fgsm | AttackKind::Pgd { random_start: None, .. } => None,
            AttackKind::Pgd { random_start: Some(seed), .. } => {
                let mut rng = mixed(seed);
                Some(clean.iter().map(|&p| (p + rng.uniform(-eps, eps)).clamp(0.0, 1.0)).collect())
            }
            AttackKind::Apgd { seed, .. } => {
                // AutoAttack: t uniform in [-1, 1), scaled so that its largest |t| is 1.
                let mut rng = mixed(seed);
                let t: Vec<f32> = clean.iter().map(|_| rng.uniform(-1.0, 1.0)).collect();
                let largest = t.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-12;
                Some(clean.iter().zip(&t).map(|(&p, &t)| (p + eps * t / largest).clamp(0.0, 1.0)).collect())
            }
        }
    }
}

/// What every run of an attack on one batch shares: the clean input (normalised NCHW), its
/// shape, the labels as the pass's label buffer takes them, the pass request, the attack and
/// its pixel space.
struct Run<'a> {
    input: &'a [f32],
    shape: [usize; 4],
    label_values: &'a [f32],
    request: &'a PassRequest<'a>,
    attack: &'a Attack,
    pixels: &'a PixelSpace,
}

/// A run's buffers besides the plan: mean then std per channel, the clean input (normalised) and
/// the staging buffer the examples come back through.
struct Inputs {
    stats: wgpu::Buffer,
    clean: wgpu::Buffer,
    staging: wgpu::Buffer,
}

/// APGD's checkpoints: for each iteration, the window k when the step size is checked there.
/// AutoAttack: the first window is ⌊0.22·N⌋, each next one 3 % of N shorter, at least 6 %.
fn apgd_checkpoints(iterations: usize) -> Vec<Option<usize>> {
    let at_least_one = |fraction: f64| ((fraction * iterations as f64) as usize).max(1);
    let (mut k, k_min, decrease) = (at_least_one(0.22), at_least_one(0.06), at_least_one(0.03));
    let mut since = 0;
    (0..iterations)
        .map(|_| {
            since += 1;
            if since < k {
                return None;
            }
            let window = k;
            k = k.saturating_sub(decrease).max(k_min);
            since = 0;
            Some(window)
        })
        .collect()
}

impl PixelSpace {
    fn validate(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::Input(format!(
                "pixel space: {} means and {} standard deviations for {channels} input channels",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(c) = (0..channels).find(|&c| !(self.mean[c].is_finite() && self.std[c].is_finite() && self.std[c] > 0.0)) {
            return Err(Error::Input(format!("pixel space channel {c}: mean {} and std {} (std must be > 0)", self.mean[c], self.std[c])));
        }
        Ok(())
    }
}

impl Engine {
    /// Adversarial versions of the preprocessed NCHW `input`, attacking the cross-entropy to
    /// `labels`; same layout and normalisation as `input`. `ids` name the samples (one each,
    /// e.g. their index in the set) and seed their random starts.
    #[allow(clippy::too_many_arguments)]
    pub fn attack(
        &self,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        labels: &[usize],
        ids: &[usize],
        attack: &Attack,
        pixels: &PixelSpace,
    ) -> Result<Vec<f32>> {
        let [batch, channels, h, w] = shape;
        attack.validate()?;
        pixels.validate(channels)?;
        if ids.len() != batch {
            return Err(Error::Input(format!("{} sample ids for {batch} samples", ids.len())));
        }
        let request =
            PassRequest { layers: &[], loss: Loss { target: Target::Label, temperature: 1.0 }, input_gradient: true, labels: Some(labels) };
        let label_values = check_request(&request, batch, model.network.num_classes())?;
        let hw = h * w;
        let per_sample = channels * hw;
        let pixel = |i: usize, v: f32| v * pixels.std[(i / hw) % channels] + pixels.mean[(i / hw) % channels];
        if let Some(i) = (0..input.len().min(batch * per_sample)).find(|&i| !(-BOX_SLACK..=1.0 + BOX_SLACK).contains(&pixel(i, input[i]))) {
            return Err(Error::Input(format!(
                "sample {}: value {} is pixel {} after undoing the normalisation, outside the [0, 1] box the attack keeps to",
                i / per_sample,
                input[i],
                pixel(i, input[i])
            )));
        }
        let normalise = |i: usize, p: f32| {
            let c = (i / hw) % channels;
            (p - pixels.mean[c]) / pixels.std[c]
        };
        let clean_pixels: Vec<f32> = input.iter().enumerate().map(|(i, &v)| pixel(i, v)).collect();
        let restarts = attack.restarts();
        let mut result = input.to_vec();
        let mut fooled = vec![false; batch];
        for restart in 0..restarts {
            // Pixel-unit starts of every sample (the clean pixels where there is none).
            let start: Vec<f32> = (0..batch)
                .flat_map(|s| {
                    let clean = &clean_pixels[s * per_sample..(s + 1) * per_sample];
                    attack.random_start(clean, restart, ids[s]).unwrap_or_else(|| clean.to_vec())
                })
                .collect();
            let run = Run { input, shape, label_values: &label_values, request: &request, attack, pixels };
            let (examples, fooled_now) = match attack.kind {
                AttackKind::Apgd { iterations, rho, .. } => self.apgd_run(model, &run, iterations, rho, &start)?,
                AttackKind::Fgsm | AttackKind::Pgd { .. } => {
                    let start: Vec<f32> = start.iter().enumerate().map(|(i, &p)| normalise(i, p)).collect();
                    let examples = self.pgd_run(model, &run, &start)?;
                    let fooled_now = if restarts > 1 { self.misclassified(model, &examples, shape, labels)? } else { vec![true; batch] };
                    (examples, fooled_now)
                }
            };
            let last = restart + 1 == restarts;
            let keep_last = last && !matches!(attack.kind, AttackKind::Apgd { .. });
            let taken: Vec<usize> = (0..batch).filter(|&s| !fooled[s] && (fooled_now[s] || keep_last)).collect();
            for s in taken {
                result[s * per_sample..(s + 1) * per_sample].copy_from_slice(&examples[s * per_sample..(s + 1) * per_sample]);
                fooled[s] = fooled_now[s];
            }
        }
        Ok(result)
    }

    fn misclassified(&self, model: &mut Model, input: &[f32], shape: [usize; 4], labels: &[usize]) -> Result<Vec<bool>> {
        let logits = self.predict(model, input, shape)?;
        let classes = logits.len() / shape[0];
        Ok(labels
            .iter()
            .enumerate()
            .map(|(s, &label)| {
                let row = &logits[s * classes..(s + 1) * classes];
                (0..classes).fold(0, |best, c| if row[c] > row[best] { c } else { best }) != label
            })
            .collect())
    }

    /// What both kinds of run read and write besides the plan, for `elements` input values.
    fn attack_inputs(&self, pixels: &PixelSpace, elements: usize) -> Inputs {
        let stats: Vec<f32> = pixels.mean.iter().chain(&pixels.std).copied().collect();
        Inputs {
            stats: self.gpu.upload_f32("pixel space", &stats),
            clean: self.gpu.storage_buffer("clean input", (elements * 4) as u64),
            staging: self.gpu.readback_buffer((elements * 4) as u64),
        }
    }

    /// FGSM or one PGD run from the normalised `start`.
    fn pgd_run(&self, model: &mut Model, run: &Run, start: &[f32]) -> Result<Vec<f32>> {
        let Run { input, shape, label_values, request, attack, pixels } = *run;
        let [batch, channels, h, w] = shape;
        let hw = h * w;
        let (steps, step_size) = match attack.kind {
            AttackKind::Fgsm => (1, attack.epsilon),
            AttackKind::Pgd { steps, step_size, .. } => (steps, step_size),
            AttackKind::Apgd { .. } => unreachable!("APGD runs in apgd_run"),
        };
        let plan = self.plan_for(model, input, shape, request)?;
        let per_sample = channels * hw;
        let capacity = plan.capacity;
        let Inputs { stats, clean, staging } = self.attack_inputs(pixels, capacity * per_sample);
        let uniform = self.gpu.uniform_buffer("attack params", bytemuck::bytes_of(&AttackParams::default()));
        let (x, grad) = (plan.graph.input, plan.graph.input_grad.expect("the plan computes the input gradient"));
        let bind_group =
            self.kernels.bind_group(&self.gpu, Kernel::AttackStep, &uniform, &[plan.buffer(grad), &clean, &stats], plan.buffer(x));
        let mut out = Vec::with_capacity(input.len());
        for first in (0..batch).step_by(capacity) {
            let n = capacity.min(batch - first);
            let range = first * per_sample..(first + n) * per_sample;
            plan.set_batch(&self.gpu, n);
            let total = (n * per_sample) as u32;
            let params = AttackParams {
                total,
                channels: channels as u32,
                hw: hw as u32,
                step: step_size,
                epsilon: attack.epsilon,
                ..Default::default()
            };
            self.gpu.queue.write_buffer(&uniform, 0, bytemuck::bytes_of(&params));
            self.gpu.queue.write_buffer(&clean, 0, bytemuck::cast_slice(&input[range.clone()]));
            self.gpu.queue.write_buffer(plan.buffer(x), 0, bytemuck::cast_slice(&start[range.clone()]));
            let labels_buffer = plan.buffer(plan.graph.labels.expect("the plan reads labels"));
            self.gpu.queue.write_buffer(labels_buffer, 0, bytemuck::cast_slice(&label_values[first..first + n]));
            let [gx, gy, gz] = flat_workgroups(total, self.gpu.max_workgroups_per_dim());
            let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("attack") });
            for _ in 0..steps {
                plan.encode(&mut encoder);
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("attack step"), timestamp_writes: None });
                pass.set_pipeline(self.kernels.pipeline(Kernel::AttackStep));
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(gx, gy, gz);
            }
            encoder.copy_buffer_to_buffer(plan.buffer(x), 0, &staging, 0, (n * per_sample * 4) as u64);
            self.gpu.queue.submit([encoder.finish()]);
            let values = self.gpu.read_back(&[(&staging, n * per_sample)])?.remove(0);
            self.tick(n);
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::NotFinite { sample: first + i / per_sample, message: NOT_FINITE_HELP.into() });
            }
            out.extend(values);
        }
        Ok(out)
    }

    /// One APGD-CE run from the pixel-unit `start`: the examples (normalised) and which samples
    /// it fooled (correct when clean, misclassified at some iterate).
    fn apgd_run(&self, model: &mut Model, run: &Run, iterations: usize, rho: f32, start: &[f32]) -> Result<(Vec<f32>, Vec<bool>)> {
        let Run { input, shape, label_values, request, pixels, .. } = *run;
        let epsilon = run.attack.epsilon;
        const STATE: usize = 12;
        const POINTS: usize = 5;
        const CLEAN_CORRECT: usize = 6;
        const FOOLED: usize = 7;
        let [batch, channels, h, w] = shape;
        let classes = model.network.num_classes();
        let plan = self.plan_for(model, input, shape, request)?;
        let (hw, per_sample, capacity) = (h * w, channels * h * w, plan.capacity);
        let gpu = &self.gpu;
        let Inputs { stats, clean, staging } = self.attack_inputs(pixels, capacity * per_sample);
        let points = gpu.storage_buffer("APGD points", (capacity * per_sample * POINTS * 4) as u64);
        let state = gpu.storage_buffer("APGD sample state", (capacity * STATE * 4) as u64);
        let (x, grad, logits) = (plan.graph.input, plan.graph.input_grad.expect("the plan computes the input gradient"), plan.graph.logits);
        let labels = plan.graph.labels.expect("the plan reads labels");
        let unused = self.kernels.placeholder();
        let checkpoints = apgd_checkpoints(iterations);
        // Uniforms: tracking the clean pass, the start and each iteration; the first and later
        // steps; emitting the iterate and the result. Rewritten per chunk, bound once.
        let uniform = |label: &str| gpu.uniform_buffer(label, bytemuck::bytes_of(&ApgdParams::default()));
        let track_uniforms: Vec<wgpu::Buffer> = (0..iterations + 2).map(|_| uniform("APGD track params")).collect();
        let step_uniforms = [uniform("APGD first step params"), uniform("APGD step params")];
        let emit_uniforms = [uniform("APGD emit params"), uniform("APGD result params")];
        let commit_uniform = uniform("APGD commit params");
        let bind = |kernel, params: &wgpu::Buffer, reads: [&wgpu::Buffer; 4], output: &wgpu::Buffer| {
            self.kernels.bind_group(gpu, kernel, params, &reads, output)
        };
        let track: Vec<wgpu::BindGroup> = track_uniforms
            .iter()
            .map(|u| bind(Kernel::ApgdTrack, u, [plan.buffer(logits), plan.buffer(labels), unused, unused], &state))
            .collect();
        let commit = bind(Kernel::ApgdCommit, &commit_uniform, [plan.buffer(grad), &state, unused, unused], &points);
        let steps = step_uniforms.each_ref().map(|u| bind(Kernel::ApgdStep, u, [plan.buffer(grad), &state, &clean, &stats], &points));
        let emits = emit_uniforms.each_ref().map(|u| bind(Kernel::ApgdEmit, u, [&points, &state, &clean, &stats], plan.buffer(x)));
        let state_staging = gpu.readback_buffer((capacity * STATE * 4) as u64);
        let (mut out, mut fooled) = (Vec::with_capacity(input.len()), Vec::with_capacity(batch));
        for first in (0..batch).step_by(capacity) {
            let n = capacity.min(batch - first);
            let range = first * per_sample..(first + n) * per_sample;
            plan.set_batch(gpu, n);
            let base = ApgdParams {
                total: (n * per_sample) as u32,
                channels: channels as u32,
                hw: hw as u32,
                per_sample: per_sample as u32,
                samples: n as u32,
                classes: classes as u32,
                epsilon,
                initial_step: 2.0 * epsilon,
                momentum: 1.0,
                ..Default::default()
            };
            let write = |buffer: &wgpu::Buffer, params: ApgdParams| gpu.queue.write_buffer(buffer, 0, bytemuck::bytes_of(&params));
            write(&track_uniforms[0], ApgdParams { phase: 0, ..base });
            write(&track_uniforms[1], ApgdParams { phase: 1, ..base });
            for (i, window) in checkpoints.iter().enumerate() {
                // Iteration 0 compares its loss with AutoAttack's `loss_steps[-1]`: still 0,
                // unless the run has a single iteration (then it is this very loss).
                let first = if i > 0 {
                    0
                } else if iterations == 1 {
                    2
                } else {
                    1
                };
                let (checkpoint, threshold) = window.map_or((0, 0.0), |k| (1, k as f32 * rho));
                write(&track_uniforms[i + 2], ApgdParams { phase: 2, first, checkpoint, threshold, ..base });
            }
            write(&commit_uniform, base);
            write(&step_uniforms[0], base);
            write(&step_uniforms[1], ApgdParams { momentum: 0.75, ..base });
            write(&emit_uniforms[0], ApgdParams { phase: 0, ..base });
            write(&emit_uniforms[1], ApgdParams { phase: 1, ..base });
            let initial: Vec<f32> = start[range.clone()]
                .iter()
                .flat_map(|&p| [p, p, p, 0.0, p]) // old, best, adversarial, best gradient, current
                .collect();
            gpu.queue.write_buffer(&points, 0, bytemuck::cast_slice(&initial));
            gpu.queue.write_buffer(&clean, 0, bytemuck::cast_slice(&input[range.clone()]));
            gpu.queue.write_buffer(plan.buffer(x), 0, bytemuck::cast_slice(&input[range.clone()]));
            gpu.queue.write_buffer(plan.buffer(labels), 0, bytemuck::cast_slice(&label_values[first..first + n]));
            let per_element = flat_workgroups(base.total, gpu.max_workgroups_per_dim());
            let per_sample_groups = flat_workgroups(n as u32, gpu.max_workgroups_per_dim());
            let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("APGD") });
            let dispatch = |encoder: &mut wgpu::CommandEncoder, kernel, group: &wgpu::BindGroup, [gx, gy, gz]: [u32; 3]| {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("APGD"), timestamp_writes: None });
                pass.set_pipeline(self.kernels.pipeline(kernel));
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(gx, gy, gz);
            };
            plan.encode(&mut encoder);
            dispatch(&mut encoder, Kernel::ApgdTrack, &track[0], per_sample_groups);
            dispatch(&mut encoder, Kernel::ApgdEmit, &emits[0], per_element);
            plan.encode(&mut encoder);
            dispatch(&mut encoder, Kernel::ApgdTrack, &track[1], per_sample_groups);
            dispatch(&mut encoder, Kernel::ApgdCommit, &commit, per_element);
            for i in 0..iterations {
                dispatch(&mut encoder, Kernel::ApgdStep, &steps[usize::from(i > 0)], per_element);
                dispatch(&mut encoder, Kernel::ApgdEmit, &emits[0], per_element);
                plan.encode(&mut encoder);
                dispatch(&mut encoder, Kernel::ApgdTrack, &track[i + 2], per_sample_groups);
                dispatch(&mut encoder, Kernel::ApgdCommit, &commit, per_element);
            }
            dispatch(&mut encoder, Kernel::ApgdEmit, &emits[1], per_element);
            encoder.copy_buffer_to_buffer(plan.buffer(x), 0, &staging, 0, (n * per_sample * 4) as u64);
            encoder.copy_buffer_to_buffer(&state, 0, &state_staging, 0, (n * STATE * 4) as u64);
            gpu.queue.submit([encoder.finish()]);
            let mut values = gpu.read_back(&[(&staging, n * per_sample), (&state_staging, n * STATE)])?;
            self.tick(n);
            let sample_state = values.pop().expect("two readbacks");
            let examples = values.pop().expect("two readbacks");
            if let Some(i) = examples.iter().position(|v| !v.is_finite()) {
                return Err(Error::NotFinite { sample: first + i / per_sample, message: NOT_FINITE_HELP.into() });
            }
            out.extend(examples);
            fooled.extend(sample_state.chunks(STATE).map(|s| s[CLEAN_CORRECT] == 1.0 && s[FOOLED] == 1.0));
        }
        Ok((out, fooled))
    }
}

#[cfg(test)]
mod tests {
    use super::apgd_checkpoints;

    #[test]
    fn checkpoints_follow_autoattack() {
        // N = 100: windows 22, 19, 16, 13, 10, 7, then 6: checks after iterations 21, 40, 56, …
        let at: Vec<(usize, usize)> = apgd_checkpoints(100).iter().enumerate().filter_map(|(i, k)| k.map(|k| (i, k))).collect();
        assert_eq!(&at[..8], &[(21, 22), (40, 19), (56, 16), (69, 13), (79, 10), (86, 7), (92, 6), (98, 6)]);
        assert_eq!(at.len(), 8);
        assert_eq!(apgd_checkpoints(1), vec![Some(1)]);
    }
}
