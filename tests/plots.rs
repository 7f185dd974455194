//! The report pictures: each is a decodable PNG of the expected size with visible content where
//! it belongs. Set NAC_PLOT_PREVIEW=<dir> to keep the pictures for a look.

use std::path::PathBuf;

use nac::data::Image;
use nac::eval::metrics::{auroc, roc_curve};
use nac::eval::plots::{image_grid, roc_plot, score_histogram, Series, PALETTE};
use nac::rng::Rng;

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("NAC_PLOT_PREVIEW")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("nac-plots-{}", std::process::id())));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &std::path::Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn colours(img: &image::RgbImage) -> usize {
    img.pixels().map(|p| p.0).collect::<std::collections::HashSet<_>>().len()
}

fn count(img: &image::RgbImage, c: [u8; 3], xs: std::ops::Range<u32>) -> usize {
    img.enumerate_pixels().filter(|(x, _, p)| xs.contains(x) && p.0 == c).count()
}

fn normal(rng: &mut Rng, n: usize, mean: f32, sd: f32) -> Vec<f32> {
    (0..n).map(|_| mean + sd * rng.normal()).collect()
}

#[test]
fn histogram_shows_each_series_in_its_colour() {
    let mut rng = Rng::new(7);
    let id = normal(&mut rng, 4000, 0.7, 0.06);
    let near = normal(&mut rng, 3000, 0.45, 0.08);
    let far = normal(&mut rng, 2000, 0.25, 0.05);
    let path = out_dir().join("histogram.png");
    let series = [
        Series { label: "CIFAR-10 (ID)", values: &id },
        Series { label: "near: CIFAR-100", values: &near },
        Series { label: "far: SVHN", values: &far },
    ];
    score_histogram(&path, "NAC-UE scores: CIFAR-10 vs OOD", "score", &series).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (900, 560));
    assert!(img.get_pixel(2, 2).0 == [255; 3] && colours(&img) > 8);
    // ID lies right of both OOD sets, far left of near: each outline shows up where its mass is
    let w = img.width();
    assert!(count(&img, PALETTE[0], w * 2 / 3..w) > 200);
    assert!(count(&img, PALETTE[0], 0..w / 3) < 50);
    assert!(count(&img, PALETTE[1], w / 3..w * 2 / 3) > 200);
    assert!(count(&img, PALETTE[2], 0..w / 3) > 200);
    // translucent fill of the ID bars under its curve (over white: 0.3·colour + 0.7·255)
    let tint = PALETTE[0].map(|c| (0.3 * c as f32 + 0.7 * 255.0).round() as u8);
    assert!(count(&img, tint, w * 2 / 3..w) > 2000);

    // degenerate input still draws: one value, a non-finite value, an empty series (and every glyph)
    let path = out_dir().join("histogram-degenerate.png");
    let series = [
        Series { label: "ABCDEFGHIJKLMNOPQRSTUVWXYZ", values: &[3.0, f32::NAN] },
        Series { label: "abcdefghijklmnopqrstuvwxyz", values: &[] },
    ];
    score_histogram(&path, "degenerate: one value, one empty set", "0123456789 .,-%:()[]/_+=<>#*'|!?±× −~", &series).unwrap();
    assert!(colours(&load(&path)) > 3);
}

#[test]
fn roc_of_a_perfect_classifier_hits_the_top_left() {
    let mut rng = Rng::new(11);
    let id = normal(&mut rng, 2000, 1.0, 1.0);
    let ood = normal(&mut rng, 1500, -0.5, 1.0);
    let (fpr, tpr) = roc_curve(&id, &ood);
    let perfect = ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0]);
    let label = format!("SVHN AUROC {:.2}", 100.0 * auroc(&id, &ood));
    let path = out_dir().join("roc.png");
    roc_plot(&path, "ROC: CIFAR-10 vs OOD", &[(&label, &fpr, &tpr), ("perfect AUROC 100.00", &perfect.0, &perfect.1)]).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (640, 660));
    assert!(colours(&img) > 5);
    // plot area is x 90..620, y 56..586: the perfect curve runs along the left and top edges
    let near = |x0: u32, y0: u32| {
        (x0.saturating_sub(4)..x0 + 5).any(|x| (y0.saturating_sub(4)..y0 + 5).any(|y| img.get_pixel(x, y).0 == PALETTE[1]))
    };
    assert!(near(91, 58) && near(91, 300) && near(300, 57) && near(600, 57));
    // the real curve lies between the diagonal and the top-left corner
    assert!(count(&img, PALETTE[0], 90..620) > 500);
    assert!(roc_plot(&path, "bad", &[("x", &[0.0, 1.0], &[0.0])]).unwrap_err().to_string().contains("roc.png"));
}

#[test]
fn image_grid_places_thumbnails_in_their_cells() {
    let mut rng = Rng::new(3);
    let images: Vec<Image> = (0..10)
        .map(|i| match i {
            4 => Image { width: 32, height: 32, channels: 3, pixels: [255, 0, 0].repeat(32 * 32) },
            7 => Image { width: 28, height: 28, channels: 1, pixels: (0..28 * 28).map(|p| (p % 28 * 9) as u8).collect() },
            _ => Image { width: 32, height: 32, channels: 3, pixels: (0..32 * 32 * 3).map(|_| rng.below(256) as u8).collect() },
        })
        .collect();
    let captions: Vec<String> = (0..10).map(|i| format!("{:.3}", 0.9 - i as f64 * 0.071)).collect();
    let path = out_dir().join("grid.png");
    image_grid(&path, "top-10 NAC scores: CIFAR-10 test", &images, &captions, 4).unwrap();
    let img = load(&path);
    assert!(colours(&img) > 1000);
    // the red 32×32 image (index 4) is scaled ×2 into row 1, column 0 of a 4-column, 3-row grid
    let red: Vec<(u32, u32)> = img.enumerate_pixels().filter(|p| p.2 .0 == [255, 0, 0]).map(|(x, y, _)| (x, y)).collect();
    assert_eq!(red.len(), 64 * 64);
    let (x0, y0) = (red.iter().map(|p| p.0).min().unwrap(), red.iter().map(|p| p.1).min().unwrap());
    let (x1, y1) = (red.iter().map(|p| p.0).max().unwrap(), red.iter().map(|p| p.1).max().unwrap());
    assert_eq!((x1 - x0, y1 - y0), (63, 63));
    let (cell_w, w, h) = (img.width() / 4, img.width(), img.height());
    assert!(x1 < cell_w, "red at x {x0}..{x1} of {w}");
    assert!((h / 3..h * 2 / 3).contains(&((y0 + y1) / 2)), "red at y {y0}..{y1} of {h}");

    // a report-sized grid: 100 thumbnails, 10 per row, cells of 64 + 2·10 px wide
    let many: Vec<Image> = (0..100).map(|i| images[i % 10].clone()).collect();
    let captions: Vec<String> = (0..100).map(|i| format!("{:.3}", 1.0 - i as f64 / 300.0)).collect();
    let path = out_dir().join("grid-100.png");
    image_grid(&path, "bottom-100 NAC scores: SVHN", &many, &captions, 10).unwrap();
    assert_eq!(load(&path).width(), 10 * 84 + 20);

    let err = image_grid(&path, "t", &images, &captions[..3], 4).unwrap_err().to_string();
    assert!(err.contains("grid-100.png") && err.contains("3 captions for 10 images"), "{err}");
}
