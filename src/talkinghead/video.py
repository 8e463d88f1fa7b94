"""Video in and out: probe a file (PyAV), decode upright frames in batches (decord), map a variable or odd frame rate
onto a constant-fps timeline, and write small H.264 + AAC test clips.

Rotation: phones store portrait video as landscape pixels plus a display matrix. ``VideoInfo.rotation`` is the
counter-clockwise angle (degrees, 0/90/180/270) that turns the stored pixels upright, as PyAV reports it.
decord 0.6 already applies it for mp4; ``VideoReader`` checks on the first frame whether the decoder did, so the
frames it returns are upright with either behaviour.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_path
from .errors import InputError


@dataclass(frozen=True)
class ExtractParams:
    """params.yaml's ``extract`` group (also what ``talkinghead check`` judges a video by)."""

    crop_size: int  # output crops are crop_size x crop_size
    fps: str | float  # 'auto' keeps the source's mean frame rate (rounded); a number resamples to it
    min_seconds: float  # shorter clips are refused
    crop_scale: float  # crop side = crop_scale x detected face box side
    smooth_seconds: float  # temporal smoothing of the crop box
    detect_every: int  # face detection every n frames, interpolated in between
    min_face_confidence: float
    audio_rate: int
    silence_dbfs: float  # audio quieter than this (RMS) gets a warning


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` finds. Sizes are of the upright (rotation-applied) frame."""

    path: Path
    width: int
    height: int
    rotation: int  # counter-clockwise degrees that make the stored frame upright: 0, 90, 180 or 270
    fps: float  # mean frame rate (frames / duration)
    n_frames: int
    duration_s: float
    codec: str
    audio_rate: int | None  # None: no audio track
    audio_channels: int | None

    @property
    def has_audio(self) -> bool:
        return self.audio_rate is not None


def _open_container(path: Path):
    import av

    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        return av.open(str(path))
    except Exception as exc:  # InvalidDataError and other FFmpegError subclasses
        raise InputError(path, f"not a readable video file ({exc.__class__.__name__}: {exc})") from exc


def probe_video(path: str | Path) -> VideoInfo:
    """Read stream facts with PyAV and decode the first frame (to read its rotation and prove it decodes).

    Raises InputError for unreadable files and files without a video stream.
    """
    path = Path(path)
    container = _open_container(path)
    with container:
        if not container.streams.video:
            raise InputError(path, "has no video stream (is it an audio-only file?)")
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream))
        except StopIteration as exc:
            raise InputError(path, "video stream holds no frames") from exc
        except Exception as exc:
            raise InputError(path, f"video is corrupt ({exc.__class__.__name__}: {exc})") from exc
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        if rotation % 90:
            raise InputError(path, f"unsupported rotation {rotation} degrees (only multiples of 90)")
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        if duration <= 0 and container.duration:
            duration = container.duration / 1_000_000  # container duration is in AV_TIME_BASE (microseconds)
        n_frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        if n_frames <= 0 and rate:
            n_frames = int(round(duration * float(rate)))
        fps = n_frames / duration if duration > 0 and n_frames > 0 else float(rate or 0)
        audio_rate = audio_channels = None
        if container.streams.audio:
            a = container.streams.audio[0].codec_context
            audio_rate, audio_channels = int(a.sample_rate), int(a.channels)
        return VideoInfo(path=path, width=width, height=height, rotation=rotation, fps=fps, n_frames=n_frames,
                         duration_s=duration, codec=stream.codec_context.name, audio_rate=audio_rate,
                         audio_channels=audio_channels)


def _first_frame_pyav(path: Path) -> np.ndarray:
    """The first frame as stored (no rotation), RGB uint8 [H, W, 3]."""
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def _decoder_error(exc: Exception) -> str:
    """decord's message, fit for one error line: its first line without the '[time] source.cc:line: ' prefix."""
    import re

    first = (str(exc).strip().splitlines() or [""])[0]
    message = re.sub(r"^\[[0-9:]+\] \S+:[0-9]+: ", "", first)
    return f"{exc.__class__.__name__}: {message[:200]}"


class VideoReader:
    """Batched upright RGB frames via decord, with each frame's timestamp.

    >>> reader = VideoReader("clip.mp4", rotation=90)
    >>> reader.get([0, 5, 10]).shape   # [3, H, W, 3] uint8, upright
    """

    def __init__(self, path: str | Path, rotation: int = 0, num_threads: int = 0):
        import decord

        # FFmpeg's own log lines ("partial file", ...) would come on top of the one error line a failure becomes here
        decord.logging.set_level(decord.logging.QUIET)
        self.path = Path(path)
        try:
            self._reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=num_threads)
            self.n_frames = len(self._reader)
            # [N, 2] start and end time of every frame, seconds (from the container's pts, so VFR is honoured)
            self.times = np.asarray(self._reader.get_frame_timestamp(np.arange(self.n_frames)), np.float64)[:, 0]
            first = self._reader[0].asnumpy()
        except InputError:
            raise
        except Exception as exc:  # decord raises DECORDError / RuntimeError for corrupt data
            raise InputError(self.path, f"video is corrupt or truncated ({_decoder_error(exc)})") from exc
        if self.n_frames == 0:
            raise InputError(self.path, "video stream holds no frames")
        self._extra_k = self._calibrate_rotation(first, rotation)

    def _calibrate_rotation(self, decoded: np.ndarray, rotation: int) -> int:
        """How many extra counter-clockwise quarter turns decord's frames need to be upright (0 if it rotated them)."""
        k = (rotation // 90) % 4
        if k == 0:
            return 0
        upright = np.rot90(_first_frame_pyav(self.path), k)
        best, best_err = 0, float("inf")
        for extra in range(4):
            candidate = np.rot90(decoded, extra)
            if candidate.shape != upright.shape:
                continue
            err = float(np.mean(np.abs(candidate[::8, ::8].astype(np.int16) - upright[::8, ::8].astype(np.int16))))
            if err < best_err:
                best, best_err = extra, err
        return best

    def get(self, indices: Iterable[int]) -> np.ndarray:
        """Frames at source ``indices`` (any order, repeats allowed): uint8 [B, H, W, 3], upright."""
        indices = np.asarray(list(indices), dtype=np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            batch = self._reader.get_batch(unique.tolist()).asnumpy()  # [U, H, W, 3]
            # decord keeps decoding ahead of the last frame asked for and holds those frames: read in a loop (speak's
            # ping-pong paste-back, stream) its memory grew by ~1 GB for a 75 s 512x512 video, and with the
            # footage's length. Seeking back to the start after each batch stops that (decord issues #197, #208).
            self._reader.seek(0)
        except Exception as exc:
            raise InputError(self.path, f"video is corrupt or truncated ({_decoder_error(exc)})") from exc
        if self._extra_k:
            batch = np.rot90(batch, self._extra_k, axes=(1, 2))
        return np.ascontiguousarray(batch[inverse])


# A file may decode to less than its header declares (an interrupted download or copy keeps a moov index written
# first but loses the frames at the end). Allowed shortfall before that counts as truncation: timestamp rounding and
# a last frame's duration stay far below it.
MAX_MISSING_S = 0.5
MAX_MISSING_SHARE = 0.05


def decoded_seconds(reader: VideoReader) -> float:
    """How long the frames the file really holds last (first to last timestamp plus one frame)."""
    return float(reader.times[-1] - reader.times[0]) + 1.0 / mean_fps(reader.times)


def check_complete(info: VideoInfo, reader: VideoReader) -> float:
    """The decodable length in seconds; InputError if it falls far short of the length the header declares."""
    seconds = decoded_seconds(reader)
    if info.duration_s - seconds > max(MAX_MISSING_S, MAX_MISSING_SHARE * info.duration_s):
        raise InputError(info.path, f"truncated: only {seconds:.2f} s of the declared {info.duration_s:.2f} s of "
                                    "video can be decoded (an incomplete download or copy?)")
    return seconds


def mean_fps(times: np.ndarray) -> float:
    """Mean frame rate of source frames with start times ``times`` [N] (seconds)."""
    if len(times) < 2:
        return 25.0
    return (len(times) - 1) / float(times[-1] - times[0])


def constant_fps_timeline(times: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample source frames at ``times`` [N] (seconds, increasing) onto a constant ``fps`` timeline.

    Returns (out_times [M], source_index [M]): output frame i is at ``times[0] + i / fps`` and shows the source frame
    whose timestamp is nearest. M covers the source span, the last source frame's duration included.
    """
    times = np.asarray(times, np.float64)
    span = float(times[-1] - times[0]) + 1.0 / mean_fps(times)  # the last frame is shown for one mean interval
    n_out = max(1, int(round(span * fps)))  # round, not floor: 117.99999 frames of float error is 118
    out_times = times[0] + np.arange(n_out) / fps
    right = np.clip(np.searchsorted(times, out_times), 1, len(times) - 1)
    left = right - 1
    nearest = np.where(np.abs(times[left] - out_times) <= np.abs(times[right] - out_times), left, right)
    if len(times) == 1:
        nearest = np.zeros(n_out, np.int64)
    return out_times, nearest.astype(np.int64)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: np.ndarray | None = None,
                audio_rate: int = 44100, rotation: int = 0, times: np.ndarray | None = None, crf: int = 23,
                faststart: bool = False) -> None:
    """Encode upright RGB uint8 frames [H, W, 3] as H.264 (+ AAC stereo from mono float ``audio`` [T]), atomically.

    ``rotation`` (counter-clockwise degrees) is stored as display-matrix metadata, with the pixels turned the other
    way, as a phone would write it. ``times`` (seconds per frame) gives variable-frame-rate timestamps.
    ``faststart`` puts the index (moov) first, as streaming-ready files have it.
    """
    import av

    k = (rotation // 90) % 4
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_video: no frames")
    time_base = Fraction(1, 1000) if times is not None else Fraction(1, int(round(fps * 1000)))
    pcm = None if audio is None else np.clip(np.asarray(audio, np.float32), -1, 1)
    chunk = 1024  # AAC frame size
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4" if str(path).endswith((".mp4", ".m4v", ".mov")) else None,
                     options={"movflags": "faststart"} if faststart else {}) as container:
            vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vstream.height, vstream.width = np.rot90(first, -k).shape[:2]
            vstream.pix_fmt = "yuv420p"
            vstream.time_base = time_base
            vstream.codec_context.time_base = time_base
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
            if rotation:
                vstream.set_display_rotation(rotation)
            astream = None if pcm is None else container.add_stream("aac", rate=audio_rate, layout="stereo")
            audio_done = 0

            def mux_audio(until_sample: int) -> None:
                """Encode audio up to ``until_sample`` so the file interleaves audio and video like a camera's."""
                nonlocal audio_done
                while astream is not None and audio_done < min(until_sample, len(pcm)):
                    part = pcm[audio_done:audio_done + chunk]
                    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.stack([part, part])), format="fltp",
                                                    layout="stereo")  # [2, n] planar stereo
                    af.sample_rate = audio_rate
                    af.pts = audio_done
                    for packet in astream.encode(af):
                        container.mux(packet)
                    audio_done += len(part)

            for i, frame in enumerate(itertools.chain([first], frames)):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(frame, -k)), format="rgb24")
                vf.time_base = time_base
                vf.pts = int(round(times[i] * 1000)) if times is not None else i * 1000
                for packet in vstream.encode(vf):
                    container.mux(packet)
                mux_audio(int(((times[i] if times is not None else i / fps) + 1.0 / fps) * audio_rate))
            for packet in vstream.encode():
                container.mux(packet)
            if astream is not None:
                mux_audio(len(pcm))
                for packet in astream.encode():
                    container.mux(packet)
