"""Benchmark of `talkinghead speak`: end-to-end frames/s at 256 x 256 (crop output, no paste-back) and with the
paste-back into the presenter's full frames, the peak memory (RSS) of a 60 s speech, and the main thread's
milliseconds per frame in each part, for the trained ``demo`` presenter (or ``$TALKINGHEAD_BENCH_PRESENTER``);
beside them, in the same run, a random-weight generator of Wav2Lip's size (benchmarks/reference_generator.py).

speak runs in a child process so its peak RSS is its own (ru_maxrss of that process, read at its end) and not the
benchmark runner's. frames/s is speak's own figure: output frames / seconds from the call to the finished file
(audio decoding, features, lip model, render, GAN, encoding; interpreter start-up excluded). On a shared machine
``speak_cpu_ms_per_frame_256`` (CPU time of the child / frames) is the steadier figure.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

SPEECH = Path(__file__).resolve().parents[4] / "shared" / "media" / "speech" / "long_en_60s.wav"
PRESENTER_ENV = "TALKINGHEAD_BENCH_PRESENTER"


def _child(presenter: str, audio: str, out: str, crop_only: bool) -> None:
    """Run speak in this process and print its numbers as one JSON line."""
    from talkinghead.speak import speak

    result = speak(presenter, audio, out, crop_only=crop_only, progress=False)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"frames": result.frames, "seconds": result.seconds, "frames_per_s": result.frames_per_s,
                      "peak_rss_mb": usage.ru_maxrss / 1024.0,  # Linux: ru_maxrss is in kilobytes
                      "cpu_s": usage.ru_utime + usage.ru_stime, "width": result.width, "height": result.height,
                      "part_seconds": result.part_seconds}))


def run_speak(workdir: Path, presenter: str, audio: Path, crop_only: bool = True) -> dict:
    out = Path(workdir) / "speak.mp4"
    code = ("import sys; from talkinghead.benchmarks.speak import _child; "
            f"_child({presenter!r}, {str(audio)!r}, {str(out)!r}, {crop_only!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    if proc.returncode != 0:
        raise RuntimeError(f"speak failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(workdir: Path) -> dict[str, float]:
    from talkinghead.synthesis import check_presenter

    from .reference_generator import frames_per_s

    if not SPEECH.exists():
        raise RuntimeError(f"{SPEECH} missing (shared media)")
    presenter = os.environ.get(PRESENTER_ENV, "demo")
    check_presenter(presenter, ".", need_raw=False)  # InputError naming the missing stage if not trained
    results: dict[str, float] = {}
    for output, crop_only in (("256", True), ("full", False)):
        numbers = run_speak(Path(workdir), presenter, SPEECH, crop_only=crop_only)
        frames = numbers["frames"]
        results[f"speak_frames_per_s_{output}"] = round(numbers["frames_per_s"], 2)
        # CPU seconds (all threads, start-up included) per output frame: comparable on a loaded machine
        results[f"speak_cpu_ms_per_frame_{output}"] = round(1000 * numbers["cpu_s"] / frames, 1)
        results[f"speak_peak_rss_mb_60s_{output}"] = round(numbers["peak_rss_mb"], 1)
        results.update({f"speak_ms_per_frame_{output}_{part}": round(1000 * seconds / frames, 2)
                        for part, seconds in numbers["part_seconds"].items()})
        if not crop_only:
            results["speak_full_frame_size"] = f"{numbers['width']}x{numbers['height']}"
        results["speak_frames_60s"] = float(frames)
    results.update(frames_per_s())
    results["speak_full_over_reference_generator"] = round(
        results["speak_frames_per_s_full"] / results["reference_generator_frames_per_s_96"], 2)
    return results


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
