"""Cross-checks segvol's Blosc2/NNIA codec against python-blosc2 and the
nnInteractive client's own serialization.

    blosc2_vectors.py gen DIR    arrays packed by the client (and by blosc2 with
                                 other settings) -> DIR/*.nnia, DIR/*.raw, DIR/manifest.json
    blosc2_vectors.py check DIR  masks packed by segvol (DIR/out/) read back with
                                 the client's unpack_array and blosc2.decompress2

The Rust side is the test `serve::nninteractive::crosscheck` (NNIA_CROSSCHECK_DIR=DIR).
"""

import json
import os
import struct
import sys

import blosc2
import numpy as np
from nnInteractive.inference.remote.serialization import pack_array, unpack_array

DTYPES = ["uint8", "int16", "float32", "float64"]
SHAPES = [(0,), (1,), (7,), (3, 5, 7), (1, 33, 65, 47), (1, 24, 96, 101)]
CODECS = {"zstd": blosc2.Codec.ZSTD, "lz4": blosc2.Codec.LZ4}
FILTERS = {"nofilter": blosc2.Filter.NOFILTER, "shuffle": blosc2.Filter.SHUFFLE}


def sample(dtype, shape, kind):
    n = int(np.prod(shape))
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "random":
        rng = np.random.default_rng(n)
        return rng.integers(0, 255, size=n).astype(dtype).reshape(shape)
    # A CT-like ramp with structure: compresses, not trivially.
    i = np.arange(n, dtype=np.float64)
    v = (np.sin(i / 37.0) * 900 + (i % 97) - 300).astype(dtype)
    return v.reshape(shape)


def container(arr, chunks):
    """The NNIA container around pre-compressed chunks (what pack_array writes)."""
    name = arr.dtype.name.encode()
    out = [struct.pack(f"<4sBBBB{len(name)}s", b"NNIA", 1, 1, arr.ndim, len(name), name)]
    out.append(struct.pack(f"<{arr.ndim}q", *arr.shape))
    out.append(struct.pack("<I", len(chunks)))
    for ulen, c in chunks:
        out.append(struct.pack("<QQ", ulen, len(c)))
        out.append(c)
    return b"".join(out)


def gen(d):
    os.makedirs(d, exist_ok=True)
    cases = []

    def add(name, arr, body, expect="ok"):
        with open(os.path.join(d, name + ".nnia"), "wb") as f:
            f.write(body)
        np.ascontiguousarray(arr).tofile(os.path.join(d, name + ".raw"))
        cases.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), "expect": expect})

    for dt in DTYPES:
        for shape in SHAPES:
            for kind in ("ramp", "zeros", "random"):
                arr = sample(dt, shape, kind)
                for cn, codec in CODECS.items():
                    for fn, flt in FILTERS.items():
                        tag = f"{dt}_{'x'.join(map(str, shape))}_{kind}_{cn}_{fn}"
                        add(tag, arr, pack_array(arr, codec=codec, filters=[flt]))
                    # The client's default: the filter picked per image.
                    add(f"{dt}_{'x'.join(map(str, shape))}_{kind}_{cn}_auto", arr, pack_array(arr, codec=codec))
    # Layouts the client's defaults may not hit: small blocks (many per chunk),
    # forced split / unsplit streams, memcpyed (clevel 0), several chunks.
    arr = sample("float32", (1, 20, 64, 67), "ramp")
    raw = arr.tobytes()
    for cn, codec in CODECS.items():
        for split in (blosc2.SplitMode.ALWAYS_SPLIT, blosc2.SplitMode.NEVER_SPLIT):
            for bs in (4096, 65536):
                c = blosc2.compress2(raw, typesize=4, codec=codec, clevel=5,
                                     filters=[blosc2.Filter.SHUFFLE], splitmode=split, blocksize=bs)
                add(f"layout_{cn}_{split.name}_{bs}", arr, container(arr, [(len(raw), c)]))
        c = blosc2.compress2(raw, typesize=4, codec=codec, clevel=0)
        add(f"layout_{cn}_memcpyed", arr, container(arr, [(len(raw), c)]))
        half = len(raw) // 2
        parts = [(half, blosc2.compress2(raw[:half], typesize=4, codec=codec)),
                 (len(raw) - half, blosc2.compress2(raw[half:], typesize=4, codec=codec))]
        add(f"layout_{cn}_two_chunks", arr, container(arr, parts))
        c = blosc2.compress2(raw, typesize=4, codec=codec, filters=[blosc2.Filter.BITSHUFFLE])
        add(f"layout_{cn}_bitshuffle", arr, container(arr, [(len(raw), c)]), expect="error:BITSHUFFLE")
    c = blosc2.compress2(raw, typesize=4, codec=blosc2.Codec.BLOSCLZ)
    add("layout_blosclz", arr, container(arr, [(len(raw), c)]), expect="error:BLOSCLZ")
    full = np.full((3, 50, 70), 7.5, dtype=np.float32)
    add("repeated_value", full, pack_array(full))
    nan = np.full((1000,), np.nan, dtype=np.float64)
    add("nan_run", nan, pack_array(nan))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(cases, f)
    print(f"blosc2_vectors: {len(cases)} arrays written to {d} (blosc2 {blosc2.__version__})")


def check(d):
    out = os.path.join(d, "out")
    with open(os.path.join(out, "manifest.json")) as f:
        cases = json.load(f)
    assert cases, "segvol wrote no arrays"
    for c in cases:
        body = open(os.path.join(out, c["name"] + ".nnia"), "rb").read()
        want = np.fromfile(os.path.join(out, c["name"] + ".raw"), dtype=c["dtype"]).reshape(c["shape"])
        got = unpack_array(body)
        assert got.dtype == want.dtype and got.shape == want.shape, (c, got.dtype, got.shape)
        assert np.array_equal(got, want), c["name"]
        # The chunk alone, through blosc2's own entry points.
        name_len = body[7]
        off = 8 + name_len + 8 * len(c["shape"]) + 4
        if struct.unpack_from("<I", body, off - 4)[0] == 0:
            assert want.size == 0, c["name"]  # the client writes no chunk for no bytes
            continue
        ulen, clen = struct.unpack_from("<QQ", body, off)
        chunk = body[off + 16: off + 16 + clen]
        nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(chunk)
        assert nbytes == ulen and cbytes == clen, (c["name"], nbytes, ulen, cbytes, clen)
        assert blosc2.decompress2(chunk) == want.tobytes()[:ulen], c["name"]
    print(f"blosc2_vectors: {len(cases)} segvol-encoded arrays read back by the client and python-blosc2")


if __name__ == "__main__":
    {"gen": gen, "check": check}[sys.argv[1]](sys.argv[2])
