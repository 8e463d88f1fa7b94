"""composites@NAME: paste the head model's rendered lower face, driven by the lip model's coefficients, into each frame.

For frame i the head model is posed with the fitted shape / pose / camera / texture / lighting of flame.parquet and the
lip model's "second coefficients" (lip_coeffs.parquet expression[53]) and rendered at the crop size. A lower-face mask
from the frame's FaceMesh landmarks (below a line through the nose, inside the jaw contour, dilated and feathered)
times the render's feathered coverage selects the rendered pixels:

    composite = mask * render + (1 - mask) * follow_expression(frame)

where ``compositing.follow_expression`` first moves the frame's lower face as the head model's landmarks move from
the frame's fitted expression to the second coefficients (composites.warp_sigma), so the real chin and cheeks around
the render follow its jaw; speak does the same with new speech's coefficients.

The GAN later turns these composites back into photoreal frames; the mouth box (square, around the lip landmarks)
tells it where to look hardest.

    python -m talkinghead.stages.composites data/interim/NAME

Reads params groups ``composites``, ``render``, ``head_model`` and ``split``. Writes composites.npy (uint8 [N, S, S, 3])
and composites.parquet (schemas.COMPOSITES) under data/processed/NAME/, example strips
(real | render | mask | composite, mouth box drawn) in reports/composites/NAME/examples/ and metrics.json (frames,
shares of the crop the blend mask and the render cover, seconds) in reports/composites/NAME/.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_dir, write_json
from ..compositing import CompositesParams, composite_lower_faces, mouth_box
from ..errors import InputError, exits_on_input_error
from ..headmodel import HeadModelParams, load_head_model
from ..params import load_config
from ..progress import Progress
from ..paths import PresenterPaths
from ..render import Renderer, RenderParams, project_landmarks, render_parameters
from ..schemas import (COMPOSITES, LANDMARKS, LIP_COEFFS, N_LANDMARKS, PARAMETERS, column_array, read_table,
                       write_table)
from ..split import SplitParams, heldout_start
from ..tensorfile import TensorWriter, load_tensor

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
    fitted_expression: np.ndarray  # float32 [N, 53]: the expression the frame itself shows (fit)


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
    return StageInputs(frames, column_array(landmarks, "lmk_crop", (N_LANDMARKS, 3)), columns,
                       column_array(fitted, "expression"))


def make_composites(paths: PresenterPaths, inputs: StageInputs, model, params: CompositesParams,
                    render_params: RenderParams, heldout_fraction: float) -> dict[str, float]:
    """Render, mask and composite every frame; write composites.npy, composites.parquet and the example strips.
    ``model`` is a loaded head model. Returns summary metrics."""
    frames, lmk, columns = inputs.frames, inputs.lmk_crop, inputs.columns
    n, size = frames.shape[0], frames.shape[1]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    renderer = Renderer(model.faces.cpu().numpy(), model.num_vertices, size, render_params)
    first_heldout = heldout_start(n, heldout_fraction)
    example_frames = set(np.linspace(0, n - 1, min(params.examples, n)).round().astype(int).tolist())
    examples: dict[int, np.ndarray] = {}
    boxes = np.zeros((n, 4), np.float32)
    mask_area = coverage_area = 0.0
    batch_size = params.batch_size
    try:
        with TensorWriter(paths.composites, n, (size, size, 3), np.uint8) as writer:
            for start in Progress(range(0, n, batch_size), desc=f"composites {paths.name}", unit="batch"):
                stop = min(start + batch_size, n)
                batch = {k: torch.from_numpy(v[start:stop]).to(device) for k, v in columns.items()}
                rendered = render_parameters(model, renderer, batch)
                fitted = torch.from_numpy(inputs.fitted_expression[start:stop]).to(device)
                moved_from = project_landmarks(model, dict(batch, expression=fitted), size)  # [b, L, 2]: the frame's
                real = np.asarray(frames[start:stop])
                _, masks, out = composite_lower_faces(real, rendered.images, rendered.mask, lmk[start:stop],
                                                      moved_from, rendered.landmarks, params)  # blend weights [b, S, S]
                writer[start:stop] = out
                for i in range(start, stop):
                    boxes[i] = mouth_box(lmk[i], size, params)
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
    with atomic_dir(paths.report("composites") / "examples") as report:  # a DVC out of its own: replaced whole
        for i, strip in sorted(examples.items()):
            cv2.imwrite(str(report / f"frame_{i:05d}.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    pixels = max(n, 1) * size * size
    return {"frames": float(n), "mask_fraction": mask_area / pixels, "render_coverage": coverage_area / pixels,
            "heldout_frames": float(n - first_heldout)}


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("interim", type=Path, help="the presenter's folder data/interim/NAME")
    args = parser.parse_args(argv)
    paths = PresenterPaths.from_folder(args.interim)  # data/interim/NAME -> NAME, project root
    name = paths.name
    params = load_config(CompositesParams, "composites")
    render_params = load_config(RenderParams, "render")
    head_model_params = load_config(HeadModelParams, "head_model")
    fraction = load_config(SplitParams, "split").heldout_fraction
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
        write_json(paths.report("composites") / "metrics.json", metrics)
    print(f"composites {name}: {int(metrics['frames'])} frames in {metrics['seconds']:.1f} s "
          f"-> {paths.composites}")


if __name__ == "__main__":
    main()
