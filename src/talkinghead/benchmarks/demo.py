"""Demo presenter speed: seconds of CPU and wall time to generate one second of the demo (TTS, warp, encoding).

The stage's budget is the default 300 s demo in under 4 min on a 2-core CPU, i.e. a wall time per video second
below 0.8. Both wall and CPU time are reported because the machine may be shared.
"""

from __future__ import annotations

import time
from pathlib import Path


def run(workdir: Path) -> dict[str, float]:
    from ..stages.demo import generate_demo

    seconds = 8.0
    wall, cpu = time.perf_counter(), time.process_time()
    video = generate_demo(Path(workdir) / "demo_bench", seconds=seconds, size=512, fps=25, seed=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        n_frames = stream.frames
    video_seconds = n_frames / 25
    return {
        "demo_frames_per_s": n_frames / wall,
        "demo_wall_s_per_video_s": wall / video_seconds,
        "demo_cpu_s_per_video_s": cpu / video_seconds,
    }
