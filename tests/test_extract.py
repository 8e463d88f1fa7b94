"""extract stage: timeline resampling, face tracks, crop smoothing, the stage on generated clips (25/30 fps, VFR,
rotation, small face in portrait video), every kind of bad input, and the shared real clips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkinghead.audio import decode_audio, read_wav, write_wav
from talkinghead import facedetect as fd
from talkinghead.errors import InputError
from talkinghead.schemas import FRAMES, read_table
from talkinghead.stages import extract as ex
from talkinghead.tensorfile import load_tensor
from talkinghead.video import ExtractParams, VideoReader, constant_fps_timeline, probe_video

from configs import project_config


@pytest.fixture(scope="module")
def params():
    return project_config(ExtractParams, "extract")


def _face_centres(frames: np.ndarray) -> np.ndarray:
    """Centres (x, y) of the largest face found in each crop, in crop pixels."""
    centres = []
    with fd.FaceDetector(0.5) as detector:
        for frame in frames:
            boxes = detector.detect(frame)
            assert len(boxes), "no face in the crop"
            b = boxes[np.argmax(boxes[:, 2])]
            centres.append((b[0] + b[2] / 2, b[1] + b[3] / 2))
    return np.asarray(centres)


# ----------------------------------------------------------------------------------------------------- pure functions
def test_timeline_resamples_30_to_25_fps_by_nearest_frame():
    times = np.arange(90) / 30.0  # 3 s at 30 fps
    out, idx = constant_fps_timeline(times, 25.0)
    assert len(out) == 75
    assert np.all(np.abs(times[idx] - out) <= 0.5 / 30 + 1e-9)
    assert np.all(np.diff(idx) >= 0)


def test_timeline_nearest_frame_for_variable_frame_rate():
    rng = np.random.default_rng(1)
    times = np.concatenate([[0.0], np.cumsum(rng.uniform(0.02, 0.06, 99))])
    out, idx = constant_fps_timeline(times, 25.0)
    for t, i in zip(out, idx):
        assert abs(times[i] - t) == pytest.approx(np.min(np.abs(times - t)))


def _box(x, side=50.0, score=0.9):
    return np.array([x, 100.0, side, side, score], np.float32)


def test_choose_track_largest_with_warning_and_ambiguous_error(tmp_path):
    big_small = [np.stack([_box(10, 80), _box(300, 30)]) for _ in range(10)]
    track, warnings = fd.choose_track(fd.link_tracks(big_small), 10, tmp_path / "v.mp4")
    assert np.median([b[2] for b in track.boxes]) == 80 and warnings and "largest" in warnings[0]
    similar = [np.stack([_box(10, 60), _box(300, 58)]) for _ in range(10)]
    with pytest.raises(InputError, match="similar size"):
        fd.choose_track(fd.link_tracks(similar), 10, tmp_path / "v.mp4")
    with pytest.raises(InputError, match="no face"):
        fd.choose_track(fd.link_tracks([np.zeros((0, 5), np.float32)] * 5), 5, tmp_path / "v.mp4")


def test_link_tracks_follows_a_moving_face():
    detections = [np.stack([_box(10 + 5 * i)]) for i in range(20)]
    tracks = fd.link_tracks(detections)
    assert len(tracks) == 1 and len(tracks[0].steps) == 20


def test_crop_boxes_are_smooth_and_inside_the_frame():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 100, 5)
    track = fd.FaceTrack(steps=list(range(len(steps))),
                         boxes=[np.array([200 + rng.normal(0, 8), 20 + rng.normal(0, 8), 100, 100, 1.0])
                                for _ in steps])
    boxes = fd.smooth_crop_boxes(track, steps, 100, 25.0, 640, 360, 2.0, 1.0)
    assert boxes.shape == (100, 3)
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
    assert np.all(boxes[:, 0] + boxes[:, 2] <= 640) and np.all(boxes[:, 1] + boxes[:, 2] <= 360)
    # the face stands still at x0 = 150 (centre 250, side 200): smoothing must beat plain interpolation of the noise
    interpolated = np.interp(np.arange(100), steps, [b[0] + b[2] / 2 for b in track.boxes]) - 100
    assert np.std(boxes[:, 0] - 150) < 0.6 * np.std(interpolated - 150)
    assert np.all(boxes[:, 2] == 200)


def test_align_audio_pads_and_trims():
    samples = np.ones(16000, np.float32)
    out = ex.align_audio(samples, 0.5, 30, 25.0, 16000)  # 1.2 s wanted from 0.5 s: 0.5 s of audio + 0.7 s zeros
    assert len(out) == 19200 and out[:8000].min() == 1 and out[8000:].max() == 0


# ------------------------------------------------------------------------------------------------ stage on fixtures
def test_stage_smoke_25fps(tiny_video, tmp_path, params):
    video = tiny_video(seconds=3.2, fps=25)
    result = ex.extract(video, tmp_path / "interim" / "tiny", params)
    table = read_table(tmp_path / "interim" / "tiny" / "frames.parquet", FRAMES)
    frames = load_tensor(tmp_path / "interim" / "tiny" / "frames.npy", np.uint8, (256, 256, 3), n=len(table))
    assert result.n_frames == len(table) == 80 and result.fps == 25
    assert np.allclose(table["time_s"], np.arange(80) / 25)
    samples, rate = read_wav(tmp_path / "interim" / "tiny" / "audio.wav")
    assert rate == 16000 and len(samples) == 3.2 * 16000
    assert result.detection_rate == 1.0 and not result.warnings
    centres = _face_centres(frames[::25])
    assert np.all(np.abs(centres - 128) < 20)  # the face is centred in the crop
    assert frames.std() > 10


def test_stage_30fps_and_variable_frame_rate(tiny_video, tmp_path, params):
    result = ex.extract(tiny_video("thirty.mp4", seconds=3.2, fps=30), tmp_path / "a", params)
    assert result.fps == 30 and result.n_frames == 96
    vfr = tiny_video("vfr.mp4", seconds=3.2, fps=30, vfr=True)
    result = ex.extract(vfr, tmp_path / "b", params)
    table = read_table(tmp_path / "b" / "frames.parquet", FRAMES)
    info = probe_video(vfr)
    assert result.fps == round(info.fps)
    gap = np.abs(table["source_time_s"] - table["time_s"])  # nearest source frame: within one source interval
    assert gap.max() <= 1.5 / 30 / 2 + 1e-3


def test_stage_rotation_metadata_gives_upright_crops(tiny_video, tmp_path, params):
    upright = ex.extract(tiny_video("up.mp4", size=(320, 240), seconds=3.2), tmp_path / "up", params)
    rotated = ex.extract(tiny_video("rot.mp4", size=(320, 240), seconds=3.2, rotation=90), tmp_path / "rot", params)
    table = read_table(tmp_path / "rot" / "frames.parquet", FRAMES)
    assert (table["orig_width"].iloc[0], table["orig_height"].iloc[0]) == (320, 240)
    a = load_tensor(tmp_path / "up" / "frames.npy").astype(np.float32)
    b = load_tensor(tmp_path / "rot" / "frames.npy").astype(np.float32)
    assert upright.n_frames == rotated.n_frames
    assert np.abs(a - b).mean() < 12  # same upright content (up to coding noise)
    assert np.abs(a - np.rot90(b, 1, axes=(1, 2))).mean() > 2 * np.abs(a - b).mean()


def test_stage_small_face_in_portrait_video(tiny_video, tmp_path, params):
    video = tiny_video("portrait.mp4", size=(270, 480), faces=(0.12,), seconds=3.2)  # ~32 px face in 270x480
    result = ex.extract(video, tmp_path / "p", params)
    assert result.detection_rate >= 0.9
    table = read_table(tmp_path / "p" / "frames.parquet", FRAMES)
    cx = table["crop_x0"] + table["crop_side"] / 2
    cy = table["crop_y0"] + table["crop_side"] / 2
    assert np.all(np.abs(cx - 135) < 15) and np.all(np.abs(cy - 0.33 * 480) < 15)
    assert table["crop_side"].median() < 120  # a face crop, not the whole frame


def test_stage_two_faces_largest_wins_with_warning(tiny_video, tmp_path, params):
    result = ex.extract(tiny_video(faces=(0.3, 0.14), seconds=3.2), tmp_path / "two", params)
    assert any("faces" in w for w in result.warnings)
    table = read_table(tmp_path / "two" / "frames.parquet", FRAMES)
    assert np.all(np.abs(table["crop_x0"] + table["crop_side"] / 2 - 0.27 * 256) < 15)  # the left, larger face


def test_stage_cli_writes_outputs_and_metrics(tiny_video, tmp_path, monkeypatch, fake_tracking):
    import shutil
    from pathlib import Path

    logged = fake_tracking
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    raw = tmp_path / "data" / "raw" / "tiny"
    raw.mkdir(parents=True)
    tiny_video("video.mp4", seconds=3.2).rename(raw / "video.mp4")
    monkeypatch.chdir(tmp_path)
    ex.main(["data/raw/tiny", "data/interim/tiny"])
    assert logged["presenter"] == "tiny" and logged["frames"] == 80
    assert (tmp_path / "data" / "interim" / "tiny" / "frames.npy").exists()
    metrics = json.loads((tmp_path / "reports" / "extract" / "tiny" / "metrics.json").read_text())
    assert metrics["face_detection_rate"] == 1.0
    raw_bad = tmp_path / "data" / "raw" / "bad"
    raw_bad.mkdir(parents=True)
    (raw_bad / "video.mp4").write_bytes(b"not a video")
    with pytest.raises(SystemExit) as exit_info:
        ex.main(["data/raw/bad", "data/interim/bad"])
    assert exit_info.value.code == 2


# ------------------------------------------------------------------------------------------------------- bad input
def _assert_untouched(interim, before: bytes):
    assert (interim / "frames.npy").read_bytes() == before
    assert not (interim / "frames.parquet").exists() and not (interim / "audio.wav").exists()
    assert not [p for p in interim.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.fixture
def old_output(tmp_path):
    """An interim folder holding a previous frames.npy, which a failed run must leave as it was."""
    interim = tmp_path / "interim" / "x"
    interim.mkdir(parents=True)
    (interim / "frames.npy").write_bytes(b"previous result")
    return interim


def test_bad_corrupt_file(tmp_path, old_output, params):
    video = tmp_path / "corrupt.mp4"
    video.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(InputError, match="corrupt.mp4: not a readable video"):
        ex.extract(video, old_output, params)
    _assert_untouched(old_output, b"previous result")


@pytest.mark.parametrize("faststart", [False, True], ids=["index-at-end", "index-first"])
def test_bad_truncated_file(faststart, tiny_video, tmp_path, old_output, params):
    data = tiny_video(seconds=3.2, faststart=faststart).read_bytes()
    video = tmp_path / "truncated.mp4"
    video.write_bytes(data[: len(data) * 2 // 3])  # a download or copy cut off
    with pytest.raises(InputError, match="truncated.mp4: .*(not a readable|corrupt or truncated)"):
        ex.extract(video, old_output, params)
    _assert_untouched(old_output, b"previous result")


@pytest.mark.parametrize("share", [0.3, 0.6])
def test_bad_truncated_file_that_still_decodes(share, truncated_video, old_output, params):
    """Cut at a packet boundary, the file opens and decodes, just shorter than declared: about 2.4 s (below
    min_seconds) or 4.8 s (enough, but far short of the 8 s the header promises)."""
    with pytest.raises(InputError, match=r"truncated.mp4: truncated: only \d.\d\d s of the declared 8.00 s"):
        ex.extract(truncated_video(share, seconds=8.0), old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_bad_no_video_stream(tmp_path, old_output, params):
    audio_only = tmp_path / "speech.wav"
    write_wav(audio_only, 0.1 * np.sin(np.arange(16000 * 4) / 10.0), 16000)
    with pytest.raises(InputError, match="speech.wav: has no video stream"):
        ex.extract(audio_only, old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_bad_no_audio_track(tiny_video, old_output, params):
    with pytest.raises(InputError, match="video.mp4: has no audio track"):
        ex.extract(tiny_video(audio=None, seconds=3.2), old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_bad_no_face(tiny_video, old_output, params):
    with pytest.raises(InputError, match="video.mp4: no face"):
        ex.extract(tiny_video(faces=(), seconds=3.2), old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_bad_two_similar_faces(tiny_video, old_output, params):
    with pytest.raises(InputError, match="similar size"):
        ex.extract(tiny_video(faces=(0.3, 0.3), seconds=3.2), old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_bad_too_short(tiny_video, old_output, params):
    with pytest.raises(InputError, match="shorter than extract.min_seconds"):
        ex.extract(tiny_video(seconds=2.0), old_output, params)
    _assert_untouched(old_output, b"previous result")


def test_silent_audio_is_a_warning_only(tiny_video, tmp_path, params):
    result = ex.extract(tiny_video(audio="silent", seconds=3.2), tmp_path / "silent", params)
    assert any("silent" in w for w in result.warnings)
    assert (tmp_path / "silent" / "audio.wav").exists()


# ------------------------------------------------------------------------------------------------------ real media
@pytest.mark.real_media
def test_real_mead_48khz_audio_becomes_16khz_mono_of_clip_length(media_dir, tmp_path, params):
    video = media_dir / "video" / "mead_m003.mp4"
    if not video.exists():
        pytest.skip(f"{video} absent")
    assert probe_video(video).audio_rate == 48000
    result = ex.extract(video, tmp_path / "mead", params, max_seconds=1.0)  # the stage path, on the first second
    samples, rate = read_wav(tmp_path / "mead" / "audio.wav")
    assert rate == 16000 and len(samples) == result.n_frames / result.fps * 16000 == 16000
    assert np.abs(samples).max() > 0.01
    # the whole clip's audio under the whole timeline: 118 frames at 25 fps = 4.72 s
    reader = VideoReader(video)
    out_times, _ = constant_fps_timeline(reader.times, 25.0)
    full = ex.align_audio(decode_audio(video, 16000), float(out_times[0]), len(out_times), 25.0, 16000)
    assert len(out_times) == reader.n_frames == 118 and len(full) == round(4.72 * 16000)
