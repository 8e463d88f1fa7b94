"""CUDA check of the GAN stage (run on a machine with a GPU): train the project's generator + discriminators with
params.yaml's gan group (AMP on) on a generated 256 px presenter for a fixed time, export gan.pt, load it back
(weights_only) and score the held-out tail; prints JSON (steps/s, losses, held-out PSNR/SSIM).

    PYTHONPATH=src python scripts/cuda_check.py --seconds 60 --out cuda.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from talkinghead.gan import load_generator
from talkinghead.gan.synthetic import make_synthetic_presenter
from talkinghead.gan.trainer import GanParams
from talkinghead.params import load_config
from talkinghead.paths import PresenterPaths
from talkinghead.stages.train_gan import build_trainer, evaluate, load_gan_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cuda_check"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    paths = PresenterPaths.of("synth", args.work)
    make_synthetic_presenter(paths, n_frames=args.frames, size=256, seed=0)
    data = load_gan_data(paths, 0.2)
    device = torch.device("cuda")
    params = dataclasses.replace(load_config(GanParams, "gan"), max_seconds=args.seconds, max_steps=1_000_000,
                                 target_loss=0.0)
    trainer = build_trainer(params, device)
    started = time.perf_counter()
    reason = trainer.fit(data, args.work / "train_state.pt", progress=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    trainer.export(args.work / "gan.pt")
    generator = load_generator(args.work / "gan.pt", device, 256)
    metrics = evaluate(generator, data, mouth_size=params.mouth_crop).metrics
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "amp": trainer.use_amp,
              "steps": trainer.step, "seconds": round(seconds, 1), "steps_per_s": round(trainer.step / seconds, 2),
              "images_per_s": round(trainer.step * params.batch_size / seconds, 1), "stop_reason": reason,
              "g_loss_ema": float(trainer.loss_ema or 0.0),
              "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
              "heldout": {k: round(float(v), 4) for k, v in metrics.items()}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
