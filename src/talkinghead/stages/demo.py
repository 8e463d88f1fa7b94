"""Stage `demo`: generate the embedded demo presenter -- a talking video with audio made only from material
that ships with the installed packages (no download).

    python -m talkinghead.stages.demo data/raw/demo

writes data/raw/demo/video.mp4 (H.264 yuv420p + AAC, 16 kHz mono) and data/raw/demo/visemes.parquet
(schemas.VISEMES: the ground-truth mouth shape of every frame). The face is scikit-image's public-domain
``astronaut`` photo, animated by ``talkinghead.demo_face``; the speech is eSpeak NG and Flite voices taking turns
sentence by sentence, each with its own phoneme timings (``talkinghead.demo_speech``), and voices held out for the
end of the timeline (``demo.heldout_voices``). Mouth motion is a deterministic function of the phonemes; only the
small head motion and the blinks are random (seeded), so the lip model has a clean audio -> mouth mapping to learn.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from ..atomic import atomic_dir
from ..demo_face import FaceRig, HeadMotion, build_face_rig, render_frame
from ..demo_speech import (SAMPLE_RATE, TRAINING_SENTENCES, UNSEEN_SENTENCE, Phoneme, mouth_opening, phoneme_at,
                           speak, synthesize_speech, viseme_curves)
from ..errors import InputError, exits_on_input_error
from ..params import load_config
from ..paths import PresenterPaths
from ..split import SplitParams
from ..schemas import VISEMES, write_table

__all__ = ["generate_demo", "synthesize_speech", "UNSEEN_SENTENCE", "speech_script", "head_motion", "blinks",
           "encode_video", "main"]

LEAD_IN_S = 0.4  # silence before the first word and after the last one
TAIL_S = 0.5
AAC_FRAME = 1024  # samples per AAC frame
VIDEO_NAME = "video.mp4"
VISEMES_NAME = PresenterPaths.of("demo").visemes.name  # the file name PresenterPaths.visemes expects


def speech_script(seconds: float, voices: str | tuple[str, ...], wpm: int, seed: int, text: str | None = None,
                  heldout_voices: tuple[str, ...] = (), heldout_from_s: float | None = None
                  ) -> tuple[np.ndarray, list[Phoneme], list[tuple[float, str]]]:
    """Speak ``text``, or the training sentences in order until at least ``seconds`` of audio, with pauses of
    0.3-1.2 s (seeded) between sentences. Sentence k is spoken by ``voices[k % len(voices)]``; once a sentence
    starts at or after ``heldout_from_s`` the ``heldout_voices`` take over (so the end of the timeline, which the
    split holds out, is spoken by voices the lip model never trained on). Returns 16 kHz float32 samples [T], the
    phonemes on that timeline (pauses appear as ``_`` phonemes) and (start second, voice) of every sentence."""
    rng = np.random.default_rng(seed)
    voices = (voices,) if isinstance(voices, str) else tuple(voices)
    if not voices:
        raise InputError("params.yaml", "demo.voices is empty")
    sentences = [text] if text is not None else None
    pieces = [np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32)]
    phonemes = [Phoneme("_", 0.0, LEAD_IN_S)]
    spoken_by: list[tuple[float, str]] = []
    t = LEAD_IN_S
    k = 0
    k_heldout = 0
    while True:
        sentence = sentences[k] if sentences is not None else TRAINING_SENTENCES[k % len(TRAINING_SENTENCES)]
        if heldout_voices and heldout_from_s is not None and t >= heldout_from_s:
            voice = heldout_voices[k_heldout % len(heldout_voices)]
            k_heldout += 1
        else:
            voice = voices[k % len(voices)]
        try:
            samples, spoken = speak(sentence, voice, wpm)
        except InputError as exc:  # the voice came from params.yaml: say so
            raise InputError("params.yaml", f"demo.voices / demo.heldout_voices: {exc.reason}") from exc
        spoken_by.append((t, voice))
        pieces.append(samples)
        phonemes += [Phoneme(p.symbol, p.start_s + t, p.end_s + t) for p in spoken]
        t += len(samples) / SAMPLE_RATE
        k += 1
        done = (sentences is not None and k == len(sentences)) or (sentences is None and t >= seconds)
        pause = TAIL_S if done else float(rng.uniform(0.3, 1.2))
        pieces.append(np.zeros(int(round(pause * SAMPLE_RATE)), np.float32))
        phonemes.append(Phoneme("_", t, t + len(pieces[-1]) / SAMPLE_RATE))
        t += len(pieces[-1]) / SAMPLE_RATE
        if done:
            break
    return np.concatenate(pieces), phonemes, spoken_by


@dataclass(frozen=True)
class DemoParams:
    """The ``demo`` group of params.yaml."""

    seconds: float
    fps: int
    size: int
    voices: tuple[str, ...]
    heldout_voices: tuple[str, ...]
    words_per_minute: int
    face_lead_s: float
    seed: int


def heldout_voice_start(seconds: float, heldout_fraction: float) -> float:
    """Second from which sentences get the held-out voices: 3 s (about one sentence) before the held-out tail of a
    ``seconds`` timeline, so the one that straddles the split is already a held-out voice. The real timeline is a
    little longer than ``seconds`` (the last sentence is finished), which moves the tail later, never earlier."""
    return max(0.0, (1.0 - heldout_fraction) * seconds - 3.0)


def head_motion(times: np.ndarray, seed: int) -> list[HeadMotion]:
    """Slow, smooth random head motion: a sum of a few sinusoids (0.05-0.4 Hz) per degree of freedom.
    Roll within about +-1.5 degrees, shifts within about 1% of the frame, zoom within 1%."""
    rng = np.random.default_rng(seed + 1)

    def wander(amplitude: float) -> np.ndarray:
        freqs = rng.uniform(0.05, 0.4, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        weights = rng.uniform(0.5, 1.0, 3)
        value = sum(w * np.sin(2 * np.pi * f * times + p) for w, f, p in zip(weights, freqs, phases))
        return amplitude * value / weights.sum()

    roll, sx, sy, zoom = wander(1.5), wander(0.012), wander(0.008), wander(0.01)
    return [HeadMotion(float(r), float(x), float(y), float(1 + z)) for r, x, y, z in zip(roll, sx, sy, zoom)]


def blinks(times: np.ndarray, seed: int) -> np.ndarray:
    """Eyelid closure in [0, 1] per time: blinks every 2-6 s (seeded), 80 ms closing, 170 ms opening."""
    rng = np.random.default_rng(seed + 2)
    out = np.zeros(len(times), np.float32)
    t = float(rng.uniform(0.8, 2.5))
    end = float(times[-1]) if len(times) else 0.0
    while t < end + 1:
        rel = times - t
        closing = np.clip(rel / 0.08 + 1, 0, 1) * (rel <= 0)  # ramps up over the 80 ms before t
        opening = np.clip(1 - rel / 0.17, 0, 1) * (rel > 0)
        shape = closing + opening
        out = np.maximum(out, (shape * shape * (3 - 2 * shape)).astype(np.float32))
        t += float(rng.uniform(2.0, 6.0))
    return out


def encode_video(path: Path, frames, n_frames: int, size: int, fps: int, samples: np.ndarray,
                 rate: int = SAMPLE_RATE) -> None:
    """Write an MP4 (H.264 yuv420p + AAC mono) from an iterator of RGB uint8 [size, size, 3] frames and float
    samples [T], with the project's one MP4 writer (audio interleaved with video by time)."""
    from ..progress import Progress
    from ..videoio import VideoWriter

    # crf 18: the demo footage is the pipeline's input, so it is stored close to lossless (~3.5 MB per 75 s)
    with VideoWriter(path, fps, size, size, audio=np.asarray(samples, np.float32), audio_rate=rate, crf=18,
                     audio_bitrate=64000) as writer, \
            Progress(total=n_frames, desc="demo frames", unit="frame", disable=n_frames < 100) as bar:
        for rgb in frames:
            writer.write(rgb)
            bar.update(1)


def _prefetch(render: Callable[[int], np.ndarray], n: int, ahead: int = 4) -> Iterator[np.ndarray]:
    """Yield render(0..n-1) in order while a worker thread renders the next few frames (OpenCV and NumPy release
    the GIL), so warping overlaps with video encoding on a multi-core machine."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(render, i) for i in range(min(ahead, n)))
        for i in range(n):
            frame = pending.popleft().result()
            if i + ahead < n:
                pending.append(pool.submit(render, i + ahead))
            yield frame


def generate_demo(out_dir: str | Path, seconds: float = 75.0, size: int = 512, fps: int = 25, seed: int = 0,
                  text: str | None = None, voices: str | tuple[str, ...] = "en-us", wpm: int = 155,
                  heldout_voices: tuple[str, ...] = (), heldout_from_s: float | None = None,
                  face_lead_s: float = 0.0) -> Path:
    """Generate the demo presenter into ``out_dir`` (video.mp4 + visemes.parquet, replaced atomically as a
    folder); returns the video path. ``text`` overrides the training sentences (tests use a short one); the
    voices are used as ``speech_script`` says."""
    if size < 64 or size % 2:
        raise InputError(None, f"demo.size must be an even number >= 64, got {size}")
    out_dir = Path(out_dir)
    samples, phonemes, spoken_by = speech_script(seconds, voices, wpm, seed, text, heldout_voices, heldout_from_s)
    # decoders return whole AAC frames (1024 samples), so the video is made a multiple of `block` frames that
    # span a whole number of AAC frames: then audio and video have exactly the same duration
    block = math.lcm(SAMPLE_RATE, AAC_FRAME * fps) // SAMPLE_RATE
    n_frames = int(math.ceil(len(samples) / SAMPLE_RATE * fps / block)) * block
    total = n_frames * SAMPLE_RATE // fps
    samples = np.pad(samples, (0, max(0, total - len(samples))))[:total]
    if phonemes[-1].end_s < total / SAMPLE_RATE:  # the padding is silence too
        phonemes.append(Phoneme("_", phonemes[-1].end_s, total / SAMPLE_RATE))
    times = np.arange(n_frames) / fps
    # the face shows at time t the mouth shape of the sound at t + face_lead_s: real mouths move before the sound
    visemes = viseme_curves(phonemes, times + face_lead_s)  # [N, 4]
    blink = blinks(times, seed)
    heads = head_motion(times, seed)
    rig: FaceRig = build_face_rig(size)

    frames = _prefetch(lambda i: render_frame(rig, visemes[i], float(blink[i]), heads[i]), n_frames)
    table = pd.DataFrame({
        "frame": np.arange(n_frames, dtype=np.int32), "time_s": times,
        "jaw_open": visemes[:, 0], "lip_spread": visemes[:, 1], "lip_round": visemes[:, 2],
        "closure": visemes[:, 3], "mouth_open": mouth_opening(visemes), "blink": blink,
        "phoneme": phoneme_at(phonemes, times),
    })
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary data folder
        encode_video(tmp / VIDEO_NAME, frames, n_frames, size, fps, samples)
        write_table(table, tmp / VISEMES_NAME, VISEMES,
                    metadata={"fps": fps, "size": size, "seed": seed, "voices": json.dumps(spoken_by),
                              "words_per_minute": wpm, "audio_seconds": total / SAMPLE_RATE})
        (tmp / VISEMES_NAME).chmod(0o644)  # the atomic temp file was created private
    return out_dir / VIDEO_NAME


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="output folder, e.g. data/raw/demo")
    args = parser.parse_args(argv)
    params = load_config(DemoParams, "demo")
    heldout_fraction = load_config(SplitParams, "split").heldout_fraction
    from ..tracking import stage_run

    with stage_run("demo", args.out_dir.name, asdict(params)) as mlflow:
        start = time.perf_counter()
        video = generate_demo(args.out_dir, seconds=params.seconds, size=params.size, fps=params.fps,
                              seed=params.seed, voices=params.voices, wpm=params.words_per_minute,
                              heldout_voices=params.heldout_voices,
                              heldout_from_s=heldout_voice_start(params.seconds, heldout_fraction),
                              face_lead_s=params.face_lead_s)
        mlflow.log_metrics({"generate_seconds": time.perf_counter() - start}, step=0)
    print(f"wrote {video}")


if __name__ == "__main__":
    main()
