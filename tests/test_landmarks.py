"""landmarks stage: gap filling, lag-free smoothing of the upper face only, the stage on a generated clip and on the
shared real clips (katiehill: all 200 frames; portrait_demo1: small face in 1080x1920)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from talkinghead.schemas import FRAMES, read_table
from talkinghead.stages import extract as ex
from talkinghead.video import ExtractParams
from talkinghead.stages import landmarks as lm

from configs import project_config


@pytest.fixture(scope="module")
def params():
    return project_config(lm.LandmarksParams, "landmarks"), project_config(ExtractParams, "extract")


def test_fill_gaps_interpolates_between_detections_and_holds_ends():
    points = np.zeros((6, 2, 3), np.float32)
    points[1], points[4] = 1.0, 4.0
    detected = np.array([False, True, False, False, True, False])
    filled = lm.fill_gaps(points.copy(), detected)
    assert filled[:, 0, 0].tolist() == pytest.approx([1, 1, 2, 3, 4, 4])


def test_smoothing_touches_only_the_upper_face_and_does_not_lag():
    fps, n = 25.0, 100
    t = np.arange(n) / fps
    rng = np.random.default_rng(0)
    base = np.zeros((478, 3), np.float32)
    base[:, 1] = np.linspace(0, 1, 478)  # point i at height i / 477 (y down)
    base[lm.NOSE_TIP, 1] = 0.5
    motion = 0.05 * np.sin(2 * np.pi * 1.0 * t)  # slow head motion: 1 Hz, well below the cutoff
    points = base[None] + motion[:, None, None] + rng.normal(0, 0.01, (n, 478, 3)).astype(np.float32)
    smoothed = lm.smooth_upper_face(points, fps, 6.0)
    upper = base[:, 1] < 0.5
    assert np.array_equal(smoothed[:, ~upper], points[:, ~upper])  # mouth / jaw untouched
    noise_before = np.std(points[:, upper, 0] - motion[:, None])
    noise_after = np.std(smoothed[:, upper, 0] - motion[:, None])
    assert noise_after < 0.8 * noise_before
    lag = np.argmax(np.correlate(smoothed[:, upper, 0].mean(1), motion, "full")) - (n - 1)
    assert lag == 0  # zero phase


def test_stage_smoke_on_generated_clip(tiny_video, tmp_path, monkeypatch, fake_tracking):
    logged = fake_tracking
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    interim = tmp_path / "data" / "interim" / "tiny"
    ex.extract(tiny_video(seconds=3.2), interim, project_config(ExtractParams, "extract"))
    lm.main([str(interim)])
    result = lm.read_landmarks(interim / "landmarks.parquet")
    frames = read_table(interim / "frames.parquet", FRAMES)
    assert result.lmk_crop.shape == (80, 478, 3) and result.detection_rate >= 0.95
    assert logged["presenter"] == "tiny" and logged["detection_rate"] == result.detection_rate
    metrics = json.loads((tmp_path / "reports" / "landmarks" / "tiny" / "metrics.json").read_text())
    assert metrics["detection_rate"] == result.detection_rate
    # crop -> original pixel mapping through the stored crop box
    scale = frames["crop_side"].to_numpy()[:, None] / 256
    assert np.allclose(result.lmk_orig[:, :, 0], frames["crop_x0"].to_numpy()[:, None] + result.lmk_crop[:, :, 0] * scale,
                       atol=1e-3)
    # the face is in the middle of the crop, its points spread over a good part of it
    assert np.all(np.abs(result.lmk_crop[:, :, :2].mean(1) - 128) < 40)
    assert np.ptp(result.lmk_crop[0, :, 0]) > 60


def test_stage_errors_when_no_face_in_any_crop(tmp_path, params):
    from talkinghead.schemas import write_table
    from talkinghead.tensorfile import save_tensor
    from talkinghead.errors import InputError
    import pandas as pd

    interim = tmp_path / "blank"
    n = 5
    save_tensor(interim / "frames.npy", np.full((n, 64, 64, 3), 127, np.uint8))
    write_table(pd.DataFrame({"frame": np.arange(n), "time_s": np.arange(n) / 25.0,
                              "source_time_s": np.arange(n) / 25.0, "crop_x0": 0.0, "crop_y0": 0.0,
                              "crop_side": 64.0, "orig_width": 64, "orig_height": 64, "fps": 25.0}),
                interim / "frames.parquet", FRAMES)
    with pytest.raises(InputError, match="frames.npy: FaceMesh found no face"):
        lm.compute_landmarks(interim, params[0])
    assert not (interim / "landmarks.parquet").exists()


@pytest.mark.real_media
def test_real_katiehill_200_frames_all_with_landmarks(media_dir, tmp_path, params):
    video = media_dir / "video" / "hdtf_katiehill.mp4"
    if not video.exists():
        pytest.skip(f"{video} absent")
    result = ex.extract(video, tmp_path / "kh", params[1])
    marks = lm.compute_landmarks(tmp_path / "kh", params[0])
    assert result.n_frames == 200 and marks.detected.sum() == 200


@pytest.mark.real_media
def test_real_portrait_small_face_found_in_95_percent(media_dir, tmp_path, params):
    video = media_dir / "video" / "portrait_demo1.mp4"
    if not video.exists():
        pytest.skip(f"{video} absent")
    result = ex.extract(video, tmp_path / "p1", params[1], max_seconds=2.0)
    marks = lm.compute_landmarks(tmp_path / "p1", params[0])
    assert result.detection_rate >= 0.95 and marks.detection_rate >= 0.95
    frames = read_table(tmp_path / "p1" / "frames.parquet", FRAMES)
    assert (frames["orig_width"].iloc[0], frames["orig_height"].iloc[0]) == (1080, 1920)
    assert frames["crop_side"].median() < 700  # a face crop, not the whole frame
