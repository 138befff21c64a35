"""Latency per click over HTTP, volume resident: nnInteractive's own client
against a running `segvol serve`.

    bench_clicks.py URL CT.nii[.gz] [--clicks N] [--token T]

Uploads the CT as the viewers do (1, K, J, I), makes one click to encode it,
then N clicks at different places inside the body (each a positive point on
a fresh object, so each runs the network once with the embeddings cached).
Prints the client's wall time per click and the server's model time
(`segvol_model_ms` in X-Meta): the difference is what the protocol costs
(HTTP, JSON, the mask diff and its Blosc2 encoding and decoding).
"""

import argparse
import gzip
import json
import struct
import time

import numpy as np
from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

NIFTI_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16}


def read_nifti(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = struct.unpack_from("<8h", raw, 40)
    dt = NIFTI_DTYPES[struct.unpack_from("<h", raw, 70)[0]]
    off = int(struct.unpack_from("<f", raw, 108)[0])
    slope, inter = struct.unpack_from("<ff", raw, 112)
    n = dims[1] * dims[2] * dims[3]
    a = np.frombuffer(raw, dtype=dt, count=n, offset=off).reshape(dims[3], dims[2], dims[1])
    if slope not in (0.0, 1.0) or inter != 0.0:
        a = (a * (slope or 1.0) + inter).astype(np.float32)
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("ct")
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--token")
    a = ap.parse_args()
    img = read_nifti(a.ct)
    s = nnInteractiveRemoteInferenceSession(a.url, api_key=a.token)
    t = time.perf_counter()
    s.set_image(img[None])
    upload = time.perf_counter() - t
    buf = np.zeros(img.shape, dtype=np.uint8)
    s.set_target_buffer(buf)

    # Clicks on voxels brighter than fat, spread over the volume.
    rng = np.random.default_rng(0)
    cand = np.argwhere(img > -100)
    picks = cand[rng.choice(len(cand), size=a.clicks + 1, replace=False)]

    def click(p):
        s.reset_interactions()
        t = time.perf_counter()
        resp = s._post_json("/add_point_interaction", {"coordinates": [int(v) for v in p], "include_interaction": True})
        s._apply_prediction_response(resp)
        wall = (time.perf_counter() - t) * 1e3
        meta = json.loads(resp.headers["X-Meta"])
        return wall, meta["segvol_model_ms"], len(resp.content)

    cold = click(picks[0])
    rows = [click(p) for p in picks[1:]]
    s.close()
    wall = np.array([r[0] for r in rows])
    model = np.array([r[1] for r in rows])
    over = wall - model
    q = lambda x: (np.median(x), np.percentile(x, 99))
    print(f"CT {img.shape} {img.dtype}; upload + set_image {upload * 1e3:.0f} ms; "
          f"first click (encodes) {cold[0]:.0f} ms (model {cold[1]:.0f} ms)")
    print(f"{len(rows)} clicks, volume resident   median     p99")
    print(f"  client wall time per click   {q(wall)[0]:8.1f} {q(wall)[1]:8.1f} ms")
    print(f"  server model time            {q(model)[0]:8.1f} {q(model)[1]:8.1f} ms")
    print(f"  protocol overhead            {q(over)[0]:8.1f} {q(over)[1]:8.1f} ms")
    print(f"  reply body                   {np.median([r[2] for r in rows]):8.0f} bytes (median)")


if __name__ == "__main__":
    main()
