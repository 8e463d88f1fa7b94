"""Fitting the head model to FaceMesh landmark tracks: the optimisation behind the ``fit`` stage.

The model is fitted to 2D landmarks only (x, y of ``lmk_crop``; z optionally with a small weight), with
Gaussian priors on shape and expression and a temporal velocity prior whose weight differs per group:
head pose and camera are smoothed strongly (the head moves slowly and rigid jitter is the most visible
artefact), expression weakly, and the jaw hardly at all, so fast lip motion is not smeared.

Steps (``fit_sequence``):
1. rigid init per frame: weak-perspective Procrustes of the neutral model landmarks onto the 2D landmarks;
2. shape: one shape vector for the presenter, fitted jointly with the per-frame parameters of a subset of
   well-spread detected frames;
3. per-frame expression + jaw, head rotation and camera for all frames with the shape fixed (batched L-BFGS on
   a landmark-only surrogate probed from the model, see LandmarkSurrogate);
4. undetected frames take their parameters from linear interpolation of their detected neighbours.
Texture and lighting (``fit_texture_lighting``) need no renderer: frame colours are sampled at the projected
positions of front-facing skin vertices and solved by alternating ridge least squares.

Units: landmark residuals are in crop pixels; the camera is (scale, tx, ty) in NDC (see docs/CONTRIBUTING.md).
The pose translation is always zero: under a weak-perspective camera it is redundant with (tx, ty).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from .headmodel import camera as head_camera
from .headmodel import geometry, sh
from .progress import Progress
from .facemesh import LIPS
from .parallel import torch_threads
from .schemas import N_EXPR_JAW, N_EXPRESSION, N_LIGHTING, N_SHAPE, N_TEXTURE

LIP_MP_IDS = LIPS  # FaceMesh ids of FACEMESH_LIPS (outer + inner lip contours)
# Points that move with the skull only (nose bridge and tip, inner/outer eye corners, forehead): jitter metric.
RIGID_MP_IDS = (1, 4, 5, 6, 9, 10, 151, 168, 195, 197, 33, 133, 263, 362)
# Outer eye corners: the inter-ocular distance that normalises the NME.
EYE_CORNER_MP_IDS = (33, 263)


@dataclass(frozen=True)
class FitConfig:
    """The ``fit`` group of params.yaml (values there; built by ``params.load_config``)."""

    shape_frames: int  # frames fitted jointly to estimate the presenter's shape
    shape_iters: int
    surrogate: bool  # per-frame fit on a probed landmark-only surrogate of the model (when it is exact)
    surrogate_tolerance: float  # max surrogate landmark error / face size accepted (~0.3 px on a 256 crop)
    rigid_iters: int  # L-BFGS iterations on rotation + camera only, before expressions are freed
    frame_iters: int
    batch_size: int  # frames per optimisation batch (neighbouring batches are tied by the smoothness term)
    lip_weight: float  # weight of lip landmarks relative to the others
    z_weight: float  # weight of MediaPipe's relative depth (z) residuals
    shape_prior: float  # squared-norm prior weights, in px^2 per unit coefficient^2
    expression_prior: float
    jaw_prior: float
    smooth_rotation: float  # velocity prior weights per (px/frame)^2 of rigid motion
    smooth_camera: float
    smooth_expression: float  # per (coefficient/frame)^2
    smooth_jaw: float
    texture_frames: int
    texture_rounds: int
    texture_prior: float
    lighting_prior: float
    min_normal_z: float  # vertices facing the camera at least this much sample the frame colour
    overlay_frames: int
    device: str  # "auto" = CUDA when present
    # CPU threads for torch during the fit. The batched problems are small and overhead-bound: on the shared
    # 2-core machine a second thread made each op ~30x slower (thread synchronisation under load). 0 = the idle cores.
    cpu_threads: int

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class FrameParameters:
    """Per-frame fitted parameters (torch, on one device)."""

    expression: torch.Tensor  # [N, 53]: 50 expression + 3 jaw axis-angle
    rotation: torch.Tensor  # [N, 3] head rotation, axis-angle
    camera: torch.Tensor  # [N, 3] scale, tx, ty (NDC)

    def pose(self) -> torch.Tensor:
        """[N, 6] model pose: rotation + zero translation."""
        return torch.cat([self.rotation, torch.zeros_like(self.rotation)], dim=1)


# ----------------------------------------------------------------------------------------------------- helpers


def landmark_targets(lmk_crop: np.ndarray, landmark_mp_ids: np.ndarray) -> np.ndarray:
    """[N, 478, 3] FaceMesh landmarks -> [N, L, 3] the ones the model has, in the model's landmark order."""
    return lmk_crop[:, landmark_mp_ids]


def landmark_weights(landmark_mp_ids: np.ndarray, lip_weight: float) -> np.ndarray:
    """[L] per-landmark loss weights: lips weigh ``lip_weight``, the rest 1."""
    return np.where(np.isin(landmark_mp_ids, LIP_MP_IDS), lip_weight, 1.0).astype(np.float32)


def inter_ocular(lmk_crop: np.ndarray) -> np.ndarray:
    """[N, 478, >=2] -> [N] distance between the outer eye corners (33, 263) in px."""
    a, b = EYE_CORNER_MP_IDS
    return np.linalg.norm(lmk_crop[:, a, :2] - lmk_crop[:, b, :2], axis=-1)


def interpolate_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace rows where ``valid`` is False by linear interpolation (constant beyond the ends) of valid rows.

    values [N, D], valid bool [N] -> [N, D]. Raises ValueError if no row is valid.
    """
    if not valid.any():
        raise ValueError("no valid rows to interpolate from")
    if valid.all():
        return values.copy()
    t = np.arange(len(values))
    out = values.copy()
    for d in range(values.shape[1]):
        out[~valid, d] = np.interp(t[~valid], t[valid], values[valid, d])
    return out


def pixels_to_ndc(pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """[..., 2] pixels (y down) -> NDC (y up), the inverse of camera.project's pixel mapping."""
    x = pixels[..., 0] * 2.0 / image_size - 1.0
    y = 1.0 - pixels[..., 1] * 2.0 / image_size
    return torch.stack([x, y], dim=-1)


def rigid_init(model_points: np.ndarray, targets_ndc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weak-perspective Procrustes per frame.

    model_points [L, 3] neutral model landmarks, targets_ndc [N, L, 2] -> (rotation axis-angle [N, 3],
    camera [N, 3] (scale, tx, ty)) such that s * (R p)[:2] + t ~= target.
    """
    x = model_points - model_points.mean(0)  # [L, 3]
    y = targets_ndc - targets_ndc.mean(1, keepdims=True)  # [N, L, 2]
    # Affine 2x3 map per frame by least squares, then its closest scaled rotation.
    affine = np.einsum("nlk,lj->nkj", y, x) @ np.linalg.inv(x.T @ x)  # [N, 2, 3]
    u, sv, vt = np.linalg.svd(affine, full_matrices=False)  # u [N,2,2], vt [N,2,3]
    rows = u @ vt  # [N, 2, 3] orthonormal rows
    scale = sv.mean(1)
    third = np.cross(rows[:, 0], rows[:, 1])
    rot = np.concatenate([rows, third[:, None]], axis=1)  # [N, 3, 3]
    rotation = Rotation.from_matrix(rot).as_rotvec().astype(np.float32)
    proj_mean = scale[:, None] * (rows @ model_points.mean(0))  # [N, 2]
    trans = targets_ndc.mean(1) - proj_mean
    camera = np.concatenate([scale[:, None], trans], axis=1).astype(np.float32)
    return rotation, camera


def solve_camera(points: torch.Tensor, targets_ndc: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Closed-form weak-perspective camera for posed model points.

    points [N, L, 3] posed landmarks, targets_ndc [N, L, 2], weights [L] -> camera [N, 3] minimising
    sum_l w_l |s * p_l.xy + t - y_l|^2.
    """
    w = weights / weights.sum()
    p = points[..., :2]
    pm = (w[None, :, None] * p).sum(1)  # [N, 2]
    ym = (w[None, :, None] * targets_ndc).sum(1)
    pc, yc = p - pm[:, None], targets_ndc - ym[:, None]
    scale = (w[None, :, None] * pc * yc).sum((1, 2)) / (w[None, :, None] * pc * pc).sum((1, 2)).clamp_min(1e-12)
    return torch.cat([scale[:, None], ym - scale[:, None] * pm], dim=1)


def project_landmarks(model, shape: torch.Tensor, params: FrameParameters, image_size: int) -> torch.Tensor:
    """[N, L, 3] model landmarks in crop pixels (x, y) plus camera-scaled depth (z, px, larger = nearer)."""
    n = params.expression.shape[0]
    out = model(shape.expand(n, -1), params.expression, params.pose())
    xy = head_camera.project(out.landmarks, params.camera, image_size)
    z = out.landmarks[..., 2] * params.camera[:, :1] * image_size / 2.0
    return torch.cat([xy, z[..., None]], dim=-1)


# ------------------------------------------------------------------------------------------ fast landmarks


@dataclass
class SurrogateOutput:
    landmarks: torch.Tensor  # [B, L, 3]


class LandmarkSurrogate(torch.nn.Module):
    """Fast stand-in for ``model(shape, expression, pose).landmarks`` at one fixed shape, identified from the model.

    The per-frame fit evaluates the landmarks a few hundred times per batch; the full model also rebuilds every
    vertex and the (fixed) shape blend each time. Identified by probing the model's forward only, assuming:
    unposed landmarks at zero jaw are linear in the 50 expression coefficients (exact for FLAME and the open model),
    the jaw acts per landmark as  v + (R_jaw - I)(w_l v - b_l) + Q_l vec(R_jaw - I)  (linear blend skinning with
    pose correctives), and the head pose is a rotation about the origin plus translation. ``identify`` measures the
    error on fresh probes; callers fall back to the model when it is not negligible.
    """

    def __init__(self, shape0: torch.Tensor, shape_basis: torch.Tensor, base: torch.Tensor,
                 expression_basis: torch.Tensor, jaw_weight: torch.Tensor, jaw_offset: torch.Tensor,
                 corrective: torch.Tensor):
        super().__init__()
        self.register_buffer("shape0", shape0)  # [100] the shape it was identified at
        self.register_buffer("shape_basis", shape_basis)  # [100, L*3] (linearised at shape0)
        self.register_buffer("base", base)  # [L, 3]
        self.register_buffer("expression_basis", expression_basis)  # [50, L*3]
        self.register_buffer("jaw_weight", jaw_weight)  # [L]
        self.register_buffer("jaw_offset", jaw_offset)  # [L, 3]
        self.register_buffer("corrective", corrective)  # [9, L*3]

    def unposed(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """shape [B, 100] (one presenter: only row 0 is used), expression [B, 53] -> landmarks [B, L, 3] unposed."""
        b, l = expression.shape[0], self.base.shape[0]
        base = self.base + ((shape[:1] - self.shape0) @ self.shape_basis).view(l, 3)  # [1, L*3] -> [L, 3]
        v = base + (expression[:, :N_EXPRESSION] @ self.expression_basis).view(b, l, 3)  # [B, L*3] -> [B, L, 3]
        jaw = _rodrigues(expression[:, N_EXPRESSION:]) - torch.eye(3, device=v.device)  # [B, 3, 3]
        lever = self.jaw_weight[:, None] * v - self.jaw_offset  # [B, L, 3]
        corr = (jaw.reshape(b, 9) @ self.corrective).view(b, l, 3)  # [B, L*3] -> [B, L, 3]
        return v + _rotate(lever, jaw) + corr

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor) -> SurrogateOutput:
        """Same call as the head model; every row of ``shape`` must be the same (one presenter)."""
        v = self.unposed(shape, expression)
        rot = _rodrigues(pose[:, :3])
        return SurrogateOutput(_rotate(v, rot) + pose[:, None, 3:6])

    @classmethod
    @torch.no_grad()
    def identify(cls, model, shape: torch.Tensor, probes: int = 96, seed: int = 0) -> tuple["LandmarkSurrogate", float]:
        """Probe ``model`` at ``shape`` [100] -> (surrogate, max landmark error on fresh probes / face size)."""
        device = shape.device
        gen = torch.Generator().manual_seed(seed)
        zero_pose = lambda n: torch.zeros(n, 6, device=device)
        # Linear parts, by unit probes: row 0 neutral, then 50 expression units, then 100 shape units.
        count = 1 + N_EXPRESSION + N_SHAPE
        expr = torch.zeros(count, N_EXPR_JAW, device=device)
        expr[1:1 + N_EXPRESSION, :N_EXPRESSION] = torch.eye(N_EXPRESSION, device=device)
        shapes = shape.expand(count, -1).clone()
        shapes[1 + N_EXPRESSION:] += torch.eye(N_SHAPE, device=device)
        lin = model(shapes, expr, zero_pose(count)).landmarks  # [151, L, 3]
        base = lin[0]
        basis = (lin[1:1 + N_EXPRESSION] - base).reshape(N_EXPRESSION, -1)  # [50, L, 3] -> [50, L*3]
        shape_basis = (lin[1 + N_EXPRESSION:] - base).reshape(N_SHAPE, -1)  # [100, L, 3] -> [100, L*3]
        n_lmk = base.shape[0]

        def random_expression(n):
            e = torch.randn(n, N_EXPR_JAW, generator=gen).to(device)
            e[:, N_EXPRESSION:] = e[:, N_EXPRESSION:] * torch.tensor([0.15, 0.05, 0.05], device=device)
            e[:, N_EXPRESSION] = e[:, N_EXPRESSION].abs()
            return e

        e = random_expression(probes)
        v = base + (e[:, :N_EXPRESSION] @ basis).view(probes, n_lmk, 3)  # [K, L, 3]
        delta = model(shape.expand(probes, -1), e, zero_pose(probes)).landmarks - v  # [K, L, 3]
        jaw = _rodrigues(e[:, N_EXPRESSION:]) - torch.eye(3, device=device)  # [K, 3, 3]
        # delta[k,l,i] = w_l (D_k v_kl)_i - (D_k b_l)_i + sum_j Q_l[i, j] vec(D_k)_j: linear in (w_l, b_l, Q_l).
        dv = torch.einsum("kij,klj->lki", jaw, v)  # [L, K, 3]
        design = torch.zeros(n_lmk, probes, 3, 1 + 3 + 27, device=device)
        design[..., 0] = dv
        design[..., 1:4] = -jaw[None]  # [K, 3, 3] -> [L, K, 3(i), 3(j)]
        flat = jaw.reshape(probes, 9)
        for i in range(3):
            design[:, :, i, 4 + 9 * i: 4 + 9 * (i + 1)] = flat[None]
        design = design.reshape(n_lmk, probes * 3, 31)  # [L, K, 3, 31] -> [L, 3K, 31]
        target = delta.permute(1, 0, 2).reshape(n_lmk, probes * 3, 1)  # [K, L, 3] -> [L, 3K, 1]
        design, target = design.double(), target.double()  # the jaw columns are small: float32 loses them
        ata = design.transpose(1, 2) @ design + 1e-12 * torch.eye(31, device=device, dtype=torch.float64)
        sol = torch.linalg.solve(ata, design.transpose(1, 2) @ target)[..., 0].float()  # [L, 31]
        corrective = sol[:, 4:].reshape(n_lmk, 3, 9).permute(2, 0, 1).reshape(9, n_lmk * 3)  # Q_l[i, j] -> [9, L*3]
        surrogate = cls(shape.clone(), shape_basis, base, basis, sol[:, 0].contiguous(), sol[:, 1:4].contiguous(), corrective.contiguous())
        # Validate on fresh probes with a random head pose and a shape near the identification one.
        e = random_expression(probes)
        other = (shape + 0.5 * torch.randn(N_SHAPE, generator=gen).to(device)).expand(probes, -1)
        pose = torch.cat([0.3 * torch.randn(probes, 3, generator=gen),
                          0.01 * torch.randn(probes, 3, generator=gen)], 1)
        pose = pose.to(device)
        truth = model(other, e, pose).landmarks
        size = (base.max(0).values - base.min(0).values)[:2].max().clamp_min(1e-9)
        error = float((surrogate(other, e, pose).landmarks - truth).norm(dim=-1).max() / size)
        return surrogate, error


def _rotate(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """points [B, L, 3], matrices [B, 3, 3] -> [B, L, 3] = M @ p per point. Written as three broadcast
    multiply-adds: batched 3x3 bmm (and its backward) was ~30x slower on CPU for these shapes."""
    m = matrices[:, None]  # [B, 1, 3, 3]
    return points[..., 0:1] * m[..., 0] + points[..., 1:2] * m[..., 1] + points[..., 2:3] * m[..., 2]


def _rodrigues(rot_vecs: torch.Tensor) -> torch.Tensor:
    from .headmodel.lbs import batch_rodrigues

    return batch_rodrigues(rot_vecs)


# ---------------------------------------------------------------------------------------------- optimisation


def _velocity(x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """Sum of squared frame-to-frame differences of [B, D], continuing from the previous batch's last row."""
    if previous is not None:
        x = torch.cat([previous[None], x], dim=0)
    return ((x[1:] - x[:-1]) ** 2).sum()


class _FrameVariables(torch.nn.Module):
    """Free per-frame variables, stored in units of about one pixel of landmark motion each (rotation in 0.02 rad,
    translation in 0.01 NDC, ...): L-BFGS converges several times faster on this well-scaled problem."""

    ROTATION_UNIT = 0.02
    JAW_UNIT = 0.02
    LOG_SCALE_UNIT = 0.01
    TRANSLATION_UNIT = 0.01

    def __init__(self, init: FrameParameters):
        super().__init__()
        self.register_buffer("camera0", init.camera.clone())
        self.expression = torch.nn.Parameter(init.expression[:, :N_EXPRESSION].clone())
        self.jaw_raw = torch.nn.Parameter(init.expression[:, N_EXPRESSION:] / self.JAW_UNIT)
        self.rotation_raw = torch.nn.Parameter(init.rotation / self.ROTATION_UNIT)
        self.log_scale_raw = torch.nn.Parameter(torch.zeros_like(init.camera[:, 0]))
        self.translation_raw = torch.nn.Parameter(torch.zeros_like(init.camera[:, 1:]))

    @property
    def jaw(self) -> torch.Tensor:
        return self.jaw_raw * self.JAW_UNIT

    @property
    def rotation(self) -> torch.Tensor:
        return self.rotation_raw * self.ROTATION_UNIT

    def rigid_parameters(self) -> list[torch.nn.Parameter]:
        return [self.rotation_raw, self.log_scale_raw, self.translation_raw]

    def camera(self) -> torch.Tensor:
        scale = self.camera0[:, :1] * torch.exp(self.log_scale_raw * self.LOG_SCALE_UNIT)[:, None]
        return torch.cat([scale, self.camera0[:, 1:] + self.translation_raw * self.TRANSLATION_UNIT], dim=1)

    def parameters_now(self) -> FrameParameters:
        return FrameParameters(torch.cat([self.expression, self.jaw], dim=1), self.rotation, self.camera())


@dataclass
class _Anchor:
    """The last frame of the previous batch (detached), for the smoothness term across batch borders."""

    expression: torch.Tensor
    jaw: torch.Tensor
    rotation: torch.Tensor
    camera: torch.Tensor


def _fit_loss(model, shape, variables: _FrameVariables, targets, mask, weights, image_size, cfg: FitConfig,
              anchor: _Anchor | None, free_nonrigid: bool) -> torch.Tensor:
    """Data + prior + smoothness loss of one batch, normalised per frame."""
    params = variables.parameters_now()
    pred = project_landmarks(model, shape, params, image_size)  # [B, L, 3]
    res = pred[..., :2] - targets[..., :2]
    data = (weights * (res ** 2).sum(-1) * mask[:, None]).sum()
    if cfg.z_weight > 0:
        # MediaPipe's z has an arbitrary per-frame offset: compare depths relative to each frame's mean.
        dz = pred[..., 2] - targets[..., 2]
        dz = dz - dz.mean(1, keepdim=True)
        data = data + cfg.z_weight * ((dz ** 2) * mask[:, None]).sum()
    n = max(float(mask.sum()), 1.0)
    loss = data / n
    # Rigid velocities in approximate pixels: log-scale and rotation times a face radius (S/4), translation
    # NDC -> px, so one weight means the same for every image size.
    px = image_size / 2.0
    cam = params.camera
    cam_px = torch.cat([torch.log(cam[:, :1]) * px / 2, cam[:, 1:] * px], dim=1)
    anchor_cam = None if anchor is None else torch.cat([torch.log(anchor.camera[:1]) * px / 2, anchor.camera[1:] * px])
    b = float(params.expression.shape[0])
    smooth = (cfg.smooth_rotation * _velocity(variables.rotation * px / 2,
                                              None if anchor is None else anchor.rotation * px / 2)
              + cfg.smooth_camera * _velocity(cam_px, anchor_cam))
    if free_nonrigid:
        smooth = smooth + cfg.smooth_expression * _velocity(variables.expression,
                                                            None if anchor is None else anchor.expression)
        smooth = smooth + cfg.smooth_jaw * _velocity(variables.jaw, None if anchor is None else anchor.jaw)
        prior = (cfg.expression_prior * (variables.expression ** 2).sum()
                 + cfg.jaw_prior * (variables.jaw ** 2).sum())
    else:
        prior = torch.zeros((), device=loss.device)
    return loss + (smooth + prior) / b


def _minimise(parameters: list[torch.nn.Parameter], iters: int, closure) -> None:
    """Minimise ``closure()`` by L-BFGS with a strong-Wolfe line search (at most ``iters`` iterations).

    The problem is a small, smooth, well-scaled least-squares one: curvature information converged in about
    a tenth of the evaluations Adam needed on the stand-in model.
    """
    if iters <= 0:
        return
    opt = torch.optim.LBFGS(parameters, lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def full_closure():
        opt.zero_grad(set_to_none=True)
        loss = closure()
        loss.backward()
        return loss

    opt.step(full_closure)


def initial_parameters(model, shape: torch.Tensor, targets: torch.Tensor, detected: np.ndarray,
                       weights: torch.Tensor, image_size: int) -> FrameParameters:
    """Rigid init for every frame: Procrustes rotation, then the exact camera for the posed neutral model.

    targets [N, L, 3] px, detected bool [N] -> FrameParameters with zero expression.
    """
    device = targets.device
    n = targets.shape[0]
    with torch.no_grad():
        neutral = model(shape[None], torch.zeros(1, N_EXPR_JAW, device=device),
                        torch.zeros(1, 6, device=device)).landmarks[0]  # [L, 3]
        ndc = pixels_to_ndc(targets[..., :2], image_size)
        rotation, _ = rigid_init(neutral.cpu().numpy().astype(np.float64), ndc.cpu().numpy().astype(np.float64))
        rotation = interpolate_missing(rotation, detected)
        rotation = torch.as_tensor(rotation, device=device)
        pose = torch.cat([rotation, torch.zeros_like(rotation)], dim=1)
        posed = model(shape.expand(n, -1), torch.zeros(n, N_EXPR_JAW, device=device), pose).landmarks
        camera = solve_camera(posed, ndc, weights)
        camera = torch.as_tensor(interpolate_missing(camera.cpu().numpy(), detected), device=device)
    return FrameParameters(torch.zeros(n, N_EXPR_JAW, device=device), rotation, camera)


def fit_frames(model, shape: torch.Tensor, targets: torch.Tensor, detected: np.ndarray, weights: torch.Tensor,
               image_size: int, cfg: FitConfig, init: FrameParameters | None = None,
               progress: bool = False) -> FrameParameters:
    """Per-frame expression + jaw, rotation and camera with the shape fixed, in consecutive batches of frames.

    targets [N, L, 3] px, detected bool [N] (undetected frames have no data term and are interpolated after),
    weights [L] -> FrameParameters [N, ...].
    """
    if init is None:
        init = initial_parameters(model, shape, targets, detected, weights, image_size)
    n = targets.shape[0]
    mask_all = torch.as_tensor(detected, dtype=targets.dtype, device=targets.device)
    results: list[FrameParameters] = []
    anchor: _Anchor | None = None
    starts = range(0, n, cfg.batch_size)
    for start in Progress(starts, desc="fit frames", unit="batch", disable=not progress or len(starts) < 2):
        sl = slice(start, min(start + cfg.batch_size, n))
        variables = _FrameVariables(FrameParameters(init.expression[sl], init.rotation[sl], init.camera[sl]))
        _minimise(variables.rigid_parameters(), cfg.rigid_iters,
                  lambda: _fit_loss(model, shape, variables, targets[sl], mask_all[sl], weights, image_size, cfg,
                                    anchor, free_nonrigid=False))
        _minimise(list(variables.parameters()), cfg.frame_iters,
                  lambda: _fit_loss(model, shape, variables, targets[sl], mask_all[sl], weights, image_size, cfg,
                                    anchor, free_nonrigid=True))
        with torch.no_grad():
            done = variables.parameters_now()
            results.append(FrameParameters(done.expression.detach(), done.rotation.detach(), done.camera.detach()))
            anchor = _Anchor(variables.expression[-1].detach(), variables.jaw[-1].detach(),
                             variables.rotation[-1].detach(), done.camera[-1].detach())
    out = FrameParameters(*(torch.cat([getattr(r, k) for r in results]) for k in ("expression", "rotation", "camera")))
    if not detected.all():
        fill = lambda t: torch.as_tensor(interpolate_missing(t.cpu().numpy(), detected), device=t.device)
        out = FrameParameters(fill(out.expression), fill(out.rotation), fill(out.camera))
    return out


def landmark_model(model, shape: torch.Tensor, cfg: FitConfig):
    """What the per-frame fit evaluates: the probed LandmarkSurrogate when enabled and exact enough, else the model."""
    if not cfg.surrogate:
        return model
    surrogate, error = LandmarkSurrogate.identify(model, shape)
    if error > cfg.surrogate_tolerance:
        warnings.warn(f"landmark surrogate error {error:.2e} of the face size exceeds fit.surrogate_tolerance; "
                      "fitting frames with the full head model (slower)")
        return model
    return surrogate


def select_shape_frames(detected: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` detected frames spread evenly over the timeline (varied poses/expressions)."""
    idx = np.flatnonzero(detected)
    if len(idx) <= count:
        return idx
    return idx[np.linspace(0, len(idx) - 1, count).round().astype(int)]


def fit_shape(model, targets: torch.Tensor, detected: np.ndarray, weights: torch.Tensor, image_size: int,
              cfg: FitConfig, progress: bool = False) -> torch.Tensor:
    """The presenter's shape [100]: fitted jointly with per-frame parameters on a spread subset of frames."""
    device = targets.device
    idx = select_shape_frames(detected, cfg.shape_frames)
    sub = targets[idx]
    ones = np.ones(len(idx), bool)
    shape = torch.zeros(N_SHAPE, device=device, requires_grad=True)
    init = initial_parameters(model, shape.detach(), sub, ones, weights, image_size)
    variables = _FrameVariables(init)
    mask = torch.ones(len(idx), device=device)
    # The subset is not consecutive: no smoothness between its frames.
    loose = dataclasses.replace(cfg, smooth_rotation=0.0, smooth_camera=0.0, smooth_expression=0.0, smooth_jaw=0.0)

    def closure() -> torch.Tensor:
        loss = _fit_loss(model, shape, variables, sub, mask, weights, image_size, loose, None, free_nonrigid=True)
        return loss + cfg.shape_prior * (shape ** 2).sum()

    _minimise([*variables.parameters(), shape], cfg.shape_iters, closure)
    return shape.detach()


def fit_sequence(model, lmk_crop: np.ndarray, detected: np.ndarray, image_size: int, cfg: FitConfig,
                 progress: bool = False) -> tuple[torch.Tensor, FrameParameters]:
    """Shape, then per-frame parameters, for one presenter's landmark track.

    lmk_crop [N, 478, 3] px, detected bool [N] -> (shape [100], FrameParameters [N]).
    """
    if not detected.any():
        raise ValueError("no frame has detected landmarks")
    device = cfg.torch_device()
    model = model.to(device)
    ids = model.landmark_mp_ids.cpu().numpy()
    targets = torch.as_tensor(landmark_targets(lmk_crop, ids), dtype=torch.float32, device=device)
    weights = torch.as_tensor(landmark_weights(ids, cfg.lip_weight), device=device)
    with torch_threads(cfg.cpu_threads):
        shape = fit_shape(landmark_model(model, torch.zeros(N_SHAPE, device=device), cfg), targets, detected,
                          weights, image_size, cfg, progress)
        params = fit_frames(landmark_model(model, shape, cfg), shape, targets, detected, weights, image_size, cfg,
                            progress=progress)
    return shape, params


# ------------------------------------------------------------------------------------------ texture, lighting


def sample_colors(frames: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear colours of frames uint8/float [B, S, S, 3] at pixels [B, V, 2] -> float [B, V, 3] in [0, 1]."""
    size = frames.shape[1]
    images = frames.permute(0, 3, 1, 2).float() / (255.0 if frames.dtype == torch.uint8 else 1.0)  # [B,3,S,S]
    grid = (pixels + 0.0) * 2.0 / size - 1.0  # pixel-corner coordinates -> [-1, 1] (align_corners=False)
    sampled = torch.nn.functional.grid_sample(images, grid[:, :, None], mode="bilinear", align_corners=False)
    return sampled[..., 0].permute(0, 2, 1)  # [B, 3, V, 1] -> [B, V, 3]


def visible_geometry(model, shape, params: FrameParameters, image_size: int, min_normal_z: float):
    """Normals [B,V,3], pixel positions [B,V,2] and a visibility mask [B,V] (front-facing skin in the image)."""
    n = params.expression.shape[0]
    out = model(shape.expand(n, -1), params.expression, params.pose())
    normals = geometry.vertex_normals(out.vertices, model.faces)
    pixels = head_camera.project(out.vertices, params.camera, image_size)
    inside = ((pixels > 1) & (pixels < image_size - 2)).all(-1)
    skin = (model.interior_t < 0)[None]
    visible = (normals[..., 2] > min_normal_z) & inside & skin
    return normals, pixels, visible


def _shading_basis(normals: torch.Tensor) -> torch.Tensor:
    """[B, V, 3] normals -> [B, 27, V, 3]: sh.shade of unit albedo for each lighting unit vector (shading is
    linear in lighting, so any lighting layout of the 27 numbers is handled)."""
    b, v, _ = normals.shape
    eye = torch.eye(N_LIGHTING, device=normals.device)
    ones = torch.ones(b * N_LIGHTING, v, 3, device=normals.device)
    rep = normals[:, None].expand(b, N_LIGHTING, v, 3).reshape(b * N_LIGHTING, v, 3)  # [B*27, V, 3]
    basis = sh.shade(ones, rep, eye.repeat(b, 1))
    return basis.reshape(b, N_LIGHTING, v, 3)  # [B*27, V, 3] -> [B, 27, V, 3]


def _ridge(ata: torch.Tensor, atb: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Solve (A^T A + diag(prior)) x = A^T b, batched over leading dims."""
    return torch.linalg.solve(ata + torch.diag_embed(prior.expand(ata.shape[:-1])), atb[..., None])[..., 0]


def fit_texture_lighting(model, frames: np.ndarray, shape: torch.Tensor, params: FrameParameters,
                         image_size: int, cfg: FitConfig, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-presenter texture [50] and per-frame lighting [N, 27] from the frame colours.

    frames uint8 [N, S, S, 3]. Albedo is taken as linear in texture (probed from model.albedo); shading as
    linear in lighting (probed from sh.shade). Alternating ridge least squares: lighting per frame with the
    texture fixed, texture over a subset of frames with their lighting fixed.
    """
    device = shape.device
    n = frames.shape[0]
    with torch.no_grad():
        albedo0 = model.albedo(torch.zeros(1, N_TEXTURE, device=device))[0]  # [V, 3]
        albedo_basis = model.albedo(torch.eye(N_TEXTURE, device=device)) - albedo0  # [50, V, 3]
        texture = torch.zeros(N_TEXTURE, device=device)
        light_prior = torch.full((N_LIGHTING,), cfg.lighting_prior, device=device)
        tex_idx = np.linspace(0, n - 1, min(cfg.texture_frames, n)).round().astype(int)

        def chunk_data(sl):
            sub = FrameParameters(params.expression[sl], params.rotation[sl], params.camera[sl])
            normals, pixels, visible = visible_geometry(model, shape, sub, image_size, cfg.min_normal_z)
            colors = sample_colors(torch.as_tensor(np.asarray(frames[sl]), device=device), pixels)
            return _shading_basis(normals), colors, visible.float()

        def solve_lighting(sl, texture):
            basis, colors, vis = chunk_data(sl)
            albedo = (albedo0 + torch.einsum("k,kvc->vc", texture, albedo_basis)).clamp(0, 1)
            design = basis * albedo[None, None]  # [B, 27, V, 3]
            w = vis[:, None, :, None]
            ata = torch.einsum("bkvc,bjvc->bkj", design * w, design)
            atb = torch.einsum("bkvc,bvc->bk", design * w, colors)
            return _ridge(ata, atb, light_prior * vis.sum(1, keepdim=True).clamp_min(1))

        lighting = torch.zeros(n, N_LIGHTING, device=device)
        for _ in range(max(cfg.texture_rounds, 1)):
            lighting[tex_idx] = solve_lighting(tex_idx, texture)
            basis, colors, vis = chunk_data(tex_idx)
            shading = torch.einsum("bkvc,bk->bvc", basis, lighting[tex_idx])  # [B, V, 3]
            design = albedo_basis[None] * shading[:, None]  # [B, 50, V, 3]
            resid = colors - albedo0[None] * shading
            w = vis[:, None, :, None]
            ata = torch.einsum("bkvc,bjvc->kj", design * w, design)
            atb = torch.einsum("bkvc,bvc->k", design * w, resid)
            texture = _ridge(ata, atb, torch.full((N_TEXTURE,), cfg.texture_prior * len(tex_idx), device=device))
        for start in range(0, n, chunk):
            sl = np.arange(start, min(start + chunk, n))
            lighting[sl] = solve_lighting(sl, texture)
    return texture, lighting


# ---------------------------------------------------------------------------------------------------- metrics


def fit_metrics(pred: np.ndarray, lmk_crop: np.ndarray, detected: np.ndarray,
                landmark_mp_ids: np.ndarray) -> dict[str, np.ndarray | float]:
    """Landmark errors and jitter of a fit.

    pred [N, L, 2] fitted model landmarks (px), lmk_crop [N, 478, 3] FaceMesh landmarks, detected [N].
    Returns per-frame ``nme`` / ``lip_nme`` [N] and the summary floats ``nme``, ``lip_nme`` (means over detected
    frames), ``jitter_px`` (mean frame-to-frame displacement of the fitted rigid points) and
    ``landmark_jitter_px`` (the same for the FaceMesh input, for comparison) and their second-difference versions
    ``jitter_accel_px`` / ``landmark_jitter_accel_px``.
    """
    targets = lmk_crop[:, landmark_mp_ids, :2]
    iod = np.maximum(inter_ocular(lmk_crop), 1e-6)
    err = np.linalg.norm(pred - targets, axis=-1)  # [N, L]
    lips = np.isin(landmark_mp_ids, LIP_MP_IDS)
    rigid = np.isin(landmark_mp_ids, RIGID_MP_IDS)
    nme = err.mean(1) / iod
    lip_nme = (err[:, lips].mean(1) if lips.any() else np.full(len(err), np.nan)) / iod

    def jitter(points, order):  # [N, K, 2] -> mean |first (second) difference| over detected runs
        if len(points) <= order or points.shape[1] == 0:
            return float("nan")
        diff, ok = points, detected
        for _ in range(order):
            diff, ok = diff[1:] - diff[:-1], ok[1:] & ok[:-1]
        step = np.linalg.norm(diff, axis=-1).mean(1)
        return float(step[ok].mean()) if ok.any() else float("nan")

    return {"nme_per_frame": nme, "lip_nme_per_frame": lip_nme,
            "nme": float(nme[detected].mean()), "lip_nme": float(lip_nme[detected].mean()),
            "jitter_px": jitter(pred[:, rigid], 1), "landmark_jitter_px": jitter(targets[:, rigid], 1),
            # Second differences separate shake from smooth head motion.
            "jitter_accel_px": jitter(pred[:, rigid], 2), "landmark_jitter_accel_px": jitter(targets[:, rigid], 2)}
