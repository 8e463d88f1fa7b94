"""Compositing a rendered lower face into a real frame: the lower-face mask from FaceMesh landmarks (below a line through
the nose, inside the jaw contour, dilated and feathered), the render's coverage, the blend and the mouth box. Used by
the composites stage, speak and evaluate alike.

    composite = mask * render + (1 - mask) * follow_expression(frame)

``follow_expression`` first moves the frame's own lower face (chin, cheeks, the skin around the render's silhouette) as
the head model's landmarks move from the frame's fitted expression to the one being rendered: where the new mouth opens
less than the footage's, the real chin would otherwise show below the rendered one as a second chin line.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .facemesh import INNER_LOWER, INNER_UPPER, LIPS
from .schemas import N_LANDMARKS

# MediaPipe FaceMesh indices (mediapipe/python/solutions/face_mesh_connections.py), copied so that this stage does not
# import mediapipe. FACE_OVAL is the silhouette in drawing order, starting at the forehead.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE_OUTER = 33  # subject's right eye, image left
LEFT_EYE_OUTER = 263
CHIN = 152

@dataclass(frozen=True)
class CompositesParams:
    """params.yaml's ``composites`` group: the lower-face mask and the mouth box."""

    nose_landmark: int  # FaceMesh point the nose line passes through (2 = just below the nose tip)
    nose_line_offset: float  # shift of the nose line along the face's down axis, in nose-to-chin distances
    dilation: float  # growth of the jaw contour, fraction of the crop side
    feather: float  # width of the mask's 0 -> 1 ramp, fraction of the crop side
    coverage_feather: float  # ramp inside the render's silhouette edge, fraction of the crop side
    max_hole: float  # enclosed gaps in the render up to this fraction of the image area count as covered
    mouth_margin: float  # mouth box padding on each side, fraction of the lip landmarks' larger extent
    warp_sigma: float  # follow_expression's smoothing (Gaussian sigma), fraction of the crop side; 0 = no warp
    batch_size: int  # run time only: frames rendered per batch
    examples: int  # example strips saved to reports/composites/NAME/examples/


def smoothstep(x: np.ndarray) -> np.ndarray:
    """3x^2 - 2x^3 of x clipped to [0, 1]: a ramp with flat ends (no visible edge where a blend starts or stops)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class Region:
    """A rectangle of the crop, rows y0:y1 and columns x0:x1 (end exclusive): where a frame's mask can be non-zero."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0


def _nose_line(xy: np.ndarray, params: CompositesParams) -> tuple[np.ndarray, np.ndarray]:
    """(origin [2], unit down direction [2]) of the nose line in crop pixels."""
    across = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    across = across / max(np.linalg.norm(across), 1e-6)
    down = np.array([-across[1], across[0]])  # eye line rotated +90 degrees: points towards the chin (y down)
    nose = xy[params.nose_landmark]
    return nose + params.nose_line_offset * np.linalg.norm(xy[CHIN] - nose) * down, down


def nose_line_distance(lmk_crop: np.ndarray, image_size: int, params: CompositesParams,
                       region: Region | None = None) -> np.ndarray:
    """Signed distance in pixels of every pixel centre below the nose line: float32 [S, S] (or the region's
    [h, w]), > 0 below, < 0 above.

    The line passes through the nose landmark (shifted by nose_line_offset nose-to-chin distances) and runs parallel
    to the line through the outer eye corners, so it follows head roll.
    """
    origin, down = _nose_line(np.asarray(lmk_crop, np.float64)[:, :2], params)
    region = region or Region(0, image_size, 0, image_size)
    xs = np.arange(region.x0, region.x1, dtype=np.float64) + 0.5
    ys = np.arange(region.y0, region.y1, dtype=np.float64) + 0.5
    return ((xs[None, :] - origin[0]) * down[0] + (ys[:, None] - origin[1]) * down[1]).astype(np.float32)


def mask_region(lmk_crop: np.ndarray, image_size: int, params: CompositesParams) -> Region:
    """The part of the crop the lower-face mask can touch: the jaw contour's box grown by dilation + feather, cut
    (with the same margin) at the nose line. Working on it instead of the whole crop makes the stage ~5x faster."""
    xy = np.asarray(lmk_crop, np.float64)[:, :2]
    margin = (params.dilation + params.feather) * image_size + 2
    lo = xy[list(FACE_OVAL)].min(0) - margin
    hi = xy[list(FACE_OVAL)].max(0) + margin
    origin, down = _nose_line(xy, params)
    if down[1] > 0.2:  # roll under ~78 degrees: the nose line's highest point over [lo_x, hi_x] bounds the top
        line_y = origin[1] - (np.array([lo[0], hi[0]]) - origin[0]) * down[0] / down[1]
        lo[1] = max(lo[1], line_y.min() - margin)
    x0, y0 = (int(np.clip(np.floor(v), 0, image_size)) for v in lo)
    x1, y1 = (int(np.clip(np.ceil(v), 0, image_size)) for v in hi)
    return Region(y0, y1, x0, x1)


def _signed_distance(region: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance to a binary region's boundary, px: > 0 inside, <= 0 outside. float32 [H, W]."""
    inside = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return inside - outside


def lower_face_mask_in(lmk_crop: np.ndarray, image_size: int, params: CompositesParams) -> tuple[Region, np.ndarray]:
    """(region, mask float32 [h, w]): ``lower_face_mask`` computed only inside ``mask_region`` (zero elsewhere)."""
    xy = np.asarray(lmk_crop, np.float32)[:, :2]
    if xy.shape[0] != N_LANDMARKS:
        raise ValueError(f"lmk_crop must have {N_LANDMARKS} points, got {xy.shape[0]}")
    if not np.isfinite(xy).all():  # no usable landmarks: keep the real frame
        return Region(0, 0, 0, 0), np.zeros((0, 0), np.float32)
    region = mask_region(lmk_crop, image_size, params)
    if region.empty:
        return region, np.zeros((max(region.y1 - region.y0, 0), max(region.x1 - region.x0, 0)), np.float32)
    shift = 4  # fillPoly fixed-point bits: sub-pixel contour
    oval = np.zeros((region.y1 - region.y0, region.x1 - region.x0), np.uint8)
    contour = xy[list(FACE_OVAL)] - 0.5 - [region.x0, region.y0]  # pixel centres sit at +0.5
    cv2.fillPoly(oval, [np.round(contour * (1 << shift)).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=shift)
    feather = max(params.feather * image_size, 1e-3)
    jaw_ramp = (_signed_distance(oval) + params.dilation * image_size) / feather
    nose_ramp = nose_line_distance(lmk_crop, image_size, params, region) / feather
    return region, smoothstep(np.minimum(jaw_ramp, nose_ramp)).astype(np.float32)


def lower_face_mask(lmk_crop: np.ndarray, image_size: int, params: CompositesParams) -> np.ndarray:
    """Feathered mask of the lower face: float32 [S, S] in [0, 1].

    lmk_crop: [478, 2 or 3] FaceMesh points in crop pixels. The region inside the face contour (jaw line) and below the
    nose line, with the contour grown by ``dilation``; the mask ramps 0 -> 1 over ``feather`` (smoothstep) inward from
    both the grown contour and the nose line, so it is exactly 0 on and above the nose line.
    """
    region, inside = lower_face_mask_in(lmk_crop, image_size, params)
    mask = np.zeros((image_size, image_size), np.float32)
    if not region.empty:
        mask[region.slices] = inside
    return mask


def fill_small_holes(coverage: np.ndarray, max_area: float) -> np.ndarray:
    """Coverage {0, 1} [S, S] -> uint8 [S, S] with enclosed uncovered regions of at most ``max_area`` pixels set to 1.

    The mesh has a few pixel-sized gaps (e.g. where the lips meet the separate mouth-interior surface); the render is
    black there, which reads as mouth cavity, whereas letting the real frame through would leave speckles.
    """
    covered = (coverage > 0.5).astype(np.uint8)
    # Components of the uncovered pixels; label 0 is the covered pixels themselves.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(1 - covered, connectivity=4)
    height, width = covered.shape
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    enclosed = (x0 > 0) & (y0 > 0) & (x1 < width) & (y1 < height)  # not touching the image border
    fill = enclosed & (stats[:, cv2.CC_STAT_AREA] <= max_area)
    fill[0] = False
    return np.where(fill[labels], 1, covered).astype(np.uint8)


def fill_render_pinholes(image: np.ndarray, coverage: np.ndarray, image_size: int,
                         params: CompositesParams) -> np.ndarray:
    """Render uint8 [h, w, 3] + its coverage [h, w] -> the render with its enclosed pinholes (<= max_hole of the
    S x S image) painted from the surrounding surface (cv2 inpainting).

    Those pinholes are cracks where the lips meet the separate mouth-interior surface; left black they become dotted
    specks along the lip line in the composite, and the GAN copies them into its output."""
    holes = (fill_small_holes(coverage, params.max_hole * image_size * image_size) > 0) & (coverage <= 0.5)
    if not holes.any():
        return image
    return cv2.inpaint(np.ascontiguousarray(image), holes.astype(np.uint8), 2, cv2.INPAINT_TELEA)


def coverage_mask(coverage: np.ndarray, image_size: int, params: CompositesParams) -> np.ndarray:
    """Render coverage {0, 1} [S, S] -> float32 [S, S]: 0 outside the silhouette, ramping to 1 over
    ``coverage_feather`` inside it, so the render's aliased edge never shows. Pinholes (<= max_hole) are filled
    first."""
    covered = fill_small_holes(coverage, params.max_hole * image_size * image_size)
    inside = cv2.distanceTransform(covered, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return smoothstep(inside / max(params.coverage_feather * image_size, 1e-3)).astype(np.float32)


WARP_GRID = 8  # px between the points the warp's displacement is computed at (bilinear in between)


def follow_expression(real: np.ndarray, region: Region, face: np.ndarray, fitted: np.ndarray, rendered: np.ndarray,
                      sigma: float) -> np.ndarray:
    """The frame's pixels in ``region`` with its lower face moved from the fitted expression to the rendered one.

    real: uint8 [S, S, 3] crop; face: the lower-face mask float32 [h, w] of ``region``; fitted, rendered: the same
    head-model landmarks [K, 2] in crop px, projected with the frame's fitted expression and with the expression
    being rendered (same shape, pose and camera). A backward map: pixel x takes the frame at x + D(x) * face(x), with
    D the Gaussian (``sigma`` px) kernel regression of fitted - rendered at the rendered points, so a landmark's pixel
    lands where the new expression puts it and the warp fades to nothing at the mask's edge. -> uint8 [h, w, 3]
    (the frame itself where the expressions agree)."""
    h, w = region.y1 - region.y0, region.x1 - region.x0
    points = np.asarray(rendered, np.float32)  # [K, 2]
    displacement = np.asarray(fitted, np.float32) - points  # [K, 2]
    # only the points near the region pull on it (the upper face's do not reach a lower-face region)
    reach = 3 * sigma
    near = ((points[:, 0] > region.x0 - reach) & (points[:, 0] < region.x1 + reach)
            & (points[:, 1] > region.y0 - reach) & (points[:, 1] < region.y1 + reach))
    points, displacement = points[near], displacement[near]
    if (h <= 0 or w <= 0 or sigma <= 0 or not len(points) or not np.isfinite(displacement).all()
            or np.abs(displacement).max() < 0.05):
        return np.array(real[region.slices])
    gy = np.linspace(region.y0 + 0.5, region.y1 - 0.5, max(2, -(-h // WARP_GRID) + 1), dtype=np.float32)  # [gh]
    gx = np.linspace(region.x0 + 0.5, region.x1 - 0.5, max(2, -(-w // WARP_GRID) + 1), dtype=np.float32)  # [gw]
    grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)  # [gh, gw, 2] -> [G, 2]
    squared = (grid * grid).sum(1)[:, None] + (points * points).sum(1)[None] - 2 * grid @ points.T  # [G, K]
    weights = np.exp((squared - squared.min(axis=1, keepdims=True)) * (-0.5 / (sigma * sigma)))  # max 1 per row
    field = (weights @ displacement) / weights.sum(axis=1, keepdims=True)  # [G, 2]
    field = field.reshape(len(gy), len(gx), 2)  # [G, 2] -> [gh, gw, 2]
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR) * face[..., None]  # [h, w, 2]
    xs = np.arange(region.x0, region.x1, dtype=np.float32)[None, :] + field[..., 0]
    ys = np.arange(region.y0, region.y1, dtype=np.float32)[:, None] + field[..., 1]
    return cv2.remap(np.ascontiguousarray(real), xs, ys, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def composite_lower_face(real: np.ndarray, render: np.ndarray, coverage: np.ndarray, lmk_crop: np.ndarray,
                         fitted: np.ndarray, rendered: np.ndarray,
                         params: CompositesParams) -> tuple[Region, np.ndarray, np.ndarray, np.ndarray]:
    """One frame's masked composite, the same for the composites stage (the GAN's training input) and speak.

    real, render: uint8 [S, S, 3]; coverage: the render's mask [S, S]; lmk_crop: the frame's FaceMesh points [478, 2|3];
    fitted, rendered: the head model's landmarks [K, 2] with the frame's fitted and the rendered expression
    (``follow_expression``). -> (region, lower-face mask [h, w], blend weight [h, w] = that mask x the render's
    feathered coverage, composite uint8 [h, w, 3]) inside ``mask_region``; outside it the frame stays as it is (an
    empty region when the frame has no usable landmarks)."""
    size = real.shape[0]
    region, face = lower_face_mask_in(lmk_crop, size, params)
    if region.empty:
        return region, face, face, np.zeros(face.shape + (3,), np.uint8)
    rows, cols = region.slices
    blend = face * coverage_mask(coverage[rows, cols], size, params)
    filled = fill_render_pinholes(render[rows, cols], coverage[rows, cols], size, params)
    moved = follow_expression(real, region, face, fitted, rendered, params.warp_sigma * size)
    return region, face, blend, composite(filled, moved, blend)


def composite_lower_faces(real: np.ndarray, renders: np.ndarray, coverages: np.ndarray, lmk_crops: np.ndarray,
                          fitted: np.ndarray, rendered: np.ndarray,
                          params: CompositesParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``composite_lower_face`` for a batch, as whole crops: real, renders uint8 [B, S, S, 3]; coverages [B, S, S];
    lmk_crops [B, 478, 2|3]; fitted, rendered [B, K, 2]. -> (lower-face masks float32 [B, S, S], blend weights float32
    [B, S, S], composites uint8 [B, S, S, 3]); masks and weights are zero, and the composite is the frame, outside each
    frame's ``mask_region``."""
    faces = np.zeros(real.shape[:3], np.float32)  # [B, S, S]
    blends = np.zeros(real.shape[:3], np.float32)  # [B, S, S]
    out = np.array(real)
    for j in range(len(real)):
        region, face, blend, pixels = composite_lower_face(real[j], renders[j], coverages[j], lmk_crops[j], fitted[j],
                                                           rendered[j], params)
        if not region.empty:
            faces[j][region.slices], blends[j][region.slices], out[j][region.slices] = face, blend, pixels
    return faces, blends, out


def composite(render: np.ndarray, real: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * render + (1 - mask) * real, rounded.

    render, real: uint8 [..., S, S, 3]; mask: float [..., S, S] in [0, 1].
    Exact at the ends: mask 0 gives real, mask 1 gives render."""
    real_f = real.astype(np.float32)
    blended = real_f + mask[..., None].astype(np.float32) * (render.astype(np.float32) - real_f)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def inner_lip_masks(lmk_crop: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [B, S, S, 3]: 255 inside each frame's FaceMesh inner-lip polygon (landmarks [B, 478, >=2], crop
    pixels), 0 elsewhere and on frames with non-finite landmarks; three channels so mouth_crops can resample it."""
    ring = list(INNER_UPPER) + list(INNER_LOWER[-2:0:-1])  # upper lip left -> right, lower lip back
    out = np.zeros((len(lmk_crop), image_size, image_size), np.uint8)
    for b, points in enumerate(np.asarray(lmk_crop, np.float64)[:, ring, :2]):
        if np.isfinite(points).all():
            cv2.fillPoly(out[b], [np.round((points - 0.5) * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return np.repeat(out[..., None], 3, axis=3)  # [B, S, S] -> [B, S, S, 3]


def mouth_box(lmk_crop: np.ndarray, image_size: int, params: CompositesParams) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1), integer crop pixels, x1/y1 exclusive, around the lip landmarks padded by
    mouth_margin of their larger extent on each side; moved (not shrunk) to stay inside the image when it fits.
    Non-finite landmarks give the central quarter of the crop."""
    lips = np.asarray(lmk_crop, np.float64)[list(LIPS), :2]
    if not np.isfinite(lips).all():  # no usable landmarks: the central quarter of the crop
        side = image_size // 4
        x0 = (image_size - side) // 2
        return x0, x0, x0 + side, x0 + side
    lo, hi = lips.min(0), lips.max(0)
    side = int(np.ceil(max(hi - lo) * (1 + 2 * params.mouth_margin))) + 1
    side = max(side, 2)
    centre = (lo + hi) / 2
    x0, y0 = (int(np.floor(c - side / 2)) for c in centre)
    if side <= image_size:
        x0 = min(max(x0, 0), image_size - side)
        y0 = min(max(y0, 0), image_size - side)
    return x0, y0, x0 + side, y0 + side
