"""Stage train_lip: one lip model (audio features -> 53-d expression) for all onboarded presenters.

``python -m talkinghead.stages.train_lip --presenters demo [more] --out models/lip/lip.pt``
(default presenter list: ``presenters`` in params.yaml). Reads data/interim/NAME/features.npy and flame.parquet of
each presenter, trains on the frames before the validation slice (the held-out tail is never read for training or
model selection), writes the checkpoint (rank 0), reports/lip/val_loss.csv (DVC plot) and
reports/lip/train_metrics.json (DVC metrics), and registers the checkpoint in MLflow as a new version of
``talkinghead-lip`` (registry.py). Runs alone or under torchrun (DDP):
``python -m torch.distributed.run --nproc_per_node 2 -m talkinghead.stages.train_lip ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import schemas
from ..atomic import atomic_path, write_json
from ..errors import InputError, exits_on_input_error
from ..lip import checkpoint_payload
from ..lip.model import LipConfig
from ..lip.trainer import LipParams, PresenterData, TrainResult, train
from ..parallel import init_distributed
from ..params import load_config, load_params
from ..speech.features import AlignParams
from ..paths import LIP_CHECKPOINT, LIP_TRAIN_METRICS, LIP_VAL_LOSS, PresenterPaths
from ..split import SplitParams, time_split
from ..tensorfile import load_tensor


def load_presenter(paths: PresenterPaths, heldout_fraction: float, validation_fraction: float) -> PresenterData:
    """Features [N, C, M], fitted expression [N, 53], mean shape [100] and time split of one presenter."""
    features = np.asarray(load_tensor(paths.features, np.float32, (None, None)))
    flame = schemas.read_table(paths.flame, schemas.PARAMETERS)
    if len(flame) != len(features):
        raise InputError(paths.flame, f"{len(flame)} frames but {paths.features} has {len(features)}; rerun align/fit")
    if not np.array_equal(flame["frame"].to_numpy(), np.arange(len(flame))):
        raise InputError(paths.flame, "frame column is not 0..N-1 in order")
    expression = schemas.column_array(flame, "expression")
    shape = schemas.column_array(flame, "shape").mean(axis=0)
    if not (np.isfinite(expression).all() and np.isfinite(shape).all()):
        raise InputError(paths.flame, "expression or shape holds NaN/inf")
    if not np.isfinite(features).all():
        raise InputError(paths.features, "holds NaN/inf")
    return PresenterData(paths.name, features, expression, shape.astype(np.float32),
                         time_split(len(features), heldout_fraction, validation_fraction))


def write_reports(result: TrainResult, root: Path) -> None:
    """val_loss.csv (step, val_loss) for DVC plots; train_metrics.json for DVC metrics."""
    curve = pd.DataFrame(result.val_curve, columns=["step", "val_loss"])
    with atomic_path(root / LIP_VAL_LOSS) as tmp:
        curve.to_csv(tmp, index=False)
    metrics = {"best_val_loss": result.best_val_loss, "steps": result.steps, "train_seconds": round(result.seconds, 1),
               "stop_reason": result.stop_reason,
               # < 1: better than the presenter's still face on their validation slice; >= 1: no usable audio cue
               "val_loss_relative_to_static": {k: round(v, 4) for k, v in result.best_val_per_presenter.items()}}
    write_json(root / LIP_TRAIN_METRICS, metrics)


def run(presenter_names: list[str], out: Path, root: Path, track: bool = True, reports: bool = True,
        progress: bool = True) -> TrainResult:
    """Train on the presenters under ``root`` and write the checkpoint to ``out`` (+ reports/lip/ under ``root``
    unless ``reports`` is False)."""
    lip = load_config(LipParams, "lip")
    split = load_config(SplitParams, "split")
    align = load_config(AlignParams, "align").to_dict()  # stored in the checkpoint: speak encodes alike
    dist_info = init_distributed()
    # Threads per process, split between the DDP ranks. On a shared, loaded CPU one thread per process is several
    # times faster than two (OpenMP barriers stall when cores are oversubscribed), hence lip.threads.
    torch.set_num_threads(max(1, lip.threads // dist_info.world))
    presenters = [load_presenter(PresenterPaths.of(n, root), split.heldout_fraction, lip.validation_fraction)
                  for n in presenter_names]
    shapes = {p.features.shape[1:] for p in presenters}
    if len(shapes) != 1:
        raise InputError(root / "data" / "interim", f"presenters' features differ in shape {shapes}; rerun align")
    n_context, n_mels = shapes.pop()
    config = LipConfig.from_params(lip, presenter_names, int(n_context), int(n_mels))
    head_model = None
    if lip.lip_vertex_weight > 0 or lip.mouth_opening_weight > 0:
        from ..headmodel import HeadModelParams, load_head_model

        head_model = load_head_model(load_config(HeadModelParams, "head_model")).to(dist_info.device)
    tracker = contextlib.nullcontext(None)
    if track and dist_info.is_main:
        from ..tracking import stage_run

        tracker = stage_run("train_lip", None, {"lip": lip, "split": split, "presenters": ",".join(presenter_names)})
    with tracker as mlflow:
        on_log = (lambda step, m: mlflow.log_metrics(m, step=step)) if mlflow is not None else None
        result = train(config, lip, presenters, head_model, dist_info, on_log, progress=progress)
        if mlflow is not None:
            mlflow.log_metrics({"best_val_loss": result.best_val_loss, "train_seconds": result.seconds,
                                "steps": result.steps,
                                **{f"best_val_rel_{k}": v for k, v in result.best_val_per_presenter.items()}})
            mlflow.set_tag("stop_reason", result.stop_reason)
        if dist_info.is_main:
            payload = checkpoint_payload(result.model, result.target_mean, result.target_std, align,
                                         extra={"train": {"steps": result.steps, "best_val_loss": result.best_val_loss,
                                                          "stop_reason": result.stop_reason}})
            with atomic_path(out) as tmp:
                torch.save(payload, tmp)
            if reports:
                write_reports(result, root)
        if mlflow is not None:  # a new version of the registered lip model, in this run (registry.py)
            from ..registry import register_lip

            register_lip(mlflow, out, presenters[0].features[:8], presenters[0].name, root)
    return result


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presenters", nargs="+", help="presenter names (default: `presenters` in params.yaml)")
    parser.add_argument("--out", type=Path, default=LIP_CHECKPOINT)
    parser.add_argument("--root", type=Path, default=Path("."), help="project root holding data/ and reports/")
    parser.add_argument("--no-track", action="store_true", help="skip MLflow logging")
    parser.add_argument("--no-reports", action="store_true",
                        help="write only the checkpoint, not reports/lip/ (extra models, e.g. leave-one-out)")
    args = parser.parse_args(argv)
    names = args.presenters or list(load_params().get("presenters") or [])
    if not names:
        raise InputError("params.yaml", "no presenters to train on")
    result = run(names, args.out, args.root, track=not args.no_track, reports=not args.no_reports)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"train_lip: {result.steps} steps in {result.seconds:.0f} s, best val loss {result.best_val_loss:.4f} "
              f"({result.stop_reason}) -> {args.out}")


if __name__ == "__main__":
    main()
