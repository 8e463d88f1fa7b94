"""Stage crossdrive: the real mouth-opening measure, lag and voiced-frame metrics on known signals, and the stage run
as DVC runs it on two generated presenters (align -> train_lip -> crossdrive)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from talkinghead import facemesh, schemas
from talkinghead.lipmetrics import mouth_opening_ratio, pair_metrics
from talkinghead.stages.crossdrive import summarise

from configs import project_config, write_project_params

from test_lip import RATE, synthetic_presenter, synthetic_speech


def face_with_opening(opening: np.ndarray, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """FaceMesh-like landmarks [N, 478, 3]: fixed random points, eye corners 60 px apart, inner lips ``opening`` px
    apart (times ``scale``: the face nearer the camera)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(80, 180, (schemas.N_LANDMARKS, 3)).astype(np.float32)
    base[33, :2], base[263, :2] = (98, 100), (158, 100)
    lmk = np.repeat(base[None], len(opening), axis=0)
    for upper, lower in facemesh.INNER_LIP_PAIRS:
        lmk[:, upper, 1] = 170.0
        lmk[:, lower, 1] = 170.0 + opening
    return (lmk - 128.0) * scale + 128.0


def test_real_mouth_opening_is_scale_free():
    opening = np.abs(np.sin(np.linspace(0, 6, 50))) * 10
    near, far = mouth_opening_ratio(face_with_opening(opening, 1.5)), mouth_opening_ratio(face_with_opening(opening))
    np.testing.assert_allclose(near, far, rtol=1e-5)
    np.testing.assert_allclose(far, opening / 60.0, rtol=1e-5)


def test_pair_metrics_find_the_lag_and_score_voiced_frames():
    rng = np.random.default_rng(0)
    real = np.convolve(rng.normal(size=200), np.ones(5) / 5, mode="same")
    late = np.concatenate([np.full(2, real[0]), real[:-2]])  # generated 2 frames late
    m = pair_metrics(late, real, np.ones(200, bool), max_lag=3)
    assert m["best_lag"] == 2 and m["r_best_lag"] > 0.99 and m["r"] < m["r_best_lag"]
    voiced = np.zeros(200, bool)
    voiced[50:150] = True
    noisy = real.copy()
    noisy[~voiced] = rng.normal(size=(~voiced).sum())  # wrong only in silence
    m = pair_metrics(noisy, real, voiced, max_lag=3)
    assert m["r_voiced"] == pytest.approx(1.0) and m["r"] < 0.9


def test_summary_medians_are_over_real_speakers_only():
    rows = []
    for speaker, synthetic, r in (("demo", True, 0.9), ("a", False, 0.2), ("b", False, 0.4), ("c", False, 0.6)):
        row = {"speaker": speaker, "face": "x", "synthetic_speaker": synthetic, "leave_one_out": False, "frames": 50,
               "voiced_fraction": 1.0,
               "r": r, "best_lag": 0, "r_best_lag": r, "r_voiced": r}
        row.update({f"r_lag_{lag}": r - 0.1 * abs(lag) for lag in range(-3, 4)})
        row.update({f"ridge_{k}": v - 0.1 for k, v in row.items() if k.startswith("r")})
        rows.append(row)
    metrics = summarise(pd.DataFrame(rows), max_lag=3)
    assert metrics["summary"]["real_speakers"] == 3
    assert metrics["summary"]["median_r"] == pytest.approx(0.4)
    assert metrics["summary"]["median_r_minus_ridge"] == pytest.approx(0.1)
    assert metrics["speakers"]["demo"]["synthetic"] and metrics["summary"]["speakers_best_lag_within_1"] == 3


def write_tiny_lip_project(root: Path, presenters: list[str], **changes) -> None:
    """The project's params.yaml with a tiny, quick lip model on log-mel features (seconds faster here; the Whisper
    path has its own tests)."""
    write_project_params(root, presenters=presenters, align={"encoder": "mel"},
                         lip={"d_model": 32, "n_heads": 2, "ff_dim": 64, "window": 16, "infer_stride": 8,
                              "batch_size": 8, "max_steps": 60, "eval_every": 20, "lip_vertex_weight": 0.0},
                         **changes)


def write_landmarks(interim: Path, seconds: float, fps: int, seed: int) -> None:
    """landmarks.parquet whose inner-lip gap follows the synthetic speech's opening (as the real mouth would)."""
    _, opening, _ = synthetic_speech(seconds, seed)
    n = int(round(seconds * fps))
    idx = np.clip(((np.arange(n) + 0.5) / fps * RATE).astype(int), 0, len(opening) - 1)
    lmk = face_with_opening(opening[idx] * 12.0, seed=seed)
    table = pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "detected": np.ones(n, bool),
                          "lmk_crop": list(lmk.reshape(n, -1)), "lmk_orig": list(lmk[:, :, :2].reshape(n, -1))})
    schemas.write_table(table, interim / "landmarks.parquet", schemas.LANDMARKS)


def test_stage_smoke_two_presenters(tmp_path, monkeypatch, one_torch_thread):
    """align -> train_lip -> crossdrive on two generated presenters whose mouths follow their audio: every pair is
    scored, the files DVC expects are written, MLflow gets the summary."""
    from talkinghead.stages import align, crossdrive, train_lip

    write_tiny_lip_project(tmp_path, ["one", "two"])
    for seed, name in enumerate(("one", "two")):
        interim = synthetic_presenter(tmp_path, name, seconds=10.0, seed=seed)
        write_landmarks(interim, 10.0, 25, seed)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("one", "two"):
        align.main([f"data/interim/{name}"])
    train_lip.main(["--out", "models/lip/lip.pt"])
    crossdrive.main(["--checkpoint", "models/lip/lip.pt", "--out", "reports/crossdrive"])

    metrics = json.loads(Path("reports/crossdrive/metrics.json").read_text())
    assert set(metrics["speakers"]) == {"one", "two"} and metrics["summary"]["real_speakers"] == 2
    assert metrics["encoder"] == "mel"
    pairs = pd.read_csv("reports/crossdrive/pairs.csv")
    assert sorted(zip(pairs["speaker"], pairs["face"])) == [("one", "two"), ("two", "one")]
    assert pairs[["r", "r_voiced", "ridge_r"]].notna().all().all()
    assert Path("reports/crossdrive/mouth_opening.png").stat().st_size > 1000
    from talkinghead.report import write_report

    page = write_report(Path("reports")).read_text()
    assert "Lip sync driven by other speakers" in page and "<td>one</td>" in page
    assert 'src="crossdrive/mouth_opening.png"' in page
    # bad params: one clear error, exit 2
    write_tiny_lip_project(tmp_path, ["one", "two"], crossdrive={"max_lags": 3})
    with pytest.raises(SystemExit) as exit_info:
        crossdrive.main(["--no-track"])
    assert exit_info.value.code == 2


class OpeningSynth:
    """Stands in for the render + GAN: 'draws' each frame's predicted jaw opening (expression dim 50) as a number."""

    def synthesize(self, expression, source):
        images = np.zeros((len(expression), 8, 8, 3), np.float32)
        images[:, 0, 0, 0] = expression[:, 50]
        return images, None


class OpeningTracker:
    """Stands in for MediaPipe: reads the number back as a face whose inner lips are that far apart."""

    def __call__(self, images):
        return face_with_opening(np.asarray(images)[:, 0, 0, 0] * 40.0)[:, :, :2]

    def close(self):
        pass


def test_evaluate_drives_the_face_with_the_other_speakers(tmp_path, monkeypatch, one_torch_thread):
    """evaluate's cross-speaker part: every other presenter's held-out speech drives this face, the generated
    frames' mouth is compared with the real speaker's (MediaPipe and the GAN replaced by stand-ins here)."""
    from types import SimpleNamespace

    from talkinghead.paths import PresenterPaths
    from talkinghead.stages import align, evaluate, train_lip

    presenters = ["one", "two", "three"]
    write_tiny_lip_project(tmp_path, presenters)
    for seed, name in enumerate(presenters):
        write_landmarks(synthetic_presenter(tmp_path, name, seconds=10.0, seed=seed), 10.0, 25, seed)
    (tmp_path / "data" / "raw" / "three").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "three" / "visemes.parquet").write_bytes(b"")  # a generated speaker
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in presenters:
        align.main([f"data/interim/{name}"])
    train_lip.main(["--out", "models/lip/lip.pt", "--no-track"])
    monkeypatch.setattr(evaluate, "FaceMeshTracker", OpeningTracker)

    face = SimpleNamespace(fps=25.0, heldout_start=200, n_frames=250)
    result = evaluate.cross_speaker_evaluation(PresenterPaths.of("one", tmp_path), face, OpeningSynth(), tmp_path,
                                               project_config(evaluate.EvaluateParams, "evaluate"), heldout_fraction=0.2,
                                               progress=False)
    assert set(result["speakers"]) == {"two", "three"}
    two = result["speakers"]["two"]
    assert two["frames"] == 50 and not two["generated_speaker"] and result["speakers"]["three"]["generated_speaker"]
    assert -3 <= two["best_lag"] <= 3 and np.isfinite(two["r_voiced"])
    assert result["mean_r"] == pytest.approx(two["r"])  # the generated speaker is left out of the mean
