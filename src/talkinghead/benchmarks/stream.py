"""Benchmark of `talkinghead stream`: live audio fed in real time, delay from audio to the frame that shows it.

A child `talkinghead stream` process gets 16 kHz PCM on stdin in 20 ms pieces at the pace of a live microphone
(the speech file looped to ``$TALKINGHEAD_BENCH_STREAM_S`` seconds, default 30) and writes MPEG-TS; its own summary
gives the delay per frame (median, 95th percentile). Checked here: the file decodes to exactly one frame per frame
of audio sent (none dropped or repeated), and the child's anonymous memory (RssAnon, sampled every second) stays
flat after its first quarter. Also: how far the streaming lip model's mouth opening strays from offline speak's on the same speech
(Pearson r of the two head-model mouth openings), the price of its limited look-ahead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .speak import PRESENTER_ENV, SPEECH

SECONDS_ENV = "TALKINGHEAD_BENCH_STREAM_S"
RATE = 16000
PIECE = 320  # samples per write: 20 ms, as a sound card delivers them


def _anon_rss_mb(pid: int) -> float | None:
    """Anonymous resident memory: what a leak would grow. (VmRSS also counts the pages of the memory-mapped
    presenter crops, which grow until the ping-pong schedule has touched them all: ~400 MB on the demo.)"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def feed_live(presenter: str, speech: np.ndarray, seconds: float, workdir: Path, crop_only: bool) -> dict:
    """Run `talkinghead stream` on ``seconds`` of ``speech`` (looped) fed in real time; its numbers + checks."""
    import av

    out, stats = workdir / "live.ts", workdir / "stats.json"
    command = [sys.executable, "-m", "talkinghead.stream", "--presenter", presenter, "--out", str(out),
               "--stats", str(stats), "--quiet"] + (["--crop-only"] if crop_only else [])
    total = int(seconds * RATE)
    pcm = (np.clip(np.resize(speech, total), -1, 1) * 32767).astype("<i2").tobytes()
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=os.getcwd())
    errors: list[bytes] = []
    while True:  # models loaded when it says ready; from then on the clock is live
        line = proc.stderr.readline()
        if not line or b"ready" in line:
            break
        errors.append(line)
    drain = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    drain.start()
    rss: list[float] = []
    started = time.monotonic()
    for i in range(0, len(pcm), 2 * PIECE):
        proc.stdin.write(pcm[i:i + 2 * PIECE])
        proc.stdin.flush()
        sent_s = (i + 2 * PIECE) / 2 / RATE
        if int(sent_s) != int(sent_s - PIECE / RATE):
            rss.append(_anon_rss_mb(proc.pid) or float("nan"))
        time.sleep(max(0.0, started + sent_s - time.monotonic()))
    proc.stdin.close()
    proc.wait(timeout=600)
    drain.join(timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"stream failed (exit {proc.returncode}): {b''.join(errors).decode()[-800:]}")
    numbers = json.loads(stats.read_text())
    with av.open(str(out)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
        fps = float(container.streams.video[0].average_rate)
    expected = int(np.ceil(numbers["audio_samples"] / RATE * fps - 1e-9))
    quarter = rss[len(rss) // 4:] or rss
    return {**numbers, "decoded_frames": decoded, "expected_frames": expected,
            "anon_rss_growth_mb_after_first_quarter": round(max(quarter) - quarter[0], 1) if quarter else None}


def lookahead_cost(presenter: str, speech: np.ndarray) -> dict[str, float]:
    """Pearson r between the head-model mouth opening of the streamed and the offline lip model, same speech."""
    from talkinghead.headmodel import load_head_model, mouth_opening
    from talkinghead.lip import predict, speech_features
    from talkinghead.lipmetrics import pearson_r
    from talkinghead.params import load_config
    from talkinghead.paths import LIP_CHECKPOINT, PresenterPaths
    from talkinghead.schemas import FRAMES, PARAMETERS, column_array, read_table
    from talkinghead.stream import StreamParams
    from talkinghead.streaming import StreamingLip

    params = load_config(StreamParams, "stream", Path("params.yaml"))
    fps = float(read_table(PresenterPaths.of(presenter).frames_table, FRAMES)["fps"].iloc[0])
    n = int(round(len(speech) / RATE * fps))
    offline = predict(LIP_CHECKPOINT, speech_features(LIP_CHECKPOINT, speech, n, fps), presenter)
    live = StreamingLip(LIP_CHECKPOINT, presenter, fps, params.history_s, params.lookahead_frames)
    rows = []
    step = int(RATE / fps) * params.chunk_frames
    for i in range(0, len(speech), step):
        live.push(speech[i:i + step])
        rows.append(live.drain())
    rows.append(live.drain(final=True))
    streamed = np.concatenate(rows)[:n]
    model = load_head_model(None)
    shape = column_array(read_table(PresenterPaths.of(presenter).flame, PARAMETERS), "shape").mean(0)

    def opening(expression: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            shapes = torch.from_numpy(np.repeat(shape[None], len(expression), 0))
            return mouth_opening(model.deform(shapes, torch.from_numpy(np.asarray(expression, np.float32))),
                                 model).numpy()

    return {"stream_vs_offline_mouth_r": round(pearson_r(opening(streamed), opening(offline)), 3),
            "stream_lookahead_ms": round(1000 * params.lookahead_frames / fps, 1)}


def run(workdir: Path) -> dict[str, float]:
    from talkinghead.audio import decode_audio
    from talkinghead.synthesis import check_presenter

    if not SPEECH.exists():
        raise RuntimeError(f"{SPEECH} missing (shared media)")
    presenter = os.environ.get(PRESENTER_ENV, "demo")
    check_presenter(presenter, ".", need_raw=True)
    seconds = float(os.environ.get(SECONDS_ENV, "30"))
    speech = decode_audio(SPEECH, RATE)
    results: dict[str, float] = {"stream_seconds_fed": seconds}
    for output, crop_only in (("256", True), ("full", False)):
        numbers = feed_live(presenter, speech, seconds, Path(workdir), crop_only)
        results.update({
            f"stream_delay_median_ms_{output}": numbers["delay_median_ms"],
            f"stream_delay_p95_ms_{output}": numbers["delay_p95_ms"],
            f"stream_frames_{output}": numbers["frames"],
            f"stream_frames_missing_or_extra_{output}": numbers["decoded_frames"] - numbers["expected_frames"],
            f"stream_inserted_silence_s_{output}": numbers["inserted_silence_s"],
            f"stream_peak_rss_mb_{output}": numbers["peak_rss_mb"],
            f"stream_anon_rss_growth_mb_{output}": numbers["anon_rss_growth_mb_after_first_quarter"],
            f"stream_delay_p95_ms_per_minute_{output}": numbers["delay_p95_ms_per_minute"],
        })
    results.update(lookahead_cost(presenter, speech[:RATE * 30]))
    return results


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
