"""Stage crossdrive: lip sync on voices the presenter never had -- every presenter driven by the held-out speech
of every other speaker, compared with the mouth of the person who really spoke it.

``python -m talkinghead.stages.crossdrive --checkpoint models/lip/lip.pt --out reports/crossdrive`` writes
``metrics.json`` (DVC metrics), ``pairs.csv`` (one row per speaker x driven presenter) and ``mouth_opening.png``.

For every presenter S with a held-out tail (the speaker) and every other presenter P in the lip model (the face):
S's held-out audio (on S's video clock: moved by stage sync's offset), encoded alone as ``talkinghead speak`` encodes
new speech (``lip.speech_features``), drives P through the lip model; the mouth opening of the result (head model
with P's shape: the inner-lip gap of the FaceMesh lip pairs) is correlated with S's real mouth opening in that tail
(FaceMesh inner-lip gap over the eye-corner distance, from S's landmarks). Reported per pair: Pearson r at lag 0,
the best lag in [-max_lag, max_lag] (positive: the generated mouth is late) and its r, and r on the frames Silero VAD
calls speech. The same for a pooled ridge regression from the same features to the same standardised targets, fitted
on the same training frames (``lip.ridge.pooled_ridge``): the bar a learnt model has to clear.

Speakers whose raw folder holds ``visemes.parquet`` are generated (the demo presenter: its held-out tail is
spoken by voices it never trained on); the summary's medians are over the others, the real speakers.
``--speaker-checkpoints DIR`` drives speaker S with ``DIR/S.pt`` where present: a lip model trained without S
at all (leave-one-out; ``make real-clips`` trains them), so S's voice is new to the model, not only its words --
and then S's whole recording is the test, not only its held-out tail (the pooled ridge is refitted on that model's
presenters alike).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import schemas
from ..atomic import atomic_path, json_safe, write_json
from ..errors import InputError, exits_on_input_error
from ..lip import LoadedLipModel, load_lip_model, predict_with, speech_features
from ..lip.ridge import PooledRidge, pooled_ridge
from ..lipmetrics import best_lag, pair_metrics
from ..params import load_config, load_params
from ..paths import LIP_CHECKPOINT, REPORTS, PresenterPaths
from ..split import SplitParams, time_split
from ..tensorfile import load_tensor
from ..testspeech import SpeakerClip, load_speaker_clip

CROSSDRIVE_REPORT = REPORTS / "crossdrive"


@dataclass(frozen=True)
class CrossdriveParams:
    """The ``crossdrive`` group of params.yaml."""

    max_lag: int  # lags searched for the best alignment, frames
    vad_threshold: float  # Silero speech probability above which a frame counts as voiced
    min_frames: int  # speakers with a shorter held-out tail are skipped


def head_mouth_opening(head_model, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """Mouth opening [n] of ``expression`` [n, 53] on a face of ``shape`` [100] (zero pose), head-model units."""
    from ..headmodel import mouth_opening

    with torch.no_grad():
        expr = torch.as_tensor(np.ascontiguousarray(expression, dtype=np.float32))
        n = expr.shape[0]
        vertices = head_model(torch.as_tensor(shape, dtype=torch.float32)[None].expand(n, -1), expr,
                              torch.zeros(n, 6)).vertices
        return mouth_opening(vertices, head_model).numpy()


def fit_ridge(lip: LoadedLipModel, root: Path, heldout_fraction: float, validation_fraction: float) -> PooledRidge:
    """The pooled ridge baseline on the lip model's presenters and split (their align features, fitted expression
    standardised with the lip model's own per-presenter statistics)."""
    features, targets, splits = [], [], []
    mean, std = lip.target_mean.cpu().numpy(), lip.target_std.cpu().numpy()
    for i, name in enumerate(lip.model.config.presenters):
        paths = PresenterPaths.of(name, root)
        feats = np.asarray(load_tensor(paths.features, np.float32, (None, None)))
        expression = schemas.column_array(schemas.read_table(paths.flame, schemas.PARAMETERS), "expression")
        if len(expression) != len(feats):
            raise InputError(paths.flame, f"{len(expression)} frames but {paths.features} has {len(feats)}")
        features.append(feats)
        targets.append((expression - mean[i]) / std[i])
        splits.append(time_split(len(feats), heldout_fraction, validation_fraction))
    return pooled_ridge(features, targets, splits)


def drive_speaker(speaker: SpeakerClip, checkpoint: Path, lip: LoadedLipModel, ridge: PooledRidge, head_model,
                  shapes: dict[str, np.ndarray], max_lag: int) -> tuple[list[dict[str, Any]], dict]:
    """Rows (one per face driven) and the curves for the plot of one speaker with one lip model (read from
    ``checkpoint``) and its ridge twin; ``shapes``: each face's mean fitted shape [100]."""
    n = speaker.frames
    features = speech_features(checkpoint, speaker.audio, n, speaker.fps)  # [n, C, D]
    ridge_standardised = ridge.predict(features)  # [n, 53]
    rows, curves = [], {"real": speaker.real_opening}
    for i, face in enumerate(lip.model.config.presenters):
        if face == speaker.name:
            continue
        predicted = predict_with(lip, features, face)
        ridge_expression = ridge_standardised * lip.target_std[i].cpu().numpy() + lip.target_mean[i].cpu().numpy()
        generated = head_mouth_opening(head_model, shapes[face], predicted)
        ridge_opening = head_mouth_opening(head_model, shapes[face], ridge_expression)
        model_m = pair_metrics(generated, speaker.real_opening, speaker.voiced, max_lag)
        ridge_m = pair_metrics(ridge_opening, speaker.real_opening, speaker.voiced, max_lag)
        rows.append({"speaker": speaker.name, "face": face, "synthetic_speaker": speaker.synthetic,
                     "leave_one_out": speaker.name not in lip.model.config.presenters, "frames": n,
                     "voiced_fraction": float(speaker.voiced.mean()), "checkpoint": str(checkpoint),
                     **model_m, **{f"ridge_{k}": v for k, v in ridge_m.items()}})
        curves.setdefault("generated", generated)
    return rows, curves


def summarise(pairs: pd.DataFrame, max_lag: int) -> dict[str, Any]:
    """Per speaker (mean over the faces it drove) and over the real speakers (medians)."""
    speakers: dict[str, Any] = {}
    lags = [f"r_lag_{lag}" for lag in range(-max_lag, max_lag + 1)]
    for name, group in pairs.groupby("speaker", sort=True):
        mean_curve = group[lags].mean()
        best = best_lag({lag: float(mean_curve[f"r_lag_{lag}"]) for lag in range(-max_lag, max_lag + 1)})
        ridge_curve = group[[f"ridge_{c}" for c in lags]].mean()
        speakers[name] = {
            "synthetic": bool(group["synthetic_speaker"].iloc[0]), "frames": int(group["frames"].iloc[0]),
            "leave_one_out": bool(group["leave_one_out"].iloc[0]),
            "faces": int(len(group)), "voiced_fraction": float(group["voiced_fraction"].iloc[0]),
            "r": float(group["r"].mean()), "r_voiced": float(group["r_voiced"].mean()),
            "best_lag": best, "r_best_lag": float(mean_curve[f"r_lag_{best}"]),
            "ridge_r": float(group["ridge_r"].mean()), "ridge_r_voiced": float(group["ridge_r_voiced"].mean()),
            "ridge_r_best_lag": float(ridge_curve.max()),
        }
    real = {k: v for k, v in speakers.items() if not v["synthetic"]}
    median = lambda key: float(np.median([v[key] for v in real.values()])) if real else float("nan")  # noqa: E731
    summary = {"real_speakers": len(real), "median_r": median("r"), "median_r_voiced": median("r_voiced"),
               "median_r_best_lag": median("r_best_lag"), "median_ridge_r": median("ridge_r"),
               "median_ridge_r_voiced": median("ridge_r_voiced"),
               "speakers_best_lag_within_1": int(sum(abs(v["best_lag"]) <= 1 for v in real.values()))}
    summary["median_r_minus_ridge"] = summary["median_r"] - summary["median_ridge_r"]
    return {"summary": summary, "speakers": speakers}


def plot_curves(path: Path, curves: dict[str, dict[str, np.ndarray]], fps: dict[str, float]) -> None:
    """One panel per speaker: its real mouth opening and the first face it drove, each standardised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in curves if "generated" in curves[n]]
    if not names:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no speaker drove another face (one presenter)", ha="center", va="center")
    else:
        fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.2 * len(names)), squeeze=False)
        z = lambda a: (a - a.mean()) / max(a.std(), 1e-9)  # noqa: E731
        for ax, name in zip(axes[:, 0], names):
            t = np.arange(len(curves[name]["real"])) / fps[name]
            ax.plot(t, z(curves[name]["real"]), label=f"{name}: real speaker's mouth", lw=1.2)
            ax.plot(t, z(curves[name]["generated"]), label="another face driven by that audio", lw=1.2)
            ax.legend(loc="upper right", fontsize=8)
            ax.set_ylabel("opening (z)")
        axes[-1, 0].set_xlabel("time in the speaker's test audio (s): its held-out tail, or its whole recording "
                               "(leave-one-out)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def run(root: Path, checkpoint: Path, out: Path, speaker_checkpoints: Path | None = None) -> dict[str, Any]:
    """Drive every presenter with every other speaker's held-out tail; write metrics.json, pairs.csv and the plot
    under ``out``; return the metrics."""
    from ..headmodel import HeadModelParams, load_head_model
    from ..lip.trainer import LipParams

    params_file = root / "params.yaml"
    all_params = load_params(params_file)
    params = load_config(CrossdriveParams, "crossdrive", params_file, all_params)
    heldout_fraction = load_config(SplitParams, "split", params_file, all_params).heldout_fraction
    validation_fraction = load_config(LipParams, "lip", params_file, all_params).validation_fraction
    head_model = load_head_model(load_config(HeadModelParams, "head_model", params_file, all_params))
    main_lip = load_lip_model(checkpoint, "cpu")
    names = list(main_lip.model.config.presenters)
    shapes = {name: schemas.column_array(schemas.read_table(PresenterPaths.of(name, root).flame, schemas.PARAMETERS),
                                         "shape").mean(axis=0) for name in names}
    models: dict[Path, tuple[LoadedLipModel, PooledRidge]] = {}  # each lip model and its ridge twin, built once
    rows, curves, fps = [], {}, {}
    for name in names:
        own = speaker_checkpoints / f"{name}.pt" if speaker_checkpoints is not None else None
        leave_one_out = own is not None and own.is_file()
        used = own if leave_one_out else checkpoint
        # a model that never saw this speaker may hear the whole recording; the shared model only its held-out tail
        speaker = load_speaker_clip(PresenterPaths.of(name, root), None if leave_one_out else heldout_fraction,
                                    params.vad_threshold)
        if speaker.frames < params.min_frames:
            continue
        if used not in models:
            lip = main_lip if used == checkpoint else load_lip_model(used, "cpu")
            models[used] = lip, fit_ridge(lip, root, heldout_fraction, validation_fraction)
        speaker_rows, curves[name] = drive_speaker(speaker, used, *models[used], head_model, shapes, params.max_lag)
        rows += speaker_rows
        fps[name] = speaker.fps
    columns = ["speaker", "face", "synthetic_speaker", "leave_one_out", "frames", "voiced_fraction", "r", "best_lag",
               "r_best_lag", "r_voiced", *(f"r_lag_{lag}" for lag in range(-params.max_lag, params.max_lag + 1))]
    pairs = pd.DataFrame(rows, columns=[*columns, *(f"ridge_{c}" for c in columns[6:]), "checkpoint"])
    metrics = summarise(pairs, params.max_lag)
    if not rows:  # one presenter (the demo alone): nothing to cross; say so instead of failing `dvc repro`
        metrics["note"] = "no pair: crossdrive needs two presenters with held-out tails of >= min_frames frames"
    metrics["encoder"] = main_lip.align.get("encoder", "mel")
    metrics["params"] = asdict(params)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pairs.csv") as tmp:
        pairs.drop(columns=["checkpoint"]).to_csv(tmp, index=False, float_format="%.4f")
    write_json(out / "metrics.json", json_safe(metrics))
    plot_curves(out / "mouth_opening.png", curves, fps)
    return metrics


def markdown_table(metrics: dict[str, Any]) -> str:
    """The per-speaker rows and the summary of a crossdrive metrics.json as a Markdown table."""
    f = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
    lines = [f"{metrics.get('encoder', '?')} features | speaker's audio drives the other faces; r = correlation "
             "with the speaker's real mouth opening", "",
             "| speaker | frames | r | r voiced | best lag (r) | ridge r | ridge r voiced |",
             "|---|---|---|---|---|---|---|"]
    for name, s in metrics["speakers"].items():
        lines.append(f"| {name}{' (generated)' if s['synthetic'] else ''} | {s['frames']} | {f(s['r'])} | "
                     f"{f(s['r_voiced'])} | {s['best_lag']:+d} ({f(s['r_best_lag'])}) | {f(s['ridge_r'])} | "
                     f"{f(s['ridge_r_voiced'])} |")
    s = metrics["summary"]
    lines.append(f"\nreal speakers {s['real_speakers']}: median r {f(s['median_r'])} "
                 f"(voiced {f(s['median_r_voiced'])}), ridge {f(s['median_ridge_r'])} "
                 f"(voiced {f(s['median_ridge_r_voiced'])}); best lag within +-1 frame: "
                 f"{s['speakers_best_lag_within_1']} of {s['real_speakers']}")
    return "\n".join(lines)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=LIP_CHECKPOINT)
    parser.add_argument("--out", type=Path, default=CROSSDRIVE_REPORT)
    parser.add_argument("--root", type=Path, default=Path("."), help="project root (data/, params.yaml)")
    parser.add_argument("--speaker-checkpoints", type=Path, default=None,
                        help="folder of NAME.pt lip models trained without speaker NAME (leave-one-out)")
    parser.add_argument("--no-track", action="store_true", help="skip MLflow logging")
    parser.add_argument("--show", type=Path, default=None, metavar="METRICS_JSON",
                        help="only print the table of an existing metrics.json")
    args = parser.parse_args(argv)
    if args.show is not None:
        if not args.show.is_file():
            print(f"error: {args.show}: no such file", file=sys.stderr)
            sys.exit(2)
        print(markdown_table(json.loads(args.show.read_text())))
        return
    metrics = run(args.root, args.checkpoint, args.out, args.speaker_checkpoints)
    if not args.no_track:
        from ..tracking import flatten, stage_run

        with stage_run("crossdrive", None, {"crossdrive": metrics["params"]}) as mlflow:
            numbers = {k: float(v) for k, v in flatten({"summary": metrics["summary"],
                                                        "speakers": metrics["speakers"]}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
            mlflow.log_metrics(numbers, step=0)
            mlflow.log_artifact(str(args.out / "pairs.csv"))
            mlflow.log_artifact(str(args.out / "mouth_opening.png"))
    print(markdown_table(json_safe(metrics)))


if __name__ == "__main__":
    main()
