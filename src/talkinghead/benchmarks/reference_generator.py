"""A generator of Wav2Lip's size and shape, random weights, as a speed yardstick for `make bench`.

Wav2Lip (Prajwal et al. 2020) is the usual reference for lip-sync generation speed. Its weights cannot be downloaded
here, and speed does not depend on them, so this module builds a network with the same layer plan: a face encoder
on the 6-channel 96 x 96 input (masked frame + reference frame), an audio encoder on an 80 x 16 mel window, and a
decoder of transposed convolutions with encoder skips, every conv followed by batch norm and ReLU, residual blocks
in between (~36 M parameters). ``frames_per_s`` times its forward pass at batch 32 on this machine's threads, the
setting Wav2Lip's inference script uses; what talkinghead's speak does per frame is compared against it.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn


class ConvBlock(nn.Module):
    """conv + batch norm + ReLU, optionally residual (same shape in and out)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride, padding: int, residual: bool = False,
                 transpose: bool = False, output_padding: int = 0):
        super().__init__()
        if transpose:
            conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, output_padding)
        else:
            conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.body = nn.Sequential(conv, nn.BatchNorm2d(c_out))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return torch.relu(y + x if self.residual else y)


def stage(c_in: int, c_out: int, stride, n_residual: int, kernel: int = 3, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(ConvBlock(c_in, c_out, kernel, stride, padding),
                         *(ConvBlock(c_out, c_out, 3, 1, 1, residual=True) for _ in range(n_residual)))


def up_stage(c_in: int, c_out: int, stride: int, padding: int, output_padding: int, n_residual: int) -> nn.Sequential:
    return nn.Sequential(ConvBlock(c_in, c_out, 3, stride, padding, transpose=True, output_padding=output_padding),
                         *(ConvBlock(c_out, c_out, 3, 1, 1, residual=True) for _ in range(n_residual)))


class ReferenceGenerator(nn.Module):
    """face [B, 6, 96, 96] + mel [B, 1, 80, 16] -> face [B, 3, 96, 96]."""

    def __init__(self):
        super().__init__()
        self.face = nn.ModuleList([
            stage(6, 16, 1, 0, kernel=7, padding=3),  # 96
            stage(16, 32, 2, 2),                      # 48
            stage(32, 64, 2, 3),                      # 24
            stage(64, 128, 2, 2),                     # 12
            stage(128, 256, 2, 2),                    # 6
            stage(256, 512, 2, 1),                    # 3
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
        ])
        self.audio = nn.Sequential(
            stage(1, 32, 1, 2), stage(32, 64, (3, 1), 2), stage(64, 128, 3, 2), stage(128, 256, (3, 2), 1),
            ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0))  # [B, 512, 1, 1]
        self.decode = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),    # 1
            up_stage(1024, 512, 1, 0, 0, 1),                # 3
            up_stage(1024, 512, 2, 1, 1, 2),                # 6
            up_stage(768, 384, 2, 1, 1, 2),                 # 12
            up_stage(512, 256, 2, 1, 1, 2),                 # 24
            up_stage(320, 128, 2, 1, 1, 2),                 # 48
            up_stage(160, 64, 2, 1, 1, 2),                  # 96
        ])
        self.out = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1), nn.Sigmoid())

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face
        for block in self.face:
            x = block(x)
            skips.append(x)
        y = self.audio(mel)  # [B, 512, 1, 1]
        for block in self.decode:
            y = torch.cat([block(y), skips.pop()], dim=1)  # decoder output + the encoder features of its size
        return self.out(y)


def frames_per_s(batch: int = 32, repeats: int = 3) -> dict[str, float]:
    """Forward passes of a random-weight ReferenceGenerator at ``batch``; best of ``repeats`` after a warm-up."""
    torch.manual_seed(0)
    net = ReferenceGenerator().eval()
    face, mel = torch.rand(batch, 6, 96, 96), torch.rand(batch, 1, 80, 16)
    best = float("inf")
    with torch.inference_mode():
        net(face, mel)  # warm-up (oneDNN kernel selection)
        for _ in range(repeats):
            started = time.perf_counter()
            net(face, mel)
            best = min(best, time.perf_counter() - started)
    return {"reference_generator_params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
            "reference_generator_frames_per_s_96": round(batch / best, 1)}


if __name__ == "__main__":
    print(frames_per_s())
