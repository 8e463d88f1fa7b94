"""`talkinghead speak --presenter NAME --audio FILE | --text TEXT --out OUT.mp4`: speech or text -> presenter video.

A text is spoken offline (tts: eSpeak NG or Flite) chunk by chunk (sentences), each chunk rendered as it is spoken, so
any length of text streams; a speech file is one chunk.

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
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .errors import InputError
from .params import load_config, load_params
from .paths import LIP_CHECKPOINT
from .synthesis import (CropSynthesizer, RawFrames, SpeakParams, SynthesisParams, check_presenter,
                        closed_mouth_frame, load_presenter, pingpong_schedule)

if TYPE_CHECKING:
    from .tts import TextSpeech


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
    # + composite + GAN), decode_wait (raw frames not decoded yet), paste, encode_wait (encoder queue full), finish;
    # for a text also tts (speaking each chunk)
    part_seconds: dict[str, float]
    first_frame_s: float = float("nan")  # from the call to the first frame handed to the encoder


def resolve_device(device: str | None) -> str:
    """``cpu``, ``cuda`` or ``auto``/None (cuda when there is one) -> the torch device speak runs on."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA GPU is visible here (use --device cpu or auto)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(None, f"--device {device!r}: expected cpu, cuda or auto")
    return device


def output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) of the output: the source's, or ``size`` pixels high with the width following the aspect
    ratio (rounded to even: H.264's yuv420p needs even sizes)."""
    if size is None:
        return width, height
    if not 16 <= size <= 4096:
        raise InputError(None, f"--size {size}: expected an output height between 16 and 4096 pixels")
    return max(2, int(round(width * size / height / 2)) * 2), size + size % 2


def speech_chunks(audio: "str | Path | TextSpeech", p: SpeakParams
                  ) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], int, int | None]:
    """(16 kHz samples, output-track samples at ``p.audio_rate``) per chunk of the speech, the number of chunks, and
    the number of 16 kHz samples when known up front (a file; a text's length is known once it is spoken).
    A file is one chunk (checked now: unreadable, too short or silent audio is refused before any heavy work); a
    text is spoken chunk by chunk as the video renders (checked now: empty text, unknown voice)."""
    from .tts import SAMPLE_RATE, TextSpeech

    if isinstance(audio, TextSpeech):
        parts = audio.check()
        from scipy.signal import resample_poly

        return (((s, resample_poly(s, p.audio_rate, SAMPLE_RATE).astype(np.float32)) for s in audio.stream(parts)),
                len(parts), None)
    samples = load_audio(audio, 16000, p.silence_dbfs)
    return iter([(samples, load_audio(audio, p.audio_rate, -np.inf))]), 1, len(samples)


def speak(presenter: str, audio: "str | Path | TextSpeech", out: str | Path, params: SpeakParams | None = None,
          root: str | Path = ".", crop_only: bool = False, progress: bool = True,
          model_version: str | None = None, *, overrides: tuple[str, ...] = (), device: str | None = None,
          size: int | None = None, save_speech: str | Path | None = None,
          on_progress: Callable[[int, float], None] | None = None) -> SpeakResult:
    """Make ``presenter`` say ``audio`` (a speech file, or a tts.TextSpeech spoken chunk by chunk while it renders,
    so any length of text streams); write ``out`` (H.264 + AAC MP4). ``params``: the ``speak`` group (default: the
    project's params.yaml with ``overrides`` (``key=value``) applied, which also gives the synthesis groups).
    ``crop_only`` writes the S x S generated crops instead of pasting them into the full frames (faster; used by the
    benchmark). ``model_version``: registered MLflow model versions to speak with instead of models/ ('latest',
    'lip=N,gan=M'; registry.py). ``device``: cpu / cuda / auto. ``size``: output height in pixels (default: the
    source's). ``save_speech``: also write the 16 kHz speech as a WAV. ``on_progress(frames, fraction)`` after every
    batch."""
    import contextlib

    from .params import apply_overrides
    from .videoio import VideoWriter, check_writable

    started = time.perf_counter()
    params_file = Path(root) / "params.yaml"
    values = apply_overrides(load_params(params_file), tuple(overrides), params_file)
    p = load_config(SpeakParams, "speak", params_file, values) if params is None else params
    # every input check comes before the heavy imports (torch), so bad input fails in well under a second
    check_writable(out)
    if save_speech is not None:
        check_writable(save_speech, suffix=".wav")
    paths = check_presenter(presenter, root, need_raw=not crop_only, need_models=not model_version)
    chunks, n_chunks, n_samples = speech_chunks(audio, p)
    synthesis = SynthesisParams.load(params_file, values)  # imports the head model and renderer (torch)
    from .registry import registered_checkpoints

    paths, checkpoint = registered_checkpoints(paths, Path(root) / LIP_CHECKPOINT, model_version)

    from .lip import predict, speech_features
    from .progress import Progress

    parts: dict[str, float] = {}
    clock = [started]  # the parts add up to the total seconds

    def lap(part: str) -> None:
        now = time.perf_counter()
        parts[part] = parts.get(part, 0.0) + now - clock[0]
        clock[0] = now

    device = resolve_device(device)
    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    start = closed_mouth_frame(pres.lmk_crop, max(pres.heldout_start, 1), pres.detected)
    synth = CropSynthesizer(pres, synthesis, p.window_margin, device)
    raw = None if crop_only else RawFrames(pres)
    width, height = (pres.crop_size, pres.crop_size) if crop_only else pres.orig_size
    out_width, out_height = output_size(width, height, size)
    batch = max(1, p.batch_size)
    first_frame = float("nan")

    def resized(frames: np.ndarray) -> np.ndarray:
        if (out_width, out_height) == (width, height):
            return frames
        import cv2

        return np.stack([cv2.resize(f, (out_width, out_height), interpolation=cv2.INTER_AREA) for f in frames])

    n_done = samples_done = 0
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-decode"))
        # the audio track is fed chunk by chunk (add_audio), so a long text never sits in memory as audio
        writer = stack.enter_context(VideoWriter(out, pres.fps, out_width, out_height, audio=np.zeros(0, np.float32),
                                                 audio_rate=p.audio_rate, crf=p.crf, preset=p.preset))
        # a file: frames (known up front); a text: chunks, as each is spoken and rendered
        total = n_chunks if n_samples is None else int(round(n_samples / 16000 * pres.fps))
        bar = stack.enter_context(Progress(total=total, unit="frame" if n_samples else "chunk",
                                           desc=f"speak {presenter}", disable=not progress))
        wav = None if save_speech is None else stack.enter_context(_WavStream(save_speech, 16000))
        lap("load")
        for k, (samples, track) in enumerate(chunks):
            lap("load" if n_samples is not None else "tts")
            if wav is not None:
                wav.write(samples)
            writer.add_audio(track)
            samples_done += len(samples)
            # frames up to the end of this chunk's audio, counted from the start: no drift over many chunks
            n = int(round(samples_done / 16000 * pres.fps)) - n_done
            if n <= 0:
                continue
            features = speech_features(checkpoint, samples, n, pres.fps)  # [n, C, D], as the model was trained
            lap("audio_features")
            expression = np.asarray(predict(checkpoint, features, presenter, device=device), np.float32)  # [n, 53]
            del features
            lap("lip_model")
            schedule = pingpong_schedule(n_done + n, start, 0, pres.n_frames)[n_done:]
            pending = None if raw is None else pool.submit(raw.get, schedule[0:batch])
            for i0 in range(0, n, batch):
                source = schedule[i0:i0 + batch]
                crops, masks = synth.synthesize(expression[i0:i0 + len(source)], source)
                lap("synthesize")
                if raw is None:
                    writer.write(resized(crops))
                else:
                    frames = pending.result()
                    lap("decode_wait")
                    nxt = i0 + batch  # decode the next batch's originals while this one is pasted and encoded
                    pending = pool.submit(raw.get, schedule[nxt:nxt + batch]) if nxt < n else None
                    raw.paste(frames, source, crops, masks, p.paste)
                    lap("paste")
                    writer.write(resized(frames))
                lap("encode_wait")
                if first_frame != first_frame:  # nan: this was the first batch
                    first_frame = time.perf_counter() - started
                if n_samples is not None:
                    bar.update(len(source))
                if on_progress is not None:
                    on_progress(n_done + i0 + len(source), (k + (i0 + len(source)) / n) / n_chunks)
            n_done += n
            if n_samples is None:
                bar.update(1)
                bar.set_postfix(frames=n_done)
        if n_done == 0:
            raise InputError(getattr(audio, "source", audio), "the speech came out silent: nothing to show")
    lap("finish")
    seconds = time.perf_counter() - started
    return SpeakResult(Path(out), n_done, seconds, n_done / seconds, out_width, out_height, parts, first_frame)


class _WavStream:
    """A 16-bit mono WAV written chunk by chunk, atomically (temp file renamed on success, removed on error)."""

    def __init__(self, path: str | Path, rate: int):
        self.path, self.rate = Path(path), rate

    def __enter__(self) -> "_WavStream":
        import wave

        from .atomic import atomic_path

        self._atomic = atomic_path(self.path)
        self._wave = wave.open(str(self._atomic.__enter__()), "wb")
        self._wave.setnchannels(1)
        self._wave.setsampwidth(2)
        self._wave.setframerate(self.rate)
        return self

    def write(self, samples: np.ndarray) -> None:
        self._wave.writeframes((np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes())

    def __exit__(self, *exc) -> None:
        self._wave.close()
        self._atomic.__exit__(*exc)


def speak_main(argv: list[str] | None = None) -> int:
    """CLI: talkinghead speak --presenter NAME (--audio FILE | --text TEXT | --text-file FILE) --out OUT.mp4 ..."""
    from .tts import TextSpeech, TtsParams, format_voices, read_text_file

    parser = argparse.ArgumentParser(prog="talkinghead speak", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presenter", help="a trained presenter (params.yaml `presenters`)")
    speech = parser.add_mutually_exclusive_group()
    speech.add_argument("--audio", type=Path, help="speech: wav, mp3, m4a, flac, or a video's audio")
    speech.add_argument("--text", help="text to say, spoken offline by --voice")
    speech.add_argument("--text-file", type=Path, help="a UTF-8 text file to say (any length: it streams)")
    parser.add_argument("--voice", help="offline voice for --text (default: params.yaml tts.voice); "
                                        "`--voice list` lists them")
    parser.add_argument("--save-speech", type=Path, metavar="WAV", help="also write the spoken text as a WAV")
    parser.add_argument("--out", type=Path, help="output .mp4")
    parser.add_argument("--project", type=Path, default=Path("."), metavar="DIR",
                        help="the project folder (with params.yaml and the presenters' data); default: here")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default auto)")
    parser.add_argument("--batch-size", type=int, help="frames per step (speak.batch_size)")
    parser.add_argument("--size", type=int, metavar="PX", help="output height in pixels (width follows)")
    parser.add_argument("--crf", type=int, help="H.264 quality, lower = better and bigger (speak.crf)")
    parser.add_argument("--mouth-margin", type=float, metavar="F",
                        help="grow the pasted lower-face mask by F x the crop side (speak.paste.dilate)")
    parser.add_argument("--crop-only", action="store_true", help="write the face crops only (no paste-back)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value for this run, e.g. -S speak.preset=medium (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--model-version", metavar="SPEC",
                        help="speak with models registered in MLflow instead of models/: 'latest', or 'lip=N,gan=M' "
                             "(N, M: version numbers or 'latest'; a model left out comes from models/)")
    args = parser.parse_args(argv)
    if args.voice == "list":
        print(format_voices())
        return 0
    for option in ("presenter", "out"):
        if getattr(args, option) is None:
            parser.error(f"--{option} is required")
    if args.audio is None and args.text is None and args.text_file is None:
        parser.error("one of --audio, --text or --text-file is required")
    if args.audio is not None and (args.voice or args.save_speech):
        parser.error("--voice and --save-speech go with --text or --text-file")
    for value, option, ok, expected in ((args.batch_size, "--batch-size", lambda v: v >= 1, "at least 1"),
                                        (args.crf, "--crf", lambda v: 0 <= v <= 51, "0 to 51 (libx264)"),
                                        (args.mouth_margin, "--mouth-margin", lambda v: 0 <= v <= 0.5,
                                         "a fraction of the crop side from 0 to 0.5"),
                                        (args.size, "--size", lambda v: 16 <= v <= 4096,
                                         "an output height between 16 and 4096 pixels")):
        if value is not None and not ok(value):
            print(f"error: {option} {value}: expected {expected}", file=sys.stderr)
            return 2
    overrides = list(args.overrides)  # the options are shorthands for their params.yaml keys
    for value, key in ((args.batch_size, "speak.batch_size"), (args.crf, "speak.crf"),
                       (args.mouth_margin, "speak.paste.dilate")):
        if value is not None:
            overrides.append(f"{key}={value}")
    root = args.project
    try:
        params_file = root / "params.yaml"
        if not params_file.is_file():
            raise InputError(params_file, "missing: --project must name a talkinghead project folder "
                                          "(the folder with params.yaml and dvc.yaml)")
        audio: Path | TextSpeech | None = args.audio
        if audio is None:
            from .params import apply_overrides

            values = apply_overrides(load_params(params_file), overrides, params_file)
            tts = load_config(TtsParams, "tts", params_file, values)
            text, source = ((args.text, "--text") if args.text_file is None
                            else (read_text_file(args.text_file), str(args.text_file)))
            audio = TextSpeech(text, args.voice or tts.voice, tts, source)
        result = speak(args.presenter, audio, args.out, root=root, crop_only=args.crop_only,
                       progress=not args.quiet, model_version=args.model_version, overrides=tuple(overrides),
                       device=args.device, size=args.size, save_speech=args.save_speech)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"speak: {result.out} ({result.width}x{result.height}, {result.frames} frames) in {result.seconds:.1f} s = "
          f"{result.frames_per_s:.1f} frames/s; first frame after {result.first_frame_s:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(speak_main())
