//! Corruptions after the CIFAR-10-C recipe (Hendrycks & Dietterich, 2019), simplified and
//! deterministic given a seed, and synthetic outliers built from them.
//!
//! Severity constants are CIFAR-10-C's (tuned for 32×32 images) on pixel values in [0, 1];
//! results are rounded back to u8. Simplifications: shot noise draws Poisson counts exactly
//! below λ = 30 and by the normal approximation above; Gaussian blur is separable with a kernel
//! radius of ⌊4σ + 0.5⌋ and edge pixels repeated (scikit-image's `gaussian` defaults).

use super::{Dataset, Image};
use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// + N(0, σ²), σ = 0.04, 0.06, 0.08, 0.09, 0.10.
    GaussianNoise,
    /// Poisson(x·λ)/λ, λ = 500, 250, 100, 75, 50.
    ShotNoise,
    /// Salt and pepper on a fraction 0.01, 0.02, 0.03, 0.05, 0.07 of the values.
    ImpulseNoise,
    /// Gaussian blur, σ = 0.4, 0.6, 0.7, 0.8, 1.0 pixels.
    GaussianBlur,
    /// (x − channel mean)·c + mean, c = 0.75, 0.5, 0.4, 0.3, 0.15.
    Contrast,
    /// HSV value + 0.05, 0.1, 0.15, 0.2, 0.3 (hue and saturation kept).
    Brightness,
    /// A random permutation of all pixels (each pixel's channels kept together); any severity.
    PixelShuffle,
    /// 255 − x; any severity.
    Invert,
}

const ALL: [Corruption; 8] = [
    Corruption::GaussianNoise,
    Corruption::ShotNoise,
    Corruption::ImpulseNoise,
    Corruption::GaussianBlur,
    Corruption::Contrast,
    Corruption::Brightness,
    Corruption::PixelShuffle,
    Corruption::Invert,
];

impl Corruption {
    /// By name (`gaussian_noise`, `shot_noise`, …; case and `-`/`_` ignored).
    pub fn parse(name: &str) -> Result<Self> {
        let key = name.trim().to_ascii_lowercase().replace('-', "_");
        ALL.iter()
            .copied()
            .find(|c| c.name() == key)
            .ok_or_else(|| Error::Input(format!("unknown corruption `{name}`; expected one of {}", ALL.map(Corruption::name).join(", "))))
    }

    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::ImpulseNoise => "impulse_noise",
            Corruption::GaussianBlur => "gaussian_blur",
            Corruption::Contrast => "contrast",
            Corruption::Brightness => "brightness",
            Corruption::PixelShuffle => "pixel_shuffle",
            Corruption::Invert => "invert",
        }
    }

    pub fn all() -> &'static [Corruption] {
        &ALL
    }

    /// The corrupted image, same size and channels. `severity` is clamped to 1..=5; the same
    /// (image, severity, seed) always gives the same result. An inconsistent image (see
    /// [`Image::check`]) is returned unchanged.
    pub fn apply(self, image: &Image, severity: u8, seed: u64) -> Image {
        if image.check().is_err() {
            return image.clone();
        }
        let s = severity.clamp(1, 5) as usize - 1;
        let mut rng = Rng::new(seed);
        let c = image.channels as usize;
        let x: Vec<f32> = image.pixels.iter().map(|&v| v as f32 / 255.0).collect();
        let y: Vec<f32> = match self {
            Corruption::GaussianNoise => {
                let sigma = [0.04, 0.06, 0.08, 0.09, 0.10][s];
                x.iter().map(|v| v + sigma * rng.normal()).collect()
            }
            Corruption::ShotNoise => {
                let lambda = [500.0, 250.0, 100.0, 75.0, 50.0][s];
                x.iter().map(|&v| (poisson(&mut rng, v as f64 * lambda) / lambda) as f32).collect()
            }
            Corruption::ImpulseNoise => {
                let amount = [0.01, 0.02, 0.03, 0.05, 0.07][s];
                x.iter()
                    .map(|&v| match rng.next_f64() < amount {
                        true if rng.next_u64() & 1 == 0 => 0.0,
                        true => 1.0,
                        false => v,
                    })
                    .collect()
            }
            Corruption::GaussianBlur => blur(&x, image.width as usize, image.height as usize, c, [0.4, 0.6, 0.7, 0.8, 1.0][s]),
            Corruption::Contrast => {
                let factor = [0.75, 0.5, 0.4, 0.3, 0.15][s];
                let pixels = (x.len() / c) as f32;
                let means: Vec<f32> = (0..c).map(|ch| x.iter().skip(ch).step_by(c).sum::<f32>() / pixels).collect();
                x.iter().enumerate().map(|(i, &v)| (v - means[i % c]) * factor + means[i % c]).collect()
            }
            Corruption::Brightness => {
                let add = [0.05, 0.1, 0.15, 0.2, 0.3][s];
                // With hue and saturation fixed, RGB scales with the value V = max(r, g, b);
                // black (V = 0, saturation 0) becomes gray V'.
                x.chunks(c)
                    .flat_map(|px| {
                        let v = px.iter().fold(0.0f32, |a, &b| a.max(b));
                        let raised = (v + add).min(1.0);
                        px.iter().map(move |&p| if v > 0.0 { p * raised / v } else { raised })
                    })
                    .collect()
            }
            Corruption::PixelShuffle => {
                let mut order: Vec<usize> = (0..x.len() / c).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                order.iter().flat_map(|&p| x[p * c..(p + 1) * c].iter().copied()).collect()
            }
            Corruption::Invert => x.iter().map(|v| 1.0 - v).collect(),
        };
        let pixels = y.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        Image { pixels, ..image.clone() }
    }
}

/// A Poisson draw of mean `lambda`: Knuth's product method below 30, the rounded normal
/// approximation above (its error there is below what u8 rounding keeps).
fn poisson(rng: &mut Rng, lambda: f64) -> f64 {
    if lambda >= 30.0 {
        return (lambda + lambda.sqrt() * rng.normal() as f64).round().max(0.0);
    }
    let limit = (-lambda).exp();
    let (mut k, mut product) = (0.0, rng.next_f64());
    while product > limit {
        k += 1.0;
        product *= rng.next_f64();
    }
    k
}

/// Separable Gaussian blur of HWC `x`, edge pixels repeated.
fn blur(x: &[f32], w: usize, h: usize, c: usize, sigma: f32) -> Vec<f32> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let kernel: Vec<f32> = (-radius..=radius).map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (k, weight) in kernel.iter().enumerate() {
                        let d = k as i64 - radius;
                        let (sy, sx) = if horizontal {
                            (y, (x as i64 + d).clamp(0, w as i64 - 1) as usize)
                        } else {
                            ((y as i64 + d).clamp(0, h as i64 - 1) as usize, x)
                        };
                        acc += weight * src[(sy * w + sx) * c + ch];
                    }
                    out[(y * w + x) * c + ch] = acc / total;
                }
            }
        }
        out
    };
    pass(&pass(x, true), false)
}

/// Outlier `index` of a synthetic set: the kinds cycle with the index.
pub(crate) fn outlier(image: &Image, index: usize, seed: u64) -> Image {
    const KINDS: [Corruption; 4] = [Corruption::GaussianNoise, Corruption::GaussianBlur, Corruption::Contrast, Corruption::PixelShuffle];
    let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64;
    KINDS[index % KINDS.len()].apply(image, 5, seed)
}

/// Synthetic outliers for ID-only parameter selection: image i of `base` becomes Gaussian
/// noise, blur, contrast (all severity 5) or a pixel shuffle for i mod 4 = 0, 1, 2, 3, seeded
/// by `seed` and i; labels dropped. Lazy: images are made on access. Spec `outliers:SPEC`
/// (seed 0) or `outliers:SEED:SPEC`.
pub fn synthetic_outliers(base: &Dataset, seed: u64) -> Dataset {
    Dataset::outliers(base, seed)
}

impl Corruption {
    /// The 15 CIFAR-10-C corruptions, in the benchmark's order, that this build implements
    /// (a stub until the full set lands: the ones that exist today).
    pub fn cifar10_c() -> &'static [Corruption] {
        &[Corruption::GaussianNoise, Corruption::ShotNoise, Corruption::ImpulseNoise, Corruption::Contrast, Corruption::Brightness]
    }
}
