"""composites@NAME: paste the head model's rendered lower face, driven by the lip model's coefficients, into each frame.

For frame i the head model is posed with the fitted shape / pose / camera / texture / lighting of flame.parquet and the
lip model's "second coefficients" (lip_coeffs.parquet expression[53]) and rendered at the crop size. A lower-face mask
from the frame's FaceMesh landmarks (below a line through the nose, inside the jaw contour, dilated and feathered)
times the render's feathered coverage selects the rendered pixels:

    composite = mask * render + (1 - mask) * frame

The GAN later turns these composites back into photoreal frames; the mouth box (square, around the lip landmarks)
tells it where to look hardest.

    python -m talkinghead.stages.composites data/interim/NAME

Reads params groups ``composites``, ``render``, ``head_model`` and ``split``. Writes composites.npy (uint8 [N, S, S, 3])
and composites.parquet (schemas.COMPOSITES) under data/processed/NAME/, and example strips
(real | render | mask | composite, mouth box drawn) in reports/composites/NAME/.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_dir
from ..facemesh import LIPS
from ..errors import InputError
from ..headmodel import load_head_model
from ..params import params_group
from ..progress import Progress
from ..paths import PresenterPaths
from ..render import render_parameters, renderer_from_params
from ..schemas import (COMPOSITES, LANDMARKS, LIP_COEFFS, N_LANDMARKS, PARAMETERS, column_array, read_table,
                       write_table)
from ..split import heldout_start
from ..tensorfile import TensorWriter, load_tensor

# MediaPipe FaceMesh indices (mediapipe/python/solutions/face_mesh_connections.py), copied so that this stage does not
# import mediapipe. FACE_OVAL is the silhouette in drawing order, starting at the forehead.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
RIGHT_EYE_OUTER = 33  # subject's right eye, image left
LEFT_EYE_OUTER = 263
CHIN = 152

DEFAULTS: dict[str, Any] = {
    "nose_landmark": 2,  # FaceMesh point the nose line passes through (2 = just below the nose tip)
    "nose_line_offset": 0.0,  # shift of the nose line along the face's down axis, in nose-to-chin distances
    "dilation": 0.03,  # growth of the jaw contour, fraction of the crop side
    "feather": 0.04,  # width of the mask's 0 -> 1 ramp, fraction of the crop side
    "coverage_feather": 0.015,  # ramp inside the render's silhouette edge, fraction of the crop side
    "max_hole": 0.001,  # enclosed gaps in the render up to this fraction of the image area count as covered
    "mouth_margin": 0.25,  # mouth box padding on each side, fraction of the lip landmarks' larger extent
    "batch_size": 64,
    "examples": 6,  # example strips saved to reports/composites/NAME/
}


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise InputError("params.yaml", f"unknown composites parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **params}


def _smoothstep(x: np.ndarray) -> np.ndarray:
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


def _nose_line(xy: np.ndarray, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(origin [2], unit down direction [2]) of the nose line in crop pixels."""
    across = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    across = across / max(np.linalg.norm(across), 1e-6)
    down = np.array([-across[1], across[0]])  # eye line rotated +90 degrees: points towards the chin (y down)
    nose = xy[int(p["nose_landmark"])]
    return nose + p["nose_line_offset"] * np.linalg.norm(xy[CHIN] - nose) * down, down


def nose_line_distance(lmk_crop: np.ndarray, image_size: int, params: dict[str, Any],
                       region: Region | None = None) -> np.ndarray:
    """Signed distance in pixels of every pixel centre below the nose line: float32 [S, S] (or the region's
    [h, w]), > 0 below, < 0 above.

    The line passes through the nose landmark (shifted by nose_line_offset nose-to-chin distances) and runs parallel
    to the line through the outer eye corners, so it follows head roll.
    """
    p = _settings(params)
    origin, down = _nose_line(np.asarray(lmk_crop, np.float64)[:, :2], p)
    region = region or Region(0, image_size, 0, image_size)
    xs = np.arange(region.x0, region.x1, dtype=np.float64) + 0.5
    ys = np.arange(region.y0, region.y1, dtype=np.float64) + 0.5
    return ((xs[None, :] - origin[0]) * down[0] + (ys[:, None] - origin[1]) * down[1]).astype(np.float32)


def mask_region(lmk_crop: np.ndarray, image_size: int, params: dict[str, Any]) -> Region:
    """The part of the crop the lower-face mask can touch: the jaw contour's box grown by dilation + feather, cut
    (with the same margin) at the nose line. Working on it instead of the whole crop makes the stage ~5x faster."""
    p = _settings(params)
    xy = np.asarray(lmk_crop, np.float64)[:, :2]
    margin = (p["dilation"] + p["feather"]) * image_size + 2
    lo = xy[list(FACE_OVAL)].min(0) - margin
    hi = xy[list(FACE_OVAL)].max(0) + margin
    origin, down = _nose_line(xy, p)
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


def lower_face_mask_in(lmk_crop: np.ndarray, image_size: int, params: dict[str, Any]) -> tuple[Region, np.ndarray]:
    """(region, mask float32 [h, w]): ``lower_face_mask`` computed only inside ``mask_region`` (zero elsewhere)."""
    p = _settings(params)
    xy = np.asarray(lmk_crop, np.float32)[:, :2]
    if xy.shape[0] != N_LANDMARKS:
        raise ValueError(f"lmk_crop must have {N_LANDMARKS} points, got {xy.shape[0]}")
    if not np.isfinite(xy).all():  # no usable landmarks: keep the real frame
        return Region(0, 0, 0, 0), np.zeros((0, 0), np.float32)
    region = mask_region(lmk_crop, image_size, p)
    if region.empty:
        return region, np.zeros((max(region.y1 - region.y0, 0), max(region.x1 - region.x0, 0)), np.float32)
    shift = 4  # fillPoly fixed-point bits: sub-pixel contour
    oval = np.zeros((region.y1 - region.y0, region.x1 - region.x0), np.uint8)
    contour = xy[list(FACE_OVAL)] - 0.5 - [region.x0, region.y0]  # pixel centres sit at +0.5
    cv2.fillPoly(oval, [np.round(contour * (1 << shift)).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=shift)
    feather = max(p["feather"] * image_size, 1e-3)
    jaw_ramp = (_signed_distance(oval) + p["dilation"] * image_size) / feather
    nose_ramp = nose_line_distance(lmk_crop, image_size, p, region) / feather
    return region, _smoothstep(np.minimum(jaw_ramp, nose_ramp)).astype(np.float32)


def lower_face_mask(lmk_crop: np.ndarray, image_size: int, params: dict[str, Any]) -> np.ndarray:
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
                         params: dict[str, Any]) -> np.ndarray:
    """Render uint8 [h, w, 3] + its coverage [h, w] -> the render with its enclosed pinholes (<= max_hole of the
    S x S image) painted from the surrounding surface (cv2 inpainting).

    Those pinholes are cracks where the lips meet the separate mouth-interior surface; left black they become dotted
    specks along the lip line in the composite, and the GAN copies them into its output."""
    p = _settings(params)
    holes = (fill_small_holes(coverage, p["max_hole"] * image_size * image_size) > 0) & (coverage <= 0.5)
    if not holes.any():
        return image
    return cv2.inpaint(np.ascontiguousarray(image), holes.astype(np.uint8), 2, cv2.INPAINT_TELEA)


def coverage_mask(coverage: np.ndarray, image_size: int, params: dict[str, Any]) -> np.ndarray:
    """Render coverage {0, 1} [S, S] -> float32 [S, S]: 0 outside the silhouette, ramping to 1 over
    ``coverage_feather`` inside it, so the render's aliased edge never shows. Pinholes (<= max_hole) are filled
    first."""
    p = _settings(params)
    covered = fill_small_holes(coverage, p["max_hole"] * image_size * image_size)
    inside = cv2.distanceTransform(covered, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return _smoothstep(inside / max(p["coverage_feather"] * image_size, 1e-3)).astype(np.float32)


def blend_mask_in(lmk_crop: np.ndarray, coverage: np.ndarray, image_size: int,
                  params: dict[str, Any]) -> tuple[Region, np.ndarray]:
    """(region, weight float32 [h, w]): the per-frame blend weight of the render -- lower-face mask x feathered render
    coverage -- computed only inside ``mask_region`` (zero elsewhere). coverage: the render's mask [S, S]."""
    region, face = lower_face_mask_in(lmk_crop, image_size, params)
    if region.empty:
        return region, face
    return region, face * coverage_mask(coverage[region.slices], image_size, params)


def blend_mask(lmk_crop: np.ndarray, coverage: np.ndarray, image_size: int, params: dict[str, Any]) -> np.ndarray:
    """The render's blend weight for one frame, float32 [S, S] in [0, 1]: what the stage (and so the GAN's training
    data) uses; equal to lower_face_mask(...) * coverage_mask(coverage, ...) but ~5x faster."""
    region, weight = blend_mask_in(lmk_crop, coverage, image_size, params)
    mask = np.zeros((image_size, image_size), np.float32)
    if not region.empty:
        mask[region.slices] = weight
    return mask


def composite(render: np.ndarray, real: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * render + (1 - mask) * real, rounded.

    render, real: uint8 [..., S, S, 3]; mask: float [..., S, S] in [0, 1].
    Exact at the ends: mask 0 gives real, mask 1 gives render."""
    real_f = real.astype(np.float32)
    blended = real_f + mask[..., None].astype(np.float32) * (render.astype(np.float32) - real_f)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def mouth_box(lmk_crop: np.ndarray, image_size: int, params: dict[str, Any]) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1), integer crop pixels, x1/y1 exclusive, around the lip landmarks padded by
    mouth_margin of their larger extent on each side; moved (not shrunk) to stay inside the image when it fits.
    Non-finite landmarks give the central quarter of the crop."""
    p = _settings(params)
    lips = np.asarray(lmk_crop, np.float64)[list(LIPS), :2]
    if not np.isfinite(lips).all():  # no usable landmarks: the central quarter of the crop
        side = image_size // 4
        x0 = (image_size - side) // 2
        return x0, x0, x0 + side, x0 + side
    lo, hi = lips.min(0), lips.max(0)
    side = int(np.ceil(max(hi - lo) * (1 + 2 * p["mouth_margin"]))) + 1
    side = max(side, 2)
    centre = (lo + hi) / 2
    x0, y0 = (int(np.floor(c - side / 2)) for c in centre)
    if side <= image_size:
        x0 = min(max(x0, 0), image_size - side)
        y0 = min(max(y0, 0), image_size - side)
    return x0, y0, x0 + side, y0 + side


def _ordered(df: pd.DataFrame, n: int, path: Path) -> pd.DataFrame:
    """Rows sorted by frame; refuse a table that does not hold exactly frames 0..n-1."""
    df = df.sort_values("frame").reset_index(drop=True)
    if len(df) != n or not np.array_equal(df["frame"].to_numpy(), np.arange(n)):
        raise InputError(path, f"expected one row per frame 0..{n - 1} (frames.npy has {n}), got {len(df)} rows")
    return df


def _strip(real: np.ndarray, render: np.ndarray, mask: np.ndarray, out: np.ndarray, box) -> np.ndarray:
    """real | render | mask | composite side by side, mouth box drawn on the composite. uint8 [S, 4S, 3]."""
    mask_rgb = np.repeat(np.rint(mask * 255).astype(np.uint8)[..., None], 3, -1)
    boxed = out.copy()
    x0, y0, x1, y1 = box
    cv2.rectangle(boxed, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1)
    return np.concatenate([real, render, mask_rgb, boxed], axis=1)


@dataclass
class StageInputs:
    """Everything the stage reads, validated and ordered by frame."""

    frames: np.ndarray  # uint8 [N, S, S, 3] (memory-mapped)
    lmk_crop: np.ndarray  # float32 [N, 478, 3]
    columns: dict[str, np.ndarray]  # head model parameters [N, k]: fitted ones + the lip model's expression


def load_inputs(paths: PresenterPaths) -> StageInputs:
    """Read frames.npy, landmarks.parquet, flame.parquet and lip_coeffs.parquet; InputError naming the file if any is
    missing, malformed or does not hold one row per frame."""
    frames = load_tensor(paths.frames, np.uint8, (None, None, 3))
    n = frames.shape[0]
    if frames.shape[2] != frames.shape[1]:
        raise InputError(paths.frames, f"crops must be square, got {frames.shape[1:3]}")
    landmarks = _ordered(read_table(paths.landmarks, LANDMARKS), n, paths.landmarks)
    fitted = _ordered(read_table(paths.flame, PARAMETERS), n, paths.flame)
    lip = _ordered(read_table(paths.lip_coeffs, LIP_COEFFS), n, paths.lip_coeffs)
    columns = {name: column_array(fitted, name) for name in ("shape", "texture", "lighting", "camera", "pose")}
    columns["expression"] = column_array(lip, "expression")  # the lip model's coefficients, not the fitted ones
    return StageInputs(frames, column_array(landmarks, "lmk_crop", (N_LANDMARKS, 3)), columns)


def make_composites(paths: PresenterPaths, inputs: StageInputs, model, params: dict[str, Any],
                    render_params: dict[str, Any], heldout_fraction: float) -> dict[str, float]:
    """Render, mask and composite every frame; write composites.npy, composites.parquet and the example strips.
    ``model`` is a loaded head model. Returns summary metrics."""
    p = _settings(params)
    frames, lmk, columns = inputs.frames, inputs.lmk_crop, inputs.columns
    n, size = frames.shape[0], frames.shape[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    renderer = renderer_from_params(model.faces.cpu().numpy(), model.num_vertices, size, render_params)
    first_heldout = heldout_start(n, heldout_fraction)
    example_frames = set(np.linspace(0, n - 1, min(int(p["examples"]), n)).round().astype(int).tolist())
    examples: dict[int, np.ndarray] = {}
    boxes = np.zeros((n, 4), np.float32)
    mask_area = coverage_area = 0.0
    batch_size = int(p["batch_size"])
    try:
        with TensorWriter(paths.composites, n, (size, size, 3), np.uint8) as writer:
            for start in Progress(range(0, n, batch_size), desc=f"composites {paths.name}", unit="batch"):
                stop = min(start + batch_size, n)
                batch = {k: torch.from_numpy(v[start:stop]).to(device) for k, v in columns.items()}
                rendered = render_parameters(model, renderer, batch)
                real = np.asarray(frames[start:stop])
                out = real.copy()
                masks = np.zeros((stop - start, size, size), np.float32)  # [b, S, S]
                for j in range(stop - start):
                    region, mask = blend_mask_in(lmk[start + j], rendered.mask[j], size, p)
                    if region.empty:
                        continue
                    rows, cols = region.slices
                    masks[j, rows, cols] = mask
                    render = fill_render_pinholes(rendered.images[j, rows, cols], rendered.mask[j, rows, cols], size, p)
                    out[j, rows, cols] = composite(render, real[j, rows, cols], mask)
                writer[start:stop] = out
                for i in range(start, stop):
                    boxes[i] = mouth_box(lmk[i], size, p)
                    if i in example_frames:
                        examples[i] = _strip(real[i - start], rendered.images[i - start], masks[i - start],
                                             out[i - start], boxes[i].astype(int))
                mask_area += float(masks.sum())
                coverage_area += float(rendered.mask.sum())
    finally:
        renderer.release()

    table = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "mouth_box": list(boxes),
                          "heldout": np.arange(n) >= first_heldout})
    write_table(table, paths.composites_table, COMPOSITES,
                metadata={"image_size": size, "heldout_start": first_heldout})
    with atomic_dir(paths.report("composites")) as report:
        for i, strip in sorted(examples.items()):
            cv2.imwrite(str(report / f"frame_{i:05d}.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    pixels = max(n, 1) * size * size
    return {"frames": float(n), "mask_fraction": mask_area / pixels, "render_coverage": coverage_area / pixels,
            "heldout_frames": float(n - first_heldout)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("interim", type=Path, help="the presenter's folder data/interim/NAME")
    args = parser.parse_args(argv)
    try:
        paths = PresenterPaths.from_folder(args.interim)  # data/interim/NAME -> NAME, project root
        name = paths.name
        params = params_group("composites")
        render_params = params_group("render")
        head_model_params = params_group("head_model")
        fraction = float(params_group("split")["heldout_fraction"])
        _settings(params)  # unknown keys fail before any work
        inputs = load_inputs(paths)
        model = load_head_model(head_model_params)
        # The per-batch tensors are tiny ([64, V, 3]); several intra-op threads only fight llvmpipe's render threads
        # (measured 20x slower head-model forward on the loaded 2-core box).
        torch.set_num_threads(1)
        from ..tracking import stage_run

        with stage_run("composites", name, {"composites": params, "render": render_params}) as mlflow:
            start = time.perf_counter()
            metrics = make_composites(paths, inputs, model, params, render_params, fraction)
            metrics["seconds"] = time.perf_counter() - start
            mlflow.log_metrics(metrics, step=0)
        print(f"composites {name}: {int(metrics['frames'])} frames in {metrics['seconds']:.1f} s "
              f"-> {paths.composites}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
