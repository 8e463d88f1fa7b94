"""Stage extract@NAME: raw video -> face-centred square crops on a constant-fps timeline + 16 kHz mono audio.

    python -m talkinghead.stages.extract data/raw/NAME data/interim/NAME

Outputs (names from PresenterPaths): frames.npy (uint8 [N, S, S, 3]), frames.parquet (schemas.FRAMES: timestamps and
the crop box in upright original pixels, so results can be pasted back), audio.wav (16 kHz mono, sample 0 = frame 0,
length N / fps), and reports/extract/NAME/metrics.json.

Face finding: MediaPipe face detection (full-range model) every ``detect_every`` output frames on a downscaled frame;
when that finds nothing or only a tiny face (whole-body portrait video), again around the last face and then on
overlapping tiles at higher resolution (facedetect.py). Detections are linked into tracks; the largest consistent track is cropped
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
from ..facedetect import FaceDetector, choose_track, crop_frame, link_tracks, smooth_crop_boxes
from ..paths import PresenterPaths
from ..schemas import FRAMES, write_table
from ..tensorfile import TensorWriter
from ..video import ExtractParams, VideoInfo, VideoReader, check_complete, constant_fps_timeline, mean_fps, probe_video


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
