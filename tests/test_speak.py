"""speak: video writer, paste-back, ping-pong schedule, error cases, and end to end on a tiny generated presenter (its
duration, audio and lip motion; evaluate's metrics on it)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from talkinghead.audio import write_wav
from talkinghead.errors import InputError
from talkinghead.paste import paste_back
from talkinghead.paths import PresenterPaths
from talkinghead.split import SplitParams
from talkinghead.speak import speak, speak_main
from talkinghead.synthesis import SpeakParams
from talkinghead.synthesis import pingpong_schedule, required_artifacts
from talkinghead.videoio import VideoWriter, n_frames_for_audio, probe

from test_lip import synthetic_speech, synthetic_targets

from configs import project_config, write_project_params

PASTE = project_config(SpeakParams, "speak").paste

RATE = 16000


def tone(seconds: float, rate: int = RATE, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


# -- video writer --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps, seconds", [(25.0, 2.37), (30.0, 1.05)])
def test_writer_duration_matches_audio_and_has_audio(tmp_path, fps, seconds):
    audio = tone(seconds)
    n = n_frames_for_audio(len(audio), RATE, fps)
    out = tmp_path / "clip.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(out, fps, 96, 64, audio=audio, audio_rate=RATE) as writer:
        for i in range(0, n, 7):  # odd batch size: batches do not line up with anything
            writer.write(rng.integers(0, 255, (min(7, n - i), 64, 96, 3), dtype=np.uint8))
    info = probe(out)
    assert info["video"]["codec"] == "h264" and info["video"]["pix_fmt"] == "yuv420p"
    assert (info["video"]["width"], info["video"]["height"]) == (96, 64)
    assert info["audio"] is not None and info["audio"]["codec"] == "aac"
    assert info["video"]["frames"] == n
    assert abs(info["video"]["duration_s"] - seconds) <= 1.0 / fps
    assert abs(info["audio"]["duration_s"] - seconds) <= 1.0 / fps
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temp file left behind
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # faststart: the index first, so a browser plays while loading


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_leaves_nothing_on_error(tmp_path, threaded):
    out = tmp_path / "clip.mp4"
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 25, 32, 32, audio=tone(1.0), threaded=threaded) as writer:
            writer.write(frames)
            writer.write(frames)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_leaves_nothing_on_bad_frame(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(ValueError):
        with VideoWriter(out, 25, 32, 32) as writer:
            writer.write(np.zeros((2, 32, 32, 3), np.uint8))
            writer.write(np.zeros((2, 16, 32, 3), np.uint8))  # wrong size mid-stream
    assert list(tmp_path.iterdir()) == []


def test_writer_removes_what_a_killed_writer_left(tmp_path):
    """A SIGKILLed writer cannot clean up: the next writer of the same file removes its temp file, but not the temp
    of a writer that is still running (unless that has not changed for a day: its pid was reused)."""
    import subprocess
    import sys
    import time

    from talkinghead import videoio

    out = tmp_path / "clip.mp4"
    script = ("import os, signal, sys, numpy as np\nfrom talkinghead.videoio import VideoWriter\n"
              "w = VideoWriter(sys.argv[1], 25, 32, 32, audio=np.zeros(16000, np.float32))\n"
              "w.write(np.zeros((30, 32, 32, 3), np.uint8))\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(videoio.__file__).parents[1])}  # these sources, not the installed
    assert subprocess.run([sys.executable, "-c", script, str(out)], env=env).returncode == -9
    (killed,) = tmp_path.iterdir()
    assert killed.name.startswith(".clip.mp4.")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        try:
            live = tmp_path / f".clip.mp4.{running.pid}.abcd1234.mp4"
            live.write_bytes(b"being written")
            reused = tmp_path / f".clip.mp4.{running.pid}.efgh5678.mp4"
            reused.write_bytes(b"two days old")
            os.utime(reused, (time.time() - 2 * 86400,) * 2)
            with VideoWriter(out, 25, 32, 32) as writer:
                writer.write(np.zeros((3, 32, 32, 3), np.uint8))
            assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "clip.mp4"]
        finally:
            running.kill()


# -- paste-back ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("box", [(40.3, 20.7, 100.0), (-30.0, -10.0, 90.0), (150.0, 100.0, 80.0)])
@pytest.mark.parametrize("levels", [1, 4])
def test_paste_back_only_changes_the_crop_box(box, levels):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
    crop = np.full((64, 64, 3), 255, np.uint8)
    out = paste_back(frame, crop, box, None, dataclasses.replace(PASTE, levels=levels, colour_match=False))
    x0, y0, side = int(np.floor(box[0])), int(np.floor(box[1])), int(round(box[2]))
    outside = np.ones(frame.shape[:2], bool)
    outside[max(y0, 0):y0 + side, max(x0, 0):x0 + side] = False
    assert np.array_equal(out[outside], frame[outside])
    inside = ~outside
    assert (out[inside].astype(int) - frame[inside]).mean() > 5  # something was pasted


def test_paste_back_blends_centre_fully_and_keeps_the_frame_input():
    frame = np.full((120, 120, 3), 50, np.uint8)
    crop = np.full((64, 64, 3), 200, np.uint8)
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1.0
    out = paste_back(frame, crop, (10.0, 10.0, 100.0), mask, dataclasses.replace(PASTE, colour_match=False))
    assert out[60, 60].tolist() == [200, 200, 200]  # the mask's centre is the generated crop
    assert frame[60, 60].tolist() == [50, 50, 50]   # input untouched (out is a copy)
    assert out[15, 15].tolist() == [50, 50, 50]     # inside the box but far from the mask


# -- schedule ------------------------------------------------------------------------------------------------------

def test_pingpong_starts_at_closed_frame_and_reverses_at_the_ends():
    s = pingpong_schedule(12, start=3, lo=0, hi=5)
    assert s.tolist() == [3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert np.all(np.abs(np.diff(s)) == 1)  # no jumps: motion stays continuous


@pytest.mark.parametrize("n_out", [1, 7, 1000])
def test_pingpong_covers_any_length(n_out):
    s = pingpong_schedule(n_out, start=10, lo=5, hi=40)
    assert len(s) == n_out and s[0] == 10 and s.min() >= 5 and s.max() < 40
    if n_out > 100:
        assert set(s.tolist()) == set(range(5, 40))
    assert pingpong_schedule(4, 0, 0, 1).tolist() == [0, 0, 0, 0]


# -- error cases ---------------------------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with params.yaml naming presenter 'alice' (artifacts made per test)."""
    write_project_params(tmp_path, presenters=["alice"])
    (tmp_path / "data" / "raw" / "alice").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    write_wav(tmp_path / "speech.wav", tone(1.0))
    return tmp_path


def make_trained(root, name="alice", skip=None):
    """Placeholder artifacts (speak checks existence before reading anything)."""
    paths = PresenterPaths.of(name, root)
    for artifact, stage in required_artifacts(paths, root):
        if stage != skip:
            artifact.parent.mkdir(parents=True, exist_ok=True)
            artifact.write_bytes(b"")
    return paths


def run_main(argv, capsys):
    code = speak_main(argv)
    return code, capsys.readouterr().err.strip()


def test_unknown_presenter_lists_known_ones(project, capsys):
    code, err = run_main(["--presenter", "bob", "--audio", "speech.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "unknown presenter 'bob'" in err and "alice" in err and len(err.splitlines()) == 1
    assert not (project / "out.mp4").exists()


@pytest.mark.parametrize("missing, stage", [("landmarks@alice", "landmarks@alice"), ("fit@alice", "fit@alice"),
                                            ("train_lip", "train_lip"), ("train_gan@alice", "train_gan@alice")])
def test_untrained_presenter_names_the_stage(project, capsys, missing, stage):
    make_trained(project, skip=missing)
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "not trained yet" in err and stage in err and "dvc repro train_gan@alice" in err
    assert not (project / "out.mp4").exists()


@pytest.mark.parametrize("crop_only", [False, True])
def test_unbuilt_demo_presenter_advises_make_demo(project, capsys, crop_only):
    """A fresh clone lists demo but has none of its data: it is built by the pipeline, never added by hand."""
    write_project_params(project, presenters=["alice", "demo"])
    code, err = run_main(["--presenter", "demo", "--audio", "speech.wav", "--out", "out.mp4"]
                         + ["--crop-only"] * crop_only, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "run `make demo` (or `talkinghead repro`)" in err and "add-presenter" not in err
    assert err.startswith("error: data/interim/demo/frames.npy: missing" if crop_only else "error: data/raw/demo: missing")


def test_presenter_without_footage_gets_advice_by_how_it_is_tracked(project, capsys):
    (project / "data" / "raw" / "alice").rmdir()
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "add it with `talkinghead add-presenter alice VIDEO`" in err  # listed, never added
    (project / "data" / "raw" / "alice.dvc").write_text("outs:\n- path: alice\n")  # added, not pulled here
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "tracked in data/raw/alice.dvc" in err and "`dvc pull`" in err and "add-presenter" not in err
    code, err = run_main(["--presenter", "zed", "--audio", "speech.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "unknown presenter 'zed'" in err and "talkinghead add-presenter NAME VIDEO" in err


def test_unreadable_audio(project, capsys):
    make_trained(project)
    (project / "noise.mp3").write_bytes(b"this is not audio" * 100)
    code, err = run_main(["--presenter", "alice", "--audio", "noise.mp3", "--out", "out.mp4"], capsys)
    assert code == 2 and err.startswith("error: noise.mp3:")
    code, err = run_main(["--presenter", "alice", "--audio", "nope.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "no such file" in err
    assert not (project / "out.mp4").exists()


def test_silent_audio(project, capsys):
    make_trained(project)
    write_wav(project / "silence.wav", np.zeros(RATE, np.float32))
    code, err = run_main(["--presenter", "alice", "--audio", "silence.wav", "--out", "out.mp4"], capsys)
    assert code == 2 and "silent" in err
    assert not (project / "out.mp4").exists()


def test_output_not_writable(project, capsys):
    make_trained(project)
    (project / "blocker").write_text("a file, not a folder")
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", "blocker/out.mp4"], capsys)
    assert code == 2 and "not a directory" in err
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", "out.avi"], capsys)
    assert code == 2 and ".mp4" in err


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs")
@pytest.mark.parametrize("out", ["/sys/x.mp4", "/sys/new/folder/x.mp4"])
def test_output_in_an_unwritable_place(project, capsys, out):
    """sysfs takes no new files, even from root (for whom every permission check passes): the error comes from
    trying, before any presenter data is read (the placeholders here would fail to load)."""
    make_trained(project)
    code, err = run_main(["--presenter", "alice", "--audio", "speech.wav", "--out", out], capsys)
    assert code == 2 and err == f"error: {out}: output folder /sys is not writable (Permission denied)"


def test_speak_function_raises_input_error(project):
    with pytest.raises(InputError):
        speak("bob", project / "speech.wav", project / "out.mp4", params=project_config(SpeakParams, "speak"))


# -- end to end on a tiny presenter (last: needs every upstream part) ----------------------------------------------

def frame_energy(samples: np.ndarray, n: int, fps: float) -> np.ndarray:
    """RMS of the audio under each of ``n`` video frames [n]."""
    edges = np.round(np.arange(n + 1) * RATE / fps).astype(int)
    return np.array([np.sqrt(np.mean(samples[a:b] ** 2)) for a, b in zip(edges[:-1], edges[1:])])


@pytest.mark.slow
def test_speak_end_to_end_on_a_tiny_presenter(tiny_presenter, monkeypatch, capsys):
    """Output as long as the speech, with that speech as its audio track, and lips that open with the syllables: the
    inner-lip gap of every rendered frame (head model geometry of the expression speak renders) moves as much as the
    synthetic speech's own articulation does, follows it and the speech energy, and is in sync (AV offset 0)."""
    import torch

    from talkinghead import speak as speak_module
    from talkinghead.audio import decode_audio, rms_dbfs
    from talkinghead.headmodel import load_head_model, mouth_opening
    from talkinghead.lipmetrics import av_offset, pearson_r
    from talkinghead.schemas import PARAMETERS, column_array, read_table

    monkeypatch.chdir(tiny_presenter)
    seconds, fps, seed = 3.0, 25.0, 11
    samples, articulation, rounding = synthetic_speech(seconds, seed)  # new speech: not the lip model's training clip
    write_wav("speech.wav", samples)
    rendered: list[tuple[np.ndarray, np.ndarray]] = []  # (expression, source frames) of each batch speak renders
    real_synthesize = speak_module.CropSynthesizer.synthesize

    def recording(self, expression, source):
        rendered.append((np.array(expression), np.array(source)))
        return real_synthesize(self, expression, source)

    monkeypatch.setattr(speak_module.CropSynthesizer, "synthesize", recording)
    assert speak_main(["--presenter", "tiny", "--audio", "speech.wav", "--out", "out/said.mp4", "--quiet"]) == 0
    assert "frames/s" in capsys.readouterr().out

    n = n_frames_for_audio(len(samples), RATE, fps)
    info = probe("out/said.mp4")
    assert (info["video"]["width"], info["video"]["height"]) == (192, 192)  # the presenter's own resolution
    assert info["video"]["fps"] == pytest.approx(fps)
    assert info["video"]["frames"] == n and abs(info["video"]["duration_s"] - seconds) <= 1 / fps
    assert info["audio"] is not None and abs(info["audio"]["duration_s"] - seconds) <= 2 / fps
    heard = decode_audio("out/said.mp4", RATE)
    assert abs(len(heard) / RATE - seconds) <= 2 / fps
    assert abs(rms_dbfs(heard) - rms_dbfs(samples)) < 1.0  # the speech itself (AAC keeps its level), not silence

    expression = np.concatenate([e for e, _ in rendered])
    source = np.concatenate([s for _, s in rendered])
    assert expression.shape == (n, 53) and len(source) == n  # one expression per output frame, each rendered once
    model = load_head_model()
    fitted_shape = column_array(read_table(PresenterPaths.of("tiny", tiny_presenter).flame, PARAMETERS), "shape")

    def lip_gap(expr: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            shape = torch.from_numpy(fitted_shape[source])
            return mouth_opening(model.deform(shape, torch.from_numpy(np.asarray(expr, np.float32))), model).numpy()

    gap = lip_gap(expression)
    # what the synthetic speech's articulation means for the lips (the targets the lip model was trained on)
    reference = lip_gap(synthetic_targets(articulation, rounding, n, fps, seed=0))
    assert gap.std() > 0.3 * reference.std() > 0  # the lips move, on the scale of the articulation
    assert pearson_r(gap, reference) > 0.7
    energy = frame_energy(samples, n, fps)
    assert pearson_r(gap, energy) > 0.6  # open on syllables, closed in pauses
    assert abs(av_offset(energy, gap, max_lag=5)) <= 1  # in sync with the audio track


@pytest.mark.slow
def test_evaluate_end_to_end_on_a_tiny_presenter(tiny_presenter, monkeypatch):
    import json

    from talkinghead.split import heldout_start
    from talkinghead.stages import evaluate

    monkeypatch.chdir(tiny_presenter)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tiny_presenter}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    evaluate.main(["data/interim/tiny", "--quiet"])
    out = tiny_presenter / "reports/eval/tiny"
    metrics = json.loads((out / "metrics.json").read_text())
    # the whole held-out tail of the 80 frames (3.2 s at 25 fps), every frame in the video with the tail's audio
    start = heldout_start(80, project_config(SplitParams, "split").heldout_fraction)
    tail = 80 - start
    assert (metrics["heldout_start"], metrics["frames"]) == (start, tail) and tail > 11  # evaluable: > 2 * max_lag + 1
    for system in ("model", "baseline_static", "baseline_shifted"):
        assert set(metrics[system]) >= {"lmd", "mouth_opening_r", "av_offset", "mouth_psnr", "mouth_ssim"}
        assert 0 < metrics[system]["mouth_ssim"] < 1 and np.isfinite(metrics[system]["mouth_psnr"])
    cast = metrics["appearance"]["colour_cast"]  # the image stage's coarse colour error, generated and composite
    assert set(cast) == {"open_generated", "open_composite"} and all(np.isfinite(v) and v >= 0 for v in cast.values())
    inside = metrics["appearance"]["interior_cast"]  # the same inside the real opening only (the tiny face opens)
    assert set(inside) == {"open_generated", "open_composite"}
    assert all(np.isfinite(v) and v >= 0 for v in inside.values())
    info = probe(out / "side_by_side.mp4")
    assert info["video"]["width"] == 2 * 128 and info["video"]["frames"] == tail
    assert info["audio"] is not None and abs(info["audio"]["duration_s"] - tail / 25) <= 2 / 25
    assert len((out / "mouth_opening.csv").read_text().splitlines()) == 1 + tail
    assert (out / "mouth_opening.png").exists() and (out / "strip.png").exists()


def test_speak_composites_are_what_the_gan_trained_on(tiny_presenter, tmp_path, monkeypatch):
    """speak's composite of a frame (render, lower-face mask, the frame's own lower face moved to the new jaw) is the
    composites stage's composite of it for the same expression: the GAN is driven with what it was trained on."""
    import shutil

    from talkinghead import schemas
    from talkinghead.stages import composites
    from talkinghead.synthesis import CropSynthesizer, SynthesisParams, load_presenter
    from talkinghead.tensorfile import load_tensor

    root = tmp_path / "project"
    shutil.copytree(tiny_presenter, root, ignore=shutil.ignore_patterns("mlruns", "reports"))  # the fixture stays
    monkeypatch.chdir(root)
    paths = PresenterPaths.of("tiny", root)
    fitted = schemas.read_table(paths.flame, schemas.PARAMETERS)
    expression = schemas.column_array(fitted, "expression").copy()
    n = len(expression)
    expression[::2, 50] = 0.0  # every other frame's jaw closed (the real chin would show below the render) ...
    expression[1::2, 50] += 0.15  # ... the others opened wider than the footage's
    schemas.write_table(pd.DataFrame({"frame": np.arange(n, dtype=np.int32), "expression": list(expression),
                                      "heldout": np.zeros(n, bool)}), paths.lip_coeffs, schemas.LIP_COEFFS)
    composites.main(["data/interim/tiny"])
    params = SynthesisParams.load(root / "params.yaml")
    source = np.arange(3, n, 9)
    synth = CropSynthesizer(load_presenter(paths, params.split.heldout_fraction), params, window_margin=-1)
    _, speak_composites, _ = synth.synthesize_with_composites(expression[source], source)
    trained_on = np.asarray(load_tensor(paths.composites))[source]
    np.testing.assert_array_equal(speak_composites, trained_on)  # one function makes both
    unwarped = dataclasses.replace(params, composites=dataclasses.replace(params.composites, warp_sigma=0.0))
    synth = CropSynthesizer(load_presenter(paths, params.split.heldout_fraction), unwarped, window_margin=-1)
    _, plain, _ = synth.synthesize_with_composites(expression[source], source)
    assert (np.abs(plain.astype(int) - trained_on) > 8).any()  # the warp moved some of the frame's own pixels


class RealCrops:
    """A perfect synthesizer for evaluate: the real crop of every source frame, whatever the expression."""

    bank = None  # takes no retrieved mouths

    def __init__(self, presenter):
        self.presenter = presenter

    def synthesize(self, expression, source, state=None):
        return np.asarray(self.presenter.crops[np.asarray(source)]), None

    def synthesize_with_composites(self, expression, source, state=None):
        crops = np.asarray(self.presenter.crops[np.asarray(source)])
        return crops, crops, None


@pytest.mark.slow
@pytest.mark.parametrize("shift", [3, 2])
def test_evaluate_scores_a_perfect_synthesizer_and_its_shifted_baseline(tiny_presenter, monkeypatch, shift):
    """The real held-out frames as the 'generated' ones: the model scores perfectly (no lag), and the shifted baseline
    (the same frames delayed by evaluate.shift_frames) is measured with exactly that AV offset."""
    from talkinghead.synthesis import SynthesisParams, load_presenter
    from talkinghead.stages.evaluate import EvaluateParams, evaluate_presenter

    monkeypatch.chdir(tiny_presenter)
    paths = PresenterPaths.of("tiny", tiny_presenter)
    synthesis = SynthesisParams.load(tiny_presenter / "params.yaml")
    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    params = project_config(EvaluateParams, "evaluate", shift_frames=shift, cross_speakers=False)
    result = evaluate_presenter(paths, params, synthesis, tiny_presenter, 64, -1, progress=False,
                                synthesizer=RealCrops(pres))
    model, shifted = result.metrics["model"], result.metrics["baseline_shifted"]
    assert result.metrics["face_found_fraction"] == 1.0
    assert model["lmd"] == pytest.approx(0.0, abs=1e-6) and model["mouth_opening_r"] == pytest.approx(1.0)
    assert model["av_offset"] == 0 and model["mouth_psnr"] == float("inf") and model["mouth_ssim"] == pytest.approx(1)
    assert shifted["av_offset"] == shift
    assert shifted["mouth_opening_r"] < 0.95 and shifted["lmd"] > 0.1 and np.isfinite(shifted["mouth_psnr"])
    assert result.real_opening.std() > 0  # the real held-out mouth moves: the lag search had something to find
    appearance, temporal = result.metrics["appearance"], result.metrics["temporal"]
    assert appearance["model"]["mouth_psnr"] == float("inf") and appearance["model"]["mouth_ssim"] == pytest.approx(1)
    from talkinghead.synthesis import mouth_opening_from_landmarks

    gap = mouth_opening_from_landmarks(pres.lmk_crop)  # open: above the whole clip's median, counted on the tail
    start = result.metrics["heldout_start"]
    assert appearance["open_frames"] == int((gap[start:start + result.metrics["frames"]] > np.median(gap)).sum())
    assert temporal["generated_ratio"] == pytest.approx(1.0) and temporal["real_mouth_change"] > 0
    assert result.metrics["retrieval"] == "off (generator without retrieval)"
    assert (tiny_presenter / "reports" / "eval" / "tiny" / "open_mouths.png").exists()


@pytest.mark.slow
def test_speak_failing_mid_stream_leaves_no_file(tiny_presenter, monkeypatch):
    from talkinghead import speak as speak_module

    monkeypatch.chdir(tiny_presenter)
    write_wav("long.wav", tone(2.0))
    real_synthesize = speak_module.CropSynthesizer.synthesize
    calls = []

    def failing(self, expression, source):
        calls.append(len(source))
        if len(calls) == 2:
            raise RuntimeError("GAN exploded")
        return real_synthesize(self, expression, source)

    monkeypatch.setattr(speak_module.CropSynthesizer, "synthesize", failing)
    with pytest.raises(RuntimeError, match="GAN exploded"):
        speak("tiny", "long.wav", "out/broken.mp4", params=project_config(SpeakParams, "speak", batch_size=8),
              progress=False)
    assert len(calls) == 2
    assert not list((tiny_presenter / "out").glob("*broken*"))


@pytest.mark.slow
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])  # kill / a job scheduler; Ctrl-C
def test_speak_stopped_by_a_signal_mid_stream_leaves_nothing(tiny_presenter, name, code):
    """`talkinghead speak` told to stop while it writes the video: non-zero exit, one line, no output, no temp files."""
    import signal
    import subprocess
    import sys
    import time

    import talkinghead

    out_dir = tiny_presenter / f"stopped_{name}"
    write_wav(tiny_presenter / "stop.wav", tone(60.0))  # far longer than the test lets it run
    env = {**os.environ, "PYTHONPATH": str(Path(talkinghead.__file__).parents[1])}  # these sources, not the installed
    command = [sys.executable, "-m", "talkinghead.cli", "speak", "--presenter", "tiny", "--audio", "stop.wav",
               "--out", str(out_dir / "clip.mp4"), "--quiet"]
    # a terminal's default SIGINT handling: a job started in the background (`make test &`) inherits SIGINT ignored,
    # and Python then never turns Ctrl-C into KeyboardInterrupt
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with subprocess.Popen(command, cwd=tiny_presenter, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=restore_sigint) as running:
        deadline = time.monotonic() + 300
        while not list(out_dir.glob(".clip.mp4.*")) and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.poll() is None, running.communicate()  # still writing: the temp video exists
        time.sleep(0.5)  # let it get into the frame loop
        running.send_signal(getattr(signal, name))
        _, stderr = running.communicate(timeout=120)
    assert running.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == ("terminated" if name == "SIGTERM" else "interrupted"), stderr
    assert "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []  # neither the video nor a temp of it
    assert not [p for p in tiny_presenter.glob(".*") if "clip.mp4" in p.name]


def test_speak_from_registered_model_versions(tiny_presenter, tmp_path, monkeypatch, capsys):
    """The tiny presenter's checkpoints registered as train_lip / train_gan register them; with models/ gone, speak
    --model-version speaks with the registered versions, and names a version that does not exist."""
    import shutil

    import mlflow

    from talkinghead import registry, tracking
    from talkinghead.lip import load_lip_model
    from talkinghead.paths import LIP_CHECKPOINT
    from talkinghead.tensorfile import load_tensor

    root = tmp_path / "project"
    shutil.copytree(tiny_presenter, root, ignore=shutil.ignore_patterns("mlruns", "out"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{root}/mlruns")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    paths = PresenterPaths.of("tiny", Path("."))
    config = load_lip_model(LIP_CHECKPOINT, "cpu").model.config
    with tracking.stage_run("train_lip") as run:
        registry.register_lip(run, LIP_CHECKPOINT, np.zeros((8, config.n_context, config.n_mels), np.float32), "tiny")
    with tracking.stage_run("train_gan", "tiny") as run:
        registry.register_gan(run, paths.gan_checkpoint, "tiny", np.array(load_tensor(paths.frames)[:1]))
    client = mlflow.MlflowClient()
    for name in ("talkinghead-lip", "talkinghead-gan-tiny"):
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert str(version.version) == "1" and version.tags["git_commit"]
        assert mlflow.pyfunc.load_model(f"models:/{name}/1").metadata.signature is not None
    shutil.rmtree("models")
    write_wav("speech.wav", synthetic_speech(1.0, seed=3)[0])

    assert speak_main(["--presenter", "tiny", "--audio", "speech.wav", "--out", "dvc.mp4", "--quiet"]) == 2
    assert "not trained yet" in capsys.readouterr().err  # the DVC outputs are gone
    assert speak_main(["--presenter", "tiny", "--audio", "speech.wav", "--out", "registered.mp4", "--quiet",
                       "--model-version", "lip=1,gan=latest"]) == 0
    assert probe("registered.mp4")["video"]["frames"] == 25
    assert speak_main(["--presenter", "tiny", "--audio", "speech.wav", "--out", "v2.mp4", "--quiet",
                       "--model-version", "lip=1,gan=2"]) == 2
    assert "talkinghead-gan-tiny' has no version 2" in capsys.readouterr().err
    assert speak_main(["--presenter", "tiny", "--audio", "speech.wav", "--out", "v2.mp4", "--quiet",
                       "--model-version", "3"]) == 2
    assert "expected 'latest' or 'lip=N,gan=M'" in capsys.readouterr().err
    assert not Path("v2.mp4").exists()
