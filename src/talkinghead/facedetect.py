"""Face finding for presenter videos: MediaPipe face detection that also finds small faces in large frames, linking
per-frame detections into tracks, choosing the presenter's track, and the smoothed square crop boxes that follow it.

Used by the extract stage (the crops) and by onboard's ``check`` (is there one usable face?).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

DETECT_MAX_SIDE = 640  # frames are downscaled to this longest side before the first (whole-frame) detection
SMALL_FACE_FRACTION = 0.06  # a face narrower than this share of the frame's long side triggers the finer search
AMBIGUOUS_RATIO = 0.7  # a second track scoring at least this share of the best one makes the choice ambiguous
MIN_TRACK_SHARE = 0.25  # the chosen face must be found in at least this share of the detection frames


# ---------------------------------------------------------------------------------------------------------- detection
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes (x0, y0, w, h, ...)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _nms(boxes: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Drop boxes overlapping a higher-scoring one. boxes [K, 5] (x0, y0, w, h, score) -> [K', 5]."""
    if len(boxes) == 0:
        return boxes.reshape(0, 5)
    order = np.argsort(-boxes[:, 4])
    kept: list[np.ndarray] = []
    for i in order:
        if all(_iou(boxes[i], k) < iou for k in kept):
            kept.append(boxes[i])
    return np.stack(kept)


class FaceDetector:
    """MediaPipe full-range face detection that also finds small faces in large frames.

    ``detect(frame, hint)`` -> float32 [K, 5] boxes (x0, y0, w, h, score) in the frame's pixels.
    """

    def __init__(self, min_confidence: float = 0.5):
        from .solutions import face_detection

        self._detector = face_detection(model_selection=1, min_detection_confidence=min_confidence)

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _detect_region(self, frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, max_side: int) -> np.ndarray:
        import cv2

        region = frame[y0:y1, x0:x1]
        h, w = region.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        if scale < 1.0:
            region = cv2.resize(region, (max(1, round(w * scale)), max(1, round(h * scale))),
                                interpolation=cv2.INTER_AREA)
        result = self._detector.process(np.ascontiguousarray(region))
        boxes = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            boxes.append((x0 + b.xmin * w, y0 + b.ymin * h, b.width * w, b.height * h, det.score[0]))
        return np.asarray(boxes, np.float32).reshape(-1, 5)

    def detect(self, frame: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
        """Faces in ``frame`` (uint8 [H, W, 3]). ``hint``: the last known box (x0, y0, w, h), searched first at full
        resolution when the whole-frame pass finds no face of a reliable size."""
        height, width = frame.shape[:2]
        boxes = self._detect_region(frame, 0, 0, width, height, DETECT_MAX_SIDE)
        small = SMALL_FACE_FRACTION * max(width, height)
        if len(boxes) and boxes[:, 2].max() >= small:
            return boxes
        found = [boxes]
        if hint is not None:
            side = 4.0 * max(hint[2], hint[3])
            cx, cy = hint[0] + hint[2] / 2, hint[1] + hint[3] / 2
            x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
            if x1 - x0 > 16 and y1 - y0 > 16:
                roi = self._detect_region(frame, x0, y0, x1, y1, DETECT_MAX_SIDE)
                if len(roi):
                    return _nms(np.concatenate([boxes, roi]))
        # overlapping square tiles of half the short side, so a small face is large in the detector's input
        tile = max(64, min(width, height) // 2)
        stride = tile // 2
        for ty in range(0, max(1, height - tile + stride), stride):
            for tx in range(0, max(1, width - tile + stride), stride):
                found.append(self._detect_region(frame, tx, ty, min(width, tx + tile), min(height, ty + tile),
                                                 DETECT_MAX_SIDE))
        return _nms(np.concatenate(found))


# -------------------------------------------------------------------------------------------------------------- tracks
@dataclass
class FaceTrack:
    steps: list[int] = field(default_factory=list)  # indices into the detection frames
    boxes: list[np.ndarray] = field(default_factory=list)  # (x0, y0, w, h, score)

    @property
    def score(self) -> float:
        """Presence x size: sum of box sides over the detection frames it appears in."""
        return float(sum(b[2] for b in self.boxes))


def link_tracks(detections: list[np.ndarray], max_gap: int = 3) -> list[FaceTrack]:
    """Link per-frame boxes into tracks: a box joins the track whose last box (at most ``max_gap`` detection frames
    ago) is nearest, when the centres are within half a face side and the sizes within a factor of two."""
    tracks: list[FaceTrack] = []
    for step, boxes in enumerate(detections):
        taken: set[int] = set()
        for box in sorted(boxes, key=lambda b: -b[2]):
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            best, best_dist = None, float("inf")
            for t, track in enumerate(tracks):
                last = track.boxes[-1]
                if t in taken or step - track.steps[-1] > max_gap:
                    continue
                dist = np.hypot(last[0] + last[2] / 2 - cx, last[1] + last[3] / 2 - cy)
                ratio = box[2] / max(last[2], 1e-6)
                if dist < 0.5 * max(box[2], last[2]) * (1 + step - track.steps[-1]) and 0.5 < ratio < 2 \
                        and dist < best_dist:
                    best, best_dist = t, dist
            if best is None:
                tracks.append(FaceTrack())
                best = len(tracks) - 1
            tracks[best].steps.append(step)
            tracks[best].boxes.append(box)
            taken.add(best)
    return tracks


def choose_track(tracks: list[FaceTrack], n_steps: int, path: Path) -> tuple[FaceTrack, list[str]]:
    """The largest consistent face track; warnings about other faces. InputError if none or ambiguous."""
    if not tracks:
        raise InputError(path, "no face found (checked with MediaPipe face detection on "
                               f"{n_steps} frames); a presenter video must show one face")
    ranked = sorted(tracks, key=lambda t: -t.score)
    best = ranked[0]
    if len(best.steps) < MIN_TRACK_SHARE * n_steps:
        raise InputError(path, f"no consistent face: the most visible face is found in only {len(best.steps)} of "
                               f"{n_steps} checked frames")
    others = [t for t in ranked[1:] if len(t.steps) >= MIN_TRACK_SHARE * n_steps]
    warnings: list[str] = []
    if others:
        second = others[0]
        if second.score >= AMBIGUOUS_RATIO * best.score:
            raise InputError(path, f"{len(others) + 1} faces of similar size throughout (face sides ~"
                                   f"{np.median([b[2] for b in best.boxes]):.0f} and "
                                   f"{np.median([b[2] for b in second.boxes]):.0f} px); "
                                   "cannot tell which is the presenter: trim or crop the video to one person")
        warnings.append(f"{path}: {len(others) + 1} faces seen; using the largest, most consistently visible one")
    return best, warnings


def smooth_crop_boxes(track: FaceTrack, step_frames: np.ndarray, n_frames: int, fps: float, width: int, height: int,
                      crop_scale: float, smooth_seconds: float) -> np.ndarray:
    """Square crop boxes [N, 3] (x0, y0, side; whole upright-original pixels) following the track.

    Centres and sizes are interpolated between detections, held at the ends, smoothed with a Gaussian of FWHM
    ``smooth_seconds`` (twice that for the size, which should barely change), then the box is kept inside the frame.
    """
    from scipy.ndimage import gaussian_filter1d

    frames = step_frames[np.asarray(track.steps)]
    boxes = np.stack(track.boxes)
    cx = boxes[:, 0] + boxes[:, 2] / 2
    cy = boxes[:, 1] + boxes[:, 3] / 2
    side = crop_scale * np.maximum(boxes[:, 2], boxes[:, 3])
    t = np.arange(n_frames)
    sigma = max(1e-3, smooth_seconds * fps / 2.355)  # FWHM -> sigma
    cx = gaussian_filter1d(np.interp(t, frames, cx), sigma, mode="nearest")
    cy = gaussian_filter1d(np.interp(t, frames, cy), sigma, mode="nearest")
    side = gaussian_filter1d(np.interp(t, frames, side), 2 * sigma, mode="nearest")
    side = np.round(np.minimum(side, min(width, height)))
    x0 = np.round(np.clip(cx - side / 2, 0, width - side))
    y0 = np.round(np.clip(cy - side / 2, 0, height - side))
    return np.stack([x0, y0, side], axis=1).astype(np.float32)


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut the square ``box`` (x0, y0, side) out of ``frame`` [H, W, 3] and resize to [size, size, 3]."""
    import cv2

    x0, y0, side = (int(v) for v in box)
    patch = frame[y0:y0 + side, x0:x0 + side]
    if side <= size:
        return cv2.resize(patch, (size, size), interpolation=cv2.INTER_LINEAR)
    factor = side // size
    if factor >= 2 and side != factor * size:
        # INTER_AREA is ~5x faster for whole-number ratios: a mild bilinear step to factor * size first
        patch = cv2.resize(patch, (factor * size, factor * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
