"""The open default head model (no licence needed), loaded from assets/open_head_model.npz.

Topology: the 478 MediaPipe FaceMesh points (vertex i = FaceMesh landmark i) + a closed mouth interior; how every basis
is derived is documented in build_open.py. Deformation: template + identity modes + expression modes, then a 3-DoF jaw
rotation about a pivot blended by smooth per-vertex jaw weights (two-joint linear blend skinning, no pose correctives).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .base import N_EXPRESSION, N_SHAPE, N_TEXTURE, HeadModel
from .lbs import batch_rodrigues

ASSET_VERSION = 1
ASSET_KEYS = (
    "template", "shape_basis", "expression_basis", "jaw_pivot", "jaw_weights", "faces", "landmark_mp_ids",
    "lip_vertex_ids", "inner_lip_upper_ids", "inner_lip_lower_ids", "interior_t", "albedo_mean", "albedo_basis",
)


class OpenHeadModel(HeadModel):
    template: Tensor
    shape_basis: Tensor
    expression_basis: Tensor
    jaw_pivot: Tensor
    jaw_weights: Tensor

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(
            faces=arrays["faces"], landmark_mp_ids=arrays["landmark_mp_ids"], lip_vertex_ids=arrays["lip_vertex_ids"],
            inner_lip_upper_ids=arrays["inner_lip_upper_ids"], inner_lip_lower_ids=arrays["inner_lip_lower_ids"],
            interior_t=arrays["interior_t"], albedo_mean=arrays["albedo_mean"], albedo_basis=arrays["albedo_basis"],
            name="open",
        )
        self.register_buffer("template", torch.as_tensor(arrays["template"], dtype=torch.float32))  # [V, 3]
        self.register_buffer("shape_basis", torch.as_tensor(arrays["shape_basis"], dtype=torch.float32))  # [V, 3, 100]
        self.register_buffer("expression_basis",
                             torch.as_tensor(arrays["expression_basis"], dtype=torch.float32))  # [V, 3, 50]
        self.register_buffer("jaw_pivot", torch.as_tensor(arrays["jaw_pivot"], dtype=torch.float32))  # [3]
        self.register_buffer("jaw_weights", torch.as_tensor(arrays["jaw_weights"], dtype=torch.float32))  # [V]
        # One [150, V*3] matrix for identity + expression, so deform is a single matmul (the fit's hot path).
        stacked = torch.cat([self.shape_basis, self.expression_basis], dim=2)  # [V, 3, 150]
        self.register_buffer("stacked_basis", stacked.reshape(-1, N_SHAPE + N_EXPRESSION).T.contiguous(),
                             persistent=False)  # [V, 3, 150] -> [V*3, 150] -> [150, V*3]

    def deform(self, shape: Tensor, expression: Tensor) -> Tensor:
        """shape [B, 100], expression [B, 53] -> unposed vertices [B, V, 3]."""
        coeffs = torch.cat([shape, expression[:, :N_EXPRESSION]], dim=1)  # [B, 150]
        offsets = (coeffs @ self.stacked_basis).view(shape.shape[0], -1, 3)  # [B, V*3] -> [B, V, 3]
        vertices = self.template[None] + offsets
        jaw = batch_rodrigues(expression[:, N_EXPRESSION:N_EXPRESSION + 3])  # [B, 3, 3]
        centred = vertices - self.jaw_pivot
        rotated = torch.bmm(centred, jaw.transpose(1, 2)) + self.jaw_pivot  # row-vector form of R @ v
        return vertices + self.jaw_weights[None, :, None] * (rotated - vertices)

    def landmarks_from(self, vertices: Tensor) -> Tensor:
        """The first 478 vertices are the FaceMesh landmarks themselves: [B, V, 3] -> [B, 478, 3]."""
        return vertices[:, : self.landmark_mp_ids.shape[0]]


def load_open_model(path: str | Path) -> OpenHeadModel:
    """Load and validate the open head model asset."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise InputError(path, "open head model missing; build it with "
                               "`python -m talkinghead.headmodel.build_open`") from exc
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable .npz ({exc})") from exc
    missing = [k for k in ASSET_KEYS if k not in arrays]
    if missing:
        raise InputError(path, f"open head model lacks {missing}")
    n = arrays["template"].shape[0]
    expected = {"shape_basis": (n, 3, N_SHAPE), "expression_basis": (n, 3, N_EXPRESSION), "jaw_weights": (n,),
                "interior_t": (n,), "albedo_mean": (n, 3), "albedo_basis": (n, 3, N_TEXTURE), "jaw_pivot": (3,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise InputError(path, f"{key} has shape {arrays[key].shape}, expected {shape}")
    if arrays["faces"].ndim != 2 or arrays["faces"].shape[1] != 3 or arrays["faces"].max() >= n:
        raise InputError(path, "faces must be [F, 3] vertex indices")
    return OpenHeadModel(arrays)
