"""Weak-perspective camera, exactly as docs/CONTRIBUTING.md defines it.

ndc_xy = s * v_xy + (tx, ty) for posed model-space vertices v (the head pose R, t is applied by the model's forward),
ndc in [-1, 1] with y up; pixels: px = (ndc_x + 1) * S / 2, py = (1 - ndc_y) * S / 2 (origin at the top-left corner).
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_ndc(vertices: Tensor, camera: Tensor) -> Tensor:
    """vertices [B, V, 3], camera [B, 3] = (s, tx, ty) -> [B, V, 3]: x, y in NDC (y up), z = s * z (larger = nearer)."""
    scale = camera[:, None, 0:1]  # [B, 1, 1]
    offset = camera[:, None, 1:3]  # [B, 1, 2]
    xy = scale * vertices[..., :2] + offset
    z = scale * vertices[..., 2:3]
    return torch.cat([xy, z], dim=-1)


def ndc_to_pixels(ndc_xy: Tensor, image_size: int) -> Tensor:
    """NDC x, y [..., 2] (y up) -> pixel coordinates [..., 2] (x right, y down) in an image_size square."""
    px = (ndc_xy[..., 0] + 1.0) * image_size / 2.0
    py = (1.0 - ndc_xy[..., 1]) * image_size / 2.0
    return torch.stack([px, py], dim=-1)


def project(vertices: Tensor, camera: Tensor, image_size: int) -> Tensor:
    """vertices [B, V, 3], camera [B, 3] -> pixel coordinates [B, V, 2] in an image_size x image_size crop."""
    return ndc_to_pixels(to_ndc(vertices, camera)[..., :2], image_size)
