"""Onboarding a presenter: ``talkinghead check VIDEO`` (is this video usable?) and
``talkinghead add-presenter NAME VIDEO [--force]`` (copy it into data/raw/NAME, track it with DVC, list it in
params.yaml so ``dvc repro`` builds it)."""

from __future__ import annotations

import argparse
import glob
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path, make_readable, remove_stale_temps, stale_temps, temp_prefix
from .errors import InputError
from .paths import PRESENTER_NAME, VIDEO_SUFFIXES, PresenterPaths
from .video import ExtractParams, VideoReader, check_complete, decoded_seconds, probe_video

CHECK_SAMPLES = 50  # frames sampled evenly over the clip
MIN_ONE_FACE_SHARE = 0.8  # exactly one face needed in at least this share of the sampled frames
MIN_FACE_PX = 48  # smaller faces carry too little detail for the crops
SHARP_FACE_PX = 128  # below this the crops are upscaled (usable, but blurrier)
MAX_YAW_RANGE_DEG = 70.0  # larger head turns: a warning (fitting and the GAN see few frontal frames)
# FaceMesh indices of the left-most and right-most face contour points (image left / right, at cheekbone height)
CHEEK_LEFT, CHEEK_RIGHT = 234, 454


@dataclass
class CheckReport:
    path: Path
    duration_s: float
    fps: float
    width: int
    height: int
    rotation: int
    audio_rate: int | None
    audio_channels: int | None
    audio_dbfs: float | None
    sampled_frames: int
    one_face_share: float  # share of sampled frames with exactly one face
    median_face_px: float  # median side of the largest face box, upright original pixels (0 if none)
    yaw_min_deg: float  # head yaw range over the sampled frames (FaceMesh, nan if no face)
    yaw_max_deg: float
    reasons: list[str] = field(default_factory=list)  # why it is not usable (empty = usable)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.reasons

    @property
    def yaw_range_deg(self) -> float:
        return self.yaw_max_deg - self.yaw_min_deg


def head_yaw_deg(points: np.ndarray) -> float:
    """Head yaw from one face's FaceMesh points [478, 3] (normalised x, y, z): the angle of the cheek-to-cheek line
    out of the image plane; 0 = frontal, positive = the face's image-right side farther away."""
    d = points[CHEEK_RIGHT] - points[CHEEK_LEFT]
    return math.degrees(math.atan2(float(d[2]), float(d[0])))


def _sample_faces(reader: VideoReader, n_samples: int, min_confidence: float
                  ) -> tuple[int, list[int], list[float], list[float]]:
    """Decode ``n_samples`` evenly spaced frames; per frame the face count, largest face side and yaw."""
    import cv2

    from .solutions import face_mesh
    from .facedetect import FaceDetector

    indices = np.unique(np.linspace(0, reader.n_frames - 1, min(n_samples, reader.n_frames)).round().astype(int))
    counts: list[int] = []
    sides: list[float] = []
    yaws: list[float] = []
    with FaceDetector(min_confidence) as detector, face_mesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for start in range(0, len(indices), 10):
            for frame in reader.get(indices[start:start + 10]):
                boxes = detector.detect(frame)
                counts.append(len(boxes))
                if not len(boxes):
                    continue
                x, y, w, h, _ = boxes[np.argmax(boxes[:, 2])]
                sides.append(float(max(w, h)))
                side = 2.0 * max(w, h)
                height, width = frame.shape[:2]
                x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
                x1, y1 = int(min(width, x0 + side)), int(min(height, y0 + side))
                crop = cv2.resize(frame[y0:y1, x0:x1], (256, 256), interpolation=cv2.INTER_AREA)
                result = mesh.process(crop)
                if result.multi_face_landmarks:
                    pts = np.array([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
                    yaws.append(head_yaw_deg(pts))
    return len(indices), counts, sides, yaws


def check_video(path: str | Path, params: ExtractParams, n_samples: int | None = None) -> CheckReport:
    """Inspect a candidate presenter video (``params``: the extract group). Raises InputError only for files that are
    not readable videos at all; everything else ends up in ``reasons`` (not usable) or ``warnings``."""
    from .audio import decode_audio, rms_dbfs

    path = Path(path)
    info = probe_video(path)
    reader = VideoReader(path, info.rotation)
    reasons: list[str] = []
    warnings: list[str] = []
    # the length that counts is what decodes: a truncated file's header still declares the whole clip
    duration = decoded_seconds(reader)
    try:
        check_complete(info, reader)
    except InputError as exc:
        reasons.append(exc.reason)
    if duration < params.min_seconds:
        reasons.append(f"clip is {duration:.2f} s long, shorter than extract.min_seconds = {params.min_seconds} s")
    dbfs = None
    if not info.has_audio:
        reasons.append("no audio track (a presenter needs speech to train the lip model)")
    else:
        try:
            dbfs = rms_dbfs(decode_audio(path, params.audio_rate))
            if dbfs < params.silence_dbfs:
                warnings.append(f"audio is (nearly) silent ({dbfs:.1f} dBFS RMS); the lip model needs speech")
        except InputError as exc:
            reasons.append(exc.reason)
    n, counts, sides, yaws = _sample_faces(reader, n_samples or CHECK_SAMPLES, params.min_face_confidence)
    one_face = sum(c == 1 for c in counts) / max(1, n)
    median_face = float(np.median(sides)) if sides else 0.0
    if not any(counts):
        reasons.append(f"no face found in {n} sampled frames")
    elif one_face < MIN_ONE_FACE_SHARE:
        several = sum(c > 1 for c in counts)
        reasons.append(f"exactly one face in only {one_face:.0%} of {n} sampled frames "
                       f"({several} with several faces, {counts.count(0)} with none)")
    if sides and median_face < MIN_FACE_PX:
        reasons.append(f"face too small ({median_face:.0f} px; at least {MIN_FACE_PX} px needed)")
    elif sides and median_face < SHARP_FACE_PX:
        warnings.append(f"small face ({median_face:.0f} px): crops will be upscaled and blurrier")
    yaw_min = min(yaws) if yaws else float("nan")
    yaw_max = max(yaws) if yaws else float("nan")
    if yaws and yaw_max - yaw_min > MAX_YAW_RANGE_DEG:
        warnings.append(f"large head turns (yaw range {yaw_max - yaw_min:.0f} degrees)")
    return CheckReport(path=path, duration_s=duration, fps=info.fps, width=info.width, height=info.height,
                       rotation=info.rotation, audio_rate=info.audio_rate, audio_channels=info.audio_channels,
                       audio_dbfs=dbfs, sampled_frames=n, one_face_share=one_face, median_face_px=median_face,
                       yaw_min_deg=yaw_min, yaw_max_deg=yaw_max, reasons=reasons, warnings=warnings)


def format_report(report: CheckReport) -> str:
    """Human-readable summary, one fact per line, ending with the verdict."""
    audio = ("none" if report.audio_rate is None else
             f"{report.audio_rate} Hz, {report.audio_channels} channel(s)"
             + ("" if report.audio_dbfs is None else f", {report.audio_dbfs:.1f} dBFS RMS"))
    lines = [
        f"video:      {report.path}",
        f"duration:   {report.duration_s:.2f} s at {report.fps:.2f} fps",
        f"size:       {report.width}x{report.height} (upright; rotation {report.rotation} degrees)",
        f"audio:      {audio}",
        f"one face:   {report.one_face_share:.0%} of {report.sampled_frames} sampled frames",
        f"face size:  {report.median_face_px:.0f} px (median)",
        f"head yaw:   {report.yaw_min_deg:.0f} to {report.yaw_max_deg:.0f} degrees" if not math.isnan(report.yaw_min_deg)
        else "head yaw:   n/a (no landmarks)",
    ]
    lines += [f"warning:    {w}" for w in report.warnings]
    lines += [f"problem:    {r}" for r in report.reasons]
    lines.append("usable:     yes" if report.usable else "usable:     NO")
    return "\n".join(lines)


def extract_params(root: Path) -> ExtractParams:
    """The extract group of the project at ``root``; outside a project (``check`` before onboarding) the one of
    this source checkout, so the thresholds are the pipeline's own, never a second set of defaults."""
    from .params import load_config

    params_file = root / "params.yaml"
    if not params_file.exists():
        params_file = Path(__file__).resolve().parents[2] / "params.yaml"
    return load_config(ExtractParams, "extract", params_file)


def add_to_params(params_file: Path, name: str) -> bool:
    """Append ``name`` to the ``presenters`` list of params.yaml, keeping everything else byte for byte (comments
    included). False if it is already listed. A block list is edited as text; other layouts go through ruamel.yaml's
    round-trip mode (which also keeps comments)."""
    import re

    import yaml

    text = params_file.read_text()
    current = (yaml.safe_load(text) or {}).get("presenters") or []
    if name in current:
        return False
    block = re.search(r"^presenters:[ \t]*(#.*)?\n((?:[ \t]+-[^\n]*\n|[ \t]*#[^\n]*\n)+)", text, re.MULTILINE)
    if block:
        items = [line for line in block.group(2).splitlines(keepends=True) if line.lstrip().startswith("-")]
        indent = items[-1][: len(items[-1]) - len(items[-1].lstrip())]
        end = block.start(2) + block.group(2).rindex(items[-1]) + len(items[-1])
        text = text[:end] + f"{indent}- {name}\n" + text[end:]
        if (yaml.safe_load(text) or {}).get("presenters") == [*current, name]:
            with atomic_path(params_file) as tmp:
                tmp.write_text(text)
            return True
    from ruamel.yaml import YAML

    ruamel = YAML()
    ruamel.preserve_quotes = True
    data = ruamel.load(params_file.read_text())
    if data.get("presenters") is None:
        data["presenters"] = []
    data["presenters"].append(name)
    with atomic_path(params_file) as tmp:
        with open(tmp, "w") as f:
            ruamel.dump(data, f)
    return True


def _dvc_add(root: Path, target: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "dvc", "add", str(target)], cwd=root, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`dvc add {target}` failed in {root}:\n{result.stderr.strip() or result.stdout.strip()}")


def _recover_leftovers(raw_dir: Path) -> None:
    """Undo what a killed add-presenter of this presenter left: its staging copy (perhaps partial) goes; a backup of
    the previous video (killed between moving it out and the new one in) goes back in place."""
    for leftover in stale_temps(raw_dir):
        backup = leftover / raw_dir.name
        if backup.is_dir() and not raw_dir.exists():
            os.replace(backup, raw_dir)
    remove_stale_temps(raw_dir)


def _remove_own_temps(raw_dir: Path) -> None:
    """The same for this process's own staging copy and backup, however add_presenter ends (error, Ctrl-C, SIGTERM at
    any point): found by name, so one created just before the interruption, not yet held in a variable, goes too."""
    for entry in raw_dir.parent.glob(glob.escape(temp_prefix(raw_dir)) + "*"):
        backup = entry / raw_dir.name
        if backup.is_dir() and not raw_dir.exists():  # stopped between moving the old video out and the new one in
            os.replace(backup, raw_dir)
        shutil.rmtree(entry, ignore_errors=True)


def add_presenter(name: str, video: str | Path, force: bool = False, root: str | Path = ".") -> str:
    """Add a presenter: check the video, copy it to data/raw/NAME/video<ext>, `dvc add` it and list NAME in
    params.yaml. Returns the message for the user. Raises InputError (nothing changed) for bad input.

    The copy goes to a temporary folder first; an existing presenter (``force``) is replaced only after the copy and
    restored if ``dvc add`` fails, so a failure never loses the old video. A presenter folder that is not both tracked
    (data/raw/NAME.dvc) and listed in params.yaml is an onboarding that was killed part-way: it is redone.
    """
    root = Path(root)
    video = Path(video)
    if not PRESENTER_NAME.fullmatch(name or ""):
        raise InputError(name, "bad presenter name: use 1-40 lower-case letters, digits, '-' or '_', "
                               "starting with a letter or digit (no spaces, no slashes)")
    if not video.is_file():
        raise InputError(video, "no such file")
    if video.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(video, f"unsupported video file type {video.suffix!r} (use one of {', '.join(VIDEO_SUFFIXES)})")
    params_file = root / "params.yaml"
    if not params_file.is_file():
        raise InputError(params_file, "missing; run add-presenter in the project root (the folder with dvc.yaml)")
    from .params import load_params
    from .synthesis import DEMO_PRESENTER

    if name == DEMO_PRESENTER:  # its folder is the demo_presenter stage's output, which `dvc add` cannot take over
        raise InputError(name, "reserved for the generated demo presenter: build it with `make demo` "
                               "(or `talkinghead repro`), or choose another name")
    paths = PresenterPaths.of(name, root)
    _recover_leftovers(paths.raw_dir)
    dvc_file = paths.raw_dir.with_name(f"{name}.dvc")
    missing = [what for what, there in ((f"no {dvc_file}", dvc_file.is_file()),
                                        ("not in params.yaml presenters",
                                         name in (load_params(params_file).get("presenters") or [])))
               if not there]
    interrupted = paths.raw_dir.exists() and bool(missing)
    if paths.raw_dir.exists() and not force and not interrupted:
        raise InputError(paths.raw_dir, f"presenter {name!r} already exists; use --force to replace its video")
    report = check_video(video, extract_params(root))
    if not report.usable:
        raise InputError(video, "not usable: " + "; ".join(report.reasons))

    paths.raw_dir.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(paths.raw_dir) + "new.", dir=paths.raw_dir.parent))
        make_readable(staging)  # it becomes data/raw/NAME
        shutil.copyfile(video, staging / f"video{video.suffix.lower()}")
        if paths.raw_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=temp_prefix(paths.raw_dir) + "old.",
                                           dir=paths.raw_dir.parent)) / name
            os.replace(paths.raw_dir, backup)
        os.replace(staging, paths.raw_dir)
        try:
            _dvc_add(root, paths.raw_dir.relative_to(root))
        except BaseException:
            shutil.rmtree(paths.raw_dir, ignore_errors=True)
            if backup is not None:
                os.replace(backup, paths.raw_dir)
                backup = None
            raise
    finally:
        _remove_own_temps(paths.raw_dir)
    add_to_params(params_file, name)
    notes = "".join(f"\nwarning: {w}" for w in report.warnings)
    redone = (f"{paths.raw_dir} was left by an interrupted add-presenter ({', '.join(missing)}): "
              f"added again from {video}.\n" if interrupted else "")
    return (f"{redone}Added presenter {name!r}: {paths.raw_dir / ('video' + video.suffix.lower())} "
            f"({report.duration_s:.1f} s, {report.width}x{report.height}).{notes}\n"
            f"Next: `git add {paths.raw_dir.relative_to(root)}.dvc params.yaml` and run `dvc repro` "
            f"to build it.")


def check_main(argv: list[str] | None = None) -> int:
    """`talkinghead check VIDEO`: print the report; exit status 0 if usable, 2 if not."""
    parser = argparse.ArgumentParser(prog="talkinghead check", description="Check whether a video can become a presenter.")
    parser.add_argument("video", type=Path)
    args = parser.parse_args(argv)
    try:
        report = check_video(args.video, extract_params(Path(".")))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if not report.usable:  # the report is for reading; this line is the verdict in the form every command uses
        print(f"error: {InputError(report.path, 'not usable: ' + '; '.join(report.reasons))}", file=sys.stderr)
        return 2
    return 0


def add_presenter_main(argv: list[str] | None = None) -> int:
    """`talkinghead add-presenter NAME VIDEO [--force]`."""
    parser = argparse.ArgumentParser(prog="talkinghead add-presenter",
                                     description="Add a presenter video to the project (data/raw/NAME, DVC, params.yaml).")
    parser.add_argument("name", help="presenter name: lower-case letters, digits, '-' or '_'")
    parser.add_argument("video", type=Path)
    parser.add_argument("--force", action="store_true", help="replace an existing presenter's video")
    args = parser.parse_args(argv)
    try:
        print(add_presenter(args.name, args.video, force=args.force))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
