"""Scale-out with Ray Data: a map_batches actor pool on a local Ray
(num_cpus=2), each actor loading one model, gives the same masks as a
direct call. Skipped when Ray is not installed (.ci/run installs it)."""

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import segvol

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ray[data]')")

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEGVOL_SHARED", REPO.parent / "shared"))
CT = SHARED / "fixtures" / "data" / "example_ct_sm.nii.gz"
BIN = Path(os.environ.get("SEGVOL_BIN", REPO / "target" / "release" / "segvol"))
TEXTS = ["liver", "spleen", "left kidney", "aorta"]

if not CT.exists():
    pytest.skip(f"fixture {CT} not found (set SEGVOL_SHARED)", allow_module_level=True)


def digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()


class Segmenter:
    """One per actor: the model loads once and serves every batch."""

    def __init__(self, weights: str):
        # One thread each: the pool's two actors share the two CPUs.
        self.model = segvol.Model(weights, threads=1)

    def __call__(self, batch):
        digests, voxels = [], []
        for path, text in zip(batch["path"], batch["text"]):
            seg = self.model.segment(str(path), texts=[str(text)])
            digests.append(digest(seg.labels))
            voxels.append(int((seg.labels == 1).sum()))
        return {"text": batch["text"], "digest": np.array(digests), "voxels": np.array(voxels)}


def test_ray_data_actor_pool(tmp_path):
    import subprocess

    weights = tmp_path / "tiny.safetensors"
    subprocess.run([str(BIN), "synth-weights", "--config", "tiny", "-o", str(weights)], check=True)
    # The workers cannot import this test file: ship its classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ds = ray.data.from_items([{"path": str(CT), "text": t} for t in TEXTS])
        rows = ds.map_batches(
            Segmenter,
            fn_constructor_args=(str(weights),),
            batch_size=1,
            concurrency=2,
            num_cpus=1,
        ).take_all()
    finally:
        ray.shutdown()
    got = {r["text"]: (r["digest"], r["voxels"]) for r in rows}
    assert sorted(got) == sorted(TEXTS)
    model = segvol.Model(weights)
    for t in TEXTS:
        seg = model.segment(CT, texts=[t])
        assert got[t] == (digest(seg.labels), int((seg.labels == 1).sum())), t
