//! Image → model input: a list of steps on f32 planes, then CHW out with 3 channels.
//!
//! Syntax: a preset name, or comma-separated steps applied in order:
//!
//! | step | effect |
//! |---|---|
//! | `resize:S` | shorter side to S, longer side to ⌊S·long/short⌋ (torchvision `Resize(int)` sizes) |
//! | `resize:HxW` | to exactly H×W |
//! | `pad:P` | P zero pixels (black: put it before `normalize`) on every side |
//! | `center_crop:S` / `center_crop:HxW` | torchvision `CenterCrop`: top = round((h − S)/2) with Python's round-half-to-even; a crop larger than the image pads with zeros first (⌊(S − h)/2⌋ above) |
//! | `gray2rgb` | replicate a 1-channel image to 3 channels (no-op on 3 channels) |
//! | `normalize:MEAN:STD` | (v − mean)/std per channel; MEAN and STD are `/`-separated lists of 1 value (every channel) or one per channel |
//!
//! Pixels enter as x/255 (so without `normalize` the output is in [0, 1]). Resizing is bilinear
//! with half-pixel centers and no antialiasing, as `torch.nn.functional.interpolate(mode=
//! "bilinear", align_corners=False, antialias=False)` on a float tensor: output pixel o samples
//! source coordinate max((o + 0.5)·in/out − 0.5, 0), neighbours clamped to the edge.
//!
//! Every size argument and every step's output is at most `MAX_IMAGE_SIDE` a side (an error
//! naming the step otherwise, from `parse` or from `apply`/`output_size`), and a transform
//! has at most `MAX_TRANSFORM_STEPS` steps.
//!
//! Presets: `cifar10` = `gray2rgb,normalize:0.4914/0.4822/0.4465:0.247/0.2435/0.2616`,
//! `cifar100` = `gray2rgb,normalize:0.5071/0.4865/0.4409:0.2673/0.2564/0.2762`,
//! `fmnist` = `pad:2,gray2rgb,normalize:0.286:0.353`,
//! `imagenet` = `resize:256,center_crop:224,gray2rgb,normalize:0.485/0.456/0.406:0.229/0.224/0.225`,
//! `none` = `gray2rgb` (x/255 only).

use super::Image;
use crate::error::{Error, Result};
use crate::limits::{MAX_IMAGE_SIDE, MAX_TRANSFORM_STEPS};

#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    ResizeShorter(u32),
    Resize(u32, u32),
    Pad(u32),
    CenterCrop(u32, u32),
    Gray2Rgb,
    Normalize { mean: Vec<f32>, std: Vec<f32> },
}

const PRESETS: [(&str, &str); 5] = [
    ("cifar10", "gray2rgb,normalize:0.4914/0.4822/0.4465:0.247/0.2435/0.2616"),
    ("cifar100", "gray2rgb,normalize:0.5071/0.4865/0.4409:0.2673/0.2564/0.2762"),
    ("fmnist", "pad:2,gray2rgb,normalize:0.286:0.353"),
    ("imagenet", "resize:256,center_crop:224,gray2rgb,normalize:0.485/0.456/0.406:0.229/0.224/0.225"),
    ("none", "gray2rgb"),
];

/// Planes being transformed: CHW f32.
struct Planes {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f32>,
}

impl Step {
    fn parse(text: &str) -> std::result::Result<Step, String> {
        let (name, arg) = text.split_once(':').unwrap_or((text, ""));
        // A size argument: 1..=MAX_IMAGE_SIDE (0 for a pad).
        let number = |s: &str, min: u64| {
            let t = s.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) || t.parse::<u64>().is_ok_and(|v| v < min) {
                return Err(format!("`{s}` is not a {} integer", if min == 0 { "non-negative" } else { "positive" }));
            }
            match t.parse::<u64>() {
                Ok(v) if v <= MAX_IMAGE_SIDE as u64 => Ok(v as u32),
                _ => Err(format!("`{s}` is over the limit of {MAX_IMAGE_SIDE} pixels (MAX_IMAGE_SIDE, see `nac::limits`)")),
            }
        };
        let positive = |s: &str| number(s, 1);
        let size = |s: &str| match s.split_once('x') {
            Some((h, w)) => Ok((positive(h)?, positive(w)?)),
            None => positive(s).map(|v| (v, v)),
        };
        let list = |s: &str| -> std::result::Result<Vec<f32>, String> {
            let values = s
                .split('/')
                .map(|v| v.trim().parse::<f32>().map_err(|_| format!("`{v}` is not a number")))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            match values.len() {
                1 | 3 => Ok(values),
                n => Err(format!("`{s}` has {n} values; expected 1 or 3")),
            }
        };
        match name.trim() {
            "resize" if arg.contains('x') => size(arg).map(|(h, w)| Step::Resize(h, w)),
            "resize" => positive(arg).map(Step::ResizeShorter),
            "pad" => number(arg, 0).map(Step::Pad),
            "center_crop" => size(arg).map(|(h, w)| Step::CenterCrop(h, w)),
            "gray2rgb" if arg.is_empty() => Ok(Step::Gray2Rgb),
            "gray2rgb" => Err("gray2rgb takes no argument".into()),
            "normalize" => {
                let (mean, std) = arg.split_once(':').ok_or("expected normalize:MEAN:STD")?;
                let (mean, std) = (list(mean)?, list(std)?);
                if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
                    return Err("means must be finite and stds finite and positive".into());
                }
                Ok(Step::Normalize { mean, std })
            }
            other => Err(format!("unknown step `{other}`; expected resize:S, resize:HxW, pad:P, center_crop:S, center_crop:HxW, gray2rgb or normalize:MEAN:STD")),
        }
    }

    fn describe(&self) -> String {
        let join = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join("/");
        match self {
            Step::ResizeShorter(s) => format!("resize:{s}"),
            Step::Resize(h, w) => format!("resize:{h}x{w}"),
            Step::Pad(p) => format!("pad:{p}"),
            Step::CenterCrop(h, w) if h == w => format!("center_crop:{h}"),
            Step::CenterCrop(h, w) => format!("center_crop:{h}x{w}"),
            Step::Gray2Rgb => "gray2rgb".into(),
            Step::Normalize { mean, std } => format!("normalize:{}:{}", join(mean), join(std)),
        }
    }

    /// (h, w) after this step on an h×w input (both ≥ 1), or an error when a side would be
    /// over `MAX_IMAGE_SIDE` (checked arithmetic throughout).
    fn size(&self, h: usize, w: usize) -> std::result::Result<(usize, usize), String> {
        let (oh, ow) = match *self {
            Step::ResizeShorter(s) => {
                let s = s as u128;
                // torchvision: the longer side is int(S · long / short).
                let long = |long: usize, short: usize| (s * long as u128 / short.max(1) as u128).try_into().unwrap_or(usize::MAX);
                if w <= h {
                    (long(h, w), s as usize)
                } else {
                    (s as usize, long(w, h))
                }
            }
            Step::Resize(oh, ow) => (oh as usize, ow as usize),
            Step::Pad(p) => {
                let grow = |side: usize| (p as usize).checked_mul(2).and_then(|p2| side.checked_add(p2)).unwrap_or(usize::MAX);
                (grow(h), grow(w))
            }
            Step::CenterCrop(ch, cw) => (ch as usize, cw as usize),
            Step::Gray2Rgb | Step::Normalize { .. } => (h, w),
        };
        if oh > MAX_IMAGE_SIDE || ow > MAX_IMAGE_SIDE {
            let side = |v: usize| if v == usize::MAX { "more than usize::MAX".to_string() } else { v.to_string() };
            return Err(format!(
                "{} makes a {}×{} image {}×{}, over the limit of {MAX_IMAGE_SIDE} pixels a side (MAX_IMAGE_SIDE, see `nac::limits`)",
                self.describe(),
                h,
                w,
                side(oh),
                side(ow),
            ));
        }
        Ok((oh, ow))
    }

    fn apply(&self, p: Planes) -> std::result::Result<Planes, String> {
        let (h, w) = self.size(p.h, p.w)?;
        Ok(match self {
            Step::ResizeShorter(_) | Step::Resize(..) => resize(&p, h, w),
            Step::Pad(pad) => place(&p, h, w, -(*pad as i64), -(*pad as i64)),
            Step::CenterCrop(..) => place(&p, h, w, crop_offset(p.h, h), crop_offset(p.w, w)),
            Step::Gray2Rgb if p.c == 1 => Planes { c: 3, data: p.data.repeat(3), ..p },
            Step::Gray2Rgb => p,
            Step::Normalize { mean, std } => {
                if mean.len() != 1 && mean.len() != p.c || std.len() != 1 && std.len() != p.c {
                    return Err(format!(
                        "{} needs {} channel(s) but the image has {} at this step (put gray2rgb first)",
                        self.describe(),
                        mean.len().max(std.len()),
                        p.c
                    ));
                }
                let plane = p.h * p.w;
                let mut data = p.data;
                for (c, values) in data.chunks_mut(plane).enumerate() {
                    let (m, s) = (mean[c.min(mean.len() - 1)], std[c.min(std.len() - 1)]);
                    values.iter_mut().for_each(|v| *v = (*v - m) / s);
                }
                Planes { data, ..p }
            }
        })
    }
}

/// torchvision's center-crop offset of a crop of `crop` in `size`.
fn crop_offset(size: usize, crop: usize) -> i64 {
    if crop > size {
        -(((crop - size) / 2) as i64)
    } else {
        ((size - crop) as f64 / 2.0).round_ties_even() as i64
    }
}

/// An `h`×`w` window of `p` whose top-left is at (`top`, `left`) of `p`; outside is 0.
fn place(p: &Planes, h: usize, w: usize, top: i64, left: i64) -> Planes {
    let mut data = vec![0.0; p.c * h * w];
    for c in 0..p.c {
        for y in 0..h {
            let sy = y as i64 + top;
            if sy < 0 || sy >= p.h as i64 {
                continue;
            }
            for x in 0..w {
                let sx = x as i64 + left;
                if sx >= 0 && sx < p.w as i64 {
                    data[(c * h + y) * w + x] = p.data[(c * p.h + sy as usize) * p.w + sx as usize];
                }
            }
        }
    }
    Planes { c: p.c, h, w, data }
}

/// Source taps of a bilinear axis: (lower index, upper index, weight of the upper).
fn taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            (i0, (i0 + 1).min(input - 1), (src - i0 as f64) as f32)
        })
        .collect()
}

fn resize(p: &Planes, h: usize, w: usize) -> Planes {
    let (ys, xs) = (taps(p.h, h), taps(p.w, w));
    let mut data = Vec::with_capacity(p.c * h * w);
    for plane in p.data.chunks(p.h * p.w) {
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let at = |y: usize, x: usize| plane[y * p.w + x];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                data.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Planes { c: p.c, h, w, data }
}

impl Transform {
    /// A preset: `cifar10`, `cifar100`, `fmnist`, `imagenet` or `none`.
    pub fn preset(name: &str) -> Result<Transform> {
        match PRESETS.iter().find(|(n, _)| *n == name.trim()) {
            Some((_, steps)) => Transform::parse(steps),
            None => Err(Error::Input(format!("unknown transform preset `{name}`; expected one of {}", PRESETS.map(|(n, _)| n).join(", ")))),
        }
    }

    /// A preset name or a comma-separated step list (syntax in the module documentation).
    pub fn parse(text: &str) -> Result<Transform> {
        let text = text.trim();
        if PRESETS.iter().any(|(n, _)| *n == text) {
            return Transform::preset(text);
        }
        let count = text.split(',').count();
        if count > MAX_TRANSFORM_STEPS {
            return Err(Error::Input(format!(
                "transform `{}`: {count} steps, over the limit of {MAX_TRANSFORM_STEPS} (MAX_TRANSFORM_STEPS, see `nac::limits`)",
                short(text)
            )));
        }
        let steps = text
            .split(',')
            .enumerate()
            .map(|(i, step)| {
                Step::parse(step.trim()).map_err(|e| Error::Input(format!("transform `{text}`, step {} `{step}`: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transform { steps })
    }

    /// The canonical step list, e.g. `pad:2,gray2rgb,normalize:0.286:0.353`;
    /// `Transform::parse(&t.describe()) == t`.
    pub fn describe(&self) -> String {
        self.steps.iter().map(Step::describe).collect::<Vec<_>>().join(",")
    }

    /// The model input of `image`: CHW f32 with 3 channels, `output_size` spatially. An image
    /// (or a step's output) over `MAX_IMAGE_SIDE` a side is an error naming the step.
    pub fn apply(&self, image: &Image) -> Result<Vec<f32>> {
        image.check()?;
        self.check_input(image)?;
        let (h, w, c) = (image.height as usize, image.width as usize, image.channels as usize);
        let data = (0..c).flat_map(|ch| image.pixels.iter().skip(ch).step_by(c).map(|&v| v as f32 / 255.0)).collect();
        let mut planes = Planes { c, h, w, data };
        for step in &self.steps {
            planes = step.apply(planes).map_err(|e| Error::Input(format!("transform `{}`: {e}", self.describe())))?;
        }
        if planes.c != 3 {
            return Err(Error::Input(format!(
                "transform `{}` leaves {} channel(s) but the models take 3; add gray2rgb",
                self.describe(),
                planes.c
            )));
        }
        Ok(planes.data)
    }

    /// The per-channel (mean, std) of all `normalize` steps together, for the 3 output channels:
    /// `output = (pixel − mean) / std` with pixel the un-normalised value in [0, 1] (what an
    /// attack's ε-ball and box are measured in). (0, 1) without a `normalize` step.
    pub fn pixel_space(&self) -> (Vec<f32>, Vec<f32>) {
        let (mut mean, mut std) = (vec![0.0f64; 3], vec![1.0f64; 3]);
        for step in &self.steps {
            if let Step::Normalize { mean: m, std: s } = step {
                // (p − M)/S then (· − m)/s is (p − (M + m·S)) / (S·s).
                for c in 0..3 {
                    let (m, s) = (m[c % m.len()] as f64, s[c % s.len()] as f64);
                    mean[c] += m * std[c];
                    std[c] *= s;
                }
            }
        }
        (mean.iter().map(|&v| v as f32).collect(), std.iter().map(|&v| v as f32).collect())
    }

    /// (h, w) of `apply(image)`, or the error `apply` gives for a side over `MAX_IMAGE_SIDE`
    /// (the same checked size arithmetic). Reads only the image's size.
    pub fn output_size(&self, image: &Image) -> Result<(u32, u32)> {
        self.check_input(image)?;
        let mut size = (image.height as usize, image.width as usize);
        for step in &self.steps {
            size = step.size(size.0, size.1).map_err(|e| Error::Input(format!("transform `{}`: {e}", self.describe())))?;
        }
        // Both sides are at most MAX_IMAGE_SIDE here.
        Ok((size.0 as u32, size.1 as u32))
    }

    fn check_input(&self, image: &Image) -> Result<()> {
        if image.width == 0 || image.height == 0 {
            return Err(Error::Input(format!("transform `{}`: the image is empty ({}×{})", self.describe(), image.width, image.height)));
        }
        let side = image.width.max(image.height) as usize;
        if side > MAX_IMAGE_SIDE {
            return Err(Error::Input(format!(
                "transform `{}`: the image is {}×{} (W×H), over the limit of {MAX_IMAGE_SIDE} pixels a side (MAX_IMAGE_SIDE, see `nac::limits`)",
                self.describe(),
                image.width,
                image.height
            )));
        }
        Ok(())
    }
}

/// `text` cut to 80 characters for an error message.
fn short(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
