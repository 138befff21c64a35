#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (fuzz/fuzz_targets/*) into
DIR/<target>/: small valid NIfTI files, safetensors files, torch pickles and
checkpoints, generated here rather than checked in. Standard library only.

usage: scripts/fuzz-seeds.py DIR
"""
import gzip
import io
import json
import os
import struct
import sys
import zipfile


def nifti(dims, datatype, bitpix, data, big=False, sform=False):
    e = ">" if big else "<"
    h = bytearray(348)
    struct.pack_into(e + "i", h, 0, 348)
    struct.pack_into(e + "8h", h, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into(e + "hh", h, 70, datatype, bitpix)
    struct.pack_into(e + "8f", h, 76, 1.0, 0.8, 0.8, 2.5, 1, 1, 1, 1)
    struct.pack_into(e + "f", h, 108, 352.0)
    struct.pack_into(e + "ff", h, 112, 1.0, -1024.0)
    if sform:
        struct.pack_into(e + "hh", h, 252, 1, 1)
        rows = [[-0.8, 0, 0, 100], [0, -0.8, 0, 90], [0, 0, 2.5, -300]]
        for r, row in enumerate(rows):
            struct.pack_into(e + "4f", h, 280 + 16 * r, *row)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0" * 4 + data


def pickle_tensor_dict(names):
    """A torch.save data.pkl (protocol 2) for float tensors of shape [2, 3]."""
    def s(x):
        return b"X" + struct.pack("<I", len(x)) + x.encode()

    def i(v):
        return b"J" + struct.pack("<i", v)

    def g(m, n):
        return b"c" + m.encode() + b"\n" + n.encode() + b"\n"

    odict = g("collections", "OrderedDict") + b")R"
    p = b"\x80\x02" + odict + b"("
    for k, name in enumerate(names):
        storage = b"(" + s("storage") + g("torch", "FloatStorage") + s(str(k)) + s("cpu") + i(6) + b"tQ"
        p += s(name) + g("torch._utils", "_rebuild_tensor_v2")
        p += b"(" + storage + i(0) + b"(" + i(2) + i(3) + b"t(" + i(3) + i(1) + b"t\x89" + odict + b"tR"
    return p + b"u."


def torch_zip(names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_tensor_dict(names))
        z.writestr("archive/byteorder", "little")
        for k in range(len(names)):
            z.writestr(f"archive/data/{k}", struct.pack("<6f", *range(6)))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def safetensors(tensors):
    header, data, off = {}, b"", 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def main():
    root = sys.argv[1]
    seeds = {"nifti": {}, "safetensors_header": {}, "unpickle": {}, "checkpoint": {}}
    i16 = struct.pack("<24h", *[v * 100 - 1000 for v in range(24)])
    seeds["nifti"]["i16.nii"] = nifti([4, 3, 2], 4, 16, i16)
    seeds["nifti"]["i16.nii.gz"] = gzip.compress(nifti([4, 3, 2], 4, 16, i16), mtime=0)
    seeds["nifti"]["f32_sform.nii"] = nifti([2, 3, 2], 16, 32, struct.pack("<12f", *range(12)), sform=True)
    seeds["nifti"]["u8_be.nii"] = nifti([3, 2, 2], 2, 8, bytes(range(12)), big=True)
    seeds["nifti"]["f64_4d.nii"] = nifti([2, 2, 2, 1], 64, 64, struct.pack("<8d", *range(8)))

    st1 = safetensors([("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                       ("b", "F16", [3], b"\x00\x3c" * 3)])
    st2 = safetensors([("model.w", "BF16", [2, 1], b"\x80\x3f\x00\x40"),
                       ("i", "I64", [1], struct.pack("<q", 7))])
    seeds["safetensors_header"]["two.safetensors"] = st1
    seeds["safetensors_header"]["bf16.safetensors"] = st2

    seeds["unpickle"]["one.pkl"] = pickle_tensor_dict(["w"])
    seeds["unpickle"]["three.pkl"] = pickle_tensor_dict(["model.a", "model.b", "c"])

    seeds["checkpoint"]["one.bin"] = torch_zip(["w"])
    seeds["checkpoint"]["two.pth"] = torch_zip(["module.a", "module.b"])
    seeds["checkpoint"]["st.safetensors"] = st1
    fixtures = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "torch")
    for name in sorted(os.listdir(fixtures)) if os.path.isdir(fixtures) else []:
        if name.endswith((".bin", ".pth")):
            with open(os.path.join(fixtures, name), "rb") as f:
                seeds["checkpoint"]["fixture_" + name] = f.read()

    for target, files in seeds.items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, "seed_" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
