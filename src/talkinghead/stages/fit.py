"""Stage fit@NAME: fit the head model to a presenter's FaceMesh landmarks and frame colours.

    python -m talkinghead.stages.fit data/interim/NAME [--reports reports/fit/NAME]

Reads landmarks.parquet and frames.npy of the presenter, writes flame.parquet (schemas.PARAMETERS: one shape for
all rows, per-frame expression + jaw, pose, camera and lighting, one texture), and under the report folder
metrics.json (landmark NME overall / lips in % of the inter-ocular distance, jitter, speed), fit_error.csv (per-frame plot data) and overlays/*.png
(the fitted mesh wireframe and landmarks drawn over real frames, open-mouth frames included).
The optimisation itself lives in talkinghead.fitting.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import schemas
from ..atomic import atomic_dir, atomic_path, write_json
from ..errors import InputError, exits_on_input_error
from ..fitting import (FitConfig, fit_frames, fit_metrics, fit_shape, fit_texture_lighting, initial_parameters,
                       inter_ocular, landmark_model, landmark_targets, landmark_weights, project_landmarks)
from ..headmodel import camera as head_camera
from ..headmodel import HeadModelParams, load_head_model
from ..parallel import torch_threads
from ..params import load_config
from ..progress import print_summary
from ..tensorfile import load_tensor

STAGE = "fit"


@dataclass
class FitResult:
    """Everything the fit stage produces for one presenter (numpy, CPU)."""

    shape: np.ndarray  # [100]
    expression: np.ndarray  # [N, 53]
    texture: np.ndarray  # [50]
    lighting: np.ndarray  # [N, 27]
    camera: np.ndarray  # [N, 3]
    pose: np.ndarray  # [N, 6]
    landmarks_px: np.ndarray  # [N, L, 2] fitted model landmarks in crop pixels
    vertices_px: np.ndarray  # [N, V, 2] fitted vertices in crop pixels (overlays)
    metrics: dict  # summary floats (see fitting.fit_metrics) + timings
    nme_per_frame: np.ndarray  # [N]
    lip_nme_per_frame: np.ndarray  # [N]


def read_inputs(interim: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """landmarks.parquet + frames.npy of a presenter -> (lmk_crop [N, 478, 3], detected [N], frames uint8 [N,S,S,3]).

    Raises InputError if the tables disagree, frames are not square or no frame has a detected face.
    """
    table = schemas.read_table(interim / "landmarks.parquet", schemas.LANDMARKS).sort_values("frame")
    lmk = schemas.column_array(table, "lmk_crop", (schemas.N_LANDMARKS, 3))
    detected = table["detected"].to_numpy(bool)
    if not np.array_equal(table["frame"].to_numpy(), np.arange(len(table))):
        raise InputError(interim / "landmarks.parquet", "frame column is not 0..N-1")
    frames = load_tensor(interim / "frames.npy", np.uint8, (None, None, 3), n=len(table))
    if frames.shape[1] != frames.shape[2]:
        raise InputError(interim / "frames.npy", f"crops must be square, got {frames.shape[1:3]}")
    if not detected.any():
        raise InputError(interim / "landmarks.parquet", "no frame has a detected face; nothing to fit")
    if not np.isfinite(lmk[detected]).all():
        raise InputError(interim / "landmarks.parquet", "non-finite landmark coordinates in detected frames")
    return lmk, detected, frames


def fit_presenter(model, lmk_crop: np.ndarray, detected: np.ndarray, frames: np.ndarray, cfg: FitConfig,
                  progress: bool = True) -> FitResult:
    """Shape, per-frame parameters, texture and lighting of one presenter, plus fit metrics."""
    model = model.to(cfg.torch_device()).eval()
    with torch_threads(cfg.cpu_threads):
        return _fit_presenter(model, lmk_crop, detected, frames, cfg, progress)


def _fit_presenter(model, lmk_crop, detected, frames, cfg: FitConfig, progress: bool) -> FitResult:
    device = cfg.torch_device()
    image_size = int(frames.shape[1])
    ids = model.landmark_mp_ids.cpu().numpy()
    lmk_crop = np.nan_to_num(lmk_crop.astype(np.float32))
    targets = torch.as_tensor(landmark_targets(lmk_crop, ids), device=device)
    weights = torch.as_tensor(landmark_weights(ids, cfg.lip_weight), device=device)
    t0, c0 = time.perf_counter(), time.process_time()
    shape = fit_shape(landmark_model(model, torch.zeros(schemas.N_SHAPE, device=device), cfg), targets, detected,
                      weights, image_size, cfg, progress)
    t1, c1 = time.perf_counter(), time.process_time()
    fast = landmark_model(model, shape, cfg)
    init = initial_parameters(fast, shape, targets, detected, weights, image_size)
    params = fit_frames(fast, shape, targets, detected, weights, image_size, cfg, init=init, progress=progress)
    t2, c2 = time.perf_counter(), time.process_time()
    texture, lighting = fit_texture_lighting(model, frames, shape, params, image_size, cfg)
    t3 = time.perf_counter()
    n = len(lmk_crop)
    timings = {"shape_s": t1 - t0, "shape_cpu_s": c1 - c0, "frames_s": t2 - t1, "texture_lighting_s": t3 - t2,
               "fit_frames_per_s": n / max(t2 - t1, 1e-9),
               # CPU time of this process: a load-independent view of the speed on a shared machine.
               "fit_frames_per_cpu_s": n / max(c2 - c1, 1e-9)}
    with torch.no_grad():
        pred = project_landmarks(model, shape, params, image_size)[..., :2].cpu().numpy()
        out = model(shape.expand(n, -1), params.expression, params.pose())
        vertices_px = head_camera.project(out.vertices, params.camera, image_size).cpu().numpy()
    metrics = fit_metrics(pred, lmk_crop, detected, ids)
    summary = {k: v for k, v in metrics.items() if not k.endswith("_per_frame")}
    summary.update(timings, frames=n, detected_frames=int(detected.sum()))
    return FitResult(
        shape=shape.cpu().numpy(), expression=params.expression.cpu().numpy(), texture=texture.cpu().numpy(),
        lighting=lighting.cpu().numpy(), camera=params.camera.cpu().numpy(), pose=params.pose().cpu().numpy(),
        landmarks_px=pred, vertices_px=vertices_px, metrics=summary,
        nme_per_frame=metrics["nme_per_frame"], lip_nme_per_frame=metrics["lip_nme_per_frame"])


def parameters_table(result: FitResult) -> pd.DataFrame:
    """FitResult -> DataFrame in the schemas.PARAMETERS layout (the same shape and texture on every row)."""
    n = len(result.expression)
    return pd.DataFrame({
        "frame": np.arange(n, dtype=np.int32),
        "shape": list(np.repeat(result.shape[None], n, 0)),
        "expression": list(result.expression),
        "texture": list(np.repeat(result.texture[None], n, 0)),
        "lighting": list(result.lighting),
        "camera": list(result.camera),
        "pose": list(result.pose),
        "fit_error": result.nme_per_frame.astype(np.float32),
    })


def choose_overlay_frames(lmk_crop: np.ndarray, detected: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` detected frames: half with the widest-open mouths (FaceMesh 13/14 gap / inter-ocular),
    the rest spread over the timeline."""
    idx = np.flatnonzero(detected)
    if len(idx) == 0 or count <= 0:
        return idx[:0]
    opening = np.abs(lmk_crop[idx, 14, 1] - lmk_crop[idx, 13, 1]) / np.maximum(inter_ocular(lmk_crop[idx]), 1e-6)
    open_mouth = idx[np.argsort(-opening)[: count // 2]]
    spread = idx[np.linspace(0, len(idx) - 1, count).round().astype(int)]
    chosen = list(dict.fromkeys(open_mouth.tolist()))
    for i in spread:
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(int(i))
    return np.array(sorted(chosen[:count]), dtype=int)


def draw_overlay(frame: np.ndarray, vertices_px: np.ndarray, faces: np.ndarray, fitted_px: np.ndarray,
                 target_px: np.ndarray, scale: int = 2) -> np.ndarray:
    """Real frame uint8 [S,S,3] with the fitted mesh wireframe (green), fitted landmarks (red) and the FaceMesh
    targets (cyan), upscaled by ``scale`` for legibility -> uint8 [S*scale, S*scale, 3] RGB."""
    import cv2

    image = cv2.resize(np.ascontiguousarray(frame), None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    wire = image.copy()
    pts = np.round(vertices_px * scale * 16).astype(np.int32)  # 4 fractional bits for sub-pixel lines
    edges = np.unique(np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1), axis=0)
    for a, b in edges:
        cv2.line(wire, tuple(pts[a]), tuple(pts[b]), (0, 200, 0), 1, cv2.LINE_AA, shift=4)
    image = cv2.addWeighted(wire, 0.5, image, 0.5, 0)
    for p in np.round(target_px * scale).astype(int):
        cv2.circle(image, tuple(p), 2, (0, 255, 255), -1, cv2.LINE_AA)
    for p in np.round(fitted_px * scale).astype(int):
        cv2.circle(image, tuple(p), 1, (255, 0, 0), -1, cv2.LINE_AA)
    return image


def readable_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The fit summary with the NMEs (fractions of the inter-ocular distance) as percentages, the unit in the name
    (nme_pct, lip_nme_pct): metrics.json, MLflow and the report show 0.19, not 0.0019."""
    renamed = {"nme": "nme_pct", "lip_nme": "lip_nme_pct"}
    return {renamed.get(k, k): (v * 100.0 if k in renamed else v) for k, v in metrics.items()}


def write_reports(report_dir: Path, result: FitResult, frames: np.ndarray, lmk_crop: np.ndarray,
                  detected: np.ndarray, faces: np.ndarray, landmark_mp_ids: np.ndarray, count: int) -> list[Path]:
    """metrics.json, fit_error.csv and overlays/overlay_<frame>.png under ``report_dir``; returns the overlay paths."""
    import cv2

    report_dir.mkdir(parents=True, exist_ok=True)
    # NaN (e.g. no lip landmarks in a user model) is not JSON: write null.
    summary = {k: round(float(v), 6) if np.isfinite(v) else None
               for k, v in readable_metrics(result.metrics).items()}
    write_json(report_dir / "metrics.json", summary)
    per_frame = pd.DataFrame({"frame": np.arange(len(detected)), "nme_pct": result.nme_per_frame * 100.0,
                              "lip_nme_pct": result.lip_nme_per_frame * 100.0, "jaw_open": result.expression[:, 50],
                              "detected": detected.astype(int)})
    with atomic_path(report_dir / "fit_error.csv") as tmp:
        per_frame.to_csv(tmp, index=False, float_format="%.6f")
    chosen = choose_overlay_frames(lmk_crop, detected, count)
    with atomic_dir(report_dir / "overlays") as tmp_dir:  # a DVC out of its own: replaced whole
        for i in chosen:
            image = draw_overlay(np.asarray(frames[i]), result.vertices_px[i], faces, result.landmarks_px[i],
                                 lmk_crop[i, landmark_mp_ids, :2])
            cv2.imwrite(str(tmp_dir / f"overlay_{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return [report_dir / "overlays" / f"overlay_{i:05d}.png" for i in chosen]


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME (landmarks.parquet, frames.npy)")
    parser.add_argument("--reports", type=Path, default=None, help="report folder (default reports/fit/NAME)")
    args = parser.parse_args(argv)
    name = args.interim.resolve().name
    report_dir = args.reports or Path("reports") / STAGE / name
    cfg = load_config(FitConfig, STAGE)
    head_params = load_config(HeadModelParams, "head_model")
    model = load_head_model(head_params)
    lmk, detected, frames = read_inputs(args.interim)
    from ..tracking import stage_run

    with stage_run(STAGE, name, {"fit": cfg, "head_model": head_params}) as mlflow:
        result = fit_presenter(model, lmk, detected, frames, cfg)
        schemas.write_table(parameters_table(result), args.interim / "flame.parquet", schemas.PARAMETERS,
                            metadata={"head_model": getattr(model, "name", "unknown")})
        overlays = write_reports(report_dir, result, frames, lmk, detected, model.faces.cpu().numpy(),
                                 model.landmark_mp_ids.cpu().numpy(), cfg.overlay_frames)
        mlflow.log_metrics({k: float(v) for k, v in readable_metrics(result.metrics).items() if np.isfinite(v)},
                           step=0)
        mlflow.log_artifact(str(report_dir / "fit_error.csv"))
        for path in overlays:
            mlflow.log_artifact(str(path), artifact_path="overlays")
    print_summary(f"fit {name}", {k: round(float(v), 4) for k, v in readable_metrics(result.metrics).items()})


if __name__ == "__main__":
    main()
