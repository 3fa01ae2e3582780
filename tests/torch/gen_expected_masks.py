"""gen_expected_masks.py: independent numpy/scipy reference of the DSen2-CR cloud/shadow
detector (reference/dsen2cr-sen12mscr.md §3), run on the real Sentinel-2 fixtures.

Writes tests/fixtures/masks/<name>.safetensors, one per (file, window):
  cloud_bits  (ceil(H*W/16),) F32: the binary cloud mask (score >= 0.2), 16 pixels per
                value (bit k of value i = pixel 16*i + k, row-major), exact in float32;
  shadow_bits likewise, the median-filtered shadow mask (before cloud wins);
  score       (H, W) F32, only for the first file: the clipped cloud score (float64 in scipy);
  thresholds  (2,) F32: T3 (CSI) and T4 (B2) of the shadow test.
metadata: source ("fixtures/real/<path in the full set>"), window "x0,y0,w,h", height, width.

Needs the full set of 33 real files (tests/fixtures/real/PROVENANCE.md; the repository carries 27), in
the folder that holds fixtures/real/. Run with Debian's python (numpy, scipy, rasterio):
  NIMBUS_FULL_SET=<folder holding fixtures/real> /usr/bin/python3 tests/torch/gen_expected_masks.py
The dtypes follow DSen2-CR: the raster is float32, every band test is float32 arithmetic,
the 7x7 box mean is float64 (convolve2d with a float64 kernel).
"""
import os
import sys

import numpy as np
import rasterio
from rasterio.windows import Window
import scipy.ndimage as ndi
import scipy.signal as scisig

sys.path.insert(0, os.path.dirname(__file__))
import st  # noqa: E402

SHARED = os.environ.get("NIMBUS_FULL_SET")  # the folder holding fixtures/real/ (the full set)
OUT = os.path.normpath(os.path.join(os.path.dirname(__file__), "../fixtures/masks"))
CR = "fixtures/real/sen12ms_cr/"
ES = "fixtures/real/eurosat_ms/shrey160+EuroSAT_MS_Deep_Learning/data/Euro_MS_Test_red/test/"
CASES = [  # (name, source under NIMBUS_FULL_SET, window (x0, y0, w, h) or None for the whole file)
    ("fall_139_p839_cloudy", CR + "xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif", None),
    ("winter_112_p797_cloudy", CR + "xufangchn+GLF-CR/data/s2_cloudy/ROIs2017_winter_112_p797.tif", None),
    ("summer_19_p30_cloudy", CR + "zhangcy23+Mamba-SCR/img/ROIs1868_summer_s2_cloudy_19_p30.tif", None),
    ("summer_31_p100_cloudy", CR + "Oriolac+cloud-removal/eda/notebooks/imgs/cr/ok/ROIs1868_summer_s2_cloudy_31_p100.tif", None),
    # 128 crops: the shadow thresholds depend on the window, so test crops as the loader uses them
    ("fall_139_p839_cloudy_crop", CR + "xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif", (64, 32, 128, 128)),
    ("summer_19_p30_cloudy_crop", CR + "zhangcy23+Mamba-SCR/img/ROIs1868_summer_s2_cloudy_19_p30.tif", (100, 7, 128, 128)),
    ("fall_139_p839_clear", CR + "xufangchn+GLF-CR/data/s2_cloudfree/ROIs1970_fall_139_p839.tif", None),
    ("summer_31_p100_clear", CR + "Oriolac+cloud-removal/eda/notebooks/imgs/cr/ok/ROIs1868_summer_s2_31_p100.tif", None),
    ("eurosat_seaLake_611", ES + "SeaLake/SeaLake_611.tif", None),
    ("eurosat_residential_228", ES + "Residential/Residential_228.tif", None),
]


def rescale(x, lo, hi):  # r(x; a, b) = (x - a) / (b - a), no clamping
    return (x - lo) / (hi - lo)


def norm_diff(a, b):
    s = a + b
    s[s == 0] = 0.001
    return (a - b) / s


def cloud_score(dn):
    d = dn / 10000.0
    s = np.ones(d.shape[1:], dtype=np.float32)
    s = np.minimum(s, rescale(d[1], 0.1, 0.5))
    s = np.minimum(s, rescale(d[0], 0.1, 0.3))
    s = np.minimum(s, rescale(d[0] + d[10], 0.15, 0.2))
    s = np.minimum(s, rescale(d[3] + d[2] + d[1], 0.2, 0.8))
    s = np.minimum(s, rescale(norm_diff(d[2], d[11]), 0.8, 0.6))
    s = ndi.grey_closing(s, size=(5, 5))  # mode 'reflect' (scipy default)
    s = scisig.convolve2d(s, np.ones((7, 7)) / 49.0, mode="same")  # zero fill, float64
    return np.clip(s, 0.00001, 1.0)


def shadow(dn):
    d = dn / 10000.0
    csi = (d[7] + d[11]) / 2.0
    t3 = np.min(csi) + 3 / 4 * (np.mean(csi) - np.min(csi))
    t4 = np.min(d[1]) + 5 / 6 * (np.mean(d[1]) - np.min(d[1]))
    m = np.zeros(csi.shape, dtype=np.float32)
    m[np.logical_and(csi < t3, d[1] < t4)] = -1
    return scisig.medfilt2d(m, 5) < 0, (t3, t4)


def pack16(mask):
    bits = mask.reshape(-1).astype(np.int64)
    bits = np.concatenate([bits, np.zeros((-len(bits)) % 16, np.int64)]).reshape(-1, 16)
    return (bits << np.arange(16)).sum(axis=1).astype(np.float32)


def main():
    if not SHARED:
        raise SystemExit("gen_expected_masks.py: set NIMBUS_FULL_SET to the folder holding fixtures/real/")
    os.makedirs(OUT, exist_ok=True)
    for i, (name, rel, win) in enumerate(CASES):
        with rasterio.open(os.path.join(SHARED, rel)) as f:
            dn = f.read(window=Window(*win) if win else None).astype(np.float32)
        assert dn.shape[0] == 13, (rel, dn.shape)
        score = cloud_score(dn)
        cloud = score >= 0.2
        shad, (t3, t4) = shadow(dn)
        tensors = {"cloud_bits": pack16(cloud), "shadow_bits": pack16(shad), "thresholds": np.array([t3, t4])}
        if i == 0:
            tensors["score"] = score.astype(np.float32)
        h, w = dn.shape[1:]
        x0, y0 = (win[0], win[1]) if win else (0, 0)
        st.save(os.path.join(OUT, name + ".safetensors"), tensors,
                {"source": rel, "window": f"{x0},{y0},{w},{h}", "height": h, "width": w})
        final = np.where(cloud, 1, np.where(shad, -1, 0))
        print(f"{name:28s} {h}x{w} cloud {np.mean(final == 1):.4f} shadow {np.mean(final == -1):.4f} "
              f"T3 {t3:.6f} T4 {t4:.6f}")


if __name__ == "__main__":
    main()
