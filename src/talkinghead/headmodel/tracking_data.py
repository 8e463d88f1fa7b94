"""FaceMesh landmark tracks of real videos: the data the open head model's template and expression basis come from.

Only the model builder (``build_open``) uses this; the pipeline never does (the built asset is committed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ..errors import InputError
from ..progress import Progress


def track_video(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run MediaPipe FaceMesh (refine_landmarks=True, tracking mode) over every frame (or the first max_frames).

    Returns (points float32 [N, 478, 3] in source pixels: x right, y down, z = MediaPipe z * width, smaller = nearer;
    colours uint8 [N, 478, 3]: the RGB pixel under each point); frames without a face are NaN / 0.
    """
    import av

    from ..solutions import face_mesh

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many types for unreadable files
        raise InputError(path, f"cannot open video ({exc})") from exc
    tracks, colours = [], []
    with container, face_mesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    ) as mesh:
        for frame in Progress(container.decode(video=0), desc=f"FaceMesh {path.name}", unit="frame", leave=False):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            result = mesh.process(rgb)
            points = np.full((478, 3), np.nan, np.float32)
            colour = np.zeros((478, 3), np.uint8)
            if result.multi_face_landmarks:
                lm = result.multi_face_landmarks[0].landmark
                points[:] = [(p.x * w, p.y * h, p.z * w) for p in lm]
                col = np.clip(np.round(points[:, 0] - 0.5), 0, w - 1).astype(int)
                row = np.clip(np.round(points[:, 1] - 0.5), 0, h - 1).astype(int)
                colour = rgb[row, col]
            tracks.append(points)
            colours.append(colour)
            if max_frames is not None and len(tracks) >= max_frames:
                break
    if not tracks:
        raise InputError(path, "no video frames")
    return np.stack(tracks), np.stack(colours)


def track_videos(paths: list[Path], cache: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(points, colours) of several videos keyed by file stem; optionally cached in an .npz (re-used if keys match)."""
    keys = [p.stem for p in paths]
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            if sorted(data.files) == sorted([f"{k}.points" for k in keys] + [f"{k}.colours" for k in keys]):
                return {k: (data[f"{k}.points"], data[f"{k}.colours"]) for k in keys}
    tracks = {p.stem: track_video(p) for p in paths}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        flat = {}
        for k, (pts, cols) in tracks.items():
            flat[f"{k}.points"], flat[f"{k}.colours"] = pts, cols
        np.savez_compressed(cache, **flat)
    return tracks
