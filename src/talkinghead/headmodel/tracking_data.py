"""FaceMesh landmark tracks of real videos: the data the open head model's template and expression basis come from.

Only the model builder (``build_open``) uses this; the pipeline never does (the built asset is committed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import InputError


def track_video(path: Path) -> np.ndarray:
    """Run MediaPipe FaceMesh (refine_landmarks=True, tracking mode) over every frame of one video.

    Returns float32 [N, 478, 3] in source pixels (x right, y down, z = MediaPipe z * width, smaller = nearer);
    frames without a face are NaN.
    """
    import av
    import mediapipe as mp

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many types for unreadable files
        raise InputError(path, f"cannot open video ({exc})") from exc
    tracks = []
    with container, mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    ) as mesh:
        for frame in tqdm(container.decode(video=0), desc=f"FaceMesh {path.name}", leave=False):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            result = mesh.process(rgb)
            points = np.full((478, 3), np.nan, np.float32)
            if result.multi_face_landmarks:
                lm = result.multi_face_landmarks[0].landmark
                points[:] = [(p.x * w, p.y * h, p.z * w) for p in lm]
            tracks.append(points)
    if not tracks:
        raise InputError(path, "no video frames")
    return np.stack(tracks)


def track_videos(paths: list[Path], cache: Path | None = None) -> dict[str, np.ndarray]:
    """Tracks of several videos, keyed by file stem; optionally cached in an .npz (re-used when its keys match)."""
    keys = [p.stem for p in paths]
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            if sorted(data.files) == sorted(keys):
                return {k: data[k] for k in keys}
    tracks = {p.stem: track_video(p) for p in paths}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, **tracks)
    return tracks
