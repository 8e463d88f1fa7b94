"""Stage landmarks@NAME: MediaPipe FaceMesh (478 points, refined lips/eyes/irises) on every crop.

    python -m talkinghead.stages.landmarks data/interim/NAME

Reads frames.npy / frames.parquet, writes landmarks.parquet (schemas.LANDMARKS: crop and original pixel coordinates,
a ``detected`` flag) and reports/landmarks/NAME/metrics.json (detection rate).

FaceMesh runs in tracking mode (static_image_mode=False): it detects once and then follows the face, which is both
faster and steadier than per-frame detection. Frames where it loses the face get points interpolated linearly from the
nearest detected frames (flag False). Smoothing: a zero-phase low-pass (``smooth_cutoff_hz``) only on the points
above the nose tip (brows, eyes, irises, forehead, nose bridge), which move rigidly with the head; the mouth, jaw and
cheeks are left as measured so lip motion is neither delayed nor damped.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_json
from ..errors import InputError, exits_on_input_error
from ..paths import PresenterPaths
from ..schemas import FRAMES, LANDMARKS, N_LANDMARKS, column_array, read_table, write_table
from ..tensorfile import load_tensor

NOSE_TIP = 1  # FaceMesh index of the nose tip: points above it are smoothed
MIN_FRAMES_PER_WORKER = 50  # shorter clips are not split across threads


@dataclass(frozen=True)
class LandmarksParams:
    """params.yaml's ``landmarks`` group."""

    min_detection_confidence: float
    min_tracking_confidence: float
    workers: int  # FaceMesh threads, each tracking a consecutive part of the clip (changes the tracking at the seams)
    smooth_cutoff_hz: float  # zero-phase low-pass of the points above the nose tip only


@dataclass
class LandmarksResult:
    lmk_crop: np.ndarray  # [N, 478, 3] x, y crop pixels, z = MediaPipe z * crop size
    lmk_orig: np.ndarray  # [N, 478, 2] x, y upright original pixels
    detected: np.ndarray  # [N] bool

    @property
    def detection_rate(self) -> float:
        return float(self.detected.mean()) if len(self.detected) else 0.0


def _facemesh_chunk(frames: np.ndarray, start: int, stop: int, params: LandmarksParams, points: np.ndarray,
                    detected: np.ndarray, bar) -> None:
    """FaceMesh in tracking mode over frames[start:stop], filling ``points`` / ``detected`` in place."""
    from ..solutions import face_mesh

    with face_mesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                   min_detection_confidence=params.min_detection_confidence,
                   min_tracking_confidence=params.min_tracking_confidence) as mesh:
        for i in range(start, stop):
            result = mesh.process(np.ascontiguousarray(frames[i]))
            if result.multi_face_landmarks:
                points[i] = [(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark]
                detected[i] = True
            bar.update(1)


def run_facemesh(frames: np.ndarray, params: LandmarksParams) -> tuple[np.ndarray, np.ndarray]:
    """FaceMesh in tracking mode over frames uint8 [N, S, S, 3] (RGB): (points [N, 478, 3] normalised x, y, z;
    detected [N] bool). Undetected rows are NaN.

    With ``params.workers`` > 1 the clip is split into that many consecutive parts, each tracked by its own FaceMesh
    in its own thread (MediaPipe releases the GIL while its graph runs), so both cores of a small machine work; each
    part only re-detects the face on its first frame.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..progress import Progress

    n = len(frames)
    points = np.full((n, N_LANDMARKS, 3), np.nan, np.float32)
    detected = np.zeros(n, bool)
    workers = max(1, min(params.workers, n // MIN_FRAMES_PER_WORKER))
    bounds = np.linspace(0, n, workers + 1).round().astype(int)
    with Progress(total=n, desc="facemesh", unit="frame", leave=False) as bar, \
            ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(_facemesh_chunk, frames, a, b, params, points, detected, bar)
                for a, b in zip(bounds[:-1], bounds[1:])]
        for job in jobs:
            job.result()  # re-raises a worker's exception
    return points, detected


def fill_gaps(points: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Linear interpolation of undetected frames from the nearest detected ones (held at the ends).

    points [N, P, D] (undetected rows arbitrary), detected [N] bool with at least one True -> [N, P, D].
    """
    if detected.all():
        return points
    n = len(points)
    known = np.flatnonzero(detected)
    t = np.arange(n)
    nxt = np.clip(np.searchsorted(known, t), 0, len(known) - 1)  # first detected frame at or after t
    prv = np.clip(np.searchsorted(known, t, side="right") - 1, 0, len(known) - 1)  # last detected at or before t
    a, b = known[prv], known[nxt]
    w = np.where(b > a, (t - a) / np.maximum(b - a, 1), 0.0).astype(np.float32)
    filled = (1 - w)[:, None, None] * points[a] + w[:, None, None] * points[b]
    return np.where(detected[:, None, None], points, filled)


def smooth_upper_face(points: np.ndarray, fps: float, cutoff_hz: float) -> np.ndarray:
    """Zero-phase Butterworth low-pass over time on points above the nose tip; other points untouched.

    points [N, 478, D] in image coordinates (y down) -> [N, 478, D].
    """
    from scipy.signal import butter, filtfilt

    n = len(points)
    if cutoff_hz <= 0 or cutoff_hz >= fps / 2 or n < 16:
        return points
    median_y = np.median(points[:, :, 1], axis=0)  # [478]
    upper = median_y < median_y[NOSE_TIP]
    b, a = butter(2, cutoff_hz / (fps / 2))
    out = points.copy()
    out[:, upper] = filtfilt(b, a, points[:, upper], axis=0).astype(np.float32)
    return out


def compute_landmarks(interim: str | Path, params: LandmarksParams, name: str | None = None) -> LandmarksResult:
    """Landmarks for the crops in ``interim``; writes landmarks.parquet there (the crop geometry comes from
    frames.parquet)."""
    interim = Path(interim)
    paths = dataclasses.replace(PresenterPaths.of(name or interim.name), interim=interim)
    table = read_table(paths.frames_table, FRAMES)
    frames = load_tensor(paths.frames, np.uint8, (None, None, 3), n=len(table))
    n, size = frames.shape[0], frames.shape[1]
    if n == 0:
        raise InputError(paths.frames, "holds no frames")
    points, detected = run_facemesh(frames, params)
    if not detected.any():
        raise InputError(paths.frames, f"FaceMesh found no face in any of the {n} crops")
    fps = float(table["fps"].iloc[0])
    points = fill_gaps(points, detected)
    points = smooth_upper_face(points, fps, params.smooth_cutoff_hz)

    lmk_crop = points * np.float32(size)  # normalised [0, 1] -> crop pixels; z uses the same scale (width)
    scale = (table["crop_side"].to_numpy(np.float32) / size)[:, None, None]  # [N, 1, 1] original px per crop px
    origin = np.stack([table["crop_x0"].to_numpy(np.float32), table["crop_y0"].to_numpy(np.float32)], 1)[:, None]
    lmk_orig = origin + lmk_crop[:, :, :2] * scale
    write_table(pd.DataFrame({
        "frame": np.arange(n, dtype=np.int32), "detected": detected,
        "lmk_crop": list(lmk_crop.reshape(n, -1)),  # [N, 478, 3] -> [N, 1434]
        "lmk_orig": list(lmk_orig.reshape(n, -1)),  # [N, 478, 2] -> [N, 956]
    }), paths.landmarks, LANDMARKS)
    return LandmarksResult(lmk_crop=lmk_crop, lmk_orig=lmk_orig, detected=detected)


def read_landmarks(path: str | Path) -> LandmarksResult:
    """Load landmarks.parquet back into arrays."""
    df = read_table(path, LANDMARKS)
    return LandmarksResult(lmk_crop=column_array(df, "lmk_crop", (N_LANDMARKS, 3)),
                           lmk_orig=column_array(df, "lmk_orig", (N_LANDMARKS, 2)),
                           detected=df["detected"].to_numpy(bool))


def longest_gap(detected: np.ndarray) -> int:
    """Longest run of consecutive undetected frames."""
    best = run = 0
    for d in detected:
        run = 0 if d else run + 1
        best = max(best, run)
    return best


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    from ..params import load_config
    from ..tracking import stage_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("interim_dir", type=Path, help="data/interim/NAME (reads frames, writes landmarks)")
    args = parser.parse_args(argv)
    name = args.interim_dir.resolve().name
    params = load_config(LandmarksParams, "landmarks")
    with stage_run("landmarks", name, {"landmarks": params}) as mlflow:
        result = compute_landmarks(args.interim_dir, params, name=name)
        metrics = {"detection_rate": result.detection_rate, "frames": int(len(result.detected)),
                   "longest_gap_frames": longest_gap(result.detected)}
        mlflow.log_metrics(metrics, step=0)
        write_json(PresenterPaths.of(name).report("landmarks") / "metrics.json", metrics)
    print(f"landmarks: {metrics['frames']} frames, detection rate {metrics['detection_rate']:.3f}")


if __name__ == "__main__":
    main()
