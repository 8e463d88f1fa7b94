"""Stage sync@NAME: how far the footage's sound is off its picture, measured and (when clear) corrected.

``python -m talkinghead.stages.sync data/interim/NAME --detector models/sync/detector.npz`` writes
data/interim/NAME/sync.json (``talkinghead.sync_detector.SyncEstimate``: the offset applied, the lag measured, its lag
curve) and reports/sync/NAME/metrics.json. Stage align and every reader of the footage's audio (evaluate, crossdrive)
then take the audio moved by that offset (``avsync.footage_audio``), so the lip model learns each presenter's mouth
against its own sound, not against a camera's delay.

The detector (stage sync_model) predicts the mouth opening from stage align's features; the lag in
[-sync.max_lag, sync.max_lag] where that prediction correlates best with the recording's real mouth opening, on the
frames before the held-out tail, is the offset, applied when its r reaches ``sync.min_r``. A generated presenter (its
raw folder holds visemes.parquet) is in sync by construction: offset 0, not measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import json_safe, write_json
from ..errors import InputError, exits_on_input_error
from ..params import load_config
from ..paths import SYNC_DETECTOR, PresenterPaths
from ..speech.features import AlignParams
from ..split import SplitParams, heldout_start
from ..sync_detector import SyncDetector, SyncEstimate, SyncParams, estimate_offset, footage_signals
from ..tracking import stage_run


def measure(paths: PresenterPaths, detector_path: Path, params: SyncParams, align: AlignParams,
            heldout_fraction: float) -> SyncEstimate:
    """The SyncEstimate of one presenter (see the module docstring)."""
    if paths.visemes.is_file():
        return SyncEstimate.not_measured("generated presenter: its face follows its phones exactly")
    detector = SyncDetector.load(detector_path)
    if detector.encoder != align.encoder:
        raise InputError(detector_path, f"fitted on align.encoder {detector.encoder!r}, params say {align.encoder!r}; "
                                        "rerun the sync_model stage")
    signals = footage_signals(paths, align)
    end = heldout_start(len(signals.opening), heldout_fraction)  # the held-out tail is never looked at
    return estimate_offset(detector, signals.features[:end], signals.opening[:end], signals.fps, params)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME")
    parser.add_argument("--detector", type=Path, default=SYNC_DETECTOR, help="stage sync_model's output")
    args = parser.parse_args(argv)
    params = load_config(SyncParams, "sync")
    align = load_config(AlignParams, "align")
    split = load_config(SplitParams, "split")
    paths = PresenterPaths.from_folder(args.interim)
    estimate = measure(paths, args.detector, params, align, split.heldout_fraction)
    write_json(paths.sync, json_safe(estimate.to_dict()))
    metrics = json_safe({k: v for k, v in estimate.to_dict().items() if k != "curve"})
    with stage_run("sync", paths.name, {"sync": params}) as mlflow:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, step=0)
        write_json(paths.report("sync") / "metrics.json", metrics)
    print(f"sync: {paths.name}: {estimate.reason} -> {paths.sync}")


if __name__ == "__main__":
    main()
