"""GAN training: batches, losses, optimizer steps, AMP, DDP and resumable checkpoints.

One iteration (pix2pixHD order):
1. fake = G(composite, reference)
2. generator step: L1 (extra weight inside the mouth box) + face adversarial + mouth adversarial
   + discriminator feature matching, with the discriminators as they are;
3. discriminator step on real vs fake.detach() (face multi-scale PatchGAN and mouth component D together).
Each discriminator call sees [real; fake] concatenated along the batch, so under DDP every forward is followed
by exactly one backward. Training runs on random crops around the mouth (cheap, and the mouth is where the
work is) and switches to full frames for the last ``full_res_fraction`` of the steps.

Resumability: ``save`` writes everything needed to continue bit-for-bit -- step, networks, optimizers, AMP
scalers, torch RNG and every rank's batch-sampling RNG, elapsed training time, loss EMA -- atomically.

Prior: ``prior_weights`` exports the three networks' weights; ``start_from`` gives a fresh trainer those weights
(another presenter's trained GAN) instead of random ones, with fresh optimisers. The prior's digest joins the
trainer's fingerprint, so a training state is only resumed on top of the prior it started from.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..atomic import atomic_path
from .face_discriminator import MultiScaleDiscriminator, PatchDiscriminatorConfig
from .generator import Generator, GeneratorConfig, to_unit
from .mouth_discriminator import MouthDiscriminator, MouthDiscriminatorConfig
from .retrieval import MouthBank, retrieved_inputs


@dataclass(frozen=True)
class GanParams:
    """params.yaml's ``gan`` group (values there; built by ``params.load_config``)."""

    image_size: int
    channels: tuple[int, ...]  # U-Net width per level
    chroma_pool: int  # the generator's colour residual is this many pixels coarse (generator.smooth_chroma); 1 = off
    use_reference: bool
    retrieval: bool  # also feed the nearest-mouth-shape training frame, aligned (gan/retrieval.py)
    retrieval_candidates: int  # training picks one of the k nearest at random (speak's pick is not always the nearest)
    retrieval_exclude: int  # training never retrieves a frame within this many frames of the target
    retrieval_stickiness: float  # sequences keep the previous pick while within this many bank tolerances of the best
    bank_min_opening: float  # head model units: a training part that never opens wider gets no bank (render only)
    paint_mouth: bool  # with retrieval: the composite's mouth opening shows the retrieved mouth, not the teeth band
    keep_mouth_colour: bool  # with paint_mouth: generating changes only the brightness of the painted opening
    d_channels: int
    d_scales: int
    mouth_crop: int
    batch_size: int
    crop_size: int  # side of the random training crops (0 or >= image size: full frames)
    full_res_fraction: float  # the last fraction of max_steps trains on full frames
    max_steps: int
    max_seconds: float  # training-time budget, summed over resumed runs
    target_loss: float  # stop when the EMA of the generator loss falls below this
    loss_ema: float
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    adv_loss: str  # lsgan | hinge
    w_l1: float
    w_mouth_l1: float  # extra L1 weight inside the mouth box (weight there = 1 + w_mouth_l1)
    w_face_adv: float
    w_mouth_adv: float
    w_feature_matching: float
    w_mouth_keep: float  # L1 between output and composite where the composite shows a retrieved real mouth (0 = off)
    checkpoint_every: int
    sample_every: int
    log_every: int
    amp: bool  # autocast + GradScaler on CUDA (ignored on CPU)
    seed: int
    threads: int  # run time only: torch CPU threads, 0 = auto

    def __post_init__(self) -> None:
        # a pool of 0 would make the generator's input multiple 0; a negative weight would reward repainting the teeth
        if self.chroma_pool < 1:
            raise ValueError(f"gan.chroma_pool must be >= 1 (1 = per-pixel colour), got {self.chroma_pool}")
        if self.w_mouth_keep < 0:
            raise ValueError(f"gan.w_mouth_keep must be >= 0 (0 = off), got {self.w_mouth_keep}")


@dataclass
class RetrievalData:
    """What training needs to feed retrieved mouths: the bank (training rows only), per row of the data its
    ``candidates`` int64 [N, k] (bank indices, -1 none; the row's own neighbourhood excluded) and the projected lips
    of what its composite renders, ``target_lips`` float32 [N, L, 2]."""

    bank: MouthBank
    candidates: np.ndarray
    target_lips: np.ndarray
    target_keys: np.ndarray  # float32 [N, K]: mouth-shape keys of what each composite renders
    # float32 [N, P, 2]: inner-lip polygons of what each composite renders, with gan.paint_mouth (None: no painting)
    target_inner: np.ndarray | None = None


@dataclass
class GanData:
    """The arrays one presenter's training reads (memory-mapped is fine)."""

    composites: np.ndarray  # uint8 [N, S, S, 3]
    frames: np.ndarray  # uint8 [N, S, S, 3], the real crops
    boxes: np.ndarray  # float32 [N, 4] mouth boxes x0, y0, x1, y1 in crop pixels
    train_index: np.ndarray  # int64 [n_train] rows used for training (not held out)
    heldout_index: np.ndarray  # int64 [n_heldout]
    retrieval: RetrievalData | None = None  # with gan.retrieval: the bank and each row's candidates

    @property
    def image_size(self) -> int:
        return int(self.composites.shape[1])

    def fingerprint(self) -> str:
        """Hash of the boxes, split and 16 spread-out frames: changes when the upstream stages rewrite the data."""
        h = hashlib.sha256()
        rows = np.linspace(0, len(self.composites) - 1, 16).round().astype(int)
        for array in (self.boxes, self.train_index, self.heldout_index, self.composites[rows], self.frames[rows]):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]


@dataclass
class Batch:
    composite: torch.Tensor  # [B, 3, c, c] in [-1, 1]
    real: torch.Tensor  # [B, 3, c, c]
    reference: torch.Tensor | None  # [B, 3, c, c] or None
    retrieved: torch.Tensor | None  # [B, 3, c, c] aligned retrieved mouths, or None (no retrieval)
    boxes: torch.Tensor  # [B, 4] mouth boxes in the crop's pixels
    painted: torch.Tensor | None = None  # [B, 1, c, c] 1 where the composite shows a retrieved real mouth, or None


def choose_reference(data: GanData) -> int:
    """Row of the training frame whose mouth box is flattest (height / width): a closed-mouth frame."""
    boxes = data.boxes[data.train_index]
    ratio = (boxes[:, 3] - boxes[:, 1]) / np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    return int(data.train_index[int(np.argmin(ratio))])


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, 4] boxes -> [B, 1, H, W] float mask, 1 where the pixel centre lies inside the box."""
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # [B, H]
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # [B, W]
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]  # [B, H, W] -> [B, 1, H, W]


def sample_batch(data: GanData, rng: torch.Generator, batch_size: int, crop: int, reference: np.ndarray | None,
                 device: torch.device) -> Batch:
    """Random training frames, each cut to a crop x crop window that contains its mouth box (jittered)."""
    size = data.image_size
    crop = size if crop <= 0 or crop >= size else crop
    picks = torch.randint(len(data.train_index), (batch_size,), generator=rng).numpy()
    jitter = torch.rand((batch_size, 2), generator=rng).numpy()
    rows = data.train_index[picks]
    mouths = painted_pixels = None
    painted: np.ndarray | None = None  # the batch's composites with the retrieved mouths painted in (gan.paint_mouth)
    if data.retrieval is not None:  # drawn only then, so a run without retrieval samples as before
        r = data.retrieval
        which = torch.randint(r.candidates.shape[1], (batch_size,), generator=rng).numpy()
        chosen = r.candidates[rows, which]
        chosen = np.where(chosen >= 0, chosen, r.candidates[rows, 0])  # fewer than k candidates: the nearest
        composites = np.stack([data.composites[row] for row in rows])
        inner = None if r.target_inner is None else r.target_inner[rows]
        composites, mouths, painted_pixels = retrieved_inputs(composites, data.frames, r.bank, chosen,
                                                              r.target_lips[rows], inner)
        painted = composites if inner is not None else None
    comps, reals, refs, boxes, retrieved, painted_masks = [], [], [], [], [], []
    for i, (row, (jx, jy)) in enumerate(zip(rows, jitter)):
        box = data.boxes[row].astype(np.float32)
        # a uniformly placed window that still contains the box centre (with a 16 px margin): mostly the mouth
        # and its surroundings, sometimes the far face and background, so the net learns to leave those alone
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        margin = min(16, crop // 4)
        x0 = int(np.clip(round(cx - crop + margin + jx * (crop - 2 * margin)), 0, size - crop))
        y0 = int(np.clip(round(cy - crop + margin + jy * (crop - 2 * margin)), 0, size - crop))
        window = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        comps.append((data.composites[row] if painted is None else painted[i])[window])
        reals.append(data.frames[row][window])
        if reference is not None:
            refs.append(reference[window])
        if mouths is not None:
            retrieved.append(mouths[i][window])
        if painted_pixels is not None:  # where painting changed the composite: the retrieved mouth's pixels
            painted_masks.append(painted_pixels[i][window])
        boxes.append(box - np.array([x0, y0, x0, y0], np.float32))

    def stack(images: list[np.ndarray]) -> torch.Tensor:
        return to_unit(torch.from_numpy(np.stack(images))).to(device).contiguous(memory_format=torch.channels_last)

    return Batch(
        composite=stack(comps),
        real=stack(reals),
        reference=stack(refs) if refs else None,
        retrieved=stack(retrieved) if retrieved else None,
        boxes=torch.from_numpy(np.stack(boxes)).to(device),
        painted=(torch.from_numpy(np.stack(painted_masks)).float()[:, None].to(device)  # [B, c, c] -> [B, 1, c, c]
                 if painted_masks else None),
    )


def adversarial_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return (real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean()


def adversarial_g_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return (fake_logits - 1).pow(2).mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between intermediate discriminator features (logits excluded), real detached."""
    pairs = list(zip(real_feats[:-1], fake_feats[:-1]))
    return sum(F.l1_loss(f, r.detach()) for r, f in pairs) / len(pairs)


def split_real_fake(outputs: list[torch.Tensor], n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Features of a [real; fake] batch -> (real features, fake features)."""
    return [o[:n] for o in outputs], [o[n:] for o in outputs]


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


# GanParams keys that may change between a run and its resumption (budgets, bookkeeping)
RESUMABLE_CHANGES = ("max_steps", "max_seconds", "target_loss", "checkpoint_every", "sample_every", "log_every",
                     "threads", "retrieval_stickiness")  # stickiness: how sequences pick at inference, not training


def config_fingerprint(*configs) -> str:
    """Hash of everything that makes a checkpoint incompatible with a run (network shapes, losses, data
    sampling); a larger step or time budget is compatible, so raising it continues training."""
    dicts = [c if isinstance(c, dict) else c.to_dict() if hasattr(c, "to_dict") else asdict(c) for c in configs]
    dicts = [{k: v for k, v in d.items() if k not in RESUMABLE_CHANGES} for d in dicts]
    return hashlib.sha256(json.dumps(dicts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class GanTrainer:
    gen_config: GeneratorConfig
    train_config: GanParams
    face_config: PatchDiscriminatorConfig = field(default_factory=PatchDiscriminatorConfig)
    mouth_config: MouthDiscriminatorConfig = field(default_factory=MouthDiscriminatorConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        cfg = self.train_config
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.generator = Generator(self.gen_config).to(self.device, memory_format=torch.channels_last)
        self.face_d = MultiScaleDiscriminator(self.face_config).to(self.device, memory_format=torch.channels_last)
        self.mouth_d = MouthDiscriminator(self.mouth_config).to(self.device)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator = DistributedDataParallel(self.generator, device_ids=ids)
            self.face_d = DistributedDataParallel(self.face_d, device_ids=ids)
            self.mouth_d = DistributedDataParallel(self.mouth_d, device_ids=ids)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=betas)
        d_params = list(self.face_d.parameters()) + list(self.mouth_d.parameters())
        self.opt_d = torch.optim.Adam(d_params, lr=cfg.lr_d, betas=betas)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.sampler = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.step = 0
        self.elapsed_s = 0.0
        self.loss_ema: float | None = None
        self.reference_row: int | None = None
        self.data_fingerprint: str | None = None
        self.fingerprint = config_fingerprint(self.gen_config, self.train_config, self.face_config, self.mouth_config)

    # ---- one iteration -------------------------------------------------------------------------------
    def crop_for_step(self, step: int, image_size: int) -> int:
        """Training crop side: random crops first, full frames for the last ``full_res_fraction`` of whichever
        budget (steps or seconds) runs out first."""
        cfg = self.train_config
        late = 1 - cfg.full_res_fraction
        full = step >= cfg.max_steps * late or self.elapsed_s >= cfg.max_seconds * late
        return image_size if full else cfg.crop_size

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.train_config
        n = batch.real.shape[0]
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp)
        mouth_weight = 1 + cfg.w_mouth_l1 * box_mask(batch.boxes, *batch.real.shape[-2:])
        comp2 = torch.cat([batch.composite, batch.composite])  # [2B, 3, c, c]: conditioning for [real; fake]
        boxes2 = torch.cat([batch.boxes, batch.boxes])

        # generator step
        with autocast:
            # no ``painted`` here: the colour lock (keep_painted_colour) applies when generating, not while training
            # -- trained under it, the net moved the colour it could not put on the teeth onto the lips around them
            fake = self.generator(batch.composite, batch.reference, batch.retrieved)
            face_real, face_fake = zip(*(split_real_fake(o, n) for o in self.face_d(comp2, torch.cat([batch.real, fake]))))
            mouth_real, mouth_fake = split_real_fake(self.mouth_d(comp2, torch.cat([batch.real, fake]), boxes2), n)
            l1 = (mouth_weight * (fake.float() - batch.real).abs()).mean()
            face_adv = sum(adversarial_g_loss(f[-1].float(), cfg.adv_loss) for f in face_fake) / len(face_fake)
            mouth_adv = adversarial_g_loss(mouth_fake[-1].float(), cfg.adv_loss)
            fm = (sum(feature_matching(r, f) for r, f in zip(face_real, face_fake)) / len(face_fake)
                  + feature_matching(mouth_real, mouth_fake))
            # keep the retrieved real teeth the composite shows instead of repainting them (speckles, dark bars)
            keep = (torch.zeros((), device=fake.device) if batch.painted is None or not cfg.w_mouth_keep
                    else (batch.painted * (fake.float() - batch.composite).abs()).mean())
            g_loss = (cfg.w_l1 * l1 + cfg.w_face_adv * face_adv + cfg.w_mouth_adv * mouth_adv
                      + cfg.w_feature_matching * fm + cfg.w_mouth_keep * keep)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(g_loss).backward()  # also fills discriminator grads; cleared before their step
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()

        # discriminator step
        fake = fake.detach()
        with autocast:
            face_out = self.face_d(comp2, torch.cat([batch.real, fake]))
            face_d = sum(adversarial_d_loss(o[-1][:n].float(), o[-1][n:].float(), cfg.adv_loss) for o in face_out)
            face_d = face_d / len(face_out)
            mouth_out = self.mouth_d(comp2, torch.cat([batch.real, fake]), boxes2)[-1].float()
            mouth_d = adversarial_d_loss(mouth_out[:n], mouth_out[n:], cfg.adv_loss)
            d_loss = face_d + mouth_d
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(d_loss).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        self.step += 1
        g = float(g_loss.detach())
        self.loss_ema = g if self.loss_ema is None else cfg.loss_ema * self.loss_ema + (1 - cfg.loss_ema) * g
        return {"g_loss": g, "g_loss_ema": self.loss_ema, "l1": float(l1.detach()),
                "face_adv": float(face_adv.detach()), "mouth_adv": float(mouth_adv.detach()),
                "feature_matching": float(fm.detach()), "mouth_keep": float(keep.detach()),
                "d_face": float(face_d.detach()), "d_mouth": float(mouth_d.detach())}

    # ---- loop ----------------------------------------------------------------------------------------
    def stop_reason(self) -> str | None:
        cfg = self.train_config
        if self.step >= cfg.max_steps:
            return "max_steps"
        if self.elapsed_s >= cfg.max_seconds:
            return "max_seconds"
        if self.loss_ema is not None and self.step >= cfg.log_every and self.loss_ema < cfg.target_loss:
            return "target_loss"
        return None

    def set_reference(self, data: GanData) -> None:
        """Pick (first run) or keep (resumed run) the reference frame and store it in the generator."""
        if not self.gen_config.use_reference:
            return
        if self.reference_row is None:
            self.reference_row = choose_reference(data)
        ref = to_unit(torch.from_numpy(np.array(data.frames[self.reference_row]))[None])  # [1, 3, S, S]
        unwrap(self.generator).reference = ref.to(self.device)

    def reference_image(self, data: GanData) -> np.ndarray | None:
        return None if self.reference_row is None else np.asarray(data.frames[self.reference_row])

    def fit(self, data: GanData, checkpoint: Path,
            on_log: Callable[[dict[str, float], int], None] | None = None,
            on_sample: Callable[[Batch, torch.Tensor, int], None] | None = None,
            on_step: Callable[[int], None] | None = None,
            progress: bool = True) -> str:
        """Train until a stop criterion holds; checkpoint every ``checkpoint_every`` steps and at the end.

        Returns the stop reason ('max_steps', 'max_seconds', 'target_loss'). ``on_step(step)`` runs after each
        step (tests use it to simulate a kill).
        """
        from ..progress import Progress

        cfg = self.train_config
        self.set_reference(data)
        self.data_fingerprint = data.fingerprint()
        reference = self.reference_image(data)
        bar = Progress(total=cfg.max_steps, initial=self.step, desc="gan", disable=not progress or self.rank != 0,
                       unit="step")
        reason = self.stop_reason()
        while reason is None:
            started = time.perf_counter()
            self.generator.train()
            crop = self.crop_for_step(self.step, data.image_size)
            batch = sample_batch(data, self.sampler, cfg.batch_size, crop, reference, self.device)
            losses = self.train_step(batch)
            self.elapsed_s += self.agreed_seconds(time.perf_counter() - started)
            bar.set_postfix(g=f"{losses['g_loss']:.3f}", l1=f"{losses['l1']:.3f}", crop=crop)  # shown by this update
            bar.update(1)
            if self.rank == 0 and on_log is not None and self.step % cfg.log_every == 0:
                on_log(losses, self.step)
            if self.rank == 0 and on_sample is not None and self.step % cfg.sample_every == 0:
                with torch.inference_mode():
                    self.generator.eval()
                    fake = unwrap(self.generator)(batch.composite, batch.reference, batch.retrieved)
                    on_sample(batch, fake, self.step)
            reason = self.stop_reason()
            if self.step % cfg.checkpoint_every == 0 or reason is not None:
                self.save(checkpoint)
            if on_step is not None:
                on_step(self.step)
        bar.close()
        return reason

    def agreed_seconds(self, seconds: float) -> float:
        """Step time, the slowest rank's under DDP, so every rank makes the same time-budget decision."""
        if not self.distributed:
            return seconds
        t = torch.tensor([seconds], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        samplers = [self.sampler.get_state()]
        if self.distributed:
            samplers = [None] * self.world
            dist.all_gather_object(samplers, self.sampler.get_state())
        return {
            "fingerprint": self.fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "loss_ema": self.loss_ema,
            "reference_row": self.reference_row,
            "generator_config": self.gen_config.to_dict(),
            "generator": unwrap(self.generator).state_dict(),
            "face_d": unwrap(self.face_d).state_dict(),
            "mouth_d": unwrap(self.mouth_d).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "samplers": samplers,
        }

    def save(self, path: Path) -> None:
        state = self.state_dict()  # collective under DDP: every rank takes part, rank 0 writes
        if self.rank != 0:
            return
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load(self, path: Path, data: GanData | None = None) -> bool:
        """Resume from ``path``. Returns False (and leaves a fresh trainer) if it was made with another config
        or, when ``data`` is given, on other data (the upstream stages re-ran: retrain from scratch)."""
        try:  # weights_only: a training state holds tensors and plain values only; nothing in it may run code
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            warnings.warn(f"{path}: unreadable training state ({exc.__class__.__name__}); training from scratch",
                          stacklevel=2)
            return False
        if state.get("fingerprint") != self.fingerprint:
            return False
        if data is not None and state.get("data_fingerprint") != data.fingerprint():
            return False
        unwrap(self.generator).reference = state["generator"]["reference"]
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.face_d).load_state_dict(state["face_d"])
        unwrap(self.mouth_d).load_state_dict(state["mouth_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        samplers = state["samplers"]
        if self.rank < len(samplers):
            self.sampler.set_state(samplers[self.rank].cpu())
        self.step = state["step"]
        self.elapsed_s = state["elapsed_s"]
        self.loss_ema = state["loss_ema"]
        self.reference_row = state["reference_row"]
        return True

    def prior_weights(self) -> dict:
        """The networks' configs and weights (no optimiser state), what ``start_from`` reads; the generator's
        reference frame is left out: it belongs to this presenter."""
        generator = {k: v for k, v in unwrap(self.generator).state_dict().items() if k != "reference"}
        return {"generator_config": self.gen_config.to_dict(), "face_config": asdict(self.face_config),
                "mouth_config": asdict(self.mouth_config), "generator": generator,
                "face_d": unwrap(self.face_d).state_dict(), "mouth_d": unwrap(self.mouth_d).state_dict()}

    def start_from(self, prior: dict, digest: str) -> None:
        """Replace the fresh random weights by a prior's (``prior_weights`` of another run). Raises ValueError when
        the prior's networks are configured otherwise (it cannot be loaded into these)."""
        if self.step:
            raise RuntimeError("start_from is for a fresh trainer")
        mine = {"generator_config": self.gen_config.to_dict(), "face_config": asdict(self.face_config),
                "mouth_config": asdict(self.mouth_config)}
        differ = sorted(f"{group}.{key}" for group, config in mine.items() for key in config
                        if prior[group].get(key) != config[key])
        if differ:
            raise ValueError(f"networks configured otherwise ({', '.join(differ)})")
        generator = unwrap(self.generator)
        # strict=False only for the reference buffer, which the prior leaves out (set_reference sets this one's)
        missing, unexpected = generator.load_state_dict(prior["generator"], strict=False)
        if unexpected or set(missing) - {"reference"}:
            raise ValueError(f"generator weights do not fit (missing {missing}, unexpected {unexpected})")
        unwrap(self.face_d).load_state_dict(prior["face_d"])
        unwrap(self.mouth_d).load_state_dict(prior["mouth_d"])
        self.fingerprint = config_fingerprint(self.gen_config, self.train_config, self.face_config,
                                              self.mouth_config, {"prior": digest})

    def export(self, path: Path) -> None:
        """Write the inference checkpoint (generator config + weights incl. the reference frame), atomically."""
        if self.rank != 0:
            return
        with atomic_path(path) as tmp:
            torch.save({"generator_config": self.gen_config.to_dict(),
                        "generator": unwrap(self.generator).state_dict(), "step": self.step}, tmp)
