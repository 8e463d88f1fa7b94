"""Image quality metrics on uint8 RGB batches [B, H, W, 3]: PSNR and SSIM (torch, CPU or CUDA).

Both return the mean over the batch of the per-image value, so a batch of frames scores like its average frame.
SSIM follows Wang et al. 2004: 11x11 gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255,
computed per colour channel on the 'valid' part of the image (no padding) and averaged -- the same numbers as
``skimage.metrics.structural_similarity(..., gaussian_weights=True, use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_float_batch(a: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 [B, H, W, 3] (numpy or torch) -> float64 [B, 3, H, W] in 0..255."""
    t = torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 [B, H, W, 3], got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).to(torch.float64)  # [B, H, W, 3] -> [B, 3, H, W]


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_float_batch(a, "a"), _as_float_batch(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def psnr_per_image(a, b) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each image pair, [B]; inf where the images are identical."""
    x, y = _pair(a, b)
    mse = (x - y).pow(2).flatten(1).mean(1)  # [B]
    with np.errstate(divide="ignore"):
        return (10.0 * np.log10(DATA_RANGE**2 / mse.cpu().numpy())).astype(np.float64)


def psnr(a, b) -> float:
    """Mean PSNR (dB) over the batch of uint8 [B, H, W, 3] images; inf if all pairs are identical."""
    return float(np.mean(psnr_per_image(a, b)))


def _gaussian_1d(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_blur(t: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H - size + 1, W - size + 1]: each channel blurred by a size x size gaussian on the
    'valid' positions (no padding), as two 1-D passes (separable: 2k instead of k^2 multiply-adds per pixel)."""
    g = _gaussian_1d(size, sigma, t.device, t.dtype)
    channels = t.shape[1]
    w_rows = g.view(1, 1, size, 1).expand(channels, 1, size, 1)  # depthwise [C, 1, k, 1]
    w_cols = g.view(1, 1, 1, size).expand(channels, 1, 1, size)  # depthwise [C, 1, 1, k]
    return F.conv2d(F.conv2d(t, w_rows, groups=channels), w_cols, groups=channels)


def ssim_per_image(a, b) -> np.ndarray:
    """Structural similarity of each image pair, [B], mean over channels and valid window positions.

    The 2-D gaussian window is applied as two 1-D passes (separable: 22 instead of 121 multiply-adds per pixel);
    float32 is exact enough here (variance error ~1e-2 against the constant C2 = 58.5).
    """
    x, y = _pair(a, b)
    x, y = x.float(), y.float()
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} for SSIM, got {tuple(x.shape[-2:])}")

    def blur(t: torch.Tensor) -> torch.Tensor:
        return _gaussian_blur(t, SSIM_WINDOW, SSIM_SIGMA)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1).double().cpu().numpy()  # [B, C, h, w] -> [B]


def ssim(a, b) -> float:
    """Mean SSIM over the batch of uint8 [B, H, W, 3] images (1.0 for identical images)."""
    return float(np.mean(ssim_per_image(a, b)))


def _colour(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, H, W]: each channel minus the pixel's channel mean (zero where the pixel is grey)."""
    return x - x.mean(dim=1, keepdim=True)


def _blur_same(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H, W]: a gaussian blur of ``sigma`` px (3 sigma radius), borders replicated."""
    size = 2 * int(round(3 * sigma)) + 1
    return _gaussian_blur(F.pad(t, (size // 2,) * 4, mode="replicate"), size, sigma)


def colour_cast_per_image(images, reference, sigma: float = 4.0) -> np.ndarray:
    """Coarse colour difference of each uint8 [B, H, W, 3] image from ``reference`` (same shape), [B] in 0..255
    units: the mean absolute difference of the two images' colour (each channel minus the pixel's channel mean) after
    a gaussian blur of ``sigma`` px. A smooth tint (green teeth where the real ones are white) raises it; fine
    speckles and small misalignments, blurred away, hardly do (those are colour_detail_per_image's)."""
    x, y = _as_float_batch(images, "images").float(), _as_float_batch(reference, "reference").float()
    if x.shape != y.shape:
        raise ValueError(f"images {tuple(x.shape)} and reference {tuple(y.shape)} differ in shape")
    a, b = _blur_same(torch.cat([_colour(x), _colour(y)]), sigma).chunk(2)  # [2B, 3, H, W] -> [B, 3, H, W] each
    return (a - b).abs().flatten(1).mean(1).double().cpu().numpy()  # [B, 3 * H * W] -> [B]


def interior_colour_cast_per_image(images, reference, weights, min_weight: float = 4.0) -> np.ndarray:
    """Colour cast inside a region of each uint8 [B, H, W, 3] image against ``reference`` (same shape), [B] in 0..255
    units: the region's mean colour (each channel minus the pixel's channel mean, weighted by ``weights`` [B, H, W]
    in 0..1, e.g. the real mouth's opening) in the image minus that in the reference, absolute, averaged over the
    channels. Teeth tinted green where the real ones are white raise it however small the opening is; NaN where the
    region weighs less than ``min_weight`` pixels (a closed mouth has no inside)."""
    x, y = _as_float_batch(images, "images").float(), _as_float_batch(reference, "reference").float()
    if x.shape != y.shape:
        raise ValueError(f"images {tuple(x.shape)} and reference {tuple(y.shape)} differ in shape")
    w = torch.as_tensor(np.asarray(weights, np.float32))
    if w.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise ValueError(f"weights {tuple(w.shape)} do not match images {tuple(x.shape)} ([B, H, W])")
    total = w.flatten(1).sum(1)  # [B]
    diff = ((_colour(x) - _colour(y)) * w[:, None]).flatten(2).sum(2) / total.clamp(min=1e-6)[:, None]  # [B, 3]
    out = diff.abs().mean(1).double().cpu().numpy()
    out[total.numpy() < min_weight] = np.nan
    return out


def colour_detail_per_image(images, sigma: float = 1.5) -> np.ndarray:
    """Fine colour detail of each uint8 [B, H, W, 3] image, [B] in 0..255 units: the mean absolute difference
    between the image's colour (each channel minus the pixel's channel mean) and that colour blurred by a gaussian
    of ``sigma`` px. Coloured speckles raise it; brightness detail (teeth edges over a dark cavity) does not."""
    colour = _colour(_as_float_batch(images, "images").float())  # [B, 3, H, W]
    return (colour - _blur_same(colour, sigma)).abs().flatten(1).mean(1).double().cpu().numpy()  # -> [B]
