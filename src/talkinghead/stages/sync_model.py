"""Stage sync_model: the footage sync detector, fitted on the generated presenter ``sync.presenter`` (the demo).

``python -m talkinghead.stages.sync_model data/interim/demo --out models/sync/detector.npz`` reads that presenter's
audio.wav, frames.parquet and landmarks.parquet, computes stage align's features of its audio (``align`` params), fits
a ridge regression from them to its FaceMesh mouth opening on the frames before its validation slice and held-out
tail (penalty chosen on the validation slice; ``talkinghead.sync_detector``), and writes the detector and
reports/sync_model/metrics.json. The generated presenter's face follows its voices' phones with an exact timing, so
the detector's idea of "in sync" is that timing; stage sync measures every recording against it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import json_safe, write_json
from ..errors import InputError, exits_on_input_error
from ..params import load_config
from ..paths import REPORTS, SYNC_DETECTOR, PresenterPaths
from ..speech.features import AlignParams
from ..split import SplitParams, time_split
from ..sync_detector import SyncParams, fit_detector, footage_signals
from ..tracking import stage_run

SYNC_MODEL_REPORT = REPORTS / "sync_model"


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME of the generated presenter (sync.presenter)")
    parser.add_argument("--out", type=Path, default=SYNC_DETECTOR)
    args = parser.parse_args(argv)
    params = load_config(SyncParams, "sync")
    align = load_config(AlignParams, "align")
    split_params = load_config(SplitParams, "split")
    paths = PresenterPaths.from_folder(args.interim)
    if not paths.visemes.is_file():
        raise InputError(paths.visemes, f"missing: sync.presenter {paths.name!r} is not a generated presenter; the "
                                        "sync detector learns the exact timing only a generated face has (the demo)")
    signals = footage_signals(paths, align)
    split = time_split(len(signals.opening), split_params.heldout_fraction, params.validation_fraction)
    detector = fit_detector(signals.features, signals.opening, split, align.encoder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    detector.save(args.out)
    metrics = {"presenter": paths.name, "frames": len(signals.opening), "train_frames": len(split.train),
               "encoder": align.encoder, "strength": detector.strength,
               "validation_ratio": detector.validation_ratio, "validation_r": detector.fit_r}
    with stage_run("sync_model", None, {"sync": params, "align": align}) as mlflow:
        mlflow.log_metrics({"validation_ratio": detector.validation_ratio, "validation_r": detector.fit_r}, step=0)
        write_json(SYNC_MODEL_REPORT / "metrics.json", json_safe(metrics))
    print(f"sync_model: detector on {paths.name} ({len(split.train)} training frames), validation r "
          f"{detector.fit_r:+.2f} -> {args.out}")


if __name__ == "__main__":
    main()
