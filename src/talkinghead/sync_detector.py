"""Audio-video sync of a presenter's footage: how far its sound runs behind (or ahead of) its picture, measured by a
detector that never heard that footage (stage sync_model fits it, stage sync applies it).

Why: a camera's own delay, a separate microphone or an edit leaves many recordings' sound 50-200 ms off their picture.
A lip model trained on such footage learns that presenter's delay, and pooled over presenters with different delays it
learns a blur of them. Lip-sync pipelines therefore correct each clip's offset before training (SyncNet in the
preparation of LRS2 and of Wav2Lip's training data). No SyncNet weights can ship here, so the detector is a ridge
regression from the lip model's own audio features (stage align's encoder) to the mouth opening, fitted on the
generated demo presenter, whose face follows its voices' phones with an exact, known timing (``demo.face_lead_s``
ahead of the sound). The lag at which its prediction correlates best with a presenter's real mouth opening (FaceMesh
inner-lip gap over the eye distance) is that recording's offset relative to the demo's timing.

Sign as in ``talkinghead.avsync`` (> 0: the sound is late). Only the training part of
the timeline (before split's held-out tail) is measured, and an offset is applied only when the peak correlation
reaches ``sync.min_r``: a recording whose mouth the detector cannot follow keeps its audio as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .avsync import SAMPLE_RATE
from .errors import InputError, SchemaError
from .lip.ridge import pooled_ridge
from .lipmetrics import best_lag, lagged_correlations, mouth_opening_ratio
from .params import build_config
from .split import TimeSplit


@dataclass(frozen=True)
class SyncParams:
    """The ``sync`` group of params.yaml."""

    presenter: str  # the generated presenter whose exact timing the detector learns (the demo)
    max_lag: int  # offsets searched, frames each way (5 = 200 ms at 25 fps)
    min_r: float  # the detector's peak correlation needed before an offset is applied
    validation_fraction: float  # the detector's penalty is chosen on this slice before the held-out tail

    def __post_init__(self) -> None:
        if self.max_lag < 0:
            raise InputError("params.yaml", "sync.max_lag must be >= 0")
        if not 0.0 < self.validation_fraction < 1.0:
            raise InputError("params.yaml", "sync.validation_fraction must be in (0, 1)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyncParams":
        return build_config(cls, "sync", d)


@dataclass(frozen=True)
class SyncDetector:
    """Standardised mouth opening = (features - x_mean) @ weights, fitted on the generated presenter."""

    x_mean: np.ndarray  # float64 [C*D]
    weights: np.ndarray  # float64 [C*D, 1]
    feature_shape: tuple[int, int]  # (C, D) of the features it reads
    encoder: str  # align.encoder the features came from
    strength: float  # ridge penalty chosen on the validation slice
    validation_ratio: float  # validation error / a still mouth's (< 1: the audio predicts the mouth)
    fit_r: float  # r of prediction and mouth opening on the detector's validation slice

    def predict(self, features: np.ndarray) -> np.ndarray:
        """features [N, C, D] -> predicted standardised mouth opening float64 [N]."""
        if tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(f"features {tuple(features.shape[1:])} but the sync detector reads {self.feature_shape}")
        x = features.reshape(len(features), -1).astype(np.float64) - self.x_mean  # [N, C, D] -> [N, C*D]
        return (x @ self.weights)[:, 0]

    def save(self, path: str | Path) -> None:
        """One .npz (arrays + a JSON header; no pickle), written to a temp path and renamed."""
        from .atomic import atomic_path

        meta = {"feature_shape": list(self.feature_shape), "encoder": self.encoder, "strength": self.strength,
                "validation_ratio": self.validation_ratio, "fit_r": self.fit_r}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x_mean=self.x_mean, weights=self.weights, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> "SyncDetector":
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                x_mean, weights = data["x_mean"], data["weights"]
            detector = cls(x_mean, weights, tuple(meta["feature_shape"]), meta["encoder"], float(meta["strength"]),
                           float(meta["validation_ratio"]), float(meta["fit_r"]))
        except FileNotFoundError:
            raise InputError(path, "no sync detector; run the sync_model stage (`talkinghead repro sync_model`)")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SchemaError(path, f"not a sync detector file ({exc}); rerun the sync_model stage")
        if weights.shape != (x_mean.shape[0], 1) or len(detector.feature_shape) != 2:
            raise SchemaError(path, f"weights {weights.shape} do not fit x_mean {x_mean.shape}")
        return detector


@dataclass(frozen=True)
class SyncEstimate:
    """One recording's measured offset and what was applied (the JSON of sync.json)."""

    offset_frames: int  # applied: > 0 = the sound is late, the synced audio starts this much later into the file
    offset_s: float
    measured_lag: int  # the detector's best lag (applied or not)
    r_at_lag: float  # its correlation there
    r_at_zero: float  # and as recorded
    applied: bool
    reason: str
    frames_used: int
    curve: dict[int, float]  # {lag: r}

    @classmethod
    def not_measured(cls, reason: str, frames: int = 0) -> "SyncEstimate":
        """Offset 0 without a measurement (a generated presenter, or too few frames)."""
        return cls(0, 0.0, 0, float("nan"), float("nan"), False, reason, frames, {})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["curve"] = {str(k): v for k, v in self.curve.items()}
        return out


@dataclass(frozen=True)
class FootageSignals:
    """What the detector reads of one presenter's recording, audio as recorded (not yet synced)."""

    features: np.ndarray  # float32 [N, C, D], align's encoder on the whole recording
    opening: np.ndarray  # float64 [N] real inner-lip gap over the eye-corner distance (FaceMesh)
    fps: float


def footage_signals(paths, align_params) -> FootageSignals:
    """Features of ``paths``' audio.wav as recorded and its landmarks' mouth opening (paths: PresenterPaths,
    align_params: speech.features.AlignParams)."""
    from . import schemas
    from .audio import read_wav
    from .speech.features import features_for_audio, fit_length

    frames = schemas.read_table(paths.frames_table, schemas.FRAMES)
    landmarks = schemas.read_table(paths.landmarks, schemas.LANDMARKS)
    n = len(frames)
    if n == 0:
        raise InputError(paths.frames_table, "has no frames")
    if len(landmarks) != n:
        raise InputError(paths.landmarks, f"{len(landmarks)} rows but {paths.frames_table} has {n}; rerun landmarks")
    fps = float(frames["fps"].iloc[0])
    samples, rate = read_wav(paths.audio)
    if rate != SAMPLE_RATE:
        raise InputError(paths.audio, f"sample rate {rate}, expected {SAMPLE_RATE}")
    samples = fit_length(samples, n, fps, align_params.max_mismatch_s, paths.audio)
    features = features_for_audio(samples, n, fps, align_params)  # [N, C, D]
    lmk = schemas.column_array(landmarks, "lmk_crop").reshape(n, schemas.N_LANDMARKS, 3)  # [N, 478*3] -> [N, 478, 3]
    return FootageSignals(features, mouth_opening_ratio(lmk).astype(np.float64), fps)


def fit_detector(features: np.ndarray, opening: np.ndarray, split: TimeSplit, encoder: str) -> SyncDetector:
    """Ridge from features [N, C, D] to the standardised mouth opening [N] on split.train, penalty chosen on
    split.validation (lip.ridge.pooled_ridge with one presenter)."""
    if len(features) != len(opening):
        raise ValueError(f"{len(features)} feature rows but {len(opening)} mouth openings")
    train = opening[split.train.start:split.train.stop]
    target = ((opening - train.mean()) / max(float(train.std()), 1e-12))[:, None]  # [N] -> [N, 1]
    fit = pooled_ridge([features], [target], [split])
    detector = SyncDetector(fit.x_mean, fit.weights, (int(features.shape[1]), int(features.shape[2])), encoder,
                            float(fit.strength), float(fit.validation_ratio), 0.0)
    val = split.validation
    fit_r = float(np.corrcoef(detector.predict(features[val.start:val.stop]), target[val.start:val.stop, 0])[0, 1])
    return replace(detector, fit_r=fit_r)


def estimate_offset(detector: SyncDetector, features: np.ndarray, opening: np.ndarray, fps: float,
                    params: SyncParams) -> SyncEstimate:
    """The offset of one recording from its features [n, C, D] and real mouth opening [n] (the frames to measure,
    e.g. the training part): the best lag in [-max_lag, max_lag], applied when its r reaches params.min_r."""
    n = len(opening)
    if len(features) != n:
        raise ValueError(f"{len(features)} feature rows but {n} mouth openings")
    if n <= 2 * params.max_lag + 1:
        return SyncEstimate.not_measured(f"{n} frames are too few to measure lags up to {params.max_lag}", n)
    curve = lagged_correlations(opening, detector.predict(features), params.max_lag)
    lag = best_lag(curve)
    applied = curve[lag] >= params.min_r and lag != 0
    if lag == 0:
        reason = "in sync: the detector's best lag is 0"
    elif applied:
        reason = f"sound {'late' if lag > 0 else 'early'} by {abs(lag)} frames (r {curve[lag]:+.2f} there)"
    else:
        reason = (f"best lag {lag:+d} has r {curve[lag]:+.2f} < sync.min_r {params.min_r}: the detector cannot "
                  "follow this mouth well enough; audio kept as recorded")
    offset = lag if applied else 0
    return SyncEstimate(int(offset), offset / fps, int(lag), float(curve[lag]), float(curve[0]), bool(applied), reason,
                        n, {int(k): float(v) for k, v in curve.items()})
