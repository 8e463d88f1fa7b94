"""`talkinghead stream --presenter NAME [--input -] [--out -]`: live speech in, live video out.

Audio arrives as 16 kHz mono 16-bit PCM on stdin (raw ``s16le``, or a WAV stream with that format) or from a file or
FIFO; video leaves as MPEG-TS (H.264 + AAC, the input audio muxed back in) on stdout or in a file, frame by frame as
soon as each frame's audio plus ``stream.lookahead_frames`` of look-ahead has arrived:

    arecord -f S16_LE -r 16000 -c 1 -t raw | talkinghead stream --presenter demo | ffplay -
    ffmpeg -re -i talk.mp3 -ar 16000 -ac 1 -f s16le - | talkinghead stream --presenter demo --out live.ts

Per step (``stream.chunk_frames`` frames): the streaming lip model (streaming.StreamingLip: the last
``stream.history_s`` seconds of audio re-encoded, running feature statistics) gives the frames' expressions, then
exactly speak's path: render, composite, GAN, paste-back into the presenter's full frames (or ``--crop-only``), encode.
The head keeps its idle motion (speak's ping-pong over the presenter's own frames) whatever the audio does. When no
audio arrives for ``stream.stall_s`` seconds the stream goes on with silence, a closed mouth and idle motion, in real
time; audio that arrives later continues after that silence. End of input (or SIGTERM / Ctrl-C) flushes the last
frames and closes the stream, so the file is playable to its end.

Delay of a frame = the time it is written minus the time the audio at its centre arrived; the median and 95th
percentile, frame and sample counts and peak memory are printed at the end (``--stats FILE`` also writes them as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import InputError, exits_on_input_error
from .params import load_config, load_params
from .paths import LIP_CHECKPOINT

SAMPLE_RATE = 16000
FORMAT_HINT = "stream needs 16 kHz mono 16-bit PCM (e.g. `ffmpeg -i IN -ar 16000 -ac 1 -f s16le -`)"


@dataclass(frozen=True)
class StreamParams:
    """params.yaml's ``stream`` group."""

    history_s: float  # seconds of audio re-encoded per step (streaming.StreamingLip)
    lookahead_frames: int  # future frames of audio a frame's mouth may use: delay vs sync
    chunk_frames: int  # frames made per step: fewer = less delay, more per-step overhead
    stall_s: float  # no audio for this long: go on with silence (closed mouth, idle motion) in real time


# ---------------------------------------------------------------------------------------------------------------
# audio input

class PcmReader:
    """Reads 16 kHz mono s16le PCM (raw, or after a WAV header) from a binary stream in a thread.

    ``chunks`` yields (float32 samples, arrival time) items and finally None at end of input. A WAV header with
    another format puts an InputError in ``error`` (and ends the input)."""

    def __init__(self, source: BinaryIO, name: str):
        self.source = source
        self.name = name
        self.chunks: queue.Queue = queue.Queue()
        self.error: InputError | None = None
        self.format_known = threading.Event()  # set once the header is read (or refused), or raw samples came
        self._thread = threading.Thread(target=self._run, name="pcm-reader", daemon=True)

    def start(self) -> "PcmReader":
        self._thread.start()
        return self

    def _read(self, n: int) -> bytes:
        read = getattr(self.source, "read1", self.source.read)  # read1: what is there, without waiting for n bytes
        return read(n)

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = self._read(n - len(data))
            if not more:
                break
            data += more
        return data

    def _wav_header(self, head: bytes) -> bytes:
        """Parse a WAV header whose first 12 bytes are ``head``; return sample bytes read past it."""
        while True:
            chunk = self._read_exact(8)
            if len(chunk) < 8:
                raise InputError(self.name, "WAV header ends before its data chunk")
            kind, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                fmt = self._read_exact(size + size % 2)
                audio_format, channels, rate = struct.unpack("<HHI", fmt[:8])
                bits = struct.unpack("<H", fmt[14:16])[0]
                if audio_format not in (1, 0xFFFE) or channels != 1 or rate != SAMPLE_RATE or bits != 16:
                    kind_name = "PCM" if audio_format in (1, 0xFFFE) else f"format {audio_format} (not PCM)"
                    raise InputError(self.name, f"WAV is {kind_name}, {rate} Hz, {channels} channel(s), {bits}-bit: "
                                                f"{FORMAT_HINT}")
            elif kind == b"data":
                return b""
            else:
                self._read_exact(size + size % 2)

    def _run(self) -> None:
        try:
            head = self._read_exact(12)
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                pending = self._wav_header(head)
            else:
                pending = head
            self.format_known.set()
            while True:
                more = self._read(8192)
                if not more:
                    break
                pending += more
                usable = len(pending) // 2 * 2  # an odd trailing byte waits for its partner
                if usable:
                    samples = np.frombuffer(pending[:usable], "<i2").astype(np.float32) / 32768.0
                    self.chunks.put((samples, time.monotonic()))
                    pending = pending[usable:]
        except InputError as exc:
            self.error = exc
        except OSError as exc:
            self.error = InputError(self.name, f"cannot read audio ({exc.strerror or exc})")
        finally:
            self.format_known.set()
            self.chunks.put(None)


# ---------------------------------------------------------------------------------------------------------------
# the live loop

@dataclass
class StreamStats:
    frames: int
    audio_samples: int
    inserted_silence_s: float
    seconds: float
    delay_median_ms: float
    delay_p95_ms: float
    delay_p95_ms_per_minute: list  # of the stream's own timeline: does the delay drift?
    peak_rss_mb: float
    width: int
    height: int
    reader_closed: bool  # the stream ended because its reader went away (a closed pipe), not the audio

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class ArrivalLog:
    """When each stretch of audio arrived: (absolute end sample, wall time) pairs, forgotten once used."""

    def __init__(self):
        self.entries: deque[tuple[int, float]] = deque()

    def add(self, end_sample: int, when: float) -> None:
        self.entries.append((end_sample, when))

    def arrival(self, sample: int) -> float:
        """Wall time at which ``sample`` had arrived (entries before it are dropped: samples are asked in order)."""
        while len(self.entries) > 1 and self.entries[0][0] <= sample:
            self.entries.popleft()
        return self.entries[0][1]


def stream(presenter: str, source: BinaryIO, source_name: str, out, root: str | Path = ".",
           crop_only: bool = False, progress: bool = True, stop: threading.Event | None = None) -> StreamStats:
    """Run the live loop until the input ends (or ``stop`` is set); write MPEG-TS to ``out`` (path or binary file)."""
    from .synthesis import (CropSynthesizer, RawFrames, SpeakParams, SynthesisParams, check_presenter,
                            closed_mouth_frame, load_presenter, pingpong_schedule)

    started = time.monotonic()
    params_file = Path(root) / "params.yaml"
    all_params = load_params(params_file)
    p = load_config(StreamParams, "stream", params_file, all_params)
    speak_params = load_config(SpeakParams, "speak", params_file, all_params)
    synthesis = SynthesisParams.load(params_file)
    paths = check_presenter(presenter, root, need_raw=not crop_only)
    reader = PcmReader(source, source_name).start()  # reads while the models load

    from .streaming import StreamingLip
    from .videoio import LiveWriter, OutputClosed

    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    lip = StreamingLip(Path(root) / LIP_CHECKPOINT, presenter, pres.fps, p.history_s, p.lookahead_frames)
    synth = CropSynthesizer(pres, synthesis, speak_params.window_margin)
    raw = None if crop_only else RawFrames(pres)
    width, height = (pres.crop_size, pres.crop_size) if crop_only else pres.orig_size
    first_source = closed_mouth_frame(pres.lmk_crop, max(pres.heldout_start, 1), pres.detected)
    # a WAV header in the wrong format is refused before the output exists (a source that is silent at first is
    # not waited for: the stream starts with idle frames)
    reader.format_known.wait(timeout=p.stall_s)
    if reader.error is not None:
        raise reader.error
    writer = LiveWriter(out, pres.fps, width, height, SAMPLE_RATE, speak_params.crf, speak_params.preset)
    print(f"stream {presenter}: ready ({width}x{height} at {pres.fps:g} fps)", file=sys.stderr, flush=True)

    frame_samples = SAMPLE_RATE / pres.fps
    arrivals = ArrivalLog()
    audio_tail = np.zeros(0, np.float32)  # received samples not yet written with their frames
    audio_tail_start = 0  # absolute index of audio_tail[0]
    delays: list[float] = []
    inserted = 0
    stall_filled = 0  # silence inserted during the current stall
    last_audio = time.monotonic()
    last_log = last_audio
    ended = False

    def take(samples: np.ndarray, when: float) -> None:
        nonlocal audio_tail
        lip.push(samples)
        audio_tail = np.concatenate([audio_tail, samples])
        arrivals.add(lip.received, when)

    try:
        while True:
            items = []
            try:  # wait up to one chunk's duration for audio, then take all there is
                items.append(reader.chunks.get(timeout=p.chunk_frames / pres.fps))
                while True:
                    items.append(reader.chunks.get_nowait())
            except queue.Empty:
                pass
            now = time.monotonic()
            for item in items:
                if item is None:
                    ended = True
                else:
                    take(*item)
                    last_audio = now
            if reader.error is not None:
                raise reader.error
            if stop is not None and stop.is_set():
                ended = True
            if items and not ended:
                stall_filled = 0
            if not ended and now - last_audio > p.stall_s:  # the source stalls: silence keeps the video live
                # as much silence as the stall has lasted beyond stall_s, so the video keeps real time
                gap = int(round((now - last_audio - p.stall_s) * SAMPLE_RATE)) - stall_filled
                if gap > 0:
                    take(np.zeros(gap, np.float32), now)
                    inserted += gap
                    stall_filled += gap
            while lip.frames_ready(final=ended) >= (1 if ended else p.chunk_frames):
                rows = lip.pop(final=ended)  # [k, 53]
                first = writer.frames_written
                k = len(rows)
                source_frames = pingpong_schedule(first + k, first_source, 0, pres.n_frames)[first:]
                crops, masks = synth.synthesize(rows, source_frames)
                if raw is None:
                    frames = crops
                else:
                    frames = raw.paste(raw.get(source_frames), source_frames, crops, masks, speak_params.paste)
                # the audio of exactly these frames (the last frame of a stream takes what is left)
                stop_sample = lip.received if ended and lip.frames_ready(final=True) == 0 \
                    else int(round((first + k) * frame_samples))
                cut = max(0, stop_sample - audio_tail_start)
                try:
                    writer.write(frames, audio_tail[:cut])
                except OutputClosed:  # the reader left: the check below ends the stream
                    break
                audio_tail, audio_tail_start = audio_tail[cut:], audio_tail_start + cut
                emitted = time.monotonic()
                for j in range(k):
                    centre = int((first + j + 0.5) * frame_samples)
                    delays.append(emitted - arrivals.arrival(min(centre, lip.received - 1)))
            if progress and time.monotonic() - last_log > 10:
                last_log = time.monotonic()
                recent = np.array(delays[-250:]) * 1000 if delays else np.zeros(1)
                print(f"stream {presenter}: {writer.frames_written} frames, delay median {np.median(recent):.0f} ms",
                      file=sys.stderr, flush=True)
            if writer.reader_gone or (ended and lip.frames_ready(final=True) == 0):
                break
    finally:
        writer.close()  # on errors and interrupts too: what was streamed stays playable
    delay_ms = np.array(delays) * 1000 if delays else np.zeros(1)
    minute = max(1, int(round(60 * pres.fps)))
    return StreamStats(frames=writer.frames_written, audio_samples=writer.samples_written,
                       inserted_silence_s=inserted / SAMPLE_RATE, seconds=time.monotonic() - started,
                       delay_median_ms=float(np.median(delay_ms)), delay_p95_ms=float(np.percentile(delay_ms, 95)),
                       delay_p95_ms_per_minute=[round(float(np.percentile(delay_ms[i:i + minute], 95)), 1)
                                                for i in range(0, len(delay_ms), minute)],
                       peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                       width=width, height=height, reader_closed=writer.reader_gone)


@exits_on_input_error
def stream_main(argv: list[str] | None = None) -> int:
    """CLI: talkinghead stream --presenter NAME [--input -|PATH] [--out -|PATH.ts] [--crop-only] [--stats FILE]."""
    parser = argparse.ArgumentParser(prog="talkinghead stream", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presenter", required=True, help="a trained presenter (params.yaml `presenters`)")
    parser.add_argument("--input", default="-", help="16 kHz mono s16le PCM or such a WAV: - (stdin), a file or FIFO")
    parser.add_argument("--out", default="-", help="MPEG-TS output: - (stdout) or a .ts path")
    parser.add_argument("--crop-only", action="store_true", help="stream the face crops only (no paste-back)")
    parser.add_argument("--stats", type=Path, default=None, help="also write the final numbers here as JSON")
    parser.add_argument("--quiet", action="store_true", help="no status lines on stderr")
    args = parser.parse_args(argv)
    if args.out != "-":
        from .videoio import check_writable

        # speak's output check: a .ts path whose folder can be written to (before any model loads)
        check_writable(args.out, suffix=".ts")
    if args.input == "-":
        source, name = sys.stdin.buffer, "stdin"
    else:
        try:
            source, name = open(args.input, "rb"), args.input
        except OSError as exc:
            raise InputError(args.input, f"cannot open ({exc.strerror})") from exc
    out = sys.stdout.buffer if args.out == "-" else args.out
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish and close the stream instead of dying mid-packet
    try:
        stats = stream(args.presenter, source, name, out, crop_only=args.crop_only, progress=not args.quiet,
                       stop=stop)
    except KeyboardInterrupt:
        print("interrupted: stream closed", file=sys.stderr)
        return 130
    if stats.reader_closed:
        print(f"stream: the reader closed {'stdout' if args.out == '-' else args.out} after {stats.frames} frames",
              file=sys.stderr)
        if args.out == "-":  # so that Python's own flush of stdout at exit does not report the broken pipe again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    summary = stats.as_dict()
    if args.stats is not None:
        from .atomic import atomic_path

        with atomic_path(args.stats) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    print("stream: " + ", ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(stream_main())
