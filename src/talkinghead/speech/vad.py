"""Voice activity per video frame with Silero VAD, whose TorchScript model ships inside the ``silero-vad`` wheel
(MIT; nothing is downloaded). Used to score lip sync on voiced frames only: in silence the mouth may rest, smile or
breathe, and no audio model can know which.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

SAMPLE_RATE = 16000
CHUNK = 512  # samples per VAD step at 16 kHz (32 ms), the model's fixed input size


@functools.lru_cache(maxsize=1)
def _model() -> torch.jit.ScriptModule:
    # The package's own loader (silero_vad.load_silero_vad) sets torch's global thread count to 1 on import, so the
    # model file is found without importing the package.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "the silero-vad package is not installed; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise InputError(path, "Silero VAD model file missing from the silero-vad package; reinstall it")
    with warnings.catch_warnings():  # torch 2.14 calls TorchScript loading deprecated; it is how the model ships
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


@torch.no_grad()
def speech_probability(samples: np.ndarray) -> np.ndarray:
    """Probability of speech per 32 ms chunk of 16 kHz ``samples`` [T] -> float32 [ceil(T / 512)]."""
    model = _model()
    model.reset_states()
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = max(1, -(-len(samples) // CHUNK))
    padded = np.zeros(n * CHUNK, np.float32)
    padded[:len(samples)] = samples
    chunks = torch.from_numpy(padded).reshape(n, CHUNK)  # [T] -> [n, 512]
    return np.array([float(model(chunk[None], SAMPLE_RATE)) for chunk in chunks], np.float32)


def voiced_frames(samples: np.ndarray, n_frames: int, fps: float, threshold: float = 0.5) -> np.ndarray:
    """bool [N]: the VAD calls the chunk under each video frame's centre time speech."""
    prob = speech_probability(samples)
    centres = ((np.arange(n_frames) + 0.5) / fps * SAMPLE_RATE / CHUNK).astype(np.int64)
    return prob[np.clip(centres, 0, len(prob) - 1)] >= threshold
