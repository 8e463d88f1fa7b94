"""Lip model: shapes, positional encoding, time split, DDP equivalence, early stop, metrics, inference windows.

Also runnable as a torchrun worker (``python tests/test_lip.py --ddp-worker OUT.json``) for the DDP test, and
exports ``synthetic_presenter`` (speech-like audio whose energy and formants drive a jaw/expression track).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from talkinghead import schemas
from talkinghead.audio import write_wav
from talkinghead.lip import LoadedLipModel, predict_with, window_starts
from talkinghead.lip.model import LipConfig, LipTransformer, sinusoidal_encoding, smooth_frames
from talkinghead.lip.trainer import (LipParams, PresenterData, evaluate, target_statistics, train, update_average,
                                     validation_segments)
from talkinghead.lipmetrics import av_offset, lagged_correlations, lve, pearson_r
from talkinghead.parallel import Distributed
from talkinghead.split import heldout_start, time_split
from talkinghead.speech.features import AlignParams, features_for_audio

from configs import project_config, project_group, write_project_params

RATE = 16000


# ----------------------------------------------------------------------------------------------- synthetic data
def synthetic_speech(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voiced 'syllables' with random pitch and vowel formants, separated by pauses.

    Returns samples float32 [T] at 16 kHz, and per-sample mouth opening and lip rounding [T] in [0, 1]: opening
    follows the syllable's energy envelope times its first formant (open vowels have high F1), rounding follows a low
    second formant -- so the targets are a function of the audio, as speech articulation is.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    samples = np.zeros(n, np.float32)
    opening = np.zeros(n, np.float32)
    rounding = np.zeros(n, np.float32)
    t = rng.uniform(0.05, 0.3)
    while t < seconds - 0.4:
        dur = rng.uniform(0.12, 0.3)
        i0, i1 = int(t * RATE), int((t + dur) * RATE)
        tt = np.arange(i1 - i0) / RATE
        env = np.sin(np.pi * tt / dur) ** 2 * rng.uniform(0.3, 1.0)  # Hann-shaped syllable envelope
        f0, f1, f2 = rng.uniform(100, 220), rng.uniform(300, 850), rng.uniform(800, 2300)
        harmonics = np.arange(1, int(4000 / f0))
        freqs = harmonics * f0
        weights = np.exp(-0.5 * ((freqs - f1) / 120) ** 2) + 0.6 * np.exp(-0.5 * ((freqs - f2) / 200) ** 2) + 0.02
        wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * tt[None, :])).sum(0)
        samples[i0:i1] += (0.3 * env * wave / np.abs(wave).max()).astype(np.float32)
        opening[i0:i1] = env * (f1 - 200) / 650
        rounding[i0:i1] = env * (2300 - f2) / 1500
        t += dur + (rng.uniform(0.2, 0.6) if rng.random() < 0.25 else rng.uniform(0.0, 0.05))
    samples += rng.normal(0, 0.002, n).astype(np.float32)
    return samples, opening, rounding


def synthetic_targets(opening: np.ndarray, rounding: np.ndarray, n_frames: int, fps: float,
                      seed: int = 0) -> np.ndarray:
    """53-d expression [N, 53] from the per-sample articulation: a few dims mix opening/rounding, jaw pitch
    (dim 50) opens with the mouth, the rest is small noise."""
    rng = np.random.default_rng(seed + 1)
    idx = np.clip(((np.arange(n_frames) + 0.5) / fps * RATE).astype(int), 0, len(opening) - 1)
    o, r = opening[idx], rounding[idx]
    expr = rng.normal(0, 0.02, (n_frames, schemas.N_EXPR_JAW)).astype(np.float32)
    mix = rng.normal(0, 1, (10, 2)).astype(np.float32)
    expr[:, :10] += np.stack([o, r], 1) @ mix.T
    expr[:, 50] = 0.25 * o
    expr[:, 51:] = 0.0
    return expr


def synthetic_presenter(root: Path, name: str = "synth", seconds: float = 60.0, fps: int = 25,
                        seed: int = 0) -> Path:
    """Write data/interim/NAME/{audio.wav, sync.json, frames.parquet, flame.parquet} under ``root`` (the sound in
    sync with the picture, as stage sync says of a generated presenter); returns the folder."""
    from talkinghead.atomic import json_safe, write_json
    from talkinghead.sync_detector import SyncEstimate

    interim = root / "data" / "interim" / name
    samples, opening, rounding = synthetic_speech(seconds, seed)
    n = int(round(seconds * fps))
    write_wav(interim / "audio.wav", samples, RATE)
    write_json(interim / "sync.json", json_safe(SyncEstimate.not_measured("synthetic test presenter").to_dict()))
    times = np.arange(n) / fps
    frames = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "time_s": times, "source_time_s": times,
                           "crop_x0": 0.0, "crop_y0": 0.0, "crop_side": 256.0, "orig_width": 256, "orig_height": 256,
                           "fps": float(fps)})
    schemas.write_table(frames, interim / "frames.parquet", schemas.FRAMES)
    expr = synthetic_targets(opening, rounding, n, fps, seed)
    zeros = lambda k: [np.zeros(k, np.float32)] * n  # noqa: E731
    flame = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "shape": zeros(schemas.N_SHAPE),
                          "expression": list(expr), "texture": zeros(schemas.N_TEXTURE),
                          "lighting": zeros(schemas.N_LIGHTING), "camera": [np.array([1, 0, 0], np.float32)] * n,
                          "pose": zeros(schemas.N_POSE), "fit_error": np.zeros(n, np.float32)})
    schemas.write_table(flame, interim / "flame.parquet", schemas.PARAMETERS)
    return interim


TINY_ALIGN = dict(encoder="mel", context_hops=1, n_mels=80)  # the align params of tiny_arrays' features


@functools.lru_cache(maxsize=1)
def tiny_arrays(seconds: float = 12.0, fps: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, 3, 80] and expression [N, 53] of a short synthetic presenter (context 3, for fast tests)."""
    samples, opening, rounding = synthetic_speech(seconds, seed)
    n = int(round(seconds * fps))
    feats = features_for_audio(samples, n, fps, project_config(AlignParams, "align", **TINY_ALIGN))
    return feats, synthetic_targets(opening, rounding, n, fps, seed)


def tiny_presenter(arrays: tuple[np.ndarray, np.ndarray] | None = None, name: str = "synth",
                   frames: int | None = None) -> PresenterData:
    feats, expr = arrays if arrays is not None else tiny_arrays()
    feats, expr = feats[:frames], expr[:frames]
    return PresenterData(name, feats, expr, np.zeros(schemas.N_SHAPE, np.float32), time_split(len(feats), 0.2, 0.1))


TINY = dict(n_context=3, n_mels=80, d_model=32, n_heads=2, ff_dim=64, n_layers=2, dropout=0.0, window=16,
            infer_stride=8)


def run_tiny(dist_info: Distributed | None, steps: int, target_loss: float = 0.0, eval_every: int = 1000,
             patience: int = 1000, arrays: tuple[np.ndarray, np.ndarray] | None = None,
             two_presenters: bool = False, name: str = "synth") -> tuple[list[float], object]:
    """Train the tiny model; ``two_presenters`` adds a short second presenter (other statistics, a validation slice
    shorter than a window), so the DDP test covers per-presenter standardisation too. Its checkpoint features are
    made with TINY_ALIGN."""
    torch.manual_seed(0)
    presenters = [tiny_presenter(arrays, name=name)]
    if two_presenters:
        presenters.append(tiny_presenter(arrays, name="short", frames=120))
        presenters[1].expression = presenters[1].expression * 2.0 + 0.5
    config = LipConfig(presenters=[p.name for p in presenters], **TINY)
    settings = project_config(LipParams, "lip", batch_size=8, lr=2e-3, warmup_steps=2, max_steps=steps, max_seconds=600,
                              eval_every=eval_every, patience=patience, target_loss=target_loss,
                              lip_vertex_weight=0.0, seed=0)
    losses: list[float] = []
    result = train(config, settings, presenters, None, dist_info,
                   on_log=lambda step, m: losses.append(m["loss"]), progress=False)
    return losses, result


# ------------------------------------------------------------------------------------------------------- tests
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_forward_shapes():
    config = LipConfig(presenters=["a", "b"], n_context=11, d_model=64, n_heads=4, ff_dim=128, n_layers=6)
    model = LipTransformer(config)
    out = model(torch.randn(3, 20, 11, 80), torch.tensor([0, 1, 0]))
    assert out.shape == (3, 20, 53)
    assert len(model.encoder.layers) == 6
    # the presenter embedding changes the output
    assert not torch.allclose(model.eval()(torch.zeros(1, 5, 11, 80), torch.tensor([0])),
                              model(torch.zeros(1, 5, 11, 80), torch.tensor([1])))


def test_positional_encoding_values():
    pe = sinusoidal_encoding(50, 16)
    assert pe.shape == (50, 16)
    torch.testing.assert_close(pe[0, 0::2], torch.zeros(8))  # sin(0)
    torch.testing.assert_close(pe[0, 1::2], torch.ones(8))  # cos(0)
    p, i = 7, 3
    freq = 1.0 / 10000 ** (2 * i / 16)
    assert math.isclose(pe[p, 2 * i].item(), math.sin(p * freq), abs_tol=1e-6)
    assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(p * freq), abs_tol=1e-6)
    torch.testing.assert_close(pe[:, 0::2] ** 2 + pe[:, 1::2] ** 2, torch.ones(50, 8))


def test_split_is_by_time_without_overlap():
    for n in (1, 10, 1875, 2251):
        s = time_split(n, 0.2, 0.1)
        assert s.heldout_start == heldout_start(n, 0.2)
        parts = [set(s.train), set(s.validation), set(s.heldout)]
        assert not (parts[0] & parts[1]) and not (parts[1] & parts[2]) and not (parts[0] & parts[2])
        assert set().union(*parts) == set(range(n))
        if n > 1:  # contiguous, in time order, held-out = the tail
            assert max(s.train, default=-1) < min(s.validation, default=n) <= min(s.heldout, default=n)
    assert heldout_start(1875, 0.2) == 1500
    assert len(time_split(1875, 0.2, 0.1).heldout) == 375
    with pytest.raises(ValueError):
        heldout_start(10, 1.0)


def test_metrics_known_cases():
    rng = np.random.default_rng(0)
    a = np.convolve(rng.normal(size=300), np.ones(5) / 5, mode="same")
    assert pearson_r(a, a) == pytest.approx(1.0)
    assert pearson_r(a, -a) == pytest.approx(-1.0)
    assert pearson_r(a, np.full_like(a, 3.0)) == 0.0
    assert av_offset(a, a) == 0
    delayed = np.concatenate([np.zeros(3), a[:-3]])  # b[t] = a[t - 3]: b lags a by 3 frames
    assert av_offset(a, delayed) == 3
    assert av_offset(delayed, a) == -3
    assert lagged_correlations(a, delayed)[3] > 0.99
    verts = rng.normal(size=(4, 10, 3))
    moved = verts.copy()
    moved[:, 2, 1] += 0.5  # one lip vertex moves 0.5
    moved[:, 9, 0] += 2.0  # a non-lip vertex moves a lot
    assert lve(verts, verts, np.arange(5)) == 0.0
    assert lve(moved, verts, np.array([1, 2, 3])) == pytest.approx(0.25)


def test_early_stop_at_target_loss():
    losses, result = run_tiny(None, steps=60, target_loss=10.0, eval_every=5)
    assert result.stop_reason == "target_loss"
    assert result.steps == 5 and result.best_val_loss < 10.0
    losses, result = run_tiny(None, steps=10, target_loss=0.0, eval_every=5)
    assert result.stop_reason == "max_steps" and result.steps == 10


def test_moving_average_of_weights():
    model, average = nn.Linear(3, 2), nn.Linear(3, 2)
    average.register_buffer("count", torch.tensor(1))
    model.register_buffer("count", torch.tensor(7))
    kept = average.weight.detach().clone()
    update_average(average, model, 0.75)
    torch.testing.assert_close(average.weight, 0.75 * kept + 0.25 * model.weight.detach())
    assert int(average.count) == 7  # integer buffers are copied, not averaged


def test_checkpoint_keeps_the_averaged_weights():
    """With a decay of ~1 the average never leaves the initial weights: training must return those, not the raw
    weights it trained (which moved)."""
    feats, expr = tiny_arrays()
    config = LipConfig(presenters=["synth"], **TINY)
    torch.manual_seed(0)
    initial = LipTransformer(config).state_dict()
    settings = project_config(LipParams, "lip", batch_size=8, lr=2e-3, warmup_steps=2, max_steps=6, max_seconds=600,
                              eval_every=3, patience=1000, target_loss=0.0, lip_vertex_weight=0.0, seed=0,
                              ema_decay=1.0 - 1e-9)
    result = train(config, settings, [tiny_presenter()], None, progress=False)
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(value, initial[name], atol=1e-6, rtol=0)
    raw = train(config, dataclasses.replace(settings, ema_decay=0.0), [tiny_presenter()], None, progress=False)
    assert not torch.allclose(raw.model.state_dict()["head.weight"], initial["head.weight"])
    from talkinghead.errors import InputError
    from talkinghead.params import build_config

    with pytest.raises(InputError, match=r"params.yaml.*ema_decay must be in \[0, 1\)"):
        build_config(LipParams, "lip", {**project_group("lip"), "ema_decay": 1.0}, "params.yaml")


@pytest.mark.parametrize("two_presenters", [False, True], ids=["one-presenter", "two-presenters"])
def test_ddp_two_processes_match_one(tmp_path, two_presenters):
    out, data = tmp_path / "ddp.json", tmp_path / "tiny.npz"
    feats, expr = tiny_arrays()
    np.savez(data, features=feats, expression=expr)  # the workers skip the audio synthesis
    import talkinghead

    # the workers import this test file and the same talkinghead sources as this process (not whatever the
    # environment's install points at)
    path = os.pathsep.join([str(Path(__file__).parent), str(Path(talkinghead.__file__).parents[1])])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__)), "--ddp-worker", str(data), str(out), str(int(two_presenters))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())["losses"]
    one, _ = run_tiny(None, steps=len(two), two_presenters=two_presenters)
    assert len(one) == len(two) == 4
    assert one[0] != one[-1]  # it trained
    np.testing.assert_allclose(two, one, atol=1e-4)


def test_statistics_and_validation_per_presenter():
    long, short = tiny_presenter(), tiny_presenter(name="short", frames=120)
    short.expression = short.expression * 3.0 + 1.0  # another presenter: other neutral face, larger motion
    mean, std = target_statistics([long, short])
    assert mean.shape == std.shape == (2, 53)
    own = short.expression[:short.split.validation_start]  # the short presenter's own training frames only
    np.testing.assert_allclose(mean[1], own.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[1][:50], own.std(axis=0)[:50], rtol=1e-5)  # (jaw dims 51, 52 are constant)
    # validation: whole windows where the slice is long, shorter pieces where it is not
    segments = validation_segments([long, short], window=16, min_frames=8)
    assert {(p, s, n) for p, s, n in segments if p == 1} == {(1, 84, 12)}  # 120 frames: validation = [84, 96)
    assert [seg for seg in segments if seg[0] == 0] == [(0, 210, 16), (0, 226, 14)]  # 300 frames: [210, 240)
    assert validation_segments([short], window=16, min_frames=13) == []


def test_relative_validation_loss_of_static_prediction_is_one():
    """The validation loss is relative to the still face: a network that outputs the mean scores 1."""

    class Still(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(53))

        def forward(self, feats, pid):
            return self.bias.expand(feats.shape[0], feats.shape[1], 53)

    presenters = [tiny_presenter(), tiny_presenter(name="short", frames=120)]
    mean, std = target_statistics(presenters)
    segments = validation_segments(presenters, 16, 8)
    out = evaluate(Still(), presenters, segments, mean, std, project_config(LipParams, "lip", lip_vertex_weight=0.0))
    assert out["val_loss"] == pytest.approx(1.0)
    assert set(out) >= {"val_rel_synth", "val_rel_short", "val_loss_expression"}


def test_windowed_inference_matches_length():
    config = LipConfig(presenters=["synth"], **TINY)
    model = LipTransformer(config).eval()
    lip = LoadedLipModel(model, torch.zeros(1, 53), torch.ones(1, 53), {}, torch.device("cpu"))
    for n in (5, 16, 17, 100):
        feats = np.random.default_rng(n).normal(size=(n, 3, 80)).astype(np.float32)
        out = predict_with(lip, feats, "synth")
        assert out.shape == (n, 53) and np.isfinite(out).all()
    assert window_starts(100, 16, 8)[-1] == 84
    # a single window equals the plain forward pass
    feats = np.random.default_rng(1).normal(size=(16, 3, 80)).astype(np.float32)
    with torch.no_grad():
        direct = model(torch.from_numpy(feats)[None], torch.tensor([0]))[0].numpy()
    np.testing.assert_allclose(predict_with(lip, feats, "synth"), direct, atol=1e-5)


def test_smoothing_removes_jitter_and_keeps_a_steps_timing():
    rng = np.random.default_rng(0)
    step = np.where(np.arange(120) >= 60, 1.0, 0.0)[:, None].repeat(3, axis=1)  # [120, 3]: opens at frame 60
    noisy = torch.as_tensor(step + rng.normal(scale=0.2, size=step.shape), dtype=torch.float32)
    smooth = smooth_frames(noisy, 1.5).numpy()
    jitter = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.5 * jitter(noisy.numpy())
    assert np.abs(smooth - step).mean() < np.abs(noisy.numpy() - step).mean()  # closer to the clean signal
    clean = smooth_frames(torch.as_tensor(step, dtype=torch.float32), 1.5).numpy()[:, 0]
    assert clean[59] < 0.5 < clean[60] and clean[59] + clean[60] == pytest.approx(1.0, abs=1e-5)  # no delay
    np.testing.assert_allclose(clean[:50], 0.0, atol=1e-6)  # ends renormalised, not pulled towards a padding value
    np.testing.assert_allclose(clean[-50:], 1.0, atol=1e-6)
    assert torch.equal(smooth_frames(noisy, 0.0), noisy)  # 0 = off


def test_checkpoint_smoothing_applies_in_predict():
    config = LipConfig(presenters=["synth"], **{**TINY, "smooth_sigma": 1.0})
    model = LipTransformer(config).eval()
    lip = LoadedLipModel(model, torch.zeros(1, 53), torch.ones(1, 53), {}, torch.device("cpu"))
    feats = np.random.default_rng(1).normal(size=(16, 3, 80)).astype(np.float32)
    with torch.no_grad():
        direct = model(torch.from_numpy(feats)[None], torch.tensor([0]))[0]
    np.testing.assert_allclose(predict_with(lip, feats, "synth"), smooth_frames(direct, 1.0).numpy(), atol=1e-5)
    assert np.abs(np.diff(predict_with(lip, feats, "synth"), axis=0)).mean() < np.abs(np.diff(direct.numpy(),
                                                                                               axis=0)).mean()


def test_checkpoint_round_trip_and_unknown_presenter(tmp_path):
    from talkinghead.errors import InputError
    from talkinghead.lip import checkpoint_payload, load_lip_model, predict

    config = LipConfig(presenters=["synth"], **TINY)
    model = LipTransformer(config).eval()
    mean, std = np.arange(53, dtype=np.float32)[None], np.full((1, 53), 2.0, np.float32)  # [P, 53]
    torch.save(checkpoint_payload(model, mean, std, {"context_hops": 1}), tmp_path / "lip.pt")
    feats = np.random.default_rng(2).normal(size=(40, 3, 80)).astype(np.float32)
    lip = LoadedLipModel(model, torch.as_tensor(mean), torch.as_tensor(std), {}, torch.device("cpu"))
    np.testing.assert_allclose(predict(tmp_path / "lip.pt", feats, "synth", device="cpu"),
                               predict_with(lip, feats, "synth"), atol=1e-5)
    with pytest.raises(InputError, match="not in the lip model"):
        predict(tmp_path / "lip.pt", feats, "someone_else", device="cpu")
    # a checkpoint from before per-presenter statistics (one [53] row for all) still loads, and means the same
    torch.save(checkpoint_payload(model, mean[0], std[0], {"context_hops": 1}), tmp_path / "old.pt")
    np.testing.assert_allclose(predict(tmp_path / "old.pt", feats, "synth", device="cpu"),
                               predict_with(lip, feats, "synth"), atol=1e-5)
    torch.save(checkpoint_payload(model, np.zeros((2, 53)), np.ones((2, 53)), {}), tmp_path / "bad.pt")
    with pytest.raises(InputError, match="target statistics"):
        load_lip_model(tmp_path / "bad.pt", "cpu")
    with pytest.raises(InputError, match="expects"):
        predict(tmp_path / "lip.pt", feats[:, :2], "synth", device="cpu")


def test_presenter_metrics_with_head_model():
    from talkinghead.headmodel import load_head_model
    from talkinghead.stages.predict_lip import SHIFT_FRAMES, evaluate_presenter

    head = load_head_model()  # the committed open head model: missing or broken is a failure
    n = 200
    fitted = synthetic_targets(*synthetic_speech(n / 25, seed=4)[1:], n, 25, seed=4)
    metrics = evaluate_presenter(head, np.zeros(100, np.float32), fitted.copy(), fitted, start=150)
    assert metrics["model"]["lve_mm2"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["model"]["mouth_opening_r"] == pytest.approx(1.0)
    assert metrics["model"]["av_offset"] == 0
    assert metrics[f"baseline_shifted_{SHIFT_FRAMES}"]["av_offset"] == SHIFT_FRAMES
    assert metrics["baseline_static_mean"]["lve_mm2"] > 0 and metrics["lve_reduction_vs_static"] == pytest.approx(1.0)


def test_mouth_opening_loss_measures_the_inner_lip_gap():
    from talkinghead.headmodel import load_head_model, mouth_opening
    from talkinghead.headmodel.base import inner_lip_gap
    from talkinghead.lip.trainer import LipVertexLoss, inner_lip_positions

    head = load_head_model()
    expr = torch.zeros(4, 53)
    expr[1:, 50] = torch.tensor([0.1, 0.2, 0.3])  # the jaw opens more and more
    shape = torch.zeros(4, 100)
    vertices = head(shape, expr, torch.zeros(4, 6)).vertices
    upper, lower = inner_lip_positions(head)
    gaps = inner_lip_gap(vertices[:, head.lip_vertex_ids], upper, lower)
    torch.testing.assert_close(gaps, mouth_opening(vertices, head))  # the gap crossdrive and evaluate correlate
    assert (gaps[1:] > gaps[:-1]).all()
    loss = LipVertexLoss(head, np.zeros((1, 100), np.float32), scale=1.0, max_frames=8, opening_scale=1.0)
    true_lips = vertices[:, head.lip_vertex_ids][None]  # [1, 4, L, 3]
    pid = torch.zeros(1, dtype=torch.long)
    _, same = loss(expr[None], true_lips, pid)
    _, closed = loss(torch.zeros(1, 4, 53), true_lips, pid)
    assert float(same) < 1e-12 < float(closed)


def test_ridge_baseline_finds_an_audio_cue_only_where_there_is_one():
    from talkinghead.lip.ridge import ridge_baseline

    feats, expr = tiny_arrays()
    split = time_split(len(feats), 0.2, 0.1)
    cue = ridge_baseline(feats, expr, split)  # the synthetic targets are a function of the audio
    assert cue is not None and cue.prediction.shape == expr.shape
    assert cue.validation_ratio < 0.8
    noise = np.random.default_rng(5).normal(size=expr.shape).astype(np.float32)  # targets unrelated to the audio
    none = ridge_baseline(feats, noise, split)
    assert none.validation_ratio > 0.95 and none.strength >= 1e4  # the strongest penalties: towards the mean
    assert ridge_baseline(feats[:4], expr[:4], time_split(4, 0.2, 0.1)) is None  # no validation slice


def test_stage_smoke_align_train_predict(tmp_path, monkeypatch):
    """align -> train_lip -> predict_lip as DVC runs them (main() with paths), on a generated 12 s presenter."""
    from talkinghead.paths import LIP_TRAIN_METRICS, PresenterPaths
    from talkinghead.stages import align, predict_lip, train_lip

    write_project_params(tmp_path, lip={"d_model": 32, "n_heads": 2, "ff_dim": 64, "n_layers": 6, "window": 16,
                                        "infer_stride": 8, "batch_size": 8, "max_steps": 30, "eval_every": 10,
                                        "lip_vertex_frames": 32})
    synthetic_presenter(tmp_path, "synth", seconds=12.0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    align.main(["data/interim/synth"])
    train_lip.main(["--presenters", "synth", "--out", "models/lip/lip.pt"])
    predict_lip.main(["data/interim/synth", "--checkpoint", "models/lip/lip.pt"])

    paths = PresenterPaths.of("synth", Path("."))
    align_metrics = json.loads((paths.report("align") / "metrics.json").read_text())
    assert align_metrics["frames"] == 300 and align_metrics["seconds_per_10s_audio"] > 0
    table = schemas.read_table(paths.lip_coeffs, schemas.LIP_COEFFS)
    assert len(table) == 300 and table["heldout"].sum() == 60
    metrics = json.loads((paths.report("lip") / "metrics.json").read_text())
    assert set(metrics) >= {"model", "baseline_static_mean", "baseline_shifted_3", "baseline_ridge"}
    assert metrics["baseline_ridge"]["validation_ratio"] < 1.0  # the generated targets follow the audio
    train_metrics = json.loads(Path(LIP_TRAIN_METRICS).read_text())
    assert set(train_metrics["val_loss_relative_to_static"]) == {"synth"}
    # the checkpoint is registered (registry.py) and its version predicts what the DVC output predicts
    import mlflow

    from talkinghead.lip import predict

    model = mlflow.pyfunc.load_model("models:/talkinghead-lip/latest")
    (version,) = mlflow.MlflowClient().search_model_versions("name = 'talkinghead-lip'")
    assert version.tags["dvc_stage"] == "train_lip" and len(version.tags["dvc_deps_md5"]) > 0
    features = np.array(np.load(paths.features)[:40])
    assert np.allclose(model.predict(features, params={"presenter": "synth"}),
                       predict("models/lip/lip.pt", features, "synth"), atol=1e-5)
    # a presenter the model was not trained on: one clear error, exit code 2, nothing written
    synthetic_presenter(tmp_path, "other", seconds=4.0)
    align.main(["data/interim/other"])
    with pytest.raises(SystemExit) as exit_info:
        predict_lip.main(["data/interim/other", "--checkpoint", "models/lip/lip.pt"])
    assert exit_info.value.code == 2
    assert not PresenterPaths.of("other", Path(".")).lip_coeffs.exists()


def _ddp_worker(data: str, out: str, two_presenters: bool) -> None:
    import torch.distributed as dist

    from talkinghead.parallel import init_distributed

    torch.set_num_threads(1)
    d = init_distributed()
    arrays = np.load(data)
    losses, _ = run_tiny(d, steps=4, arrays=(arrays["features"], arrays["expression"]),
                         two_presenters=two_presenters)
    if d.rank == 0:
        Path(out).write_text(json.dumps({"losses": losses, "world": d.world}))
    dist.destroy_process_group()


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--ddp-worker":
    _ddp_worker(sys.argv[2], sys.argv[3], sys.argv[4] == "1")
