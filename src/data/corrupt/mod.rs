//! The CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019) with the CIFAR (32×32) constants
//! of `make_cifar_c.py`, and synthetic outliers built from them.
//!
//! Each corruption follows the reference function step by step on an H×W×3 f64 array in [0, 1]
//! (f64 where the reference works in float64, f32 rounding where it works in float32, sums in
//! the libraries' order, since truncation turns a rounding error at an exact level into one), then
//! the result is clipped to [0, 255] and **truncated** to u8, as `np.uint8(...)` does when the
//! released CIFAR-10-C files were written.
//!
//! - **Random draws** are NumPy's legacy `np.random` stream ([`NumpyLegacy`]) seeded with the
//!   seed (folded to 32 bits): for a seed below 2³² a corruption reproduces
//!   `np.random.seed(seed); f(x, severity)` of the reference draw for draw, except
//!   impulse noise (scikit-image draws from an unseeded `default_rng`; here the same Bernoulli
//!   trials come from the legacy stream).
//! - **Sizes**: the 32s of the reference become the image's height and width (glass blur's
//!   loop bounds, fog's fractal, the frost crop); the constants stay CIFAR's (elastic's are
//!   fractions of 32 px); the plasma fractal is drawn on the next power of two ≥ both sides.
//! - **Gray images** are replicated to RGB, corrupted as RGB (the reference needs RGB for HSV,
//!   snow's gray term, the spatter and frost colours) and the R channel is kept, so per-channel
//!   noise keeps its level and a gray image's saturation stays 0.
//! - **Motion blur and snow** use a line kernel instead of ImageMagick (see `ops::motion_blur`);
//!   **JPEG** uses the `image` crate's encoder and decoder instead of PIL's libjpeg.
//! - **Frost** blends a crop of one of the reference frost pictures `frost1.png` … `frost5.jpg`
//!   (the reference draws `randint(5)`, so `frost6.jpg` is never used), read from
//!   `$NAC_FROST_DIR` or else `data/frost`; `tools/fetch_data.sh` puts them there from the PyPI
//!   package `imagecorruptions`. Without them `frost` is an error when its dataset is opened.
//!
//! Checked against goldens of the original functions (`tools/corruption_reference.py`,
//! `tests/corruptions.rs`): equal for everything but impulse noise (statistics),
//! motion blur and snow (a line kernel against ImageMagick: ≤ 1 level) and JPEG (codec
//! differences); the table of checks and
//! tolerances is tests/golden/corruptions/README.md. `pixel_shuffle` and `invert` (for the
//! synthetic outliers) are not CIFAR-10-C's.

mod ops;
mod spatter;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use self::ops::{Arr, Border};
use super::{Dataset, Image};
use crate::error::{Error, Result};
use crate::rng::{NumpyLegacy, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// x + N(0, σ²), σ = 0.04, 0.06, 0.08, 0.09, 0.10.
    GaussianNoise,
    /// Poisson(x·λ)/λ, λ = 500, 250, 100, 75, 50.
    ShotNoise,
    /// Salt and pepper on a fraction 0.01, 0.02, 0.03, 0.05, 0.07 of the values.
    ImpulseNoise,
    /// A disk kernel (radius 0.3, 0.4, 0.5, 1, 1.5) anti-aliased by a 3×3 Gaussian.
    DefocusBlur,
    /// Gaussian blur, each pixel replaced by a random neighbour's, blurred again.
    GlassBlur,
    /// A line blur (radius 6, 6, 6, 8, 9) at a random angle in ±45°.
    MotionBlur,
    /// The mean of the image zoomed by 1, 1.01, … up to 1.06, 1.11, 1.15, 1.20, 1.25.
    ZoomBlur,
    /// A zoomed, thresholded and motion-blurred noise layer added over a brightened image.
    Snow,
    /// A crop of a frost picture blended in.
    Frost,
    /// A plasma fractal added, the maximum kept.
    Fog,
    /// HSV value + 0.05, 0.1, 0.15, 0.2, 0.3.
    Brightness,
    /// (x − channel mean)·c + mean, c = 0.75, 0.5, 0.4, 0.3, 0.15.
    Contrast,
    /// A random affine map, then a smoothed random displacement field.
    ElasticTransform,
    /// Box-downsampled to 0.95, 0.9, 0.85, 0.75, 0.65 of the size and box-upsampled back.
    Pixelate,
    /// JPEG at quality 80, 65, 58, 50, 40.
    JpegCompression,
    /// x + x·N(0, σ²), σ = 0.06, 0.1, 0.12, 0.16, 0.2.
    SpeckleNoise,
    /// Gaussian blur, σ = 0.4, 0.6, 0.7, 0.8, 1.0 pixels.
    GaussianBlur,
    /// Water drops (severities 1-3) or mud (4-5) from a thresholded noise layer.
    Spatter,
    /// HSV saturation ·0.3, ·0.1, ·1.5, ·2 + 0.1, ·2.5 + 0.2.
    Saturate,
    /// A random permutation of all pixels (each pixel's channels kept together); any severity.
    PixelShuffle,
    /// 255 − x; any severity.
    Invert,
}

use Corruption::*;

const ALL: [Corruption; 21] = [
    GaussianNoise,
    ShotNoise,
    ImpulseNoise,
    DefocusBlur,
    GlassBlur,
    MotionBlur,
    ZoomBlur,
    Snow,
    Frost,
    Fog,
    Brightness,
    Contrast,
    ElasticTransform,
    Pixelate,
    JpegCompression,
    SpeckleNoise,
    GaussianBlur,
    Spatter,
    Saturate,
    PixelShuffle,
    Invert,
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
            GaussianNoise => "gaussian_noise",
            ShotNoise => "shot_noise",
            ImpulseNoise => "impulse_noise",
            DefocusBlur => "defocus_blur",
            GlassBlur => "glass_blur",
            MotionBlur => "motion_blur",
            ZoomBlur => "zoom_blur",
            Snow => "snow",
            Frost => "frost",
            Fog => "fog",
            Brightness => "brightness",
            Contrast => "contrast",
            ElasticTransform => "elastic_transform",
            Pixelate => "pixelate",
            JpegCompression => "jpeg_compression",
            SpeckleNoise => "speckle_noise",
            GaussianBlur => "gaussian_blur",
            Spatter => "spatter",
            Saturate => "saturate",
            PixelShuffle => "pixel_shuffle",
            Invert => "invert",
        }
    }

    /// Every corruption: the CIFAR-10-C 15, the 4 extras, then pixel shuffle and invert.
    pub fn all() -> &'static [Corruption] {
        &ALL
    }

    /// The 15 corruptions of CIFAR-10-C, in the paper's order.
    pub fn cifar10_c() -> &'static [Corruption] {
        &ALL[..15]
    }

    /// The 4 extra corruptions released with CIFAR-10-C (speckle noise, Gaussian blur, spatter,
    /// saturate).
    pub fn extras() -> &'static [Corruption] {
        &ALL[15..19]
    }

    /// Checks that the corruption can run: `frost` needs its pictures (loaded once here).
    pub fn check_available(self) -> Result<()> {
        match self {
            Frost => frost_pictures().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The corrupted image, same size and channels. `severity` is clamped to 1..=5; the same
    /// (image, severity, seed) always gives the same result. Errors for an inconsistent image
    /// (see [`Image::check`]) and for `frost` without its pictures.
    pub fn apply(self, image: &Image, severity: u8, seed: u64) -> Result<Image> {
        match self {
            Frost => frost_with(image, severity, seed, &frost_pictures()?),
            _ => corrupt(image, |x| self.reference(x, severity.clamp(1, 5) as usize - 1, seed)),
        }
    }

    /// The reference function on `x` (RGB in [0, 1]) at severity index `s`, in [0, 255].
    fn reference(self, x: &Arr, s: usize, seed: u64) -> Arr {
        let mut rng = NumpyLegacy::new((seed ^ (seed >> 32)) as u32);
        let clip = |v: f64| v.clamp(0.0, 1.0) * 255.0;
        match self {
            GaussianNoise => {
                let c = [0.04, 0.06, 0.08, 0.09, 0.10][s];
                x.map(|v| clip(v + rng.normal(0.0, c)))
            }
            ShotNoise => {
                let c = [500.0, 250.0, 100.0, 75.0, 50.0][s];
                x.map(|v| clip(rng.poisson(v * c) as f64 / c))
            }
            ImpulseNoise => {
                let c = [0.01, 0.02, 0.03, 0.05, 0.07][s];
                let flipped: Vec<bool> = x.v.iter().map(|_| rng.random_sample() <= c).collect();
                let salted: Vec<bool> = x.v.iter().map(|_| rng.random_sample() <= 0.5).collect();
                let v = x.v.iter().zip(flipped.iter().zip(&salted)).map(|(&v, (&f, &salt))| {
                    clip(if !f {
                        v
                    } else if salt {
                        1.0
                    } else {
                        0.0
                    })
                });
                Arr { v: v.collect(), ..*x }
            }
            SpeckleNoise => {
                let c = [0.06, 0.1, 0.12, 0.16, 0.2][s];
                x.map(|v| clip(v + v * rng.normal(0.0, c)))
            }
            GaussianBlur => ops::gaussian(x, [0.4, 0.6, 0.7, 0.8, 1.0][s], 4.0, Border::Nearest).map(clip),
            GlassBlur => {
                let (sigma, delta, iterations) = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s];
                let mut y = ops::gaussian(x, sigma, 4.0, Border::Nearest).map(|v| (v * 255.0).clamp(0.0, 255.0).trunc());
                for _ in 0..iterations {
                    for h in (delta + 1..=y.h as i64 - delta).rev() {
                        for w in (delta + 1..=y.w as i64 - delta).rev() {
                            let dx = rng.randint(-delta, delta);
                            let dy = rng.randint(-delta, delta);
                            // The reference's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on NumPy
                            // views copies the neighbour's pixel and leaves the neighbour as it is.
                            for ch in 0..3 {
                                let v = y.at((h + dy) as usize, (w + dx) as usize, ch);
                                y.set(h as usize, w as usize, ch, v);
                            }
                        }
                    }
                }
                ops::gaussian(&y.map(|v| v / 255.0), sigma, 4.0, Border::Nearest).map(clip)
            }
            DefocusBlur => {
                let (radius, alias_blur) = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][s];
                ops::filter2d(x, &disk(radius, alias_blur), 17).map(clip)
            }
            MotionBlur => {
                let (radius, sigma) = [(6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)][s];
                ops::motion_blur(&x.map(|v| v * 255.0), radius, sigma, rng.uniform(-45.0, 45.0))
            }
            ZoomBlur => {
                let steps = [7, 12, 16, 21, 26][s];
                // `np.arange(1, end, 0.01)` fills start + i·(second − start).
                let delta = (1.0f64 + 0.01) - 1.0;
                let x = x.map(|v| v as f32 as f64);
                let mut out = Arr::new(x.h, x.w, 3);
                for i in 0..steps {
                    let zoomed = ops::clipped_zoom(&x, 1.0 + i as f64 * delta);
                    out.v.iter_mut().zip(&zoomed.v).for_each(|(o, z)| *o = (*o as f32 + *z as f32) as f64);
                }
                let v =
                    x.v.iter().zip(&out.v).map(|(&a, &o)| (((a as f32 + o as f32) / (steps as f32 + 1.0)).clamp(0.0, 1.0) * 255.0) as f64);
                Arr { v: v.collect(), ..x }
            }
            Snow => snow(x, s, &mut rng),
            Fog => {
                let (strength, decay) = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][s];
                let max_val = x.v.iter().fold(f64::MIN, |a, &b| a.max(b));
                let side = x.h.max(x.w).next_power_of_two().max(2);
                let plasma = plasma_fractal(side, decay, &mut rng);
                let mut y = x.clone();
                for r in 0..x.h {
                    for c in 0..x.w {
                        for ch in 0..3 {
                            let v = x.at(r, c, ch) + strength * plasma[r * side + c];
                            y.set(r, c, ch, clip(v * max_val / (max_val + strength)));
                        }
                    }
                }
                y
            }
            Brightness => hsv_map(x, |hsv| hsv[2] = (hsv[2] + [0.05, 0.1, 0.15, 0.2, 0.3][s]).clamp(0.0, 1.0)),
            Saturate => {
                let (scale, add) = [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)][s];
                hsv_map(x, |hsv| hsv[1] = (hsv[1] * scale + add).clamp(0.0, 1.0))
            }
            Contrast => {
                let c = [0.75, 0.5, 0.4, 0.3, 0.15][s];
                let n = (x.h * x.w) as f64;
                let means: Vec<f64> = (0..3).map(|ch| x.v.iter().skip(ch).step_by(3).sum::<f64>() / n).collect();
                let v = x.v.iter().enumerate().map(|(i, &v)| clip((v - means[i % 3]) * c + means[i % 3]));
                Arr { v: v.collect(), ..*x }
            }
            ElasticTransform => elastic(x, s, &mut rng),
            Pixelate => {
                let c = [0.95, 0.9, 0.85, 0.75, 0.65][s];
                let u8s = to_u8(x);
                let (w, h) = (((x.w as f64 * c) as usize).max(1), ((x.h as f64 * c) as usize).max(1));
                let small = ops::pil_box_resize(&u8s, x.w, x.h, 3, w, h);
                let back = ops::pil_box_resize(&small, w, h, 3, x.w, x.h);
                Arr { v: back.iter().map(|&v| v as f64).collect(), ..*x }
            }
            JpegCompression => jpeg(x, [80, 65, 58, 50, 40][s]),
            Spatter => spatter::spatter(x, s, &mut rng),
            Frost => unreachable!("frost is applied by frost_with"),
            PixelShuffle => {
                let mut rng = Rng::new(seed);
                let mut order: Vec<usize> = (0..x.h * x.w).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
                Arr { v: order.iter().flat_map(|&p| x.v[p * 3..(p + 1) * 3].iter().map(|v| (v * 255.0).round())).collect(), ..*x }
            }
            Invert => x.map(|v| 255.0 - (v * 255.0).round()),
        }
    }
}

/// Runs `f` (RGB in [0, 1] → [0, 255]) on `image`: gray replicated to RGB and the R channel
/// kept; the result clipped and truncated to u8.
fn corrupt(image: &Image, f: impl FnOnce(&Arr) -> Arr) -> Result<Image> {
    image.check()?;
    let (w, h, c) = (image.width as usize, image.height as usize, image.channels as usize);
    let rgb = image.pixels.chunks(c).flat_map(|p| [p[0], p[c / 2], p[c - 1]]).map(|v| v as f64 / 255.0);
    let y = f(&Arr { h, w, c: 3, v: rgb.collect() });
    let pixels = y.v.chunks(3).flat_map(|p| p[..c].iter().map(|v| v.clamp(0.0, 255.0) as u8)).collect();
    Ok(Image { pixels, ..image.clone() })
}

/// [0, 1] values as u8 (exact for values that came from u8).
fn to_u8(x: &Arr) -> Vec<u8> {
    x.v.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect()
}

/// The reference's `disk`: the pixels of a 17×17 grid within `radius`, normalised, blurred by
/// OpenCV's 3×3 Gaussian of σ `alias_blur`.
fn disk(radius: f64, alias_blur: f64) -> Vec<f64> {
    let mut d = Arr::new(17, 17, 1);
    for y in 0..17 {
        for x in 0..17 {
            let (dy, dx) = (y as f64 - 8.0, x as f64 - 8.0);
            d.set(y, x, 0, if dx * dx + dy * dy <= radius * radius { 1.0 } else { 0.0 });
        }
    }
    let total: f64 = d.v.iter().sum();
    let d = d.map(|v| (v / total) as f32 as f64);
    let k = ops::cv_gaussian_kernel(3, alias_blur);
    let outer: Vec<f64> = (0..9).map(|i| k[i / 3] * k[i % 3]).collect();
    ops::filter2d(&d, &outer, 3).v.iter().map(|&v| v as f32 as f64).collect()
}

/// `rgb2hsv`, `f` on each pixel's HSV, `hsv2rgb`, clipped.
fn hsv_map(x: &Arr, f: impl Fn(&mut [f64; 3])) -> Arr {
    let v = x.v.chunks(3).flat_map(|p| {
        let mut hsv = ops::rgb2hsv(p[0], p[1], p[2]);
        f(&mut hsv);
        ops::hsv2rgb(hsv).map(|v| v.clamp(0.0, 1.0) * 255.0)
    });
    Arr { v: v.collect(), ..*x }
}

/// The reference's `plasma_fractal` (diamond-square with NumPy's `roll`), normalised to [0, 1],
/// on a `side × side` grid (a power of two).
fn plasma_fractal(side: usize, decay: f64, rng: &mut NumpyLegacy) -> Vec<f64> {
    let mut m = vec![0.0f64; side * side];
    let mut step = side;
    let mut wibble = 100.0;
    while step >= 2 {
        let (half, n) = (step / 2, side / step);
        let mut wibbled = |sum: f64, wibble: f64| sum / 4.0 + wibble * rng.uniform(-wibble, wibble);
        let corner = |m: &[f64], i: usize, j: usize| m[(i % n) * step * side + (j % n) * step];
        // Squares: the four corners of each cell.
        let mut centres = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let sum = (corner(&m, i, j) + corner(&m, i + 1, j)) + (corner(&m, i, j + 1) + corner(&m, i + 1, j + 1));
                centres[i * n + j] = wibbled(sum, wibble);
            }
        }
        for i in 0..n {
            for j in 0..n {
                m[(i * step + half) * side + j * step + half] = centres[i * n + j];
            }
        }
        // Diamonds: the midpoints of the top edges, then of the left edges.
        let dr = |m: &[f64], i: usize, j: usize| m[((i + n) % n * step + half) * side + (j + n) % n * step + half];
        let mut top = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let sum = (dr(&m, i, j) + dr(&m, i + n - 1, j)) + (corner(&m, i, j) + corner(&m, i, j + 1));
                top[i * n + j] = wibbled(sum, wibble);
            }
        }
        for i in 0..n {
            for j in 0..n {
                m[i * step * side + j * step + half] = top[i * n + j];
            }
        }
        let mut left = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let sum = (dr(&m, i, j) + dr(&m, i, j + n - 1)) + (corner(&m, i, j) + corner(&m, i + 1, j));
                left[i * n + j] = wibbled(sum, wibble);
            }
        }
        for i in 0..n {
            for j in 0..n {
                m[(i * step + half) * side + j * step] = left[i * n + j];
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = m.iter().fold(f64::MAX, |a, &b| a.min(b));
    m.iter_mut().for_each(|v| *v -= min);
    let max = m.iter().fold(f64::MIN, |a, &b| a.max(b));
    m.iter().map(|v| v / max).collect()
}

fn snow(x: &Arr, s: usize, rng: &mut NumpyLegacy) -> Arr {
    let (loc, scale, zoom, threshold, radius, sigma, keep) = [
        (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
    ][s];
    let x = x.map(|v| v as f32 as f64);
    let mut layer = Arr::new(x.h, x.w, 1);
    layer.v.iter_mut().for_each(|v| *v = rng.normal(loc, scale));
    let layer = ops::clipped_zoom(&layer, zoom).map(|v| if v < threshold { 0.0 } else { (v.clamp(0.0, 1.0) * 255.0).trunc() });
    let layer = ops::motion_blur(&layer, radius, sigma, rng.uniform(-135.0, -45.0)).map(|v| v / 255.0);
    let mut y = x.clone();
    for r in 0..x.h {
        for c in 0..x.w {
            let p = [x.at(r, c, 0), x.at(r, c, 1), x.at(r, c, 2)].map(|v| v as f32);
            let gray = 0.299f32 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            for (ch, &v) in p.iter().enumerate() {
                let lit = keep as f32 * v + (1.0 - keep as f32) * v.max(gray * 1.5 + 0.5);
                y.set(r, c, ch, (lit as f64 + layer.at(r, c, 0) + layer.at(x.h - 1 - r, x.w - 1 - c, 0)).clamp(0.0, 1.0) * 255.0);
            }
        }
    }
    y
}

fn elastic(x: &Arr, s: usize, rng: &mut NumpyLegacy) -> Arr {
    let (alpha, sigma, affine) = [(0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][s];
    let (alpha, sigma, affine) = (32.0 * alpha, 32.0 * sigma, 32.0 * affine);
    let x = x.map(|v| v as f32 as f64);
    // `center_square` is (h // 2, w // 2) and is used as (x, y) points, as in the reference.
    let (cy, cx) = ((x.h / 2) as f64, (x.w / 2) as f64);
    let sq = (x.h.min(x.w) / 3) as f64;
    let pts1 = [[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]];
    let mut pts2 = pts1;
    for p in pts2.iter_mut() {
        for v in p.iter_mut() {
            *v = (*v as f32 + rng.uniform(-affine, affine) as f32) as f64;
        }
    }
    let warped = ops::warp_affine(&x, ops::affine_from_points(pts1, pts2));
    let mut field = || {
        let mut u = Arr::new(x.h, x.w, 1);
        u.v.iter_mut().for_each(|v| *v = rng.uniform(-1.0, 1.0));
        ops::gaussian(&u, sigma, 3.0, Border::Reflect).v.iter().map(|v| (v * alpha) as f32 as f64).collect::<Vec<_>>()
    };
    let (dx, dy) = (field(), field());
    ops::displace(&warped, &dy, &dx).map(|v| (v.clamp(0.0, 1.0) as f32 * 255.0) as f64)
}

/// PIL's `save(…, 'JPEG', quality)`: 4:2:0 chroma averaged over 2×2 (libjpeg's
/// `h2v2_downsample`), the IJG tables scaled by quality; decoded by the `image` crate.
fn jpeg(x: &Arr, quality: u8) -> Arr {
    let rgb = to_u8(x);
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, quality);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    encoder.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    let decoded = encoder
        .encode(&rgb, x.w as u16, x.h as u16, jpeg_encoder::ColorType::Rgb)
        .ok()
        .and_then(|_| image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).ok())
        .map(|d| d.to_rgb8().into_raw());
    // Encoding an RGB image of at most MAX_IMAGE_SIDE per side cannot fail; if it did, keep it.
    let out = decoded.filter(|d| d.len() == rgb.len()).unwrap_or(rgb);
    Arr { v: out.iter().map(|&v| v as f64).collect(), ..*x }
}

/// Frost with the given pictures (RGB, as decoded from `frost1.png` … `frost5.jpg`): picture
/// `randint(5)` resized by 0.2 (bilinear; larger when the image needs it), a random crop of the
/// image's size, blended as c₀·x + c₁·frost.
#[doc(hidden)]
pub fn frost_with(image: &Image, severity: u8, seed: u64, pictures: &[Image]) -> Result<Image> {
    if pictures.len() < 5 {
        return Err(Error::Input(format!("frost needs 5 pictures, got {}", pictures.len())));
    }
    let s = severity.clamp(1, 5) as usize - 1;
    let (a, b) = [(1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][s];
    corrupt(image, |x| {
        let mut rng = NumpyLegacy::new((seed ^ (seed >> 32)) as u32);
        let p = &pictures[rng.randint(0, 5) as usize];
        let src = Arr { h: p.height as usize, w: p.width as usize, c: 3, v: p.pixels.iter().map(|&v| v as f64).collect() };
        let (mut ow, mut oh) = ((src.w as f64 * 0.2).round() as usize, (src.h as f64 * 0.2).round() as usize);
        let (mut sx, mut sy) = (5.0, 5.0);
        if ow <= x.w || oh <= x.h {
            (ow, oh) = (ow.max(x.w + 1), oh.max(x.h + 1));
            (sx, sy) = (src.w as f64 / ow as f64, src.h as f64 / oh as f64);
        }
        let frost = ops::cv_resize_linear(&src, ow, oh, sx, sy);
        let top = rng.randint(0, (oh - x.h) as i64) as usize;
        let left = rng.randint(0, (ow - x.w) as i64) as usize;
        let mut y = x.clone();
        for r in 0..x.h {
            for c in 0..x.w {
                for ch in 0..3 {
                    y.set(r, c, ch, (a * (x.at(r, c, ch) * 255.0).round() + b * frost.at(top + r, left + c, ch)).clamp(0.0, 255.0));
                }
            }
        }
        y
    })
}

/// Where the frost pictures are read from: `$NAC_FROST_DIR`, else `data/frost`.
fn frost_dir() -> PathBuf {
    std::env::var_os("NAC_FROST_DIR").filter(|d| !d.is_empty()).map_or_else(|| PathBuf::from("data/frost"), PathBuf::from)
}

/// The five frost pictures, decoded once per directory.
fn frost_pictures() -> Result<Arc<Vec<Image>>> {
    static CACHE: Mutex<Option<(PathBuf, Arc<Vec<Image>>)>> = Mutex::new(None);
    let dir = frost_dir();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, pictures)) = cache.as_ref().filter(|(d, _)| *d == dir) {
        return Ok(pictures.clone());
    }
    let names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"];
    let pictures = names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::Input(format!(
                    "corruption `frost` needs the reference frost pictures: {} not found (the folder is $NAC_FROST_DIR, else data/frost); run tools/fetch_data.sh to get them from the PyPI package imagecorruptions, or set NAC_FROST_DIR to a folder holding frost1.png … frost5.jpg",
                    path.display()
                )));
            }
            let image = super::formats::decode_file(&path)?;
            Ok(if image.channels == 3 { image } else { Image { pixels: image.pixels.iter().flat_map(|&v| [v; 3]).collect(), channels: 3, ..image } })
        })
        .collect::<Result<Vec<_>>>()?;
    let pictures = Arc::new(pictures);
    *cache = Some((dir, pictures.clone()));
    Ok(pictures)
}

/// Outlier `index` of a synthetic set: the kinds cycle with the index.
pub(crate) fn outlier(image: &Image, index: usize, seed: u64) -> Result<Image> {
    const KINDS: [Corruption; 4] = [GaussianNoise, GaussianBlur, Contrast, PixelShuffle];
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
