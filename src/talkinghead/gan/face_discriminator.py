"""Whole-face discriminator: multi-scale PatchGAN conditioned on the composite.

Each scale sees [composite, image] (6 channels) and scores overlapping patches, so it judges whether the image
is a plausible real frame *for this composite* (pix2pix-style conditioning). The second scale sees a 2x
downsampled pair and judges larger structures (face shape, shading continuity across the mask border).
``forward`` returns, per scale, the list of intermediate feature maps (for feature matching) whose last entry
is the patch logits [B, 1, h, w].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class PatchDiscriminatorConfig:
    in_channels: int = 6  # composite + image
    base_channels: int = 32
    layers: int = 3  # stride-2 convs; receptive field ~ 4 * 2**layers pixels
    scales: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    """One PatchGAN: ``layers`` stride-2 4x4 convs, then a 3x3 conv to one logit per patch.

    Lighter than pix2pix's (no stride-1 penultimate layer): on a 2-core CPU the discriminators, run twice per
    iteration, would otherwise cost more than the generator.
    """

    def __init__(self, in_channels: int, base_channels: int, layers: int):
        super().__init__()
        blocks = []
        c_in, c_out = in_channels, base_channels
        for _ in range(layers):
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)))
            c_in, c_out = c_out, min(c_out * 2, 256)
        blocks.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, config: PatchDiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or PatchDiscriminatorConfig()
        self.scales = nn.ModuleList(
            PatchDiscriminator(config.in_channels, config.base_channels, config.layers) for _ in range(config.scales)
        )

    def forward(self, composite: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """composite, image [B, 3, H, W] in [-1, 1] -> per scale, features with logits last."""
        x = torch.cat([composite, image], dim=1)  # [B, 6, H, W]
        outputs = []
        for i, d in enumerate(self.scales):
            if i > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d(x))
        return outputs
