"""Reference NIfTI volumes for the DICOM reader's tests, made with pydicom
(pixel decoding by Pillow/pylibjpeg, not by dicom-rs) and numpy.

    python scripts/dicom-reference.py SERIES_FOLDER_OR_FILE OUT.nii.gz

The volume is laid out as NIfTI converters (dcm2niix) lay out a DICOM
series: slices sorted along the normal of ImageOrientationPatient, rows
stored bottom-up, RAS affine, rescale slope/intercept applied (stored as
float32 so no scaling is left to the reader).
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom


def main(src: str, out: str) -> None:
    p = Path(src)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    ds = [pydicom.dcmread(f) for f in files]
    iop = np.array(ds[0].ImageOrientationPatient, dtype=float)
    x, y = iop[:3], iop[3:]
    n = np.cross(x, y)
    ds.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), n)))
    rows, cols = int(ds[0].Rows), int(ds[0].Columns)
    dr, dc = (float(v) for v in ds[0].PixelSpacing)
    pos = [np.array(d.ImagePositionPatient, float) for d in ds]
    if len(ds) > 1:
        step = (pos[-1] - pos[0]) / (len(ds) - 1)
    else:
        t = float(getattr(ds[0], "SpacingBetweenSlices", 0) or getattr(ds[0], "SliceThickness", 1) or 1)
        step = n * t
    vol = np.zeros((cols, rows, len(ds)), np.float32)
    for k, d in enumerate(ds):
        px = d.pixel_array.astype(np.float64)
        hu = px * float(getattr(d, "RescaleSlope", 1)) + float(getattr(d, "RescaleIntercept", 0))
        # (row, col) -> (i = col, j = rows - 1 - row)
        vol[:, :, k] = hu[::-1, :].T.astype(np.float32)
    lps = np.eye(4)
    lps[:3, 0] = dc * x
    lps[:3, 1] = -dr * y
    lps[:3, 2] = step
    lps[:3, 3] = pos[0] + (rows - 1) * dr * y
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(vol, ras)
    img.header.set_sform(ras, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
