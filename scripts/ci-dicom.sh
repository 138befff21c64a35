#!/usr/bin/env bash
# DICOM test data and the DICOM tests that need it (tests/dicom.rs).
#
# Prepares, under $SEGVOL_DICOM_DATA (default target/dicom-data; nothing is
# committed): TotalSegmentator's 20-slice CT series and its converted output
# (from ../shared/fixtures/data when there, else TotalSegmentator's PyPI
# sdist), pydicom's test files (from the pydicom wheel), and
# pydicom-decoded reference volumes (scripts/dicom-reference.py). Then runs
# tests/dicom.rs with that data and with a Python that has pydicom and
# highdicom (the DICOM-SEG check). Whatever cannot be fetched is skipped
# loudly; the tests skip what is missing, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."

data=${SEGVOL_DICOM_DATA:-$PWD/target/dicom-data}
mkdir -p "$data"
skip() {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! SKIPPED: $*"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}

venv=target/ci-dicom-venv
py=""
if python3 -m venv "$venv" &&
    "$venv/bin/pip" install -q "pydicom>=3,<4" pillow numpy nibabel highdicom; then
    py="$PWD/$venv/bin/python"
else
    skip "pip could not install pydicom, pillow, numpy, nibabel, highdicom: no pydicom test files, no reference volumes, no DICOM-SEG check"
fi

# TotalSegmentator's series (Apache-2.0; fetched, never committed): from the
# shared fixtures when there, else from its PyPI sdist (pinned; the sdist
# carries tests/reference_files, identical to the GitHub repository's).
ts_version=2.18.0
shared=../shared/fixtures/data
if [ ! -d "$data/example_ct_dicom" ]; then
    if [ -d "$shared/example_ct_dicom" ] && [ -f "$shared/example_seg_dicom.nii.gz" ]; then
        cp -r "$shared/example_ct_dicom" "$shared/example_seg_dicom.nii.gz" "$data/"
    elif [ -n "$py" ]; then
        dl=target/ts-sdist
        rm -rf "$dl" && mkdir -p "$dl"
        if "$venv/bin/pip" download -q --no-deps --no-binary :all: \
            "totalsegmentator==$ts_version" -d "$dl" &&
            tar xzf "$dl/totalsegmentator-$ts_version.tar.gz" -C "$dl" \
                "totalsegmentator-$ts_version/tests/reference_files/example_ct_dicom" \
                "totalsegmentator-$ts_version/tests/reference_files/example_seg_dicom.nii.gz"; then
            cp -r "$dl/totalsegmentator-$ts_version/tests/reference_files/example_ct_dicom" \
                "$dl/totalsegmentator-$ts_version/tests/reference_files/example_seg_dicom.nii.gz" "$data/"
        else
            skip "could not fetch TotalSegmentator's example_ct_dicom (sdist $ts_version): the real-series tests skip"
        fi
        rm -rf "$dl"
    else
        skip "no pip: TotalSegmentator's example_ct_dicom is not fetched: the real-series tests skip"
    fi
fi

if [ -n "$py" ]; then
    # pydicom's own test files, from its wheel.
    if [ ! -f "$data/pydicom/CT_small.dcm" ]; then
        dl=target/pydicom-dl
        rm -rf "$dl" && mkdir -p "$dl" "$data/pydicom"
        if "$venv/bin/pip" download -q --no-deps "pydicom==3.0.2" -d "$dl"; then
            "$py" - "$dl" "$data/pydicom" <<'PY'
import glob, os, sys, zipfile
z = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "pydicom-*.whl"))[0])
for name in ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
             "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_jpeg_ls_lossless.dcm"]:
    with open(os.path.join(sys.argv[2], name), "wb") as f:
        f.write(z.read("pydicom/data/test_files/" + name))
PY
        else
            skip "pip could not download the pydicom wheel: the transfer-syntax tests skip"
        fi
    fi
    [ -d "$data/example_ct_dicom" ] && [ ! -f "$data/example_ct_dicom_ref.nii.gz" ] &&
        "$py" scripts/dicom-reference.py "$data/example_ct_dicom" "$data/example_ct_dicom_ref.nii.gz"
    [ -f "$data/pydicom/CT_small.dcm" ] && [ ! -f "$data/CT_small_ref.nii.gz" ] &&
        "$py" scripts/dicom-reference.py "$data/pydicom/CT_small.dcm" "$data/CT_small_ref.nii.gz"
fi

echo "== cargo test --release --test dicom (with the prepared data)"
SEGVOL_DICOM_DATA="$data" SEGVOL_DICOM_PYTHON="$py" cargo test --release --test dicom -- --nocapture 2>&1 |
    grep -E "SKIPPED|test result|panicked|FAILED|failures|^test " ; exit "${PIPESTATUS[0]}"
