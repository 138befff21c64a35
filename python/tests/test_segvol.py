"""The Python package against the CLI and on bad input. Runs against the
installed wheel (pip install . at the repository root); needs the fixtures' small CT
($SEGVOL_SHARED or ../shared) and the segvol CLI ($SEGVOL_BIN or
target/release/segvol) for the synthetic weights and the comparison."""

import gc
import gzip
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import segvol
from segvol import _segvol

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEGVOL_SHARED", REPO.parent / "shared"))
CT = SHARED / "fixtures" / "data" / "example_ct_sm.nii.gz"
BIN = Path(os.environ.get("SEGVOL_BIN", REPO / "target" / "release" / "segvol"))
BOX = (41.0, 25.0, 0.0, 105.0, 86.0, 29.0)

if not CT.exists():
    pytest.skip(f"fixture {CT} not found (set SEGVOL_SHARED)", allow_module_level=True)
if not BIN.exists():
    raise RuntimeError(f"{BIN} is missing: cargo build --release first (or set SEGVOL_BIN)")


def read_nifti(path):
    """A minimal NIfTI-1 reader for the tests: (array (I, J, K), affine)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dim = struct.unpack("<8h", raw[40:56])
    dtype = {2: "<u1", 4: "<i2", 16: "<f4", 512: "<u2", 64: "<f8"}[struct.unpack("<h", raw[70:72])[0]]
    offset = int(struct.unpack("<f", raw[108:112])[0])
    slope, inter = struct.unpack("<ff", raw[112:120])
    shape = (dim[1], dim[2], dim[3])
    n = shape[0] * shape[1] * shape[2]
    a = np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(shape, order="F")
    if slope not in (0.0, 1.0) or inter != 0.0:
        a = a * slope + inter
    srow = np.array(struct.unpack("<12f", raw[280:328]), dtype=np.float64).reshape(3, 4)
    return a, np.vstack([srow, [0, 0, 0, 1]])


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    p = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    subprocess.run([str(BIN), "synth-weights", "--config", "tiny", "-o", str(p)], check=True)
    return p


@pytest.fixture(scope="session")
def model(weights):
    return segvol.Model(weights)


def cli_labels(weights, tmp_path, *args):
    out = tmp_path / "cli.nii"
    subprocess.run(
        [str(BIN), "segment", str(CT), "-o", str(out), "--weights", str(weights), "--device", "cpu", *args],
        check=True,
        capture_output=True,
    )
    return read_nifti(out)[0]


def test_same_masks_as_the_cli(model, weights, tmp_path):
    seg = model.segment(CT, texts=["liver"], boxes=[BOX])
    cli = cli_labels(weights, tmp_path, "--text", "liver", "--box", ",".join(str(v) for v in BOX))
    assert seg.labels.shape == cli.shape == (122, 101, 30)
    assert seg.names == ["liver"]
    assert (seg.labels == 1).any()
    np.testing.assert_array_equal(seg.labels, cli)

    seg = model.segment(CT, points=[(60, 48, 15), (10, 10, 3, 0)], seed=7)
    cli = cli_labels(weights, tmp_path, "--point", "60,48,15", "--point", "10,10,3,0", "--seed", "7")
    np.testing.assert_array_equal(seg.labels, cli)


def test_arrays_of_any_dtype_match_the_file(model):
    arr, affine = read_nifti(CT)
    from_file = model.segment(CT, texts=["liver"], boxes=[BOX], probabilities=True)
    for a in (arr, arr.astype(np.float64), arr.astype(np.int32), np.ascontiguousarray(arr)):
        seg = model.segment(a, affine=affine, texts=["liver"], boxes=[BOX], probabilities=True)
        np.testing.assert_array_equal(seg.labels, from_file.labels)
    assert seg.probabilities.shape == (1,) + arr.shape
    np.testing.assert_array_equal(seg.probabilities, from_file.probabilities)
    # World-frame prompts go through the affine.
    corners = [affine @ np.array([*BOX[:3], 1.0]), affine @ np.array([*BOX[3:], 1.0])]
    wbox = [*corners[0][:3], *corners[1][:3]]
    seg = model.segment(arr, affine=affine, texts=["liver"], boxes=[wbox], world=True)
    np.testing.assert_array_equal(seg.labels, from_file.labels)


def test_bad_inputs_raise(model):
    arr, affine = read_nifti(CT)
    with pytest.raises(segvol.SegvolError, match="at least one prompt"):
        model.segment(CT)
    with pytest.raises(segvol.SegvolError, match="outside the volume"):
        model.segment(CT, points=[(1000, 0, 0)])
    with pytest.raises(segvol.SegvolError, match="No such file"):
        model.segment("/nonexistent.nii.gz", texts=["liver"])
    with pytest.raises(ValueError, match="3D"):
        model.segment(arr[0], texts=["liver"])
    with pytest.raises(TypeError, match="dtype"):
        model.segment(arr.astype(np.complex64), texts=["liver"])
    with pytest.raises(ValueError, match="4x4"):
        model.segment(arr, affine=np.eye(3), texts=["liver"])
    with pytest.raises(segvol.SegvolError, match="singular"):
        model.segment(arr, affine=np.diag([0.0, 0.0, 0.0, 1.0]), texts=["liver"])
    nan = arr.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(segvol.SegvolError, match="NaN"):
        model.segment(nan, texts=["liver"])
    with pytest.raises(ValueError, match="label"):
        model.segment(CT, points=[(1, 2, 3, 5)])
    with pytest.raises(segvol.SegvolError, match="not a SegVol checkpoint|checkpoint"):
        segvol.Model(CT)
    s = segvol.Session(model)
    with pytest.raises(segvol.SegvolError, match="set_image"):
        s.add_text("liver")


def test_session_reprompt_is_cheap_and_matches_one_call(model):
    s = segvol.Session(model)
    s.set_image(CT)
    assert s.mask is None
    t0 = time.perf_counter()
    first = s.add_text("liver")
    t_first = time.perf_counter() - t0
    assert first.timings["zoom_out_encode_s"] > 0
    t0 = time.perf_counter()
    second = s.add_box(BOX)
    t_second = time.perf_counter() - t0
    # No zoom-out encoder pass, windows from the cache.
    assert second.timings["zoom_out_encode_s"] == 0
    assert second.timings["windows_reused"] > 0
    assert t_second < t_first
    np.testing.assert_array_equal(second.labels, model.segment(CT, texts=["liver"], boxes=[BOX]).labels)
    np.testing.assert_array_equal(s.mask, second.labels == 1)
    # A refused click leaves the session as it was.
    with pytest.raises(segvol.SegvolError, match="outside the volume"):
        s.add_point((5000, 0, 0))
    np.testing.assert_array_equal(s.mask, second.labels == 1)
    s.reset()
    assert s.mask is None
    assert s.add_text("liver").timings["zoom_out_encode_s"] == 0


def test_gil_is_released(model):
    """Two threads segmenting together overlap: while one computes, the
    other (and the interpreter) keep running."""
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        model.segment(CT, texts=["liver"])
    finally:
        done.set()
        t.join()
    gaps = np.diff(ticks)
    # With the GIL held for the whole segmentation (about a second) the
    # ticker would stall for that long.
    assert len(ticks) > 10 and gaps.max() < 0.25, (len(ticks), gaps.max())


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_is_freed_on_drop(model):
    arr, affine = read_nifti(CT)
    # 488 x 404 x 60 voxels: each session holds the float32 copy handed over
    # (47 MB), its preprocessed image (up to 47 MB) and the mask (24 MB).
    big = np.tile(arr, (4, 4, 2))
    base = _segvol.live_sessions()
    rss = []
    for _ in range(6):
        s = segvol.Session(model, zoom_in=False)
        s.set_image(big, affine=affine)
        s.add_text("liver")
        assert _segvol.live_sessions() == base + 1
        del s
        gc.collect()
        assert _segvol.live_sessions() == base
        rss.append(rss_bytes())
    # A leak of one session per round would add 100+ MB a round; allocator
    # noise stays well under that.
    assert rss[-1] - rss[1] < 100 << 20, [r >> 20 for r in rss]
