//! L∞ adversarial examples on the GPU: FGSM and PGD (with an optional random start) against
//! the cross-entropy to the labels. Every step is a forward pass, a backward pass to the input
//! and one update kernel (`shaders/attack.wgsl`) on the device; a chunk's steps are recorded in
//! one submission and only the final examples are read back. The ε-ball and the [0, 1] box are
//! in pixel space, before the preprocessing's normalisation, which the attack is told.

use super::{check_request, Engine, Loss, Model, PassRequest, Target};
use crate::error::{Error, Result, NOT_FINITE_HELP};
use crate::kernels::{flat_workgroups, AttackParams, Kernel};
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
    /// 2018); with `random_start`, from a uniform draw in the ε-ball seeded by it.
    Pgd { steps: usize, step_size: f32, random_start: Option<u64> },
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
    fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(Error::Input(format!("attack ε {}: expected a value in [0, 1] (pixel units)", self.epsilon)));
        }
        if let AttackKind::Pgd { steps, step_size, .. } = self.kind {
            if steps == 0 {
                return Err(Error::Input("PGD needs at least one step".into()));
            }
            limits::check("PGD steps", steps, limits::MAX_ATTACK_STEPS, "MAX_ATTACK_STEPS")?;
            if !(step_size.is_finite() && step_size > 0.0) {
                return Err(Error::Input(format!("PGD step size {step_size}: expected a finite value > 0")));
            }
        }
        Ok(())
    }

    /// (steps, step size, random start).
    fn schedule(&self) -> (usize, f32, Option<u64>) {
        match self.kind {
            AttackKind::Fgsm => (1, self.epsilon, None),
            AttackKind::Pgd { steps, step_size, random_start } => (steps, step_size, random_start),
        }
    }
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
    /// `labels`; same layout and normalisation as `input`.
    pub fn attack(
        &self,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        labels: &[usize],
        attack: &Attack,
        pixels: &PixelSpace,
    ) -> Result<Vec<f32>> {
        let [batch, channels, h, w] = shape;
        attack.validate()?;
        pixels.validate(channels)?;
        let request =
            PassRequest { layers: &[], loss: Loss { target: Target::Label, temperature: 1.0 }, input_gradient: true, labels: Some(labels) };
        let label_values = check_request(&request, batch, model.network.num_classes())?;
        let hw = h * w;
        let pixel = |i: usize, v: f32| v * pixels.std[(i / hw) % channels] + pixels.mean[(i / hw) % channels];
        if let Some(i) =
            (0..input.len().min(batch * channels * hw)).find(|&i| !(-BOX_SLACK..=1.0 + BOX_SLACK).contains(&pixel(i, input[i])))
        {
            return Err(Error::Input(format!(
                "sample {}: value {} is pixel {} after undoing the normalisation, outside the [0, 1] box the attack keeps to",
                i / (channels * hw),
                input[i],
                pixel(i, input[i])
            )));
        }
        let (steps, step_size, random_start) = attack.schedule();
        let start: Vec<f32> = match random_start {
            None => input.to_vec(),
            Some(seed) => {
                let mut rng = Rng::new(seed);
                (0..input.len())
                    .map(|i| {
                        let c = (i / hw) % channels;
                        let p = (pixel(i, input[i]) + rng.uniform(-attack.epsilon, attack.epsilon)).clamp(0.0, 1.0);
                        (p - pixels.mean[c]) / pixels.std[c]
                    })
                    .collect()
            }
        };

        let plan = self.plan_for(model, input, shape, &request)?;
        let per_sample = channels * hw;
        let capacity = plan.capacity;
        let stats: Vec<f32> = pixels.mean.iter().chain(&pixels.std).copied().collect();
        let stats = self.gpu.upload_f32("pixel space", &stats);
        let clean = self.gpu.storage_buffer("clean input", (capacity * per_sample * 4) as u64);
        let uniform = self.gpu.uniform_buffer("attack params", bytemuck::bytes_of(&AttackParams::default()));
        let (x, grad) = (plan.graph.input, plan.graph.input_grad.expect("the plan computes the input gradient"));
        let bind_group =
            self.kernels.bind_group(&self.gpu, Kernel::AttackStep, &uniform, &[plan.buffer(grad), &clean, &stats], plan.buffer(x));
        let staging = self.gpu.readback_buffer((capacity * per_sample * 4) as u64);
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
}
