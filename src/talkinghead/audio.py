"""Audio in and out: decode any container PyAV reads (wav, mp3, m4a, flac, a video's audio track) to mono float32 at
a chosen rate, and write 16-bit PCM WAV atomically."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError


def decode_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path``, downmix to mono and resample to ``rate``.

    Returns float32 samples in [-1, 1], shape [T]. Raises InputError for unreadable files or files without audio.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises InvalidDataError, FFmpegError subclasses, ...
        raise InputError(path, f"not a readable media file ({exc.__class__.__name__}: {exc})") from exc
    with container:
        if not container.streams.audio:
            raise InputError(path, "has no audio track")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # [1, n] packed mono -> [n]
            for out in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(out.to_ndarray().reshape(-1))
        except Exception as exc:
            raise InputError(path, f"audio is corrupt or truncated ({exc.__class__.__name__}: {exc})") from exc
    if not chunks:
        raise InputError(path, "audio track holds no samples")
    return np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = 16000) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV, atomically."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM mono WAV written by ``write_wav``: (float32 samples [T], rate)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise InputError(path, "expected 16-bit mono PCM WAV")
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError, FileNotFoundError) as exc:
        raise InputError(path, f"not a readable WAV file ({exc})") from exc
    return pcm.astype(np.float32) / 32767.0, rate


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
