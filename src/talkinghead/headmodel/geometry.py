"""Mesh geometry helpers."""

from __future__ import annotations

import torch
from torch import Tensor


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unnormalised face normals [B, F, 3] (length = 2 x area) of counter-clockwise faces [F, 3]."""
    v0 = vertices[:, faces[:, 0]]
    v1 = vertices[:, faces[:, 1]]
    v2 = vertices[:, faces[:, 2]]
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Area-weighted unit vertex normals [B, V, 3] of vertices [B, V, 3] and faces [F, 3] (LongTensor).

    Vertices in no face (e.g. iris points) get the zero vector.
    """
    fn = face_normals(vertices, faces)  # [B, F, 3]
    normals = torch.zeros_like(vertices)
    for corner in range(3):  # three scatter-adds, one per triangle corner
        normals.index_add_(1, faces[:, corner], fn)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(eps)
