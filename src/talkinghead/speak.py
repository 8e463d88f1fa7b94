"""`talkinghead speak --presenter NAME --audio FILE --out OUT.mp4`: new speech -> video of a trained presenter.

Pipeline, streamed in batches of ``speak.batch_size`` frames so memory stays flat for any audio length:

    audio (any format) -> 16 kHz mono -> aligned audio features (lip.speech_features: the lip model's own encoder)
    -> lip model -> 53-d expression per output frame
    head pose, camera, shape, texture, lighting: the presenter's own fitted frames (flame.parquet), played forward and
    backward in a loop (ping-pong) from a closed-mouth frame, so the idle head motion stays natural
    -> render (render_parameters) -> composite on the source frame's real crop (lower-face mask from its landmarks)
    -> GAN -> paste the crop back into the full original frame (decord, seamless blending) -> H.264 + AAC MP4.

Raw-frame decoding runs one batch ahead in a thread and encoding runs in the writer's thread, so the main thread
(render + GAN, which release the GIL in torch/GL) is rarely idle.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .params import load_config
from .paste import PasteConfig
from .paths import LIP_CHECKPOINT
from .synthesis import (CropSynthesizer, Presenter, SynthesisParams, check_presenter, closed_mouth_frame,
                        load_presenter, pingpong_schedule)


@dataclass(frozen=True)
class SpeakParams:
    """params.yaml's ``speak`` group."""

    batch_size: int  # run time only: frames rendered / generated / pasted / encoded per step (the streaming unit)
    audio_rate: int  # sample rate of the AAC track in the output
    silence_dbfs: float  # quieter audio (RMS) is refused as silent
    crf: int
    preset: str
    paste: PasteConfig


def load_audio(path: str | Path, rate: int, silence_dbfs: float) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``rate``; InputError if unreadable, empty or silent."""
    from .audio import decode_audio, rms_dbfs

    samples = decode_audio(path, rate=rate)
    if len(samples) < rate // 10:
        raise InputError(path, f"audio too short ({len(samples) / rate:.3f} s)")
    level = rms_dbfs(samples)
    if level < silence_dbfs:
        raise InputError(path, f"audio is silent (RMS {level:.1f} dBFS < speak.silence_dbfs={silence_dbfs})")
    return samples


# ---------------------------------------------------------------------------------------------------------------
# raw frames for paste-back

class RawFrames:
    """Upright full-resolution frames of the presenter's raw video by timeline index, for paste-back."""

    def __init__(self, presenter: Presenter):
        from .video import VideoReader, probe_video

        self.presenter = presenter
        path = presenter.paths.raw_video()
        self.reader = VideoReader(path, rotation=probe_video(path).rotation)
        stamps = self.reader.times  # [M] start time of every raw frame, seconds
        source_t = presenter.table["source_time_s"].to_numpy(np.float64)
        pos = np.clip(np.searchsorted(stamps, source_t), 1, max(len(stamps) - 1, 1))
        nearer_left = np.abs(source_t - stamps[pos - 1]) <= np.abs(stamps[np.minimum(pos, len(stamps) - 1)] - source_t)
        self.raw_index = np.where(nearer_left, pos - 1, pos)  # [N] raw frame index of each timeline frame

    def get(self, frames: np.ndarray) -> np.ndarray:
        """Timeline frame indices [B] -> uint8 [B, H, W, 3] upright original frames (writable)."""
        batch = self.reader.get(self.raw_index[frames])
        width, height = self.presenter.orig_size
        if batch.shape[1:3] != (height, width):
            import cv2

            batch = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in batch])
        return batch


# ---------------------------------------------------------------------------------------------------------------
# the pipeline

@dataclass
class SpeakResult:
    out: Path
    frames: int
    seconds: float
    frames_per_s: float
    width: int
    height: int


def speak(presenter: str, audio: str | Path, out: str | Path, params: SpeakParams | None = None,
          root: str | Path = ".", crop_only: bool = False, progress: bool = True) -> SpeakResult:
    """Make ``presenter`` say ``audio``; write ``out`` (H.264 + AAC MP4). ``params``: the ``speak`` group (default:
    the project's params.yaml, which also gives the synthesis groups). ``crop_only`` writes the S x S generated
    crops instead of pasting them into the full frames (faster; used by the benchmark)."""
    from .videoio import VideoWriter, check_writable, n_frames_for_audio

    started = time.perf_counter()
    params_file = Path(root) / "params.yaml"
    p = load_config(SpeakParams, "speak", params_file) if params is None else params
    synthesis = SynthesisParams.load(params_file)
    # every input check comes before the heavy imports (torch), so bad input fails in well under a second
    check_writable(out)
    paths = check_presenter(presenter, root, need_raw=not crop_only)
    samples = load_audio(audio, 16000, p.silence_dbfs)
    track = load_audio(audio, p.audio_rate, -np.inf)

    from .lip import predict, speech_features
    from .paste import paste_back
    from .progress import Progress

    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    n_out = n_frames_for_audio(len(samples), 16000, pres.fps)
    checkpoint = Path(root) / LIP_CHECKPOINT
    features = speech_features(checkpoint, samples, n_out, pres.fps)  # [N, C, D], as the model was trained
    expression = np.asarray(predict(checkpoint, features, presenter), np.float32)  # [N, 53]
    del features
    start = closed_mouth_frame(pres.lmk_crop, max(pres.heldout_start, 1), pres.detected)
    schedule = pingpong_schedule(n_out, start, 0, pres.n_frames)

    synth = CropSynthesizer(pres, synthesis)
    raw = None if crop_only else RawFrames(pres)
    width, height = (pres.crop_size, pres.crop_size) if crop_only else pres.orig_size
    boxes = pres.table[["crop_x0", "crop_y0", "crop_side"]].to_numpy(np.float64)
    batch = max(1, p.batch_size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-decode") as pool, \
            VideoWriter(out, pres.fps, width, height, audio=track, audio_rate=p.audio_rate,
                        crf=p.crf, preset=p.preset) as writer, \
            Progress(total=n_out, unit="frame", desc=f"speak {presenter}", disable=not progress) as bar:
        pending = None if raw is None else pool.submit(raw.get, schedule[0:batch])
        for i0 in range(0, n_out, batch):
            source = schedule[i0:i0 + batch]
            crops, masks = synth.synthesize(expression[i0:i0 + len(source)], source)
            if raw is None:
                writer.write(crops)
            else:
                frames = pending.result()
                nxt = i0 + batch  # decode the next batch's originals while this one is pasted and encoded
                pending = pool.submit(raw.get, schedule[nxt:nxt + batch]) if nxt < n_out else None
                for j, src in enumerate(source):
                    paste_back(frames[j], crops[j], tuple(boxes[src]), masks[j], p.paste, out=frames[j])
                writer.write(frames)
            bar.update(len(source))
    seconds = time.perf_counter() - started
    return SpeakResult(Path(out), n_out, seconds, n_out / seconds, width, height)


def speak_main(argv: list[str] | None = None) -> int:
    """CLI: talkinghead speak --presenter NAME --audio FILE --out OUT.mp4 [--crop-only]."""
    parser = argparse.ArgumentParser(prog="talkinghead speak", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presenter", required=True, help="a trained presenter (params.yaml `presenters`)")
    parser.add_argument("--audio", required=True, type=Path, help="speech: wav, mp3, m4a, flac, or a video's audio")
    parser.add_argument("--out", required=True, type=Path, help="output .mp4")
    parser.add_argument("--crop-only", action="store_true", help="write the face crops only (no paste-back)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = speak(args.presenter, args.audio, args.out, crop_only=args.crop_only, progress=not args.quiet)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"speak: {result.out} ({result.width}x{result.height}, {result.frames} frames) in {result.seconds:.1f} s = "
          f"{result.frames_per_s:.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(speak_main())
