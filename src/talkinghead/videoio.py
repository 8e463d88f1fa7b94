"""Streaming MP4 writer: H.264 (yuv420p) video plus AAC audio, muxed in sync, written atomically.

Frames arrive one batch at a time (uint8 [B, H, W, 3] RGB), so a 10-minute video never sits in memory. The audio
is encoded alongside: after each video batch the audio up to the same timestamp is pushed, which keeps the two
streams interleaved in the file. The file is written to a temporary name next to the target and renamed only when
``close()`` succeeds; an exception anywhere (including in the encoding thread) deletes the partial file.

>>> with VideoWriter("out.mp4", fps=25, width=512, height=512, audio=samples, audio_rate=16000) as writer:
...     for batch in batches:
...         writer.write(batch)
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from .atomic import make_readable, remove_stale_temps, temp_prefix
from .errors import InputError


def fps_fraction(fps: float) -> Fraction:
    """A frame rate as an exact fraction: 25.0 -> 25, 29.97 -> 2997/100, 29.97002997 -> 30000/1001."""
    return Fraction(float(fps)).limit_denominator(1001)


def n_frames_for_audio(n_samples: int, rate: int, fps: float) -> int:
    """Number of video frames whose duration matches ``n_samples`` of audio to within half a frame (at least 1)."""
    return max(1, int(round(n_samples / rate * float(fps))))


def check_writable(path: str | Path, suffix: str = ".mp4") -> None:
    """Raise InputError if ``path`` cannot be created: bad suffix, parent not a directory, or not writable (checked
    by creating and removing a file there)."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise InputError(path, f"output must be a {suffix} file")
    if path.is_dir():
        raise InputError(path, "is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():  # the writer creates missing folders; check the nearest existing ancestor
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(path, f"{existing} is not a directory")
    # try it: permission bits do not tell (root passes os.access on /sys, read-only mounts, pseudo file systems)
    try:
        fd, probe_file = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".probe", dir=existing)
    except OSError as exc:
        raise InputError(path, f"output folder {existing} is not writable ({exc.strerror})") from exc
    os.close(fd)
    os.unlink(probe_file)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(path, "exists and is not writable")


class VideoWriter:
    """H.264 + AAC MP4 writer fed batch by batch; see the module docstring.

    Args:
        path: target .mp4 (written only on success).
        fps: frame rate (float; stored as an exact fraction).
        width, height: frame size in pixels (yuv420p needs even sizes; odd sizes are padded by one pixel).
        audio: optional mono float32 samples [T] in [-1, 1]; muxed as AAC at ``audio_rate``. An empty array makes
            an audio track whose samples arrive later, chunk by chunk, through ``add_audio`` (streamed speech).
        crf, preset: libx264 quality/speed settings.
        threaded: encode in a background thread so the caller can prepare the next batch meanwhile.
    """

    def __init__(self, path: str | Path, fps: float, width: int, height: int, audio: np.ndarray | None = None,
                 audio_rate: int = 16000, crf: int = 20, preset: str = "veryfast", threaded: bool = True,
                 audio_bitrate: int = 96000):
        import av

        self.path = Path(path)
        self.fps = fps_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.audio = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
        self.audio_rate = int(audio_rate)
        self.frames_written = 0
        self._audio_pos = 0  # samples encoded so far
        self._audio_base = 0  # sample index of self.audio[0]: add_audio drops what is already encoded
        self._audio_lock = threading.Lock()  # add_audio (caller) and _push_audio (encoder thread) share self.audio
        self._closed = False
        self._error: BaseException | None = None

        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)  # what a killed (SIGKILL: no cleanup) earlier writer of this file left
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=".mp4", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        try:
            self.container = av.open(str(self.tmp), mode="w", format="mp4",
                                     options={"movflags": "+faststart"})  # index first: browsers play it while it loads
            self.video = self.container.add_stream("libx264", rate=self.fps)
            self.video.width = self.width + self.width % 2  # yuv420p subsamples chroma 2x2: sizes must be even
            self.video.height = self.height + self.height % 2
            self.video.pix_fmt = "yuv420p"
            self.video.options = {"crf": str(crf), "preset": preset}
            self.audio_stream = None
            if self.audio is not None:
                self.audio_stream = self.container.add_stream("aac", rate=self.audio_rate, layout="mono")
                self.audio_stream.bit_rate = audio_bitrate
        except BaseException:
            self._discard()
            raise

        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=2)  # bounded: memory stays flat if the encoder is the bottleneck
            self._thread = threading.Thread(target=self._worker, name="video-encoder", daemon=True)
            self._thread.start()

    # -- public API -------------------------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> None:
        """Append a batch of RGB frames, uint8 [B, H, W, 3] (or one frame [H, W, 3])."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected uint8 [B, {self.height}, {self.width}, 3], got {frames.dtype} {frames.shape}")
        self._raise_worker_error()
        if self._queue is None:
            self._encode(frames)
        else:
            self._put(np.ascontiguousarray(frames))

    def add_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples to the audio track (a writer made with ``audio=np.zeros(0)``). Add a
        chunk's audio before its frames: the encoder pushes audio up to the time of the frames written."""
        if self.audio is None:
            raise ValueError("this writer has no audio track")
        self._raise_worker_error()
        with self._audio_lock:
            done = self._audio_pos - self._audio_base  # encoded already: no longer kept, so memory stays flat
            self.audio = np.concatenate([self.audio[done:], np.asarray(samples, np.float32).reshape(-1)])
            self._audio_base = self._audio_pos

    def close(self) -> Path:
        """Flush the encoders, finish the file and rename it onto ``path``. Returns ``path``."""
        if self._closed:
            return self.path
        try:
            if self._queue is not None:
                self._put(None)
                self._thread.join()
                self._raise_worker_error()
            self._push_audio(until_sample=None)
            for packet in self.video.encode(None):
                self.container.mux(packet)
            if self.audio_stream is not None:
                for packet in self.audio_stream.encode(None):
                    self.container.mux(packet)
            self.container.close()
            self._closed = True
            make_readable(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Stop, and delete the partial file. Safe to call more than once."""
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._error = self._error or RuntimeError("aborted")
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put(None)
            self._thread.join(timeout=30)
        self._discard()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals --------------------------------------------------------------------------------------------
    def _put(self, item) -> None:
        while True:  # poll so a dead worker cannot block the producer forever on a full queue
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_worker_error()

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._error is not None:
                return
            try:
                self._encode(item)
            except BaseException as exc:  # handed to the producer on its next write/close
                self._error = exc
                return

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _encode(self, frames: np.ndarray) -> None:
        import av

        pad_h, pad_w = self.video.height - self.height, self.video.width - self.width
        for rgb in frames:
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            for packet in self.video.encode(frame):
                self.container.mux(packet)
            self.frames_written += 1
        # keep audio interleaved with video: encode it up to the end of the frames written so far
        self._push_audio(until_sample=int(round(self.frames_written / self.fps * self.audio_rate)))

    def _push_audio(self, until_sample: int | None) -> None:
        import av

        if self.audio_stream is None:
            return
        with self._audio_lock:
            available = self._audio_base + len(self.audio)
            end = available if until_sample is None else min(until_sample, available)
            if end <= self._audio_pos:
                return
            chunk = self.audio[self._audio_pos - self._audio_base:end - self._audio_base]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")  # [T] -> [1, T] planar
        frame.sample_rate = self.audio_rate
        frame.pts = self._audio_pos
        frame.time_base = Fraction(1, self.audio_rate)
        for packet in self.audio_stream.encode(frame):
            self.container.mux(packet)
        self._audio_pos = end

    def _discard(self) -> None:
        if not self._closed:
            try:
                self.container.close()
            except Exception:  # the container may be half-initialised or already broken; the file goes anyway
                pass
            self._closed = True
        self.tmp.unlink(missing_ok=True)


def probe(path: str | Path) -> dict:
    """Duration and streams of a media file (PyAV): {'duration_s', 'video': {...} | None, 'audio': {...} | None}."""
    import av

    with av.open(str(path)) as container:
        info: dict = {"duration_s": None if container.duration is None else container.duration / 1e6,
                      "video": None, "audio": None}
        if container.streams.video:
            v = container.streams.video[0]
            info["video"] = {"codec": v.codec_context.name, "width": v.codec_context.width,
                             "height": v.codec_context.height, "fps": float(v.average_rate or 0),
                             "frames": v.frames, "pix_fmt": v.codec_context.pix_fmt,
                             "duration_s": None if v.duration is None else float(v.duration * v.time_base)}
        if container.streams.audio:
            a = container.streams.audio[0]
            info["audio"] = {"codec": a.codec_context.name, "rate": a.codec_context.sample_rate,
                             "duration_s": None if a.duration is None else float(a.duration * a.time_base)}
    return info


class OutputClosed(Exception):
    """The reader of a live stream went away (a closed pipe): nothing more can be written, which ends the stream."""


class LiveWriter:
    """H.264 + AAC in MPEG-TS, written as frames and audio arrive (``talkinghead stream``): to a file or to a
    binary file object such as stdout. Not atomic, by design: a player reads it while it grows, and a stream that
    ends abruptly is still playable up to its last packet (MPEG-TS needs no index). x264 runs with
    ``tune=zerolatency``, so a frame leaves the encoder as soon as it is written (no look-ahead buffer).

    Args:
        target: a path, or a writable binary file object.
        fps, width, height: video settings (sizes padded to even, as in VideoWriter).
        audio_rate: the rate of the samples given to ``write``.
    """

    def __init__(self, target, fps: float, width: int, height: int, audio_rate: int = 16000, crf: int = 20,
                 preset: str = "veryfast", audio_bitrate: int = 64000):
        import av

        self.fps = fps_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.audio_rate = int(audio_rate)
        self.frames_written = 0
        self.samples_written = 0
        self.container = av.open(target if not isinstance(target, (str, Path)) else str(target), mode="w",
                                 format="mpegts")
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width = self.width + self.width % 2
        self.video.height = self.height + self.height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency"}
        self.audio = self.container.add_stream("aac", rate=self.audio_rate, layout="mono")
        self.audio.bit_rate = audio_bitrate
        self._closed = False
        self.reader_gone = False

    def _mux(self, packet) -> None:
        try:
            self.container.mux(packet)
        except BrokenPipeError as exc:  # `| head`, a player that quit: the end of the stream, not a crash
            self.reader_gone = True
            raise OutputClosed(f"the reader closed the stream after {self.frames_written} frames") from exc

    def write(self, frames: np.ndarray, samples: np.ndarray) -> None:
        """Append RGB frames uint8 [B, H, W, 3] and the mono float32 audio samples [T] that go with them."""
        import av

        pad_h, pad_w = self.video.height - self.height, self.video.width - self.width
        for rgb in np.asarray(frames):
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            for packet in self.video.encode(frame):
                self._mux(packet)
            self.frames_written += 1
        samples = np.asarray(samples, np.float32).reshape(-1)
        if len(samples):
            chunk = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")  # [T] -> [1, T]
            chunk.sample_rate = self.audio_rate
            chunk.pts = self.samples_written
            chunk.time_base = Fraction(1, self.audio_rate)
            for packet in self.audio.encode(chunk):
                self._mux(packet)
            self.samples_written += len(samples)

    def close(self) -> None:
        """Flush both encoders and finish the stream. Safe to call more than once. After OutputClosed (also when the
        reader leaves during the flush) there is no one left to flush to: the container is only released."""
        if self._closed:
            return
        self._closed = True
        if not self.reader_gone:
            try:
                for stream in (self.video, self.audio):
                    for packet in stream.encode(None):
                        self._mux(packet)
            except OutputClosed:
                pass
        try:
            self.container.close()
        except Exception as exc:
            # the reader may leave while the last bytes go out (or PyAV reports the broken pipe again while releasing
            # the container): nothing is left to save then
            if not (self.reader_gone or isinstance(exc, BrokenPipeError)
                    or isinstance(exc.__cause__ or exc.__context__, BrokenPipeError)):
                raise
            self.reader_gone = True
