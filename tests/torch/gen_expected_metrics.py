"""gen_expected_metrics.py: independent reference values for data/image_metrics (MAE, RMSE, PSNR, SSIM, SAM).

Run with Debian's interpreter:  /usr/bin/python3 tests/torch/gen_expected_metrics.py
Writes tests/fixtures/metrics.safetensors:
  pred, target, cloudy  (N, 13, H, W) float32 reflectance   mask (N, H, W) float32, 1 = cloud/shadow
  expected              (N, 14) float32, columns in kMetricNames order (NaN where a region is empty)
  ssim_same_padding     (N,) float32  (not used by nimbus; documents how much UnCRtainTS' padded SSIM differs)

Independence: nothing here comes from the C++ code. SSIM is skimage.metrics.structural_similarity
(gaussian_weights, sigma 1.5, population covariance, data range 1), whose mean is over the map cropped by the
window radius, i.e. exactly TF's VALID map; it is cross-checked against a direct numpy/scipy transcription
of tf.image.ssim's formula. The other metrics are plain numpy following reference/dsen2cr-sen12mscr.md §5.4.
"""
import os

import numpy as np
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

import st

PSNR_CAP = 100.0
NAMES = ["mae", "rmse", "psnr", "ssim", "sam", "mae_reprod", "rmse_reprod", "psnr_reprod", "sam_reprod",
         "mae_recon", "rmse_recon", "psnr_recon", "sam_recon", "cloud_fraction"]


def psnr(r):
    if np.isnan(r):
        return np.nan
    return PSNR_CAP if r <= 0 else min(PSNR_CAP, 20 * np.log10(1 / r))


def masked_errors(p, t, sel):
    """MAE, RMSE over pixels where sel (H, W) is True, all bands; NaN if none."""
    if sel.sum() == 0:
        return np.nan, np.nan
    d = (p - t)[:, sel]  # (C, n)
    return np.abs(d).mean(), np.sqrt((d ** 2).mean())


def sam(p, t, sel):
    if sel.sum() == 0:
        return np.nan
    a, b = t[:, sel], p[:, sel]  # (C, n)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ang = np.degrees(np.arccos(np.clip((a * b).sum(0) / (na * nb), -1, 1)))
    ang[(na == 0) & (nb == 0)] = 0.0   # documented conventions for zero spectra
    ang[(na == 0) ^ (nb == 0)] = 90.0
    return ang.mean()


def ssim_skimage(p, t):
    return structural_similarity(np.moveaxis(p, 0, -1), np.moveaxis(t, 0, -1), channel_axis=-1,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def ssim_tf_formula(p, t):
    """tf.image.ssim (_ssim_helper + _ssim_per_channel), VALID conv, transcribed in numpy."""
    x = np.arange(11) - 5.0
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    per_channel = []
    for a, b in zip(p, t):
        f = lambda z: convolve2d(z, win, mode="valid")  # symmetric window: conv == correlation
        m0, m1 = f(a), f(b)
        num0, den0 = 2 * m0 * m1, m0 ** 2 + m1 ** 2
        lum = (num0 + c1) / (den0 + c1)
        cs = (2 * f(a * b) - num0 + c2) / (f(a * a + b * b) - den0 + c2)
        per_channel.append((lum * cs).mean())
    return np.mean(per_channel)


def ssim_same_padding(p, t):
    """UnCRtainTS-style SSIM: zero padding 5, mean over the full-size map (for comparison only)."""
    x = np.arange(11) - 5.0
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    f = lambda z: convolve2d(z, win, mode="same")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m0, m1 = np.stack([f(a) for a in p]), np.stack([f(b) for b in t])
    s01 = np.stack([f(a * b) for a, b in zip(p, t)]) - m0 * m1
    s0 = np.stack([f(a * a) for a in p]) - m0 ** 2
    s1 = np.stack([f(b * b) for b in t]) - m1 ** 2
    return (((2 * m0 * m1 + c1) * (2 * s01 + c2)) / ((m0 ** 2 + m1 ** 2 + c1) * (s0 + s1 + c2))).mean()


def smooth_field(rng, c, h, w):
    """Spatially smooth band values in reflectance, like a land surface (0.02..0.45)."""
    yy, xx = np.mgrid[0:h, 0:w] / 6.0
    out = np.empty((c, h, w))
    for k in range(c):
        a, b, ph = rng.uniform(0.3, 1.5, 3)
        out[k] = 0.2 + 0.1 * np.sin(a * xx + ph) * np.cos(b * yy) + 0.02 * k / c
    return np.clip(out + 0.03 * rng.standard_normal((c, h, w)), 0.02, 0.45)


def main():
    rng = np.random.default_rng(2024)
    n, c, h, w = 3, 13, 20, 23  # H != W to catch transposed loops; >= 11 for the SSIM window
    target = np.stack([smooth_field(rng, c, h, w) for _ in range(n)])
    masks = np.zeros((n, h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    masks[0] = ((yy - 8) ** 2 + (xx - 12) ** 2 < 40).astype(float)  # one cloud blob (~30%)
    # masks[1] stays 0: cloud-free image, "recon" is NaN
    masks[2] = 1.0  # fully covered: "reprod" is NaN
    cloudy = target.copy()
    for i in range(n):
        cloudy[i] += masks[i][None] * rng.uniform(0.3, 0.5, (c, 1, 1))  # bright cloud where the mask is 1
    cloudy += 0.01 * rng.standard_normal(cloudy.shape)
    pred = target + 0.02 * rng.standard_normal(target.shape) + masks[:, None] * 0.05
    # Zero spectra for the SAM conventions: pixel (0,0) of image 0 zero in both, pixel (0,1) zero in pred only.
    pred[0, :, 0, 0] = 0
    target[0, :, 0, 0] = 0
    pred[0, :, 0, 1] = 0
    # Everything the metrics see is float32, so compute the references on the float32 values.
    pred, target, cloudy, masks = (a.astype(np.float32) for a in (pred, target, cloudy, masks))

    expected, same_pad = [], []
    for i in range(n):
        p, t, cl = (a[i].astype(np.float64) for a in (pred, target, cloudy))
        cov = masks[i] > 0.5
        allpix = np.ones_like(cov)
        s_sk, s_tf = ssim_skimage(p, t), ssim_tf_formula(p, t)
        assert abs(s_sk - s_tf) < 1e-10, (s_sk, s_tf)
        mae_t, rmse_t = masked_errors(p, t, allpix)
        mae_c, rmse_c = masked_errors(p, cl, ~cov)
        mae_r, rmse_r = masked_errors(p, t, cov)
        row = [mae_t, rmse_t, psnr(rmse_t), s_sk, sam(p, t, allpix),
               mae_c, rmse_c, psnr(rmse_c), sam(p, cl, ~cov),
               mae_r, rmse_r, psnr(rmse_r), sam(p, t, cov), cov.mean()]
        expected.append(row)
        same_pad.append(ssim_same_padding(p, t))
        print(f"image {i}: " + ", ".join(f"{k}={v:.6g}" for k, v in zip(NAMES, row)))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "metrics.safetensors")
    st.save(out, {"pred": pred, "target": target, "cloudy": cloudy, "mask": masks,
                  "expected": np.array(expected), "ssim_same_padding": np.array(same_pad)},
            metadata={"columns": ",".join(NAMES), "generator": "tests/torch/gen_expected_metrics.py"})
    print("wrote", os.path.normpath(out), os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
