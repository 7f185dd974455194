#!/usr/bin/env bash
# The full real benchmark in one go, for a GPU machine where nothing compiles: the three shipped
# models on the full Fashion-MNIST / MNIST sets (eval/fmnist.toml), `nac bench` of their
# architectures and the demo's wall time.
#
#   here:  cargo build --release --bin nac && mkdir -p .gpu && cp target/release/nac .gpu/
#          tools/fetch_data.sh                  # data/ (32 MB) travels with the binary
#   there: tools/gpu_benchmark.sh .gpu/nac OUT_DIR [CONFIG]
#
# Writes six files (remote runners often return only a handful): OUT_DIR/log.txt (everything
# printed), info.txt (`nac info`), bench-resnet18_32x32.json, bench-wrn-16-2.json,
# bench-vit-i32-p4-d4-w64-h4-m128.json and
# results.tar.gz (one eval folder per model and the demo's: results.{json,csv,md}, pictures/).
# Refuses a CPU adapter (the numbers would be lavapipe's) unless ALLOW_CPU=1, for a dry run of
# the script with a small CONFIG and BENCH_BATCH / BENCH_REPEATS (default 256 / 5).
set -euo pipefail
usage="usage: tools/gpu_benchmark.sh NAC_BINARY OUT_DIR [CONFIG]"
nac=$(realpath "${1:?$usage}")
mkdir -p "${2:?$usage}"
out=$(realpath "$2")
config=$(realpath "${3:-$(dirname "$0")/../eval/fmnist.toml}")
# The configs and the shipped weights name paths relative to the checkout.
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export NODEVICE_SELECT=1

exec > >(tee "$out/log.txt") 2>&1
echo "gpu_benchmark: $(date -u +%FT%TZ) on $(hostname); config $config"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

"$nac" info | tee "$out/info.txt"
# `nac info` marks the adapter in use with `*`; its block names the device type.
chosen=$(awk '/^\* /{on=1} on&&/^$/{exit} on' "$out/info.txt")
if grep -qi "type: *cpu" <<<"$chosen" && [ "${ALLOW_CPU:-0}" != 1 ]; then
    echo "gpu_benchmark: the adapter in use is a CPU rasteriser; set NAC_ADAPTER or ALLOW_CPU=1" >&2
    exit 1
fi

step() {
    local name=$1
    shift
    local started=$SECONDS
    echo "== $name: $*"
    "$@"
    echo "== $name: $((SECONDS - started)) s"
}

step selfcheck "$nac" selfcheck --batch 8
for model in weights/fmnist_resnet18_32x32.safetensors weights/fmnist_wrn-16-2.safetensors weights/fmnist_vit-p4-d4-w64.safetensors; do
    name=$(basename "$model" .safetensors)
    step "eval $name" "$nac" eval "$config" --model "$model" --out "$work/$name"
done
step demo "$nac" demo --out "$work/demo"
for arch in resnet18_32x32 wrn-16-2 vit-i32-p4-d4-w64-h4-m128; do
    step "bench $arch" "$nac" bench --arch "$arch" --batch "${BENCH_BATCH:-256}" --repeats "${BENCH_REPEATS:-5}" --peak \
        --out "$out/bench-$arch.json"
done
tar -czf "$out/results.tar.gz" -C "$work" .
echo "gpu_benchmark: done; $(du -h "$out/results.tar.gz" | cut -f1) of results"
