"""The lip-coefficient network: per-frame audio features -> 53-d expression (50 expression + 3 jaw).

As in the method: sinusoidal positional encoding + a 6-layer Transformer encoder + a linear layer. Each frame's
C x n_mels log-mel context is projected to one token; a learned presenter embedding is added to every token so one
model serves all onboarded presenters (their speaking styles differ). Outputs are in standardised target units;
the checkpoint stores the per-dimension mean/std to undo it (see ``talkinghead.lip.predict``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..schemas import N_EXPR_JAW


# The keys of params.yaml's lip group that shape the network.
# (smooth_sigma is not architecture but inference behaviour the checkpoint must carry, as infer_stride is.)
ARCHITECTURE_KEYS = ("d_model", "n_heads", "ff_dim", "n_layers", "dropout", "window", "infer_stride", "smooth_sigma")


@dataclass
class LipConfig:
    """Everything needed to rebuild the network; saved in the checkpoint."""

    presenters: list[str] = field(default_factory=lambda: ["demo"])
    n_context: int = 11  # mel hops per frame (align.context_hops * 2 + 1)
    n_mels: int = 80
    d_model: int = 128
    n_heads: int = 4
    ff_dim: int = 256
    n_layers: int = 6
    dropout: float = 0.1
    n_out: int = N_EXPR_JAW
    max_len: int = 1024  # longest sequence the positional encoding covers
    window: int = 48  # training / inference sequence length (frames)
    infer_stride: int = 24
    smooth_sigma: float = 0.0  # Gaussian smoothing of the output over time, frames (0: off; older checkpoints)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LipConfig":
        """From a checkpoint's saved config."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def from_params(cls, params: Any, presenters: list[str], n_context: int, n_mels: int) -> "LipConfig":
        """From the ``lip`` params group (a LipParams) and what the data decides: presenters and feature shape."""
        arch = {name: getattr(params, name) for name in ARCHITECTURE_KEYS}
        return cls(presenters=list(presenters), n_context=n_context, n_mels=n_mels, **arch)


def smoothing_radius(sigma: float) -> int:
    """Half-width in frames of the truncated Gaussian kernel of ``smooth_frames`` (0 when smoothing is off)."""
    return int(math.ceil(3.0 * sigma)) if sigma > 0 else 0


def smooth_frames(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing over time of ``values`` [N, D] (sigma in frames, kernel truncated at 3 sigma; 0 = a copy).

    Symmetric, so a step keeps its timing (no delay). Near the ends the kernel is cut and renormalised (normalised
    convolution) rather than padded, so the first and last frames are not pulled towards a made-up value.
    """
    radius = smoothing_radius(sigma)
    if radius == 0 or values.shape[0] < 2:
        return values.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)  # [K]
    x = values.T[:, None, :]  # [N, D] -> [D, 1, N]: one channel per dimension
    smoothed = torch.nn.functional.conv1d(x, kernel[None, None], padding=radius)[:, 0].T  # [D, N] -> [N, D]
    ones = torch.ones(1, 1, values.shape[0], dtype=values.dtype, device=values.device)
    weight = torch.nn.functional.conv1d(ones, kernel[None, None], padding=radius)[0, 0]  # [N]
    return smoothed / weight[:, None]


def sinusoidal_encoding(length: int, d_model: int) -> torch.Tensor:
    """Sinusoidal positional encoding [length, d_model] (Vaswani et al.):
    pe[p, 2i] = sin(p / 10000^(2i/d)), pe[p, 2i+1] = cos(p / 10000^(2i/d))."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # [L, 1]
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))  # [D/2]
    angles = position * inv_freq[None, :]  # [L, D/2]
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding to a batch of token sequences [B, T, D]."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)  # [max_len, D]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.pe.shape[0]:
            raise ValueError(f"sequence of {length} frames is longer than the positional encoding ({self.pe.shape[0]})")
        return tokens + self.pe[None, :length]  # [1, T, D] broadcast over the batch


class LipTransformer(nn.Module):
    """features [B, T, C, n_mels] + presenter ids [B] -> standardised 53-d expression [B, T, 53]."""

    def __init__(self, config: LipConfig):
        super().__init__()
        self.config = config
        c = config
        self.input_proj = nn.Sequential(
            nn.Linear(c.n_context * c.n_mels, c.d_model),
            nn.GELU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.d_model, c.d_model),
        )
        self.presenter_embedding = nn.Embedding(len(c.presenters), c.d_model)
        self.positional = PositionalEncoding(c.d_model, c.max_len)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.ff_dim, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # norm_first (pre-LN) keeps a 6-layer stack stable without long warm-up; nested tensors are unused here.
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, norm=nn.LayerNorm(c.d_model),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(c.d_model, c.n_out)

    def forward(self, features: torch.Tensor, presenter: torch.Tensor) -> torch.Tensor:
        b, t, ctx, mels = features.shape
        tokens = self.input_proj(features.reshape(b, t, ctx * mels))  # [B, T, C, M] -> [B, T, C*M] -> [B, T, D]
        tokens = tokens + self.presenter_embedding(presenter)[:, None, :]  # [B, D] -> [B, 1, D]
        tokens = self.positional(tokens)
        return self.head(self.encoder(tokens))  # [B, T, D] -> [B, T, 53]

    def presenter_index(self, name: str) -> int:
        if name not in self.config.presenters:
            raise KeyError(name)
        return self.config.presenters.index(name)
