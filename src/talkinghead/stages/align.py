"""Stage align@NAME: audio features aligned to every video frame.

``python -m talkinghead.stages.align data/interim/NAME`` reads ``audio.wav`` (16 kHz mono; moved by ``sync.json``'s
offset onto the video's clock, ``talkinghead.avsync``) and ``frames.parquet`` and
writes ``features.npy`` (float32 [N, C, D]), ``features.parquet`` (schemas.FEATURES) and reports/align/NAME/metrics.json
(frames, encoder, feature shape, audio - video length before padding / trimming, encoding speed).

The features are those of ``talkinghead.speech.features`` (``align.encoder``: Whisper encoder states by default,
log-mel as the baseline): frame i's centre time (i + 0.5)/fps is mapped to the nearest encoder hop and the frame gets
the C = 2k+1 hops around it, clamped at the ends of the audio, normalised per utterance, the same way for training
and for new audio at inference (``features_for_audio`` is the one function both use).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schemas
from ..atomic import write_json
from ..avsync import footage_audio
from ..errors import InputError, exits_on_input_error
from ..params import load_config
from ..paths import PresenterPaths
from ..speech.features import SAMPLE_RATE, AlignParams, features_for_audio, fit_length, frame_center_hops
from ..tracking import stage_run
from ..tensorfile import save_tensor

__all__ = ["AlignParams", "align_presenter", "features_for_audio", "fit_length", "frame_center_hops", "main"]


def align_presenter(paths: PresenterPaths, params: AlignParams) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Features [N, C, D], FEATURES table and metrics of one presenter (audio.wav + frames.parquet)."""
    frames = schemas.read_table(paths.frames_table, schemas.FRAMES)
    if len(frames) == 0:
        raise InputError(paths.frames_table, "has no frames")
    fps = float(frames["fps"].iloc[0])
    if not fps > 0:
        raise InputError(paths.frames_table, f"fps must be positive, got {fps}")
    if not np.array_equal(frames["frame"].to_numpy(), np.arange(len(frames))):
        raise InputError(paths.frames_table, "frame column is not 0..N-1 in order")
    # the footage's sound on its picture's clock (stage sync's measured offset; 0 when in sync)
    samples, sync_offset = footage_audio(paths.audio, paths.sync, fps)
    n = len(frames)
    audio_s = len(samples) / SAMPLE_RATE
    samples = fit_length(samples, n, fps, params.max_mismatch_s, paths.audio)
    started = time.perf_counter()
    features = features_for_audio(samples, n, fps, params)
    seconds = time.perf_counter() - started  # the encoder's load included: what a fresh `speak` pays too
    table = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "time_s": frames["time_s"].to_numpy(),
                          "center_hop": frame_center_hops(n, fps, params).astype(np.int32)})
    metrics = {"frames": n, "fps": fps, "encoder": params.encoder, "context": int(features.shape[1]),
               "feature_dim": int(features.shape[2]), "audio_s": audio_s, "video_s": n / fps,
               "audio_minus_video_s": audio_s - n / fps,  # before fit_length pads / trims it away
               "sync_offset_frames": sync_offset,
               "seconds": seconds, "seconds_per_10s_audio": seconds / (n / fps) * 10,
               "feature_mean": float(features.mean()), "feature_std": float(features.std())}
    return features, table, metrics


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME (holds audio.wav and frames.parquet)")
    args = parser.parse_args(argv)
    params = load_config(AlignParams, "align")
    paths = PresenterPaths.from_folder(args.interim)
    features, table, metrics = align_presenter(paths, params)
    save_tensor(paths.features, features)
    schemas.write_table(table, paths.features_table, schemas.FEATURES,
                        metadata={"context": features.shape[1], "n_mels": features.shape[2],
                                  "encoder": params.encoder})
    with stage_run("align", paths.name, {"align": params}) as mlflow:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not isinstance(v, str)}, step=0)
        write_json(paths.report("align") / "metrics.json", metrics)
    print(f"align: {features.shape[0]} frames, features {tuple(features.shape[1:])} in {metrics['seconds']:.1f} s "
          f"-> {paths.features}")


if __name__ == "__main__":
    main()
