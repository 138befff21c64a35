#!/usr/bin/env bash
# `segvol serve` driven by 3D Slicer's MONAI Label client code: pins
# monailabel 0.8.5 (installed --no-deps: only monailabel.client is used, which
# needs requests) in a venv and runs tests/serve/monai_client.py against the
# release binary with tiny synthetic weights. Skips loudly when pip cannot
# install the client; once installed, every check must pass.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$PWD/target/release/segvol"
work="$PWD/target/ci-serve"
venv="$PWD/target/ci-serve-venv"
cargo build --release --bin segvol
mkdir -p "$work"

if ! { python3 -m venv "$venv" \
    && "$venv/bin/pip" install -q --no-deps "monailabel==0.8.5" \
    && "$venv/bin/pip" install -q "requests==2.32.3"; }; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! SKIPPED: the MONAI Label client test of segvol serve: pip could not"
    echo "!!! install monailabel==0.8.5 (--no-deps) and requests==2.32.3"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    exit 0
fi

# pip reports monailabel's server dependencies as missing: expected, only the client is used.
"$bin" synth-weights --config tiny -o "$work/tiny.safetensors"
# -W ignore: the client imports `cgi`, deprecated since Python 3.11.
"$venv/bin/python" -W ignore "$PWD/tests/serve/monai_client.py" "$bin" "$work/tiny.safetensors" "$work"
