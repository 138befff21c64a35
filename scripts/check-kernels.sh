#!/usr/bin/env bash
# Compile-checks the CUDA kernels without a GPU, with a pinned CUDA 13.0
# toolchain from PyPI (cached in a venv):
#   1. nvcc -ptx for sm_90 and for the default compute_80, ptxas -v for sm_90
#      and sm_80: registers / stack / spills per kernel; fails on any error
#      and on local-memory spills in the attention and GEMM-path kernels;
#   2. builds the crate with that nvcc (NVCC=..., SEGVOL_CUDA_ARCH=sm_90,
#      SEGVOL_NVCC_STRICT=1) and checks that build.rs embedded the PTX;
#   3. compiles every embedded kernel source with NVRTC 13.0 (no GPU needed);
#   4. runs scripts/attn_mma_sim.py (lane-level simulation of the tensor-core
#      attention kernel) when numpy is importable.
# Pins: all five toolchain wheels at 13.0.x; a newer nvcc (13.5) emits PTX
# that the 13.0 driver of the GPU machines rejects.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${SEGVOL_NVCC_VENV:-$HOME/.cache/segvol-nvcc}"
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
NVRTC_WHEEL=nvidia-cuda-nvrtc==13.0.88
PY="${PYTHON:-python3}"

fail=0
note() { printf '%s\n' "$*"; }

# ---- toolchain ---------------------------------------------------------------
find_tool() { { find "$VENV" -path "*/nvidia/cu13/bin/$1" -type f 2>/dev/null || true; } | head -n1; }
NVCC_BIN="$(find_tool nvcc)"
if [[ -z "$NVCC_BIN" || ! -x "$NVCC_BIN" ]] || ! "$NVCC_BIN" --version 2>/dev/null | grep -q "release 13.0"; then
    note "== installing the pinned CUDA 13.0 toolchain into $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${WHEELS[@]}" "$NVRTC_WHEEL"
    NVCC_BIN="$(find_tool nvcc)"
fi
if ! "$VENV/bin/pip" show -q nvidia-cuda-nvrtc >/dev/null 2>&1; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "$NVRTC_WHEEL"
fi
PTXAS_BIN="$(find_tool ptxas)"
CU_ROOT="$(dirname "$(dirname "$NVCC_BIN")")"
NVRTC_LIB="$CU_ROOT/lib"
[[ -x "$NVCC_BIN" && -x "$PTXAS_BIN" ]] || { note "FAIL: nvcc/ptxas not found under $VENV"; exit 1; }
note "nvcc:  $NVCC_BIN ($("$NVCC_BIN" --version | grep -o 'release [0-9.]*'))"
note "ptxas: $PTXAS_BIN"

# ---- 1. nvcc + ptxas per kernel file ----------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Kernels whose spills would cost real time: attention and the GEMM path.
strict_re='^(attn_|epilogue_|im2col_|convt_scatter_)'
table="$WORK/table"
: >"$table"
for src in kernels/*.cu; do
    stem="$(basename "$src" .cu)"
    for arch in sm_90 compute_80; do
        if ! "$NVCC_BIN" -ptx "-arch=$arch" -O3 -std=c++17 -I kernels "$src" \
                -o "$WORK/$stem.$arch.ptx" 2>"$WORK/$stem.$arch.nvcc.log"; then
            note "FAIL: nvcc -arch=$arch $src"; cat "$WORK/$stem.$arch.nvcc.log"; fail=1; continue
        fi
        if grep -q "warning" "$WORK/$stem.$arch.nvcc.log"; then
            note "WARN: nvcc -arch=$arch $src:"; cat "$WORK/$stem.$arch.nvcc.log"
        fi
    done
    for pair in "sm_90:sm_90" "sm_80:compute_80"; do
        sm="${pair%%:*}"; ptx="$WORK/$stem.${pair##*:}.ptx"
        [[ -f "$ptx" ]] || continue
        if ! "$PTXAS_BIN" "-arch=$sm" -v "$ptx" -o /dev/null 2>"$WORK/$stem.$sm.ptxas.log"; then
            note "FAIL: ptxas -arch=$sm on $stem"; cat "$WORK/$stem.$sm.ptxas.log"; fail=1; continue
        fi
        awk -v sm="$sm" '
            /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); fn = substr($0, RSTART+1, RLENGTH-2) }
            /bytes stack frame/ { stack = $1; spst = $5; spld = $9 }
            /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART+5, RLENGTH-15)
                                      smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH-11)
                                      print sm, fn, regs, smem, stack, spst, spld }
        ' "$WORK/$stem.$sm.ptxas.log" >>"$table"
    done
done
note ""
note "== ptxas resources (per kernel)"
printf '%-6s %-24s %5s %7s %6s %12s\n' arch kernel regs smem_B stack spill_st/ld
sort -k1,1 -k2,2 "$table" | awk '{ printf "%-6s %-24s %5d %7d %6d %7d/%-4d\n", $1, $2, $3, $4, $5, $6, $7 }'
while read -r sm fn regs smem stack st ld; do
    if [[ "$st" != 0 || "$ld" != 0 || "$stack" != 0 ]]; then
        if [[ "$fn" =~ $strict_re ]]; then
            note "FAIL: $fn uses local memory on $sm (stack $stack B, spills $st/$ld B)"; fail=1
        else
            note "WARN: $fn uses local memory on $sm (stack $stack B, spills $st/$ld B)"
        fi
    fi
done <"$table"
nk="$(awk '$1=="sm_90"' "$table" | wc -l)"
note "kernels checked: $nk per architecture"

# ---- 2. crate build with this nvcc --------------------------------------------------
note ""
note "== cargo build with NVCC=$NVCC_BIN, SEGVOL_CUDA_ARCH=sm_90"
# The release profile and the default target dir, so that after
# `cargo test --release` only this crate rebuilds (CI has 2 cores).
TDIR="${SEGVOL_CHECK_TARGET_DIR:-target}"
if NVCC="$NVCC_BIN" SEGVOL_CUDA_ARCH=sm_90 SEGVOL_NVCC_STRICT=1 \
        cargo build --release --lib --quiet --target-dir "$TDIR" 2>"$WORK/cargo.log"; then
    gen="$(ls -t "$TDIR"/release/build/segvol-*/out/kernels.rs 2>/dev/null | head -n1)"
    if [[ -n "$gen" ]] && grep -q 'PTX_ARCH: Option<&str> = Some("sm_90")' "$gen" && grep -q 'CUBIN_ARCH: Option<&str> = Some("sm_90")' "$gen"; then
        note "ok: build.rs embedded nvcc PTX and cubins for sm_90 ($gen)"
    else
        note "FAIL: the build did not embed sm_90 PTX and cubins (${gen:-no kernels.rs found})"; fail=1
    fi
else
    note "FAIL: cargo build with nvcc"; cat "$WORK/cargo.log"; fail=1
fi

# ---- 3. NVRTC -----------------------------------------------------------------------
note ""
note "== NVRTC 13.0 compile of the embedded sources (no GPU needed)"
if LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        cargo test --release --quiet --target-dir "$TDIR" --test backend_ops nvrtc_compiles_every_kernel -- --nocapture \
        >"$WORK/nvrtc.log" 2>&1; then
    grep -E "NVRTC compute|SKIP" "$WORK/nvrtc.log" || true
    if grep -q SKIP "$WORK/nvrtc.log"; then note "FAIL: libnvrtc was not found"; fail=1; fi
else
    note "FAIL: NVRTC compile"; tail -n 40 "$WORK/nvrtc.log"; fail=1
fi

# ---- 4. tensor-core attention simulation ----------------------------------------------
note ""
SIMPY=""
# numpy for the simulation: best effort, the other checks do not need it.
"$VENV/bin/python" -c "import numpy" 2>/dev/null ||
    "$VENV/bin/pip" install -q --disable-pip-version-check numpy >/dev/null 2>&1 || true
for p in "$VENV/bin/python" "$PY"; do
    if "$p" -c "import numpy" 2>/dev/null; then SIMPY="$p"; break; fi
done
if [[ -n "$SIMPY" ]]; then
    note "== lane-level simulation of attn_mma (scripts/attn_mma_sim.py)"
    "$SIMPY" scripts/attn_mma_sim.py "$RANDOM" || { note "FAIL: attention simulation"; fail=1; }
else
    note "skipped: scripts/attn_mma_sim.py (numpy not importable)"
fi

note ""
if [[ "$fail" == 0 ]]; then note "check-kernels: OK"; else note "check-kernels: FAILED"; fi
exit "$fail"
