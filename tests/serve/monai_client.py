"""Drives a running `segvol serve` with MONAI Label's own client.

Run by scripts/ci-serve.sh in a venv holding monailabel (installed with
--no-deps: only its client module is used) and requests. It starts the server
on a free port with the weights given, uploads a synthetic CT, runs both
models with text, click and box prompts through
`monailabel.client.MONAILabelClient`, reads every returned label map back
(NIfTI and NRRD, parsed here so no imaging package is needed), checks its
geometry against the CT's, and checks its voxels equal what
`segvol segment` writes for the same prompts.

Usage: monai_client.py SEGVOL_BIN WEIGHTS WORKDIR
"""

import gzip
import json
import os
import re
import struct
import subprocess
import sys
import time

from monailabel.client import MONAILabelClient

SEGVOL, WEIGHTS, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
DIMS = (48, 40, 24)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (120.0, -30.5, 40.0)


def write_ct(path):
    """A NIfTI-1 int16 CT: a bright ellipsoid in air, with an affine that
    flips x and shifts the origin (sform), so geometry errors show."""
    nx, ny, nz = DIMS
    vox = bytearray()
    for k in range(nz):
        for j in range(ny):
            for i in range(nx):
                d = ((i - 24) / 16) ** 2 + ((j - 20) / 12) ** 2 + ((k - 12) / 8) ** 2
                v = 40 + (i * 7 + j * 3 + k * 11) % 60 if d < 1 else -900 + (i + j) % 5
                vox += struct.pack("<h", v)
    srow_x = (-SPACING[0], 0.0, 0.0, ORIGIN[0])
    srow_y = (0.0, SPACING[1], 0.0, ORIGIN[1])
    srow_z = (0.0, 0.0, SPACING[2], ORIGIN[2])
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 4, 16)  # int16
    struct.pack_into("<8f", h, 76, 1.0, *SPACING, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<ff", h, 112, 1.0, 0.0)
    struct.pack_into("<hh", h, 252, 0, 1)  # qform 0, sform 1
    struct.pack_into("<4f", h, 280, *srow_x)
    struct.pack_into("<4f", h, 296, *srow_y)
    struct.pack_into("<4f", h, 312, *srow_z)
    h[344:348] = b"n+1\0"
    with gzip.open(path, "wb") as f:
        f.write(bytes(h) + b"\0" * 4 + bytes(vox))


def read_nifti(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = struct.unpack_from("<8h", raw, 40)[1:4]
    datatype, bitpix = struct.unpack_from("<hh", raw, 70)
    off = int(struct.unpack_from("<f", raw, 108)[0])
    srows = [struct.unpack_from("<4f", raw, o) for o in (280, 296, 312)]
    n = dims[0] * dims[1] * dims[2]
    assert datatype == 2 and bitpix == 8, (datatype, bitpix)
    return {"dims": tuple(dims), "srows": srows, "data": raw[off : off + n]}


def read_nrrd(path):
    raw = open(path, "rb").read()
    head, body = raw.split(b"\n\n", 1)
    fields = dict(
        line.split(": ", 1) for line in head.decode().splitlines()[1:] if ": " in line
    )
    assert fields["type"] == "uint8" and fields["encoding"] == "gzip", fields
    dims = tuple(int(x) for x in fields["sizes"].split())
    vecs = [
        tuple(float(x) for x in v.split(","))
        for v in re.findall(r"\(([^)]*)\)", fields["space directions"])
    ]
    origin = tuple(float(x) for x in re.findall(r"\(([^)]*)\)", fields["space origin"])[0].split(","))
    assert fields["space"] == "left-posterior-superior", fields
    # LPS -> RAS rows, as an sform.
    srows = []
    for r in range(3):
        sign = -1.0 if r < 2 else 1.0
        srows.append(tuple(sign * vecs[c][r] for c in range(3)) + (sign * origin[r],))
    return {"dims": dims, "srows": srows, "data": gzip.decompress(body)}


def check_geometry(got, what):
    assert got["dims"] == DIMS, (what, got["dims"])
    want = [
        (-SPACING[0], 0.0, 0.0, ORIGIN[0]),
        (0.0, SPACING[1], 0.0, ORIGIN[1]),
        (0.0, 0.0, SPACING[2], ORIGIN[2]),
    ]
    for r in range(3):
        for c in range(4):
            assert abs(got["srows"][r][c] - want[r][c]) < 1e-4, (what, got["srows"], want)


def segment_cli(ct, args, out):
    cmd = [SEGVOL, "segment", ct, "-o", out, "--weights", WEIGHTS, "--device", "cpu"] + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return read_nifti(out)


def start_server(*extra):
    log = open(os.path.join(WORK, "serve.log"), "w+")
    proc = subprocess.Popen(
        [SEGVOL, "serve", "--weights", WEIGHTS, "--device", "cpu", "--port", "0", *extra],
        stderr=log,
        stdout=log,
    )
    for _ in range(600):
        log.seek(0)
        # The trailing space: the address is complete, not a partly written line.
        m = re.search(r"listening on (http://[0-9.:]+) ", log.read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    log.seek(0)
    proc.kill()
    sys.exit("segvol serve did not start:\n" + log.read())


def main():
    os.makedirs(WORK, exist_ok=True)
    ct = os.path.join(WORK, "ct.nii.gz")
    write_ct(ct)
    proc, url = start_server()
    checks = 0
    try:
        client = MONAILabelClient(url, tmpdir=WORK, client_id="segvol-ci")
        assert not client.auth_enabled()
        info = client.info()
        assert "config" not in info
        assert info["models"]["segvol"]["type"] == "segmentation"
        dg = info["models"]["segvol_interactive"]
        assert dg["type"] == "deepgrow" and dg["dimension"] == 3
        assert "liver" in info["labels"] and len(info["labels"]) > 200

        assert client.upload_image(ct, image_id="case1")["image"] == "case1"
        session = client.create_session(ct)["session_id"]
        assert client.get_session(session)["name"] == session

        cases = [
            # (params, the same prompts for `segvol segment`)
            ({"label": "liver"}, ["--text", "liver"]),
            (
                {"label": "liver", "foreground": [[24, 20, 12]]},
                ["--text", "liver", "--point", "24,20,12,1"],
            ),
            (
                # The extension's roi: (i, j, k) min/max pairs, here swapped.
                {"foreground": [[20, 18, 10]], "background": [[10, 10, 12]], "roi": [40, 8, 8, 32, 20, 4]},
                ["--point", "20,18,10,1", "--point", "10,10,12,0", "--box", "8,8,4,40,32,20"],
            ),
        ]
        for n, (params, cli) in enumerate(cases):
            want = segment_cli(ct, cli, os.path.join(WORK, f"cli{n}.nii.gz"))
            for ext, reader in ((".nii.gz", read_nifti), (".nrrd", read_nrrd)):
                for where in ({"image_id": "case1"}, {"image_id": "", "session_id": session}):
                    p = dict(params, result_extension=ext, result_dtype="uint8")
                    out, reply = client.infer("segvol_interactive", params=p, **where)
                    got = reader(out)
                    check_geometry(got, (n, ext))
                    assert got["data"] == want["data"], (n, ext, where, "mask differs from segvol segment")
                    assert reply["label_names"] == {params.get("label", "object"): 1}, reply
                    os.unlink(out)
                    checks += 1
            assert sum(want["data"]) > 0 or n == 0, "an empty mask checks nothing"

        # The automatic model: the named categories as one label map.
        want = segment_cli(ct, ["--text", "liver", "--text", "spleen"], os.path.join(WORK, "auto.nii.gz"))
        out, reply = client.infer("segvol", "case1", {"labels": ["liver", "spleen"]})
        got = read_nifti(out)
        check_geometry(got, "auto")
        assert got["data"] == want["data"], "segvol model differs from segvol segment"
        assert reply["label_names"] == {"liver": 1, "spleen": 2}, reply
        checks += 1

        # Errors reach the client as exceptions with the server's reason.
        try:
            client.infer("segvol_interactive", "case1", {"foreground": [[999, 1, 1]]})
            raise AssertionError("a click outside the image was accepted")
        except Exception as e:  # MONAILabelClientException
            assert "400" in str(e), e
        try:
            client.get_session("no-such-session")
            raise AssertionError("an unknown session was found")
        except Exception as e:
            assert "404" in str(e), e
        client.remove_session(session)
        checks += 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"monai_client.py: {checks} checks passed against {url}")


def token_login():
    """With --token, the client discovers auth, logs in with the token as
    its password, and is refused without it."""
    proc, url = start_server("--token", "ci-token")
    try:
        client = MONAILabelClient(url, tmpdir=WORK)
        assert client.auth_enabled()
        assert not client.auth_valid_token()
        try:
            client.info()
            raise AssertionError("info without the token was served")
        except Exception as e:
            assert "401" in str(e), e
        try:
            client.auth_token("anyone", "wrong")
            raise AssertionError("a wrong password was accepted")
        except Exception as e:
            assert "401" in str(e), e
        client.update_auth(client.auth_token("anyone", "ci-token"))
        assert client.auth_valid_token()
        assert "segvol_interactive" in client.info()["models"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print("monai_client.py: token login checks passed")


main()
token_login()
