#!/usr/bin/env python3
"""probe_malformed.py [BUILD_DIR]: re-runs the malformed-input probes of the robustness issue against
the built apps (default build/bin) and prints one markdown table of outcomes and peak memory.

A hostile user's inputs, each run as its own process: mutated GeoTIFFs (headers claiming more than the
file holds, a single-strip claim, huge tiles, truncations, random byte flips), mutated checkpoints
(byte flips, truncation, an edited model configuration, a wrapping shape), out-of-range arguments, an
output path naming an input, and NaN pixels. Each probe expects a clean refusal: a non-zero exit
code below 128 (no signal), a message naming the file or option, and nothing written over an input.
Peak memory is the process's maximum resident set (wait4's ru_maxrss). Exit 0 when every probe
behaved, 1 otherwise. Needs only Python's standard library; takes about a minute on 2 cores.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/bin")
ROWS = []  # (group, probe, expected, outcome, ok, peak MiB, seconds)


def run(args):
    """Runs args; returns (exit code or -signal, stderr+stdout text, peak RSS MiB, seconds)."""
    t0 = time.time()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read().decode("utf-8", "replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, out, ru.ru_maxrss / 1024.0, time.time() - t0


def probe(group, name, args, expect_ok=False, must_name=None, keep=None):
    """Runs one probe. expect_ok: must exit 0; else a clean refusal (1 <= code < 128) whose output
    names must_name. keep: a file whose bytes must be unchanged afterwards."""
    before = open(keep, "rb").read() if keep else None
    code, out, mib, sec = run(args)
    last = [l for l in out.strip().splitlines() if l.strip()][-1:] or [""]
    if expect_ok:
        ok = code == 0
        outcome = "ran" if ok else f"exit {code}: {last[0][:90]}"
    else:
        ok = 1 <= code < 128 and (must_name is None or must_name in out)
        outcome = f"exit {code}: {last[0][:90]}" if code >= 0 else f"SIGNAL {-code}"
    if keep is not None and open(keep, "rb").read() != before:
        ok, outcome = False, outcome + " (INPUT CHANGED)"
    ROWS.append((group, name, "runs" if expect_ok else "refused", outcome, ok, mib, sec))
    return code


# ---- TIFF header editing (classic little-endian TIFF, as our writer and GDAL write) ----
def ifd_entries(b):
    assert b[:2] == b"II"
    off = struct.unpack_from("<I", b, 4)[0]
    n = struct.unpack_from("<H", b, off)[0]
    return [(off + 2 + 12 * i,) + struct.unpack_from("<HHI", b, off + 2 + 12 * i) for i in range(n)]


def patch(b, tag, value):
    b = bytearray(b)
    for at, t, typ, count in ifd_entries(b):
        if t == tag:
            if typ == 3:
                struct.pack_into("<H", b, at + 8, value & 0xFFFF)
            else:
                struct.pack_into("<I", b, at + 8, value)
            return bytes(b)
    raise KeyError(tag)


WIDTH, LENGTH, ROWSPERSTRIP, TILEWIDTH, TILELENGTH = 256, 257, 278, 322, 323


def make_tiff(w, h, bands, sample="f", deflate=False, nan_at=None, seed=1):
    """A minimal TIFF, pixel-interleaved, one strip: float32 ("f", values 0.1, a NaN at (band, row,
    column) nan_at) or uint16 ("H", random values: compresses little), uncompressed or deflate."""
    if sample == "f":
        pix = [0.1] * (w * h * bands)
        if nan_at:
            b, r, c = nan_at
            pix[(r * w + c) * bands + b] = float("nan")
    else:
        rnd = random.Random(seed)
        pix = [rnd.randrange(10000) for _ in range(w * h * bands)]
    data = struct.pack(f"<{len(pix)}{sample}", *pix)
    if deflate:
        data = zlib.compress(data, 6)
    bits, fmt = (32, 3) if sample == "f" else (16, 1)
    entries = [(WIDTH, 4, 1, w), (LENGTH, 4, 1, h), (258, 3, bands, None), (259, 3, 1, 8 if deflate else 1),
               (262, 3, 1, 1), (273, 4, 1, None), (277, 3, 1, bands), (ROWSPERSTRIP, 4, 1, h),
               (279, 4, 1, len(data)), (284, 3, 1, 1), (339, 3, bands, None)]
    ifd_at = 8
    bits_at = ifd_at + 2 + 12 * len(entries) + 4
    fmt_at = bits_at + 2 * bands
    data_at = fmt_at + 2 * bands
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        value = {258: bits_at, 339: fmt_at, 273: data_at}.get(tag, value)
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack(f"<{bands}H", *([bits] * bands)) + struct.pack(f"<{bands}H", *([fmt] * bands))
    return bytes(out) + data


def main():
    tmp = tempfile.mkdtemp(prefix="nimbus_probe_")
    try:
        app = lambda name: os.path.join(BIN, name)
        code, out, _, _ = run([app("make_synthetic"), "--out", f"{tmp}/syn", "--eurosat-per-class", "3",
                               "--threads", "1"])
        assert code == 0, out
        eurosat = f"{tmp}/syn/eurosat"
        tile = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(eurosat) for f in fs if f.endswith(".tif"))[0]
        good = open(tile, "rb").read()
        code, out, _, _ = run([app("train_resnet"), "--data", eurosat, "--out", f"{tmp}/run", "--epochs", "1",
                               "--batch-size", "8", "--block", "basic", "--blocks", "1,1,1,1", "--width", "4",
                               "--threads", "1", "--workers", "1", "--norm-samples", "8"])
        assert code == 0, out
        ckpt = f"{tmp}/run/last.safetensors"
        ck = open(ckpt, "rb").read()

        def write(name, data):
            path = f"{tmp}/{name}"
            with open(path, "wb") as f:
                f.write(data)
            return path

        def mask(path, **kw):
            return probe("GeoTIFF", kw.pop("name"), [app("cloud_mask"), "--s2", path, "--out", f"{tmp}/m.tif"],
                         must_name=os.path.basename(path), **kw)

        # ---- GeoTIFFs ----
        probe("GeoTIFF", "a good EuroSAT tile", [app("cloud_mask"), "--s2", tile, "--out", f"{tmp}/m.tif"],
              expect_ok=True)
        mask(write("claims.tif", patch(patch(good, WIDTH, 8000), LENGTH, 8000)),
             name="uncompressed header claiming 8000x8000x13")
        mask(write("rows.tif", patch(good, ROWSPERSTRIP, 1 << 30)), name="RowsPerStrip 2^30")
        mask(write("trunc.tif", good[: len(good) // 2]), name="truncated to half")
        mask(write("empty.tif", b""), name="empty file")
        fx = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "geotiff")
        # 64x64x13 uint16 deflate in one strip (~106 KB): claiming 2000x2000 asks for 104 MB, under the
        # 4096x-the-file size check, so only decoding can tell; as one strip it is the row-by-row check.
        deflate = make_tiff(64, 64, 13, "H", deflate=True)
        mask(write("deflate_one_strip.tif", patch(patch(patch(deflate, WIDTH, 2000), LENGTH, 2000), ROWSPERSTRIP,
                                                  2000)), name="deflate, one strip, claiming 2000x2000x13")
        mask(write("deflate_strips.tif", patch(patch(patch(deflate, WIDTH, 2000), LENGTH, 2000), ROWSPERSTRIP, 16)),
             name="deflate, claiming 2000x2000x13 in 16-row strips")
        tiled = open(os.path.join(fx, "lzw_tiled_uint16.tif"), "rb").read()
        mask(write("tiles.tif", patch(patch(tiled, TILEWIDTH, 65520), TILELENGTH, 65520)),
             name="tile size 65520x65520")
        rng = random.Random(7)
        flips = {"clean error": 0, "read": 0, "crash": 0}
        worst = 0.0
        # The header: the 8-byte preamble and the IFD (wherever the writer put it), where a byte decides sizes.
        ifd = struct.unpack_from("<I", good, 4)[0]
        header = list(range(8)) + list(range(ifd, ifd + 2 + 12 * len(ifd_entries(good)) + 4))
        for i in range(150):
            b = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                b[rng.choice(header)] = rng.randrange(256)
            path = write("flip.tif", bytes(b))
            code, out, mib, _ = run([app("cloud_mask"), "--s2", path, "--out", f"{tmp}/m.tif"])
            worst = max(worst, mib)
            flips["read" if code == 0 else "clean error" if 1 <= code < 128 else "crash"] += 1
        ROWS.append(("GeoTIFF", f"150 tiles with 1-8 of their {len(header)} header bytes changed", "no crash",
                     ", ".join(f"{v} {k}" for k, v in flips.items()), flips["crash"] == 0, worst, 0.0))

        # ---- checkpoints ----
        def classify(path, name, **kw):
            return probe("checkpoint", name, [app("classify"), "--weights", path, "--out", f"{tmp}/p.csv", "--threads",
                                              "1", tile], must_name=os.path.basename(path), **kw)

        classify(ckpt, "the trained checkpoint", expect_ok=True)
        classify(write("ck_trunc.safetensors", ck[: len(ck) * 2 // 3]), "truncated to 2/3")
        hlen = struct.unpack_from("<Q", ck, 0)[0]
        header = json.loads(ck[8:8 + hlen])
        meta = header["__metadata__"]
        cfg = json.loads(meta["model"])
        cfg["blocks"] = [100000000, 1, 1, 1]
        meta_big = dict(meta, model=json.dumps(cfg))

        def with_header(h):
            text = json.dumps(h).encode()
            return struct.pack("<Q", len(text)) + text + ck[8 + hlen:]

        classify(write("ck_config.safetensors", with_header(dict(header, __metadata__=meta_big))),
                 "model config edited to 10^8 blocks")
        name0 = next(k for k in header if k != "__metadata__")
        wrapped = dict(header)
        wrapped[name0] = dict(header[name0], shape=[4, 77558837537, 14865121])
        classify(write("ck_wrap.safetensors", with_header(wrapped)), "a shape whose byte count wraps 2^64")
        crashes, worst = 0, 0.0
        for i in range(60):
            b = bytearray(ck)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            code, out, mib, _ = run([app("classify"), "--weights", write("ck_flip.safetensors", bytes(b)), "--out",
                                     f"{tmp}/p.csv", "--threads", "1", tile])
            worst = max(worst, mib)
            crashes += 1 if code < 0 or code >= 128 else 0
            if code == 0:
                crashes += 1  # a changed byte must never load silently (checksum)
        ROWS.append(("checkpoint", "60 checkpoints with 1-4 random bytes changed", "all refused",
                     f"{60 - crashes} refused cleanly", crashes == 0, worst, 0.0))

        # ---- arguments ----
        base = [app("train_resnet"), "--data", eurosat, "--out", f"{tmp}/args", "--epochs", "1", "--threads", "1"]
        for opt, val in [("--workers", "100000"), ("--width", "4294967304"), ("--batch-size", "-3"),
                         ("--lr", "nan"), ("--milestones", "-5"), ("--epochs", "abc")]:
            probe("arguments", f"train_resnet {opt} {val}", base + [opt, val], must_name=opt.lstrip("-"))
        probe("arguments", "cloud_mask --threshold 5",
              [app("cloud_mask"), "--s2", tile, "--out", f"{tmp}/m.tif", "--threshold", "5"], must_name="threshold")

        # ---- outputs over inputs, NaN inputs ----
        victim = write("victim.tif", good)
        probe("outputs", "cloud_mask --out naming its --s2", [app("cloud_mask"), "--s2", victim, "--out", victim],
              must_name="victim.tif", keep=victim)
        probe("outputs", "classify --out naming its --weights",
              [app("classify"), "--weights", ckpt, "--out", ckpt, "--threads", "1", tile], must_name="last.safetensors",
              keep=ckpt)
        nan = write("nan.tif", make_tiff(64, 64, 13, nan_at=(5, 20, 31)))
        probe("inputs", "classify: one NaN pixel (band 6, row 21, column 32)",
              [app("classify"), "--weights", ckpt, "--out", f"{tmp}/p.csv", "--threads", "1", nan], must_name="nan.tif")
        probe("inputs", "cloud_mask: the same file", [app("cloud_mask"), "--s2", nan, "--out", f"{tmp}/m.tif"],
              must_name="nan.tif")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("| input | probe | expected | outcome | ok | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for g, n, e, o, ok, mib, sec in ROWS:
        o = o.replace(tmp + "/", "").replace("|", "/")
        print(f"| {g} | {n} | {e} | {o} | {'yes' if ok else '**NO**'} | {mib:.0f} |")
    bad = [r for r in ROWS if not r[4]]
    malformed = [r for r in ROWS if r[2] != "runs"]
    print(f"\n{len(ROWS) - len(bad)} of {len(ROWS)} probes behaved; peak RSS over the malformed inputs: "
          f"{max(r[5] for r in malformed):.0f} MiB")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
