"""Footage audio-video sync (talkinghead.avsync, talkinghead.sync_detector, stages sync_model and sync): the detector
finds a known delay, applies only what it can see, and align then reads the sound on the picture's clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talkinghead.avsync import read_sync, to_video_clock
from talkinghead.errors import InputError, SchemaError
from talkinghead.split import time_split
from talkinghead.sync_detector import SyncParams, estimate_offset, fit_detector

from configs import write_project_params
from test_crossdrive import write_landmarks
from test_lip import RATE, synthetic_presenter

PARAMS = SyncParams(presenter="gen", max_lag=5, min_r=0.2, validation_fraction=0.1)


def test_video_clock_moves_late_sound_earlier_and_keeps_the_length():
    samples = np.arange(1.0, 16001.0, dtype=np.float32)  # 1 s at 16 kHz
    late = to_video_clock(samples, 2, fps=25.0)  # 2 frames = 80 ms = 1280 samples
    assert len(late) == len(samples) and late[0] == samples[1280] and (late[-1280:] == 0).all()
    early = to_video_clock(samples, -2, fps=25.0)
    assert len(early) == len(samples) and (early[:1280] == 0).all() and early[1280] == samples[0]
    assert np.array_equal(to_video_clock(samples, 0, fps=25.0), samples)


def smooth_signals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, 3, 4] and a mouth opening [n] that is the same linear function of them for every seed, plus
    noise."""
    rng = np.random.default_rng(seed)
    kernel = np.hanning(7) / np.hanning(7).sum()
    base = np.stack([np.convolve(rng.normal(size=n), kernel, "same") for _ in range(12)], 1)  # [n, 12]
    features = base.reshape(n, 3, 4).astype(np.float32)  # [n, 12] -> [n, 3, 4]
    mouth_of_sound = np.random.default_rng(99).normal(size=12)  # one articulation for every recording
    opening = base @ mouth_of_sound + 0.1 * rng.normal(size=n)
    return features, opening


@pytest.mark.parametrize("late", [3, -2, 0])
def test_the_detector_finds_a_known_offset(late):
    features, opening = smooth_signals(1200, seed=0)
    detector = fit_detector(features, opening, time_split(1200, 0.2, 0.1), "test")
    assert detector.fit_r > 0.9
    # a recording whose mouth moves `late` frames before its sound: the mouth at t shows the sound at t + late
    test_features, test_opening = smooth_signals(600, seed=1)
    mouth = np.roll(test_opening, -late)
    estimate = estimate_offset(detector, test_features, mouth, 25.0, PARAMS)
    assert estimate.measured_lag == late and estimate.offset_frames == late
    assert estimate.applied == (late != 0) and estimate.offset_s == pytest.approx(late / 25.0)
    assert estimate.r_at_lag > 0.9 and estimate.curve[late] == estimate.r_at_lag


def test_a_mouth_the_detector_cannot_follow_keeps_its_audio():
    features, opening = smooth_signals(1200, seed=0)
    detector = fit_detector(features, opening, time_split(1200, 0.2, 0.1), "test")
    noise = np.random.default_rng(5).normal(size=600)
    estimate = estimate_offset(detector, features[:600], noise, 25.0, PARAMS)
    assert not estimate.applied and estimate.offset_frames == 0 and "sync.min_r" in estimate.reason
    short = estimate_offset(detector, features[:8], opening[:8], 25.0, PARAMS)
    assert not short.applied and "too few" in short.reason


def test_sync_json_is_validated(tmp_path):
    path = tmp_path / "sync.json"
    with pytest.raises(InputError, match="missing; run the sync stage"):
        read_sync(path)
    path.write_text("{not json")
    with pytest.raises(SchemaError, match="not readable JSON"):
        read_sync(path)
    path.write_text(json.dumps({"offset_frames": 1.5}))
    with pytest.raises(SchemaError, match="integer offset_frames"):
        read_sync(path)


def test_stage_smoke_a_late_recording_is_measured_and_align_corrects_it(tmp_path, monkeypatch):
    """sync_model on a generated presenter, sync on a recording whose sound was delayed by 3 frames, then align."""
    from talkinghead.audio import read_wav, write_wav
    from talkinghead.paths import PresenterPaths
    from talkinghead.stages import align, sync, sync_model
    from talkinghead.lipmetrics import best_lag, lagged_correlations
    from talkinghead.params import load_config
    from talkinghead.speech.features import AlignParams
    from talkinghead.sync_detector import SyncDetector, footage_signals
    from talkinghead.tensorfile import load_tensor

    write_project_params(tmp_path, presenters=["gen", "late"], align={"encoder": "mel"}, sync={"presenter": "gen"})
    for seed, name in enumerate(("gen", "late")):
        write_landmarks(synthetic_presenter(tmp_path, name, seconds=30.0, seed=seed), 30.0, 25, seed)
    (tmp_path / "data/raw/gen").mkdir(parents=True)
    (tmp_path / "data/raw/gen/visemes.parquet").write_bytes(b"generated")  # only its presence marks a generated face
    wav = tmp_path / "data/interim/late/audio.wav"
    samples, _ = read_wav(wav)
    write_wav(wav, np.concatenate([np.zeros(3 * 640, np.float32), samples[:-3 * 640]]), RATE)  # sound 3 frames late
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    sync_model.main(["data/interim/gen"])
    assert json.loads(Path("reports/sync_model/metrics.json").read_text())["validation_r"] > 0.8
    sync.main(["data/interim/gen"])
    assert read_sync("data/interim/gen/sync.json")["reason"].startswith("generated presenter")
    sync.main(["data/interim/late"])
    measured = read_sync("data/interim/late/sync.json")
    assert measured["offset_frames"] == 3 and measured["applied"] and measured["measured_lag"] == 3
    assert json.loads(Path("reports/sync/late/metrics.json").read_text())["offset_frames"] == 3

    align.main(["data/interim/late"])  # reads the audio 3 frames earlier: the detector now peaks at lag 0
    paths = PresenterPaths.of("late")
    features = np.asarray(load_tensor(paths.features, np.float32, (None, None)))
    opening = footage_signals(paths, load_config(AlignParams, "align")).opening
    curve = lagged_correlations(opening, SyncDetector.load("models/sync/detector.npz").predict(features), 5)
    assert best_lag(curve) == 0
    assert json.loads(Path("reports/align/late/metrics.json").read_text())["sync_offset_frames"] == 3

    # a detector fitted on other features than params' align.encoder: refused, naming the detector
    write_project_params(tmp_path, presenters=["gen", "late"], align={"encoder": "whisper"}, sync={"presenter": "gen"})
    with pytest.raises(InputError, match="detector.npz: fitted on align.encoder 'mel'"):
        sync.measure(paths, Path("models/sync/detector.npz"), PARAMS, load_config(AlignParams, "align"), 0.2)
    write_project_params(tmp_path, presenters=["gen", "late"], align={"encoder": "mel"}, sync={"presenter": "gen"})

    # bad input: one clear error naming the file, exit 2, nothing written
    Path("models/sync/detector.npz").write_bytes(b"not a detector")
    before = Path("data/interim/late/sync.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        sync.main(["data/interim/late"])
    assert exit_info.value.code == 2 and Path("data/interim/late/sync.json").read_text() == before
    with pytest.raises(SystemExit) as exit_info:
        sync_model.main(["data/interim/late"])  # not a generated presenter
    assert exit_info.value.code == 2
