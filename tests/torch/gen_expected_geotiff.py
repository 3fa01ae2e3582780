#!/usr/bin/python3
"""gen_expected_geotiff.py: expected values for the GeoTIFF reader, from independent readers.

Run with Debian's /usr/bin/python3 (rasterio 1.3 / GDAL 3.6, tifffile). It
  1. writes small format fixtures with GDAL (via rasterio) into tests/fixtures/geotiff/: the layouts
     the real files do not have (tiled, band-interleaved, LZW, Deflate with predictors, int16, RGB+alpha
     uint8, sparse files whose empty blocks are not stored), so the C++ reader is checked against a
     writer that is not ours;
  2. reads every .tif under /work/shared/fixtures and tests/fixtures/geotiff with rasterio (pixels,
     stats, a window and its transform) and tifffile (raw GeoTIFF tags), and writes
     tests/fixtures/geotiff/expected.json. The C++ test globs the .tif files at test time and fails on
     any file that has no entry here.
"""
import glob
import json
import os

import numpy as np
import rasterio
import tifffile
from rasterio.transform import Affine
from rasterio.windows import Window

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "tests", "fixtures", "geotiff")
SHARED = os.path.abspath(os.path.join(REPO, "..", "shared"))


def smooth(rng, bands, h, w):
    """Spatially smooth random fields (cumulative sums), so tile seams would show in a wrong read."""
    x = rng.standard_normal((bands, h, w)).cumsum(1).cumsum(2)
    return (x - x.min()) / (x.max() - x.min() + 1e-12)


def write_format_fixtures():
    rng = np.random.default_rng(20261124)
    crs = "EPSG:32631"
    tr = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5700000.0)
    cases = [
        # name, dtype, bands, h, w, creation options
        ("lzw_tiled_uint16.tif", "uint16", 3, 37, 45,
         dict(tiled=True, blockxsize=16, blockysize=16, compress="lzw", predictor=2, interleave="pixel")),
        ("deflate_stripped_separate_int16.tif", "int16", 2, 33, 40,
         dict(tiled=False, blockysize=5, compress="deflate", interleave="band")),
        ("deflate_tiled_separate_float32.tif", "float32", 2, 35, 50,
         dict(tiled=True, blockxsize=16, blockysize=32, compress="deflate", predictor=3, interleave="band")),
        ("lzw_stripped_uint8_rgba.tif", "uint8", 4, 20, 27,
         dict(tiled=False, blockysize=3, compress="lzw", interleave="pixel", photometric="RGB", alpha="YES")),
        ("none_tiled_uint16.tif", "uint16", 13, 24, 33,
         dict(tiled=True, blockxsize=16, blockysize=16, interleave="pixel")),
        # The wider types a user's own pipeline writes (numpy's float64, int32 label maps, GDAL's Int8):
        # read as float32, so the expected values below are float32's.
        ("deflate_tiled_separate_float64.tif", "float64", 2, 30, 35,
         dict(tiled=True, blockxsize=16, blockysize=16, compress="deflate", predictor=3, interleave="band")),
        ("lzw_stripped_int32.tif", "int32", 2, 25, 30,
         dict(tiled=False, blockysize=7, compress="lzw", predictor=2, interleave="pixel")),
        ("none_stripped_uint32.tif", "uint32", 1, 20, 21, dict(tiled=False, blockysize=4)),
        ("deflate_stripped_int8.tif", "int8", 3, 19, 23, dict(tiled=False, blockysize=5, compress="deflate")),
    ]
    for name, dtype, bands, h, w, opts in cases:
        f = smooth(rng, bands, h, w)
        if dtype == "uint16":
            a = (f * 12000).astype(np.uint16)
        elif dtype == "int16":
            a = (f * 60000 - 30000).astype(np.int16)
        elif dtype == "uint8":
            a = (f * 255).astype(np.uint8)
        elif dtype == "float64":
            a = f * 1e6 - 3.3e5  # digits past float32's
        elif dtype == "int32":
            a = (f * 4e9 - 2e9).astype(np.int32)  # past 2^24
        elif dtype == "uint32":
            a = (f * 4e9).astype(np.uint32)
        elif dtype == "int8":
            a = (f * 255 - 128).astype(np.int8)
        else:
            a = (f * 35 - 35).astype(np.float32)
        with rasterio.open(os.path.join(OUT, name), "w", driver="GTiff", width=w, height=h, count=bands,
                           dtype=dtype, crs=crs, transform=tr, **opts) as dst:
            dst.write(a)


def write_sparse_fixtures():
    """Files with blocks GDAL does not store (SPARSE_OK=TRUE omits a block that is all nodata, or all 0
    without a nodata value: offset and byte count 0). GDAL reads such a block as nodata, or 0."""
    rng = np.random.default_rng(20261207)
    crs = "EPSG:32631"
    tr = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5700000.0)
    # Deflate, 16x16 tiles, pixel-interleaved, nodata 65535 (outside the data): tiles (0, 0) and (1, 2)
    # are left out; the describe() window crosses the first.
    a = (smooth(rng, 3, 40, 50) * 12000).astype(np.uint16)
    a[:, 0:16, 0:16] = 65535
    a[:, 16:32, 32:48] = 65535
    with rasterio.open(os.path.join(OUT, "sparse_deflate_tiled_uint16.tif"), "w", driver="GTiff", width=50,
                       height=40, count=3, dtype="uint16", crs=crs, transform=tr, nodata=65535, tiled=True,
                       blockxsize=16, blockysize=16, compress="deflate", predictor=2, interleave="pixel",
                       sparse_ok=True) as dst:
        dst.write(a)
    # Uncompressed strips of 5 rows, band-interleaved, no nodata value (so missing strips read as 0):
    # band 1's strips 0-2 and band 2's strips 2 and 5 are left out; the data is never 0.
    b = (smooth(rng, 2, 33, 40) * 60000 - 30000).astype(np.int16)
    b[b == 0] = 1
    b[0, 0:15, :] = 0
    b[1, 10:15, :] = 0
    b[1, 25:30, :] = 0
    with rasterio.open(os.path.join(OUT, "sparse_stripped_separate_int16.tif"), "w", driver="GTiff", width=40,
                       height=33, count=2, dtype="int16", crs=crs, transform=tr, tiled=False, blockysize=5,
                       interleave="band", sparse_ok=True) as dst:
        dst.write(b)


def positions(h, w):
    return [(0, 0), (h - 1, w - 1), (h // 2, w // 3), (h // 3, w - 2), (1, 2), (h - 2, 0)]


def describe(path):
    e = {}
    with rasterio.open(path) as src:
        a = src.read().astype(np.float32)  # (bands, h, w), as every reader of ours holds it (exact up to 2^24)
        h, w = src.height, src.width
        e.update(width=w, height=h, bands=src.count, dtype=src.dtypes[0])
        d = a.astype(np.float64)
        e["min"] = [float(v) for v in d.min(axis=(1, 2))]
        e["max"] = [float(v) for v in d.max(axis=(1, 2))]
        e["mean"] = [float(v) for v in d.mean(axis=(1, 2))]
        e["pixels"] = [{"row": r, "col": c, "values": [float(v) for v in d[:, r, c]]} for r, c in positions(h, w)]
        win = Window(col_off=w // 4, row_off=h // 3, width=w // 2, height=h // 3)
        wa = src.read(window=win).astype(np.float32).astype(np.float64)
        wt = src.window_transform(win)
        e["window"] = {"x0": w // 4, "y0": h // 3, "width": w // 2, "height": h // 3,
                       "mean": [float(v) for v in wa.mean(axis=(1, 2))],
                       "first": [float(v) for v in wa[:, 0, 0]],
                       "origin": [wt.c, wt.f]}
        e["origin"] = [src.transform.c, src.transform.f]
    with tifffile.TiffFile(path) as t:
        p = t.pages[0]
        tags = {}
        for code, key in [(33550, "pixel_scale"), (33922, "tiepoints"), (34264, "transformation"),
                          (34735, "geokeys"), (34736, "geo_double_params"), (34737, "geo_ascii_params")]:
            if code in p.tags:
                v = p.tags[code].value
                tags[key] = v if isinstance(v, str) else [float(x) if code != 34735 else int(x) for x in v]
        e["tags"] = tags
        e["tiled"] = bool(p.is_tiled)
        e["planar_separate"] = int(p.planarconfig) == 2
        e["compression"] = int(p.compression)
        e["sparse_blocks"] = sum(1 for n in p.databytecounts if n == 0)  # blocks the file does not store
    return e


def main():
    os.makedirs(OUT, exist_ok=True)
    write_format_fixtures()
    write_sparse_fixtures()
    files = {}
    for path in sorted(glob.glob(os.path.join(SHARED, "fixtures", "**", "*.tif"), recursive=True)):
        files[os.path.relpath(path, SHARED)] = describe(path)
    for path in sorted(glob.glob(os.path.join(OUT, "*.tif"))):
        files[os.path.relpath(path, REPO)] = describe(path)
    gen = "tests/torch/gen_expected_geotiff.py (rasterio %s, GDAL %s, tifffile %s)" % (
        rasterio.__version__, rasterio.__gdal_version__, tifffile.__version__)
    with open(os.path.join(OUT, "expected.json"), "w") as f:  # one line per file keeps diffs readable
        f.write('{"generator": %s,\n "files": {\n' % json.dumps(gen))
        f.write(",\n".join("  %s: %s" % (json.dumps(k), json.dumps(v)) for k, v in files.items()))
        f.write("\n }\n}\n")
    print("wrote", len(files), "entries")


if __name__ == "__main__":
    main()
