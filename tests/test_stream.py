"""`talkinghead stream` and the streaming lip model, on the tiny generated presenter (conftest's tiny_presenter)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from talkinghead.lipmetrics import pearson_r
from talkinghead.paths import LIP_CHECKPOINT

from test_lip import synthetic_speech

RATE = 16000
FPS = 25.0
AAC_SLACK_S = 2 * 1024 / RATE  # AAC adds a priming frame and pads the last one (1024 samples each)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def write_wav16(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16(np.repeat(samples, channels)))
    return path


def decoded(path: Path) -> tuple[int, float]:
    """(video frames, audio seconds) of an MPEG-TS file."""
    import av

    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    return frames, samples / rate


def run_stream(project: Path, args: list[str], stdin=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "talkinghead.stream", "--presenter", "tiny", "--quiet", *args],
                            cwd=project, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_streaming_lip_follows_the_offline_lip_model(tiny_presenter):
    """Audio pushed 4 frames at a time gives one expression per frame, close to the offline prediction."""
    from talkinghead.lip import predict, speech_features
    from talkinghead.streaming import StreamingLip

    samples, _, _ = synthetic_speech(4.0, seed=5)
    checkpoint = tiny_presenter / LIP_CHECKPOINT
    n = int(round(len(samples) / RATE * FPS))
    offline = predict(checkpoint, speech_features(checkpoint, samples, n, FPS), "tiny")
    live = StreamingLip(checkpoint, "tiny", FPS, history_s=2.0, lookahead_frames=3)
    rows = []
    for i in range(0, len(samples), 640 * 4):
        live.push(samples[i:i + 640 * 4])
        rows.append(live.drain())
        assert live.emitted <= (i + 640 * 4) / RATE * FPS - 3 + 1e-6  # never ahead of its audio + look-ahead
    rows.append(live.drain(final=True))
    streamed = np.concatenate(rows)
    assert streamed.shape == offline.shape
    jaw = slice(50, 53)  # the jaw pose drives the mouth opening most
    assert pearson_r(streamed[:, jaw].ravel(), offline[:, jaw].ravel()) > 0.8
    assert len(live.audio) <= 3.0 * RATE  # only the history (+1 s) is kept


def test_streaming_lip_smooths_as_the_checkpoint_says(tiny_presenter, tmp_path):
    """A checkpoint with smooth_sigma 1 (kernel radius 3 <= look-ahead 3): the stream's rows are steadier than
    without smoothing and still follow the offline (smoothed) prediction."""
    import torch

    from talkinghead.lip import predict, speech_features
    from talkinghead.streaming import StreamingLip
    from talkinghead.tensorfile import load_checkpoint

    payload = load_checkpoint(tiny_presenter / LIP_CHECKPOINT)
    plain_ckpt, smoothed_ckpt = tmp_path / "plain.pt", tmp_path / "smooth.pt"
    torch.save({**payload, "config": {**payload["config"], "smooth_sigma": 0.0}}, plain_ckpt)
    torch.save({**payload, "config": {**payload["config"], "smooth_sigma": 1.0}}, smoothed_ckpt)
    samples, _, _ = synthetic_speech(4.0, seed=5)
    n = int(round(len(samples) / RATE * FPS))

    def streamed(checkpoint: Path) -> np.ndarray:
        live = StreamingLip(checkpoint, "tiny", FPS, history_s=2.0, lookahead_frames=3)
        rows = []
        for i in range(0, len(samples), 640 * 4):
            live.push(samples[i:i + 640 * 4])
            rows.append(live.drain())
        return np.concatenate(rows + [live.drain(final=True)])

    plain, smooth = streamed(plain_ckpt), streamed(smoothed_ckpt)
    jitter = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.8 * jitter(plain)
    offline = predict(smoothed_ckpt, speech_features(smoothed_ckpt, samples, n, FPS), "tiny")
    jaw = slice(50, 53)
    assert pearson_r(smooth[:, jaw].ravel(), offline[:, jaw].ravel()) > 0.8


@pytest.mark.slow
def test_stream_writes_every_frame_with_its_audio(tiny_presenter, tmp_path):
    samples, _, _ = synthetic_speech(3.0, seed=6)
    wav = write_wav16(tmp_path / "speech.wav", samples)
    out, stats = tmp_path / "live.ts", tmp_path / "stats.json"
    proc = run_stream(tiny_presenter, ["--input", str(wav), "--out", str(out), "--stats", str(stats)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    numbers = json.loads(stats.read_text())
    frames, audio_s = decoded(out)
    assert numbers["frames"] == frames == 75  # 3 s at 25 fps: none dropped, none repeated
    assert abs(audio_s - 3.0) <= AAC_SLACK_S and numbers["audio_samples"] == len(samples)
    assert (numbers["width"], numbers["height"]) == (192, 192)  # pasted into the presenter's full frames


@pytest.mark.slow
def test_stream_goes_on_through_a_stall_and_closes_at_the_end(tiny_presenter, tmp_path):
    """Raw PCM on stdin with a 2 s gap: silence fills the gap in real time and the stream ends playable."""
    samples, _, _ = synthetic_speech(2.0, seed=7)
    out, stats = tmp_path / "live.ts", tmp_path / "stats.json"
    proc = run_stream(tiny_presenter, ["--out", str(out), "--stats", str(stats), "--crop-only"],
                      stdin=subprocess.PIPE)
    data = pcm16(samples)
    half = len(data) // 2 // 2 * 2
    while b"ready" not in proc.stderr.readline():  # models loaded: from now on the clock is live
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.stdin.write(data[:half])
    proc.stdin.flush()
    time.sleep(2.5)
    proc.stdin.write(data[half:])
    proc.stdin.close()  # the source ends abruptly
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    numbers = json.loads(stats.read_text())
    assert numbers["inserted_silence_s"] > 0.5  # the stall became silence, not a frozen or broken stream
    frames, audio_s = decoded(out)
    # every frame of the audio written, speech and inserted silence, the last partial frame included
    assert frames == numbers["frames"] == np.ceil(numbers["audio_samples"] / RATE * FPS - 1e-9)
    assert abs(audio_s - (2.0 + numbers["inserted_silence_s"])) <= AAC_SLACK_S


@pytest.mark.slow
def test_stream_ends_quietly_when_its_reader_goes_away(tiny_presenter, tmp_path):
    """`talkinghead stream | head -c N`: the reader leaves mid-stream; one line says so, no traceback, exit 0."""
    samples, _, _ = synthetic_speech(4.0, seed=9)
    wav = write_wav16(tmp_path / "speech.wav", samples)
    proc = run_stream(tiny_presenter, ["--input", str(wav)])  # MPEG-TS on stdout
    head = proc.stdout.read(20000)  # far less than 4 s of video (and than a pipe buffer: the writer must block)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert len(head) == 20000 and head[0] == 0x47  # MPEG-TS sync byte: it was streaming
    assert proc.returncode == 0 and "Traceback" not in err and "Exception" not in err, err[-2000:]
    assert "the reader closed stdout after" in err and "reader_closed True" in err


def test_stream_refuses_a_wrong_sample_rate_before_writing(tiny_presenter, tmp_path):
    wav = write_wav16(tmp_path / "cd.wav", np.zeros(44100, np.float32), rate=44100, channels=2)
    out = tmp_path / "live.ts"
    proc = run_stream(tiny_presenter, ["--input", str(wav), "--out", str(out)])
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1, err.decode()[-2000:]
    assert "44100 Hz, 2 channel(s)" in lines[0] and "16 kHz mono" in lines[0] and str(wav) in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("out, reason", [("live.mp4", "output must be a .ts file"),
                                         ("/sys/live.ts", "output folder /sys is not writable")])
def test_stream_refuses_an_output_it_cannot_write(tiny_presenter, tmp_path, out, reason):
    samples, _, _ = synthetic_speech(1.0, seed=8)
    wav = write_wav16(tmp_path / "speech.wav", samples)
    proc = run_stream(tiny_presenter, ["--input", str(wav), "--out", out])
    _, err = proc.communicate(timeout=300)
    lines = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and reason in lines[0], err.decode()[-2000:]
    assert "Traceback" not in err.decode()
