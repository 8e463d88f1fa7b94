"""Lip model: audio features -> the "second 53-d coefficients" (50 expression + 3 jaw).

>>> from talkinghead.lip import predict
>>> features = speech_features("models/lip/lip.pt", samples, n_frames, fps)  # 16 kHz speech -> [N, C, D]
>>> expression = predict("models/lip/lip.pt", features, "demo")   # -> [N, 53]

Long inputs are cut into overlapping windows of ``config.window`` frames (the length the model was trained on) and
cross-faded, so inference costs the same per second of audio whatever the clip length. The result is smoothed over
time with the checkpoint's ``smooth_sigma`` (lip.smooth_sigma when it was trained; ``smooth_frames``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, describe
from ..parallel import torch_threads
from ..speech.features import AlignParams, features_for_audio
from ..tensorfile import load_checkpoint
from .model import LipConfig, LipTransformer, smooth_frames

__all__ = ["LipConfig", "LipTransformer", "LoadedLipModel", "checkpoint_align_params", "checkpoint_payload",
           "load_lip_model", "predict", "predict_with", "smooth_frames", "speech_features"]


@dataclass
class LoadedLipModel:
    """A network in eval mode plus what is needed to turn its outputs back into expression coefficients."""

    model: LipTransformer
    target_mean: torch.Tensor  # [P, 53], one row per presenter in model.config.presenters
    target_std: torch.Tensor  # [P, 53]
    align: dict  # the align params the features were made with (context, n_mels, ...)
    device: torch.device


def checkpoint_payload(model: LipTransformer, target_mean: np.ndarray, target_std: np.ndarray, align: dict,
                       extra: dict | None = None) -> dict:
    """What ``load_lip_model`` expects in a checkpoint file (written by the trainer with torch.save)."""
    # tensors, dicts, lists and plain numbers only, so ``load_lip_model`` can use torch.load(weights_only=True)
    return {"config": model.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "target_mean": torch.as_tensor(np.asarray(target_mean, np.float32)),
            "target_std": torch.as_tensor(np.asarray(target_std, np.float32)),
            "align": dict(align), **(extra or {})}


def load_lip_model(checkpoint_path: str | Path, device: str | torch.device | None = None) -> LoadedLipModel:
    """Load a checkpoint written by ``talkinghead.stages.train_lip``."""
    path = Path(checkpoint_path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not path.is_file():
        raise InputError(path, "lip checkpoint missing; run `dvc repro train_lip`")
    try:
        ckpt = load_checkpoint(path)
        config = LipConfig.from_dict(ckpt["config"])
        model = LipTransformer(config)
        model.load_state_dict(ckpt["state_dict"])
        mean = torch.as_tensor(ckpt["target_mean"]).float()
        std = torch.as_tensor(ckpt["target_std"]).float()
        align = dict(ckpt.get("align", {}))
    except Exception as exc:
        # Whatever goes wrong here (weights_only's UnpicklingError for anything but tensors and plain containers, a
        # missing key, a tensor of the wrong shape, a config the network cannot be built from) is this file's fault
        raise InputError(path, f"not a lip-model checkpoint, or one written before talkinghead saved them safely "
                               f"({describe(exc)}); retrain with `dvc repro train_lip`") from exc
    model.eval().to(device)
    n_presenters = len(config.presenters)
    if mean.ndim == 1 and std.ndim == 1:  # checkpoints before per-presenter statistics: one row shared by all
        mean, std = mean.expand(n_presenters, -1), std.expand(n_presenters, -1)
    if mean.shape != (n_presenters, config.n_out) or std.shape != mean.shape:
        raise InputError(path, f"target statistics of shape {tuple(mean.shape)}, expected ({n_presenters}, "
                               f"{config.n_out}); retrain with `dvc repro train_lip`")
    return LoadedLipModel(model, mean.to(device), std.to(device), align, device)


# What checkpoints written before ``align.encoder`` existed were trained on: log-mel with these settings (they stored
# only the mel keys). A record of those runs, not a default: new checkpoints store every align key.
LEGACY_MEL_ALIGN = {"encoder": "mel", "whisper_model": None, "whisper_layer": 2, "whisper_context": 2, "n_mels": 80,
                    "win_ms": 25.0, "hop_ms": 10.0, "context_hops": 5, "log_floor": 1e-6, "max_mismatch_s": 0.5,
                    "phones_lead_s": 0.0}  # phones_lead_s came with the phone encoders; earlier ones ignore it


def checkpoint_align_params(align: dict) -> AlignParams:
    """The align params a checkpoint's features were made with (older checkpoints: see LEGACY_MEL_ALIGN)."""
    known = {f.name for f in fields(AlignParams)}
    return AlignParams.from_dict({**LEGACY_MEL_ALIGN, **{k: v for k, v in align.items() if k in known}})


def speech_features(checkpoint_path: str | Path, samples: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """Features [N, C, D] of new 16 kHz ``samples`` made exactly as the checkpoint's training features were (its
    own align params, whatever params.yaml says now), ready for ``predict``."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise InputError(path, "lip checkpoint missing; run `dvc repro train_lip`")
    lip = _cached(str(path.resolve()), path.stat().st_mtime, None)
    try:
        align = checkpoint_align_params(lip.align)
    except (InputError, TypeError) as exc:  # the settings come from the checkpoint, not from params.yaml
        reason = exc.reason if isinstance(exc, InputError) else describe(exc)
        raise InputError(path, f"bad align settings in the checkpoint ({reason}); retrain with "
                               "`dvc repro train_lip`") from exc
    return features_for_audio(samples, n_frames, fps, align)


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime: float, device: str | None) -> LoadedLipModel:
    return load_lip_model(path, device)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start frames of the inference windows covering [0, n); the last one ends exactly at n."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


@torch.no_grad()
def predict_with(lip: LoadedLipModel, features: np.ndarray, presenter: str, batch_windows: int = 64) -> np.ndarray:
    """Expression coefficients float32 [N, 53] for features float32 [N, C, n_mels] of one presenter."""
    config = lip.model.config
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3 or features.shape[1:] != (config.n_context, config.n_mels):
        raise InputError(None, f"features have shape {features.shape}, the lip model expects "
                               f"[N, {config.n_context}, {config.n_mels}]")
    if presenter not in config.presenters:
        raise InputError(None, f"presenter {presenter!r} is not in the lip model (trained on {config.presenters}); "
                               "retrain with `dvc repro train_lip`")
    n = features.shape[0]
    window = min(config.window, n)
    starts = window_starts(n, window, config.infer_stride)
    # Triangular cross-fade: frames near a window's edges have less context, so they count less.
    ramp = torch.minimum(torch.arange(1, window + 1), torch.arange(window, 0, -1)).float().to(lip.device)  # [W]
    total = torch.zeros(n, config.n_out, device=lip.device)
    weight = torch.zeros(n, 1, device=lip.device)
    feats = torch.tensor(features, device=lip.device)  # a copy: memory-mapped inputs are read-only
    pid = lip.model.presenter_index(presenter)
    for i in range(0, len(starts), batch_windows):
        chunk = starts[i:i + batch_windows]
        batch = torch.stack([feats[s:s + window] for s in chunk])  # [nW, W, C, M]
        out = lip.model(batch, torch.full((len(chunk),), pid, dtype=torch.long, device=lip.device))  # [nW, W, 53]
        for s, o in zip(chunk, out):
            total[s:s + window] += o * ramp[:, None]
            weight[s:s + window] += ramp[:, None]
    standardised = smooth_frames(total / weight, config.smooth_sigma)  # real mouths are smooth; the net jitters
    return (standardised * lip.target_std[pid] + lip.target_mean[pid]).float().cpu().numpy()


def predict(checkpoint_path: str | Path, features: np.ndarray, presenter: str,
            device: str | None = None, threads: int | None = 1) -> np.ndarray:
    """The agreed entry point: float32 features [N, C, 80] -> expression [N, 53] (CPU or CUDA, batched).

    ``threads``: torch CPU threads during the call. 1 by default: on the shared 2-core machine two threads are
    20-50x slower under load (OpenMP barriers), see benchmarks/lip.py; None keeps the process's setting.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise InputError(path, "lip checkpoint missing; run `dvc repro train_lip`")
    lip = _cached(str(path.resolve()), path.stat().st_mtime, device)
    with torch_threads(threads if lip.device.type == "cpu" else None):
        return predict_with(lip, features, presenter)
