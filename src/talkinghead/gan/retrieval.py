"""Mouth appearance from the presenter's own footage: retrieve the training frame whose mouth shape is nearest.

The render only paints a procedural teeth band; the real teeth, tongue and mouth cavity of the presenter are in their
training frames. For every frame to generate:

1. key: the head model's 40 lip vertices deformed by the frame's shape and expression (jaw included), without head
   pose, mean-centred, x and y, in millimetres: the mouth shape alone, comparable across head poses;
2. retrieve the training frame of the bank (never the held-out tail) with the nearest key; a sequence keeps the
   previous pick (or its successor in the footage) while it is within ``stickiness`` of the best, so the teeth do
   not jump between near-equal neighbours from one frame to the next;
3. align: a similarity transform (Umeyama) from the retrieved frame's projected lip vertices (fitted head model and
   camera) to the target's (the expression being rendered, on the source frame's pose and camera), warp the retrieved
   crop with it and keep a padded box around the target's lips. The generator reads this as 3 extra channels.
4. paint (``gan.paint_mouth``): inside the target's inner-lip polygon (the opening the render draws its procedural
   teeth band in) the composite takes the aligned retrieved mouth instead, feathered over a pixel, so the generator's
   main input already shows the presenter's own teeth and cavity where the lips part (not a band it must repaint).

During training the frames within ``exclude`` frames of the target are not retrievable, so the network cannot copy
the answer. A presenter whose training footage never opens the mouth (fitted inner-lip gap below ``min_opening``)
gets an empty bank: the extra channels are zeros and the generator works from the render alone.

>>> geometry = lip_geometry(model, params, image_size=256)        # keys, projected lips, opening per frame
>>> bank = MouthBank.build(rows, geometry, ...); bank.save(path)
>>> picks = bank.retrieve(keys, state)                             # bank indices, -1 = nothing to retrieve
>>> images = aligned_mouths(frames, bank, picks, target_lips)      # uint8 [B, S, S, 3]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KEY_SCALE = 1000.0  # head model units (metres) -> millimetres: keys of order 1-10
BOX_PAD = 0.35  # the aligned mouth is kept inside the target lips' box grown by this fraction of its width per side


@dataclass
class LipGeometry:
    """Per frame: mouth-shape key float32 [N, K], projected lip vertices float32 [N, L, 2] (crop px), the inner-lip
    gap float32 [N] (head model units) and the projected inner-lip polygon float32 [N, P, 2] (crop px: the upper inner
    lip from left to right, then the lower from right to left)."""

    keys: np.ndarray
    lips: np.ndarray
    opening: np.ndarray
    inner: np.ndarray


def lip_geometry(model, params: dict[str, np.ndarray], image_size: int, batch_size: int = 512) -> LipGeometry:
    """Keys, projected lip vertices and opening of frames given as head model parameters (numpy [N, k] arrays with
    keys shape, expression, pose, camera)."""
    import torch

    from ..headmodel import camera
    from ..headmodel.base import mouth_opening

    n = len(params["expression"])
    device = model.faces.device
    keys, lips, opening, inner = [], [], [], []
    upper_ids, lower_ids = model.inner_lip_upper_ids, model.inner_lip_lower_ids
    with torch.no_grad():
        for start in range(0, n, batch_size):
            p = {k: torch.as_tensor(np.asarray(params[k][start:start + batch_size], np.float32), device=device)
                 for k in ("shape", "expression", "pose", "camera")}
            rest = model.deform(p["shape"], p["expression"])  # [b, V, 3], no head pose
            lip = rest[:, model.lip_vertex_ids, :2]  # [b, L, 2]
            keys.append(((lip - lip.mean(dim=1, keepdim=True)) * KEY_SCALE).flatten(1).cpu().numpy())  # [b, 2L]
            opening.append(mouth_opening(rest, model).cpu().numpy())
            vertices = model(p["shape"], p["expression"], p["pose"]).vertices  # [b, V, 3]
            posed = vertices[:, model.lip_vertex_ids]  # [b, L, 3]
            lips.append(camera.project(posed, p["camera"], image_size).cpu().numpy())
            # polygon order from the unposed mouth's x (the same for every frame of one model): upper left -> right,
            # lower right -> left
            ring = torch.cat([upper_ids[torch.argsort(rest[0, upper_ids, 0])],
                              lower_ids[torch.argsort(rest[0, lower_ids, 0], descending=True)]])
            inner.append(camera.project(vertices[:, ring], p["camera"], image_size).cpu().numpy())
    if not keys:
        ring_size = len(upper_ids) + len(lower_ids)
        return LipGeometry(np.zeros((0, 2 * len(model.lip_vertex_ids)), np.float32),
                           np.zeros((0, len(model.lip_vertex_ids), 2), np.float32), np.zeros(0, np.float32),
                           np.zeros((0, ring_size, 2), np.float32))
    return LipGeometry(np.concatenate(keys).astype(np.float32), np.concatenate(lips).astype(np.float32),
                       np.concatenate(opening).astype(np.float32), np.concatenate(inner).astype(np.float32))


@dataclass
class RetrievalState:
    """The previous pick of one frame sequence (bank index, or None at its start)."""

    previous: int | None = None


@dataclass
class MouthBank:
    """Training frames to take mouths from. ``frames``: their timeline rows int64 [M] (ascending); ``keys`` [M, K],
    ``lips`` [M, L, 2] (fitted); ``stickiness``: how much worse (in units of ``tolerance``, the median squared key
    distance from a bank frame to its nearest other bank frame) the kept pick may be than the best one."""

    frames: np.ndarray
    keys: np.ndarray
    lips: np.ndarray
    stickiness: float
    tolerance: float
    note: str  # why the bank is empty, or ""

    @property
    def empty(self) -> bool:
        return len(self.frames) == 0

    @classmethod
    def build(cls, rows: np.ndarray, geometry: LipGeometry, min_opening: float, stickiness: float,
              exclude: int) -> "MouthBank":
        """The bank of training ``rows`` (their geometry rows); empty (fallback to the render) when no training frame
        opens the mouth by ``min_opening``."""
        rows = np.asarray(rows, np.int64)
        keys, lips = geometry.keys[rows], geometry.lips[rows]
        widest = float(geometry.opening[rows].max()) if len(rows) else 0.0
        if widest < min_opening:
            note = (f"no training frame opens the mouth (widest inner-lip gap {widest:.4g} < "
                    f"gan.bank_min_opening {min_opening:g}): the generator works from the render alone")
            return cls(np.zeros(0, np.int64), keys[:0], lips[:0], stickiness, 0.0, note)
        d = _squared_distances(keys, keys)
        d[np.abs(rows[:, None] - rows[None, :]) <= exclude] = np.inf  # its own neighbourhood is not "another" frame
        nearest = d.min(axis=1)
        tolerance = float(np.median(nearest[np.isfinite(nearest)])) if np.isfinite(nearest).any() else 0.0
        return cls(rows, keys, lips, stickiness, tolerance, "")

    def save(self, path: Path) -> None:
        from ..atomic import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, frames=self.frames, keys=self.keys, lips=self.lips,
                         stickiness=np.float64(self.stickiness), tolerance=np.float64(self.tolerance),
                         note=np.array(self.note))

    @classmethod
    def load(cls, path: Path) -> "MouthBank":
        from ..errors import InputError

        if not Path(path).exists():
            raise InputError(path, "missing; retrain with `dvc repro train_gan@<presenter>`")
        try:
            with np.load(path, allow_pickle=False) as z:
                bank = cls(z["frames"].astype(np.int64), z["keys"].astype(np.float32), z["lips"].astype(np.float32),
                           float(z["stickiness"]), float(z["tolerance"]), str(z["note"]))
        except Exception as exc:  # any malformed content: a missing key, a pickled object, a truncated file
            raise InputError(path, f"not a mouth bank ({exc.__class__.__name__}: {exc}); retrain with "
                                   "`dvc repro train_gan@<presenter>`") from exc
        if bank.keys.shape[0] != len(bank.frames) or bank.lips.shape[0] != len(bank.frames):
            raise InputError(path, "frames, keys and lips disagree in length; retrain with `dvc repro train_gan@<presenter>`")
        return bank

    def candidates(self, keys: np.ndarray, k: int, exclude_rows: np.ndarray | None = None,
                   radius: int = 0) -> np.ndarray:
        """The ``k`` nearest bank indices per query key [B, K] -> int64 [B, k] (-1 where none), leaving out bank frames
        within ``radius`` of ``exclude_rows`` [B] (training: the target's own neighbourhood)."""
        out = np.full((len(keys), k), -1, np.int64)
        if self.empty:
            return out
        d = _squared_distances(keys, self.keys)  # [B, M]
        if exclude_rows is not None:
            d[np.abs(np.asarray(exclude_rows)[:, None] - self.frames[None, :]) <= radius] = np.inf
        order = np.argsort(d, axis=1)[:, :k]
        valid = np.take_along_axis(d, order, axis=1) < np.inf
        out[:, :order.shape[1]] = np.where(valid, order, -1)
        return out

    def retrieve(self, keys: np.ndarray, state: RetrievalState | None = None) -> np.ndarray:
        """Bank index per query key [B, K] of a frame sequence -> int64 [B] (-1: empty bank). With a ``state`` the
        previous pick or its successor in the footage is kept while within stickiness x tolerance of the best."""
        if self.empty:
            return np.full(len(keys), -1, np.int64)
        d = _squared_distances(keys, self.keys)  # [B, M]
        picks = d.argmin(axis=1)
        if state is None:
            return picks.astype(np.int64)
        slack = self.stickiness * self.tolerance
        for b in range(len(keys)):
            prev = state.previous
            if prev is not None:
                follow = [prev]
                if prev + 1 < len(self.frames) and self.frames[prev + 1] == self.frames[prev] + 1:
                    follow.insert(0, prev + 1)  # playing the real footage on moves like a real mouth
                best = min(follow, key=lambda j: d[b, j])
                if d[b, best] <= d[b, picks[b]] + slack:
                    picks[b] = best
            state.previous = int(picks[b])
        return picks.astype(np.int64)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, K] x [M, K] -> [A, M] squared Euclidean distances (float64, clipped at 0)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping points src [L, 2] onto
    dst [L, 2] (Umeyama 1991) -> float64 [2, 3] affine matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)  # [2, 2]
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    var = (s * s).sum() / len(src)
    scale = float((sigma * np.diag(sign)).sum() / var) if var > 0 else 1.0
    t = mu_d - scale * rotation @ mu_s
    return np.concatenate([scale * rotation, t[:, None]], axis=1)


def lip_box(lips: np.ndarray, image_size: int) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1; exclusive ends) around lip points [L, 2], grown by BOX_PAD of its width per side."""
    lo, hi = lips.min(0), lips.max(0)
    pad = BOX_PAD * float(hi[0] - lo[0])
    x0, y0 = (int(np.clip(np.floor(v - pad), 0, image_size)) for v in lo)
    x1, y1 = (int(np.clip(np.ceil(v + pad), 0, image_size)) for v in hi)
    return x0, y0, x1, y1


def aligned_mouths(frames: np.ndarray, bank: MouthBank, picks: np.ndarray, target_lips: np.ndarray) -> np.ndarray:
    """Warp each picked bank frame's crop so that its lips lie on the target's lips; zero outside the target's padded
    lip box. frames: uint8 [N, S, S, 3] (the presenter's crops, any timeline row); picks int [B] (-1: all zeros);
    target_lips [B, L, 2] -> uint8 [B, S, S, 3]."""
    import cv2

    size = frames.shape[1]
    out = np.zeros((len(picks), size, size, 3), np.uint8)
    for b, pick in enumerate(picks):
        if pick < 0:
            continue
        target = target_lips[b]
        if not np.isfinite(target).all():
            continue
        x0, y0, x1, y1 = lip_box(target, size)
        if x1 <= x0 or y1 <= y0:
            continue
        matrix = similarity(bank.lips[pick], target)
        matrix[:, 2] -= (x0, y0)  # warp only the box: the same map, shifted to the box's corner
        source = np.asarray(frames[int(bank.frames[pick])])
        out[b, y0:y1, x0:x1] = cv2.warpAffine(source, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE)
    return out


PAINT_FEATHER = 0.8  # px: Gaussian sigma of the painted opening's edge (the render's lip edge is not anti-aliased)
# px the painted opening is grown by, so that the feather's half-transparent edge lies on the retrieved lips, not on
# the render's teeth band: at 0 its bright edge showed through as a dotted outline along the inner lips
PAINT_GROW = 1.5


def _opening_box(ring: np.ndarray, image_size: int) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around an inner-lip polygon [P, 2] with room for the feather; None if empty."""
    if not np.isfinite(ring).all():
        return None
    margin = 3 + int(np.ceil(PAINT_GROW))
    x0, y0 = (int(np.clip(np.floor(v) - margin, 0, image_size)) for v in ring.min(0))
    x1, y1 = (int(np.clip(np.ceil(v) + margin, 0, image_size)) for v in ring.max(0))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _opening_cover(ring: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Soft mask float32 [h, w] of the polygon ``ring`` grown by PAINT_GROW inside ``box``: the fraction of each pixel
    inside (OpenCV's fill, 4x supersampled: it also fills the pixels its edges touch), feathered by PAINT_FEATHER."""
    import cv2

    x0, y0, x1, y1 = box
    sub, shift = 4, 4  # supersampling factor; sub-pixel polygon vertices (1/16 of a fine pixel)
    fine = np.zeros(((y1 - y0) * sub, (x1 - x0) * sub), np.uint8)
    points = np.round(((ring - (x0, y0)) * sub - 0.5) * (1 << shift)).astype(np.int32)  # crop px -> fine pixel index
    cv2.fillPoly(fine, [points], 255, lineType=cv2.LINE_8, shift=shift)
    radius = int(round(PAINT_GROW * sub))
    if radius:
        fine = cv2.dilate(fine, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    cover = fine.reshape(y1 - y0, sub, x1 - x0, sub).astype(np.float32).mean(axis=(1, 3)) / 255.0  # [h, w]
    return cv2.GaussianBlur(cover, (0, 0), PAINT_FEATHER)


def paint_mouths(composites: np.ndarray, mouths: np.ndarray, picks: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The composites uint8 [B, S, S, 3] with their mouth opening (inner-lip polygons [B, P, 2]) taken from the aligned
    retrieved mouths uint8 [B, S, S, 3]; frames with nothing retrieved (pick -1: empty bank) keep the render."""
    out = np.array(composites)
    for b in np.flatnonzero(np.asarray(picks) >= 0):
        box = _opening_box(np.asarray(inner[b]), out.shape[1])
        if box is None:
            continue
        x0, y0, x1, y1 = box
        alpha = _opening_cover(np.asarray(inner[b]), box)[..., None]  # [h, w, 1]
        here = out[b, y0:y1, x0:x1].astype(np.float32)
        mouth = np.asarray(mouths[b, y0:y1, x0:x1], np.float32)
        out[b, y0:y1, x0:x1] = np.clip(np.round(here + alpha * (mouth - here)), 0, 255).astype(np.uint8)
    return out


def retrieved_inputs(composites: np.ndarray, frames: np.ndarray, bank: MouthBank, picks: np.ndarray,
                     target_lips: np.ndarray, target_inner: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What a retrieval generator reads for a batch, the same in training, its evaluation and speak: the picked bank
    frames (int [B], -1: none) aligned to the target lips [B, L, 2] (``aligned_mouths``), and the composites uint8
    [B, S, S, 3] with their mouth opening painted from them when the inner-lip polygons [B, P, 2] are given
    (gan.paint_mouth; None: unpainted). -> (composites, aligned mouths, both uint8 [B, S, S, 3]; painted: bool
    [B, S, S], the pixels painting changed -- where the composite shows the presenter's own mouth -- or None)."""
    mouths = aligned_mouths(frames, bank, picks, target_lips)
    if target_inner is None:
        return composites, mouths, None
    painted = paint_mouths(composites, mouths, picks, target_inner)
    return painted, mouths, (painted != np.asarray(composites)).any(axis=-1)
