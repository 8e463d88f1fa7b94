"""Stage train_gan@NAME: train the composite -> real-frame GAN of one presenter and evaluate it on the held-out tail.
Stage gan_prior: train the GAN every presenter's GAN starts from, on one presenter's footage.

    python -m talkinghead.stages.train_gan data/interim/demo --prior --out models/gan_prior
    python -m talkinghead.stages.train_gan data/interim/NAME --out models/gan/NAME --init-from models/gan_prior/prior.pt

Inputs: data/processed/NAME/composites.npy uint8 [N, S, S, 3] and composites.parquet (schemas.COMPOSITES),
data/interim/NAME/frames.npy (the real crops); with gan.retrieval also flame.parquet and lip_coeffs.parquet (mouth
shapes for retrieval, gan/retrieval.py). Outputs: models/gan/NAME/gan.pt (generator for inference), mouth_bank.npz
(with gan.retrieval) and train_state.pt (resumable training state; the folder is DVC `persist: true`, so re-running
after a kill resumes), reports/gan/NAME/metrics.json (+ sample grids, losses.csv); gan.pt is registered in MLflow as a
new version of ``talkinghead-gan-NAME`` (registry.py). Under ``torchrun`` it trains with DDP (gloo on CPU, nccl on GPU).

The prior (params ``gan_prior``): what a generator learns in its first hundreds of steps -- put the render into the
frame without a seam, take the painted mouth, match skin and light -- is not one presenter's, while a real presenter
often has only seconds of footage. So ``--prior`` trains a GAN with the ``gan`` settings on ``gan_prior.presenter``
(the embedded demo) for the ``gan_prior`` budget and writes its weights (models/gan_prior/prior.pt, no optimiser
state); ``--init-from`` starts a presenter's training from them instead of random weights, with fresh optimisers
(gan_prior.max_steps 0 writes a prior file that says "none": random weights, as before).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_path, write_json
from ..errors import InputError, exits_on_input_error
from ..gan import generate, load_generator
from ..gan.face_discriminator import PatchDiscriminatorConfig
from ..gan.generator import GeneratorConfig, to_uint8
from ..gan.mouth_discriminator import MouthDiscriminatorConfig, mouth_crops
from ..gan.retrieval import MouthBank, RetrievalState, lip_geometry, retrieved_inputs
from ..gan.trainer import Batch, GanData, GanParams, GanTrainer, RetrievalData
from ..gan_prior import GanPriorParams
from ..headmodel import HeadModelParams, load_head_model
from ..imagemetrics import psnr_per_image, ssim_per_image
from ..parallel import choose_threads, init_distributed
from ..paths import GAN_PRIOR, GAN_PRIOR_STATE, PresenterPaths
from ..params import load_config
from ..progress import print_summary
from ..schemas import COMPOSITES, LIP_COEFFS, PARAMETERS, column_array, read_table
from ..split import SplitParams, heldout_start
from ..tensorfile import load_tensor

GRID_ROWS = 6


def load_gan_data(paths: PresenterPaths, heldout_fraction: float) -> GanData:
    """Memory-map one presenter's composites, real frames and mouth boxes, and split them by time.

    Training rows: heldout flag False *and* before ``split.heldout_start`` (both must agree the frame is trainable).
    """
    table = read_table(paths.composites_table, COMPOSITES)
    n = len(table)
    composites = load_tensor(paths.composites, np.uint8, (None, None, 3), n)
    frames = load_tensor(paths.frames, np.uint8, composites.shape[1:], n)
    if composites.shape[1] != composites.shape[2]:
        raise InputError(paths.composites, f"frames must be square, got {composites.shape[1:3]}")
    if not np.array_equal(table["frame"].to_numpy(), np.arange(n)):
        raise InputError(paths.composites_table, "column 'frame' must be 0..N-1 in order")
    boxes = column_array(table, "mouth_box", (4,)).astype(np.float32)
    heldout = table["heldout"].to_numpy(bool)
    train_index = np.flatnonzero(~heldout & (np.arange(n) < heldout_start(n, heldout_fraction)))
    heldout_index = np.flatnonzero(heldout)
    if len(train_index) == 0 or len(heldout_index) == 0:
        raise InputError(paths.composites_table,
                         f"need training and held-out frames, got {len(train_index)} and {len(heldout_index)}")
    return GanData(composites, frames, boxes, train_index.astype(np.int64), heldout_index.astype(np.int64))


def _by_frame(path: Path, schema, n: int):
    """A per-frame table sorted by frame; InputError unless it holds exactly frames 0..n-1."""
    table = read_table(path, schema).sort_values("frame").reset_index(drop=True)
    if not np.array_equal(table["frame"].to_numpy(), np.arange(n)):
        raise InputError(path, f"expected one row per frame 0..{n - 1} (composites has {n}), got {len(table)} rows")
    return table


def load_retrieval(paths: PresenterPaths, data: GanData, params: GanParams, head_model: HeadModelParams) -> RetrievalData:
    """The mouth bank (training rows, fitted expression) and each row's retrieval candidates for the expression its
    composite renders (the lip model's, lip_coeffs.parquet), its own +-retrieval_exclude frames left out."""
    n = len(data.composites)
    fitted = _by_frame(paths.flame, PARAMETERS, n)
    lip = _by_frame(paths.lip_coeffs, LIP_COEFFS, n)
    model = load_head_model(head_model).eval()
    columns = {k: column_array(fitted, k) for k in ("shape", "expression", "pose", "camera")}
    fitted_geometry = lip_geometry(model, columns, data.image_size)
    rendered = lip_geometry(model, dict(columns, expression=column_array(lip, "expression")), data.image_size)
    bank = MouthBank.build(data.train_index, fitted_geometry, params.bank_min_opening, params.retrieval_stickiness,
                           params.retrieval_exclude)
    candidates = bank.candidates(rendered.keys, params.retrieval_candidates, np.arange(n), params.retrieval_exclude)
    return RetrievalData(bank, candidates, rendered.lips, rendered.keys,
                         rendered.inner if params.paint_mouth else None)


def sample_grid(composite: np.ndarray, generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] x 3 -> one uint8 image, a row per frame: composite | generated | real."""
    rows = [np.concatenate([c, g, r], axis=1) for c, g, r in zip(composite, generated, real)]
    return np.concatenate(rows, axis=0)


def write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # RGB -> BGR
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def write_losses(path: Path, curve: list[dict[str, float]]) -> None:
    """The losses logged during this training session (a run resumed after a kill: from where it resumed), one row
    per ``gan.log_every`` steps."""
    columns = list(curve[0]) if curve else ["step"]
    with atomic_path(path) as tmp:
        pd.DataFrame(curve, columns=columns).to_csv(tmp, index=False, float_format="%.6g")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    grid: np.ndarray  # uint8 sample grid of held-out frames
    mouth_grid: np.ndarray  # the same frames' mouth crops, enlarged


def evaluate(generator, data: GanData, mouth_size: int = 64, batch_size: int = 16) -> Evaluation:
    """PSNR / SSIM on the held-out tail, GAN output vs real, and the composite itself vs real as the baseline.
    With ``data.retrieval`` the held-out tail retrieves its mouths as one sequence (as speak does)."""
    from ..progress import Progress

    state = RetrievalState()
    scores: dict[str, list[np.ndarray]] = {}
    show = set(np.linspace(0, len(data.heldout_index) - 1, GRID_ROWS).round().astype(int).tolist())
    shown: list[tuple[np.ndarray, ...]] = []
    for start in Progress(range(0, len(data.heldout_index), batch_size), desc="gan eval", unit="batch"):
        rows = data.heldout_index[start:start + batch_size]
        comp, real = np.asarray(data.composites[rows]), np.asarray(data.frames[rows])
        retrieved = painted = None
        if data.retrieval is not None:
            r = data.retrieval
            picks = r.bank.retrieve(r.target_keys[rows], state)
            comp, retrieved, painted = retrieved_inputs(comp, data.frames, r.bank, picks, r.target_lips[rows],
                                                        None if r.target_inner is None else r.target_inner[rows])
        fake = generate(generator, comp, retrieved=retrieved, painted=painted)
        boxes = data.boxes[rows]
        crops = {k: mouth_crops(v, boxes, mouth_size) for k, v in (("comp", comp), ("fake", fake), ("real", real))}
        for name, images, mouths in (("gan", fake, crops["fake"]), ("composite", comp, crops["comp"])):
            for metric, fn in (("psnr", psnr_per_image), ("ssim", ssim_per_image)):
                scores.setdefault(f"{name}_full_{metric}", []).append(fn(images, real))
                scores.setdefault(f"{name}_mouth_{metric}", []).append(fn(mouths, crops["real"]))
        for j in range(len(rows)):
            if start + j in show:
                shown.append((comp[j], fake[j], real[j], crops["comp"][j], crops["fake"][j], crops["real"][j]))
    metrics = {k: float(np.mean(np.concatenate(v))) for k, v in sorted(scores.items())}
    for part in ("full", "mouth"):
        for metric in ("psnr", "ssim"):
            metrics[f"gain_{part}_{metric}"] = metrics[f"gan_{part}_{metric}"] - metrics[f"composite_{part}_{metric}"]
    metrics["heldout_frames"] = float(len(data.heldout_index))
    parts = [np.stack(p) for p in zip(*shown)]
    enlarge = data.image_size // mouth_size
    big = [np.repeat(np.repeat(p, enlarge, axis=1), enlarge, axis=2) for p in parts[3:]]
    return Evaluation(metrics, sample_grid(*parts[:3]), sample_grid(*big))


def build_trainer(params: GanParams, device: torch.device) -> GanTrainer:
    gen_config = GeneratorConfig(channels=params.channels, use_reference=params.use_reference,
                                 use_retrieval=params.retrieval, paint_mouth=params.retrieval and params.paint_mouth,
                                 image_size=params.image_size, chroma_pool=params.chroma_pool,
                                 keep_painted_colour=(params.retrieval and params.paint_mouth
                                                      and params.keep_mouth_colour))
    face_config = PatchDiscriminatorConfig(base_channels=params.d_channels, scales=params.d_scales)
    mouth_config = MouthDiscriminatorConfig(crop_size=params.mouth_crop, base_channels=params.d_channels)
    return GanTrainer(gen_config, params, face_config, mouth_config, device)


def prior_digest(prior: dict) -> str:
    """Hash of a prior's configs and weights (not of its file: torch.save of the same weights need not give the same
    bytes, and rewriting an unchanged prior must not restart every presenter's training)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({k: prior.get(k) for k in ("generator_config", "face_config", "mouth_config")},
                                  sort_keys=True).encode())
    for part in ("generator", "face_d", "mouth_d"):
        for name, tensor in sorted(prior[part].items()):
            h.update(f"{part}.{name}".encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_training_data(paths: PresenterPaths, params: GanParams, split: SplitParams, head_model: HeadModelParams,
                       label: str) -> GanData:
    """One presenter's GAN data checked against gan.image_size, with the mouth bank when gan.retrieval is on (an
    empty bank is said on stderr, prefixed with ``label``)."""
    data = load_gan_data(paths, split.heldout_fraction)
    if data.image_size != params.image_size:
        raise InputError(paths.composites, f"frames are {data.image_size} px, gan.image_size is {params.image_size}")
    if params.retrieval:
        data.retrieval = load_retrieval(paths, data, params, head_model)
        if data.retrieval.bank.empty:
            print(f"{label} {paths.name}: {data.retrieval.bank.note}", file=sys.stderr)
    return data


def fresh_trainer(params: GanParams) -> GanTrainer:
    """A trainer with random weights on this process's device (DDP rank's GPU or the CPU), its CPU threads set."""
    device = init_distributed().device
    torch.set_num_threads(choose_threads(params.threads))
    return build_trainer(params, device)


def load_prior(path: Path) -> tuple[dict | None, str, str]:
    """A prior file written by ``train_prior`` -> (its weights, or None for "no prior"; their digest; a description
    for metrics and logs)."""
    if not path.is_file():
        raise InputError(path, "GAN prior missing; run `dvc repro gan_prior`")
    try:  # weights_only: tensors and plain values; nothing in it may run code
        prior = torch.load(path, map_location="cpu", weights_only=True)
        presenter, steps = prior["presenter"], int(prior["steps"])
        if presenter is not None and not all(isinstance(prior[k], dict) for k in ("generator_config", "face_config",
                                                                                 "mouth_config")):
            raise TypeError("its network configs are not mappings")
        digest = "none" if presenter is None else prior_digest(prior)  # every part must be there
    except Exception as exc:  # a truncated file, a pickled object, a missing key
        raise InputError(path, f"not a GAN prior ({exc.__class__.__name__}: {exc}); rerun `dvc repro gan_prior`") from exc
    if presenter is None:
        return None, digest, "random (gan_prior.max_steps 0)"
    return prior, digest, f"prior: {steps} steps on {presenter}"


def prior_budget(params: GanParams, prior: GanPriorParams) -> GanParams:
    """The ``gan`` settings with the prior's budget: it trains the whole budget (no target_loss stop)."""
    return dataclasses.replace(params, max_steps=prior.max_steps, max_seconds=prior.max_seconds, target_loss=0.0)


def train_prior(paths: PresenterPaths, params: GanParams, prior: GanPriorParams, split: SplitParams,
                head_model: HeadModelParams, out: Path, progress: bool = True) -> dict:
    """Train the prior on ``paths``' training frames (resumable: out/train_state.pt) and write out/prior.pt.
    Returns a summary (presenter, steps, seconds)."""
    from ..tracking import stage_run

    prior_file, state_file = out / GAN_PRIOR.name, out / GAN_PRIOR_STATE.name
    out.mkdir(parents=True, exist_ok=True)
    if not prior.enabled:  # both files still exist (DVC outputs), saying "none"
        for path in (state_file, prior_file):
            with atomic_path(path) as tmp:
                torch.save({"presenter": None, "steps": 0}, tmp)
        return {"presenter": None, "steps": 0, "seconds": 0.0}
    data = load_training_data(paths, params, split, head_model, "gan_prior")
    trainer = fresh_trainer(prior_budget(params, prior))
    if state_file.exists() and not trainer.load(state_file, data):
        print(f"{state_file}: not a training state of these gan settings and data; training the prior from the start",
              file=sys.stderr)
    # the DVC stage is plain gan_prior (not per presenter); its presenter is a param
    with (stage_run("gan_prior", None, {"gan": params, "gan_prior": prior, "split": split})
          if trainer.rank == 0 else _null()) as mlflow:
        def on_log(losses: dict[str, float], step: int) -> None:
            mlflow.log_metrics(losses, step=step)

        trainer.fit(data, state_file, on_log if trainer.rank == 0 else None, progress=progress)
        if trainer.rank != 0:
            return {}
        with atomic_path(prior_file) as tmp:
            torch.save({"presenter": paths.name, "steps": trainer.step, **trainer.prior_weights()}, tmp)
        mlflow.log_metrics({"steps": float(trainer.step), "train_seconds": trainer.elapsed_s}, step=trainer.step)
    return {"presenter": paths.name, "steps": trainer.step, "seconds": round(trainer.elapsed_s, 1)}


def train_gan(paths: PresenterPaths, params: GanParams, split: SplitParams, head_model: HeadModelParams,
              progress: bool = True, prior_file: Path | None = None) -> dict:
    """Train (resuming from ``paths.gan_train_state`` when it matches the config and the prior), export gan.pt (and
    with gan.retrieval the mouth bank, mouth_bank.npz), evaluate. ``prior_file``: start from a prior's weights
    (``train_prior``; None: random weights).

    Returns the held-out metrics (also written to ``paths.report("gan")``/metrics.json).
    """
    from ..registry import register_gan
    from ..tracking import stage_run

    name = paths.name
    out = paths.gan_dir
    report_dir = paths.report("gan")
    data = load_training_data(paths, params, split, head_model, "train_gan")
    trainer = fresh_trainer(params)
    start = "random"
    if prior_file is not None:
        prior, digest, start = load_prior(prior_file)
        if prior is not None:
            try:
                trainer.start_from(prior, digest)
            except ValueError as exc:
                raise InputError(prior_file, f"a prior for other gan settings: {exc}; rerun `dvc repro gan_prior`") from exc
    resumed = paths.gan_train_state.exists() and trainer.load(paths.gan_train_state, data)
    if paths.gan_train_state.exists() and not resumed:
        print(f"{paths.gan_train_state}: made with other gan params, data or prior; training from the start",
              file=sys.stderr)  # load() checks before it changes anything: the trainer is as it started
    rank0 = trainer.rank == 0
    samples_dir = out / "samples"

    curve: list[dict[str, float]] = []  # this session's logged losses -> losses.csv (DVC plot, report)

    with (stage_run("train_gan", name, {"gan": params, "split": split}) if rank0 else _null()) as mlflow:
        def on_log(losses: dict[str, float], step: int) -> None:
            mlflow.log_metrics(losses, step=step)
            curve.append({"step": step, **losses})

        def on_sample(batch: Batch, fake: torch.Tensor, step: int) -> None:
            k = min(4, batch.real.shape[0])
            grid = sample_grid(to_uint8(batch.composite[:k]).cpu().numpy(), to_uint8(fake[:k]).cpu().numpy(),
                               to_uint8(batch.real[:k]).cpu().numpy())
            path = samples_dir / f"step_{step:06d}.png"
            write_png(path, grid)
            mlflow.log_artifact(str(path), artifact_path="samples")

        if rank0:
            mlflow.log_params({"resumed_from_step": trainer.step, "train_frames": len(data.train_index),
                               "initial_weights": start,
                               "reference_row": trainer.reference_row if trainer.reference_row is not None else -1})
        reason = trainer.fit(data, paths.gan_train_state, on_log if rank0 else None, on_sample if rank0 else None,
                             progress=progress)
        if not rank0:
            return {}
        trainer.export(paths.gan_checkpoint)
        if data.retrieval is not None:
            data.retrieval.bank.save(paths.mouth_bank)
        elif paths.mouth_bank.exists():  # a bank of an earlier retrieval run would not match this generator
            paths.mouth_bank.unlink()
        # a new version of the registered talkinghead-gan-NAME (registry.py), a held-out composite as its example
        register_gan(mlflow, paths.gan_checkpoint, name, np.asarray(data.composites[data.heldout_index[:1]]),
                     mouth_bank=paths.mouth_bank if data.retrieval is not None else None)
        generator = load_generator(paths.gan_checkpoint, trainer.device)
        evaluation = evaluate(generator, data, mouth_size=params.mouth_crop)
        metrics = dict(evaluation.metrics, steps=float(trainer.step), train_seconds=trainer.elapsed_s,
                       final_g_loss_ema=float(trainer.loss_ema or 0.0))
        bank = data.retrieval.bank if data.retrieval is not None else None
        metrics["retrieval_bank_frames"] = float(len(bank.frames)) if bank is not None else 0.0
        report_dir.mkdir(parents=True, exist_ok=True)
        write_losses(report_dir / "losses.csv", curve)
        write_png(report_dir / "heldout_samples.png", evaluation.grid)
        write_png(report_dir / "heldout_mouths.png", evaluation.mouth_grid)
        retrieval = "off (gan.retrieval false)" if bank is None else (f"off: {bank.note}" if bank.empty else "on")
        write_json(report_dir / "metrics.json", dict(metrics, stop_reason=reason, retrieval=retrieval,
                                                     initial_weights=start))
        mlflow.log_metrics(metrics, step=trainer.step)
        mlflow.set_tag("gan_stop_reason", reason)
        for png in ("heldout_samples.png", "heldout_mouths.png"):
            mlflow.log_artifact(str(report_dir / png), artifact_path="heldout")
    return metrics


class _null:
    """Stands in for the MLflow run on non-zero DDP ranks (they log nothing)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("interim", type=Path,
                        help="data/interim/NAME (frames.npy); composites are read from data/processed/NAME")
    parser.add_argument("--out", type=Path, required=True, help="models/gan/NAME (with --prior: models/gan_prior)")
    parser.add_argument("--prior", action="store_true", help="train the GAN prior (params gan_prior) into --out")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="models/gan_prior/prior.pt: start from the prior's weights instead of random ones")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.prior and args.init_from is not None:
        parser.error("--prior trains the prior; --init-from starts from one: use one of them")
    try:
        paths = dataclasses.replace(PresenterPaths.from_folder(args.interim), gan_dir=args.out)
        gan, split, head = (load_config(GanParams, "gan"), load_config(SplitParams, "split"),
                            load_config(HeadModelParams, "head_model"))
        if args.prior:
            summary = train_prior(paths, gan, load_config(GanPriorParams, "gan_prior"), split, head, args.out,
                                  progress=not args.no_progress)
            if summary:
                print_summary("gan_prior", summary)
            return
        metrics = train_gan(paths, gan, split, head, progress=not args.no_progress, prior_file=args.init_from)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if metrics:
        print_summary(f"train_gan {paths.name}",
                      {k: round(v, 4) for k, v in metrics.items() if k.startswith(("gan_", "composite_"))})


if __name__ == "__main__":
    main()
