"""Renderer and composites speed.

- render_ms_per_frame: one 256x256 frame (target <= 5 ms on CPU llvmpipe), on the open head model when its asset exists
  (the mesh the pipeline renders), else on a UV sphere of ~5k vertices / ~10k faces. Vertices and colours change every
  frame, as in the composites stage.
- composites_ms_per_frame: the composites stage's work per frame (head model, render, masks, blend, writing) on a
  synthetic presenter (``synthetic_presenter``, also used by tests/test_composites.py); target: the demo's ~1900
  frames in < 40 s, i.e. < 21 ms per frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schemas
from ..paths import PresenterPaths


def _mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(vertices [V, 3] roughly in [-1, 1], faces [F, 3], interior_t [V], name) of the benchmark mesh."""
    try:
        import torch

        from ..headmodel import load_head_model
        from ..headmodel import HeadModelParams
        from ..params import load_config

        model = load_head_model(load_config(HeadModelParams, "head_model"))
        with torch.no_grad():
            b = 1
            out = model(torch.zeros(b, 100), torch.zeros(b, 53), torch.zeros(b, 6))
        vertices = out.vertices[0].numpy()
        vertices = (vertices - vertices.mean(0)) / np.abs(vertices).max() * 0.8
        return vertices, model.faces.numpy(), model.interior_t.numpy(), "open_head_model"
    except Exception:  # no head model yet (or no params.yaml here): a sphere of the same size class
        from ..render.meshes import uv_sphere

        vertices, faces = uv_sphere(50, 100)
        interior_t = np.where(vertices[:, 2] > 0.7, (0.5 - vertices[:, 1]).clip(0, 1), -1).astype(np.float32)
        return vertices, faces, interior_t, "uv_sphere"


def synthetic_parameters(n: int, seed: int = 0, jaw: float = 0.05) -> dict[str, np.ndarray]:
    """Plausible per-frame head model parameters [N, k] (random face, front lighting, face ~ 2/3 of the crop)."""
    rng = np.random.default_rng(seed)
    lighting = np.zeros((n, 9, 3), np.float32)
    lighting[:, 0] = 2.8  # ambient (band 0 is scaled by 1 / sqrt(4 pi) ~ 0.28)
    lighting[:, 3] = 0.3  # a little light from the front (+z)
    expression = np.zeros((n, 53), np.float32)
    expression[:, :50] = rng.normal(0, 0.3, (n, 50))
    expression[:, 50] = jaw
    pose = np.zeros((n, 6), np.float32)
    pose[:, :3] = rng.normal(0, 0.08, (n, 3))
    return {
        "shape": np.repeat(rng.normal(0, 0.5, (1, 100)), n, 0).astype(np.float32),
        "expression": expression,
        "texture": np.repeat(rng.normal(0, 0.3, (1, 50)), n, 0).astype(np.float32),
        "lighting": lighting.reshape(n, 27),  # [N, 9, 3] -> [N, 27]
        "camera": np.c_[np.full(n, 5.5), rng.normal(0, 0.03, (n, 2))].astype(np.float32),
        "pose": pose,
    }


def project_landmarks(model, params: dict[str, np.ndarray], size: int) -> np.ndarray:
    """FaceMesh-style lmk_crop [N, 478, 3] of the posed model (what the landmarks stage would find on its render)."""
    import torch

    from ..headmodel import camera

    t = {k: torch.from_numpy(v) for k, v in params.items()}
    with torch.no_grad():
        out = model(t["shape"], t["expression"], t["pose"])
        px = camera.project(out.landmarks, t["camera"], size).numpy()
    lmk = np.zeros((len(px), schemas.N_LANDMARKS, 3), np.float32)
    lmk[:, model.landmark_mp_ids.numpy(), :2] = px
    return lmk


def synthetic_presenter(root: Path, model, n: int, size: int, name: str = "tiny",
                        jaw: float = 0.3) -> tuple[PresenterPaths, dict[str, np.ndarray], np.ndarray]:
    """Write every input of the composites stage for a synthetic presenter under ``root``: frames.npy (a colour
    gradient), landmarks.parquet (the model's projected landmarks), flame.parquet (random fit, mouth closed) and
    lip_coeffs.parquet (same expression with the jaw opened by ``jaw`` rad, rows in reverse order).
    Returns (paths, fitted parameters, lmk_crop [N, 478, 3])."""
    paths = PresenterPaths.of(name, root)
    fitted = synthetic_parameters(n, seed=2, jaw=0.0)
    lip = fitted["expression"].copy()
    lip[:, 50] = jaw
    lmk = project_landmarks(model, {**fitted, "expression": lip}, size)
    yy, xx = np.mgrid[0:size, 0:size]
    frame = np.stack([80 + xx * 128 // size, 60 + yy * 128 // size, np.full_like(xx, 120)], -1).astype(np.uint8)
    paths.interim.mkdir(parents=True, exist_ok=True)
    np.save(paths.frames, np.repeat(frame[None], n, 0))
    frame_ids = np.arange(n, dtype=np.int32)
    schemas.write_table(pd.DataFrame({"frame": frame_ids, "detected": np.ones(n, bool),
                                      "lmk_crop": list(lmk.reshape(n, -1)),
                                      "lmk_orig": list(lmk[..., :2].reshape(n, -1))}),
                        paths.landmarks, schemas.LANDMARKS)
    schemas.write_table(pd.DataFrame({"frame": frame_ids, **{k: list(v) for k, v in fitted.items()},
                                      "fit_error": np.zeros(n, np.float32)}), paths.flame, schemas.PARAMETERS)
    schemas.write_table(pd.DataFrame({"frame": frame_ids[::-1], "expression": list(lip[::-1]),
                                      "heldout": np.zeros(n, bool)}), paths.lip_coeffs, schemas.LIP_COEFFS)
    return paths, fitted, lmk


def composites_ms_per_frame(workdir: Path, n: int = 384, size: int = 256) -> float:
    """Time the composites stage's work (make_composites, without MLflow) on a synthetic presenter of n frames."""
    from ..compositing import CompositesParams
    from ..headmodel import HeadModelParams, load_head_model
    from ..parallel import torch_threads
    from ..params import load_config
    from ..render import RenderParams
    from ..stages import composites

    model = load_head_model(load_config(HeadModelParams, "head_model"))
    paths, _, _ = synthetic_presenter(workdir, model, n, size, name="bench")
    inputs = composites.load_inputs(paths)
    with torch_threads(1):  # as the stage's main() does
        start = time.perf_counter()
        composites.make_composites(paths, inputs, model, load_config(CompositesParams, "composites"),
                                   load_config(RenderParams, "render"), 0.2)
        return (time.perf_counter() - start) / n * 1e3


def run(workdir: Path, frames: int = 256, batch: int = 64, image_size: int = 256) -> dict[str, float]:
    """Render ``frames`` frames in batches (render_ms_per_frame: median over batches, mesh size), then time the
    composites stage (composites_ms_per_frame; absent without the open head model asset)."""
    from ..params import load_config
    from ..render import Renderer, RenderParams

    vertices, faces, interior_t, mesh_name = _mesh()
    rng = np.random.default_rng(0)
    jitter = rng.normal(0, 0.01, (batch, *vertices.shape)).astype(np.float32)
    ndc = vertices[None] + jitter  # [B, V, 3]
    colors = np.clip(0.6 + jitter * 10, 0, 1).astype(np.float32)
    renderer = Renderer(faces, len(vertices), image_size, load_config(RenderParams, "render"))
    try:
        renderer.render(ndc[:2], colors[:2], interior_t)  # warm-up: shader compilation, buffer allocation
        per_frame = []
        for _ in range(max(1, frames // batch)):
            start = time.perf_counter()
            renderer.render(ndc, colors, interior_t)
            per_frame.append((time.perf_counter() - start) / batch * 1e3)
    finally:
        renderer.release()
    numbers = {
        "render_ms_per_frame": float(np.median(per_frame)),
        "render_vertices": float(len(vertices)),
        "render_faces": float(len(faces)),
    }
    if mesh_name == "open_head_model":
        numbers["composites_ms_per_frame"] = composites_ms_per_frame(workdir)
    return numbers


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
