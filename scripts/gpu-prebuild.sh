#!/usr/bin/env bash
# Builds, on this (CPU) machine, the binaries scripts/gpu-check.sh runs on a
# GPU machine that has no Rust toolchain: the GPU test binaries
# (tests/backend_ops/, tests/cuda*.rs, tests/gpu*.rs) and the segvol CLI, release profile, with
# the kernels compiled to sm_90 PTX by the pinned CUDA 13.0 nvcc that
# scripts/check-kernels.sh installs (a newer nvcc's PTX would be rejected by
# the GPU machine's 13.0 driver). Output: .gpu-bin/ (git-ignored), stripped,
# to be copied to the GPU machine with the working tree, where
# `bash scripts/gpu-check.sh` finds it.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${SEGVOL_NVCC_VENV:-$HOME/.cache/segvol-nvcc}"
# (find fails on a missing venv; under pipefail that must not end the script)
NVCC_BIN="$({ find "$VENV" -path '*/nvidia/cu13/bin/nvcc' -type f 2>/dev/null || true; } | head -n1)"
if [[ -z "$NVCC_BIN" ]]; then
    echo "no pinned nvcc under $VENV; running scripts/check-kernels.sh to install it"
    scripts/check-kernels.sh >/dev/null || true
    NVCC_BIN="$({ find "$VENV" -path '*/nvidia/cu13/bin/nvcc' -type f || true; } | head -n1)"
    [[ -n "$NVCC_BIN" ]] || { echo "the pinned nvcc did not install under $VENV"; exit 1; }
fi
export NVCC="$NVCC_BIN" SEGVOL_CUDA_ARCH="${SEGVOL_CUDA_ARCH:-sm_90}" SEGVOL_NVCC_STRICT=1

tests=()
for f in tests/backend_ops tests/cuda*.rs tests/gpu*.rs; do
    [[ -e "$f" ]] && tests+=(--test "$(basename "$f" .rs)")
done
cargo build --release --bin segvol
json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --release "${tests[@]}" --no-run --message-format=json >"$json"
bjson="$(mktemp)"
trap 'rm -f "$json" "$bjson"' EXIT
cargo bench --bench cuda_ops --no-run --message-format=json >"$bjson"

rm -rf .gpu-bin
mkdir -p .gpu-bin
grep -o '"executable":"[^"]*/deps/\(backend_ops\|cuda\|gpu\)[^"/]*"' "$json" | sed 's/"executable":"\(.*\)"/\1/' | sort -u |
while read -r exe; do
    base="$(basename "$exe")"
    cp "$exe" ".gpu-bin/test-${base%-*}"
done
cp target/release/segvol .gpu-bin/segvol
exe="$(grep -o '"executable":"[^"]*/deps/cuda_ops[^"/]*"' "$bjson" | sed 's/"executable":"\(.*\)"/\1/' | head -n1)"
cp "$exe" .gpu-bin/bench-cuda_ops
# The fixtures the GPU tests read (tests find them through SEGVOL_SHARED;
# ../shared does not travel to the device machine; lung1 is for the
# benchmarks). About 35 MB.
if [[ -d ../shared/fixtures ]]; then
    for f in default_realct/outputs.safetensors preprocess/example_ct_sm.safetensors \
             data/example_ct_sm.nii.gz data/lung1_image.nii.gz; do
        mkdir -p ".gpu-bin/shared/fixtures/$(dirname "$f")"
        cp "../shared/fixtures/$f" ".gpu-bin/shared/fixtures/$f"
    done
fi
strip -s .gpu-bin/segvol .gpu-bin/test-* .gpu-bin/bench-* 2>/dev/null || true
# The embedded PTX and kernel sources compress well: gzip keeps the bundle
# (with the fixtures) small enough to copy over (about 50 MB).
gzip -f .gpu-bin/segvol .gpu-bin/test-* .gpu-bin/bench-*
gen="$(ls -t target/release/build/segvol-*/out/kernels.rs | head -n1)"
{
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
    echo "nvcc $("$NVCC" --version | grep -o 'release [0-9.]*'), $(grep -hE "(PTX|CUBIN)_ARCH:" "$gen" | tr "\n" " ")"
    echo "glibc $(ldd --version | head -n1 | grep -o '[0-9.]*$')"
} >.gpu-bin/BUILD_INFO
cat .gpu-bin/BUILD_INFO
ls -la .gpu-bin
du -sh .gpu-bin
