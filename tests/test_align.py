"""Audio features aligned to video frames: a click lands on the right frame at 25 and 30 fps; length mismatch
handling; the stage writes consistent files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from talkinghead import schemas
from talkinghead.paths import PresenterPaths
from talkinghead.errors import InputError
from talkinghead.stages.align import (AlignParams, align_presenter, features_for_audio, fit_length,
                                      frame_center_hops)

from configs import project_config

RATE = 16000
PARAMS = project_config(AlignParams, "align", encoder="mel")  # the log-mel baseline: its hops are 10 ms, which these tests count


def click_audio(n_frames: int, fps: float, click_s: float, seed: int = 0) -> np.ndarray:
    """Near-silence with a 2 ms broadband click starting at ``click_s``."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0, 1e-4, int(round(n_frames / fps * RATE))).astype(np.float32)
    i = int(click_s * RATE)
    samples[i:i + 32] += rng.normal(0, 0.5, 32).astype(np.float32)
    return samples


@pytest.mark.parametrize("fps", [25, 30])
@pytest.mark.parametrize("position", [0.5, 0.2, 0.8])  # where inside the frame's display interval the click falls
def test_click_lands_on_its_frame(fps, position):
    n = 3 * fps
    k = 37
    feats = features_for_audio(click_audio(n, fps, (k + position) / fps), n, fps, PARAMS)
    assert feats.shape == (n, PARAMS.context, 80) and feats.dtype == np.float32
    centre = feats[:, PARAMS.context_hops].mean(axis=1)  # energy of each frame's centre hop [N]
    assert int(np.argmax(centre)) == k
    # inside frame k's context the click sits where its time says
    click_hop = (k + position) / fps * 100 + 32 / RATE * 100 / 2
    expected_slot = int(round(click_hop - frame_center_hops(n, fps, PARAMS)[k])) + PARAMS.context_hops
    assert abs(int(np.argmax(feats[k].mean(axis=1))) - expected_slot) <= 1


def test_features_are_normalised_per_utterance():
    rng = np.random.default_rng(1)
    samples = rng.normal(0, 0.1, RATE * 4).astype(np.float32)
    a = features_for_audio(samples, 100, 25, PARAMS)
    b = features_for_audio(samples * 10, 100, 25, PARAMS)  # louder recording, same features
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert np.isfinite(features_for_audio(np.zeros(RATE * 2, np.float32), 50, 25, PARAMS)).all()


def test_length_mismatch():
    fps, n = 25, 100
    exact = np.zeros(RATE * 4, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # up to one frame: silent
        assert len(fit_length(exact[:-600], n, fps, 0.5, "a.wav")) == RATE * 4
        assert len(fit_length(np.zeros(RATE * 4 + 600, np.float32), n, fps, 0.5, "a.wav")) == RATE * 4
    with pytest.warns(UserWarning, match="differ"):
        assert len(fit_length(exact[:-3200], n, fps, 0.5, "a.wav")) == RATE * 4
    with pytest.raises(InputError, match="a.wav"):
        fit_length(exact[:RATE], n, fps, 0.5, "a.wav")


def test_align_presenter_on_synthetic_folder(tmp_path):
    from test_lip import synthetic_presenter

    interim = synthetic_presenter(tmp_path, "synth", seconds=6.0, fps=30)
    feats, table, metrics = align_presenter(PresenterPaths.from_folder(interim),
                                            project_config(AlignParams, "align", encoder="mel", context_hops=4))
    assert feats.shape == (180, 9, 80)
    assert (metrics["frames"], metrics["encoder"], metrics["context"], metrics["feature_dim"]) == (180, "mel", 9, 80)
    assert metrics["video_s"] == pytest.approx(6.0)
    assert metrics["audio_minus_video_s"] == pytest.approx(metrics["audio_s"] - 6.0)
    assert abs(metrics["audio_minus_video_s"]) < 1 / 30 and metrics["seconds_per_10s_audio"] > 0
    assert table["frame"].tolist() == list(range(180))
    schemas.write_table(table, interim / "features.parquet", schemas.FEATURES)
    assert schemas.read_table(interim / "features.parquet", schemas.FEATURES)["center_hop"].iloc[10] == \
        round(10.5 / 30 * 100)
