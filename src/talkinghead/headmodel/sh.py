"""Second-order (9-band) real spherical-harmonics lighting with DECA's constants (Lambertian, irradiance-scaled).

lighting [B, 27] = 9 bands x RGB, reshaped band-major to [B, 9, 3].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Band constants (Ramamoorthi & Hanrahan irradiance normalisation, as in DECA).
SH_CONSTANTS = (
    1.0 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)


def sh_basis(normals: Tensor) -> Tensor:
    """Unit normals [B, V, 3] -> SH basis values [B, V, 9] (constants included)."""
    x, y, z = normals.unbind(dim=-1)
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim=-1
    )  # [B, V, 9]
    return basis * basis.new_tensor(SH_CONSTANTS)


def shade(albedo: Tensor, normals: Tensor, lighting: Tensor) -> Tensor:
    """albedo [B, V, 3], normals [B, V, 3], lighting [B, 27] -> shaded colours [B, V, 3] = albedo * irradiance."""
    coeffs = lighting.view(lighting.shape[0], 9, 3)  # [B, 27] -> [B, 9, 3]
    irradiance = torch.einsum("bvk,bkc->bvc", sh_basis(normals), coeffs)
    return albedo * irradiance


def ambient_lighting(batch: int, level: float = 1.0, dtype=torch.float32, device=None) -> Tensor:
    """Lighting [B, 27] whose irradiance is `level` everywhere (only band 0): a neutral starting point for fitting."""
    lighting = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    lighting[:, 0, :] = level / SH_CONSTANTS[0]
    return lighting.view(batch, 27)  # [B, 9, 3] -> [B, 27]
