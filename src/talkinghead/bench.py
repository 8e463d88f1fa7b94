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

PARTS = ["demo", "ingest", "headmodel", "fit", "render", "lip", "gan", "speak"]


def machine() -> dict[str, object]:
    import torch

    info: dict[str, object] = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                               "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n")
    return 1 if failed else 0
