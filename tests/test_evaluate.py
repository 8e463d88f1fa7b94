"""evaluate: metrics on synthetic landmark tracks with known answers, outputs, and the HTML report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkinghead.gan.mouth_discriminator import mouth_crops
from talkinghead.stages.evaluate import (EvaluationResult, delayed, fill_gaps, lip_landmark_distance,
                                         lip_landmark_ids, sync_metrics, tail_audio, write_outputs)
from talkinghead.synthesis import INNER_LIP_PAIRS, mouth_opening_from_landmarks


def talking_track(n: int = 120, seed: int = 0) -> np.ndarray:
    """[n, 478, 2] landmark track: a random rest face drifting around, inner lips opening with a random signal."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(80, 180, (478, 2)).astype(np.float64)
    opening = np.convolve(rng.uniform(0, 12, n + 8), np.ones(5) / 5, mode="same")[4:-4]  # smooth, speech-like
    drift = np.cumsum(rng.normal(0, 0.5, (n, 2)), axis=0)  # head motion
    track = np.repeat(rest[None], n, axis=0) + drift[:, None, :]
    lower = [d for _, d in INNER_LIP_PAIRS]
    track[:, lower, 1] += opening[:, None]
    return track


def test_identical_tracks_give_perfect_scores():
    track = talking_track()
    m = sync_metrics(track, track.copy(), lip_landmark_ids(), scale=1.0, max_lag=5)
    assert m["mouth_opening_r"] == pytest.approx(1.0)
    assert m["av_offset"] == 0
    assert m["lmd"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("shift", [3, -2])
def test_shift_is_detected(shift):
    track = talking_track(seed=1)
    moved = delayed(track, shift) if shift > 0 else np.concatenate([track[-shift:], np.repeat(track[-1:], -shift, 0)])
    m = sync_metrics(track, moved, lip_landmark_ids(), scale=1.0, max_lag=5)
    assert m["av_offset"] == shift
    assert m["mouth_opening_r"] < 0.95


def test_lmd_ignores_head_position_and_scales():
    track = talking_track(seed=2)
    ids = lip_landmark_ids()
    assert lip_landmark_distance(track, track + np.array([7.0, -3.0]), ids) == pytest.approx(0.0, abs=1e-9)
    bumped = track.copy()
    bumped[:, ids, 0] += np.where(np.arange(len(ids)) % 2 == 0, 1.0, -1.0)  # +-1 px, zero mean: survives centring
    assert lip_landmark_distance(track, bumped, ids) == pytest.approx(1.0, abs=0.05)
    m = sync_metrics(track, bumped, ids, scale=2.0, max_lag=5)
    assert m["lmd"] == pytest.approx(2.0, abs=0.1)


def test_missing_faces_are_skipped_and_filled():
    track = talking_track(seed=3)
    holes = track.copy()
    holes[10:13] = np.nan
    ids = lip_landmark_ids()
    assert lip_landmark_distance(track, holes, ids) == pytest.approx(0.0, abs=1e-9)
    filled = fill_gaps(mouth_opening_from_landmarks(holes))
    assert np.isfinite(filled).all()
    assert sync_metrics(track, holes, ids, 1.0, 5)["av_offset"] == 0


def test_mouth_crops_and_tail_audio():
    images = np.zeros((2, 64, 64, 3), np.uint8)
    images[:, 30:40, 20:44] = 255
    out = mouth_crops(images, np.array([[20, 30, 44, 40], [-5, -5, 80, 80]], float), 24)
    # roi_align samples bilinearly: only the outermost samples of the exact box mix in the black around it
    assert out.shape == (2, 24, 24, 3) and out[0, 2:-2, 2:-2].min() == 255 and out[0].max() == 255
    assert out[1].max() == 255 and out[1, 0, 0].max() == 0  # a box beyond the image: black outside it
    samples = np.arange(16000 * 4, dtype=np.float32)
    tail = tail_audio(samples, 16000, 75, 100, 25.0)  # frames 75..99 at 25 fps = seconds 3..4
    assert len(tail) == 16000 and tail[0] == 48000
    assert len(tail_audio(samples, 16000, 90, 110, 25.0)) == 12800  # padded past the end


def test_write_outputs(tmp_path):
    frames = np.arange(100, 150)
    series = np.sin(frames / 4.0)
    metrics = {"frames": 50, "fps": 25.0, "model": {"lmd": 1.5, "mouth_opening_r": 0.8, "av_offset": 0,
                                                   "mouth_psnr": float("inf"), "mouth_ssim": 0.9}}
    write_outputs(EvaluationResult(metrics, series, series, frames), tmp_path, 25.0)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model"]["mouth_psnr"] is None and saved["model"]["lmd"] == 1.5
    assert (tmp_path / "mouth_opening.png").stat().st_size > 1000
    assert (tmp_path / "mouth_opening.csv").read_text().startswith("frame,time_s,real,generated")


def test_report_links_every_presenter_relatively(tmp_path):
    from talkinghead.report import write_report

    reports = tmp_path / "reports"
    series = np.sin(np.arange(50) / 4.0)
    metrics = {"frames": 50, "fps": 25.0, "model": {"lmd": 1.25, "mouth_opening_r": 0.8, "av_offset": 0},
               "baseline_static": {"lmd": 3.5, "mouth_opening_r": 0.1, "av_offset": 0}}
    write_outputs(EvaluationResult(metrics, series, series, np.arange(50)), reports / "eval" / "alice", 25.0)
    (reports / "fit" / "bob").mkdir(parents=True)
    (reports / "fit" / "bob" / "metrics.json").write_text(json.dumps({"fit_error": {"mean": 0.031}}))
    (reports / "demo").mkdir()
    (reports / "demo" / "demo.mp4").write_bytes(b"")
    text = write_report(reports).read_text()
    assert 'src="demo/demo.mp4"' in text and 'src="eval/alice/strip.png"' not in text  # no strip was written
    # the mouth-opening curve is drawn from its CSV, real and generated on one chart (the PNG is not repeated)
    assert "real video" in text and "generated (speak)" in text and text.count("<polyline") == 2
    assert 'src="eval/alice/mouth_opening.png"' not in text
    assert "baseline_static" in text and "1.25" in text and "fit_error.mean" in text and "0.031" in text
    assert "http://" not in text and "https://" not in text  # no external assets
