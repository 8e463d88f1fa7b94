"""Stage extract@NAME: raw video -> face-centred square crops on a constant-fps timeline + 16 kHz mono audio.

    python -m talkinghead.stages.extract data/raw/NAME data/interim/NAME

Outputs (names from PresenterPaths): frames.npy (uint8 [N, S, S, 3]), frames.parquet (schemas.FRAMES: timestamps and
the crop box in upright original pixels, so results can be pasted back), audio.wav (16 kHz mono, sample 0 = frame 0,
length N / fps), and reports/extract/NAME/metrics.json.

Face finding: MediaPipe face detection (full-range model) every ``detect_every`` output frames on a downscaled frame;
when that finds nothing or only a tiny face (whole-body portrait video), again around the last face and then on
overlapping tiles at higher resolution. Detections are linked into tracks; the largest consistent track is cropped
(another similar-size track throughout is an error). The crop box is interpolated between detections and smoothed over
``smooth_seconds`` so it does not shake.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import write_json
from ..audio import decode_audio, rms_dbfs, write_wav
from ..errors import InputError, exits_on_input_error
from ..paths import PresenterPaths
from ..schemas import FRAMES, write_table
from ..tensorfile import TensorWriter
from ..video import ExtractParams, VideoInfo, VideoReader, check_complete, constant_fps_timeline, mean_fps, probe_video

DETECT_MAX_SIDE = 640  # frames are downscaled to this longest side before the first (whole-frame) detection
SMALL_FACE_FRACTION = 0.06  # a face narrower than this share of the frame's long side triggers the finer search
AMBIGUOUS_RATIO = 0.7  # a second track scoring at least this share of the best one makes the choice ambiguous
MIN_TRACK_SHARE = 0.25  # the chosen face must be found in at least this share of the detection frames


@dataclass
class ExtractResult:
    n_frames: int
    fps: float
    source_fps: float
    rotation: int
    detection_rate: float  # share of detection frames where the chosen face was found
    n_tracks: int  # distinct faces (tracks) seen
    crop_boxes: np.ndarray  # [N, 3] x0, y0, side in upright original pixels
    warnings: list[str] = field(default_factory=list)


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
        from ..solutions import face_detection

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


# --------------------------------------------------------------------------------------------------------------- stage
def output_fps(setting: Any, source_fps: float) -> float:
    """params extract.fps: 'auto' = the source's mean rate rounded, else a positive number."""
    if setting in (None, "auto"):
        return float(max(1, round(source_fps)))
    try:
        value = float(setting)
    except (TypeError, ValueError) as exc:
        raise InputError(Path("params.yaml"), f"extract.fps must be 'auto' or a number, not {setting!r}") from exc
    if value <= 0:
        raise InputError(Path("params.yaml"), f"extract.fps must be positive, not {setting!r}")
    return value


def align_audio(samples: np.ndarray, start_s: float, n_frames: int, fps: float, rate: int) -> np.ndarray:
    """The audio under the frame timeline: sample 0 at output frame 0 (``start_s`` into the container), exactly
    ``n_frames / fps`` seconds long, zero-padded where the audio track ends early. samples [T] -> [round(n/fps*rate)]."""
    start = int(round(start_s * rate))
    length = int(round(n_frames / fps * rate))
    clip = samples[start:start + length]
    return np.pad(clip, (0, length - len(clip)))


def check_input(video: Path, info: VideoInfo, reader: VideoReader, params: ExtractParams) -> None:
    """Refuse videos the pipeline cannot use, before any work: truncated, too short, no audio."""
    seconds = check_complete(info, reader)  # what decodes counts, not the length the header declares
    if seconds < params.min_seconds:
        raise InputError(video, f"clip is {seconds:.2f} s long, shorter than extract.min_seconds = "
                                f"{params.min_seconds} s")
    if not info.has_audio:
        raise InputError(video, "has no audio track (a presenter needs speech to train the lip model)")


def _prefetch(reader: VideoReader, batches: list[np.ndarray], out: queue.Queue, stop: threading.Event) -> None:
    """Decode batches in a thread (decord releases the GIL) so decoding overlaps cropping / detection."""
    try:
        for batch in batches:
            frames = reader.get(batch)
            while not stop.is_set():
                try:
                    out.put(frames, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
    except BaseException as exc:  # handed to the consumer, which re-raises it
        out.put(exc)


def _decoded(reader: VideoReader, indices: np.ndarray, batch_size: int):
    """Yield (batch_indices, frames) for source ``indices``, decoded one batch ahead in a thread."""
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()
    thread = threading.Thread(target=_prefetch, args=(reader, batches, q, stop), daemon=True)
    thread.start()
    try:
        for batch in batches:
            frames = q.get()
            if isinstance(frames, BaseException):
                raise frames
            yield batch, frames
    finally:  # also when the consumer fails or stops early: let the thread finish
        stop.set()
        thread.join()


def detect_faces(reader: VideoReader, source_indices: np.ndarray, min_confidence: float,
                 batch_size: int = 16) -> list[np.ndarray]:
    """Face boxes [K, 5] for each of ``source_indices`` (the detection frames)."""
    from ..progress import Progress

    detections: list[np.ndarray] = []
    hint = None
    with FaceDetector(min_confidence) as detector, \
            Progress(total=len(source_indices), desc="detect faces", unit="frame", leave=False) as bar:
        for _, frames in _decoded(reader, source_indices, batch_size):
            for frame in frames:
                boxes = detector.detect(frame, hint)
                if len(boxes):
                    hint = boxes[np.argmax(boxes[:, 2])]
                detections.append(boxes)
                bar.update(1)
    return detections


def extract(video: str | Path, interim: str | Path, params: ExtractParams, name: str | None = None,
            max_seconds: float | None = None) -> ExtractResult:
    """Run the whole stage for one raw ``video``, writing into the ``interim`` folder (see module docstring).
    ``max_seconds`` keeps only the start of the clip (tests, quick looks); the stage itself uses the whole clip."""
    from ..progress import Progress

    video, interim = Path(video), Path(interim)
    name = name or interim.name
    paths = dataclasses.replace(PresenterPaths.of(name), interim=interim)
    info = probe_video(video)
    reader = VideoReader(video, info.rotation)
    check_input(video, info, reader, params)
    size = params.crop_size
    audio_rate = params.audio_rate
    samples = decode_audio(video, audio_rate)

    source_fps = mean_fps(reader.times)
    fps = output_fps(params.fps, source_fps)
    out_times, source_index = constant_fps_timeline(reader.times, fps)
    if max_seconds is not None:
        keep = max(1, int(round(max_seconds * fps)))
        out_times, source_index = out_times[:keep], source_index[:keep]
    n = len(out_times)
    warnings: list[str] = []

    level = rms_dbfs(samples)
    if level < params.silence_dbfs:
        warnings.append(f"{video}: audio is (nearly) silent ({level:.1f} dBFS RMS); the lip model needs speech")

    every = max(1, params.detect_every)
    step_frames = np.unique(np.append(np.arange(0, n, every), n - 1))  # detection frames on the output timeline
    detections = detect_faces(reader, source_index[step_frames], params.min_face_confidence)
    tracks = link_tracks(detections)
    track, track_warnings = choose_track(tracks, len(step_frames), video)
    warnings += track_warnings
    first = reader.get(source_index[:1])[0]
    height, width = first.shape[:2]
    boxes = smooth_crop_boxes(track, step_frames, n, fps, width, height, params.crop_scale,
                              params.smooth_seconds)

    with TensorWriter(paths.frames, n, (size, size, 3), np.uint8) as writer, \
            Progress(total=n, desc="crop frames", unit="frame", leave=False) as bar:
        row = 0
        for batch, frames in _decoded(reader, source_index, 32):
            crops = np.empty((len(batch), size, size, 3), np.uint8)
            for j, frame in enumerate(frames):
                crops[j] = crop_frame(frame, boxes[row + j], size)
            writer[row:row + len(batch)] = crops
            row += len(batch)
            bar.update(len(batch))

    table = pd.DataFrame({
        "frame": np.arange(n, dtype=np.int32),
        "time_s": out_times - out_times[0],
        "source_time_s": reader.times[source_index],
        "crop_x0": boxes[:, 0], "crop_y0": boxes[:, 1], "crop_side": boxes[:, 2],
        "orig_width": np.full(n, width, np.int32), "orig_height": np.full(n, height, np.int32),
        "fps": np.full(n, fps, np.float32),
    })
    write_table(table, paths.frames_table, FRAMES, metadata={
        "source": str(video), "rotation": str(info.rotation), "source_fps": f"{source_fps:.4f}",
        "warnings": json.dumps(warnings)})

    write_wav(paths.audio, align_audio(samples, float(out_times[0]), n, fps, audio_rate), audio_rate)

    detection_rate = len(track.steps) / len(step_frames)
    return ExtractResult(n_frames=n, fps=fps, source_fps=source_fps, rotation=info.rotation,
                         detection_rate=detection_rate, n_tracks=len(tracks), crop_boxes=boxes, warnings=warnings)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    from ..params import load_config
    from ..tracking import stage_run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_dir", type=Path, help="data/raw/NAME (holds the presenter's one video)")
    parser.add_argument("interim_dir", type=Path, help="data/interim/NAME (outputs)")
    args = parser.parse_args(argv)
    name = args.raw_dir.resolve().name
    params = load_config(ExtractParams, "extract")
    video = dataclasses.replace(PresenterPaths.of(name), raw_dir=args.raw_dir).raw_video()
    with stage_run("extract", name, {"extract": params}) as mlflow:
        result = extract(video, args.interim_dir, params, name)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        metrics = {"frames": result.n_frames, "fps": result.fps, "source_fps": result.source_fps,
                   "face_detection_rate": result.detection_rate, "faces_seen": result.n_tracks,
                   "crop_side_median_px": float(np.median(result.crop_boxes[:, 2])),
                   "audio_warning": float(any("silent" in w for w in result.warnings))}
        mlflow.log_metrics(metrics, step=0)
        write_json(PresenterPaths.of(name).report("extract") / "metrics.json", metrics)
    print(f"extract: {result.n_frames} frames at {result.fps:g} fps -> {args.interim_dir}")


if __name__ == "__main__":
    main()
