"""check / add-presenter: the report, exit codes, the copy + dvc add + params.yaml edit, and refusals that leave
everything as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from talkinghead import onboard
from talkinghead.errors import InputError
from talkinghead.video import ExtractParams

from configs import project_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fewer_samples(monkeypatch):
    monkeypatch.setattr(onboard, "CHECK_SAMPLES", 12)  # the check on ~50 frames is slow on a loaded 2-core box


@pytest.fixture
def plain_project(tmp_path):
    """A scratch project folder with params.yaml copied from the repo."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


@pytest.fixture
def project(plain_project):
    """plain_project made a DVC repo (without git)."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=plain_project, check=True)
    return plain_project


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".dvc/tmp" not in str(p) and "/cache/" not in str(p)}


def test_check_report_on_a_good_clip(tiny_video):
    report = onboard.check_video(tiny_video(seconds=3.2), project_config(ExtractParams, "extract"))
    assert report.usable and report.reasons == []
    assert (report.width, report.height, report.rotation) == (256, 256, 0)
    assert report.audio_rate == 44100 and report.audio_channels == 2
    assert report.one_face_share == 1.0 and 80 < report.median_face_px < 140
    assert abs(report.yaw_min_deg) < 25 and abs(report.yaw_max_deg) < 25
    text = onboard.format_report(report)
    assert "usable:     yes" in text and "256x256" in text


def test_check_report_lists_reasons(tiny_video):
    report = onboard.check_video(tiny_video(seconds=2.0, audio=None, faces=(0.3, 0.3)), project_config(ExtractParams, "extract"))
    assert not report.usable
    joined = " ".join(report.reasons)
    assert "shorter than" in joined and "no audio track" in joined and "exactly one face" in joined
    assert "usable:     NO" in onboard.format_report(report)


def test_check_main_exit_codes(tiny_video, tmp_path, capsys):
    assert onboard.check_main([str(tiny_video(seconds=3.2))]) == 0
    assert onboard.check_main([str(tiny_video("silent_short.mp4", seconds=2.0))]) == 2
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"junk" * 100)
    assert onboard.check_main([str(bad)]) == 2
    assert "junk.mp4: not a readable video" in capsys.readouterr().err


def test_check_refuses_a_truncated_clip(truncated_video, capsys):
    video = truncated_video(0.3, seconds=8.0)  # the header says 8 s, about 2.4 s decode
    report = onboard.check_video(video, project_config(ExtractParams, "extract"))
    assert not report.usable and report.duration_s < 3.0
    assert any(r.startswith("truncated: only") and "of the declared 8.00 s" in r for r in report.reasons)
    assert onboard.check_main([str(video)]) == 2
    out, err = capsys.readouterr()
    assert "usable:     NO" in out
    assert err.startswith(f"error: {video}: not usable: truncated: only") and err.count("\n") == 1


def test_add_presenter_copies_tracks_and_lists_it(tiny_video, project):
    video = tiny_video("clip.MP4", seconds=3.2)
    comments_before = [line for line in (project / "params.yaml").read_text().splitlines() if "#" in line]
    message = onboard.add_presenter("alice_2", video, root=project)
    raw = project / "data" / "raw" / "alice_2"
    assert (raw / "video.mp4").read_bytes() == video.read_bytes()
    assert (project / "data" / "raw" / "alice_2.dvc").exists()
    params_text = (project / "params.yaml").read_text()
    assert yaml.safe_load(params_text)["presenters"][-1] == "alice_2"
    assert [line for line in params_text.splitlines() if "#" in line] == comments_before  # comments kept
    assert "dvc repro" in message
    assert not [p for p in (project / "data" / "raw").iterdir() if p.name.startswith(".")]  # no temp folders
    umask = os.umask(0)
    os.umask(umask)
    assert raw.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder (mkdtemp alone makes it 0700)

    # existing name without --force: refused, nothing changes
    other = tiny_video("other.mp4", seconds=3.5, seed=3)
    before = _snapshot(project)
    with pytest.raises(InputError, match="already exists; use --force"):
        onboard.add_presenter("alice_2", other, root=project)
    assert _snapshot(project) == before

    # --force replaces the video, keeps one entry in params.yaml
    onboard.add_presenter("alice_2", other, force=True, root=project)
    assert (raw / "video.mp4").read_bytes() == other.read_bytes()
    assert yaml.safe_load((project / "params.yaml").read_text())["presenters"].count("alice_2") == 1


# Where a SIGKILL stops add-presenter: inside the copy (half a file), after the copy (before `dvc add`), after
# `dvc add` (before params.yaml).
KILL_POINTS = {
    "copy": "def copy(src, dst):\n    open(dst, 'wb').write(open(src, 'rb').read()[:1000])\n    die()\n"
            "onboard.shutil.copyfile = copy",
    "dvc-add": "onboard._dvc_add = lambda *args: die()",
    "params": "onboard.add_to_params = lambda *args: die()",
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_add_presenter_retry_after_a_kill(point, tiny_video, project):
    video = tiny_video(seconds=3.2)
    script = ("import os, signal, sys\nfrom talkinghead import onboard\nonboard.CHECK_SAMPLES = 12\n"
              "def die():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"{KILL_POINTS[point]}\nonboard.add_presenter('dave', sys.argv[1], root=sys.argv[2])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(onboard.__file__).parents[1])}  # these sources, not the installed
    killed = subprocess.run([sys.executable, "-c", script, str(video), str(project)], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    raw = project / "data" / "raw"
    assert [p for p in raw.iterdir() if p.name.startswith(".dave.")] if point == "copy" else (raw / "dave").is_dir()

    message = onboard.add_presenter("dave", video, root=project)
    assert ("interrupted add-presenter" in message) == (point != "copy")
    assert (raw / "dave" / "video.mp4").read_bytes() == video.read_bytes() and (raw / "dave.dvc").is_file()
    assert yaml.safe_load((project / "params.yaml").read_text())["presenters"].count("dave") == 1
    assert not [p for p in raw.iterdir() if p.name.startswith(".dave.")]  # the partial copy is gone
    with pytest.raises(InputError, match="already exists"):  # complete now
        onboard.add_presenter("dave", video, root=project)


def test_add_presenter_killed_while_replacing_keeps_the_old_video(tiny_video, project):
    """--force moves the old folder aside before moving the new one in; a kill in between must not lose it."""
    old, new = tiny_video("old.mp4", seconds=3.2), tiny_video("new.mp4", seconds=3.5, seed=3)
    onboard.add_presenter("erin", old, root=project)
    script = ("import os, signal, sys\nfrom talkinghead import onboard\nonboard.CHECK_SAMPLES = 12\n"
              "replace = os.replace\n"
              "def replace_then_die(src, dst):\n    replace(src, dst)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "onboard.os.replace = replace_then_die\n"
              "onboard.add_presenter('erin', sys.argv[1], force=True, root=sys.argv[2])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(onboard.__file__).parents[1])}
    killed = subprocess.run([sys.executable, "-c", script, str(new), str(project)], env=env, capture_output=True)
    assert killed.returncode == -9 and not (project / "data" / "raw" / "erin").exists()  # only in the backup now

    with pytest.raises(InputError, match="already exists"):  # put back, and complete again
        onboard.add_presenter("erin", new, root=project)
    assert (project / "data" / "raw" / "erin" / "video.mp4").read_bytes() == old.read_bytes()
    assert not [p for p in (project / "data" / "raw").iterdir() if p.name.startswith(".erin.")]


@pytest.mark.parametrize("point", ["backup-made", "moved-aside", "dvc-add"])
def test_add_presenter_stopped_by_a_signal_keeps_the_old_video_and_no_temps(point, tiny_video, project, monkeypatch):
    """SIGTERM or Ctrl-C (an exception in the main thread: cli.Terminated, KeyboardInterrupt) while --force replaces a
    video: just after the backup folder is made, after the old folder is moved into it, during `dvc add`. The old
    video stays, and no staging copy or backup is left (a SIGKILL leaves them to the next run, see above)."""
    old, new = tiny_video("old.mp4", seconds=3.2), tiny_video("new.mp4", seconds=3.5, seed=3)
    onboard.add_presenter("fay", old, root=project)
    before = _snapshot(project)
    if point == "backup-made":
        mkdtemp = onboard.tempfile.mkdtemp

        def mkdtemp_then_stop(prefix, dir):
            made = mkdtemp(prefix=prefix, dir=dir)
            if ".old." in prefix:
                raise KeyboardInterrupt  # before add_presenter holds the name in a variable
            return made

        monkeypatch.setattr(onboard.tempfile, "mkdtemp", mkdtemp_then_stop)
    elif point == "moved-aside":
        replace, calls = os.replace, []

        def replace_then_stop(src, dst):
            replace(src, dst)
            calls.append(dst)
            if len(calls) == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(onboard.os, "replace", replace_then_stop)
    else:
        monkeypatch.setattr(onboard, "_dvc_add", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        onboard.add_presenter("fay", new, force=True, root=project)
    raw = project / "data" / "raw"
    assert (raw / "fay" / "video.mp4").read_bytes() == old.read_bytes()
    assert not [p for p in raw.iterdir() if p.name.startswith(".fay.")]
    assert _snapshot(project) == before


def test_add_presenter_refuses_the_demo_name(tiny_video, project):
    with pytest.raises(InputError, match="demo: reserved for the generated demo presenter: build it with `make demo`"):
        onboard.add_presenter("demo", tiny_video(seconds=3.2), root=project)


@pytest.mark.parametrize("name", ["../x", "bob smith", "Bob", "", "a/b"])
def test_add_presenter_bad_name(name, plain_project):
    before = _snapshot(plain_project)
    with pytest.raises(InputError, match="bad presenter name"):
        onboard.add_presenter(name, plain_project / "missing.mp4", root=plain_project)
    assert _snapshot(plain_project) == before


def test_add_presenter_unusable_video_changes_nothing(tiny_video, plain_project):
    before = _snapshot(plain_project)
    with pytest.raises(InputError, match="video.mp4: not usable: .*no audio track"):
        onboard.add_presenter("carol", tiny_video(audio=None, seconds=3.2), root=plain_project)
    assert _snapshot(plain_project) == before and not (plain_project / "data" / "raw" / "carol").exists()
    assert onboard.add_presenter_main(["carol", str(plain_project / "nope.mp4")]) == 2


def test_head_yaw_sign_and_zero():
    points = np.zeros((478, 3), np.float32)
    points[onboard.CHEEK_LEFT] = (0.3, 0.5, 0.0)
    points[onboard.CHEEK_RIGHT] = (0.7, 0.5, 0.0)
    assert onboard.head_yaw_deg(points) == pytest.approx(0.0)
    points[onboard.CHEEK_RIGHT, 2] = 0.4
    assert onboard.head_yaw_deg(points) == pytest.approx(45.0)
