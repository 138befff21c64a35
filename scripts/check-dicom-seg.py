"""Checks a DICOM-SEG written by `segvol segment --dicom-seg` with highdicom
and pydicom: it opens as a Segmentation, has the expected segments, and its
frames equal the NIfTI label map written in the same run.

    python scripts/check-dicom-seg.py SEG.dcm LABELS.nii.gz SOURCE_FOLDER NAME [NAME ...]

Exits non-zero with a message on the first mismatch; prints "ok" otherwise.
"""

import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom


def fail(msg: str) -> None:
    print(f"DICOM-SEG check failed: {msg}")
    sys.exit(1)


def main(seg_path: str, labels_path: str, source: str, names: list) -> None:
    seg = hd.seg.segread(seg_path)
    if seg.segmentation_type != hd.seg.SegmentationTypeValues.BINARY:
        fail(f"segmentation type {seg.segmentation_type}")
    if seg.number_of_segments != len(names):
        fail(f"{seg.number_of_segments} segments, expected {len(names)}")
    for i, name in enumerate(names, start=1):
        desc = seg.get_segment_description(i)
        if desc.segment_label != name:
            fail(f"segment {i} is labelled {desc.segment_label!r}, expected {name!r}")

    # The source slices in the reader's order: sorted along the normal.
    src = [pydicom.dcmread(f, stop_before_pixels=True)
           for f in sorted(Path(source).iterdir()) if f.suffix == ".dcm"]
    iop = np.array(src[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    src.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    uids = [d.SOPInstanceUID for d in src]
    if seg.FrameOfReferenceUID != src[0].FrameOfReferenceUID:
        fail("frame of reference differs from the source")
    if seg.StudyInstanceUID != src[0].StudyInstanceUID:
        fail("study differs from the source")

    px = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=list(range(1, len(names) + 1)),
    )  # (slices, rows, columns, segments)
    labels = np.asanyarray(nib.load(labels_path).dataobj)  # (columns, rows, slices)
    rows = labels.shape[1]
    for k in range(len(uids)):
        # Volume row j is DICOM row rows - 1 - j.
        want = labels[:, ::-1, k].T
        for s in range(len(names)):
            got = px[k, :, :, s]
            if not np.array_equal(got.astype(bool), want == s + 1):
                fail(f"slice {k} segment {s + 1}: {int((got.astype(bool) != (want == s + 1)).sum())} pixels differ")
    total = int(sum((labels == s + 1).sum() for s in range(len(names))))
    if total == 0:
        fail("the label map is empty: nothing was compared")
    # Plane positions come from the source slices.
    for f in seg.PerFrameFunctionalGroupsSequence[: len(uids)]:
        ref = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
        want = [float(v) for v in src[uids.index(ref)].ImagePositionPatient]
        if not np.allclose(pos, want, atol=1e-4):
            fail(f"plane position {pos} for {ref}, source has {want}")
    print(f"ok: {len(names)} segments, {len(uids)} slices, {total} labelled voxels match")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
