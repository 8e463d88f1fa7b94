"""Component discriminator on the mouth: judges lips, teeth and mouth interior at close range.

Mouth crops are cut from the full images with ``torchvision.ops.roi_align`` using each frame's mouth box
(crop pixels, from the lip landmarks), resampled to a fixed size (64x64). roi_align is differentiable in the
image, so this discriminator's loss reaches every generator pixel inside the box and nothing outside it.
Conditioned on the composite's mouth crop (the rendered mouth shape), like the face discriminator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
from torchvision.ops import roi_align

from .face_discriminator import PatchDiscriminator


@dataclass
class MouthDiscriminatorConfig:
    crop_size: int = 64
    base_channels: int = 32
    layers: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def crop_mouths(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Resample each image's box to size x size.

    images [B, C, H, W]; boxes [B, 4] (x0, y0, x1, y1) in pixels of ``images`` (origin at the top-left pixel's
    corner, matching ``aligned=True``) -> [B, C, size, size].
    """
    index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
    rois = torch.cat([index, boxes.to(images.dtype)], dim=1)  # [B, 5]: batch index, x0, y0, x1, y1
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def mouth_crops(images: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """uint8 [B, S, S, 3] + boxes [B, 4] -> uint8 [B, size, size, 3] (roi_align, the discriminator's view).

    The one mouth crop of the project: the mouth PSNR / SSIM of train_gan and evaluate are both taken on it."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()  # [B, S, S, 3] -> [B, 3, S, S]
    crops = crop_mouths(x, torch.from_numpy(boxes), size)
    return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # -> [B, size, size, 3]


class MouthDiscriminator(nn.Module):
    def __init__(self, config: MouthDiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or MouthDiscriminatorConfig()
        self.net = PatchDiscriminator(6, config.base_channels, config.layers)

    def forward(self, composite: torch.Tensor, image: torch.Tensor, boxes: torch.Tensor) -> list[torch.Tensor]:
        """composite, image [B, 3, H, W]; boxes [B, 4] -> features of the [B, 6, 64, 64] mouth pair, logits last."""
        pair = torch.cat([composite, image], dim=1)  # [B, 6, H, W]
        crops = crop_mouths(pair.float(), boxes, self.config.crop_size)  # roi_align wants matching float dtypes
        return self.net(crops)
