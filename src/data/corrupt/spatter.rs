//! `spatter`: the OpenCV steps of the reference's water drops (Canny edges, the 5×5 chamfer
//! distance, histogram equalisation, an emboss kernel, box blurs) and its mud.

use super::ops::{self, border_index, Arr, Border};
use crate::rng::NumpyLegacy;

pub(super) fn spatter(x: &Arr, s: usize, rng: &mut NumpyLegacy) -> Arr {
    let (loc, scale, sigma, threshold, intensity, mud) = [
        (0.62, 0.1, 0.7, 0.7, 0.5, false),
        (0.65, 0.1, 0.8, 0.7, 0.5, false),
        (0.65, 0.3, 1.0, 0.69, 0.5, false),
        (0.65, 0.1, 0.7, 0.69, 0.6, true),
        (0.65, 0.1, 0.5, 0.68, 0.6, true),
    ][s];
    let (h, w) = (x.h, x.w);
    let x = x.map(|v| v as f32 as f64);
    let mut liquid = Arr::new(h, w, 1);
    liquid.v.iter_mut().for_each(|v| *v = rng.normal(loc, scale));
    let liquid = ops::gaussian(&liquid, sigma, 4.0, Border::Nearest).map(|v| if v < threshold { 0.0 } else { v });
    let mut y = x.clone();
    if mud {
        let m = liquid.map(|v| if v > threshold { 1.0 } else { 0.0 });
        let m = ops::gaussian(&m, intensity, 4.0, Border::Nearest).map(|v| if (v as f32) < 0.8 { 0.0 } else { v as f32 as f64 });
        let color = [63.0f32 / 255.0, 42.0 / 255.0, 20.0 / 255.0];
        for (i, p) in y.v.chunks_mut(3).enumerate() {
            let m = m.v[i] as f32;
            for ch in 0..3 {
                let v = p[ch] as f32 * (1.0 - m) + color[ch] * m;
                p[ch] = (v.clamp(0.0, 1.0) * 255.0) as f64;
            }
        }
        return y;
    }
    // `(liquid * 255).astype(np.uint8)`: truncation, wrapping above 255 as the cast does on x86.
    let layer: Vec<u8> = liquid.v.iter().map(|v| (v * 255.0) as i64 as u8).collect();
    let edges = canny(&layer, h, w, 50, 150);
    let dist: Vec<f64> = distance_5x5(&edges, h, w).iter().map(|d| d.min(20.0)).collect();
    let dist: Vec<u8> = box3(&dist, h, w).iter().map(|&v| v as f32 as u8).collect();
    let dist = equalize(&dist);
    const EMBOSS: [f64; 9] = [-2.0, -1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 2.0];
    let emboss = ops::filter2d(&Arr { h, w, c: 1, v: dist.iter().map(|&v| v as f64).collect() }, &EMBOSS, 3);
    let emboss: Vec<f64> = emboss.v.iter().map(|v| v.round_ties_even().clamp(0.0, 255.0)).collect();
    let dist: Vec<f64> = box3(&emboss, h, w).iter().map(|v| v.round_ties_even()).collect();
    let m: Vec<f32> = layer.iter().zip(&dist).map(|(&l, &d)| l as f32 * d as f32).collect();
    let max = m.iter().fold(0.0f32, |a, &b| a.max(b));
    if max <= 0.0 {
        return y.map(|v| (v as f32 * 255.0) as f64);
    }
    let color = [175.0f32 / 255.0, 238.0 / 255.0, 238.0 / 255.0];
    for (i, p) in y.v.chunks_mut(3).enumerate() {
        let m = m[i] / max * intensity as f32;
        for ch in 0..3 {
            p[ch] = ((p[ch] as f32 + m * color[ch]).clamp(0.0, 1.0) * 255.0) as f64;
        }
    }
    y
}

/// OpenCV's `Canny` (3×3 Sobel with replicated edges, L1 magnitude, non-maximum suppression in
/// four directions, hysteresis over 8-neighbours): 255 on edges, 0 elsewhere.
fn canny(img: &[u8], h: usize, w: usize, low: i32, high: i32) -> Vec<u8> {
    let px = |y: i64, x: i64| img[border_index(y, h, Border::Nearest) * w + border_index(x, w, Border::Nearest)] as i32;
    let mut dx = vec![0i32; h * w];
    let mut dy = vec![0i32; h * w];
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let i = y as usize * w + x as usize;
            dx[i] = px(y - 1, x + 1) - px(y - 1, x - 1) + 2 * (px(y, x + 1) - px(y, x - 1)) + px(y + 1, x + 1) - px(y + 1, x - 1);
            dy[i] = px(y + 1, x - 1) - px(y - 1, x - 1) + 2 * (px(y + 1, x) - px(y - 1, x)) + px(y + 1, x + 1) - px(y - 1, x + 1);
        }
    }
    let mag = |y: i64, x: i64| {
        if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
            0
        } else {
            dx[y as usize * w + x as usize].abs() + dy[y as usize * w + x as usize].abs()
        }
    };
    const TG22: i64 = 13573; // tan(22.5°) in 15-bit fixed point
                             // 0: no edge, 1: weak, 2: strong.
    let mut map = vec![0u8; h * w];
    let mut stack = Vec::new();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let i = y as usize * w + x as usize;
            let m = mag(y, x);
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[i] as i64, dy[i] as i64);
            let (ax, ay) = (xs.abs(), ys.abs() << 15);
            let tg22x = ax * TG22;
            let keep = if ay < tg22x {
                m > mag(y, x - 1) && m >= mag(y, x + 1)
            } else if ay > tg22x + (ax << 16) {
                m > mag(y - 1, x) && m >= mag(y + 1, x)
            } else {
                let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > mag(y - 1, x - s) && m > mag(y + 1, x + s)
            };
            if keep {
                map[i] = if m > high { 2 } else { 1 };
                if m > high {
                    stack.push((y, x));
                }
            }
        }
    }
    while let Some((y, x)) = stack.pop() {
        for (ny, nx) in (-1..=1).flat_map(|a| (-1..=1).map(move |b| (y + a, x + b))) {
            if ny >= 0 && nx >= 0 && ny < h as i64 && nx < w as i64 && map[ny as usize * w + nx as usize] == 1 {
                map[ny as usize * w + nx as usize] = 2;
                stack.push((ny, nx));
            }
        }
    }
    map.iter().map(|&v| if v == 2 { 255 } else { 0 }).collect()
}

/// OpenCV's `distanceTransform(255 − edges, DIST_L2, 5)`: the 5×5 chamfer distance (steps 1,
/// 1.4, 2.1969 in 16-bit fixed point) to the nearest edge pixel; far from any edge, 8192.
fn distance_5x5(edges: &[u8], h: usize, w: usize) -> Vec<f64> {
    const HV: i64 = 65536;
    const DIAG: i64 = 91750;
    const LONG: i64 = 143976;
    const FAR: i64 = 8192 << 16;
    let (pw, ph) = (w + 4, h + 4);
    let mut d = vec![FAR; pw * ph];
    for y in 0..h {
        for x in 0..w {
            d[(y + 2) * pw + x + 2] = if edges[y * w + x] == 255 { 0 } else { FAR };
        }
    }
    let forward: [(i64, i64, i64); 8] =
        [(-2, -1, LONG), (-2, 1, LONG), (-1, -2, LONG), (-1, -1, DIAG), (-1, 0, HV), (-1, 1, DIAG), (-1, 2, LONG), (0, -1, HV)];
    for y in 2..h + 2 {
        for x in 2..w + 2 {
            let i = y * pw + x;
            for &(oy, ox, step) in &forward {
                let j = ((y as i64 + oy) as usize) * pw + (x as i64 + ox) as usize;
                d[i] = d[i].min(d[j] + step);
            }
        }
    }
    for y in (2..h + 2).rev() {
        for x in (2..w + 2).rev() {
            let i = y * pw + x;
            for &(oy, ox, step) in &forward {
                let j = ((y as i64 - oy) as usize) * pw + (x as i64 - ox) as usize;
                d[i] = d[i].min(d[j] + step);
            }
        }
    }
    (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).map(|(y, x)| (d[(y + 2) * pw + x + 2] as f64 / 65536.0) as f32 as f64).collect()
}

/// OpenCV's normalised 3×3 `blur` (`BORDER_REFLECT_101`): the sum times 1/9, as OpenCV
/// scales it (scaling each tap first moves exact levels below an integer).
fn box3(v: &[f64], h: usize, w: usize) -> Vec<f64> {
    let ones = [1.0; 9];
    ops::filter2d(&Arr { h, w, c: 1, v: v.to_vec() }, &ones, 3).v.iter().map(|s| s * (1.0 / 9.0)).collect()
}

/// OpenCV's `equalizeHist`.
fn equalize(v: &[u8]) -> Vec<u8> {
    let mut hist = [0usize; 256];
    v.iter().for_each(|&p| hist[p as usize] += 1);
    let first = hist.iter().position(|&n| n > 0).unwrap_or(0);
    if hist[first] == v.len() {
        return vec![first as u8; v.len()];
    }
    let scale = 255.0f32 / (v.len() - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = (sum as f32 * scale).round_ties_even().clamp(0.0, 255.0) as u8;
    }
    v.iter().map(|&p| lut[p as usize]).collect()
}
