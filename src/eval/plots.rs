//! Report pictures as PNG, rasterised by hand with the `image` crate: score histograms, ROC
//! curves and thumbnail grids, with a built-in 5×7 bitmap font for titles, ticks and legends.

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};

use crate::data::Image;
use crate::error::{Error, Result};

/// One labelled set of scores.
pub struct Series<'a> {
    pub label: &'a str,
    pub values: &'a [f32],
}

/// Series colours, in order (matplotlib's "tab10"); the histogram outlines and ROC lines use them
/// exactly, the histogram fills are them blended over the background.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [228, 228, 228];
const FRAME: [u8; 3] = [90, 90, 90];

// ---------------------------------------------------------------------------------------------
// font

/// 5×7 glyphs plus a descender row (g, j, p, q, y, ','), one byte per row, bit 4 = leftmost
/// column. Unknown characters draw as '?'.
const FONT: &[(char, [u8; 8])] = &[
    (' ', [0, 0, 0, 0, 0, 0, 0, 0]),
    ('0', [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E, 0]),
    ('1', [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0]),
    ('2', [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F, 0]),
    ('3', [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E, 0]),
    ('4', [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02, 0]),
    ('5', [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E, 0]),
    ('6', [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E, 0]),
    ('7', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0]),
    ('8', [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E, 0]),
    ('9', [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C, 0]),
    ('A', [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0]),
    ('B', [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E, 0]),
    ('C', [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E, 0]),
    ('D', [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C, 0]),
    ('E', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F, 0]),
    ('F', [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10, 0]),
    ('G', [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F, 0]),
    ('H', [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0]),
    ('I', [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0]),
    ('J', [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C, 0]),
    ('K', [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0]),
    ('L', [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F, 0]),
    ('M', [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11, 0]),
    ('N', [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0]),
    ('O', [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0]),
    ('P', [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10, 0]),
    ('Q', [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D, 0]),
    ('R', [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11, 0]),
    ('S', [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E, 0]),
    ('T', [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0]),
    ('U', [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0]),
    ('V', [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04, 0]),
    ('W', [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A, 0]),
    ('X', [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11, 0]),
    ('Y', [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0]),
    ('Z', [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F, 0]),
    ('a', [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F, 0]),
    ('b', [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E, 0]),
    ('c', [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E, 0]),
    ('d', [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F, 0]),
    ('e', [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E, 0]),
    ('f', [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08, 0]),
    ('g', [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E]),
    ('h', [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0]),
    ('i', [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E, 0]),
    ('j', [0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0C]),
    ('k', [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0]),
    ('l', [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0]),
    ('m', [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11, 0]),
    ('n', [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0]),
    ('o', [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E, 0]),
    ('p', [0x00, 0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10]),
    ('q', [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01]),
    ('r', [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0]),
    ('s', [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E, 0]),
    ('t', [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06, 0]),
    ('u', [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D, 0]),
    ('v', [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04, 0]),
    ('w', [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A, 0]),
    ('x', [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0]),
    ('y', [0x00, 0x00, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E]),
    ('z', [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F, 0]),
    ('.', [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0]),
    (',', [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08]),
    ('-', [0x00, 0x00, 0x00, 0x0E, 0x00, 0x00, 0x00, 0]),
    ('−', [0x00, 0x00, 0x00, 0x0E, 0x00, 0x00, 0x00, 0]),
    ('%', [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0]),
    (':', [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00, 0]),
    ('(', [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0]),
    (')', [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0]),
    ('[', [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E, 0]),
    (']', [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E, 0]),
    ('/', [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0]),
    ('_', [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F, 0]),
    ('+', [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0]),
    ('=', [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00, 0]),
    ('<', [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0]),
    ('>', [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0]),
    ('#', [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A, 0]),
    ('*', [0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00, 0]),
    ('\'', [0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0]),
    ('|', [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0]),
    ('!', [0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0]),
    ('?', [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0]),
    ('±', [0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x1F, 0]),
    ('×', [0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00, 0]),
];

fn glyph(c: char) -> [u8; 8] {
    FONT.iter().find(|g| g.0 == c).or_else(|| FONT.iter().find(|g| g.0 == '?')).unwrap().1
}

fn text_width(s: &str, scale: u32) -> i64 {
    (s.chars().count() as i64 * 6 - 1).max(0) * scale as i64
}

/// Draws `s` with its top-left corner at (x, y); `vertical` reads bottom to top from (x, y) as the
/// bottom-left corner (for y-axis labels).
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: u32, c: [u8; 3], vertical: bool) {
    let k = scale as i64;
    for (i, ch) in s.chars().enumerate() {
        for (r, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5i64 {
                if bits & (0x10 >> col) != 0 {
                    let (px, py) = if vertical {
                        (x + r as i64 * k, y - (i as i64 * 6 + col + 1) * k)
                    } else {
                        (x + (i as i64 * 6 + col) * k, y + r as i64 * k)
                    };
                    fill(img, px, py, px + k, py + k, c, 1.0);
                }
            }
        }
    }
}

/// The largest scale ≤ `max` at which `s` fits in `width` pixels (at least 1).
fn fit_scale(s: &str, width: i64, max: u32) -> u32 {
    (1..=max).rev().find(|&k| text_width(s, k) <= width).unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// rasterisation

/// Fills [x0, x1) × [y0, y1), clipped, blending `c` with opacity `alpha`.
fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3], alpha: f32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            let p = img.get_pixel_mut(x as u32, y as u32);
            for (d, s) in p.0.iter_mut().zip(c) {
                *d = (alpha * s as f32 + (1.0 - alpha) * *d as f32).round() as u8;
            }
        }
    }
}

/// A line of `width` pixels, optionally dashed with `dash` = (on, off) lengths in pixels.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: [u8; 3], width: i64, dash: Option<(f64, f64)>) {
    let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
    let steps = (len * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        if let Some((on, off)) = dash {
            if (t * len) % (on + off) >= on {
                continue;
            }
        }
        let (x, y) = ((a.0 + t * (b.0 - a.0)).round() as i64, (a.1 + t * (b.1 - a.1)).round() as i64);
        let h = width / 2;
        fill(img, x - h, y - h, x - h + width, y - h + width, c, 1.0);
    }
}

fn rect_outline(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    fill(img, x0, y0, x1, y0 + 1, c, 1.0);
    fill(img, x0, y1 - 1, x1, y1, c, 1.0);
    fill(img, x0, y0, x0 + 1, y1, c, 1.0);
    fill(img, x1 - 1, y0, x1, y1, c, 1.0);
}

fn save(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Input(format!("{}: PNG encoding failed: {e}", path.display())))?;
    crate::error::write_atomic(path, &bytes)
}

// ---------------------------------------------------------------------------------------------
// axes

/// "Nice" ticks (1, 2 or 5 × 10^k apart) covering [lo, hi], and the decimals their labels need.
fn ticks(lo: f64, hi: f64, target: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / target;
    let mag = 10f64.powf(raw.log10().floor());
    let step = mag * [1.0, 2.0, 5.0, 10.0].into_iter().find(|&m| raw / mag <= m * 1.2).unwrap_or(10.0);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    ((first..=last).map(|i| if i == 0 { 0.0 } else { i as f64 * step }).collect(), decimals)
}

/// A plot frame: the data ranges and the pixel rectangle they map to.
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Axes {
    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (self.left as f64 + fx * (self.right - self.left) as f64, self.bottom as f64 - fy * (self.bottom - self.top) as f64)
    }

    /// Grid lines, frame, tick labels, axis labels and title.
    fn draw(&self, img: &mut RgbImage, title: &str, xlabel: &str, ylabel: &str) {
        let (xt, xd) = ticks(self.x.0, self.x.1, 6.0);
        let (yt, yd) = ticks(self.y.0, self.y.1, 5.0);
        for &v in &xt {
            let x = self.px(v, 0.0).0.round() as i64;
            fill(img, x, self.top, x + 1, self.bottom, GRID, 1.0);
            fill(img, x, self.bottom, x + 1, self.bottom + 6, FRAME, 1.0);
            let label = format!("{v:.xd$}");
            text(img, x - text_width(&label, 2) / 2, self.bottom + 10, &label, 2, BLACK, false);
        }
        for &v in &yt {
            let y = self.px(0.0, v).1.round() as i64;
            fill(img, self.left, y, self.right, y + 1, GRID, 1.0);
            fill(img, self.left - 6, y, self.left, y + 1, FRAME, 1.0);
            let label = format!("{v:.yd$}");
            text(img, self.left - 10 - text_width(&label, 2), y - 7, &label, 2, BLACK, false);
        }
        rect_outline(img, self.left, self.top, self.right + 1, self.bottom + 1, FRAME);
        let cx = (self.left + self.right) / 2;
        text(img, cx - text_width(xlabel, 2) / 2, self.bottom + 36, xlabel, 2, BLACK, false);
        let cy = (self.top + self.bottom) / 2;
        text(img, 8, cy + text_width(ylabel, 2) / 2, ylabel, 2, BLACK, true);
        let width = img.width() as i64 - 20;
        let k = fit_scale(title, width, 3);
        text(img, (img.width() as i64 - text_width(title, k)) / 2, 14, title, k, BLACK, false);
    }

    /// Size of a legend box for `labels`.
    fn legend_size(labels: &[&str]) -> (i64, i64) {
        (labels.iter().map(|l| text_width(l, 2)).max().unwrap_or(0) + 50, labels.len() as i64 * 22 + 10)
    }

    /// A legend box in a corner of the plot area (`right`, `bottom` pick which); `swatch` draws
    /// each entry's marker in the 24×14 rectangle at the given top-left corner.
    fn legend(&self, img: &mut RgbImage, labels: &[&str], right: bool, bottom: bool, swatch: impl Fn(&mut RgbImage, usize, i64, i64)) {
        if labels.is_empty() {
            return;
        }
        let (w, h) = Self::legend_size(labels);
        let x0 = if right { self.right - w - 10 } else { self.left + 10 };
        let y0 = if bottom { self.bottom - h - 10 } else { self.top + 10 };
        fill(img, x0, y0, x0 + w, y0 + h, WHITE, 0.9);
        rect_outline(img, x0, y0, x0 + w, y0 + h, [160, 160, 160]);
        for (i, l) in labels.iter().enumerate() {
            let y = y0 + 8 + i as i64 * 22;
            swatch(img, i, x0 + 10, y);
            text(img, x0 + 42, y, l, 2, BLACK, false);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// public pictures

/// Overlaid score histograms (ID vs one or more OOD sets): shared bins over the joint range of
/// the finite values, each series normalised to density, drawn as translucent bars with an
/// opaque step outline in its `PALETTE` colour, with a legend.
pub fn score_histogram(path: &Path, title: &str, xlabel: &str, series: &[Series]) -> Result<()> {
    const BINS: usize = 50;
    let finite = || series.iter().flat_map(|s| s.values.iter().copied().filter(|v| v.is_finite()));
    let (mut lo, mut hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v as f64), b.max(v as f64)));
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
        (lo, hi) = if lo.is_finite() { (lo - 0.5, lo + 0.5) } else { (0.0, 1.0) };
    }
    let width = (hi - lo) / BINS as f64;
    let densities: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut counts = vec![0usize; BINS];
            let n = s
                .values
                .iter()
                .filter(|v| v.is_finite())
                .inspect(|&&v| counts[(((v as f64 - lo) / width) as usize).min(BINS - 1)] += 1)
                .count();
            counts.iter().map(|&c| if n == 0 { 0.0 } else { c as f64 / (n as f64 * width) }).collect()
        })
        .collect();
    let ymax = densities.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let ymax = if ymax > 0.0 { ymax } else { 1.0 };

    let (left, top, right, bottom) = (90, 56, 880, 490);
    // the legend goes in the top corner over less mass, with headroom so it covers no bar
    let labels: Vec<&str> = series.iter().map(|s| s.label).collect();
    let (lw, lh) = Axes::legend_size(&labels);
    let span = ((lw + 20) as f64 / (right - left) as f64 * BINS as f64).ceil() as usize;
    let peak = |bins: std::ops::Range<usize>| densities.iter().flat_map(|d| d[bins.clone()].iter()).fold(0.0f64, |a, &b| a.max(b));
    let (peak_left, peak_right) = (peak(0..span.min(BINS)), peak(BINS.saturating_sub(span)..BINS));
    let free = 1.0 - (lh + 20) as f64 / (bottom - top) as f64;
    let ytop = (ymax * 1.05).max(peak_left.min(peak_right) / free);
    let ax = Axes { x: (lo, hi), y: (0.0, ytop), left, top, right, bottom };
    let mut img = RgbImage::from_pixel(900, 560, Rgb(WHITE));
    ax.draw(&mut img, title, xlabel, "density");
    for (si, d) in densities.iter().enumerate() {
        let c = PALETTE[si % PALETTE.len()];
        for (b, &v) in d.iter().enumerate() {
            let (x0, y) = ax.px(lo + b as f64 * width, v);
            let x1 = ax.px(lo + (b + 1) as f64 * width, 0.0).0;
            fill(&mut img, x0.round() as i64 + 1, y.round() as i64, x1.round() as i64, ax.bottom, c, 0.3);
        }
    }
    // step outlines, leaving out stretches at zero density (they would hide in the axis anyway)
    for (si, d) in densities.iter().enumerate() {
        let c = PALETTE[si % PALETTE.len()];
        for e in 0..=BINS {
            let x = lo + e as f64 * width;
            let (l, r) = (if e > 0 { d[e - 1] } else { 0.0 }, d.get(e).copied().unwrap_or(0.0));
            if l != r {
                line(&mut img, ax.px(x, l), ax.px(x, r), c, 2, None);
            }
            if r > 0.0 {
                line(&mut img, ax.px(x, r), ax.px(x + width, r), c, 2, None);
            }
        }
    }
    ax.legend(&mut img, &labels, peak_right <= peak_left, false, |img, i, x, y| {
        let c = PALETTE[i % PALETTE.len()];
        fill(img, x, y, x + 24, y + 14, c, 0.3);
        rect_outline(img, x, y, x + 24, y + 14, c);
    });
    save(path, &img)
}

/// ROC curves: each (label, fpr, tpr) as a polyline in its `PALETTE` colour over the dashed
/// chance diagonal, with the labels (e.g. "SVHN AUROC 93.12") in a legend.
pub fn roc_plot(path: &Path, title: &str, curves: &[(&str, &[f64], &[f64])]) -> Result<()> {
    if let Some((label, fpr, tpr)) = curves.iter().find(|c| c.1.len() != c.2.len()) {
        return Err(Error::Input(format!("{}: ROC curve {label:?} has {} FPR and {} TPR values", path.display(), fpr.len(), tpr.len())));
    }
    let mut img = RgbImage::from_pixel(640, 660, Rgb(WHITE));
    let ax = Axes { x: (0.0, 1.0), y: (0.0, 1.0), left: 90, top: 56, right: 620, bottom: 586 };
    ax.draw(&mut img, title, "FPR (ID flagged as OOD)", "TPR (OOD detected)");
    line(&mut img, ax.px(0.0, 0.0), ax.px(1.0, 1.0), [150, 150, 150], 1, Some((8.0, 6.0)));
    for (i, (_, fpr, tpr)) in curves.iter().enumerate() {
        let pts: Vec<(f64, f64)> =
            fpr.iter().zip(tpr.iter()).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(&x, &y)| ax.px(x, y)).collect();
        for w in pts.windows(2) {
            line(&mut img, w[0], w[1], PALETTE[i % PALETTE.len()], 3, None);
        }
    }
    let labels: Vec<&str> = curves.iter().map(|c| c.0).collect();
    ax.legend(&mut img, &labels, true, true, |img, i, x, y| fill(img, x, y + 6, x + 24, y + 9, PALETTE[i % PALETTE.len()], 1.0));
    save(path, &img)
}

/// A grid of thumbnails, `columns` per row, each with its caption above it. Every image is scaled
/// up by the integer factor that makes its shorter side at least 56 px; cells are as large as
/// the largest scaled image.
pub fn image_grid(path: &Path, title: &str, images: &[Image], captions: &[String], columns: usize) -> Result<()> {
    let bad = |m: String| Err(Error::Input(format!("{}: {m}", path.display())));
    if columns == 0 {
        return bad("image grid needs at least one column".into());
    }
    if captions.len() != images.len() {
        return bad(format!("{} captions for {} images", captions.len(), images.len()));
    }
    for (i, im) in images.iter().enumerate() {
        let n = im.width as usize * im.height as usize * im.channels as usize;
        if !matches!(im.channels, 1 | 3) || n == 0 || im.pixels.len() != n {
            return bad(format!("image {i} is {}×{}×{} with {} pixel bytes", im.width, im.height, im.channels, im.pixels.len()));
        }
    }
    let factor = |im: &Image| 56u32.div_ceil(im.width.min(im.height)).max(1) as i64;
    let tw = images.iter().map(|im| im.width as i64 * factor(im)).max().unwrap_or(56);
    let th = images.iter().map(|im| im.height as i64 * factor(im)).max().unwrap_or(56);
    let (cap_h, pad, top) = (22i64, 10i64, 50i64);
    let (cw, ch) = (tw.max(60) + 2 * pad, th + cap_h + pad);
    let rows = images.len().div_ceil(columns) as i64;
    let width = (columns as i64 * cw + 2 * pad).max(text_width(title, 2) + 2 * pad);
    let mut img = RgbImage::from_pixel(width as u32, (top + rows * ch + pad) as u32, Rgb(WHITE));
    let k = fit_scale(title, width - 2 * pad, 3);
    text(&mut img, (width - text_width(title, k)) / 2, 14, title, k, BLACK, false);
    for (i, (im, cap)) in images.iter().zip(captions).enumerate() {
        let (cx, cy) = (pad + (i % columns) as i64 * cw, top + (i / columns) as i64 * ch);
        let s = fit_scale(cap, cw - 4, 2);
        text(&mut img, cx + (cw - text_width(cap, s)) / 2, cy + (cap_h - 7 * s as i64) / 2, cap, s, BLACK, false);
        let f = factor(im);
        let (x0, y0) = (cx + (cw - im.width as i64 * f) / 2, cy + cap_h);
        let c = im.channels as usize;
        for y in 0..im.height as i64 {
            for x in 0..im.width as i64 {
                let o = (y as usize * im.width as usize + x as usize) * c;
                let p = if c == 1 { [im.pixels[o]; 3] } else { [im.pixels[o], im.pixels[o + 1], im.pixels[o + 2]] };
                fill(&mut img, x0 + x * f, y0 + y * f, x0 + (x + 1) * f, y0 + (y + 1) * f, p, 1.0);
            }
        }
        rect_outline(&mut img, x0 - 1, y0 - 1, x0 + im.width as i64 * f + 1, y0 + im.height as i64 * f + 1, [200, 200, 200]);
    }
    save(path, &img)
}

/// How a heatmap maps values to colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Low to high over the values' range (dark blue → green → yellow, as viridis).
    Sequential,
    /// Symmetric about 0 over the largest |value|: blue below, white at 0, red above.
    Diverging,
}

fn lerp(a: [u8; 3], b: [u8; 3], t: f64) -> [u8; 3] {
    [0, 1, 2].map(|i| (a[i] as f64 + (b[i] as f64 - a[i] as f64) * t.clamp(0.0, 1.0)).round() as u8)
}

/// The colour of `t` ∈ [0, 1] along a few stops.
fn ramp(stops: &[[u8; 3]], t: f64) -> [u8; 3] {
    let x = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (x.floor() as usize).min(stops.len() - 2);
    lerp(stops[i], stops[i + 1], x - i as f64)
}

const VIRIDIS: [[u8; 3]; 5] = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const DIVERGING: [[u8; 3]; 3] = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];

/// A value in at most 6 characters: 3 significant digits, or scientific below 0.01.
fn short(v: f64) -> String {
    match v.abs() {
        0.0 => "0".into(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        a if a >= 0.01 => format!("{v:.3}"),
        _ => format!("{v:.1e}"),
    }
}

/// A table of coloured cells, each with its value written in it (blank where `None`), row
/// labels on the left, column labels on top and a colour bar with the range on the right.
pub fn heatmap(path: &Path, title: &str, rows: &[String], cols: &[String], values: &[Vec<Option<f64>>], scale: Scale) -> Result<()> {
    if values.len() != rows.len() || values.iter().any(|r| r.len() != cols.len()) {
        return Err(Error::Input(format!("{}: heatmap values are not {} rows × {} columns", path.display(), rows.len(), cols.len())));
    }
    let finite = || values.iter().flatten().flatten().copied().filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if scale == Scale::Diverging {
        let m = lo.abs().max(hi.abs());
        (lo, hi) = (-m, m);
    }
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
        (lo, hi) = if lo.is_finite() { (lo - 1.0, lo + 1.0) } else { (0.0, 1.0) };
    }
    let colour = |v: f64| {
        let t = (v - lo) / (hi - lo);
        match scale {
            Scale::Sequential => ramp(&VIRIDIS, t),
            Scale::Diverging => ramp(&DIVERGING, t),
        }
    };
    let label_w = rows.iter().map(|r| text_width(r, 2)).max().unwrap_or(0) + 20;
    let cell_w = cols.iter().map(|c| text_width(c, 2)).max().unwrap_or(0).max(76) + 24;
    let (hi_label, lo_label) = (short(hi), short(lo));
    let bar_w = 56 + text_width(&hi_label, 2).max(text_width(&lo_label, 2));
    let (cell_h, top) = (34i64, 84i64);
    let width = (label_w + cell_w * cols.len() as i64 + bar_w).max(text_width(title, 2) + 40);
    let height = top + cell_h * rows.len().max(1) as i64 + 30;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(WHITE));
    let k = fit_scale(title, width - 20, 3);
    text(&mut img, (width - text_width(title, k)) / 2, 14, title, k, BLACK, false);
    for (j, c) in cols.iter().enumerate() {
        let x = label_w + j as i64 * cell_w;
        text(&mut img, x + (cell_w - text_width(c, 2)) / 2, top - 24, c, 2, BLACK, false);
    }
    for (i, (r, row)) in rows.iter().zip(values).enumerate() {
        let y = top + i as i64 * cell_h;
        text(&mut img, label_w - 10 - text_width(r, 2), y + (cell_h - 14) / 2, r, 2, BLACK, false);
        for (j, v) in row.iter().enumerate() {
            let x = label_w + j as i64 * cell_w;
            let Some(v) = v.filter(|v| v.is_finite()) else {
                rect_outline(&mut img, x, y, x + cell_w, y + cell_h, GRID);
                continue;
            };
            let c = colour(v);
            fill(&mut img, x, y, x + cell_w, y + cell_h, c, 1.0);
            let luminance = 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
            let ink = if luminance < 128.0 { WHITE } else { BLACK };
            let s = short(v);
            text(&mut img, x + (cell_w - text_width(&s, 2)) / 2, y + (cell_h - 14) / 2, &s, 2, ink, false);
        }
    }
    rect_outline(&mut img, label_w, top, label_w + cell_w * cols.len() as i64 + 1, top + cell_h * rows.len() as i64 + 1, FRAME);
    // Colour bar: hi at the top, lo at the bottom.
    let (bx, by0, by1) = (label_w + cell_w * cols.len() as i64 + 20, top, top + (cell_h * rows.len() as i64).max(60));
    for y in by0..by1 {
        let t = 1.0 - (y - by0) as f64 / (by1 - by0 - 1).max(1) as f64;
        fill(&mut img, bx, y, bx + 20, y + 1, colour(lo + t * (hi - lo)), 1.0);
    }
    rect_outline(&mut img, bx, by0, bx + 20, by1, FRAME);
    text(&mut img, bx + 26, by0, &hi_label, 2, BLACK, false);
    text(&mut img, bx + 26, by1 - 14, &lo_label, 2, BLACK, false);
    save(path, &img)
}

/// Points (x, y) as dots with an optional fitted line `y = slope · x + intercept` over the
/// points' x range.
pub fn scatter(path: &Path, title: &str, xlabel: &str, ylabel: &str, points: &[(f64, f64)], fit: Option<(f64, f64)>) -> Result<()> {
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = pts.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        match (lo.is_finite(), hi > lo) {
            (true, true) => (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)),
            (true, false) => (lo - 0.5, lo + 0.5),
            _ => (0.0, 1.0),
        }
    };
    let ax = Axes { x: range(|p| p.0), y: range(|p| p.1), left: 110, top: 56, right: 860, bottom: 500 };
    let mut img = RgbImage::from_pixel(900, 570, Rgb(WHITE));
    ax.draw(&mut img, title, xlabel, ylabel);
    if let Some((slope, intercept)) = fit {
        let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        if x0.is_finite() {
            line(&mut img, ax.px(x0, slope * x0 + intercept), ax.px(x1, slope * x1 + intercept), PALETTE[3], 2, Some((10.0, 6.0)));
        }
    }
    for &(x, y) in &pts {
        let (px, py) = ax.px(x, y);
        let (px, py) = (px.round() as i64, py.round() as i64);
        fill(&mut img, px - 4, py - 4, px + 5, py + 5, PALETTE[0], 0.8);
    }
    save(path, &img)
}

/// Horizontal bars, one per labelled value, from 0 (negative to the left, in the second
/// palette colour), with the value written beside each bar.
pub fn bar_chart(path: &Path, title: &str, labels: &[String], values: &[f64]) -> Result<()> {
    if labels.len() != values.len() {
        return Err(Error::Input(format!("{}: {} labels for {} bars", path.display(), labels.len(), values.len())));
    }
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(0.0f64, f64::min);
    let hi = finite.fold(0.0f64, f64::max);
    let (lo, hi) = if hi > lo { (lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo)) } else { (-1.0, 1.0) };
    let label_w = labels.iter().map(|l| text_width(l, 2)).max().unwrap_or(0) + 20;
    let (row_h, top, plot_w) = (22i64, 56i64, 700i64);
    let bottom = top + row_h * labels.len().max(1) as i64;
    let width = (label_w + plot_w + 40).max(text_width(title, 2) + 40);
    let mut img = RgbImage::from_pixel(width as u32, (bottom + 50) as u32, Rgb(WHITE));
    let k = fit_scale(title, width - 20, 3);
    text(&mut img, (width - text_width(title, k)) / 2, 14, title, k, BLACK, false);
    let px = |v: f64| label_w as f64 + (v - lo) / (hi - lo) * plot_w as f64;
    let (ts, decimals) = ticks(lo, hi, 6.0);
    for t in ts {
        let x = px(t).round() as i64;
        fill(&mut img, x, top, x + 1, bottom, GRID, 1.0);
        let label = if decimals > 4 { format!("{t:.1e}") } else { format!("{t:.decimals$}") };
        text(&mut img, x - text_width(&label, 2) / 2, bottom + 10, &label, 2, BLACK, false);
    }
    let zero = px(0.0).round() as i64;
    for (i, (l, &v)) in labels.iter().zip(values).enumerate() {
        let y = top + i as i64 * row_h;
        text(&mut img, label_w - 10 - text_width(l, 2), y + 4, l, 2, BLACK, false);
        if !v.is_finite() {
            continue;
        }
        let x = px(v).round() as i64;
        let c = if v < 0.0 { PALETTE[1] } else { PALETTE[0] };
        fill(&mut img, zero.min(x), y + 3, zero.max(x) + 1, y + row_h - 3, c, 1.0);
        let s = short(v);
        let tx = if v < 0.0 { x - 6 - text_width(&s, 1) } else { x + 6 };
        text(&mut img, tx, y + 7, &s, 1, BLACK, false);
    }
    fill(&mut img, zero, top, zero + 1, bottom, FRAME, 1.0);
    rect_outline(&mut img, label_w, top, label_w + plot_w + 1, bottom + 1, FRAME);
    save(path, &img)
}

/// Horizontal grouped bars: one group per method (`rows`, labelled on the left), one bar per
/// set in its `PALETTE` colour (`values[method][set]`, e.g. AUROC ×100), a legend of the sets
/// and the x axis from a round value below the smallest bar (at most 50) to 100.
pub fn grouped_bars(path: &Path, title: &str, xlabel: &str, rows: &[&str], sets: &[&str], values: &[Vec<f64>]) -> Result<()> {
    if let Some((row, v)) = rows.iter().zip(values).find(|(_, v)| v.len() != sets.len()) {
        return Err(Error::Input(format!("{}: bars of {row:?} have {} values for {} sets", path.display(), v.len(), sets.len())));
    }
    let (bar, gap) = (10i64, 12i64);
    let group = bar * sets.len() as i64 + gap;
    let left = rows.iter().map(|r| text_width(r, 2)).max().unwrap_or(0) + 24;
    let (_, legend_h) = Axes::legend_size(sets);
    let top = 56 + legend_h + 10;
    let bottom = top + group * rows.len() as i64 + gap;
    let right = left + 640;
    let min = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(50f64, f64::min);
    let lo = (min / 10.0).floor() * 10.0;
    let hi = 100.0;
    let mut img = RgbImage::from_pixel((right + 30) as u32, (bottom + 60) as u32, Rgb(WHITE));
    let px = |v: f64| left + (((v.clamp(lo, hi) - lo) / (hi - lo)) * (right - left) as f64).round() as i64;
    let (xt, xd) = ticks(lo, hi, 6.0);
    for &v in &xt {
        let x = px(v);
        fill(&mut img, x, top, x + 1, bottom, GRID, 1.0);
        let label = format!("{v:.xd$}");
        text(&mut img, x - text_width(&label, 2) / 2, bottom + 10, &label, 2, BLACK, false);
    }
    for (r, (name, vals)) in rows.iter().zip(values).enumerate() {
        let y0 = top + gap + r as i64 * group;
        text(&mut img, left - 12 - text_width(name, 2), y0 + (group - gap) / 2 - 7, name, 2, BLACK, false);
        for (s, &v) in vals.iter().enumerate() {
            if v.is_finite() {
                let y = y0 + s as i64 * bar;
                fill(&mut img, left + 1, y, px(v), y + bar - 1, PALETTE[s % PALETTE.len()], 1.0);
            }
        }
    }
    rect_outline(&mut img, left, top, right + 1, bottom + 1, FRAME);
    text(&mut img, (left + right) / 2 - text_width(xlabel, 2) / 2, bottom + 34, xlabel, 2, BLACK, false);
    let width = img.width() as i64;
    let k = fit_scale(title, width - 20, 3);
    text(&mut img, (width - text_width(title, k)) / 2, 14, title, k, BLACK, false);
    let ax = Axes { x: (lo, hi), y: (0.0, 1.0), left, top: 46, right, bottom };
    ax.legend(&mut img, sets, true, false, |img, i, x, y| fill(img, x, y, x + 24, y + 14, PALETTE[i % PALETTE.len()], 1.0));
    save(path, &img)
}
