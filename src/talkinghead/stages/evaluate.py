"""evaluate@NAME: make the presenter say its held-out tail's audio and compare with the real held-out frames.

    python -m talkinghead.stages.evaluate data/interim/NAME

The speak pipeline runs at crop level (render + composite + GAN on the real tail's own head poses, no paste-back),
so every generated frame lines up with a real crop. The tail's audio is the footage's on its video's clock (moved by
stage sync's offset, ``talkinghead.avsync``), as the lip model was trained on it. Metrics (all on S x S crops,
distances rescaled to a 256 crop):
- ``lmd``: lip landmark distance (px): MediaPipe FaceMesh on generated and real crops; per frame the lip points of
  each set are mean-centred (head position cancels), then the mean point distance; averaged over frames.
- ``mouth_opening_r``: Pearson r of the inner-lip gap, real vs generated.
- ``av_offset``: lag in [-5, 5] frames maximising their cross-correlation (positive = generated lags real).
- ``mouth_psnr`` / ``mouth_ssim``: on the mouth box of the real frame, resampled to ``gan.mouth_crop`` square by
  roi_align: the mouth crop the GAN's mouth discriminator and train_gan's mouth metrics use.
``appearance`` judges the image stage alone: the held-out frames rendered with their *fitted* expression (the true
mouth shape, flame.parquet) instead of the lip model's, composited and passed through the generator; mouth PSNR /
SSIM of the generated crops and of the composites themselves (the baseline), on all frames and on the open-mouth frames
(real inner-lip gap above the clip's median), and ``appearance.colour_detail``: fine colour detail in the open
mouths (imagemetrics.colour_detail_per_image) of real, composite and generated crops, generated over real (above 1:
coloured speckles the real mouth lacks), and ``appearance.colour_cast``: the coarse colour difference from the real
mouth (imagemetrics.colour_cast_per_image, 0 = the real colours) of generated and composite crops there (a tint the
fine detail does not see), and ``appearance.interior_cast``: the same colours averaged inside the real mouth's
opening only (its FaceMesh inner-lip polygon: the teeth and cavity; imagemetrics.interior_colour_cast_per_image), so
a tint on small teeth is not diluted by lips and skin. ``temporal``: mean absolute frame-to-frame change inside the
mouth crop (0-255 levels), generated (whole chain and fitted expression) over the real footage's: 1 = as steady as the
real mouth, above 1 flicker. ``retrieval`` says whether the generator took mouths from the training footage (and why
not).
The same for two baselines: ``static`` (the pipeline with the mouth held closed: the closed-mouth frame's fitted
expression on every frame) and ``shifted`` (the generated video delayed by 3 frames; should give av_offset 3).

``cross_speaker`` (``evaluate.cross_speakers``): the face is also driven by the held-out speech of every other
presenter in the lip model (on the face's own held-out head poses, back and forth), MediaPipe FaceMesh reads the
generated frames, and their mouth opening (inner-lip gap over eye-corner distance) is correlated with the mouth of
the person who spoke: r at lag 0, the best lag in [-cross_max_lag, cross_max_lag] and r on voiced frames (Silero
VAD). Generated speakers (the demo) are left out of ``cross_speaker.mean_r``.

Writes reports/eval/NAME/: metrics.json, mouth_opening.csv + mouth_opening.png (real vs generated over time),
side_by_side.mp4 (real | generated, with the tail's audio), strip.png (a few real | generated pairs) and
open_mouths.png (the most open held-out mouths: real | composite | generated, fitted expression | generated, lip model).
"""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import InputError, exits_on_input_error
from ..lipmetrics import delayed
from ..paths import PresenterPaths

STAGE = "evaluate"


@dataclass(frozen=True)
class EvaluateParams:
    """params.yaml's ``evaluate`` group."""

    cross_speakers: bool  # also drive the face with every other presenter's held-out speech (see below)
    cross_max_lag: int  # best-lag search range of the cross-speaker scores, frames
    shift_frames: int  # the shifted baseline's delay
    max_lag: int  # av_offset search range, frames
    strip_pairs: int  # real | generated pairs in strip.png
    open_mouth_rows: int  # rows of open_mouths.png (the most open held-out frames, spread apart)
    batch_size: int  # run time only
    max_frames: int  # evaluate at most this many tail frames (0 = all)


METRIC_SIZE = 256  # landmark distances are reported in pixels of a 256 x 256 crop


def lip_landmark_ids() -> np.ndarray:
    """The 40 MediaPipe FaceMesh lip landmark indices (FACEMESH_LIPS), sorted."""
    from ..facemesh import LIPS

    return np.array(LIPS, np.int64)


# ---------------------------------------------------------------------------------------------------------------
# metrics (pure functions)

def lip_landmark_distance(real: np.ndarray, generated: np.ndarray, lip_ids: np.ndarray) -> float:
    """Mean over frames of the mean lip-point distance after mean-centring each frame's lip points.

    real, generated: [N, 478, 2] pixels (NaN rows = no face found; skipped). Returns NaN if no frame has both.
    """
    a = real[:, lip_ids, :2].astype(np.float64)  # [N, L, 2]
    b = generated[:, lip_ids, :2].astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    per_frame = np.linalg.norm(a - b, axis=-1).mean(axis=1)  # [N]
    valid = np.isfinite(per_frame)
    return float(per_frame[valid].mean()) if valid.any() else float("nan")


def fill_gaps(series: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaNs in a 1-D series (ends take the nearest value); all-NaN stays NaN."""
    series = np.asarray(series, np.float64)
    valid = np.isfinite(series)
    if valid.all() or not valid.any():
        return series
    x = np.arange(len(series))
    return np.interp(x, x[valid], series[valid])


def sync_metrics(real_lmk: np.ndarray, gen_lmk: np.ndarray, lip_ids: np.ndarray, scale: float,
                 max_lag: int) -> dict[str, float]:
    """LMD (px at the metric size), mouth-opening Pearson r and AV offset of one generated landmark track."""
    from ..lipmetrics import av_offset, pearson_r
    from ..synthesis import mouth_opening_from_landmarks

    real_open = fill_gaps(mouth_opening_from_landmarks(real_lmk))
    gen_open = fill_gaps(mouth_opening_from_landmarks(gen_lmk))
    out = {"lmd": lip_landmark_distance(real_lmk, gen_lmk, lip_ids) * scale}
    if np.isfinite(real_open).all() and np.isfinite(gen_open).all() and len(real_open) > 2 * max_lag + 1:
        out["mouth_opening_r"] = pearson_r(real_open, gen_open)
        out["av_offset"] = int(av_offset(real_open, gen_open, max_lag))
    else:
        out["mouth_opening_r"] = float("nan")
        out["av_offset"] = float("nan")
    return out


def mean_change(previous: np.ndarray | None, crops: np.ndarray) -> np.ndarray:
    """Mean absolute change (0-255 levels) from each crop to the one before: uint8 [B, h, w, 3] -> float64 [B]
    (B - 1 values when there is no ``previous`` crop)."""
    seq = crops if previous is None else np.concatenate([previous[None], crops])
    seq = seq.astype(np.int16)
    return np.abs(seq[1:] - seq[:-1]).mean(axis=(1, 2, 3)).astype(np.float64)


def open_mouth_rows(opening: np.ndarray, frames: np.ndarray, rows: int, spacing: int = 10) -> list[int]:
    """Up to ``rows`` of ``frames`` with the widest ``opening`` (same length), at least ``spacing`` frames apart."""
    chosen: list[int] = []
    for i in np.argsort(-opening, kind="stable"):
        if len(chosen) == rows:
            break
        if np.isfinite(opening[i]) and all(abs(int(frames[i]) - c) >= spacing for c in chosen):
            chosen.append(int(frames[i]))
    return sorted(chosen)


def labelled_grid(rows: list[list[np.ndarray]], labels: list[str], row_labels: list[str], cell: int = 160) -> np.ndarray:
    """Images (uint8 [h, w, 3]) in rows x columns, each resized to cell x cell, a header row with the column labels
    and each row's label on its first cell. uint8 RGB."""
    import cv2

    header = np.full((24, cell * len(labels), 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(header, label, (j * cell + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    out = [header]
    for cells, row_label in zip(rows, row_labels):
        line = np.concatenate([cv2.resize(c, (cell, cell), interpolation=cv2.INTER_CUBIC) for c in cells], axis=1)
        cv2.putText(line, row_label, (4, cell - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        out.append(line)
    return np.concatenate(out, axis=0)


class FaceMeshTracker:
    """MediaPipe FaceMesh (478 points, video mode) over a stream of crops: [B, 478, 2] pixels, NaN if no face."""

    def __init__(self):
        from ..solutions import face_mesh

        self.mesh = face_mesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                              min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def __call__(self, images: Iterable[np.ndarray]) -> np.ndarray:
        out = []
        for image in images:
            h, w = image.shape[:2]
            result = self.mesh.process(np.ascontiguousarray(image))
            if not result.multi_face_landmarks:
                out.append(np.full((478, 2), np.nan, np.float32))
                continue
            pts = result.multi_face_landmarks[0].landmark
            out.append(np.array([(p.x * w, p.y * h) for p in pts], np.float32))
        return np.stack(out)

    def close(self) -> None:
        self.mesh.close()


# ---------------------------------------------------------------------------------------------------------------
# the stage

@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    real_opening: np.ndarray   # [M] inner-lip gap (px at the metric size)
    gen_opening: np.ndarray    # [M]
    frames: np.ndarray         # [M] timeline frame indices of the tail


def tail_audio(samples: np.ndarray, rate: int, start: int, stop: int, fps: float) -> np.ndarray:
    """The audio of timeline frames [start, stop): float32 [T]."""
    a, b = int(round(start / fps * rate)), int(round(stop / fps * rate))
    seg = samples[a:b]
    need = b - a
    return seg if len(seg) >= need else np.concatenate([seg, np.zeros(need - len(seg), np.float32)])


def evaluate_presenter(paths: PresenterPaths, params: EvaluateParams, synthesis, root: Path, mouth_crop: int,
                       window_margin: int, progress: bool = True, synthesizer=None) -> EvaluationResult:
    """Run the crop-level speak pipeline on the held-out tail and score it (see the module docstring).
    ``mouth_crop``: gan.mouth_crop, the side of the mouth crops the mouth PSNR / SSIM compare.

    Writes side_by_side.mp4 and strip.png into paths.report("eval") as it goes; returns the metrics.
    """
    from ..avsync import SAMPLE_RATE, footage_audio
    from ..imagemetrics import (colour_cast_per_image, colour_detail_per_image, interior_colour_cast_per_image,
                                psnr_per_image, ssim_per_image)
    from ..lip import predict, speech_features
    from ..paths import LIP_CHECKPOINT
    from ..progress import Progress
    from ..synthesis import CropSynthesizer, closed_mouth_frame, load_presenter, mouth_opening_from_landmarks
    from ..compositing import inner_lip_masks, mouth_box
    from ..gan.mouth_discriminator import mouth_crops
    from ..videoio import VideoWriter

    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    start, stop = pres.heldout_start, pres.n_frames
    if params.max_frames:
        stop = min(stop, start + params.max_frames)
    n = stop - start
    if n <= 2 * params.max_lag + 1:
        raise InputError(paths.frames_table, f"held-out tail has only {n} frames; too short to evaluate")
    (samples, _), rate = footage_audio(paths.audio, paths.sync, pres.fps), SAMPLE_RATE  # on the video's clock
    audio = tail_audio(samples, rate, start, stop, pres.fps)
    features = speech_features(root / LIP_CHECKPOINT, audio, n, pres.fps)  # [n, C, D], as the model was trained
    expression = np.asarray(predict(root / LIP_CHECKPOINT, features, paths.name), np.float32)  # [n, 53]
    closed = closed_mouth_frame(pres.lmk_crop, max(start, 1), pres.detected)
    static_expression = np.repeat(pres.fitted["expression"][closed][None], n, axis=0)  # mouth held closed

    synth = synthesizer or CropSynthesizer(pres, synthesis, window_margin)
    from ..gan.retrieval import RetrievalState

    states = {k: RetrievalState() for k in ("generated", "static", "fitted")}  # one retrieval sequence per stream
    # open-mouth frames: real inner-lip gap (FaceMesh, frames where it found the face) above the clip's median
    gap = mouth_opening_from_landmarks(pres.lmk_crop)
    seen = pres.detected & np.isfinite(gap)
    median_gap = float(np.median(gap[seen])) if seen.any() else float("inf")
    is_open = seen & (gap > median_gap)
    tail = np.arange(start, stop)
    show_open = set(open_mouth_rows(np.where(seen[tail], gap[tail], -np.inf), tail, params.open_mouth_rows))
    open_cells: dict[int, list[np.ndarray]] = {}
    appearance = {k: {"psnr": [], "ssim": []} for k in ("generated", "composite")}
    colour_detail: dict[str, list[np.ndarray]] = {k: [] for k in ("real", "generated", "composite")}
    colour_cast: dict[str, list[np.ndarray]] = {k: [] for k in ("generated", "composite")}
    interior_cast: dict[str, list[np.ndarray]] = {k: [] for k in ("generated", "composite")}
    open_flags: list[np.ndarray] = []
    changes: dict[str, list[np.ndarray]] = {k: [] for k in ("real", "generated", "fitted")}
    last: dict[str, np.ndarray | None] = {k: None for k in changes}
    composite_params = synthesis.composites
    size = pres.crop_size
    scale = METRIC_SIZE / size
    shift = params.shift_frames
    out_dir = paths.report("eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    strip_at = set(np.linspace(0, n - 1, params.strip_pairs + 2).round().astype(int)[1:-1].tolist())
    strip: list[np.ndarray] = []

    trackers = {k: FaceMeshTracker() for k in ("real", "generated", "static")}
    lmk = {k: [] for k in trackers}
    scores = {k: {"psnr": [], "ssim": []} for k in ("generated", "static", "shifted")}
    recent: deque = deque(maxlen=shift + 1)  # generated crops of the last frames, for the shifted baseline
    batch = params.batch_size
    try:
        with VideoWriter(out_dir / "side_by_side.mp4", pres.fps, 2 * size, size, audio=audio, audio_rate=rate) as video, \
                Progress(total=n, unit="frame", desc=f"evaluate {paths.name}", disable=not progress) as bar:
            for b0 in range(0, n, batch):
                source = np.arange(start + b0, min(start + b0 + batch, stop))
                k = len(source)
                real = np.asarray(pres.crops[source])
                generated, _ = synth.synthesize(expression[b0:b0 + k], source, states["generated"])
                static, _ = synth.synthesize(static_expression[b0:b0 + k], source, states["static"])
                fitted, fitted_comp, _ = synth.synthesize_with_composites(pres.fitted["expression"][source], source,
                                                                          states["fitted"])
                shifted = []
                for g in generated:
                    recent.append(g)
                    shifted.append(recent[0])  # the frame `shift` steps back (the first one at the start)
                shifted = np.stack(shifted)
                boxes = np.array([mouth_box(pres.lmk_crop[i], size, composite_params) for i in source], np.float64)
                real_mouth = mouth_crops(real, boxes, mouth_crop)
                for name, images in (("generated", generated), ("static", static), ("shifted", shifted)):
                    mouths = mouth_crops(images, boxes, mouth_crop)
                    scores[name]["psnr"].append(psnr_per_image(mouths, real_mouth))
                    scores[name]["ssim"].append(ssim_per_image(mouths, real_mouth))
                    if name == "generated":
                        generated_mouth = mouths
                fitted_mouth = mouth_crops(fitted, boxes, mouth_crop)
                comp_mouth = mouth_crops(fitted_comp, boxes, mouth_crop)
                colour_detail["real"].append(colour_detail_per_image(real_mouth))
                # the real mouth's opening (FaceMesh inner lips) in the mouth crop: where its teeth and cavity are
                inside = mouth_crops(inner_lip_masks(pres.lmk_crop[source], size), boxes, mouth_crop)[..., 0] / 255.0
                for name, mouths in (("generated", fitted_mouth), ("composite", comp_mouth)):
                    appearance[name]["psnr"].append(psnr_per_image(mouths, real_mouth))
                    appearance[name]["ssim"].append(ssim_per_image(mouths, real_mouth))
                    colour_detail[name].append(colour_detail_per_image(mouths))
                    colour_cast[name].append(colour_cast_per_image(mouths, real_mouth))
                    interior_cast[name].append(interior_colour_cast_per_image(mouths, real_mouth, inside))
                open_flags.append(is_open[source])
                for name, mouths in (("real", real_mouth), ("generated", generated_mouth), ("fitted", fitted_mouth)):
                    changes[name].append(mean_change(last[name], mouths))
                    last[name] = mouths[-1]
                for j, src in enumerate(source):
                    if int(src) in show_open:  # mouth boxes cut from the full crops, shown large
                        open_cells[int(src)] = [mouth_crops(img[j:j + 1], boxes[j:j + 1], 128)[0]
                                                for img in (real, fitted_comp, fitted, generated)]
                for name, images in (("real", real), ("generated", generated), ("static", static)):
                    lmk[name].append(trackers[name](images))
                pairs = np.concatenate([real, generated], axis=2)  # [B, S, 2S, 3]: real | generated
                video.write(pairs)
                strip.extend(pairs[j] for j in range(k) if b0 + j in strip_at)
                bar.update(k)
    finally:
        for tracker in trackers.values():
            tracker.close()
    lmk = {k: np.concatenate(v) for k, v in lmk.items()}
    lip_ids = lip_landmark_ids()
    max_lag = params.max_lag
    metrics: dict[str, Any] = {"frames": n, "heldout_start": start, "fps": pres.fps,
                               "face_found_fraction": float(np.isfinite(lmk["generated"][:, 0, 0]).mean())}
    tracks = {"generated": lmk["generated"], "static": lmk["static"], "shifted": delayed(lmk["generated"], shift)}
    for name, track in tracks.items():
        m = sync_metrics(lmk["real"], track, lip_ids, scale, max_lag)
        m["mouth_psnr"] = _finite_mean(np.concatenate(scores[name]["psnr"]))
        m["mouth_ssim"] = float(np.mean(np.concatenate(scores[name]["ssim"])))
        metrics["model" if name == "generated" else f"baseline_{name}"] = m
    metrics["appearance"] = appearance_metrics(appearance, np.concatenate(open_flags), median_gap * scale)
    metrics["appearance"]["colour_detail"] = colour_detail_metrics(
        {k: np.concatenate(v) for k, v in colour_detail.items()}, np.concatenate(open_flags))
    metrics["appearance"]["colour_cast"] = colour_cast_metrics(
        {k: np.concatenate(v) for k, v in colour_cast.items()}, np.concatenate(open_flags))
    metrics["appearance"]["interior_cast"] = colour_cast_metrics(
        {k: np.concatenate(v) for k, v in interior_cast.items()}, np.concatenate(open_flags))
    metrics["temporal"] = temporal_metrics({k: np.concatenate(v) for k, v in changes.items()})
    metrics["retrieval"] = ("off (generator without retrieval)" if synth.bank is None
                            else f"off: {synth.bank.note}" if synth.bank.empty else "on")
    if open_cells:
        import cv2

        labels = ["real", "composite (fitted)", "generated (fitted)", "generated (lip model)"]
        grid = labelled_grid(list(open_cells.values()), labels, [f"frame {i}" for i in open_cells])
        ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        if ok:
            _atomic_bytes(out_dir / "open_mouths.png", png.tobytes())
    if params.cross_speakers:
        metrics["cross_speaker"] = cross_speaker_evaluation(paths, pres, synth, root, params,
                                                            synthesis.split.heldout_fraction, progress)
    if strip:
        import cv2

        image = np.concatenate(strip, axis=0)  # pairs stacked vertically
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if ok:
            _atomic_bytes(out_dir / "strip.png", png.tobytes())
    return EvaluationResult(metrics, fill_gaps(mouth_opening_from_landmarks(lmk["real"])) * scale,
                            fill_gaps(mouth_opening_from_landmarks(lmk["generated"])) * scale,
                            np.arange(start, stop))


def cross_speaker_evaluation(paths: PresenterPaths, pres, synth, root: Path, params: EvaluateParams,
                             heldout_fraction: float, progress: bool = True) -> dict[str, Any]:
    """Drive ``paths``' face with every other presenter's held-out speech; MediaPipe on the generated crops vs the
    real speaker's mouth (see the module docstring). {speaker: metrics} plus the mean over real speakers."""
    from ..lip import load_lip_model, predict, speech_features
    from ..lipmetrics import mouth_opening_ratio, pair_metrics
    from ..paths import LIP_CHECKPOINT
    from ..synthesis import pingpong_schedule
    from ..testspeech import load_speaker_clip

    checkpoint = root / LIP_CHECKPOINT
    max_lag = params.cross_max_lag
    out: dict[str, Any] = {}
    for name in load_lip_model(checkpoint, "cpu").model.config.presenters:
        if name == paths.name:
            continue
        speaker = load_speaker_clip(PresenterPaths.of(name, root), heldout_fraction)
        if abs(speaker.fps - pres.fps) > 1e-3:  # the curves are compared frame by frame
            out[name] = {"skipped": f"{speaker.fps:g} fps, this presenter {pres.fps:g}"}
            continue
        n = speaker.frames
        if n <= 2 * max_lag + 2:
            continue
        expression = np.asarray(predict(checkpoint, speech_features(checkpoint, speaker.audio, n, speaker.fps),
                                        paths.name), np.float32)  # [n, 53]
        poses = pingpong_schedule(n, pres.heldout_start, pres.heldout_start, pres.n_frames)  # the face's own tail
        batch = params.batch_size
        tracker = FaceMeshTracker()
        try:
            tracks = []
            for b0 in range(0, n, batch):
                generated, _ = synth.synthesize(expression[b0:b0 + batch], poses[b0:b0 + batch])
                tracks.append(tracker(generated))
        finally:
            tracker.close()
        track = np.concatenate(tracks)  # [n, 478, 2], NaN where FaceMesh found no face
        generated_opening = fill_gaps(mouth_opening_ratio(track))
        if not np.isfinite(generated_opening).all():
            out[name] = {"skipped": "FaceMesh found no face in the generated frames"}
            continue
        m = pair_metrics(generated_opening, speaker.real_opening, speaker.voiced, max_lag)
        out[name] = {"frames": n, "generated_speaker": speaker.synthetic,
                     "face_found_fraction": float(np.isfinite(track[:, 0, 0]).mean()),
                     **{k: m[k] for k in ("r", "best_lag", "r_best_lag", "r_voiced")}}
        if progress:
            print(f"evaluate {paths.name}: driven by {name}'s held-out speech: r {m['r']:+.2f}, "
                  f"best lag {m['best_lag']:+d}, voiced r {m['r_voiced']:+.2f}")
    real = [v["r"] for v in out.values() if "r" in v and not v["generated_speaker"]]
    return {"speakers": out, "mean_r": float(np.mean(real)) if real else float("nan")}


def appearance_metrics(scores: dict[str, dict[str, list[np.ndarray]]], is_open: np.ndarray,
                       threshold: float) -> dict[str, Any]:
    """Mouth PSNR / SSIM with the fitted expression: {generated, composite} x {all frames, open-mouth frames}."""
    out: dict[str, Any] = {"open_frames": int(is_open.sum()), "open_threshold_px": threshold}
    for name, per in scores.items():
        psnr, ssim = np.concatenate(per["psnr"]), np.concatenate(per["ssim"])
        out["model" if name == "generated" else name] = {
            "mouth_psnr": _finite_mean(psnr), "mouth_ssim": float(ssim.mean()),
            "open_mouth_psnr": _finite_mean(psnr[is_open]) if is_open.any() else float("nan"),
            "open_mouth_ssim": float(ssim[is_open].mean()) if is_open.any() else float("nan")}
    return out


def colour_detail_metrics(detail: dict[str, np.ndarray], is_open: np.ndarray) -> dict[str, float]:
    """Fine colour detail inside the mouth crop (imagemetrics.colour_detail_per_image), fitted expression, on the
    open-mouth frames (all frames when none is open): real, composite and generated, and the generated / real ratio
    (> 1: coloured speckles the real mouth does not have)."""
    out = open_means(detail, is_open)
    real = out["open_real"]
    out["open_generated_ratio"] = out["open_generated"] / real if real > 0 else float("nan")
    return out


def open_means(streams: dict[str, np.ndarray], is_open: np.ndarray) -> dict[str, float]:
    """{"open_NAME": mean of each stream's per-frame values [N] on the open-mouth frames (all frames when none is
    open)}."""
    rows = is_open if is_open.any() else np.ones_like(is_open)
    return {f"open_{name}": _finite_mean(values[rows], empty=float("nan")) for name, values in streams.items()}


def colour_cast_metrics(cast: dict[str, np.ndarray], is_open: np.ndarray) -> dict[str, float]:
    """Mean colour difference from the real mouth (imagemetrics.colour_cast_per_image over the crop, or
    interior_colour_cast_per_image inside the opening), fitted expression, on the open-mouth frames (all frames when
    none is open; frames with no opening to measure, NaN, left out), per stream (generated, composite); 0 = the real
    colours."""
    return open_means(cast, is_open)


def temporal_metrics(changes: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean frame-to-frame mouth change of each stream and its ratio to the real footage's."""
    real = float(changes["real"].mean()) if len(changes["real"]) else float("nan")
    out = {"real_mouth_change": real}
    for name in ("generated", "fitted"):
        value = float(changes[name].mean()) if len(changes[name]) else float("nan")
        out[f"{name}_mouth_change"] = value
        out[f"{name}_ratio"] = value / real if real > 0 else float("nan")
    return out


def _finite_mean(values: np.ndarray, empty: float = float("inf")) -> float:
    """Mean of the finite values (PSNR is inf for identical crops; a closed mouth has no inside); ``empty`` when
    there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else empty


def _atomic_bytes(path: Path, data: bytes) -> None:
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_outputs(result: EvaluationResult, out_dir: Path, fps: float) -> None:
    """metrics.json, mouth_opening.csv and mouth_opening.png."""
    import pandas as pd

    from ..atomic import atomic_path, json_safe, write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", json_safe(result.metrics))
    table = pd.DataFrame({"frame": result.frames, "time_s": result.frames / fps,
                          "real": result.real_opening, "generated": result.gen_opening})
    with atomic_path(out_dir / "mouth_opening.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(table["time_s"], table["real"], label="real", lw=1.2)
    ax.plot(table["time_s"], table["generated"], label="generated", lw=1.2)
    m = result.metrics["model"]
    ax.set_title(f"mouth opening, held-out tail (r = {m['mouth_opening_r']:.2f}, AV offset {m['av_offset']} frames)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip gap (px @256)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(out_dir / "mouth_opening.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("interim", type=Path, help="data/interim/NAME")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from ..gan.trainer import GanParams
    from ..params import load_config
    from ..synthesis import SpeakParams, SynthesisParams, check_presenter
    from ..tracking import flatten, stage_run

    paths = PresenterPaths.from_folder(args.interim)
    root = args.interim.parent.parent.parent
    check_presenter(paths.name, root, need_raw=False)
    params = load_config(EvaluateParams, STAGE, root / "params.yaml")
    synthesis = SynthesisParams.load(root / "params.yaml")
    mouth_crop = load_config(GanParams, "gan", root / "params.yaml").mouth_crop
    # the GAN window of speak (speak.window_margin), so the held-out video is made exactly as speak makes it
    window_margin = load_config(SpeakParams, "speak", root / "params.yaml").window_margin
    result = evaluate_presenter(paths, params, synthesis, root, mouth_crop, window_margin, progress=not args.quiet)
    out_dir = paths.report("eval")
    write_outputs(result, out_dir, float(result.metrics["fps"]))
    with stage_run(STAGE, paths.name, {"evaluate": params}) as mlflow:
        numbers = {k: v for k, v in flatten(result.metrics).items()
                   if isinstance(v, (int, float)) and np.isfinite(v)}
        mlflow.log_metrics(numbers, step=0)
        for name in ("metrics.json", "mouth_opening.png", "mouth_opening.csv", "strip.png", "side_by_side.mp4"):
            if (out_dir / name).exists():
                mlflow.log_artifact(str(out_dir / name))
    m = result.metrics["model"]
    a, t = result.metrics["appearance"], result.metrics["temporal"]
    # two lines: a log line stays readable (and under 300 characters) in CI logs
    print(f"evaluate {paths.name}: {result.metrics['frames']} frames; LMD {m['lmd']:.2f} px, "
          f"r {m['mouth_opening_r']:.3f}, AV offset {m['av_offset']}, mouth PSNR {m['mouth_psnr']:.2f} dB, "
          f"SSIM {m['mouth_ssim']:.3f}; mouth change ratio {t['generated_ratio']:.2f}; "
          f"retrieval {result.metrics['retrieval']} -> {out_dir}")
    print(f"evaluate {paths.name}: fitted expression: {a['model']['mouth_psnr']:.2f} dB / "
          f"{a['model']['mouth_ssim']:.3f} (composite {a['composite']['mouth_psnr']:.2f} dB), "
          f"open mouths {a['model']['open_mouth_psnr']:.2f} dB, "
          f"colour detail {a['colour_detail']['open_generated_ratio']:.2f} x real, colour cast "
          f"{a['colour_cast']['open_generated']:.2f} (composite {a['colour_cast']['open_composite']:.2f}), inside the "
          f"opening {a['interior_cast']['open_generated']:.2f} ({a['interior_cast']['open_composite']:.2f})")


if __name__ == "__main__":
    main()
