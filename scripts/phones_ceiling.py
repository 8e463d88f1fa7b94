"""How far phone timings alone go on real speech, before any model: for every real presenter of a built project
(``data/interim/NAME/{audio.wav,frames.parquet,landmarks.parquet}``), its recording is transcribed and force-aligned
(``talkinghead.speech.phones``) and the resulting curves are correlated with the real inner-lip gap (FaceMesh inner-lip
pairs over the eye-corner distance, ``lipmetrics.mouth_opening_ratio``, as stage crossdrive measures it).

1. Training-free: the viseme model's lip gap (``demo_speech.mouth_opening``), r at lag 0 and the best lag in
   [-3, 3] (positive: the curve is late), on the whole clip and on the held-out tail (the tail's audio alone, as
   ``talkinghead speak`` would see it); ``--lead-s`` samples the curve that much later (the mouth moves before the
   sound it shapes).
2. Leave-one-clip-out ridge to the per-clip standardised real gap, per frame, on Whisper states (as align makes
   them), on the phone features with +-5 frames of context (a linear model can learn the lead), and on both.

    PYTHONPATH=src .venv/bin/python scripts/phones_ceiling.py /tmp/talkinghead-real-clips

Also prints seconds of transcription + alignment per 10 s of audio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from talkinghead import schemas
from talkinghead.audio import read_wav
from talkinghead.lipmetrics import best_lag, lagged_correlations, mouth_opening_ratio
from talkinghead.params import load_config
from talkinghead.speech.features import AlignParams, features_for_audio
from talkinghead.speech.phones import PHONE_FEATURES, phone_features, speech_phones
from talkinghead.split import heldout_start

RATE = 16000
MAX_LAG = 3
CONTEXT = 5  # frames on each side for the ridge on phone features
STRENGTHS = (1e2, 1e3, 1e4)


def load(root: Path, name: str) -> tuple[float, np.ndarray, np.ndarray]:
    """fps, audio [T] cut/padded to the frames, real mouth opening [N]."""
    folder = root / "data" / "interim" / name
    frames = schemas.read_table(folder / "frames.parquet", schemas.FRAMES)
    landmarks = schemas.read_table(folder / "landmarks.parquet", schemas.LANDMARKS)
    n, fps = len(frames), float(frames["fps"].iloc[0])
    samples, rate = read_wav(folder / "audio.wav")
    if rate != RATE:
        raise SystemExit(f"{folder / 'audio.wav'}: {rate} Hz, expected {RATE}")
    need = int(round(n / fps * RATE))
    samples = np.pad(samples[:need], (0, max(0, need - len(samples)))).astype(np.float32)
    lmk = schemas.column_array(landmarks, "lmk_crop").reshape(n, schemas.N_LANDMARKS, 3)
    return fps, samples, mouth_opening_ratio(lmk)


def r_and_lag(generated: np.ndarray, real: np.ndarray) -> tuple[float, int]:
    curve = lagged_correlations(real, generated, MAX_LAG)  # positive lag: generated late
    return curve[0], best_lag(curve)


def frame_phone_features(samples: np.ndarray, n: int, fps: float, lead_s: float, model: str | None) -> np.ndarray:
    times = (np.arange(n) + 0.5) / fps + lead_s
    return phone_features(speech_phones(samples, model), times)  # [N, 6]


def with_context(x: np.ndarray, k: int) -> np.ndarray:
    """[N, D] -> [N, (2k + 1) * D]: each frame with its k neighbours on each side (clamped at the ends)."""
    n = len(x)
    idx = np.clip(np.arange(n)[:, None] + np.arange(-k, k + 1)[None], 0, n - 1)  # [N, 2k + 1]
    return x[idx].reshape(n, -1)


def standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path, help="a built project (e.g. the scratch clone of make real-clips)")
    ap.add_argument("--lead-s", type=float, default=0.0, help="sample the training-free curve this much later")
    args = ap.parse_args(argv)
    root = args.project
    align = load_config(AlignParams, "align", root / "params.yaml")
    presenters = [p.name for p in sorted((root / "data" / "raw").iterdir())
                  if p.is_dir() and not (p / "visemes.parquet").exists()]
    opening = PHONE_FEATURES.index("mouth_open")
    rows, data, cost = [], {}, []
    for name in presenters:
        fps, samples, real = load(root, name)
        n = len(real)
        start = heldout_start(n, 0.2)
        t0 = time.perf_counter()
        whole = frame_phone_features(samples, n, fps, args.lead_s, align.whisper_model)
        cost.append((time.perf_counter() - t0) / (len(samples) / RATE) * 10)
        tail = frame_phone_features(samples[int(round(start / fps * RATE)):], n - start, fps, args.lead_s,
                                    align.whisper_model)
        rows.append((name, r_and_lag(whole[:, opening], real), r_and_lag(tail[:, opening], real[start:])))
        whisper = features_for_audio(samples, n, fps, AlignParams(**{**align.to_dict(), "encoder": "whisper"}))
        data[name] = (whisper.reshape(n, -1), standardised(with_context(whole if args.lead_s == 0 else
                      frame_phone_features(samples, n, fps, 0.0, align.whisper_model), CONTEXT)),
                      standardised(real[:, None])[:, 0])
    print(f"training-free viseme lip gap vs real inner-lip gap (lead {args.lead_s * 1000:.0f} ms): r at lag 0 "
          f"(best lag in [-{MAX_LAG}, {MAX_LAG}])")
    for label, k in (("whole clip", 1), ("held-out tail, alone", 2)):
        cells = [f"{row[0]} {row[k][0]:+.2f} ({row[k][1]:+d})" for row in rows]
        print(f"  {label:22s} " + "  ".join(cells) + f"   median {np.median([r[k][0] for r in rows]):+.2f}")
    print(f"\nleave-one-clip-out ridge (whole clips; phone features with +-{CONTEXT} frames): r at lag 0 (best lag)")
    picks = {"whisper": lambda d: d[0], "phones": lambda d: d[1], "whisper+phones": lambda d: np.hstack([d[0], d[1]])}
    for label, pick in picks.items():
        for strength in STRENGTHS:
            out = []
            for test in presenters:
                x = np.vstack([pick(data[m]) for m in presenters if m != test])
                y = np.concatenate([data[m][2] for m in presenters if m != test])
                mean = x.mean(0)
                w = np.linalg.solve((x - mean).T @ (x - mean) + strength * np.eye(x.shape[1]), (x - mean).T @ y)
                out.append(r_and_lag((pick(data[test]) - mean) @ w, data[test][2]))
            print(f"  {label:15s} strength {strength:<7g} " + "  ".join(
                f"{name} {r:+.2f} ({lag:+d})" for name, (r, lag) in zip(presenters, out))
                + f"   median {np.median([r for r, _ in out]):+.2f}")
    print(f"\ntranscript + alignment, s per 10 s of audio (warm after the first): "
          + " ".join(f"{c:.2f}" for c in cost))


if __name__ == "__main__":
    main()
