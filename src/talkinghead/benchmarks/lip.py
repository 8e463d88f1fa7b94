"""Lip-model speed: inference (seconds to turn 10 s of audio into 53-d coefficients, features + model, CPU) and
training on the demo presenter.

Inference uses models/lip/lip.pt when it exists (run from the project root), else an untrained model of the
params.yaml architecture (same cost). Target: < 0.5 s per 10 s of audio on the 2-core CPU.
Training runs the train_lip stage's code on data/interim/demo with params.yaml's ``lip`` group (it stops at
``lip.target_loss``) when the demo presenter has been built (``make demo``); otherwise it is reported as skipped.
Target: < 3 min on the 2-core CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..lip import checkpoint_align_params, checkpoint_payload, load_lip_model, predict_with
from ..lip.model import LipConfig, LipTransformer
from ..parallel import torch_threads
from ..paths import LIP_CHECKPOINT
from ..speech.features import SAMPLE_RATE, AlignParams, features_for_audio


def _checkpoint(workdir: Path) -> Path:
    if LIP_CHECKPOINT.is_file():
        return LIP_CHECKPOINT
    from ..lip.trainer import LipParams
    from ..params import load_config

    p = load_config(AlignParams, "align")
    config = LipConfig.from_params(load_config(LipParams, "lip"), ["bench"], p.context, p.feature_dim)
    path = Path(workdir) / "lip_bench.pt"
    torch.save(checkpoint_payload(LipTransformer(config), np.zeros((1, 53)), np.ones((1, 53)), p.to_dict()), path)
    return path


def _time_inference(lip, repeats: int) -> tuple[float, float]:
    """Median seconds (total, features only) to process 10 s of audio at 25 fps."""
    presenter = lip.model.config.presenters[0]
    fps = 25.0
    audio = (0.1 * np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE)).astype(np.float32)
    align = checkpoint_align_params(lip.align)
    times, feature_times = [], []
    for _ in range(repeats + 1):  # the first run warms up allocators and kernels
        start = time.perf_counter()
        feats = features_for_audio(audio, int(10 * fps), fps, align)
        mid = time.perf_counter()
        predict_with(lip, feats, presenter)
        times.append(time.perf_counter() - start)
        feature_times.append(mid - start)
    return float(np.median(times[1:])), float(np.median(feature_times[1:]))


def time_demo_training(workdir: Path) -> dict[str, float | str]:
    """Train the lip model on the demo presenter alone (no MLflow; the checkpoint goes to ``workdir``)."""
    from ..paths import PresenterPaths
    from ..stages import train_lip

    if not PresenterPaths.of("demo", Path(".")).flame.is_file():
        return {"lip_train_demo": "skipped: no data/interim/demo (run `make demo` first)"}
    result = train_lip.run(["demo"], Path(workdir) / "lip_demo.pt", Path("."), track=False, reports=False,
                           progress=False)
    return {"lip_train_demo_s": round(result.seconds, 1), "lip_train_demo_steps": float(result.steps),
            "lip_train_demo_best_val_loss": result.best_val_loss, "lip_train_demo_stop": result.stop_reason}


def run(workdir: Path, repeats: int = 3) -> dict[str, float | str]:
    """Inference time with one torch thread (what the pipeline uses on this shared CPU: lip.threads) and with two."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lip = load_lip_model(_checkpoint(workdir), "cpu")
    results = {}
    for threads in (1, 2):
        with torch_threads(threads):
            total, features = _time_inference(lip, repeats)
        suffix = "" if threads == 1 else "_2threads"
        results[f"lip_infer_s_per_10s_audio{suffix}"] = total
        results[f"lip_features_s_per_10s_audio{suffix}"] = features
    results["lip_model_parameters"] = float(sum(p.numel() for p in lip.model.parameters()))
    results.update(time_demo_training(workdir))
    return results


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
