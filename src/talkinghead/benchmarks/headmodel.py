"""Head-model speed: forward (and forward + backward) of the open model on a batch of 256 frames, CPU.

The fit stage calls the model on batches of ~256 frames many times, so this is the number that matters to it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..headmodel import load_head_model

BATCH = 256


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run(workdir: Path, repeats: int = 5) -> dict[str, float]:
    model = load_head_model()
    generator = torch.Generator().manual_seed(0)
    shape, expression, pose = (0.3 * torch.randn(BATCH, n, generator=generator) for n in (100, 53, 6))

    def forward() -> None:
        with torch.no_grad():
            model(shape, expression, pose)

    def forward_backward() -> None:
        params = [p.clone().requires_grad_() for p in (shape, expression, pose)]
        out = model(*params)
        out.landmarks.square().sum().backward()

    fwd = _median_seconds(forward, repeats)
    both = _median_seconds(forward_backward, repeats)
    return {"headmodel_forward_frames_per_s": BATCH / fwd, "headmodel_forward_backward_frames_per_s": BATCH / both}
