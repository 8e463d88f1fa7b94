"""MediaPipe FaceMesh and face detection: the one place the pipeline imports mediapipe, with its log noise off.

MediaPipe 0.10 prints, per graph it starts, from C++ (absl logging before absl::InitializeLog and TFLite):

    INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    W0000 00:00:1795685530.751205   15571 inference_feedback_manager.cc:114] Feedback manager requires ...

and protobuf warns ``SymbolDatabase.GetPrototype() is deprecated`` from Python on its first ``process``. Neither can
be switched off by environment: GLOG_minloglevel / TF_CPP_MIN_LOG_LEVEL do not reach absl's pre-init logging, and
its SetMinLogLevel is not exported. So:
- the protobuf warning gets a warnings filter for exactly that message;
- the C++ lines are written while a graph starts (asynchronously, from the constructor until the first ``process``
  returns): for that span stderr's file descriptor points at a temporary file, and afterwards every line of it except
  the known start-up chatter above is copied back to stderr (errors, tracebacks and Python output written meanwhile
  are kept, only delayed). Graphs starting at the same time (evaluate's trackers, landmarks' worker threads) share
  one such span.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Any, Callable

# Start-up chatter to drop: absl INFO/WARNING lines (severity letter, MMDD or 0000, time, thread, file:line]),
# absl's pre-init notice and TFLite's delegate notice. Errors (E..../F....) stay.
NOISE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] "
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|INFO: Created TensorFlow Lite XNNPACK delegate)")
PROTOBUF_WARNING = r"SymbolDatabase\.GetPrototype\(\) is deprecated"


def drop_noise(text: bytes) -> bytes:
    """``text`` without its MediaPipe start-up lines (see NOISE)."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


class _StartupFilter:
    """Process-wide, reference-counted: while any graph is starting, fd 2 goes to a temporary file; when the last one
    has started, fd 2 is restored and the file's lines, less the noise, are written to it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0
        self.saved_fd: int | None = None
        self.capture: Any = None

    def acquire(self) -> None:
        with self.lock:
            self.users += 1
            if self.users > 1:
                return
            try:
                _flush_stderr()
                self.capture = tempfile.TemporaryFile()
                self.saved_fd = os.dup(2)
                os.dup2(self.capture.fileno(), 2)
            except OSError:  # no usable fd 2 (closed, a daemon): nothing to filter, then
                self._reset()

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users > 0 or self.saved_fd is None:
                self.users = max(self.users, 0)
                return
            _flush_stderr()
            os.dup2(self.saved_fd, 2)
            self.capture.seek(0)
            kept = drop_noise(self.capture.read())
            if kept:
                os.write(2, kept)
            self._reset()

    def _reset(self) -> None:
        if self.saved_fd is not None:
            os.close(self.saved_fd)
        if self.capture is not None:
            self.capture.close()
        self.saved_fd, self.capture = None, None


def _flush_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


_STARTUP = _StartupFilter()


class QuietSolution:
    """A MediaPipe solution (``process``, ``close``, context manager) whose graph start-up output is filtered."""

    def __init__(self, factory: Callable[..., Any], **options: Any):
        _STARTUP.acquire()
        self._starting = True
        try:
            self._solution = factory(**options)
        except BaseException:
            self._started()
            raise

    def _started(self) -> None:
        if self._starting:
            self._starting = False
            _STARTUP.release()

    def process(self, image):
        try:
            return self._solution.process(image)
        finally:  # the graph has opened by the time the first result is back
            self._started()

    def close(self) -> None:
        try:
            self._solution.close()
        finally:
            self._started()

    def __del__(self) -> None:  # never processed nor closed: give stderr back anyway
        if getattr(self, "_starting", False):
            self._started()

    def __enter__(self) -> "QuietSolution":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mediapipe_solutions():
    """``mediapipe.solutions``, with protobuf's deprecation warning (raised inside MediaPipe) filtered."""
    # set on every call: pytest and warnings.catch_warnings restore the filter list afterwards
    warnings.filterwarnings("ignore", message=PROTOBUF_WARNING, category=UserWarning)
    import mediapipe

    return mediapipe.solutions


def face_mesh(**options: Any) -> QuietSolution:
    """``mediapipe.solutions.face_mesh.FaceMesh(**options)``, quiet."""
    return QuietSolution(mediapipe_solutions().face_mesh.FaceMesh, **options)


def face_detection(**options: Any) -> QuietSolution:
    """``mediapipe.solutions.face_detection.FaceDetection(**options)``, quiet."""
    return QuietSolution(mediapipe_solutions().face_detection.FaceDetection, **options)
