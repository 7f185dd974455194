//! Hostile input files: every malformed `.npy`, checkpoint or profile ends in an error that
//! names the file and the field, tensor or value at fault — never a panic, an allocation sized
//! by the file, or a silently wrong result. CPU only (no GPU adapter needed).
//!
//! The files under `tests/fuzz-regressions/<target>/` (minimised fuzzer finds) are replayed
//! through the same entry points as the fuzz targets.

use std::path::Path;

use nac::model::arch::{ArchSpec, Body};
use nac::model::synthetic::SyntheticModel;
use nac::model::weights::{serialize_tensors, StorageDtype, TensorStore};
use nac::nac::bins::BinEdges;
use nac::nac::file::ProfileData;
use nac::npy::{NpyArray, NpyDtype};
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

/// A `.npy` version 1.0 file with `header` as its header text (padded, newline-terminated).
fn npy_v1(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn npy_err(bytes: &[u8]) -> String {
    match NpyArray::parse(Path::new("bad.npy"), bytes) {
        Ok(a) => panic!("accepted as shape {:?} {:?}", a.shape, a.dtype),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("bad.npy: "), "the error names the file: {e}");
            e
        }
    }
}

/// Safetensors bytes from a header (JSON) and the data that follows it.
fn safetensors_raw(header: &Value, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// The tensors of a tiny random WideResNet-10-1 (10 classes) in checkpoint naming.
fn wrn_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 10, 7).unwrap().tensors
}

fn load_checkpoint(bytes: &[u8]) -> nac::Result<nac::model::Network> {
    let store = TensorStore::from_bytes(Path::new("bad.safetensors"), bytes)?;
    nac::model::arch::from_store(&store, None)
}

fn checkpoint_err(bytes: &[u8]) -> String {
    match load_checkpoint(bytes) {
        Ok(net) => panic!("accepted as {}", net.spec),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("bad.safetensors: "), "the error names the file: {e}");
            e
        }
    }
}

fn with_tensor(mut tensors: Vec<(String, Vec<usize>, Vec<f32>)>, name: &str, f: impl FnOnce(&mut Vec<usize>, &mut Vec<f32>)) -> Vec<u8> {
    let t = tensors.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no tensor {name}"));
    f(&mut t.1, &mut t.2);
    serialize_tensors(&tensors, StorageDtype::F32, None).unwrap()
}

/// A profile file from a header (JSON, any content) and `counts.<layer>` u32 tensors.
fn profile_raw(header: &Value, tensors: &[(&str, Vec<usize>, Vec<u32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| t.2.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.0.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::U32, t.1.clone(), b).unwrap()))
        .collect();
    let metadata = std::collections::HashMap::from([("nac_profile".to_string(), header.to_string())]);
    safetensors::serialize(views, Some(metadata)).unwrap()
}

fn layer_json(name: &str, neurons: usize, o: f64, m: usize, alpha: f64) -> Value {
    let edges = BinEdges::log_symmetric(m).map(|e| e.edges).unwrap_or_default();
    json!({"name": name, "neurons": neurons, "o": o, "m": m, "alpha": alpha, "edges": edges})
}

fn header_json(samples: u64, layers: Vec<Value>) -> Value {
    json!({
        "format": "nac-profile", "version": 1, "arch": "wrn-10-1", "model_fingerprint": "wrn-10-1:0",
        "preprocessing": "", "binning": "log_symmetric", "counted": "all", "samples": samples, "layers": layers,
    })
}

/// A profile's count tensors: (name, shape, values).
type Counts = Vec<(&'static str, Vec<usize>, Vec<u32>)>;

/// A valid one-layer profile: `avgpool`, 4 neurons, M = 50, 10 samples.
fn good_profile() -> (Value, Counts) {
    let mut counts = vec![0u32; 49 * 4];
    for n in 0..4 {
        counts[(20 + n) * 4 + n] = 10;
    }
    (header_json(10, vec![layer_json("avgpool", 4, 5.0, 50, 100.0)]), vec![("counts.avgpool", vec![49, 4], counts)])
}

fn profile_err(bytes: &[u8]) -> String {
    match ProfileData::from_bytes(bytes, Path::new("bad.nacprofile")) {
        Ok(p) => panic!("accepted: {:?}", p.header),
        Err(e) => {
            let e = e.to_string();
            assert!(e.starts_with("bad.nacprofile: "), "the error names the file: {e}");
            e
        }
    }
}

fn assert_contains(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "`{p}` missing from: {e}");
    }
}

// ---------------------------------------------------------------- .npy

#[test]
fn npy_round_trip_still_works() {
    let a = NpyArray::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = NpyArray::parse(Path::new("a.npy"), &a.to_bytes()).unwrap();
    assert_eq!((b.shape.clone(), b.dtype), (vec![2, 3], NpyDtype::F32));
    assert_eq!(b.to_f32(Path::new("a.npy")).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let l = NpyArray::parse(Path::new("l.npy"), &NpyArray::from_labels(&[3, 1, 4]).to_bytes()).unwrap();
    assert_eq!(l.to_labels(Path::new("l.npy")).unwrap(), [3, 1, 4]);
    // What NumPy writes: a 0-d array, `(n,)`, a Python 2 `L` suffix, double quotes, keys in another order.
    for (header, shape, data) in [
        (&b"{'descr': '<f4', 'fortran_order': False, 'shape': (), }"[..], vec![], 4),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", vec![2], 8),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }", vec![2, 1], 8),
        (b"{\"shape\": (1, 2), \"fortran_order\": False, \"descr\": \"<f4\"}", vec![1, 2], 8),
        (b"{'descr': '<f4', 'fortran_order': True, 'shape': (2,)}", vec![2], 8),
    ] {
        let a = NpyArray::parse(Path::new("a.npy"), &npy_v1(header, &vec![0; data])).unwrap();
        assert_eq!(a.shape, shape, "{}", String::from_utf8_lossy(header));
    }
}

/// Before: `shape_field[1..close]` sliced `1..0` and panicked.
#[test]
fn npy_shape_without_open_paren_is_an_error() {
    let e = npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': ), }", &[]));
    assert_contains(&e, &["shape", "tuple"]);
}

/// Before: byte-offset slicing inside a multi-byte character panicked.
#[test]
fn npy_non_ascii_header_is_an_error() {
    let e = npy_err(&npy_v1("{'descr': '<f4', 'fortran_order': False, 'shape': é2,), }".as_bytes(), &[]));
    assert_contains(&e, &["shape", "byte 0xc3"]);
    let e = npy_err(&npy_v1("{'descr': '<fé', 'fortran_order': False, 'shape': (1,), }".as_bytes(), &[0; 4]));
    assert_contains(&e, &["inside a string"]);
}

/// Before: the product wrapped (release) to 0 bytes and a shape of 2^64 elements was accepted
/// with no data (debug: an overflow panic).
#[test]
fn npy_shape_overflowing_usize_is_an_error() {
    let e = npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", &[]));
    assert_contains(&e, &["[4294967296, 4294967296]", "more bytes than this machine can address"]);
    let e = npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", &[]));
    assert_contains(&e, &["more bytes"]);
    let e = npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", &[]));
    assert_contains(&e, &["99999999999999999999999", "does not fit"]);
}

#[test]
fn npy_truncated_files_are_errors() {
    let good = NpyArray::from_f32(vec![2], &[1.0, 2.0]).to_bytes();
    for len in 0..good.len() {
        let e = npy_err(&good[..len]);
        assert!(e.contains("not a valid .npy file"), "{len}: {e}");
    }
    assert_contains(&npy_err(b"\x93NUMPY\x01\x00\x05"), &["ends inside the 2-byte header length"]);
    assert_contains(&npy_err(b"\x93NUMPY\x02\x00\x05\x00\x00"), &["ends inside the 4-byte header length"]);
    assert_contains(&npy_err(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{"), &["header of 4294967295 bytes", "runs past the end"]);
    assert_contains(&npy_err(b"\x93NUMPY\x04\x00\x00\x00"), &["version 4.0"]);
    assert_contains(&npy_err(b"\x93NUMPY\x01\x07\x00\x00"), &["version 1.7"]);
}

/// The header is a Python dict literal parsed strictly, not searched for substrings.
#[test]
fn npy_header_is_parsed_strictly() {
    let cases: [(&[u8], &str); 13] = [
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}", "'shape' appears twice"),
        (b"{'descr': '<f4', 'fortran_order': False}", "no 'shape' key"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "trailing comma"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}", "non-negative integer"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "non-negative integer"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': [1]}", "tuple"),
        (b"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "True or False"),
        (b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "after the closing"),
        (b"{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "expected '}'"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,", "found the end of the header"),
        (b"{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "expected ',' or ')'"),
    ];
    for (header, want) in cases {
        let e = npy_err(&npy_v1(header, &[0; 4]));
        assert_contains(&e, &["header: ", want]);
    }
    assert_contains(&npy_err(&npy_v1(b"{'descr': '>f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4])), &["'>f4'", "big-endian"]);
    assert_contains(&npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2)}", &[0; 8])), &["Fortran-order"]);
    assert_contains(
        &npy_err(&npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", &[0; 8])),
        &["needs 12 data bytes", "found 8"],
    );
}

// ---------------------------------------------------------------- checkpoints

#[test]
fn good_checkpoint_loads() {
    let bytes = serialize_tensors(&wrn_tensors(), StorageDtype::F16, None).unwrap();
    assert_eq!(load_checkpoint(&bytes).unwrap().spec, ArchSpec::WideResNet { depth: 10, width: 1 });
}

/// Before: `t["block1.layer.0.conv1.weight"].shape[0]` panicked on a 0-d tensor.
#[test]
fn checkpoint_scalar_conv_weight_is_an_error() {
    let tensors = vec![("block1.layer.0.conv1.weight".to_string(), vec![], vec![1.0])];
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["block1.layer.0.conv1.weight", "4 dimensions", "[]"]);
    // Zero output channels would be "16·0" and width 0.
    let tensors = vec![("block1.layer.0.conv1.weight".to_string(), vec![0, 16, 3, 3], vec![])];
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["block1.layer.0.conv1.weight", "0 output channels"]);
}

/// A zero-element tensor may claim any dimension: 2^62 output channels would make 64·width
/// overflow. Now refused by the channel limit.
#[test]
fn checkpoint_giant_empty_conv_weight_is_an_error() {
    let tensors = vec![("block1.layer.0.conv1.weight".to_string(), vec![1 << 62, 0, 3, 3], vec![])];
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["block1.layer.0.conv1.weight", "MAX_LAYER_NEURONS"]);
    let e = "wrn-28-100000000000000000".parse::<ArchSpec>().unwrap_err().to_string();
    assert_contains(&e, &["MAX_LAYER_NEURONS"]);
    let e = "wrn-100000000000000-1".parse::<ArchSpec>().unwrap_err().to_string();
    assert_contains(&e, &["MAX_BLOCKS_PER_STAGE"]);
    // Within the channel limit, but a random network's conv weights would be 2^36 elements.
    let spec = "wrn-10-16384".parse::<ArchSpec>().unwrap();
    let e = SyntheticModel::new(spec, 10, 0).err().expect("refused").to_string();
    assert_contains(&e, &["block1.layer.0.conv2.weight", "MAX_TENSOR_ELEMENTS"]);
}

/// Before: accepted; every output became NaN.
#[test]
fn checkpoint_non_finite_weights_are_errors() {
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let bytes = with_tensor(wrn_tensors(), "block2.layer.0.conv1.weight", |_, d| d[3 * 9 + 5] = bad);
        let e = checkpoint_err(&bytes);
        assert_contains(&e, &["block2.layer.0.conv1.weight", "element 32", "[0, 3, 1, 2]", shown, "not a finite number"]);
    }
    let bytes = with_tensor(wrn_tensors(), "fc.bias", |_, d| d[9] = f32::NAN);
    assert_contains(&checkpoint_err(&bytes), &["fc.bias", "element 9"]);
}

/// Before: accepted; sqrt of a negative variance is NaN.
#[test]
fn checkpoint_negative_or_nan_running_var_is_an_error() {
    let bytes = with_tensor(wrn_tensors(), "block1.layer.0.bn2.running_var", |_, d| d[4] = -0.5);
    assert_contains(&checkpoint_err(&bytes), &["block1.layer.0.bn2.running_var", "element 4", "-0.5", "negative variance"]);
    let bytes = with_tensor(wrn_tensors(), "bn1.running_var", |_, d| d[0] = f32::NAN);
    assert_contains(&checkpoint_err(&bytes), &["bn1.running_var", "element 0", "NaN"]);
    // A zero variance is fine (eps keeps the scale finite).
    let bytes = with_tensor(wrn_tensors(), "bn1.running_var", |_, d| d[0] = 0.0);
    load_checkpoint(&bytes).unwrap();
}

/// Before: accepted; the folded weight (3e38 / √1e-5) is Inf in f32 on the GPU.
#[test]
fn checkpoint_weights_overflowing_f32_when_folded_are_errors() {
    let mut tensors = wrn_tensors();
    for t in tensors.iter_mut() {
        if t.0 == "block1.layer.0.bn2.running_var" {
            t.2[1] = 0.0;
        }
        if t.0 == "block1.layer.0.conv1.weight" {
            t.2[9 * 16 + 3] = 3e38;
        }
    }
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["block1.layer.0.conv1.weight", "element 147", "block1.layer.0.bn2", "overflows f32"]);
    let mut tensors = wrn_tensors();
    tensors.iter_mut().find(|t| t.0 == "bn1.running_var").unwrap().2[2] = 0.0;
    tensors.iter_mut().find(|t| t.0 == "bn1.weight").unwrap().2[2] = 3e38;
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["BatchNorm `bn1`", "channel 2", "beyond f32"]);
}

/// Before: accepted as a 0-class classifier.
#[test]
fn checkpoint_with_zero_classes_is_an_error() {
    let mut tensors = wrn_tensors();
    for t in tensors.iter_mut().filter(|t| t.0.starts_with("fc.")) {
        t.1[0] = 0;
        t.2.clear();
    }
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["fc.weight", "0 rows", "at least one class"]);
}

/// Before: the `safetensors` crate's message ("incomplete metadata" / "invalid shape, data type,
/// or offset for tensor") named no tensor.
#[test]
fn checkpoint_bad_offsets_and_sizes_name_the_tensor() {
    let data = vec![0u8; 32];
    let past_end = json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "fc.weight": {"dtype": "F32", "shape": [8], "data_offsets": [8, 40]}});
    assert_contains(
        &checkpoint_err(&safetensors_raw(&past_end, &data)),
        &["tensor `fc.weight`", "[8, 40]", "run past the end", "32 data bytes"],
    );
    let wrong_size = json!({"conv1.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}, "b": {"dtype": "F32", "shape": [5], "data_offsets": [12, 32]}});
    assert_contains(
        &checkpoint_err(&safetensors_raw(&wrong_size, &data)),
        &["tensor `conv1.weight`", "F32 shape [2, 2] needs 16 bytes", "hold 12"],
    );
    let gap =
        json!({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [6], "data_offsets": [8, 32]}});
    assert_contains(&checkpoint_err(&safetensors_raw(&gap, &data)), &["tensor `b`", "gap"]);
    let overflow = json!({"a": {"dtype": "F32", "shape": [4294967296u64, 4294967296u64], "data_offsets": [0, 32]}});
    assert_contains(&checkpoint_err(&safetensors_raw(&overflow, &data)), &["tensor `a`", "overflows"]);
    let dtype = json!({"a": {"dtype": "F99", "shape": [8], "data_offsets": [0, 32]}});
    assert_contains(&checkpoint_err(&safetensors_raw(&dtype, &data)), &["tensor `a`", "unknown dtype \"F99\""]);
    let short = json!({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}});
    assert_contains(&checkpoint_err(&safetensors_raw(&short, &data)), &["ends at byte 16", "32 data bytes"]);
}

#[test]
fn checkpoint_header_length_past_the_file_is_an_error() {
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_contains(&checkpoint_err(&bytes), &["header length 18446744073709551615", "more bytes than the 2"]);
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_contains(&checkpoint_err(&bytes), &["header length 1099511627776"]);
    assert_contains(&checkpoint_err(b"abc"), &["3 bytes cannot hold the 8-byte header length"]);
    assert_contains(&checkpoint_err(&safetensors_raw(&json!([1, 2]), &[])), &["not a valid safetensors file"]);
}

#[test]
fn checkpoint_non_float_dtype_names_the_tensor() {
    let data = vec![0u8; 16];
    let ints = json!({"conv1.weight": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}});
    assert_contains(&checkpoint_err(&safetensors_raw(&ints, &data)), &["tensor `conv1.weight`", "I64", "not supported"]);
}

// ---------------------------------------------------------------- profiles

#[test]
fn good_profile_loads_and_merges() {
    let (h, t) = good_profile();
    let p = ProfileData::from_bytes(&profile_raw(&h, &t), Path::new("p")).unwrap();
    let m = ProfileData::merge(&[p.clone(), p], &["a".into(), "b".into()]).unwrap();
    assert_eq!(m.header.samples, 20);
}

/// Before: `BinEdges::log_symmetric(M)` allocated M/2 f64 before any check (an abort).
#[test]
fn profile_with_enormous_m_is_an_error() {
    for m in [usize::MAX - 1, 1 << 40, (1 << 16) + 2] {
        let (mut h, t) = good_profile();
        h["layers"][0]["m"] = json!(m);
        let e = profile_err(&profile_raw(&h, &t));
        assert_contains(&e, &["layer `avgpool`", "MAX_BIN_EDGES"]);
    }
}

/// Before: accepted; such settings are refused on the command line.
#[test]
fn profile_settings_pass_the_command_line_validation() {
    for (field, value, want) in [
        ("o", json!(0.0), "O must be a positive count"),
        ("o", json!(-3.0), "O must be a positive count"),
        ("alpha", json!(0.0), "α must be positive"),
        ("alpha", json!(-1.0), "α must be positive"),
        ("m", json!(51), "even number of bin edges"),
        ("m", json!(2), "even number of bin edges"),
        ("m", json!(0), "even number of bin edges"),
    ] {
        let (mut h, t) = good_profile();
        h["layers"][0][field] = value;
        assert_contains(&profile_err(&profile_raw(&h, &t)), &["layer `avgpool`", want]);
    }
    // JSON has no Inf; a number past f64's range is a parse error naming the header.
    let (h, t) = good_profile();
    let text = h.to_string().replace("\"o\":5.0", "\"o\":1e999");
    assert!(text.contains("1e999"));
    let data: Vec<u8> = t[0].2.iter().flat_map(|v| v.to_le_bytes()).collect();
    let st = json!({"__metadata__": {"nac_profile": text}, "counts.avgpool": {"dtype": "U32", "shape": [49, 4], "data_offsets": [0, data.len()]}});
    let bytes = safetensors_raw(&st, &data);
    assert_contains(&profile_err(&bytes), &["profile header"]);
}

/// Before: an error about tensor counts ("1 tensors for 2 layers") that did not say why.
#[test]
fn profile_with_duplicate_layers_is_an_error() {
    let (mut h, t) = good_profile();
    let layer = h["layers"][0].clone();
    h["layers"].as_array_mut().unwrap().push(layer);
    assert_contains(&profile_err(&profile_raw(&h, &t)), &["layer `avgpool`", "listed twice"]);
}

/// Before: accepted, so coverage was computed from counts that cannot come from `samples`.
#[test]
fn profile_counts_beyond_samples_are_an_error() {
    let (mut h, t) = good_profile();
    h["samples"] = json!(9);
    assert_contains(&profile_err(&profile_raw(&h, &t)), &["layer `avgpool`", "neuron 0", "counted 10 times", "9 samples"]);
    let (h, mut t) = good_profile();
    t[0].2[3 * 4 + 2] = 1;
    assert_contains(&profile_err(&profile_raw(&h, &t)), &["layer `avgpool`", "neuron 2", "counted 11 times"]);
}

/// Before: 0 neurons and 65 layers were accepted; a huge neuron count is refused before use.
#[test]
fn profile_layer_and_neuron_counts_are_limited() {
    let (mut h, _) = good_profile();
    h["layers"][0]["neurons"] = json!(0);
    assert_contains(&profile_err(&profile_raw(&h, &[("counts.avgpool", vec![49, 0], vec![])])), &["layer `avgpool`", "0 neurons"]);
    let (mut h, t) = good_profile();
    h["layers"][0]["neurons"] = json!(1u64 << 40);
    assert_contains(&profile_err(&profile_raw(&h, &t)), &["layer `avgpool`", "MAX_LAYER_NEURONS"]);
    let names: Vec<String> = (0..65).map(|i| format!("l{i}")).collect();
    let layers = names.iter().map(|n| layer_json(n, 1, 5.0, 4, 1.0)).collect();
    let tensors: Vec<(&str, Vec<usize>, Vec<u32>)> = Vec::new();
    let h = header_json(0, layers);
    let counts: Vec<(String, Vec<usize>, Vec<u32>)> = names.iter().map(|n| (format!("counts.{n}"), vec![3, 1], vec![0; 3])).collect();
    let mut all = tensors;
    all.extend(counts.iter().map(|(n, s, c)| (n.as_str(), s.clone(), c.clone())));
    assert_contains(&profile_err(&profile_raw(&h, &all)), &["layers in the profile is 65", "MAX_LAYERS"]);
    assert_contains(&profile_err(&profile_raw(&header_json(0, vec![]), &[])), &["no layers"]);
}

/// Before: `samples += samples` overflowed (wrapped in release, panicked in debug).
#[test]
fn merging_profiles_whose_samples_overflow_is_an_error() {
    let (mut h, t) = good_profile();
    h["samples"] = json!(u64::MAX);
    let p = ProfileData::from_bytes(&profile_raw(&h, &t), Path::new("p")).unwrap();
    let e = ProfileData::merge(&[p.clone(), p], &["a".into(), "b".into()]).unwrap_err().to_string();
    assert_contains(&e, &["cannot merge b into a", "overflow"]);
}

#[test]
fn profile_safetensors_errors_name_the_tensor() {
    let (h, t) = good_profile();
    let mut bytes = profile_raw(&h, &t);
    bytes.truncate(bytes.len() - 4);
    assert_contains(&profile_err(&bytes), &["tensor `counts.avgpool`", "run past the end"]);
    let mut bytes = (1u64 << 50).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_contains(&profile_err(&bytes), &["header length"]);
}

// ---------------------------------------------------------------- fuzz regressions

/// Every minimised crash input of a fuzz target, through that target's entry point: an error,
/// never a panic (a panic fails the test with the file's name).
#[test]
fn fuzz_regressions_are_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    for target in ["npy", "checkpoint", "profile"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| match target {
                "npy" => NpyArray::parse(&file, &bytes).and_then(|a| a.to_f32(&file).and(a.to_labels(&file))).map(|_| ()),
                // What `nac::model::from_bytes` (the fuzz target) does.
                "checkpoint" => TensorStore::from_bytes(&file, &bytes).and_then(|s| nac::model::arch::from_store(&s, None)).map(|_| ()),
                _ => ProfileData::from_bytes(&bytes, &file)
                    .and_then(|p| ProfileData::merge(&[p.clone(), p], &["a".into(), "b".into()]))
                    .map(|_| ()),
            });
            match outcome {
                Ok(Err(_)) => replayed += 1,
                Ok(Ok(())) => panic!("{}: accepted", file.display()),
                Err(_) => panic!("{}: panicked", file.display()),
            }
        }
    }
    eprintln!("{replayed} fuzz regression inputs replayed");
}

/// The fuzzers' seed corpora under `fuzz/seeds/<target>/` are the small valid files written
/// here; `NAC_WRITE_SEEDS=1 cargo test --release --test hostile_files fuzz_seeds` rewrites them.
#[test]
fn fuzz_seeds_are_the_valid_files_written_here() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let rewrite = std::env::var_os("NAC_WRITE_SEEDS").is_some();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let path = root.join(target).join(name);
        if rewrite {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(committed == bytes, "{} is stale: rerun with NAC_WRITE_SEEDS=1", path.display());
        }
    };
    write("npy", "f32_2x3.npy", &NpyArray::from_f32(vec![2, 3], &[1.0, -2.0, 0.5, 3.0, 1e-3, 7.0]).to_bytes());
    write("npy", "f32_1x3x2x2.npy", &NpyArray::from_f32(vec![1, 3, 2, 2], &[0.25; 12]).to_bytes());
    write("npy", "labels_i64.npy", &NpyArray::from_labels(&[0, 3, 9, 1]).to_bytes());
    write("npy", "u8_scalar.npy", &npy_v1(b"{'descr': '|u1', 'fortran_order': False, 'shape': (), }", &[7]));
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let h = b"{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }                                                   \n";
    v2.extend_from_slice(&(h.len() as u32).to_le_bytes());
    v2.extend_from_slice(h);
    v2.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
    write("npy", "i32_v2.npy", &v2);
    write("checkpoint", "wrn-10-1_f16.safetensors", &serialize_tensors(&wrn_tensors(), StorageDtype::F16, None).unwrap());
    // The start of a ResNet: detection reads the stem and counts blocks, then the build fails.
    let stem = vec![
        ("conv1.weight".to_string(), vec![64, 3, 3, 3], vec![0.1; 64 * 27]),
        ("layer1.0.conv1.weight".to_string(), vec![1, 1, 1, 1], vec![0.1]),
        ("fc.weight".to_string(), vec![2, 1], vec![0.1, 0.2]),
    ];
    write("checkpoint", "resnet_stem_bf16.safetensors", &serialize_tensors(&stem, StorageDtype::BF16, None).unwrap());
    let (h, t) = good_profile();
    write("profile", "ue_one_layer.nacprofile", &profile_raw(&h, &t));
    let uniform = BinEdges::uniform(5).unwrap().edges;
    let mut h = header_json(3, vec![layer_json("block3", 2, 1.0, 4, 10.0)]);
    h["layers"].as_array_mut().unwrap().push(json!({"name": "avgpool", "neurons": 3, "o": 2.0, "m": 5, "alpha": 1.0, "edges": uniform}));
    h["binning"] = json!("uniform");
    h["counted"] = json!("correct");
    h["layers"][0]["edges"] = json!(BinEdges::uniform(4).unwrap().edges);
    let t = vec![
        ("counts.block3", vec![3, 2], vec![1, 0, 2, 3, 0, 0]),
        ("counts.avgpool", vec![4, 3], vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]),
    ];
    ProfileData::from_bytes(&profile_raw(&h, &t), Path::new("seed")).unwrap();
    write("profile", "me_two_layers.nacprofile", &profile_raw(&h, &t));
}

/// A torchvision Vision Transformer whose tensors contradict each other, or whose head count
/// cannot be read, is refused with the tensor (or metadata key) named.
#[test]
fn vit_checkpoint_errors_name_the_tensor() {
    let spec = nac::model::arch::VitSpec { image: 8, patch: 4, depth: 2, width: 8, heads: 2, mlp: 12 };
    let tensors = SyntheticModel::new(ArchSpec::VisionTransformer(spec), 3, 4).unwrap().tensors;
    let heads = |h: &str| Some([("num_heads".to_string(), h.to_string())].into_iter().collect());
    let edited = |name: &str, f: &dyn Fn(&mut Vec<usize>, &mut Vec<f32>)| {
        let mut t = tensors.clone();
        let x = t.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no tensor {name}"));
        f(&mut x.1, &mut x.2);
        serialize_tensors(&t, StorageDtype::F32, heads("2")).unwrap()
    };
    let good = serialize_tensors(&tensors, StorageDtype::F32, heads("2")).unwrap();
    assert_eq!(load_checkpoint(&good).unwrap().spec, ArchSpec::VisionTransformer(spec));

    let e = checkpoint_err(&edited("encoder.pos_embedding", &|s, v| {
        s[1] = 6;
        v.resize(6 * 8, 0.0);
    }));
    assert_contains(&e, &["tensor `encoder.pos_embedding`", "6 tokens", "n² + 1"]);
    let e = checkpoint_err(&edited("conv_proj.weight", &|s, v| {
        s[3] = 3;
        v.truncate(8 * 3 * 4 * 3);
    }));
    assert_contains(&e, &["tensor `conv_proj.weight`", "[width, 3, patch, patch]", "[8, 3, 4, 3]"]);
    let e = checkpoint_err(&edited("encoder.layers.encoder_layer_1.self_attention.in_proj_weight", &|s, v| {
        s[0] = 23;
        v.truncate(23 * 8);
    }));
    assert_contains(&e, &["tensor `encoder.layers.encoder_layer_1.self_attention.in_proj_weight`", "expected shape [24, 8]"]);
    let e = checkpoint_err(&edited("encoder.layers.encoder_layer_0.ln_2.weight", &|_, v| v[3] = f32::NAN));
    assert_contains(&e, &["tensor `encoder.layers.encoder_layer_0.ln_2.weight`", "element 3", "not a finite number"]);
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, heads("two")).unwrap());
    assert_contains(&e, &["metadata `num_heads` is `two`", "positive number"]);
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, heads("3")).unwrap());
    assert_contains(&e, &["3 attention heads do not divide the width 8"]);
    let mut extra = tensors.clone();
    extra.push(("heads.pre_logits.weight".into(), vec![8, 8], vec![0.0; 64]));
    let e = checkpoint_err(&serialize_tensors(&extra, StorageDtype::F32, heads("2")).unwrap());
    assert_contains(&e, &["unexpected tensor `heads.pre_logits.weight`"]);
}

/// Checkpoints from torchvision before 0.13 name the MLP `mlp.linear_1` / `mlp.linear_2`: they
/// load as the same network as the current `mlp.0` / `mlp.3` naming.
#[test]
fn vit_old_mlp_names_load_alike() {
    let spec = nac::model::arch::VitSpec { image: 8, patch: 4, depth: 2, width: 8, heads: 2, mlp: 12 };
    let synthetic = SyntheticModel::new(ArchSpec::VisionTransformer(spec), 3, 5).unwrap();
    let heads = || Some([("num_heads".to_string(), "2".to_string())].into_iter().collect());
    let renamed: Vec<_> = synthetic
        .tensors
        .iter()
        .map(|(n, s, v)| (n.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."), s.clone(), v.clone()))
        .collect();
    assert!(renamed.iter().any(|t| t.0.contains("mlp.linear_2.weight")));
    let old = load_checkpoint(&serialize_tensors(&renamed, StorageDtype::F32, heads()).unwrap()).unwrap();
    let new = load_checkpoint(&serialize_tensors(&synthetic.tensors, StorageDtype::F32, heads()).unwrap()).unwrap();
    let params = |net: &nac::model::Network| {
        let mut all = Vec::new();
        net.for_each_param(&mut |_, v| all.extend_from_slice(v));
        all
    };
    assert_eq!(params(&old), params(&new));
    let Body::VisionTransformer { blocks, .. } = &old.body else { panic!("not a ViT") };
    assert_eq!(blocks[1].mlp_names[1], "encoder.layers.encoder_layer_1.mlp.linear_2");
}

/// A DMWideResNet-10-1 (Swish) in RobustBench's naming with its `activation` metadata, after
/// `edit`; the load error.
fn dm_err(edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> String {
    use nac::model::arch::Activation;
    let mut tensors =
        SyntheticModel::new(ArchSpec::DmWideResNet { depth: 10, width: 1, activation: Activation::Swish }, 10, 7).unwrap().tensors;
    edit(&mut tensors);
    let metadata = Some([("activation".to_string(), "swish".to_string())].into());
    checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, metadata).unwrap())
}

/// Every missing, misshapen or extra tensor of a DMWideResNet is named, as is a file without
/// its activation.
#[test]
fn dm_wide_resnet_culprit_tensors_are_named() {
    let remove = |name: &'static str| move |t: &mut Vec<(String, Vec<usize>, Vec<f32>)>| t.retain(|x| x.0 != name);
    let reshape = |name: &'static str, shape: Vec<usize>| {
        move |t: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
            let x = t.iter_mut().find(|x| x.0 == name).unwrap();
            x.2.resize(shape.iter().product(), 0.5);
            x.1 = shape;
        }
    };
    assert_contains(
        &dm_err(remove("layer.1.block.0.shortcut.weight")),
        &["missing tensor `layer.1.block.0.shortcut.weight`", "[32, 16, 1, 1]"],
    );
    assert_contains(&dm_err(remove("logits.bias")), &["missing tensor `logits.bias`"]);
    assert_contains(&dm_err(remove("batchnorm.running_var")), &["missing tensor `batchnorm.running_var`"]);
    assert_contains(&dm_err(remove("layer.0.block.0.conv_0.weight")), &["DMWideResNet", "missing tensor `layer.0.block.0.conv_0.weight`"]);
    assert_contains(
        &dm_err(reshape("layer.2.block.0.batchnorm_1.running_var", vec![63])),
        &["tensor `layer.2.block.0.batchnorm_1.running_var`", "expected shape [64], found [63]"],
    );
    assert_contains(
        &dm_err(reshape("layer.0.block.0.conv_0.weight", vec![17, 16, 3, 3])),
        &["tensor `layer.0.block.0.conv_0.weight`", "[17, 16, 3, 3]"],
    );
    assert_contains(
        &dm_err(reshape("init_conv.weight", vec![16, 1, 3, 3])),
        &["tensor `init_conv.weight`", "expected shape [16, 3, 3, 3]"],
    );
    assert_contains(
        &dm_err(|t| t.push(("layer.0.block.0.conv_2.weight".into(), vec![1], vec![0.0]))),
        &["unexpected tensor `layer.0.block.0.conv_2.weight`", "dm-wrn-10-1-swish"],
    );
    let tensors = SyntheticModel::new("dm-wrn-10-1-relu".parse().unwrap(), 10, 7).unwrap().tensors;
    let e = checkpoint_err(&serialize_tensors(&tensors, StorageDtype::F32, None).unwrap());
    assert_contains(&e, &["activation is not in the tensors", "--arch dm-wrn-swish", "`activation`"]);
}
