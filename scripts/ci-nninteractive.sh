#!/usr/bin/env bash
# The nnInteractive v2 remote protocol of `segvol serve` against the real
# client (nninteractive-client, pinned, with its dependencies from PyPI):
#  1. the Blosc2/NNIA codec against python-blosc2 and the client's own
#     pack_array/unpack_array, both directions;
#  2. nnInteractiveRemoteInferenceSession driving `segvol serve` (tiny
#     synthetic weights), every mask compared with `segvol segment`.
# Skips loudly only when pip cannot install the client.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/nnia-ci-venv
if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q "nninteractive-client==2.6.0"; }; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! SKIPPED: the nnInteractive protocol tests: pip could not install"
    echo "!!! nninteractive-client==2.6.0"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    exit 0
fi
py="$venv/bin/python"
work="$PWD/target/nnia-ci"
rm -rf "$work"
mkdir -p "$work"

cargo build --release --bin segvol
echo "-- Blosc2/NNIA codec vs python-blosc2 and the client's serialization"
"$py" scripts/nninteractive/blosc2_vectors.py gen "$work/vectors"
NNIA_CROSSCHECK_DIR="$work/vectors" cargo test --release --bin segvol \
    serve::nninteractive::crosscheck -- --nocapture
"$py" scripts/nninteractive/blosc2_vectors.py check "$work/vectors"
rm -rf "$work/vectors"

echo "-- nnInteractiveRemoteInferenceSession against segvol serve"
target/release/segvol synth-weights --config tiny -o "$work/tiny.safetensors"
"$py" scripts/nninteractive/test_remote.py "$PWD/target/release/segvol" "$work/tiny.safetensors" "$work"
