"""Drives a running `segvol serve` with nnInteractive's own remote client and
checks every mask it receives against `segvol segment` for the same prompts.

    test_remote.py SEGVOL_BIN WEIGHTS WORKDIR

The client speaks of voxels of the uploaded array (1, A0, A1, A2); the CT
handed to the CLI is the same bytes as a NIfTI volume of dims (A2, A1, A0),
so a client voxel (a0, a1, a2) is the CLI's --point a2,a1,a0 and a half-open
client box [[l0, h0], [l1, h1], [l2, h2]] is --box l2,l1,l0,h2-1,h1-1,h0-1.
"""

import os
import re
import struct
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
from nnInteractive.inference.remote import (
    ServerAtCapacityError,
    SessionExpiredError,
    nnInteractiveRemoteInferenceSession,
)

SEGVOL, WEIGHTS, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
TOKEN = "nnia-test-token"
SHAPE = (24, 48, 40)  # (A0, A1, A2)


def ct_array():
    """An int16 CT-like volume: air, a body with structure, a brighter organ."""
    a0, a1, a2 = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    v = np.full(SHAPE, -1000, dtype=np.int16)
    body = ((a1 - 24) ** 2 / 20.0**2 + (a2 - 20) ** 2 / 17.0**2) < 1
    v[body] = (20 + (a0 * 7 + a1 * 3 + a2 * 5) % 60)[body]
    organ = ((a0 - 12) ** 2 / 8.0**2 + (a1 - 22) ** 2 / 9.0**2 + (a2 - 18) ** 2 / 7.0**2) < 1
    v[organ] = (150 + (a1 + a2) % 20)[organ]
    return v


def write_nifti(path, arr):
    """NIfTI-1 of dims (A2, A1, A0) holding `arr`'s C-order bytes (file order)."""
    dims = arr.shape[::-1]
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)  # int16
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    struct.pack_into("<hh", hdr, 252, 0, 1)  # qform, sform codes
    for r, row in enumerate(((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0))):
        struct.pack_into("<4f", hdr, 280 + 16 * r, *row)
    hdr[344:348] = b"n+1\0"
    with open(path, "wb") as f:
        f.write(bytes(hdr) + b"\0\0\0\0" + arr.astype("<i2").tobytes())


def read_label_map(path):
    """A label map written by segvol (.nii): back to client axes (A0, A1, A2)."""
    raw = open(path, "rb").read()
    dims = struct.unpack_from("<8h", raw, 40)
    datatype = struct.unpack_from("<h", raw, 70)[0]
    off = int(struct.unpack_from("<f", raw, 108)[0])
    assert datatype == 2, f"expected a uint8 label map, got NIfTI datatype {datatype}"
    n = dims[1] * dims[2] * dims[3]
    return np.frombuffer(raw, dtype=np.uint8, count=n, offset=off).reshape(dims[3], dims[2], dims[1])


def cli_mask(name, args):
    out = os.path.join(WORK, name + ".nii")
    cmd = [SEGVOL, "segment", CT, "-o", out, "--weights", WEIGHTS] + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return read_label_map(out)


def check(name, buf, args):
    want = cli_mask(name, args)
    assert buf.shape == want.shape
    assert np.array_equal(buf, want), (
        f"{name}: the client's buffer differs from `segvol segment {' '.join(args)}` "
        f"in {(buf != want).sum()} voxels ({buf.sum()} vs {want.sum()} foreground)"
    )
    print(f"  {name}: {int(want.sum())} foreground voxels, equal to segvol segment {' '.join(args)}")
    return int(want.sum())


def start_server():
    proc = subprocess.Popen(
        [SEGVOL, "serve", "--port", "0", "--weights", WEIGHTS, "--token", TOKEN, "--max-sessions", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("segvol serve did not start:\n" + "".join(lines))


CT = os.path.join(WORK, "ct.nii")


def main():
    os.makedirs(WORK, exist_ok=True)
    img = ct_array()
    write_nifti(CT, img)
    proc, url = start_server()
    try:
        run(url, img)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def run(url, img):
    # The token is required (the client sends it as a bearer token).
    r = httpx.get(url + "/capabilities")
    assert r.status_code == 401, r.status_code
    s = nnInteractiveRemoteInferenceSession(url, api_key=TOKEN)
    assert s.ping()
    assert s.supported_interactions["points"] and s.supported_interactions["bbox2d"]
    assert not s.supported_interactions["scribble"]
    caps = s._get_json("/capabilities")
    assert "liver" in caps["segvol"]["categories"]

    s.set_image(img[None], {"spacing": [1.0, 1.0, 1.0]})
    assert s.original_image_shape == (1,) + SHAPE
    buf = np.zeros(SHAPE, dtype=np.uint8)
    s.set_target_buffer(buf)

    # Clicks accumulate: a positive one, then a negative one.
    s.add_point_interaction((20, 30, 30), include_interaction=True)
    check("point", buf, ["--point", "30,30,20"])
    # The axis order matters: this click with its axes not reversed lies
    # outside the volume (k = 30 of 24), which the CLI refuses. (The tiny
    # synthetic weights give masks that barely depend on where a click is,
    # so the mask comparison alone would not show a wrong order.)
    r = subprocess.run([SEGVOL, "segment", CT, "-o", os.path.join(WORK, "x.nii"), "--weights", WEIGHTS,
                        "--point", "20,30,30"], capture_output=True, text=True)
    assert r.returncode != 0 and "outside the volume" in r.stderr, r.stderr
    s.add_point_interaction((12, 30, 26), include_interaction=False)
    n_two = check("point_neg", buf, ["--point", "30,30,20", "--point", "26,30,12,0"])

    # A new object: the buffer is cleared and prompts start afresh.
    s.reset_interactions()
    assert buf.sum() == 0
    # A thin (2D) box drawn on slice a0 = 12, then a click inside it. (Its
    # axes not reversed, the box would reach k = 29 of 24 and be refused.)
    s.add_bbox_interaction([[12, 13], [10, 36], [8, 30]], include_interaction=True)
    n_box = check("thin_box", buf, ["--box", "8,10,12,29,35,12"])
    s.add_point_interaction((12, 22, 18), include_interaction=True)
    check("thin_box_point", buf, ["--box", "8,10,12,29,35,12", "--point", "18,22,12"])

    # SegVol's extension: a text prompt joins the box and the click.
    resp = s._post_json("/add_text_interaction", {"text": "liver"})
    assert s._apply_prediction_response(resp)
    check("text_box_point", buf, ["--text", "liver", "--box", "8,10,12,29,35,12", "--point", "18,22,12"])

    # Prompts queued without a prediction, then /predict: one result.
    s.reset_interactions()
    s.add_point_interaction((10, 20, 15), include_interaction=True, run_prediction=False)
    s.add_bbox_interaction([[4, 20], [10, 36], [8, 30]], include_interaction=True, run_prediction=False)
    assert buf.sum() == 0
    assert s._predict() is not None
    n_3d = check("queued_3d_box_point", buf, ["--point", "15,20,10", "--box", "8,10,4,29,35,19"])

    # Unsupported interactions and bad requests: clear 4xx, the session lives on.
    for path, body in [("/add_scribble_interaction", None), ("/undo", {})]:
        r = s._http.post(path, json=body or {})
        assert r.status_code == 400 and "not supported" in r.json()["detail"], (path, r.text)
    r = s._http.post("/add_bbox_interaction", json={"bbox_coords": [[0, 1]], "include_interaction": True})
    assert r.status_code == 400, r.text
    r = s._http.post("/add_point_interaction", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert s.lease_status()["remaining_seconds"] > 0

    # Capacity: two sessions at most (--max-sessions 2).
    s2 = nnInteractiveRemoteInferenceSession(url, api_key=TOKEN)
    try:
        nnInteractiveRemoteInferenceSession(url, api_key=TOKEN)
        raise AssertionError("a third session was granted")
    except ServerAtCapacityError:
        pass
    s2.close()

    lease = s._lease_token
    s.close()
    # A released lease is gone (410).
    r = httpx.post(url + "/heartbeat", headers={"Authorization": f"Bearer {TOKEN}", "X-Lease-Token": lease})
    assert r.status_code == 410, r.status_code
    try:
        s3 = nnInteractiveRemoteInferenceSession(url, api_key=TOKEN)
        s3._http.headers["X-Lease-Token"] = lease
        s3.heartbeat()
        raise AssertionError("an expired lease was accepted")
    except SessionExpiredError:
        pass
    print(
        f"nninteractive remote test: passed (foreground voxels: two clicks {n_two}, "
        f"thin box {n_box}, 3D box + click {n_3d})"
    )


if __name__ == "__main__":
    main()
