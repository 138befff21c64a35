#!/usr/bin/env bash
# The one script a GPU session runs (budget: under 6 minutes). It only reads
# the GPU's state (nvidia-smi queries); it never changes clocks, modes or
# limits.
#
#   1. environment: GPU, driver, nvcc, cargo; CUDA library path;
#   2. build: with cargo (the machine's nvcc, SEGVOL_CUDA_ARCH=sm_90), or,
#      where the machine has no Rust, the binaries scripts/gpu-prebuild.sh
#      left in .gpu-bin/ (copy it over with the working tree);
#   3. tests: backend_ops (every op family on the CPU and against it on the
#      GPU, f32 and bf16) and any tests/cuda*.rs / gpu*.rs;
#   4. benchmarks: `segvol bench` on the fixture CTs (bf16, f32), cold start
#      of `segvol segment`, and the criterion bench benches/cuda_ops.rs;
#   5. a summary table, last.
# Logs go to $OUT when set, else ./gpu-check-out.
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
OPS_BENCH=""
# The GPU tests: tests/backend_ops/, tests/cuda*.rs and tests/gpu*.rs.
GPU_TESTS=()
for f in tests/backend_ops tests/cuda*.rs tests/gpu*.rs; do
    [[ -e "$f" ]] && GPU_TESTS+=(--test "$(basename "$f" .rs)")
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
        timeout "$(left)" cargo bench "${offline[@]}" --bench cuda_ops --no-run --message-format=json \
            2>>"$OUT/build.log" >"$OUT/build-bench.json" &&
            OPS_BENCH="$(grep -o '"executable":"[^"]*/deps/cuda_ops[^"/]*"' "$OUT/build-bench.json" |
                         sed 's/"executable":"\(.*\)"/\1/' | head -n1)"
        mapfile -t TEST_BINS < <(grep -o '"executable":"[^"]*/deps/\(backend_ops\|cuda\|gpu\)[^"/]*"' "$OUT/build-tests.json" |
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
    for f in .gpu-bin/segvol.gz .gpu-bin/test-*.gz .gpu-bin/bench-*.gz; do
        [[ -f "$f" ]] || continue
        b="$BIN_DIR/$(basename "$f" .gz)"
        gunzip -c "$f" >"$b" && chmod +x "$b"
    done
    for f in "$BIN_DIR"/test-*; do [[ -x "$f" ]] && TEST_BINS+=("$f"); done
    [[ -x "$BIN_DIR/bench-cuda_ops" ]] && OPS_BENCH="$BIN_DIR/bench-cuda_ops"
    [[ -x "$BIN_DIR/segvol" ]] && SEGVOL_BIN="$BIN_DIR/segvol"
    ((${#TEST_BINS[@]})) && build_status="prebuilt"
fi
if [[ "$build_status" == FAIL ]]; then
    echo "no way to build: cargo missing or failing, and no .gpu-bin/ (run scripts/gpu-prebuild.sh on a machine with Rust and copy .gpu-bin over)"
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
    timeout "$(left)" "$bin" --test-threads=4 --nocapture 2>&1 | tee "$log" | grep -E "^test |SKIP|panicked|using cuda|seed =|bf16 vs|bf16 lowres|cuda bf16|cuda f32" 
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
# `segvol bench` on the fixtures' CTs in both precisions (encoder, decoder,
# whole zoom-out-zoom-in, re-prompt, peak device memory), cold start to the
# first mask written by `segvol segment`, and the per-op criterion bench
# (benches/cuda_ops.rs). SEGVOL_BENCH_ARGS adds arguments to every bench.
bench_row() { # name log rc seconds: the medians of three stages
    local st; st=$([[ $3 == 0 ]] && echo ok || echo FAIL); (($3 == 124)) && st=TIMEOUT
    row "$1" "$st" "$4" "$(sed -nE 's/^(encoder forward \(batch 1\)|zoom-out-zoom-in, 1 prompt, cold|re-prompt, volume resident) +([0-9.]+).*/\1 \2 ms/p' "$2" |
        sed -E 's/ forward \(batch 1\)//; s/zoom-out-zoom-in, 1 prompt, cold/1 prompt/; s/, volume resident//' | paste -sd';')"
}
CT_DIR="${SEGVOL_SHARED:-../shared}/fixtures/data"
if [[ -n "$SEGVOL_BIN" && -x "$SEGVOL_BIN" ]] && "$SEGVOL_BIN" --help 2>/dev/null | grep -qw bench; then
    # CT, precision, iterations, zoom-in windows per encoder batch.
    for spec in "sm bf16 20 2" "sm f32 10 2" "lung1 bf16 5 2" "lung1 f32 3 2" "lung1 bf16 5 4"; do
        read -r ct prec iters wb <<<"$spec"
        f="$CT_DIR/example_ct_sm.nii.gz"; [[ $ct == lung1 ]] && f="$CT_DIR/lung1_image.nii.gz"
        [[ -f "$f" ]] || { row "bench $ct $prec" "n/a" 0 "no $f"; continue; }
        say "bench: $ct, $prec, window batch $wb"
        t0=$SECONDS
        log="$OUT/bench-$ct-$prec-wb$wb.log"
        # shellcheck disable=SC2086
        timeout "$(left)" "$SEGVOL_BIN" bench --device cuda --precision "$prec" --ct "$f" --window-batch "$wb" \
            --iters "$iters" --warmup 2 --json "$OUT/bench-$ct-$prec-wb$wb.json" ${SEGVOL_BENCH_ARGS:-} 2>&1 | tee "$log" | tail -n 12
        bench_row "bench $ct $prec wb$wb" "$log" "${PIPESTATUS[0]}" $((SECONDS - t0))
    done
    # Cold start to the first mask: a new process, weights from a file.
    say "cold start: segvol segment"
    t0=$SECONDS
    w=/tmp/segvol-synth-default.safetensors
    "$SEGVOL_BIN" synth-weights --config default -o "$w" >"$OUT/cold.log" 2>&1
    for prec in bf16 f32; do
        s0=$(date +%s.%N)
        timeout "$(left)" "$SEGVOL_BIN" segment "$CT_DIR/example_ct_sm.nii.gz" --text liver --weights "$w" \
            --device cuda --precision "$prec" -o "/tmp/segvol-cold-$prec.nii.gz" >>"$OUT/cold.log" 2>&1
        rc=$?
        s1=$(date +%s.%N)
        row "cold segment $prec" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" $((SECONDS - t0)) \
            "$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.2f s process start to mask written", b-a}')"
    done
else
    echo "segvol bench: not available (no segvol binary)"
    row "bench" "n/a" $((SECONDS - t0)) "no segvol binary in this build"
fi
if [[ -n "${OPS_BENCH:-}" && -x "$OPS_BENCH" ]]; then
    say "bench: cuda_ops (criterion)"
    t0=$SECONDS
    timeout "$(left)" "$OPS_BENCH" --bench --noplot 2>&1 | tee "$OUT/bench-cuda-ops.log" | grep -E "^cuda_|time:|thrpt:|SKIP"
    rc=${PIPESTATUS[0]}
    row "bench cuda_ops" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" $((SECONDS - t0)) \
        "$(grep -A2 'bf16/attention_vit' "$OUT/bench-cuda-ops.log" | grep -o 'time: *\[[^]]*\]' | head -n1)"
fi

# Optional (SEGVOL_NCU=1): hardware counters of one attention launch and one
# epilogue launch with Nsight Compute, clocks left alone.
NCU_BIN="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n1)"
if [[ "${SEGVOL_NCU:-0}" == 1 && -n "$NCU_BIN" && -n "${OPS_BENCH:-}" ]]; then
    say "ncu: attention and epilogue kernels"
    t0=$SECONDS
    : >"$OUT/ncu.log"
    for pair in "attn_mma_64_4 attention" "epilogue_bf16 linear_fc1"; do
        read -r kern bench <<<"$pair"
        timeout "$(left)" "$NCU_BIN" --clock-control none -k "regex:$kern" --launch-skip 20 --launch-count 1 \
            --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
            "$OPS_BENCH" --bench --noplot "bf16/$bench" >>"$OUT/ncu.log" 2>&1
    done
    rc=$?
    grep -E "attn_mma|epilogue|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|Theoretical Occupancy" "$OUT/ncu.log" | head -n 40
    row "ncu" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" $((SECONDS - t0)) "see ncu.log"
fi

# ---- 5. summary -------------------------------------------------------------------------------
# The logs travel back as one archive (fewer files to copy).
(cd "$OUT" && tar -czf gpu-check-logs.tgz --remove-files -- *.log *.json 2>/dev/null)
say "summary (logs in $OUT, gpu-check-logs.tgz)"
printf '%-22s %-8s %7s  %s\n' "step" "status" "time" "notes"
cat "$SUMMARY"
grep -qE ' (FAIL|TIMEOUT) ' "$SUMMARY" && exit 1
exit 0
