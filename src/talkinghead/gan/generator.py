"""Generator: composite (rendered lower face pasted on the real crop) -> photoreal face crop.

A small U-Net built for CPU speed (>= 10 frames/s at 256x256 on two cores):
- encoder: one full-resolution conv, then per level a stride-2 conv and a conv (no transposed convs anywhere);
- decoder (FPN-style): project the coarser features to the finer width with a 3x3 conv at the *coarse*
  resolution, upsample bilinearly (smooth, so no checkerboard), add the encoder skip, refine with a 3x3 conv.
  Doing the width change before upsampling keeps the expensive full-resolution layers 16 channels wide;
- head: a residual added to the composite, its conv initialised to zero so training starts from the identity.
  Outside the rendered region the composite already *is* the real frame, so L1 drives the residual to zero
  there (no colour drift at the mask border); inside it paints texture and teeth. (A learned blend mask
  alpha * rgb + (1 - alpha) * composite was tried first: alpha collapsed to 0 before the RGB branch was useful.)
  With ``chroma_pool`` > 1 the residual's colour (its difference from grey) is averaged over chroma_pool-pixel
  blocks and upsampled smoothly, its brightness kept sharp: the net can still draw tooth edges and lip creases
  but no longer the green, yellow and red speckles short CPU training left in open mouths (the composite's own
  colour detail, e.g. the retrieved real mouth, passes through untouched). With ``keep_painted_colour`` the
  residual has no colour at all where the composite shows the presenter's own retrieved mouth (the painted
  opening): the net may brighten or darken those teeth, not tint them; their colour is the real frame's. The
  trainer leaves it off in its training steps (``painted`` not passed): trained under it, the net moved the tint
  onto the lips around the opening (orange lip edges); applied when generating only, the teeth keep their colour.
Optionally a reference frame of the same presenter (a closed-mouth training frame, stored in the checkpoint)
is concatenated to the input, giving the network the presenter's true skin and lip appearance, and (use_retrieval)
a retrieved mouth: the training frame whose mouth shape is nearest the rendered one, aligned to the target's lips
(gan/retrieval.py; zeros outside the mouth, and everywhere when nothing can be retrieved) -- real teeth and mouth
interior to copy from instead of the render's procedural teeth band.
Images are float tensors in [-1, 1], [B, 3, H, W]; H and W must be multiples of 2 ** (levels - 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GeneratorConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128)  # width per level; level i works at 1 / 2**i resolution
    use_reference: bool = True
    use_retrieval: bool = False  # 3 more input channels: the retrieved, aligned mouth (False in older checkpoints)
    paint_mouth: bool = False  # its composites' mouth opening is painted from the retrieved mouth (retrieval.paint_mouths)
    image_size: int = 256  # the resolution it is trained for (fully convolutional: any multiple works)
    chroma_pool: int = 1  # >1: the residual's colour is this many pixels coarse (smooth_chroma); 1 in older checkpoints
    keep_painted_colour: bool = False  # no residual colour on painted pixels (forward's ``painted``); False in older

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)

    @property
    def in_channels(self) -> int:
        return 3 + 3 * int(self.use_reference) + 3 * int(self.use_retrieval)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: the U-Net's stride, and the colour blocks' side, so that a window
        snapped to it pools the same blocks as the whole crop."""
        return math.lcm(2 ** (len(self.channels) - 1), self.chroma_pool)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        config = config or GeneratorConfig()
        self.config = config
        ch = config.channels
        self.stem = nn.Sequential(conv3x3(config.in_channels, ch[0]), act())
        self.down = nn.ModuleList(
            nn.Sequential(conv3x3(ch[i - 1], ch[i], stride=2), act(), conv3x3(ch[i], ch[i]), act())
            for i in range(1, len(ch))
        )
        # project[i] maps level i+1 features to level i width (applied before upsampling)
        self.project = nn.ModuleList(nn.Sequential(conv3x3(ch[i + 1], ch[i]), act()) for i in range(len(ch) - 1))
        self.refine = nn.ModuleList(nn.Sequential(conv3x3(ch[i], ch[i]), act()) for i in range(len(ch) - 1))
        self.head = conv3x3(ch[0], 3)
        nn.init.zeros_(self.head.weight)  # start as the identity: output = composite
        nn.init.zeros_(self.head.bias)
        # a reference frame of the presenter ([1, 3, S, S] in [-1, 1]); empty until training picks one
        self.register_buffer("reference", torch.zeros(0))

    def forward(self, composite: torch.Tensor, reference: torch.Tensor | None = None,
                retrieved: torch.Tensor | None = None, painted: torch.Tensor | None = None) -> torch.Tensor:
        """composite [B, 3, H, W] in [-1, 1]; reference [B or 1, 3, H, W] (default: the stored one); retrieved
        [B, 3, H, W] aligned mouths in [-1, 1] (None: nothing retrieved); painted [B, 1, H, W] in 0..1, where the
        composite shows the retrieved real mouth (None: nowhere) -> [B, 3, H, W]."""
        inputs = [composite]
        if self.config.use_reference:
            if reference is None:
                if self.reference.numel() == 0:
                    raise ValueError("this generator needs a reference frame and none is stored")
                reference = self.reference
            inputs.append(reference.to(composite.dtype).expand(composite.shape[0], -1, -1, -1))
        if self.config.use_retrieval:
            # an empty bank gives zeros in uint8, i.e. -1 here; None stands for the same
            inputs.append(torch.full_like(composite, -1.0) if retrieved is None else retrieved.to(composite.dtype))
        x = torch.cat(inputs, dim=1) if len(inputs) > 1 else composite  # [B, in_channels, H, W]
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips[-1]
        for i in reversed(range(len(self.refine))):
            y = self.project[i](y)
            y = F.interpolate(y, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.refine[i](y.add_(skips[i]))  # in place on the fresh upsample output: saves a full-res copy
        residual = self.head(y)  # [B, 3, H, W]
        if self.config.chroma_pool > 1:
            residual = smooth_chroma(residual, self.config.chroma_pool)
        if self.config.keep_painted_colour and painted is not None:
            grey = residual.mean(dim=1, keepdim=True)  # [B, 1, H, W]
            residual = grey + (residual - grey) * (1.0 - painted.to(residual.dtype))  # painted: brightness only
        return (composite + residual).clamp(-1.0, 1.0)


def smooth_chroma(residual: torch.Tensor, pool: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, H, W]: the grey part (the channel mean) kept per pixel, the colour part (each
    channel minus that mean) replaced by its pool x pool block average, bilinearly upsampled back."""
    grey = residual.mean(dim=1, keepdim=True)  # [B, 1, H, W]
    coarse = F.avg_pool2d(residual - grey, pool, ceil_mode=True)  # [B, 3, ceil(H / pool), ceil(W / pool)]
    return grey + F.interpolate(coarse, size=residual.shape[-2:], mode="bilinear", align_corners=False)


def to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return images_uint8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # [B, H, W, 3] -> [B, 3, H, W]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
