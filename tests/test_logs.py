"""Clean logs: progress in a log is short plain lines at an interval (no tqdm redraws glued into one endless line), and
MediaPipe's absl/TFLite start-up lines and protobuf's deprecation warning never reach a stage's output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


from talkinghead.progress import MAX_LINE, PlainProgress, Progress, summary_lines
from talkinghead.solutions import drop_noise

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE_LIMIT = 300  # the acceptance limit for a line of `dvc repro > log 2>&1`
NOISE_MARKERS = ("W0000", "I0000", "absl", "GetPrototype", "protobuf", "XNNPACK")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_one_short_line_per_interval_with_loss_and_eta():
    clock, lines = FakeClock(), []
    bar = PlainProgress(total=800, desc="train_lip", unit="steps", interval=10.0, clock=clock, write=lines.append)
    for step in range(1, 801):
        clock.now += 0.125  # 1/8 s a step (exact in binary): 100 s in all
        bar.set_postfix(loss=f"{1 / step:.4f}", val="0.5")  # as the trainers do: this step's loss, then update
        bar.update(1)
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert len(lines) == 11, lines  # at 10, 20, ..., 100 s, and the closing line
    assert all(len(line) < LOG_LINE_LIMIT and "\r" not in line for line in lines)
    first = lines[0]
    assert first.startswith("train_lip: 80/800 steps (10%)"), first
    assert "loss 0.0125" in first and "elapsed 0:00:10" in first
    assert "ETA 0:01:30" in first  # 720 steps left at 1/8 s each
    assert lines[-1].startswith("train_lip: 800/800 steps (100%)") and lines[-1].endswith("done")


def test_plain_progress_cuts_a_long_postfix_and_resumes_eta_from_initial():
    clock, lines = FakeClock(), []
    bar = PlainProgress(total=200, desc="gan", unit="steps", initial=100, interval=5.0, clock=clock,
                        write=lines.append)
    bar.set_postfix(note="x" * 1000)
    for _ in range(50):
        clock.now += 0.25
        bar.update(1)
    assert len(lines) == 2 and all(len(line) <= MAX_LINE for line in lines)  # at 5 and 10 s
    # resumed at step 100: the rate counts the steps run here only (20 steps in 5 s), so 80 left take 20 s
    assert lines[0].startswith("gan: 120/200 steps") and "ETA 0:00:20" in lines[0]


def test_progress_off_a_terminal_prints_plain_lines(capsys):
    """Under pytest stderr is not a TTY: the helper picks the plain form by itself, and ``disable`` prints nothing."""
    with Progress(total=3, desc="speak demo", unit="frames", interval=0.0) as bar:
        assert isinstance(bar.bar, PlainProgress)
        for _ in range(3):
            bar.set_postfix(loss=0.123456)
            bar.update(1)
    for _ in Progress(range(4), desc="quiet", disable=True):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and "quiet" not in err
    lines = err.splitlines()
    assert lines[0] == "speak demo: 1/3 frames (33%), loss 0.1235, elapsed 0:00:00, ETA 0:00:00"
    assert lines[-1].endswith("done") and len(lines) == 4
    assert list(Progress(range(5), desc="wrapped", interval=100.0)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err.strip() == "wrapped: 5/5 it (100%), elapsed 0:00:00, done"


def test_stage_summary_is_wrapped_into_short_lines():
    """A stage's closing metrics (predict_lip's nested dict was one 555-character JSON line) wrap at 120."""
    metrics = {"heldout_frames": 379, **{f"baseline_{i}": {"lve": 1.0e-5 * i, "mouth_opening_r": 0.8, "av_offset": i}
                                         for i in range(8)}}
    lines = summary_lines("predict_lip demo", metrics)
    assert len(lines) > 3 and all(len(line) <= 120 for line in lines)
    assert lines[0].startswith("predict_lip demo: heldout_frames 379, baseline_0.lve 0,")
    assert all(line.startswith("  ") for line in lines[1:])
    text = " ".join(lines)
    assert all(f"baseline_{i}.av_offset {i}" in text for i in range(8))


def test_mediapipe_noise_filter_drops_only_the_start_up_chatter():
    noise = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             b"W0000 00:00:1795685530.751205   15571 inference_feedback_manager.cc:114] Feedback manager requires a "
             b"model with a single signature inference. Disabling support for feedback tensors.\n"
             b"I1126 09:36:12.183000 24846 graph.cc:12] starting\n")
    kept = (b"E1126 09:36:12.218000 24846 calculator_graph.cc:887] a real error\n"
            b"Traceback (most recent call last):\n"
            b"facemesh: 10/80 frames (12%), elapsed 0:00:10, ETA 0:01:10\n")
    assert drop_noise(noise + kept) == kept


def _stage(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return output


def test_extract_and_landmarks_stages_log_cleanly_in_a_pipe(tiny_video, tmp_path):
    """The stages as `dvc repro > log 2>&1` runs them (their own processes, output piped, no TTY, no env settings
    from `talkinghead repro`): every progress line short, and no MediaPipe / protobuf noise."""
    import talkinghead

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    raw = tmp_path / "data" / "raw" / "tiny"
    raw.mkdir(parents=True)
    tiny_video("video.mp4", seconds=3.2).rename(raw / "video.mp4")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_MININTERVAL", "GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env.update(PYTHONPATH=str(Path(talkinghead.__file__).parents[1]),  # these sources, not the installed ones
               MLFLOW_TRACKING_URI=f"file://{tmp_path}/mlruns", MLFLOW_ALLOW_FILE_STORE="true",
               TQDM_MININTERVAL="0")  # a progress line on every update: the most lines a log can get
    log = _stage(["talkinghead.stages.extract", "data/raw/tiny", "data/interim/tiny"], tmp_path, env)
    log += _stage(["talkinghead.stages.landmarks", "data/interim/tiny"], tmp_path, env)
    lines = log.splitlines()
    assert any(line.startswith("detect faces: ") for line in lines), log[-2000:]
    assert any(line.startswith("facemesh: 80/80 frame") for line in lines), log[-2000:]
    too_long = [line[:120] for line in lines if len(line) > LOG_LINE_LIMIT]
    assert not too_long and "\r" not in log
    noisy = [line for line in lines if any(marker in line for marker in NOISE_MARKERS)]
    assert not noisy, noisy
    assert (tmp_path / "data" / "interim" / "tiny" / "landmarks.parquet").exists()
