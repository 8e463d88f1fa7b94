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
from typing import TYPE_CHECKING, Any

import numpy as np

from . import facemesh
from .errors import InputError
from .params import load_config, load_params
from .paste import PasteConfig
from .paths import INTERIM, LIP_CHECKPOINT, PRESENTER_NAME, PresenterPaths

# The generated demo presenter: its raw folder is the demo_presenter stage's output, built by `make demo`.
DEMO_PRESENTER = "demo"

if TYPE_CHECKING:  # heavy (torch, OpenGL): imported where used, after the input checks
    from .compositing import CompositesParams
    from .headmodel import HeadModelParams
    from .render import RenderParams
    from .split import SplitParams

# The central 7 facing inner-lip pairs (upper, lower): "mouth opening" from landmarks. The two pairs nearest the
# corners are left out: they barely move and FaceMesh jitters most there.
INNER_LIP_PAIRS = tuple(pair for pair in facemesh.INNER_LIP_PAIRS if pair not in ((191, 95), (415, 324)))

@dataclass(frozen=True)
class SpeakParams:
    """params.yaml's ``speak`` group."""

    batch_size: int  # run time only: frames rendered / generated / pasted / encoded per step (the streaming unit)
    audio_rate: int  # sample rate of the AAC track in the output
    silence_dbfs: float  # quieter audio (RMS) is refused as silent
    crf: int
    preset: str
    paste: PasteConfig


@dataclass(frozen=True)
class SynthesisParams:
    """The params groups the crop synthesis shares with the composites stage (so speak draws what the GAN saw)."""

    head_model: HeadModelParams
    render: RenderParams
    composites: CompositesParams
    split: SplitParams

    @classmethod
    def load(cls, path: str | Path) -> "SynthesisParams":
        from .compositing import CompositesParams
        from .headmodel import HeadModelParams
        from .render import RenderParams
        from .split import SplitParams

        params = load_params(path)
        return cls(load_config(HeadModelParams, "head_model", path, params),
                   load_config(RenderParams, "render", path, params),
                   load_config(CompositesParams, "composites", path, params),
                   load_config(SplitParams, "split", path, params))


# ---------------------------------------------------------------------------------------------------------------
# presenters and their artifacts

def known_presenters(root: str | Path = ".") -> list[str]:
    """Presenters named in params.yaml ``presenters`` plus any folder under data/interim."""
    root = Path(root)
    names: set[str] = set()
    try:
        names.update(str(n) for n in (load_params(root / "params.yaml").get("presenters") or []))
    except InputError:
        pass
    interim = root / INTERIM
    if interim.is_dir():
        names.update(p.name for p in interim.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def required_artifacts(paths: PresenterPaths, root: str | Path = ".") -> list[tuple[Path, str]]:
    """(artifact, DVC stage that makes it) for everything speak reads, in pipeline order."""
    n = paths.name
    return [
        (paths.frames, f"extract@{n}"),
        (paths.frames_table, f"extract@{n}"),
        (paths.landmarks, f"landmarks@{n}"),
        (paths.flame, f"fit@{n}"),
        (Path(root) / LIP_CHECKPOINT, "train_lip"),
        (paths.gan_checkpoint, f"train_gan@{n}"),
    ]


def check_presenter(name: str, root: str | Path = ".", need_raw: bool = True, need_models: bool = True
                    ) -> PresenterPaths:
    """PresenterPaths of a presenter that exists and is trained; InputError (one line) otherwise."""
    root = Path(root)
    known = known_presenters(root)
    paths = PresenterPaths.of(name, root)
    if not PRESENTER_NAME.match(name) or (name not in known and not paths.raw_dir.is_dir()):
        listing = f"known presenters: {', '.join(known)}; " if known else ""
        raise InputError(None, f"unknown presenter {name!r}; {listing}add one with "
                               "`talkinghead add-presenter NAME VIDEO`")

    # the demo presenter is built by the pipeline itself (stage demo_presenter): adding a video is never the fix
    build = "`make demo` (or `talkinghead repro`)" if name == DEMO_PRESENTER else f"`dvc repro train_gan@{name}`"
    if need_raw and not paths.raw_dir.is_dir():
        dvc_file = paths.raw_dir.with_name(f"{name}.dvc")
        if name == DEMO_PRESENTER:
            raise InputError(paths.raw_dir, f"missing: the demo presenter is not built yet; run {build}")
        if dvc_file.is_file():  # added, but this clone has not fetched the video
            raise InputError(paths.raw_dir, f"missing: presenter {name!r}'s video is tracked in {dvc_file} but not "
                                            f"here; run `dvc pull` (or `dvc checkout`), then {build}")
        raise InputError(paths.raw_dir, f"presenter {name!r} has no video yet; add it with "
                                        f"`talkinghead add-presenter {name} VIDEO`")
    for artifact, stage in required_artifacts(paths, root):
        if not artifact.exists() and (need_models or artifact.suffix != ".pt"):
            raise InputError(artifact, f"missing: presenter {name!r} is not trained yet (stage {stage} has not "
                                       f"run); run {build}")
    return paths


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
# frame schedule

def pingpong_schedule(n_out: int, start: int, lo: int, hi: int) -> np.ndarray:
    """Source frame for each of ``n_out`` output frames: from ``start`` forward to ``hi - 1``, back to ``lo``,
    forward again, ... (each end frame shown once per turn). int64 [n_out], all in [lo, hi)."""
    if not lo <= start < hi:
        raise ValueError(f"start {start} outside [{lo}, {hi})")
    length = hi - lo
    if length == 1:
        return np.full(n_out, lo, np.int64)
    period = 2 * (length - 1)  # lo..hi-1..lo+1, then repeats
    phase = (np.arange(n_out, dtype=np.int64) + (start - lo)) % period
    return lo + np.where(phase < length, phase, period - phase)


def mouth_opening_from_landmarks(lmk: np.ndarray) -> np.ndarray:
    """Inner-lip gap per frame from FaceMesh landmarks [N, 478, 2 or 3] (pixels): mean |y_upper - y_lower| [N]."""
    upper = np.array([u for u, _ in INNER_LIP_PAIRS])
    lower = np.array([d for _, d in INNER_LIP_PAIRS])
    return np.abs(lmk[:, lower, 1] - lmk[:, upper, 1]).mean(axis=1)


def closed_mouth_frame(lmk: np.ndarray, stop: int, detected: np.ndarray | None = None) -> int:
    """Index in [0, stop) with the smallest inner-lip gap (frames where FaceMesh found a face, if any)."""
    opening = mouth_opening_from_landmarks(lmk[:stop])
    if detected is not None and detected[:stop].any():
        opening = np.where(detected[:stop], opening, np.inf)
    return int(np.argmin(opening))


# ---------------------------------------------------------------------------------------------------------------
# crop synthesis (shared with the evaluate stage)

PARAM_KEYS = ("shape", "expression", "texture", "lighting", "camera", "pose")


@dataclass
class Presenter:
    """What speak needs from a trained presenter, loaded once."""

    paths: PresenterPaths
    fps: float
    crop_size: int
    orig_size: tuple[int, int]      # (width, height), upright original frames
    crops: np.ndarray               # uint8 [N, S, S, 3], memory-mapped
    table: Any                      # frames.parquet DataFrame
    lmk_crop: np.ndarray            # float32 [N, 478, 3]
    detected: np.ndarray            # bool [N]
    fitted: dict[str, np.ndarray]   # PARAMETERS columns, float32 [N, k]
    heldout_start: int

    @property
    def n_frames(self) -> int:
        return len(self.crops)


def load_presenter(paths: PresenterPaths, heldout_fraction: float) -> Presenter:
    from .schemas import FRAMES, LANDMARKS, N_LANDMARKS, PARAMETERS, column_array, read_table
    from .split import heldout_start
    from .tensorfile import load_tensor

    table = read_table(paths.frames_table, FRAMES)
    crops = load_tensor(paths.frames, np.uint8, (None, None, 3), n=len(table))
    landmarks = read_table(paths.landmarks, LANDMARKS)
    fit = read_table(paths.flame, PARAMETERS)
    for name, df in (("landmarks", landmarks), ("flame", fit)):
        if len(df) != len(table):
            raise InputError(paths.landmarks if name == "landmarks" else paths.flame,
                             f"{len(df)} rows but frames.parquet has {len(table)}; rerun its stage")
    return Presenter(
        paths=paths, fps=float(table["fps"].iloc[0]), crop_size=int(crops.shape[1]),
        orig_size=(int(table["orig_width"].iloc[0]), int(table["orig_height"].iloc[0])),
        crops=crops, table=table, lmk_crop=column_array(landmarks, "lmk_crop", (N_LANDMARKS, 3)),
        detected=landmarks["detected"].to_numpy(bool),
        fitted={k: column_array(fit, k) for k in PARAM_KEYS},
        heldout_start=heldout_start(len(table), heldout_fraction),
    )


class CropSynthesizer:
    """Render + composite + GAN for batches of (expression, source frame): the crop-level half of speak."""

    def __init__(self, presenter: Presenter, params: SynthesisParams, device: str | None = None):
        import torch

        from .gan import load_generator
        from .headmodel import load_head_model
        from .render import Renderer

        self.presenter = presenter
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_head_model(params.head_model).to(self.device).eval()
        self.renderer = Renderer(self.model.faces.cpu().numpy(), self.model.num_vertices, presenter.crop_size,
                                 params.render)
        self.generator = load_generator(presenter.paths.gan_checkpoint, self.device, presenter.crop_size)
        self.composite_params = params.composites

    def masks(self, source: np.ndarray) -> np.ndarray:
        """Lower-face masks of the source frames, float32 [B, S, S]."""
        from .compositing import lower_face_mask

        return np.stack([lower_face_mask(self.presenter.lmk_crop[i], self.presenter.crop_size, self.composite_params)
                         for i in source])

    def synthesize(self, expression: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """expression float32 [B, 53], source frame indices int [B] -> (generated crops uint8 [B, S, S, 3],
        lower-face masks float32 [B, S, S])."""
        import torch

        from .gan import generate
        from .render import render_parameters
        from .compositing import composite, coverage_mask, fill_render_pinholes

        fitted = self.presenter.fitted
        size = self.presenter.crop_size
        params = {k: torch.from_numpy(fitted[k][source]).to(self.device) for k in PARAM_KEYS}
        params["expression"] = torch.from_numpy(np.asarray(expression, np.float32)).to(self.device)
        rendered = render_parameters(self.model, self.renderer, params)
        real = np.asarray(self.presenter.crops[np.sort(source)])[np.argsort(np.argsort(source))]  # memmap reads in order
        masks = self.masks(source)
        # exactly the composites stage's blend (what the GAN was trained on): lower-face mask x render coverage
        blend = masks * np.stack([coverage_mask(c, size, self.composite_params) for c in rendered.mask])
        renders = np.stack([fill_render_pinholes(image, coverage, size, self.composite_params)
                            for image, coverage in zip(rendered.images, rendered.mask)])
        comps = composite(renders, real, blend)
        return generate(self.generator, comps, None, batch_size=len(source)), masks


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

    pres = load_presenter(paths, synthesis.split.heldout_fraction)
    n_out = n_frames_for_audio(len(samples), 16000, pres.fps)
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
