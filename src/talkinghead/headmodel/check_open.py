"""How well the open head model expresses real mouths: ``python -m talkinghead.headmodel.check_open``.

Leave-one-video-out: for each tracked video, the model is rebuilt without it (build_open.build_arrays), then shape,
expression + jaw, head pose and camera are fitted to the 2D FaceMesh landmarks of four of its frames: the most open
mouth, the most closed, the widest (spread) and the narrowest (rounded). Residuals are in pixels of a 256-px crop in
which the face width (landmarks 234-454) spans 128 px (extract.crop_scale 2 x the face box). A fit with shape and pose
only (expression and jaw frozen at zero) is the baseline that shows what the expression basis adds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import InputError
from ..paths import REPORTS
from .base import mouth_opening
from .build_open import build_arrays, default_videos, lip_ids
from .camera import project
from .open_model import OpenHeadModel

CROP = 256
FACE_WIDTH_PX = 128.0


def select_frames(points: np.ndarray) -> dict[str, int]:
    """Frame indices of the open / closed / spread / rounded mouths in tracked points [N, 478, 3] (pixels)."""
    width_face = np.linalg.norm(points[:, 454, :2] - points[:, 234, :2], axis=1)
    gap = np.abs(points[:, [13, 82, 312], 1] - points[:, [14, 87, 317], 1]).mean(1) / width_face
    mouth_w = np.linalg.norm(points[:, 291, :2] - points[:, 61, :2], axis=1) / width_face
    return {"open": int(gap.argmax()), "closed": int(gap.argmin()), "spread": int(mouth_w.argmax()),
            "rounded": int(mouth_w.argmin())}


def to_crop_pixels(points: np.ndarray) -> np.ndarray:
    """Frame pixels [K, 478, 3] -> [K, 478, 2] in a crop where the face width is FACE_WIDTH_PX, face centred."""
    xy = points[..., :2]
    width = np.linalg.norm(xy[:, 454] - xy[:, 234], axis=1)[:, None, None]
    centre = xy[:, :468].mean(1, keepdims=True)
    return (xy - centre) * FACE_WIDTH_PX / width + CROP / 2


def fit_frames(model: OpenHeadModel, target: torch.Tensor, with_expression: bool, steps: int = 400
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit [K] frames' 2D landmarks target [K, 478, 2]; returns (per-point errors [K, 478] px, mouth opening [K])."""
    k = target.shape[0]
    shape = torch.zeros(k, 100, requires_grad=True)
    expr = torch.zeros(k, 53, requires_grad=with_expression)
    pose = torch.zeros(k, 6, requires_grad=True)
    camera = torch.tensor([[FACE_WIDTH_PX * 2 / CROP / 0.15, 0.0, 0.0]]).repeat(k, 1).requires_grad_()
    params = [shape, pose, camera] + ([expr] if with_expression else [])
    opt = torch.optim.Adam(params, lr=0.02)
    for step in range(steps):
        if step == steps // 2:
            for group in opt.param_groups:
                group["lr"] = 0.005
        opt.zero_grad()
        out = model(shape, expr, pose)
        px = project(out.landmarks, camera, CROP)
        prior = 1e-3 * ((shape ** 2).sum(1).mean() + (expr[:, :50] ** 2).sum(1).mean())
        loss = ((px - target) ** 2).sum(-1).mean() + prior
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(shape, expr, pose)
        err = (project(out.landmarks, camera, CROP) - target).norm(dim=-1)
        return err, mouth_opening(out.vertices, model)


def check(tracks: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    lips = torch.as_tensor(lip_ids())
    results: dict[str, dict] = {}
    for held_out in tracks:
        rest = {k: v for k, v in tracks.items() if k != held_out}
        print(f"held out: {held_out}", file=sys.stderr)
        model = OpenHeadModel(build_arrays(rest, verbose=False))
        points = tracks[held_out][0]
        points = points[~np.isnan(points).any(axis=(1, 2))]
        frames = select_frames(points)
        target = torch.as_tensor(to_crop_pixels(points[list(frames.values())]), dtype=torch.float32)
        for with_expression in (True, False):
            err, opening = fit_frames(model, target, with_expression)
            key = "expression" if with_expression else "baseline_no_expression"
            for i, kind in enumerate(frames):
                results.setdefault(held_out, {}).setdefault(kind, {"frame": frames[kind]})[key] = {
                    "all_px": round(float(err[i].mean()), 3), "lips_px": round(float(err[i, lips].mean()), 3),
                    "mouth_opening_mm": round(1000 * float(opening[i]), 2)}
        print(held_out, json.dumps(results[held_out]), file=sys.stderr)
    summary = {}
    for kind in ("open", "closed", "spread", "rounded"):
        for key in ("expression", "baseline_no_expression"):
            for part in ("all_px", "lips_px"):
                values = [r[kind][key][part] for r in results.values()]
                summary[f"{kind}_{key}_{part}"] = round(float(np.mean(values)), 3)
    return {"per_video": results, "mean_over_videos": summary}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--cache", type=Path, default=None, help="FaceMesh tracks cache (as for build_open)")
    parser.add_argument("--out", type=Path, default=REPORTS / "headmodel" / "expressiveness.json")
    args = parser.parse_args(argv)
    from .tracking_data import track_videos

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny batches: one thread is fastest on a shared CPU
    try:
        report = check(track_videos(default_videos(args.shared), args.cache))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["mean_over_videos"], indent=2))


if __name__ == "__main__":
    main()
