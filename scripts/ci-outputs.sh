#!/usr/bin/env bash
# segment's --statistics and --split checked against numpy and nibabel (an
# independent NIfTI reader): volumes, HU mean / std / min / max /
# percentiles (numpy's default linear rule) and centroids per category, and
# each per-category file's voxels and affine. Runs on a synthetic CT written
# by nibabel here (oblique, sheared affine; scl_slope/scl_inter set) and, when
# the shared fixtures are present, on example_ct_sm. Tiny synthetic weights:
# the masks are meaningless, which is all the arithmetic needs.
#
# numpy and nibabel come from PyPI into target/ci-outputs-venv; when pip
# cannot install them the check is skipped loudly (exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ci-outputs-venv
if ! { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } ||
    ! "$venv/bin/pip" install -q "numpy>=1.22" "nibabel>=4"; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! SKIPPED: statistics vs numpy: pip could not install numpy and nibabel"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    exit 0
fi

cargo build --release --bin segvol
bin="$PWD/target/release/segvol"
work=target/tmp/ci-outputs
rm -rf "$work"
mkdir -p "$work"
"$bin" synth-weights --config tiny -o "$work/tiny.safetensors" >/dev/null

# The synthetic CT: int16 with slope 0.5 and intercept -1024 (exact in
# float32 and float64 alike), 0.8 x 0.9 x 2.5 mm, rotated and sheared.
"$venv/bin/python" - "$work/synthetic_ct.nii.gz" <<'EOF'
import sys
import numpy as np
import nibabel as nib

rng = np.random.default_rng(7)
shape = (72, 64, 20)
i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
hu = np.full(shape, -1000.0)
hu[(i / 0.9) ** 2 + (j / 0.8) ** 2 < 1] = 30.0
hu[((i - 0.3) / 0.35) ** 2 + ((j + 0.1) / 0.3) ** 2 + (k / 0.7) ** 2 < 1] = 65.0
hu[(i**2 + (j - 0.5) ** 2) < 0.01] = 700.0
hu += rng.normal(0, 12, shape)
raw = np.round((hu + 1024.0) / 0.5).astype(np.int16)
c, s = np.cos(0.3), np.sin(0.3)
aff = np.array([
    [0.8 * c, -0.9 * s, 0.2, -30.0],
    [0.8 * s, 0.9 * c, 0.0, -20.0],
    [0.0, 0.0, 2.5, 10.0],
    [0, 0, 0, 1],
])
img = nib.Nifti1Image(raw, aff)
img.header.set_slope_inter(0.5, -1024.0)
img.header.set_sform(aff, code=1)
img.header.set_qform(aff, code=1)
nib.save(img, sys.argv[1])
EOF

cases=("$work/synthetic_ct.nii.gz")
shared="${SEGVOL_SHARED:-../shared}"
if [ -f "$shared/fixtures/data/example_ct_sm.nii.gz" ]; then
    cases+=("$shared/fixtures/data/example_ct_sm.nii.gz")
else
    echo "!!! note: $shared/fixtures/data/example_ct_sm.nii.gz not found; checking the synthetic CT only"
fi

n=0
for ct in "${cases[@]}"; do
    n=$((n + 1))
    out="$work/case$n.nii.gz"
    "$bin" segment "$ct" -o "$out" --weights "$work/tiny.safetensors" --device cpu \
        --text liver --roi-subset "spleen,kidney left,aorta" --split --statistics \
        --json "$work/case$n.json" 2>"$work/case$n.log"
    "$venv/bin/python" - "$ct" "$out" "$work/case$n.json" <<'EOF'
import json, os, sys
import numpy as np
import nibabel as nib

ct_path, lm_path, js_path = sys.argv[1:4]
ct = nib.load(ct_path)
hu = ct.get_fdata()  # float64, scl_slope / scl_inter applied
lm_img = nib.load(lm_path)
lm = np.asarray(lm_img.dataobj).astype(np.int64)
summary = json.load(open(js_path))
assert summary["schema_version"] == 1 and summary["command"] == "segment", summary.keys()
assert np.allclose(lm_img.affine, ct.affine, atol=1e-5), (lm_img.affine, ct.affine)
voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000.0
checked = 0
for c, cat in enumerate(summary["categories"]):
    mask = lm == c + 1
    st = cat["statistics"]
    n = int(mask.sum())
    assert st["voxels"] == n, (cat["name"], st["voxels"], n)
    assert np.isclose(st["volume_ml"], n * voxel_ml, rtol=1e-9), (st["volume_ml"], n * voxel_ml)
    assert np.isclose(cat["volume_ml"], n * voxel_ml, rtol=1e-9), (cat["volume_ml"], n * voxel_ml)
    # --split: the file for this category is exactly the mask, same affine.
    part = nib.load(summary["outputs"]["split"][c])  # paths as the run wrote them
    assert np.array_equal(np.asarray(part.dataobj) == 1, mask), cat["name"]
    assert np.allclose(part.affine, ct.affine, atol=1e-5)
    if n == 0:
        assert st["hu"] is None
        continue
    v = hu[mask]
    want = {
        "mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max(),
        **{f"p{q}": p for q, p in zip((5, 25, 50, 75, 95),
                                      np.percentile(v, [5, 25, 50, 75, 95]))},
    }
    for key, w in want.items():
        got = st["hu"][key]
        assert abs(got - w) <= 1e-6 * max(1.0, abs(w)), (cat["name"], key, got, w)
    centroid = np.argwhere(mask).mean(axis=0)
    assert np.allclose(st["centroid_ijk"], centroid, rtol=1e-9), (st["centroid_ijk"], centroid)
    mm = ct.affine[:3, :3] @ centroid + ct.affine[:3, 3]
    assert np.allclose(st["centroid_mm"], mm, atol=1e-6), (st["centroid_mm"], mm)
    checked += 1
assert checked > 0, "no category had voxels: nothing was compared"
print(f"ci-outputs: {os.path.basename(ct_path)}: statistics of {checked} categories "
      f"and {len(summary['categories'])} split files match numpy/nibabel")
EOF
done
