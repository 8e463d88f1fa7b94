"""`talkinghead bench` / `make bench`: time every part on this machine and print one JSON document.

Each part has a module in talkinghead.benchmarks with ``run(workdir) -> dict[str, float]``; this collects them with
the machine's description, so numbers from different machines (CPU here, CUDA when present) can be compared."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from .atomic import atomic_path

PARTS = ["demo", "ingest", "headmodel", "fit", "render", "lip", "gan", "speak", "stream"]


def machine() -> dict[str, object]:
    import torch

    info: dict[str, object] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                               "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def derived(parts: dict[str, dict]) -> dict[str, float]:
    """Onboarding cost per minute of footage at 25 fps from the per-stage rates: the per-frame stages (extract +
    landmarks, fit, composites) scale with the footage; the two trainings are fixed budgets (params lip/gan
    max_seconds) reported separately, since they stop on their target loss or time cap, not per frame."""
    frames = 25 * 60
    try:
        seconds = frames / parts["ingest"]["ingest_frames_per_s"] + frames / parts["fit"]["fit_frames_per_s"] \
            + frames * parts["render"]["composites_ms_per_frame"] / 1000
    except (KeyError, TypeError, ZeroDivisionError):
        return {}
    return {"onboarding_minutes_per_video_minute_per_frame_stages": round(seconds / 60, 3)}


def bench_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead bench", description=__doc__)
    parser.add_argument("--parts", nargs="*", default=PARTS, choices=PARTS)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    results: dict[str, object] = {"machine": machine(), "parts": {}}
    failed = False
    for part in args.parts:
        module = importlib.import_module(f"talkinghead.benchmarks.{part}")
        with tempfile.TemporaryDirectory(prefix=f"bench-{part}-") as tmp:
            started = time.perf_counter()
            try:
                numbers = module.run(Path(tmp))
            except Exception as exc:  # one broken part must not hide the others' numbers
                numbers, failed = {"error": f"{exc.__class__.__name__}: {exc}"}, True
            numbers["wall_s"] = round(time.perf_counter() - started, 2)
        results["parts"][part] = numbers
        print(f"bench: {part}: {json.dumps(numbers)}", flush=True)
    results["derived"] = derived(results["parts"])
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
    return 1 if failed else 0
