//! The image operations the CIFAR-10-C functions call, each as the library the reference calls
//! computes it: scipy.ndimage filters and zoom, OpenCV filters, resize and affine warp, PIL's
//! box resampling, scikit-image's HSV, and a line kernel in place of ImageMagick's motion blur.

/// An H×W×C array of f64, C fastest (NumPy's layout of an image).
#[derive(Clone)]
pub(super) struct Arr {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub v: Vec<f64>,
}

impl Arr {
    pub fn new(h: usize, w: usize, c: usize) -> Arr {
        Arr { h, w, c, v: vec![0.0; h * w * c] }
    }

    pub fn map(&self, mut f: impl FnMut(f64) -> f64) -> Arr {
        Arr { v: self.v.iter().map(|&x| f(x)).collect(), ..*self }
    }

    pub fn at(&self, y: usize, x: usize, ch: usize) -> f64 {
        self.v[(y * self.w + x) * self.c + ch]
    }

    pub fn set(&mut self, y: usize, x: usize, ch: usize, value: f64) {
        self.v[(y * self.w + x) * self.c + ch] = value;
    }
}

/// How a filter reads outside the image.
#[derive(Clone, Copy)]
pub(super) enum Border {
    /// scipy `nearest`: the edge repeated.
    Nearest,
    /// scipy `reflect`: `d c b a | a b c d`.
    Reflect,
    /// OpenCV's default `BORDER_REFLECT_101`: `d c b | a b c d`.
    Reflect101,
}

pub(super) fn border_index(i: i64, n: usize, border: Border) -> usize {
    let n = n as i64;
    let m = match border {
        Border::Nearest => i.clamp(0, n - 1),
        Border::Reflect => {
            let m = i.rem_euclid(2 * n);
            if m >= n {
                2 * n - 1 - m
            } else {
                m
            }
        }
        Border::Reflect101 if n == 1 => 0,
        Border::Reflect101 => {
            let m = i.rem_euclid(2 * (n - 1));
            if m >= n {
                2 * (n - 1) - m
            } else {
                m
            }
        }
    };
    m as usize
}

/// scipy's `gaussian_filter` over the two image axes (rows first), each channel alone:
/// kernel radius ⌊truncate·σ + 0.5⌋; σ = 0 leaves the array as it is. scikit-image's
/// `gaussian` calls it with `truncate = 4` and `mode = nearest` unless told otherwise.
pub(super) fn gaussian(a: &Arr, sigma: f64, truncate: f64, border: Border) -> Arr {
    if sigma <= 1e-15 {
        return a.clone();
    }
    let radius = (truncate * sigma + 0.5) as i64;
    let phi: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp()).collect();
    let total = numpy_sum(&phi);
    // The centre tap, then the pairs of taps from the outermost in, as scipy's correlate1d sums a
    // symmetric kernel.
    let weights: Vec<f64> = phi[radius as usize..].iter().map(|w| w / total).collect();
    let pass = |src: &Arr, vertical: bool| {
        let mut out = Arr::new(src.h, src.w, src.c);
        let read = |y: usize, x: usize, ch: usize, d: i64| {
            if vertical {
                src.at(border_index(y as i64 + d, src.h, border), x, ch)
            } else {
                src.at(y, border_index(x as i64 + d, src.w, border), ch)
            }
        };
        for y in 0..src.h {
            for x in 0..src.w {
                for ch in 0..src.c {
                    let mut acc = src.at(y, x, ch) * weights[0];
                    for (d, w) in weights.iter().enumerate().skip(1).rev() {
                        acc += (read(y, x, ch, d as i64) + read(y, x, ch, -(d as i64))) * w;
                    }
                    out.set(y, x, ch, acc);
                }
            }
        }
        out
    };
    pass(&pass(a, true), false)
}

/// NumPy's pairwise sum (8 accumulators per block of up to 128 values).
pub(super) fn numpy_sum(a: &[f64]) -> f64 {
    if a.len() < 8 {
        return a.iter().fold(0.0, |s, v| s + v);
    }
    if a.len() > 128 {
        let half = a.len() / 2 - (a.len() / 2) % 8;
        return numpy_sum(&a[..half]) + numpy_sum(&a[half..]);
    }
    let mut r = [0.0; 8];
    r.copy_from_slice(&a[..8]);
    let blocks = a.len() - a.len() % 8;
    for i in (8..blocks).step_by(8) {
        for j in 0..8 {
            r[j] += a[i + j];
        }
    }
    let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for v in &a[blocks..] {
        res += v;
    }
    res
}

/// OpenCV's `filter2D` (a correlation, anchor at the kernel's centre, `BORDER_REFLECT_101`) of
/// every channel with a square kernel of odd side.
pub(super) fn filter2d(a: &Arr, kernel: &[f64], side: usize) -> Arr {
    let r = (side / 2) as i64;
    let sx_of = |x: usize, kx: usize| border_index(x as i64 + kx as i64 - r, a.w, Border::Reflect101);
    let mut out = Arr::new(a.h, a.w, a.c);
    for y in 0..a.h {
        for x in 0..a.w {
            for ch in 0..a.c {
                let mut acc = 0.0;
                for ky in 0..side {
                    let sy = border_index(y as i64 + ky as i64 - r, a.h, Border::Reflect101);
                    for kx in 0..side {
                        // Most of the 17×17 defocus disk is zero: skipping it changes no sum.
                        let k = kernel[ky * side + kx];
                        if k != 0.0 {
                            acc += k * a.at(sy, sx_of(x, kx), ch);
                        }
                    }
                }
                out.set(y, x, ch, acc);
            }
        }
    }
    out
}

/// OpenCV's 1-D Gaussian kernel of `n` taps (`getGaussianKernel`, σ > 0), as f32 values.
pub(super) fn cv_gaussian_kernel(n: usize, sigma: f64) -> Vec<f64> {
    let half = (n as f64 - 1.0) / 2.0;
    let t: Vec<f64> = (0..n).map(|i| (-0.5 / (sigma * sigma) * (i as f64 - half).powi(2)).exp()).collect();
    let total: f64 = t.iter().sum();
    t.iter().map(|v| (v / total) as f32 as f64).collect()
}

/// PIL's `resize(…, BOX)` of an 8-bit image: box weights normalised per output pixel, in 22-bit
/// fixed point, the horizontal pass first (rounded to 8 bits) and then the vertical one.
pub(super) fn pil_box_resize(pixels: &[u8], w: usize, h: usize, c: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    const PRECISION_BITS: u32 = 22;
    // (first input index, fixed-point weights) per output index.
    let coeffs = |in_size: usize, out_size: usize| -> Vec<(usize, Vec<i64>)> {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 0.5 * filterscale;
        (0..out_size)
            .map(|xx| {
                let center = (xx as f64 + 0.5) * scale;
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
                let k: Vec<f64> = (xmin..xmax)
                    .map(|x| {
                        let t = (x as f64 - center + 0.5) / filterscale;
                        if t > -0.5 && t <= 0.5 {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let total: f64 = k.iter().sum();
                let fixed =
                    k.iter().map(|&v| if total != 0.0 { v / total } else { v }).map(|v| (v * (1 << PRECISION_BITS) as f64 + 0.5) as i64);
                (xmin, fixed.collect())
            })
            .collect()
    };
    let clip8 = |ss: i64| (ss >> PRECISION_BITS).clamp(0, 255) as u8;
    let mut src = pixels.to_vec();
    let (mut cw, ch_) = (w, h);
    if out_w != w {
        let k = coeffs(w, out_w);
        let mut out = vec![0u8; out_w * h * c];
        for y in 0..h {
            for (xx, (xmin, ws)) in k.iter().enumerate() {
                for ch in 0..c {
                    let mut ss = 1i64 << (PRECISION_BITS - 1);
                    for (i, wt) in ws.iter().enumerate() {
                        ss += src[(y * w + xmin + i) * c + ch] as i64 * wt;
                    }
                    out[(y * out_w + xx) * c + ch] = clip8(ss);
                }
            }
        }
        src = out;
        cw = out_w;
    }
    if out_h != ch_ {
        let k = coeffs(h, out_h);
        let mut out = vec![0u8; cw * out_h * c];
        for (yy, (ymin, ws)) in k.iter().enumerate() {
            for x in 0..cw {
                for ch in 0..c {
                    let mut ss = 1i64 << (PRECISION_BITS - 1);
                    for (i, wt) in ws.iter().enumerate() {
                        ss += src[((ymin + i) * cw + x) * c + ch] as i64 * wt;
                    }
                    out[(yy * cw + x) * c + ch] = clip8(ss);
                }
            }
        }
        src = out;
    }
    src
}

/// scipy's `zoom(a, (z, z, 1), order=1)`: output side round(side·z), output index o read at
/// o·(in − 1)/(out − 1) by linear interpolation.
fn scipy_zoom(a: &Arr, z: f64) -> Arr {
    let (oh, ow) = ((a.h as f64 * z).round_ties_even() as usize, (a.w as f64 * z).round_ties_even() as usize);
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f64)> {
        let step = if n_out > 1 { (n_in as f64 - 1.0) / (n_out as f64 - 1.0) } else { 1.0 };
        (0..n_out)
            .map(|o| {
                let cc = o as f64 * step;
                let i0 = (cc.floor() as usize).min(n_in - 1);
                (i0, (i0 + 1).min(n_in - 1), cc - i0 as f64)
            })
            .collect()
    };
    let (ty, tx) = (taps(a.h, oh), taps(a.w, ow));
    let mut out = Arr::new(oh, ow, a.c);
    for (y, &(y0, y1, fy)) in ty.iter().enumerate() {
        for (x, &(x0, x1, fx)) in tx.iter().enumerate() {
            for ch in 0..a.c {
                let top = a.at(y0, x0, ch) * (1.0 - fx) + a.at(y0, x1, ch) * fx;
                let bottom = a.at(y1, x0, ch) * (1.0 - fx) + a.at(y1, x1, ch) * fx;
                out.set(y, x, ch, top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// The reference's `clipped_zoom`: the centre ⌈side/z⌉ crop zoomed by z and trimmed back to
/// the image's size (each axis on its own, which for a square image is the reference's).
pub(super) fn clipped_zoom(a: &Arr, z: f64) -> Arr {
    let (ch, cw) = ((a.h as f64 / z).ceil() as usize, (a.w as f64 / z).ceil() as usize);
    let (top, left) = ((a.h - ch) / 2, (a.w - cw) / 2);
    let mut crop = Arr::new(ch, cw, a.c);
    for y in 0..ch {
        for x in 0..cw {
            for k in 0..a.c {
                crop.set(y, x, k, a.at(top + y, left + x, k));
            }
        }
    }
    let zoomed = scipy_zoom(&crop, z);
    let (ty, tx) = ((zoomed.h - a.h) / 2, (zoomed.w - a.w) / 2);
    let mut out = Arr::new(a.h, a.w, a.c);
    for y in 0..a.h {
        for x in 0..a.w {
            for k in 0..a.c {
                out.set(y, x, k, zoomed.at(ty + y, tx + x, k));
            }
        }
    }
    out
}

/// Motion blur along a line at `angle` degrees: the one-sided Gaussian kernel of 2·radius + 1
/// taps that ImageMagick's `-motion-blur radius×sigma+angle` uses, each tap an edge-clamped
/// shift, as the `imagecorruptions` package re-implements it. Rounded to 8 bits, as
/// ImageMagick's 8-bit output is (it truncates; 1e-9 absorbs rounding below an exact level).
pub(super) fn motion_blur(a: &Arr, radius: usize, sigma: f64, angle: f64) -> Arr {
    let width = 2 * radius + 1;
    let kernel: Vec<f64> = (0..width).map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    let (py, px) = (width as f64 * angle.to_radians().sin(), width as f64 * angle.to_radians().cos());
    let hypot = py.hypot(px);
    let mut out = Arr::new(a.h, a.w, a.c);
    for (i, k) in kernel.iter().enumerate() {
        let dy = -((i as f64 * py / hypot) - 0.5).ceil() as i64;
        let dx = -((i as f64 * px / hypot) - 0.5).ceil() as i64;
        if dy.unsigned_abs() as usize >= a.h || dx.unsigned_abs() as usize >= a.w {
            break;
        }
        for y in 0..a.h {
            let sy = (y as i64 - dy).clamp(0, a.h as i64 - 1) as usize;
            for x in 0..a.w {
                let sx = (x as i64 - dx).clamp(0, a.w as i64 - 1) as usize;
                for ch in 0..a.c {
                    let i = (y * a.w + x) * a.c + ch;
                    out.v[i] += k / total * a.at(sy, sx, ch);
                }
            }
        }
    }
    out.map(|v| (v + 1e-9).floor().clamp(0.0, 255.0))
}

/// scikit-image's `rgb2hsv` of one pixel (blue-is-max wins ties over green over red).
pub(super) fn rgb2hsv(r: f64, g: f64, b: f64) -> [f64; 3] {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let mut h = 0.0;
    if r == v {
        h = (g - b) / delta;
    }
    if g == v {
        h = 2.0 + (b - r) / delta;
    }
    if b == v {
        h = 4.0 + (r - g) / delta;
    }
    [(h / 6.0).rem_euclid(1.0), delta / v, v]
}

/// scikit-image's `hsv2rgb` of one pixel.
pub(super) fn hsv2rgb([h, s, v]: [f64; 3]) -> [f64; 3] {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// OpenCV's bilinear `resize` of an 8-bit image to `out_w × out_h` with source step `scale`
/// (1/fx): output x reads (x + 0.5)·scale − 0.5, clamped at the edges, rounded to 8 bits.
pub(super) fn cv_resize_linear(a: &Arr, out_w: usize, out_h: usize, scale_x: f64, scale_y: f64) -> Arr {
    let taps = |n_in: usize, n_out: usize, scale: f64| -> Vec<(usize, usize, f64)> {
        (0..n_out)
            .map(|o| {
                let f = (o as f64 + 0.5) * scale - 0.5;
                let s = f.floor();
                let (s, t) = if s < 0.0 { (0, 0.0) } else { (s as usize, f - s) };
                if s >= n_in - 1 {
                    (n_in - 1, n_in - 1, 0.0)
                } else {
                    (s, s + 1, t)
                }
            })
            .collect()
    };
    let (ty, tx) = (taps(a.h, out_h, scale_y), taps(a.w, out_w, scale_x));
    let mut out = Arr::new(out_h, out_w, a.c);
    for (y, &(y0, y1, fy)) in ty.iter().enumerate() {
        for (x, &(x0, x1, fx)) in tx.iter().enumerate() {
            for ch in 0..a.c {
                let top = a.at(y0, x0, ch) * (1.0 - fx) + a.at(y0, x1, ch) * fx;
                let bottom = a.at(y1, x0, ch) * (1.0 - fx) + a.at(y1, x1, ch) * fx;
                out.set(y, x, ch, (top * (1.0 - fy) + bottom * fy).round());
            }
        }
    }
    out
}

/// OpenCV's `getAffineTransform`: the 2×3 matrix taking the three `src` points to `dst`.
pub(super) fn affine_from_points(src: [[f64; 2]; 3], dst: [[f64; 2]; 3]) -> [f64; 6] {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let a = [[src[0][0], src[0][1], 1.0], [src[1][0], src[1][1], 1.0], [src[2][0], src[2][1], 1.0]];
    let d = det(a);
    if d == 0.0 {
        // Coincident points (an image under 3 pixels a side): no warp.
        return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    }
    let mut m = [0.0; 6];
    for row in 0..2 {
        for col in 0..3 {
            let mut b = a;
            for i in 0..3 {
                b[i][col] = dst[i][row];
            }
            m[row * 3 + col] = det(b) / d;
        }
    }
    m
}

/// OpenCV's `warpAffine` (bilinear, `BORDER_REFLECT_101`): output (x, y) reads the inverse map
/// of `m`. OpenCV 5 samples at the exact coordinates (OpenCV 3-4 rounded them to 1/32 pixel,
/// a difference below one grey level on most pixels).
pub(super) fn warp_affine(a: &Arr, m: [f64; 6]) -> Arr {
    let d = m[0] * m[4] - m[1] * m[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22, a12, a21) = (m[4] * d, m[0] * d, -m[1] * d, -m[3] * d);
    let (b1, b2) = (-a11 * m[2] - a12 * m[5], -a21 * m[2] - a22 * m[5]);
    let mut out = Arr::new(a.h, a.w, a.c);
    for y in 0..a.h {
        for x in 0..a.w {
            let (sx, sy) = (a11 * x as f64 + a12 * y as f64 + b1, a21 * x as f64 + a22 * y as f64 + b2);
            let (ix, iy) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - ix) as f32, (sy - iy) as f32);
            let (ix, iy) = (ix as i64, iy as i64);
            let (xa, xb) = (border_index(ix, a.w, Border::Reflect101), border_index(ix + 1, a.w, Border::Reflect101));
            let (ya, yb) = (border_index(iy, a.h, Border::Reflect101), border_index(iy + 1, a.h, Border::Reflect101));
            for ch in 0..a.c {
                // In f32 and in this lerp form, which reproduces OpenCV's result where products
                // of the four weights fall a rounding error off an exact level.
                let p = |y: usize, x: usize| a.at(y, x, ch) as f32;
                let top = p(ya, xa) + (p(ya, xb) - p(ya, xa)) * fx;
                let bottom = p(yb, xa) + (p(yb, xb) - p(yb, xa)) * fx;
                out.set(y, x, ch, (top + (bottom - top) * fy) as f64);
            }
        }
    }
    out
}

/// scipy's `map_coordinates(order=1, mode='reflect')` at (y + dy, x + dx) for every pixel and
/// channel.
pub(super) fn displace(a: &Arr, dy: &[f64], dx: &[f64]) -> Arr {
    let mut out = Arr::new(a.h, a.w, a.c);
    for y in 0..a.h {
        for x in 0..a.w {
            let (cy, cx) = (y as f64 + dy[y * a.w + x], x as f64 + dx[y * a.w + x]);
            let (fy, fx) = (cy.floor(), cx.floor());
            let (ty, tx) = (cy - fy, cx - fx);
            let (y0, y1) = (border_index(fy as i64, a.h, Border::Reflect), border_index(fy as i64 + 1, a.h, Border::Reflect));
            let (x0, x1) = (border_index(fx as i64, a.w, Border::Reflect), border_index(fx as i64 + 1, a.w, Border::Reflect));
            for ch in 0..a.c {
                let v = (1.0 - ty) * ((1.0 - tx) * a.at(y0, x0, ch) + tx * a.at(y0, x1, ch))
                    + ty * ((1.0 - tx) * a.at(y1, x0, ch) + tx * a.at(y1, x1, ch));
                out.set(y, x, ch, v as f32 as f64);
            }
        }
    }
    out
}
