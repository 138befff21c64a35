#!/usr/bin/env bash
# The one script a GPU session runs (budget: under 6 minutes). It only reads
# the GPU's state (nvidia-smi queries); it never changes clocks, modes or
# limits.
#
#   1. environment: GPU, driver, nvcc, cargo; CUDA library path;
#   2. build: with cargo (the machine's nvcc, SEGVOL_CUDA_ARCH=sm_90), or,
#      where the machine has no Rust, the binaries scripts/gpu-prebuild.sh
#      left in .gpu-bin/ (carry it: run(..., carry=[".gpu-bin"]));
#   3. tests: cuda_backend (every op against the CPU backend, f32 and bf16)
#      and any other tests/*cuda*.rs / *gpu*.rs;
#   4. benchmarks: `segvol bench --device cuda` when the binary has it;
#   5. a summary table, last.
# Logs go to $OUT (the device tool's output folder) or ./gpu-check-out.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET_S:-330}))
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
row() { printf '%-22s %-8s %6ss  %s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"; }
left() { local l=$((DEADLINE - SECONDS)); ((l < 10)) && l=10; echo "$l"; }
say() { printf '\n== %s\n' "$*"; }

# ---- 1. environment ------------------------------------------------------------------
say "environment"
t0=$SECONDS
gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null | head -n1)"
echo "GPU: ${gpu:-nvidia-smi not available}"
NVCC_BIN="${NVCC:-$(command -v nvcc || true)}"
for c in "${CUDA_HOME:-}" /usr/local/cuda; do
    [[ -z "$NVCC_BIN" && -n "$c" && -x "$c/bin/nvcc" ]] && NVCC_BIN="$c/bin/nvcc"
done
nvcc_ver="$([[ -n "$NVCC_BIN" ]] && "$NVCC_BIN" --version | grep -o 'release [0-9.]*' || echo missing)"
echo "nvcc: ${NVCC_BIN:-missing} ($nvcc_ver)"
if command -v cargo >/dev/null 2>&1; then
    HAVE_CARGO=1; echo "cargo: $(cargo --version)"
else
    HAVE_CARGO=0; echo "cargo: MISSING - this machine has no Rust toolchain; using prebuilt binaries from .gpu-bin/ (scripts/gpu-prebuild.sh)"
fi
# libcuda comes with the driver; cuBLAS/cuBLASLt/NVRTC from the toolkit or
# from the Python wheels (nvidia-cublas, nvidia-cuda-nvrtc).
libdirs=()
cuda_root="$([[ -n "$NVCC_BIN" ]] && dirname "$(dirname "$NVCC_BIN")")"
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib "$cuda_root/lib64" \
         "$cuda_root/targets/x86_64-linux/lib" /usr/local/cuda/lib64; do
    [[ -d "$d" ]] && libdirs+=("$d")
done
for lib in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13; do
    found=0
    for d in "${libdirs[@]}"; do [[ -e "$d/$lib" ]] && found=1; done
    if ((found == 0)); then
        hit="$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -n1)"
        [[ -n "$hit" ]] && libdirs+=("$(dirname "$hit")")
    fi
done
LD_LIBRARY_PATH="$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
row "environment" "info" $((SECONDS - t0)) "${gpu:-no nvidia-smi}; nvcc $nvcc_ver; cargo $([[ $HAVE_CARGO == 1 ]] && echo yes || echo MISSING)"

# ---- 2. build -------------------------------------------------------------------------
say "build"
t0=$SECONDS
TEST_BINS=()
SEGVOL_BIN=""
# The GPU tests: tests/cuda*.rs and tests/gpu*.rs.
GPU_TESTS=()
for f in tests/cuda*.rs tests/gpu*.rs; do
    [[ -f "$f" ]] && GPU_TESTS+=(--test "$(basename "$f" .rs)")
done
build_status="FAIL"
if ((HAVE_CARGO)); then
    export SEGVOL_CUDA_ARCH=sm_90
    [[ -n "$NVCC_BIN" ]] && export NVCC="$NVCC_BIN"
    offline=()
    [[ "${SEGVOL_CARGO_ONLINE:-0}" == 1 ]] || offline=(--offline)
    if timeout "$(left)" cargo build --release "${offline[@]}" --bin segvol 2>&1 | tee "$OUT/build.log" | tail -n 5 &&
       timeout "$(left)" cargo test --release "${offline[@]}" "${GPU_TESTS[@]}" --no-run \
           --message-format=json 2>>"$OUT/build.log" >"$OUT/build-tests.json"; then
        SEGVOL_BIN="target/release/segvol"
        mapfile -t TEST_BINS < <(grep -o '"executable":"[^"]*/deps/\(cuda\|gpu\)[^"/]*"' "$OUT/build-tests.json" |
                                  sed 's/"executable":"\(.*\)"/\1/' | sort -u)
        build_status="ok"
        gen="$(ls -t target/release/build/segvol-*/out/kernels.rs 2>/dev/null | head -n1)"
        grep -hE "(PTX|CUBIN)_ARCH" "$gen" 2>/dev/null
    else
        echo "cargo build failed (see build.log); trying prebuilt binaries"
    fi
fi
if [[ "$build_status" != ok && -d .gpu-bin ]]; then
    cat .gpu-bin/BUILD_INFO 2>/dev/null
    # gpu-prebuild.sh gzips the binaries; unpack them outside the tree.
    BIN_DIR=/tmp/segvol-gpu-bin
    mkdir -p "$BIN_DIR"
    for f in .gpu-bin/segvol.gz .gpu-bin/test-*.gz; do
        [[ -f "$f" ]] || continue
        b="$BIN_DIR/$(basename "$f" .gz)"
        gunzip -c "$f" >"$b" && chmod +x "$b"
    done
    for f in "$BIN_DIR"/test-*; do [[ -x "$f" ]] && TEST_BINS+=("$f"); done
    [[ -x "$BIN_DIR/segvol" ]] && SEGVOL_BIN="$BIN_DIR/segvol"
    ((${#TEST_BINS[@]})) && build_status="prebuilt"
fi
if [[ "$build_status" == FAIL ]]; then
    echo "no way to build: cargo missing or failing, and no .gpu-bin/ (run scripts/gpu-prebuild.sh on the CPU machine and carry .gpu-bin)"
fi
row "build" "$build_status" $((SECONDS - t0)) "${#TEST_BINS[@]} GPU test binaries; segvol: ${SEGVOL_BIN:-none}"

# ---- 3. tests -------------------------------------------------------------------------------
# Fixtures: ../shared does not travel to the device machine; gpu-prebuild.sh
# copies the ones the GPU tests need into .gpu-bin/shared.
if [[ -z "${SEGVOL_SHARED:-}" && ! -d ../shared/fixtures && -d .gpu-bin/shared/fixtures ]]; then
    export SEGVOL_SHARED="$PWD/.gpu-bin/shared"
fi
for bin in "${TEST_BINS[@]}"; do
    name="$(basename "$bin")"; name="${name#test-}"; name="${name%%-*}"
    say "tests: $name"
    t0=$SECONDS
    log="$OUT/test-$name.log"
    timeout "$(left)" "$bin" --test-threads=4 --nocapture 2>&1 | tee "$log" | grep -E "^test |SKIP|panicked|using cuda|seed =" 
    rc=${PIPESTATUS[0]}
    res="$(grep -E '^test result:' "$log" | tail -n1 | sed 's/test result: //')"
    status=$([[ $rc == 0 ]] && echo ok || echo FAIL)
    ((rc == 124)) && status="TIMEOUT"
    grep -q "SKIP: no CUDA device" "$log" && status="SKIPPED"
    row "test $name" "$status" $((SECONDS - t0)) "${res:-no result line}"
    if [[ -s "$log" ]]; then
        # Worst relative error per precision, for the notes.
        for p in f32 bf16 bf16-cublas; do
            worst="$(grep -F "[$p]: rel L2" "$log" | sed 's/.*rel L2 \([0-9.e+-]*\).*/\1 &/' | sort -g | tail -n1)"
            [[ -n "$worst" ]] && row "  worst $p" "" "" "${worst#* }"
        done
    fi
done

# ---- 4. benchmarks ----------------------------------------------------------------------------
say "benchmarks"
t0=$SECONDS
if [[ -n "$SEGVOL_BIN" && -x "$SEGVOL_BIN" ]] && "$SEGVOL_BIN" --help 2>/dev/null | grep -qw bench; then
    log="$OUT/bench.log"
    # shellcheck disable=SC2086
    timeout "$(left)" "$SEGVOL_BIN" bench --device cuda ${SEGVOL_BENCH_ARGS:-} 2>&1 | tee "$log" | tail -n 40
    rc=${PIPESTATUS[0]}
    row "bench" "$([[ $rc == 0 ]] && echo ok || echo "FAIL")" $((SECONDS - t0)) "rc=$rc; $(tail -n1 "$log")"
else
    echo "segvol bench: not available (no segvol binary, or it has no 'bench' subcommand yet)"
    row "bench" "n/a" $((SECONDS - t0)) "segvol has no bench subcommand in this build"
fi

# ---- 5. summary -------------------------------------------------------------------------------
say "summary (logs in $OUT)"
printf '%-22s %-8s %7s  %s\n' "step" "status" "time" "notes"
cat "$SUMMARY"
grep -qE ' (FAIL|TIMEOUT) ' "$SUMMARY" && exit 1
exit 0
