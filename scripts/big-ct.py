#!/usr/bin/env python3
"""Writes a large synthetic int16 CT (.nii) for the memory-limit measurements
in docs/RELIABILITY.md: an elliptic "body" (~40 HU with texture and a brighter
core) in air (-1000 HU) filling most of each slice, so the foreground crop is
most of the volume. Standard library only.

usage: scripts/big-ct.py OUT.nii [NI NJ NK]      (default 1024 1024 1000)
"""
import array
import struct
import sys


def header(ni, nj, nk):
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, ni, nj, nk, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 4, 16)  # int16
    struct.pack_into("<8f", h, 76, 1.0, 0.7, 0.7, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<ff", h, 112, 1.0, 0.0)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0" * 4


def slice_bytes(ni, nj, variant):
    a = array.array("h", bytes(2 * ni * nj))
    ci, cj = ni / 2.0, nj / 2.0
    ri, rj = 0.46 * ni, 0.42 * nj
    for j in range(nj):
        y = (j + 0.5 - cj) / rj
        if abs(y) >= 1.0:
            row = [-1000] * ni
        else:
            half = ri * (1.0 - y * y) ** 0.5
            lo, hi = int(ci - half), int(ci + half)
            core = 0.35 * half
            row = [-1000] * ni
            for i in range(max(lo, 0), min(hi, ni)):
                v = 40 + ((i * 7 + j * 3 + variant * 5) % 23)
                if abs(i + 0.5 - ci) < core and abs(y) < 0.35:
                    v += 160
                row[i] = v
        a[j * ni:(j + 1) * ni] = array.array("h", row)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def main():
    out = sys.argv[1]
    ni, nj, nk = (int(x) for x in sys.argv[2:5]) if len(sys.argv) >= 5 else (1024, 1024, 1000)
    variants = [slice_bytes(ni, nj, v) for v in range(7)]
    air = array.array("h", [-1000] * (ni * nj)).tobytes()
    with open(out, "wb") as f:
        f.write(header(ni, nj, nk))
        for k in range(nk):
            # A few air slices at each end, body in between.
            f.write(air if k < nk // 50 or k >= nk - nk // 50 else variants[k % 7])


if __name__ == "__main__":
    main()
