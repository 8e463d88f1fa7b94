"""Training of the lip model: losses, optimiser steps, validation, early stopping, DDP.

Losses (targets standardised per presenter and dimension with that presenter's training frames' mean/std, so the
presenters' neutral faces and ranges of motion differ only in the output units, not in what the network must learn):
- expression: MSE of the 53-d coefficients;
- velocity: MSE of their frame-to-frame differences (keeps the mouth from jittering);
- lip vertex: MSE of the head model's lip vertices (presenter's shape, zero pose) from the predicted vs the fitted
  expression, divided by the fitted lip vertices' variance so its scale does not depend on the model's units.
  Optional (``lip_vertex_weight`` 0 disables it and the head-model dependency).

Validation loss: the same weighted objective on every presenter's validation slice (just before the held-out tail),
divided by the objective of the static prediction (each presenter's training mean) on the same frames, pooled over
all validation frames. It is scale-free: 1.0 = no better than a still face, whatever the presenters and their
ranges of motion, so ``target_loss`` means the same for one presenter or ten. Pooled rather than averaged per
presenter: a few-second clip's validation slice (under a second) is too noisy to steer model selection alone.
Each presenter's own ratio is reported as ``val_rel_<name>``.

Early stop: as soon as the validation loss is below ``target_loss``, after ``patience`` evaluations without
improvement, after ``max_steps`` or ``max_seconds``. The best validation weights are kept.

DDP: run under torchrun (gloo on CPU, nccl on CUDA). Batches are sharded deterministically: every rank draws the
same global permutation of training windows and takes ``global_batch[rank::world]``, so 1 and N processes see the
same global batch at every step (the global batch size must divide by the world size). Rank 0 evaluates, decides
to stop, and broadcasts the decision.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..headmodel.base import inner_lip_gap
from ..parallel import Distributed
from ..split import TimeSplit
from .model import LipConfig, LipTransformer


@dataclass(frozen=True)
class LipParams:
    """params.yaml's ``lip`` group (values there; built by ``params.load_config``): the architecture, which
    ``LipConfig.from_params`` takes, the optimisation, and the run-time keys."""

    # architecture (LipConfig)
    d_model: int
    n_heads: int
    ff_dim: int
    n_layers: int
    dropout: float
    window: int  # frames per training / inference sequence
    infer_stride: int
    smooth_sigma: float  # Gaussian smoothing of the predictions over time, frames (0 = off); inference only
    # optimisation
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    ema_decay: float  # per-step decay of the weights' moving average that is validated and saved (0: raw weights)
    max_steps: int
    max_seconds: float
    eval_every: int
    patience: int
    target_loss: float
    validation_fraction: float
    min_validation_frames: int  # shorter validation slices are not used
    train_stride: int  # frames between consecutive training windows
    expression_weight: float
    velocity_weight: float
    lip_vertex_weight: float
    mouth_opening_weight: float  # weight of the inner-lip gap's error (what crossdrive and evaluate correlate)
    lip_vertex_frames: int  # frames per step that go through the head model for the lip-vertex loss
    seed: int
    threads: int  # run time only: torch threads per process

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 keeps the raw weights), not {self.ema_decay}")


@dataclass
class PresenterData:
    """One presenter's training material: features [N, C, M], fitted expression [N, 53], shape [100], time split."""

    name: str
    features: np.ndarray
    expression: np.ndarray
    shape: np.ndarray
    split: TimeSplit


@dataclass
class TrainResult:
    model: LipTransformer  # unwrapped, best validation weights, eval mode
    target_mean: np.ndarray  # [P, 53] per presenter (order of config.presenters)
    target_std: np.ndarray  # [P, 53]
    steps: int
    best_val_loss: float
    stop_reason: str
    seconds: float
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    best_val_per_presenter: dict[str, float] = field(default_factory=dict)  # val_rel of each presenter at the best step


def target_statistics(presenters: list[PresenterData]) -> tuple[np.ndarray, np.ndarray]:
    """Per-presenter, per-dimension mean/std of the fitted expression over that presenter's training frames:
    [P, 53], [P, 53]. Dimensions that barely move get a std floor so standardising does not blow their noise up."""
    means, stds = [], []
    for p in presenters:
        train = p.expression[p.split.train.start:p.split.train.stop]
        std = train.std(axis=0)
        means.append(train.mean(axis=0))
        stds.append(np.maximum(std, max(1e-6, 1e-3 * float(std.max()))))
    return np.stack(means).astype(np.float32), np.stack(stds).astype(np.float32)


def window_index(presenters: list[PresenterData], window: int, stride: int, part: str) -> np.ndarray:
    """int64 [K, 2] (presenter index, start frame) of windows lying wholly inside ``part`` ('train' or
    'validation') of each timeline. Validation windows do not overlap."""
    rows = []
    for pi, p in enumerate(presenters):
        frames: range = getattr(p.split, part)
        step = stride if part == "train" else window
        length = len(frames)
        if length < window:
            continue
        for s in range(frames.start, frames.stop - window + 1, step):
            rows.append((pi, s))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def validation_segments(presenters: list[PresenterData], window: int, min_frames: int) -> list[tuple[int, int, int]]:
    """(presenter index, start, length) covering each presenter's validation slice in pieces of at most ``window``
    frames (the last piece may be shorter; pieces under ``min_frames`` are dropped). A presenter whose timeline is
    too short for a validation slice is skipped."""
    segments = []
    for pi, p in enumerate(presenters):
        frames = p.split.validation
        for s in range(frames.start, frames.stop, window):
            length = min(window, frames.stop - s)
            if length >= min_frames:
                segments.append((pi, s, length))
    return segments


def fallback_segments(presenters: list[PresenterData], window: int) -> list[tuple[int, int, int]]:
    """The last ``window`` training frames of each presenter: an in-sample stand-in for early stopping when no
    presenter has a validation slice (very short timelines)."""
    out = []
    for pi, p in enumerate(presenters):
        length = min(window, len(p.split.train))
        if length >= 2:
            out.append((pi, p.split.train.stop - length, length))
    return out


class LipVertexLoss(nn.Module):
    """Lip-vertex MSE through the head model (presenter's shape, zero pose), normalised by the fitted variance.

    Only every k-th frame of the batch goes through the head model (at most ``max_frames``): the head model costs
    as much as the Transformer per frame, and neighbouring frames carry nearly the same information.
    """

    def __init__(self, head_model: nn.Module, shapes: np.ndarray, scale: float, max_frames: int = 128,
                 opening_scale: float = 1.0):
        super().__init__()
        self.head = head_model
        self.register_buffer("shapes", torch.as_tensor(shapes, dtype=torch.float32))  # [P, 100]
        self.scale = scale
        self.opening_scale = opening_scale
        self.max_frames = max_frames
        self.upper, self.lower = inner_lip_positions(head_model)  # [K], [K] into the lip vertices

    def lip_vertices(self, expression: torch.Tensor, presenter: torch.Tensor) -> torch.Tensor:
        """expression [F, 53] (raw units), presenter [F] -> lip vertices [F, L, 3]."""
        pose = expression.new_zeros(expression.shape[0], 6)
        return self.head(self.shapes[presenter], expression, pose).vertices[:, self.head.lip_vertex_ids]

    def forward(self, pred: torch.Tensor, true_lips: torch.Tensor, presenter: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """pred [B, T, 53] raw units, true_lips [B, T, L, 3] (precomputed fitted lip vertices), presenter [B] ->
        (lip-vertex MSE over the fitted variance, inner-lip gap MSE over the fitted gap's variance)."""
        b, t, _ = pred.shape
        stride = max(1, math.ceil(b * t / self.max_frames))
        pick = torch.arange(0, b * t, stride, device=pred.device)  # deterministic: DDP ranks stay comparable
        flat_pred = pred.reshape(b * t, -1)[pick]  # [B, T, 53] -> [B*T, 53] -> [F, 53]
        flat_true = true_lips.reshape(b * t, *true_lips.shape[2:])[pick]  # [B, T, L, 3] -> [F, L, 3]
        flat_presenter = presenter[:, None].expand(b, t).reshape(b * t)[pick]  # [B] -> [B*T] -> [F]
        pred_lips = self.lip_vertices(flat_pred, flat_presenter)  # [F, L, 3]
        # [F]: the predicted inner-lip gap's error
        gap_error = inner_lip_gap(pred_lips, self.upper, self.lower) - inner_lip_gap(flat_true, self.upper, self.lower)
        return ((pred_lips - flat_true) ** 2).mean() / self.scale, (gap_error ** 2).mean() / self.opening_scale


def inner_lip_positions(head_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the head model's inner-lip pairs (upper [K], lower [K]) sit among its lip vertices."""
    where = {int(v): i for i, v in enumerate(head_model.lip_vertex_ids.tolist())}
    return (torch.tensor([where[int(v)] for v in head_model.inner_lip_upper_ids.tolist()]),
            torch.tensor([where[int(v)] for v in head_model.inner_lip_lower_ids.tolist()]))


def fitted_lip_vertices(head_model: nn.Module, presenter: PresenterData, batch: int = 512) -> np.ndarray:
    """Lip vertices of the fitted expression of every frame (presenter's shape, zero pose): float32 [N, L, 3]."""
    out = []
    shape = torch.as_tensor(presenter.shape, dtype=torch.float32)
    with torch.no_grad():
        for i in range(0, len(presenter.expression), batch):
            expr = torch.as_tensor(presenter.expression[i:i + batch])
            n = expr.shape[0]
            verts = head_model(shape[None].expand(n, -1), expr, torch.zeros(n, 6)).vertices
            out.append(verts[:, head_model.lip_vertex_ids].numpy())
    return np.concatenate(out).astype(np.float32)


def mouth_opening_scale(lip_targets: list[np.ndarray], presenters: list[PresenterData], head_model: nn.Module
                        ) -> float:
    """Mean over presenters of the fitted inner-lip gap's variance over their training frames."""
    upper, lower = (i.numpy() for i in inner_lip_positions(head_model))
    values = [inner_lip_gap(t[p.split.train.start:p.split.train.stop], upper, lower).var()
              for t, p in zip(lip_targets, presenters)]
    return max(float(np.mean(values)), 1e-12)


def lip_vertex_scale(lip_targets: list[np.ndarray], presenters: list[PresenterData]) -> float:
    """Mean per-coordinate variance over the training frames of the fitted lip vertices."""
    values = [t[p.split.train.start:p.split.train.stop].var(axis=0).mean() for t, p in zip(lip_targets, presenters)]
    return max(float(np.mean(values)), 1e-12)


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """One step of the exponential moving average: average <- decay * average + (1 - decay) * model, for every
    floating-point parameter and buffer (integer buffers are copied)."""
    for kept, current in zip(average.state_dict().values(), model.state_dict().values()):
        if kept.dtype.is_floating_point:
            kept.lerp_(current, 1.0 - decay)
        else:
            kept.copy_(current)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch(presenters: list[PresenterData], rows: np.ndarray, window: int, mean: np.ndarray, std: np.ndarray,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """features [B, W, C, M], targets [B, W, 53] standardised with each row's presenter statistics, presenter ids [B]."""
    feats = np.stack([presenters[p].features[s:s + window] for p, s in rows])
    raw = np.stack([presenters[p].expression[s:s + window] for p, s in rows]).astype(np.float32)
    pid = rows[:, 0]
    to = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
    return to(feats.astype(np.float32)), to((raw - mean[pid, None]) / std[pid, None]), to(pid)  # [P, 53] -> [B, 1, 53]


def batch_losses(pred: torch.Tensor, target: torch.Tensor, pid: torch.Tensor, settings: LipParams,
                 vertex_loss: LipVertexLoss | None = None, true_lips: torch.Tensor | None = None,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted total and components for standardised ``pred``/``target`` [B, W, 53] (+ fitted lips [B, W, L, 3])."""
    losses = {"loss_expression": ((pred - target) ** 2).mean(),
              "loss_velocity": (((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])) ** 2).mean()}
    total = settings.expression_weight * losses["loss_expression"] + settings.velocity_weight * losses["loss_velocity"]
    if vertex_loss is not None:
        std_t, mean_t = torch.as_tensor(std, device=pred.device), torch.as_tensor(mean, device=pred.device)
        pred_raw = pred * std_t[pid][:, None] + mean_t[pid][:, None]  # [P, 53] -> [B, 53] -> [B, 1, 53]
        losses["loss_lip_vertex"], losses["loss_mouth_opening"] = vertex_loss(pred_raw, true_lips, pid)
        total = total + settings.lip_vertex_weight * losses["loss_lip_vertex"] \
            + settings.mouth_opening_weight * losses["loss_mouth_opening"]
    return total, losses


def _lip_batch(lip_targets: list[np.ndarray], rows: np.ndarray, window: int, device: torch.device) -> torch.Tensor | None:
    """Fitted lip vertices [B, W, L, 3] of the windows ``rows``, or None without the lip-vertex loss."""
    if not lip_targets:
        return None
    return torch.as_tensor(np.stack([lip_targets[p][s:s + window] for p, s in rows]), device=device)


def evaluate(model: nn.Module, presenters: list[PresenterData], segments: list[tuple[int, int, int]],
             mean: np.ndarray, std: np.ndarray, settings: LipParams, vertex_loss: LipVertexLoss | None = None,
             lip_targets: list[np.ndarray] | None = None) -> dict[str, float]:
    """The training objective on the validation ``segments`` (presenter, start, length), relative to the static
    prediction's: ``val_loss`` = model objective / static objective summed over all segment frames (what early
    stopping and ``target_loss`` use); ``val_rel_<presenter>`` the same ratio per presenter; ``val_loss_<name>`` the
    model's loss components (absolute, averaged over frames)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    model_sum: dict[int, float] = {}
    static_sum: dict[int, float] = {}
    parts: dict[str, float] = {}
    frames_total = 0
    with torch.no_grad():
        for pi, start, length in segments:
            rows = np.array([[pi, start]], dtype=np.int64)
            feats, target, pid = _batch(presenters, rows, length, mean, std, device)
            lips = _lip_batch(lip_targets or [], rows, length, device)
            total, losses = batch_losses(model(feats, pid), target, pid, settings, vertex_loss, lips, mean, std)
            static_total, _ = batch_losses(torch.zeros_like(target), target, pid, settings, vertex_loss, lips, mean, std)
            model_sum[pi] = model_sum.get(pi, 0.0) + float(total) * length
            static_sum[pi] = static_sum.get(pi, 0.0) + float(static_total) * length
            for name, value in losses.items():
                parts[f"val_{name}"] = parts.get(f"val_{name}", 0.0) + float(value) * length
            frames_total += length
    model.train(was_training)
    if not model_sum:
        return {"val_loss": math.inf}
    out = {k: v / frames_total for k, v in parts.items()}
    out.update({f"val_rel_{presenters[pi].name}": model_sum[pi] / max(static_sum[pi], 1e-12) for pi in model_sum})
    out["val_loss"] = sum(model_sum.values()) / max(sum(static_sum.values()), 1e-12)
    return out


def train(config: LipConfig, settings: LipParams, presenters: list[PresenterData],
          head_model: nn.Module | None = None, dist_info: Distributed | None = None,
          on_log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> TrainResult:
    """Train the lip model on the training part of every presenter; returns the best-validation model.

    ``on_log(step, metrics)`` is called on rank 0 with the step's losses (and ``val_loss`` at evaluations).
    """
    import torch.distributed as dist

    d = dist_info or Distributed()
    if settings.batch_size % d.world:
        raise ValueError(f"batch_size {settings.batch_size} must be divisible by the world size {d.world}")
    torch.manual_seed(settings.seed)
    mean, std = target_statistics(presenters)
    window = config.window
    train_rows = window_index(presenters, window, settings.train_stride, "train")
    val_segments = validation_segments(presenters, window, settings.min_validation_frames) \
        or fallback_segments(presenters, window)
    if len(train_rows) < settings.batch_size:
        raise ValueError(f"only {len(train_rows)} training windows of {window} frames; need at least one batch "
                         f"({settings.batch_size})")

    model = LipTransformer(config).to(d.device)
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    vertex_loss, lip_targets = None, []
    if settings.lip_vertex_weight > 0 or settings.mouth_opening_weight > 0:
        if head_model is None:
            raise ValueError("lip_vertex_weight or mouth_opening_weight > 0 needs a head model")
        head_model = head_model.cpu()
        lip_targets = [fitted_lip_vertices(head_model, p) for p in presenters]
        vertex_loss = LipVertexLoss(head_model, np.stack([p.shape for p in presenters]),
                                    lip_vertex_scale(lip_targets, presenters), settings.lip_vertex_frames,
                                    mouth_opening_scale(lip_targets, presenters, head_model)).to(d.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: _lr_factor(s, settings.warmup_steps, settings.max_steps))

    # The weights' moving average: on unseen voices it beat the raw weights of the same run (issue 10, README)
    average = copy.deepcopy(model) if settings.ema_decay > 0 else model
    per_rank = settings.batch_size // d.world
    steps_per_epoch = len(train_rows) // settings.batch_size
    best_val, best_state, bad_evals = math.inf, copy.deepcopy(model.state_dict()), 0
    best_detail: dict[str, float] = {}
    val_curve: list[tuple[int, float]] = []
    stop_reason, step, start = "max_steps", 0, time.monotonic()
    bar = None
    if progress and d.is_main:
        from ..progress import Progress

        bar = Progress(total=settings.max_steps, desc="train_lip", unit="step")
    net.train()
    while step < settings.max_steps:
        epoch, within = divmod(step, steps_per_epoch)
        generator = torch.Generator().manual_seed(settings.seed * 100003 + epoch)
        perm = torch.randperm(len(train_rows), generator=generator).numpy()
        global_rows = train_rows[perm[within * settings.batch_size:(within + 1) * settings.batch_size]]
        local_rows = global_rows[d.rank::d.world]
        assert len(local_rows) == per_rank
        feats, target, pid = _batch(presenters, local_rows, window, mean, std, d.device)
        pred = net(feats, pid)  # [b, W, 53] standardised
        total, losses = batch_losses(pred, target, pid, settings, vertex_loss,
                                     _lip_batch(lip_targets, local_rows, window, d.device), mean, std)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        step += 1
        if average is not model:
            update_average(average, model, settings.ema_decay)

        logged = torch.stack([total.detach()] + [v.detach() for v in losses.values()])
        if d.world > 1:
            dist.all_reduce(logged)  # equal shard sizes, so the mean of rank means is the global-batch mean
            logged /= d.world
        metrics = {"loss": float(logged[0]), **{k: float(v) for k, v in zip(losses, logged[1:])},
                   "lr": scheduler.get_last_lr()[0]}
        stop = torch.zeros(1, device=d.device)
        if d.is_main:
            if step % settings.eval_every == 0 or step == settings.max_steps:
                metrics.update(evaluate(average, presenters, val_segments, mean, std, settings, vertex_loss,
                                        lip_targets))
                val = metrics["val_loss"]
                val_curve.append((step, val))
                if val < best_val:
                    best_val, best_state, bad_evals = val, copy.deepcopy(average.state_dict()), 0
                    best_detail = {k[len("val_rel_"):]: v for k, v in metrics.items() if k.startswith("val_rel_")}
                else:
                    bad_evals += 1
                if val < settings.target_loss:
                    stop_reason, stop[0] = "target_loss", 1
                elif bad_evals >= settings.patience:
                    stop_reason, stop[0] = "patience", 1
            if time.monotonic() - start > settings.max_seconds and not stop[0]:
                stop_reason, stop[0] = "max_seconds", 1
            if on_log is not None:
                on_log(step, metrics)
            if bar is not None:
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", val=f"{best_val:.4f}")  # shown by this update
                bar.update(1)
        if d.world > 1:
            dist.broadcast(stop, 0)
        if stop[0]:
            break
    if bar is not None:
        bar.close()
    if d.world > 1:  # every rank returns the same (rank 0's) best weights
        holder = [best_state, best_val, stop_reason, val_curve, best_detail]
        dist.broadcast_object_list(holder, 0)
        best_state, best_val, stop_reason, val_curve, best_detail = holder
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, mean, std, step, best_val, stop_reason, time.monotonic() - start, val_curve,
                       best_detail)
