"""Paste a generated S x S face crop back into the full original frame.

The crop box comes from frames.parquet (``crop_x0, crop_y0, crop_side`` in upright original pixels). The generated
crop is resized to the box, optionally colour-matched to the original inside the mask, and blended in with a
feathered mask by Laplacian-pyramid blending (low frequencies mix over a wide band, fine detail over a narrow one,
so no seam and no halo). Only the part of the frame under the mask's bounding box is touched: pixels outside the
crop box are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PasteConfig:
    """Blending settings (params.yaml ``speak.paste``)."""

    levels: int  # Laplacian pyramid levels (1 = plain feathered alpha blending)
    colour_match: bool  # shift the generated crop's mean colour to the original's inside the mask
    dilate: float  # grow a given mask by this fraction of the crop side before feathering
    feather: float  # Gaussian feather (sigma) as a fraction of the crop side


def ellipse_mask(size: int, center: tuple[float, float] = (0.5, 0.58), radii: tuple[float, float] = (0.26, 0.32),
                 feather: float = 0.06) -> np.ndarray:
    """Feathered elliptical face mask, float32 [size, size] in [0, 1]; centre and radii as fractions of ``size``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    d = np.sqrt(((x / size - center[0]) / radii[0]) ** 2 + ((y / size - center[1]) / radii[1]) ** 2)
    mask = (d <= 1.0).astype(np.float32)
    return feather_mask(mask, feather * size)


def feather_mask(mask: np.ndarray, sigma_px: float, dilate_px: float = 0.0) -> np.ndarray:
    """Dilate a [S, S] mask by ``dilate_px`` then blur it (Gaussian, ``sigma_px``), keeping a zero border so the
    blend never reaches the crop edge. Returns float32 [S, S] in [0, 1]."""
    mask = np.asarray(mask, np.float32)
    size = mask.shape[0]
    if dilate_px >= 1:
        k = int(round(dilate_px)) * 2 + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if sigma_px > 0:
        # shrink by ~2 sigma first so the feathered edge still ends inside the crop
        margin = int(np.ceil(2 * sigma_px))
        if margin > 0:
            mask[:margin] = 0
            mask[-margin:] = 0
            mask[:, :margin] = 0
            mask[:, -margin:] = 0
        mask = cv2.GaussianBlur(mask, (0, 0), sigma_px)
    border = max(1, size // 128)
    mask[:border] = mask[-border:] = 0
    mask[:, :border] = mask[:, -border:] = 0
    return np.clip(mask, 0.0, 1.0)


def match_colour(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``source``'s per-channel mean under ``mask`` to ``target``'s. float32 [H, W, 3] in, float32 out."""
    total = float(mask.sum())
    if total < 1.0:
        return source
    # per-channel weighted sums: no [H, W, 3] weighted temporary, and no BLAS call (its threads spin against the
    # renderer's and the encoder's on a busy 2-core machine: 8 ms instead of 0.2 ms)
    shift = np.array([float((target[..., c] * mask).sum() - (source[..., c] * mask).sum()) for c in range(3)],
                     np.float32) / total  # [3]
    return source + shift


def laplacian_blend(foreground: np.ndarray, background: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Blend float32 [H, W, 3] images with a float32 [H, W] mask (1 = foreground) by Laplacian pyramids."""
    if levels <= 1 or min(mask.shape) < 2 ** levels:
        return foreground * mask[..., None] + background * (1.0 - mask[..., None])
    diff = foreground - background  # blending A over B == B + blend(A - B): one pyramid instead of two
    gauss = [diff]
    masks = [mask]
    for _ in range(levels - 1):
        gauss.append(cv2.pyrDown(gauss[-1]))
        masks.append(cv2.pyrDown(masks[-1]))
    out = gauss[-1] * masks[-1][..., None]
    for level in range(levels - 2, -1, -1):
        h, w = gauss[level].shape[:2]
        lap = gauss[level] - cv2.pyrUp(gauss[level + 1], dstsize=(w, h))
        out = cv2.pyrUp(out, dstsize=(w, h)) + lap * masks[level][..., None]
    # where the mask is zero at every level the result must be the background exactly
    out[mask <= 0] = 0.0
    return background + out


def crop_box_pixels(crop_x0: float, crop_y0: float, crop_side: float) -> tuple[int, int, int]:
    """Integer (x0, y0, side) of the crop box in original pixels."""
    return int(np.floor(crop_x0)), int(np.floor(crop_y0)), max(1, int(round(crop_side)))


def paste_back(frame: np.ndarray, crop: np.ndarray, box: tuple[float, float, float], mask: np.ndarray | None,
               config: PasteConfig, out: np.ndarray | None = None) -> np.ndarray:
    """Blend a generated crop into the original frame.

    Args:
        frame: uint8 [H, W, 3] upright original frame.
        crop: uint8 [S, S, 3] generated crop of the box.
        box: (crop_x0, crop_y0, crop_side) in original pixels (frames.parquet); may extend past the frame.
        mask: float32 [S, S] in [0, 1] where the crop should replace the frame (e.g. the composite's lower-face mask);
            dilated and feathered here. None = a feathered ellipse around the face.
        out: optional uint8 [H, W, 3] to write into (may be ``frame`` itself).
    Returns:
        uint8 [H, W, 3]; identical to ``frame`` outside the crop box.
    """
    size = crop.shape[0]
    if mask is None:
        soft = ellipse_mask(size, feather=config.feather)
    elif config.feather * size >= 8 and size % 2 == 0:
        # The feathered edge is smooth, so dilating and blurring at half resolution gives the same mask within
        # 0.005 (measured on the demo's masks) at a sixth of the cost; it is resized to the box below anyway.
        half = cv2.resize(np.asarray(mask, np.float32), (size // 2, size // 2), interpolation=cv2.INTER_AREA)
        soft = feather_mask(half, config.feather * size / 2, config.dilate * size / 2)
    else:
        soft = feather_mask(mask, config.feather * size, config.dilate * size)
    if out is None:
        out = frame.copy()
    elif out is not frame:
        out[...] = frame
    x0, y0, side = crop_box_pixels(*box)
    interp = cv2.INTER_AREA if side < size else cv2.INTER_LINEAR
    big = cv2.resize(crop, (side, side), interpolation=interp)
    big_mask = cv2.resize(soft, (side, side), interpolation=cv2.INTER_LINEAR)
    # only the mask's bounding box (within the frame) needs blending
    ys, xs = np.nonzero(big_mask > 1e-3)
    if len(ys) == 0:
        return out
    pad = 2 ** max(config.levels, 1)
    bx0, bx1 = max(xs.min() - pad, 0, -x0), min(xs.max() + 1 + pad, side, frame.shape[1] - x0)
    by0, by1 = max(ys.min() - pad, 0, -y0), min(ys.max() + 1 + pad, side, frame.shape[0] - y0)
    if bx1 <= bx0 or by1 <= by0:
        return out
    region = (slice(y0 + by0, y0 + by1), slice(x0 + bx0, x0 + bx1))
    background = frame[region].astype(np.float32)
    foreground = big[by0:by1, bx0:bx1].astype(np.float32)
    m = np.ascontiguousarray(big_mask[by0:by1, bx0:bx1])
    if config.colour_match:
        foreground = match_colour(foreground, background, m)
    blended = laplacian_blend(foreground, background, m, config.levels)
    out[region] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
