"""Stage predict_lip@NAME: the "second 53-d coefficients" of every frame, and lip-sync metrics on the held-out tail.

``python -m talkinghead.stages.predict_lip data/interim/NAME --checkpoint models/lip/lip.pt`` writes
data/interim/NAME/lip_coeffs.parquet (schemas.LIP_COEFFS, every frame, with the held-out flag),
reports/lip/NAME/metrics.json (DVC metrics) and reports/lip/NAME/mouth_opening.png.

Metrics on the held-out tail (frames never trained on), against the fitted expressions, with the presenter's shape
and zero pose through the head model: LVE (lip vertex error), Pearson r of the mouth opening, and the AV offset
(lag in [-5, 5] frames maximising the mouth-opening cross-correlation; positive = prediction late). The same for the
baselines: the static mean expression of the training part, the model's prediction delayed by 3 frames, and a ridge
regression from the same features fitted on this presenter's training frames alone (``talkinghead.lip.ridge``: if
it cannot beat the still face on the validation slice either, the footage holds no audio cue a model could learn).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import schemas
from ..atomic import atomic_path, write_json
from ..errors import InputError, exits_on_input_error
from ..lip import load_lip_model, predict_with
from ..parallel import torch_threads
from ..lip.ridge import ridge_baseline
from ..lipmetrics import M2_TO_MM2, av_offset, delayed, lve, pearson_r
from ..headmodel import HeadModelParams
from ..lip.trainer import LipParams
from ..params import load_config
from ..progress import print_summary
from ..paths import LIP_CHECKPOINT, PresenterPaths
from ..split import SplitParams, TimeSplit, heldout_start, time_split
from ..tensorfile import load_tensor

SHIFT_FRAMES = 3  # the delayed-prediction baseline


def head_vertices(head_model, shape: np.ndarray, expression: np.ndarray, batch: int = 512) -> np.ndarray:
    """Vertices [N, V, 3] of ``expression`` [N, 53] with ``shape`` [100] and zero pose."""
    out = []
    with torch.no_grad():
        for i in range(0, len(expression), batch):
            expr = torch.as_tensor(np.ascontiguousarray(expression[i:i + batch], dtype=np.float32))
            n = expr.shape[0]
            shp = torch.as_tensor(shape, dtype=torch.float32)[None].expand(n, -1)
            out.append(head_model(shp, expr, torch.zeros(n, 6)).vertices.numpy())
    return np.concatenate(out)


def sync_metrics(head_model, shape: np.ndarray, predicted: np.ndarray, fitted: np.ndarray) -> dict[str, float]:
    """LVE, mouth-opening r and AV offset of ``predicted`` vs ``fitted`` expressions [N, 53]."""
    from ..headmodel import mouth_opening

    pred_v = head_vertices(head_model, shape, predicted)
    true_v = head_vertices(head_model, shape, fitted)
    pred_open = mouth_opening(torch.from_numpy(pred_v), head_model).numpy()
    true_open = mouth_opening(torch.from_numpy(true_v), head_model).numpy()
    return {"lve_mm2": lve(pred_v, true_v, head_model.lip_vertex_ids.numpy()) * M2_TO_MM2,
            "mouth_opening_r": pearson_r(pred_open, true_open),
            "av_offset": av_offset(true_open, pred_open, max_lag=5)}


def mouth_openings(head_model, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    from ..headmodel import mouth_opening

    return mouth_opening(torch.from_numpy(head_vertices(head_model, shape, expression)), head_model).numpy()


def evaluate_presenter(head_model, shape: np.ndarray, predicted: np.ndarray, fitted: np.ndarray,
                       start: int, features: np.ndarray | None = None, split: TimeSplit | None = None
                       ) -> dict[str, Any]:
    """Metrics of the model and the baselines on frames [start, N); the ridge baseline needs ``features`` and
    ``split`` (whose held-out tail must start at ``start``)."""
    static = np.broadcast_to(fitted[:start].mean(axis=0), fitted.shape)
    late = delayed(predicted, SHIFT_FRAMES)
    tail = slice(start, len(fitted))
    metrics: dict[str, Any] = {
        "heldout_frames": len(fitted) - start,
        "model": sync_metrics(head_model, shape, predicted[tail], fitted[tail]),
        "baseline_static_mean": sync_metrics(head_model, shape, static[tail], fitted[tail]),
        f"baseline_shifted_{SHIFT_FRAMES}": sync_metrics(head_model, shape, late[tail], fitted[tail]),
    }
    if features is not None and split is not None:
        if split.heldout_start != start:
            raise ValueError(f"split's held-out tail starts at {split.heldout_start}, not {start}")
        ridge = ridge_baseline(features, fitted, split)
        if ridge is not None:
            metrics["baseline_ridge"] = {**sync_metrics(head_model, shape, ridge.prediction[tail], fitted[tail]),
                                         "strength": ridge.strength, "validation_ratio": ridge.validation_ratio}
    static_lve = metrics["baseline_static_mean"]["lve_mm2"]
    metrics["lve_reduction_vs_static"] = 1.0 - metrics["model"]["lve_mm2"] / static_lve if static_lve > 0 else 0.0
    return metrics


def plot_mouth_opening(path: Path, fitted: np.ndarray, predicted: np.ndarray, fps: float, start: int,
                       title: str) -> None:
    """PNG: mouth opening over time, fitted vs predicted, held-out tail shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(fitted)) / fps
    fig, axes = plt.subplots(2, 1, figsize=(12, 6))
    for ax, sl in zip(axes, [slice(0, len(t)), slice(start, min(len(t), start + int(10 * fps)))]):
        ax.plot(t[sl], fitted[sl], label="fitted", lw=1)
        ax.plot(t[sl], predicted[sl], label="lip model", lw=1)
        ax.axvspan(start / fps, t[-1], color="0.9", zorder=0, label="held out")
        ax.set_xlim(t[sl][0], t[sl][-1])
        ax.set_ylabel("mouth opening")
    axes[0].set_title(title)
    axes[0].legend(loc="upper right")
    axes[1].set_xlabel("time (s); bottom: first 10 s of the held-out tail")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def predict_presenter(paths: PresenterPaths, checkpoint: Path, heldout_fraction: float, head_params: HeadModelParams,
                      validation_fraction: float = 0.1) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray]]:
    """(LIP_COEFFS table, metrics, signals for the plot) of one presenter."""
    from ..headmodel import load_head_model

    features = np.asarray(load_tensor(paths.features, np.float32, (None, None)))
    flame = schemas.read_table(paths.flame, schemas.PARAMETERS)
    if len(flame) != len(features):
        raise InputError(paths.flame, f"{len(flame)} frames but {paths.features} has {len(features)}; rerun align/fit")
    fitted = schemas.column_array(flame, "expression")
    shape = schemas.column_array(flame, "shape").mean(axis=0)
    lip = load_lip_model(checkpoint, "cpu")
    try:
        with torch_threads(1):  # fastest on the shared CPU (see talkinghead.lip.predict)
            predicted = predict_with(lip, features, paths.name)
    except InputError as exc:
        raise InputError(checkpoint, exc.reason) from exc
    n = len(features)
    start = heldout_start(n, heldout_fraction)
    table = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "expression": list(predicted),
                          "heldout": np.arange(n) >= start})
    head_model = load_head_model(head_params)
    metrics = evaluate_presenter(head_model, shape, predicted, fitted, start, features,
                                 time_split(n, heldout_fraction, validation_fraction))
    signals = {"fitted": mouth_openings(head_model, shape, fitted),
               "predicted": mouth_openings(head_model, shape, predicted)}
    return table, metrics, signals


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME (features.npy, flame.parquet)")
    parser.add_argument("--checkpoint", type=Path, default=LIP_CHECKPOINT)
    parser.add_argument("--no-track", action="store_true", help="skip MLflow logging")
    args = parser.parse_args(argv)
    paths = PresenterPaths.from_folder(args.interim)
    split = load_config(SplitParams, "split")
    validation_fraction = load_config(LipParams, "lip").validation_fraction
    table, metrics, signals = predict_presenter(paths, args.checkpoint, split.heldout_fraction,
                                                load_config(HeadModelParams, "head_model"), validation_fraction)
    fps = float(schemas.read_table(paths.frames_table, schemas.FRAMES)["fps"].iloc[0])
    schemas.write_table(table, paths.lip_coeffs, schemas.LIP_COEFFS)
    report = paths.report("lip")
    write_json(report / "metrics.json", metrics)
    start = int(table["heldout"].to_numpy().argmax()) if table["heldout"].any() else len(table)
    m = metrics["model"]
    plot_mouth_opening(report / "mouth_opening.png", signals["fitted"], signals["predicted"], fps, start,
                       f"{paths.name}: held-out r={m['mouth_opening_r']:.3f}, offset={m['av_offset']}, "
                       f"LVE {metrics['lve_reduction_vs_static']:.0%} below static")
    if not args.no_track:
        from ..tracking import flatten, stage_run

        with stage_run("predict_lip", paths.name, {"split": split}) as mlflow:
            mlflow.log_metrics({k: float(v) for k, v in flatten(metrics).items()})
            mlflow.log_artifact(str(report / "mouth_opening.png"))
    print_summary(f"predict_lip {paths.name}", metrics)


if __name__ == "__main__":
    main()
