#!/usr/bin/env bash
# `nac bench` and tools/torch_bench.py on the same machine in one invocation, one JSON out.
#
#   tools/bench_side_by_side.sh NAC_BINARY OUT.json [ARCH] [BATCH_NAC] [BATCH_TORCH]
#
# ARCH: resnet18_32x32 (default), wrn-D-W (e.g. wrn-16-2) or vit-iI-pP-dD-wW-hH-mM (SIZE = I). BATCH_NAC defaults to 16 (a CPU
# adapter such as lavapipe is slow), BATCH_TORCH to 64. Environment: REPEATS (3), SIZE (32),
# THREADS (torch threads, default all CPUs), DEVICE (torch device, cpu), PEAK (1: pass --peak to
# nac bench), PYTHON (python3), NAC_ADAPTER / NAC_BACKEND (passed through to nac).
#
# nac runs first, then torch, same arch and size. The ratios are nac / torch in images per second
# (> 1: nac is faster), so the two batch sizes may differ:
#   forward                       nac forward_images_per_s / torch forward
#   nac_pass_vs_official_nac      nac nac_pass_images_per_s / torch official_nac
#   nac_pass_vs_single_backward   ... / torch single_backward_nac
#   nac_pass_vs_pairs_only        ... / torch pairs_only (the like-for-like work: forward,
#                                 one backward to the NAC layers, pooled pairs, predictions;
#                                 nac bench's nac_pass builds no histogram)
set -euo pipefail
usage="usage: tools/bench_side_by_side.sh NAC_BINARY OUT.json [ARCH] [BATCH_NAC] [BATCH_TORCH]"
nac=$(realpath "${1:?$usage}")
out=${2:?$usage}
arch=${3:-resnet18_32x32}
batch_nac=${4:-16}
batch_torch=${5:-64}
repeats=${REPEATS:-3}
size=${SIZE:-32}
threads=${THREADS:-$(nproc)}
device=${DEVICE:-cpu}
python=${PYTHON:-python3}
tools=$(cd "$(dirname "$0")" && pwd)
export NODEVICE_SELECT=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
peak=()
[ "${PEAK:-1}" = 1 ] && peak=(--peak)

started=$(date -u +%FT%TZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== nac bench: $arch batch $batch_nac size $size repeats $repeats" >&2
t0=$SECONDS
"$nac" bench --arch "$arch" --batch "$batch_nac" --size "$size" --repeats "$repeats" "${peak[@]}" \
    --out "$work/nac.json" >"$work/nac.stdout"
nac_wall=$((SECONDS - t0))
echo "== nac bench: $nac_wall s" >&2
load_between=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== torch_bench: $arch batch $batch_torch size $size repeats $repeats threads $threads device $device" >&2
t0=$SECONDS
"$python" "$tools/torch_bench.py" --arch "$arch" --batch "$batch_torch" --size "$size" --repeats "$repeats" \
    --threads "$threads" --device "$device" --out "$work/torch.json" >"$work/torch.stdout"
torch_wall=$((SECONDS - t0))
echo "== torch_bench: $torch_wall s" >&2
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$out")"
"$python" - "$work/nac.json" "$work/torch.json" "$out" <<EOF
import json, os, socket, sys
nac = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
t = torch["timings"]
def ratio(a, name):
    return a / t[name]["images_per_s"] if name in t else None
report = {
    "format": "nac-torch-side-by-side",
    "version": 1,
    "started": "$started",
    "host": socket.gethostname(),
    "cpu_count": os.cpu_count(),
    "load_average_1_5_15": {"before": "$load_before", "between": "$load_between", "after": "$load_after"},
    "wall_s": {"nac": $nac_wall, "torch": $torch_wall},
    "nac_binary": "$nac",
    "arch": "$arch",
    "size": $size,
    "repeats": $repeats,
    "batch": {"nac": $batch_nac, "torch": $batch_torch},
    "ratio_definition": "nac images/s divided by torch images/s (> 1: nac faster)",
    "ratios": {
        "forward": ratio(nac["forward_images_per_s"], "forward"),
        "nac_pass_vs_official_nac": ratio(nac["nac_pass_images_per_s"], "official_nac"),
        "nac_pass_vs_single_backward_nac": ratio(nac["nac_pass_images_per_s"], "single_backward_nac"),
        "nac_pass_vs_pairs_only": ratio(nac["nac_pass_images_per_s"], "pairs_only"),
    },
    "images_per_s": {
        "nac_forward": nac["forward_images_per_s"],
        "nac_pass": nac["nac_pass_images_per_s"],
        **{f"torch_{k}": v["images_per_s"] for k, v in t.items()},
    },
    "nac": nac,
    "torch": torch,
}
open(sys.argv[3], "w").write(json.dumps(report, indent=2) + "\n")
print(json.dumps({k: report[k] for k in ("arch", "batch", "ratios", "images_per_s")}, indent=2))
EOF
echo "== wrote $out" >&2
