"""The tiny generated presenter that speak, evaluate, stream and the app are tested on end to end (conftest's
session fixture ``tiny_presenter`` builds it once per test run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from talkinghead.paths import PresenterPaths

from configs import write_project_params
from test_lip import TINY_ALIGN, run_tiny


def write_checkpoints(paths: PresenterPaths, root) -> None:
    """Checkpoints in the formats their stages write. The lip model is test_lip's tiny network trained for a moment on
    the synthetic presenter (speech whose energy and formants drive the jaw), so its output follows new speech; the
    GAN keeps its initial weights: speak's plumbing (shapes, schedule, paste-back, muxing) does not depend on it."""
    import torch

    from talkinghead.gan import Generator, GeneratorConfig
    from talkinghead.gan.generator import to_unit
    from talkinghead.lip import checkpoint_payload
    from talkinghead.parallel import torch_threads
    from talkinghead.paths import LIP_CHECKPOINT
    from talkinghead.tensorfile import load_tensor

    with torch_threads(1):  # one thread: on the shared 2-core machine two stall each other
        _, lip = run_tiny(None, steps=100, eval_every=50, name=paths.name)
    (root / LIP_CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_payload(lip.model, lip.target_mean, lip.target_std, TINY_ALIGN), root / LIP_CHECKPOINT)
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(channels=(8, 16)))
    generator.reference = to_unit(torch.from_numpy(np.array(load_tensor(paths.frames)[:1])))
    paths.gan_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator_config": generator.config.to_dict(), "generator": generator.state_dict(), "step": 0},
               paths.gan_checkpoint)


def build_tiny_presenter(root: Path) -> Path:
    """A ~3 s generated demo presenter ('tiny', 128 px crops) through extract, landmarks and fit."""
    import os

    from talkinghead.stages import extract, fit, landmarks, sync
    from talkinghead.stages.demo import generate_demo

    write_project_params(root, presenters=["tiny"], extract={"crop_size": 128})
    cwd, env = os.getcwd(), dict(os.environ)
    os.chdir(root)
    # MLflow's file store opens in a blink; a fresh SQLite store spends ~10 s on schema migrations
    os.environ.update(MLFLOW_TRACKING_URI=f"file://{root}/mlruns", MLFLOW_ALLOW_FILE_STORE="true")
    try:
        generate_demo(root / "data/raw/tiny", seconds=3.2, size=192, fps=25, seed=1,
                      text="Hello there, this is a short test.")
        extract.main(["data/raw/tiny", "data/interim/tiny"])
        landmarks.main(["data/interim/tiny"])
        sync.main(["data/interim/tiny"])  # a generated presenter: in sync by construction, no detector read
        fit.main(["data/interim/tiny"])
        paths = PresenterPaths.of("tiny", root)
        write_checkpoints(paths, root)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
    return root
