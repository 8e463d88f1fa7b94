"""A presenter's footage audio on its video's clock: stage sync measures how far a recording's sound runs behind (or
ahead of) its picture (``talkinghead.sync_detector``) and writes sync.json; stage align and every reader of the
footage's audio (evaluate, crossdrive) take the audio moved by that offset, from here.

Sign: ``offset_frames`` > 0 means the sound is late (the real mouth moves that many frames before its sound, beyond the
timing of the demo's generated face); the synced audio then starts that much later into the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SchemaError

SAMPLE_RATE = 16000
SYNC_KEYS = ("offset_frames", "offset_s", "measured_lag", "r_at_lag", "r_at_zero", "applied", "reason")  # sync.json


def to_video_clock(samples: np.ndarray, offset_frames: int, fps: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` [T] moved so that sound and picture line up, same length: offset > 0 (sound late) drops
    offset/fps s from the start and pads silence at the end; < 0 pads silence at the start."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    shift = int(round(offset_frames / fps * rate))
    if shift == 0 or len(samples) == 0:
        return samples.copy()
    pad = np.zeros(min(abs(shift), len(samples)), np.float32)
    if shift > 0:
        return np.concatenate([samples[shift:], pad])
    return np.concatenate([pad, samples[:len(samples) - len(pad)]])


def read_sync(path: str | Path) -> dict[str, Any]:
    """sync.json of one presenter, validated (InputError when missing, SchemaError when malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "missing; run the sync stage for this presenter (`talkinghead repro sync`)")
    except (OSError, ValueError) as exc:
        raise SchemaError(path, f"not readable JSON ({exc}); rerun the sync stage")
    missing = [k for k in SYNC_KEYS if k not in data]
    if missing or not isinstance(data.get("offset_frames"), int) or isinstance(data.get("offset_frames"), bool):
        raise SchemaError(path, f"expected keys {', '.join(SYNC_KEYS)} with an integer offset_frames; "
                                f"missing: {', '.join(missing) or 'none'}; rerun the sync stage")
    return data


def footage_audio(audio_path: str | Path, sync_path: str | Path, fps: float) -> tuple[np.ndarray, int]:
    """A presenter's 16 kHz footage audio [T] on its video's clock (audio.wav moved by sync.json's offset), and that
    offset in frames (read once: align also reports it)."""
    from .audio import read_wav

    samples, rate = read_wav(audio_path)
    if rate != SAMPLE_RATE:
        raise InputError(audio_path, f"sample rate {rate}, expected {SAMPLE_RATE}")
    offset = read_sync(sync_path)["offset_frames"]
    return to_video_clock(samples, offset, fps, rate), offset
