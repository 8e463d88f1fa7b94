"""Shared fixtures.

``tiny_video(**options) -> Path`` writes a short H.264 + AAC mp4 of a real face photo (skimage's public-domain
astronaut) moving a little over a plain background, into the test's tmp_path. Options (all optional):
  name="video.mp4", seconds=4.0, fps=25.0, size=(width, height)=(256, 256),
  faces=(0.4,)  face box side(s) as a fraction of min(width, height); () = no face, (0.3, 0.3) = two faces,
  rotation=0    display-matrix rotation (counter-clockwise degrees; pixels stored turned, like a phone),
  audio="tone"  "tone" (voiced, syllable-modulated), "noise", "silent" or None (no audio track),
  audio_rate=44100, vfr=False (irregular frame timestamps), seed=0, faststart=False (mp4 index first).

``truncated_video(share, **options) -> Path`` is such a clip with its index first (faststart), cut off at the packet
boundary nearest ``share`` of its bytes, as an interrupted download or copy leaves it: it opens and decodes, but only
its first part, while its header still declares the whole length.

``media_dir`` is ../shared/media (skips the test when absent).

``tiny_presenter`` is the project folder of a ~3 s generated presenter through extract, landmarks and fit with tiny
checkpoints (tests/tiny_project.py), built once per test run: speak, evaluate, stream and the app tests share it, so
they must only add files to it, never change or remove what it was built with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from talkinghead.benchmarks.ingest import synthetic_face_clip

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


@pytest.fixture
def tiny_video(tmp_path):
    def make(name: str = "video.mp4", **options) -> Path:
        return synthetic_face_clip(tmp_path / name, **options)

    return make


@pytest.fixture
def truncated_video(tiny_video):
    def make(share: float, name: str = "truncated.mp4", **options) -> Path:
        import av

        full = tiny_video("full_" + name, faststart=True, **options)
        with av.open(str(full)) as container:
            ends = [p.pos + p.size for p in container.demux() if p.pos is not None and p.size]
        data = full.read_bytes()
        # a cut inside a packet makes the decoder refuse the whole file; at a boundary it decodes the frames before
        cut = min(ends, key=lambda end: abs(end - share * len(data)))
        path = full.with_name(name)
        path.write_bytes(data[:cut])
        return path

    return make


@pytest.fixture
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"shared media folder {MEDIA} is absent")
    return MEDIA


@pytest.fixture
def fake_tracking(monkeypatch):
    """Replace tracking.stage_run with a recorder: the dict it returns collects the stage, presenter and metrics."""
    import contextlib

    import talkinghead.tracking as tracking

    logged: dict = {}

    class FakeRun:
        def log_metrics(self, metrics, step=None):
            logged.update(metrics)

    @contextlib.contextmanager
    def fake_stage_run(stage, presenter=None, params=None):
        logged["stage"], logged["presenter"] = stage, presenter
        yield FakeRun()

    monkeypatch.setattr(tracking, "stage_run", fake_stage_run)
    return logged


@pytest.fixture
def one_torch_thread():
    """One torch thread: on the shared 2-core machine two threads stall each other (OpenMP barriers)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_presenter(tmp_path_factory) -> Path:
    from tiny_project import build_tiny_presenter

    return build_tiny_presenter(tmp_path_factory.mktemp("tiny_project"))
