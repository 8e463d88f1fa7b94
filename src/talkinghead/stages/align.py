"""Stage align@NAME: log-mel audio features aligned to every video frame.

``python -m talkinghead.stages.align data/interim/NAME`` reads ``audio.wav`` (16 kHz mono) and ``frames.parquet`` and
writes ``features.npy`` (float32 [N, C, n_mels]) and ``features.parquet`` (schemas.FEATURES).

Frame i of a constant-fps timeline is shown during [i/fps, (i+1)/fps); its centre time (i + 0.5)/fps is mapped to the
nearest mel hop (hop j is centred on sample j * hop, torchaudio ``center=True``), and the frame gets the C = 2k+1 hops
around it (k = ``align.context_hops``), clamped at the ends of the audio. Log-mel energies are normalised per
utterance (per mel bin mean 0, std 1 over the whole clip), the same way for training and for new audio at inference
(``features_for_audio`` is the one function both use).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schemas
from ..audio import read_wav
from ..errors import InputError
from ..params import params_group
from ..paths import PresenterPaths
from ..tracking import stage_run
from ..tensorfile import save_tensor

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AlignParams:
    """The ``align`` group of params.yaml."""

    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    context_hops: int = 5  # C = 2 * context_hops + 1 mel frames per video frame
    log_floor: float = 1e-6  # added to mel power before the log, so digital silence stays finite
    max_mismatch_s: float = 0.5  # audio/video length mismatch beyond this is an InputError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlignParams":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def hop(self) -> int:
        return int(round(SAMPLE_RATE * self.hop_ms / 1000.0))

    @property
    def win(self) -> int:
        return int(round(SAMPLE_RATE * self.win_ms / 1000.0))

    @property
    def context(self) -> int:
        return 2 * self.context_hops + 1


def _as_params(params: AlignParams | dict[str, Any]) -> AlignParams:
    return params if isinstance(params, AlignParams) else AlignParams.from_dict(params)


def fit_length(samples: np.ndarray, n_frames: int, fps: float, max_mismatch_s: float,
               source: str | Path | None = None) -> np.ndarray:
    """Pad (with silence) or trim ``samples`` [T] to exactly ``n_frames / fps`` seconds.

    Up to one frame of mismatch is normal (container rounding) and silent; more warns; more than ``max_mismatch_s``
    raises InputError, because then audio and video are not the same recording (or one is truncated).
    """
    target = int(round(n_frames / fps * SAMPLE_RATE))
    mismatch_s = abs(len(samples) - target) / SAMPLE_RATE
    if mismatch_s > max_mismatch_s:
        raise InputError(source, f"audio lasts {len(samples) / SAMPLE_RATE:.3f} s but the video {n_frames / fps:.3f} s "
                                 f"({n_frames} frames at {fps:g} fps); mismatch above align.max_mismatch_s="
                                 f"{max_mismatch_s}")
    if mismatch_s > 1.0 / fps:
        warnings.warn(f"{source}: audio and video lengths differ by {mismatch_s:.3f} s (> one frame); "
                      f"{'padding' if len(samples) < target else 'trimming'} the audio", stacklevel=2)
    if len(samples) >= target:
        return samples[:target]
    return np.concatenate([samples, np.zeros(target - len(samples), np.float32)])


def log_mel(samples: np.ndarray, params: AlignParams | dict[str, Any]) -> np.ndarray:
    """Normalised log-mel spectrogram of 16 kHz ``samples`` [T] -> float32 [H, n_mels], hop j centred on sample
    j * hop. Normalised per utterance: each mel bin has mean 0 and std 1 over the clip."""
    import torch
    import torchaudio

    p = _as_params(params)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=p.win, win_length=p.win,
                                               hop_length=p.hop, n_mels=p.n_mels, center=True, power=2.0)
    with torch.no_grad():
        spec = mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))  # [n_mels, H]
    logspec = torch.log(spec + p.log_floor).T.numpy()  # [n_mels, H] -> [H, n_mels]
    mean = logspec.mean(axis=0, keepdims=True)
    std = logspec.std(axis=0, keepdims=True)
    return ((logspec - mean) / np.maximum(std, 1e-3)).astype(np.float32)


def frame_center_hops(n_frames: int, fps: float, params: AlignParams | dict[str, Any]) -> np.ndarray:
    """Mel hop index nearest the centre time (i + 0.5)/fps of each frame: int64 [N]."""
    p = _as_params(params)
    centres_s = (np.arange(n_frames) + 0.5) / fps
    return np.round(centres_s * SAMPLE_RATE / p.hop).astype(np.int64)


def features_for_audio(samples: np.ndarray, n_frames: int, fps: float,
                       params: AlignParams | dict[str, Any]) -> np.ndarray:
    """Audio features of each of ``n_frames`` video frames at ``fps`` from 16 kHz mono ``samples`` [T].

    ``samples`` should last n_frames / fps seconds (callers use ``fit_length``); shorter audio is padded with silence.
    Returns float32 [N, C, n_mels]: for frame i the normalised log-mel hops ``center_hop(i) + (-k..k)``, clamped at
    the clip's ends.
    """
    p = _as_params(params)
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    need = int(round(n_frames / fps * SAMPLE_RATE))
    if len(samples) < need:
        samples = np.concatenate([samples, np.zeros(need - len(samples), np.float32)])
    spec = log_mel(samples, p)  # [H, n_mels]
    centres = frame_center_hops(n_frames, fps, p)  # [N]
    offsets = np.arange(-p.context_hops, p.context_hops + 1)  # [C]
    idx = np.clip(centres[:, None] + offsets[None, :], 0, len(spec) - 1)  # [N, C]
    return spec[idx]  # [N, C, n_mels]


def align_presenter(paths: PresenterPaths, params: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Features [N, C, n_mels] and FEATURES table of one presenter (audio.wav + frames.parquet)."""
    p = _as_params(params)
    frames = schemas.read_table(paths.frames_table, schemas.FRAMES)
    if len(frames) == 0:
        raise InputError(paths.frames_table, "has no frames")
    fps = float(frames["fps"].iloc[0])
    if not fps > 0:
        raise InputError(paths.frames_table, f"fps must be positive, got {fps}")
    if not np.array_equal(frames["frame"].to_numpy(), np.arange(len(frames))):
        raise InputError(paths.frames_table, "frame column is not 0..N-1 in order")
    samples, rate = read_wav(paths.audio)
    if rate != SAMPLE_RATE:
        raise InputError(paths.audio, f"sample rate {rate}, expected {SAMPLE_RATE}")
    n = len(frames)
    samples = fit_length(samples, n, fps, p.max_mismatch_s, paths.audio)
    features = features_for_audio(samples, n, fps, p)
    table = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "time_s": frames["time_s"].to_numpy(),
                          "center_hop": frame_center_hops(n, fps, p).astype(np.int32)})
    return features, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME (holds audio.wav and frames.parquet)")
    args = parser.parse_args(argv)
    try:
        params = params_group("align")
        paths = PresenterPaths.from_folder(args.interim)
        features, table = align_presenter(paths, params)
        save_tensor(paths.features, features)
        schemas.write_table(table, paths.features_table, schemas.FEATURES,
                            metadata={"context": features.shape[1], "n_mels": features.shape[2]})
        with stage_run("align", paths.name, {"align": params}) as mlflow:
            mlflow.log_metrics({"frames": float(features.shape[0]), "context_hops": float(features.shape[1]),
                                "feature_mean": float(features.mean()), "feature_std": float(features.std())}, step=0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"align: {features.shape[0]} frames, features {tuple(features.shape[1:])} -> {paths.features}")


if __name__ == "__main__":
    main()
