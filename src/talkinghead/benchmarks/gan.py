"""GAN generator inference speed: frames/s at the configured resolution (256x256), batch 16, on this machine.

Uses the trained demo generator (models/gan/demo/gan.pt) when present, else a randomly initialised one of the
configured size (speed does not depend on the weights).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..gan import generate, load_generator
from ..gan.generator import Generator, GeneratorConfig
from ..gan.trainer import GanParams
from ..parallel import choose_threads
from ..params import load_config
from ..paths import PresenterPaths

FRAMES = 48
BATCH = 16


def run(workdir: Path) -> dict[str, float]:
    del workdir  # nothing to write: the benchmark only times inference
    params = load_config(GanParams, "gan")
    size = params.image_size
    checkpoint = PresenterPaths.of("demo").gan_checkpoint
    if checkpoint.exists():
        generator = load_generator(checkpoint, "cpu")
    else:
        generator = Generator(GeneratorConfig(channels=params.channels, use_reference=params.use_reference,
                                              image_size=size, chroma_pool=params.chroma_pool))
        generator.reference = torch.zeros(1, 3, size, size)
        generator = generator.to(memory_format=torch.channels_last).eval()
    torch.set_num_threads(choose_threads(params.threads))  # as the stage does: 1 on a busy machine
    composites = np.random.default_rng(0).integers(0, 256, (FRAMES, size, size, 3), dtype=np.uint8)
    generate(generator, composites[:BATCH], batch_size=BATCH)  # warm-up (oneDNN kernel selection)
    started, cpu_started = time.perf_counter(), time.process_time()
    generate(generator, composites, batch_size=BATCH)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    # frames per CPU-second: what one idle core delivers; robust to other processes sharing the machine
    return {"gan_infer_frames_per_s": FRAMES / seconds, "gan_infer_frames_per_cpu_s": FRAMES / cpu_seconds,
            "gan_infer_threads": float(torch.get_num_threads())}
