"""SegVol inference (3D CT segmentation from text, box and point prompts) on
the segvol Rust engine.

Arrays are indexed ``[i, j, k]`` like nibabel's ``img.get_fdata()``, with the
voxel-to-world ``affine`` of ``img.affine`` (or just ``spacing`` in mm), and
results come back in the same grid. Any integer or float dtype is accepted.
The engine releases the GIL while it computes, so threads run in parallel.

    import segvol
    model = segvol.Model("pytorch_model.bin")      # or Model() for the HF cache
    seg = model.segment("ct.nii.gz", texts=["liver"])
    seg.labels                                      # uint16 array, shape (I, J, K)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _segvol
from ._segvol import SegvolError

__all__ = ["Model", "Session", "Segmentation", "SegvolError"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Segmentation:
    """A segmentation in the CT's grid."""

    #: uint16, shape (I, J, K): 0 background, c + 1 where category c wins.
    labels: np.ndarray
    #: Category names, label 1 first.
    names: List[str]
    #: float32, shape (C, I, J, K), sigmoid probabilities; None unless asked.
    probabilities: Optional[np.ndarray]
    #: Network time and window counts (windows_reused shows the cache at work).
    timings: Dict[str, float] = field(default_factory=dict)

    def mask(self, c: int = 0) -> np.ndarray:
        """The boolean mask of category ``c`` (0-based)."""
        return self.labels == c + 1


def _volume(array, affine, spacing) -> Tuple[bytes, Tuple[int, int, int], List[float]]:
    """float32 bytes in NIfTI file order (i fastest), dims and a flat affine."""
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"the CT array must be 3D (I, J, K), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"the CT array must have an integer or float dtype, got {a.dtype}")
    if affine is not None and spacing is not None:
        raise ValueError("give affine or spacing, not both")
    if affine is None:
        sp = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
        if len(sp) != 3:
            raise ValueError(f"spacing needs 3 values (mm along i, j, k), got {len(sp)}")
        aff = np.diag([sp[0], sp[1], sp[2], 1.0])
    else:
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"the affine must be 4x4, got shape {aff.shape}")
    # Fortran order of an (I, J, K) array is NIfTI's file order; tobytes
    # makes it in one copy whatever the array's own layout.
    voxels = np.asarray(a, dtype=np.float32).tobytes(order="F")
    dims = (int(a.shape[0]), int(a.shape[1]), int(a.shape[2]))
    return voxels, dims, [float(v) for v in aff.ravel()]


def _result(raw) -> Segmentation:
    labels, dims, names, probs, timings = raw
    dims = tuple(dims)
    # Copied out of the (immutable) bytes so callers get writable arrays.
    lab = np.frombuffer(labels, dtype=np.uint16).reshape(dims, order="F").copy(order="K")
    prob = None
    if probs:
        prob = np.stack([np.frombuffer(p, dtype=np.float32).reshape(dims, order="F") for p in probs])
    return Segmentation(labels=lab, names=list(names), probabilities=prob, timings=dict(timings))


class Model:
    """A loaded SegVol model (CPU). Share one between sessions and threads."""

    def __init__(self, weights: Optional[PathLike] = None, threads: int = 0):
        """Loads ``weights`` (a .bin/.pth/.safetensors file or a folder), or the
        official BAAI/SegVol weights from the Hugging Face cache when None
        (downloading them once). ``threads=0`` uses every core."""
        self._model = _segvol.Model(None if weights is None else os.fspath(weights), threads)

    @property
    def weights(self) -> str:
        """The checkpoint path."""
        return str(self._model.weights)

    def segment(
        self,
        ct: Union[PathLike, np.ndarray],
        *,
        affine=None,
        spacing: Optional[Sequence[float]] = None,
        texts: Sequence[str] = (),
        boxes: Sequence[Sequence[float]] = (),
        points: Sequence[Sequence[float]] = (),
        world: bool = False,
        seed: int = 0,
        zoom_in: bool = True,
        probabilities: bool = False,
    ) -> Segmentation:
        """Segments a CT (a NIfTI path, or an (I, J, K) array with ``affine`` or
        ``spacing``) in one call; the result is in the CT's grid. Prompts pair
        up as in ``segvol segment``: one category per text (or box), one text
        for every box, points for a single category. ``boxes`` are
        ``(i0, j0, k0, i1, j1, k1)``; ``points`` are ``(i, j, k)`` or
        ``(i, j, k, label)`` with label 1 (positive) or 0; ``world=True`` reads
        them as millimetres through the affine."""
        pts = [_point(p) for p in points]
        bxs = [_box(b) for b in boxes]
        texts = [str(t) for t in texts]
        if isinstance(ct, (str, os.PathLike)):
            raw = self._model.segment(
                os.fspath(ct), None, (0, 0, 0), [], texts, bxs, pts, world, seed, zoom_in, probabilities
            )
        else:
            voxels, dims, aff = _volume(ct, affine, spacing)
            raw = self._model.segment(
                None, voxels, dims, aff, texts, bxs, pts, world, seed, zoom_in, probabilities
            )
        return _result(raw)


def _point(p) -> Tuple[Tuple[float, float, float], bool]:
    v = [float(x) for x in p]
    if len(v) == 3:
        return (v[0], v[1], v[2]), True
    if len(v) == 4 and v[3] in (0.0, 1.0):
        return (v[0], v[1], v[2]), v[3] == 1.0
    raise ValueError(f"a point is (i, j, k) or (i, j, k, label) with label 0 or 1, got {tuple(p)}")


def _box(b) -> Tuple[float, ...]:
    v = tuple(float(x) for x in b)
    if len(v) != 6:
        raise ValueError(f"a box is (i0, j0, k0, i1, j1, k1), got {len(v)} values")
    return v


class Session:
    """Interactive segmentation of one object, like nnInteractive's session:
    ``set_image``, then ``add_text`` / ``add_box`` / ``add_point`` (each returns
    the updated mask), ``reset`` for the next object. The image embeddings are
    kept, so each new prompt costs only decoder passes and new windows.
    Points add up; a new text or box replaces the previous one."""

    def __init__(self, model: Model, probabilities: bool = False, zoom_in: bool = True):
        """A session on ``model``; ``probabilities`` adds them to each result,
        ``zoom_in=False`` stops after the zoom-out pass (faster, coarser)."""
        self._s = _segvol.Session(model._model, bool(probabilities), bool(zoom_in))

    def set_image(self, ct: Union[PathLike, np.ndarray], *, affine=None, spacing=None) -> None:
        """Sets the image (a NIfTI path, or an (I, J, K) array with ``affine``
        or ``spacing``); clears the prompts and the previous embeddings."""
        if isinstance(ct, (str, os.PathLike)):
            self._s.set_image_file(os.fspath(ct))
        else:
            voxels, dims, aff = _volume(ct, affine, spacing)
            self._s.set_image(voxels, dims, aff)

    def set_world_frame(self, world: bool) -> None:
        """Read later coordinates as millimetres through the affine (True) or
        voxel indices (False, the default)."""
        self._s.set_world_frame(world)

    def add_point(self, at: Sequence[float], positive: bool = True) -> Segmentation:
        """Adds a click at (i, j, k); returns the updated mask."""
        ijk = tuple(float(x) for x in at)
        if len(ijk) != 3:
            raise ValueError(f"a point is (i, j, k), got {len(ijk)} values")
        return _result(self._s.add_point(ijk, bool(positive)))

    def add_box(self, corners: Sequence[float]) -> Segmentation:
        """Sets the box (i0, j0, k0, i1, j1, k1); returns the updated mask."""
        return _result(self._s.add_box(_box(corners)))

    def add_text(self, name: str) -> Segmentation:
        """Sets the object's name ("liver"); returns the updated mask."""
        return _result(self._s.add_text(str(name)))

    def reset(self) -> None:
        """Forgets the prompts and the mask; keeps the image's embeddings."""
        self._s.reset()

    @property
    def mask(self) -> Optional[np.ndarray]:
        """The current mask (bool, (I, J, K)), None before the first prompt."""
        raw = self._s.mask()
        return None if raw is None else _result(raw).labels == 1
