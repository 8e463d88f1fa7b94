"""Ingest speed: extract + landmarks frames per second (wall clock) on a 512x512 talking-head clip, plus frames per
CPU-second of this process (all its threads), which a machine shared with other jobs distorts much less.

Measured on ../shared/media/video/hdtf_katiehill.mp4 when present, else on a generated clip (``synthetic_face_clip``,
also used by the tests to make small videos of a real face photo).
"""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path

import numpy as np

# The astronaut photo's head: a square patch around the face; the face box is FACE_IN_PATCH of the patch side.
_HEAD_PATCH = (0, 96, 260, 356)  # y0, x0, y1, x1 in skimage.data.astronaut() pixels (face box ~ x174-278, y68-172)
_FACE_IN_PATCH = 0.4


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, face-free background: a colour gradient with a little fixed texture. uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * xx / width, 110 + 40 * yy / height, 140 - 50 * xx / width], axis=-1)
    texture = rng.normal(0, 6, size=(height // 8 + 1, width // 8 + 1, 1)).astype(np.float32)
    texture = np.kron(texture, np.ones((8, 8, 1), np.float32))[:height, :width]
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def synthetic_face_frames(n_frames: int, fps: float, size: tuple[int, int] = (256, 256),
                          faces: tuple[float, ...] = (0.4,), seed: int = 0) -> np.ndarray:
    """Frames of the public-domain astronaut face moving a little over a plain background: uint8 [N, H, W, 3].

    ``size`` is (width, height). ``faces`` gives each face's box side as a fraction of min(width, height); one face
    sits in the middle (upper third for portrait frames), two sit left and right (the second one mirrored).
    """
    import cv2
    from skimage import data

    width, height = size
    rng = np.random.default_rng(seed)
    background = _background(width, height, rng)
    y0, x0, y1, x1 = _HEAD_PATCH
    head = data.astronaut()[y0:y1, x0:x1]
    short = min(width, height)
    centre_y = 0.33 * height if height > 1.2 * width else 0.5 * height
    centres_x = [0.5 * width] if len(faces) == 1 else list(np.linspace(0.27, 0.73, len(faces)) * width)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        t = i / fps
        frame = background.copy()
        for j, (fraction, cx) in enumerate(zip(faces, centres_x)):
            side = max(8, int(round(fraction * short / _FACE_IN_PATCH)))
            patch = cv2.resize(head if j % 2 == 0 else head[:, ::-1], (side, side), interpolation=cv2.INTER_AREA)
            # small head motion: a few percent of the frame, slow, so the crop should follow smoothly
            dx = 0.03 * short * math.sin(2 * math.pi * 0.4 * t + j)
            dy = 0.015 * short * math.sin(2 * math.pi * 0.7 * t + j)
            px, py = int(round(cx + dx - side / 2)), int(round(centre_y + dy - side / 2))
            sx0, sy0 = max(0, -px), max(0, -py)
            dx0, dy0 = max(0, px), max(0, py)
            w = min(side - sx0, width - dx0)
            h = min(side - sy0, height - dy0)
            if w > 0 and h > 0:
                frame[dy0:dy0 + h, dx0:dx0 + w] = patch[sy0:sy0 + h, sx0:sx0 + w]
        frames[i] = frame
    return frames


def synthetic_audio(seconds: float, rate: int = 44100, kind: str = "tone", seed: int = 0) -> np.ndarray:
    """Mono float32 audio [T]: 'tone' (a voiced, syllable-modulated harmonic tone), 'noise' or 'silent'."""
    t = np.arange(int(round(seconds * rate))) / rate
    if kind == "silent":
        return np.zeros_like(t, dtype=np.float32)
    if kind == "noise":
        return (0.1 * np.random.default_rng(seed).standard_normal(t.shape)).astype(np.float32)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)  # ~4 syllables per second
    voiced = sum(np.sin(2 * np.pi * 140.0 * h * t) / h for h in range(1, 6))
    return (0.2 * envelope * voiced).astype(np.float32)


def synthetic_face_clip(path: str | Path, seconds: float = 4.0, fps: float = 25.0, size: tuple[int, int] = (256, 256),
                        faces: tuple[float, ...] = (0.4,), rotation: int = 0, audio: str | None = "tone",
                        audio_rate: int = 44100, vfr: bool = False, seed: int = 0, faststart: bool = False) -> Path:
    """Write an H.264 (+ AAC unless ``audio`` is None) mp4 of the astronaut face; see ``synthetic_face_frames``.

    ``rotation``: display-matrix rotation (counter-clockwise degrees) with pixels stored turned, like a phone.
    ``vfr``: irregular frame timestamps (intervals 0.5-1.5 / fps) around the same mean rate.
    ``faststart``: the mp4 index first (a cut-off file then still opens, and fails only where its data ends).
    """
    from ..video import write_video

    n = int(round(seconds * fps))
    frames = synthetic_face_frames(n, fps, size, faces, seed)
    times = None
    if vfr:
        intervals = np.random.default_rng(seed).uniform(0.5, 1.5, n) / fps
        times = np.concatenate([[0.0], np.cumsum(intervals[:-1])])
    samples = None if audio is None else synthetic_audio(seconds, audio_rate, audio, seed)
    write_video(path, frames, fps, audio=samples, audio_rate=audio_rate, rotation=rotation, times=times,
                faststart=faststart)
    return Path(path)


def _media_video() -> Path | None:
    path = Path(__file__).resolve().parents[4] / "shared" / "media" / "video" / "hdtf_katiehill.mp4"
    return path if path.exists() else None


def run(workdir: Path) -> dict[str, float]:
    """Time extract and landmarks on one 512x512 clip; frames per second of each and of both together."""
    from ..params import load_config
    from ..video import ExtractParams
    from ..stages import extract, landmarks

    workdir = Path(workdir)
    video = _media_video()
    if video is None:
        video = synthetic_face_clip(workdir / "raw" / "bench" / "video.mp4", seconds=8.0, size=(512, 512))
    interim = workdir / "interim" / "bench"
    extract_params = load_config(ExtractParams, "extract")
    landmark_params = load_config(landmarks.LandmarksParams, "landmarks")
    for module in ("cv2", "decord", "mediapipe", "scipy.ndimage", "scipy.signal"):
        importlib.import_module(module)  # a one-off cost per process, not per frame: keep it out of the timing
    start, cpu_start = time.perf_counter(), time.process_time()
    result = extract.extract(video, interim, extract_params)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    landmarks.compute_landmarks(interim, landmark_params)
    landmarks_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start  # all threads of this process: a load-independent cost measure
    n = result.n_frames
    return {
        "ingest_frames_per_s": n / (extract_s + landmarks_s),
        "extract_frames_per_s": n / extract_s,
        "landmarks_frames_per_s": n / landmarks_s,
        "ingest_frames_per_cpu_s": n / cpu_s,
    }
