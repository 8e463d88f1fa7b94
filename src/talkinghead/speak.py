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
from .paths import LIP_CHECKPOINT
from .synthesis import (CropSynthesizer, RawFrames, SpeakParams, SynthesisParams, check_presenter,
                        closed_mouth_frame, load_presenter, pingpong_schedule)


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
# the pipeline

@dataclass
class SpeakResult:
    out: Path
    frames: int
    seconds: float
    frames_per_s: float
    width: int
    height: int
    # wall seconds of the main thread per part: load (inputs, models), audio_features, lip_model, synthesize (render
    # + composite + GAN), decode_wait (raw frames not decoded yet), paste, encode_wait (encoder queue full), finish
    part_seconds: dict[str, float]


def speak(presenter: str, audio: str | Path, out: str | Path, params: SpeakParams | None = None,
          root: str | Path = ".", crop_only: bool = False, progress: bool = True,
          model_version: str | None = None) -> SpeakResult:
    """Make ``presenter`` say ``audio``; write ``out`` (H.264 + AAC MP4). ``params``: the ``speak`` group (default:
    the project's params.yaml, which also gives the synthesis groups). ``crop_only`` writes the S x S generated
    crops instead of pasting them into the full frames (faster; used by the benchmark). ``model_version``: registered
    MLflow model versions to speak with instead of models/ ('latest', 'lip=N,gan=M'; registry.py)."""
    from .videoio import VideoWriter, check_writable, n_frames_for_audio

    started = time.perf_counter()
    params_file = Path(root) / "params.yaml"
    p = load_config(SpeakParams, "speak", params_file) if params is None else params
    synthesis = SynthesisParams.load(params_file)
    # every input check comes before the heavy imports (torch), so bad input fails in well under a second
    check_writable(out)
    paths = check_presenter(presenter, root, need_raw=not crop_only, need_models=not model_version)
    from .registry import registered_checkpoints

    paths, checkpoint = registered_checkpoints(paths, Path(root) / LIP_CHECKPOINT, model_version)
    samples = load_audio(audio, 16000, p.silence_dbfs)
    track = load_audio(audio, p.audio_rate, -np.inf)

    from .lip import predict, speech_features
    from .paste import paste_back
    from .progress import Progress

    parts: dict[str, float] = {}
    clock = [started]  # the parts add up to the total seconds

    def lap(part: str) -> None:
        now = time.perf_counter()
        parts[part] = parts.get(part, 0.0) + now - clock[0]
        clock[0] = now

    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    n_out = n_frames_for_audio(len(samples), 16000, pres.fps)
    lap("load")
    features = speech_features(checkpoint, samples, n_out, pres.fps)  # [N, C, D], as the model was trained
    lap("audio_features")
    expression = np.asarray(predict(checkpoint, features, presenter), np.float32)  # [N, 53]
    del features
    lap("lip_model")
    start = closed_mouth_frame(pres.lmk_crop, max(pres.heldout_start, 1), pres.detected)
    schedule = pingpong_schedule(n_out, start, 0, pres.n_frames)

    synth = CropSynthesizer(pres, synthesis, p.window_margin)
    raw = None if crop_only else RawFrames(pres)
    width, height = (pres.crop_size, pres.crop_size) if crop_only else pres.orig_size
    boxes = pres.table[["crop_x0", "crop_y0", "crop_side"]].to_numpy(np.float64)
    batch = max(1, p.batch_size)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-decode") as pool, \
            VideoWriter(out, pres.fps, width, height, audio=track, audio_rate=p.audio_rate,
                        crf=p.crf, preset=p.preset) as writer, \
            Progress(total=n_out, unit="frame", desc=f"speak {presenter}", disable=not progress) as bar:
        pending = None if raw is None else pool.submit(raw.get, schedule[0:batch])
        lap("load")
        for i0 in range(0, n_out, batch):
            source = schedule[i0:i0 + batch]
            crops, masks = synth.synthesize(expression[i0:i0 + len(source)], source)
            lap("synthesize")
            if raw is None:
                writer.write(crops)
            else:
                frames = pending.result()
                lap("decode_wait")
                nxt = i0 + batch  # decode the next batch's originals while this one is pasted and encoded
                pending = pool.submit(raw.get, schedule[nxt:nxt + batch]) if nxt < n_out else None
                for j, src in enumerate(source):
                    paste_back(frames[j], crops[j], tuple(boxes[src]), masks[j], p.paste, out=frames[j])
                lap("paste")
                writer.write(frames)
            lap("encode_wait")
            bar.update(len(source))
    lap("finish")
    seconds = time.perf_counter() - started
    return SpeakResult(Path(out), n_out, seconds, n_out / seconds, width, height, parts)


def speak_main(argv: list[str] | None = None) -> int:
    """CLI: talkinghead speak --presenter NAME --audio FILE --out OUT.mp4 [--crop-only]."""
    parser = argparse.ArgumentParser(prog="talkinghead speak", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presenter", required=True, help="a trained presenter (params.yaml `presenters`)")
    parser.add_argument("--audio", required=True, type=Path, help="speech: wav, mp3, m4a, flac, or a video's audio")
    parser.add_argument("--out", required=True, type=Path, help="output .mp4")
    parser.add_argument("--crop-only", action="store_true", help="write the face crops only (no paste-back)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--model-version", metavar="SPEC",
                        help="speak with models registered in MLflow instead of models/: 'latest', or 'lip=N,gan=M' "
                             "(N, M: version numbers or 'latest'; a model left out comes from models/)")
    args = parser.parse_args(argv)
    try:
        result = speak(args.presenter, args.audio, args.out, crop_only=args.crop_only, progress=not args.quiet,
                       model_version=args.model_version)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"speak: {result.out} ({result.width}x{result.height}, {result.frames} frames) in {result.seconds:.1f} s = "
          f"{result.frames_per_s:.1f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(speak_main())
