//! Shared test helpers: the engine (a missing adapter fails the test, never skips it),
//! random inputs, and error measures that never let a NaN pass.
#![allow(dead_code)]

use nac::rng::Rng;
use nac::{Engine, EngineOptions};

/// An engine on the default adapter. Without one the test fails with the engine's message.
pub fn engine() -> Engine {
    engine_with(EngineOptions::default())
}

pub fn engine_with(options: EngineOptions) -> Engine {
    match Engine::new(options) {
        Ok(e) => e,
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

pub fn random_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

pub use nac::reference::relative_error as rel_err;

/// A fresh directory for one test's files (per process and thread, so parallel tests never share).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nac-{tag}-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tolerance: f64) -> f64 {
    let err = rel_err(got, want);
    assert!(err <= tolerance, "{what}: relative error {err:.3e} exceeds {tolerance:.0e} (len {} vs {})", got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros, so the comparison proves nothing");
    eprintln!("{what}: relative error {err:.2e}");
    err
}

/// Writes 8×8 gray images as an IDX file at `path` (`…-images-idx3-ubyte`) and their labels
/// beside it (`…-labels-idx1-ubyte`), as the MNIST family ships them.
pub fn write_idx(path: &std::path::Path, images: &[u8], n: usize, labels: &[u8]) {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [n as u32, 8, 8] {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(images);
    std::fs::write(path, bytes).unwrap();
    let mut l = vec![0, 0, 8, 1];
    l.extend((n as u32).to_be_bytes());
    l.extend(labels);
    std::fs::write(path.to_str().unwrap().replace("images-idx3", "labels-idx1"), l).unwrap();
}

/// Runs the `nac` binary with `args`: (success, stderr).
pub fn nac<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nac")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `nac` with `args` and fails the test, showing its stderr, unless it succeeds.
#[track_caller]
pub fn nac_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) {
    let (success, err) = nac(args);
    assert!(success, "nac {args:?}: {err}");
}

/// A path as `&str`, for building command lines.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}
