"""What every head model (open default or FLAME) offers: the interface in docs/CONTRIBUTING.md "Head model"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .lbs import batch_rodrigues

N_SHAPE = 100
N_EXPRESSION = 50
N_JAW = 3
N_TEXTURE = 50


@dataclass
class HeadOutput:
    vertices: Tensor  # [B, V, 3] posed vertices in model space (y up, z toward the camera)
    landmarks: Tensor  # [B, L, 3] posed model landmarks, row l <-> MediaPipe id landmark_mp_ids[l]


def _long(values) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _float(values) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


class HeadModel(nn.Module):
    """Base class: buffers shared by all head models, the albedo model and the rigid head pose.

    Subclasses implement ``deform(shape [B,100], expression [B,53]) -> [B,V,3]`` (unposed vertices) and
    ``landmarks_from(vertices [B,V,3]) -> [B,L,3]``.
    """

    faces: Tensor
    landmark_mp_ids: Tensor
    lip_vertex_ids: Tensor
    inner_lip_upper_ids: Tensor
    inner_lip_lower_ids: Tensor
    interior_t: Tensor
    albedo_mean: Tensor
    albedo_basis: Tensor

    def __init__(self, *, faces, landmark_mp_ids, lip_vertex_ids, inner_lip_upper_ids, inner_lip_lower_ids,
                 interior_t, albedo_mean, albedo_basis, name: str) -> None:
        super().__init__()
        self.name = name
        self.register_buffer("faces", _long(faces))  # [F, 3] counter-clockwise seen from the camera
        self.register_buffer("landmark_mp_ids", _long(landmark_mp_ids))  # [L]
        self.register_buffer("lip_vertex_ids", _long(lip_vertex_ids))
        self.register_buffer("inner_lip_upper_ids", _long(inner_lip_upper_ids))  # [K]
        self.register_buffer("inner_lip_lower_ids", _long(inner_lip_lower_ids))  # [K]
        self.register_buffer("interior_t", _float(interior_t))  # [V]
        self.register_buffer("albedo_mean", _float(albedo_mean))  # [V, 3]
        self.register_buffer("albedo_basis", _float(albedo_basis))  # [V, 3, 50]

    @property
    def num_vertices(self) -> int:
        return int(self.interior_t.shape[0])

    def deform(self, shape: Tensor, expression: Tensor) -> Tensor:
        raise NotImplementedError

    def landmarks_from(self, vertices: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, shape: Tensor, expression: Tensor, pose: Tensor) -> HeadOutput:
        """shape [B, 100], expression [B, 53] (50 expression + 3 jaw axis-angle), pose [B, 6] (axis-angle, translation).

        Posed vertices = R(pose[:, :3]) @ v + pose[:, 3:], rotating about the model origin.
        """
        vertices = self.deform(shape, expression)  # [B, V, 3]
        rotation = batch_rodrigues(pose[:, :3])  # [B, 3, 3]
        vertices = torch.bmm(vertices, rotation.transpose(1, 2)) + pose[:, None, 3:6]  # row-vector form of R @ v
        return HeadOutput(vertices=vertices, landmarks=self.landmarks_from(vertices))

    def albedo(self, texture: Tensor) -> Tensor:
        """texture [B, 50] -> per-vertex albedo [B, V, 3] in [0, 1]."""
        colours = self.albedo_mean[None] + torch.einsum("bk,vck->bvc", texture, self.albedo_basis)
        return colours.clamp(0.0, 1.0)

    def zero_parameters(self, batch: int = 1) -> dict[str, Tensor]:
        """Neutral shape / expression / pose / texture coefficients (zeros) on the model's device."""
        dev = self.faces.device
        return {
            "shape": torch.zeros(batch, N_SHAPE, device=dev),
            "expression": torch.zeros(batch, N_EXPRESSION + N_JAW, device=dev),
            "pose": torch.zeros(batch, 6, device=dev),
            "texture": torch.zeros(batch, N_TEXTURE, device=dev),
        }


def inner_lip_gap(points, upper, lower):
    """points [B, V, 3] (torch or numpy), indices upper [K] / lower [K] of the inner-lip pairs among them -> [B]: mean
    over the pairs of |y(upper) - y(lower)|. Whole meshes (``mouth_opening``) or just their lip vertices (the lip
    model's mouth-opening loss) measure the gap alike."""
    return abs(points[:, upper, 1] - points[:, lower, 1]).mean(1)  # [B, K] -> [B]


def mouth_opening(vertices: Tensor, model: HeadModel) -> Tensor:
    """vertices [B, V, 3] -> [B]: mean over inner-lip pairs of |y(upper) - y(lower)|, in model units."""
    return inner_lip_gap(vertices, model.inner_lip_upper_ids, model.inner_lip_lower_ids)
