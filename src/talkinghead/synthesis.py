"""A trained presenter and crop-level speech synthesis: the library half of ``talkinghead speak``, shared with
``talkinghead stream`` and the evaluate stage (which runs the same synthesis on the held-out tail, so it scores exactly
what speak makes).

- ``SpeakParams`` / ``SynthesisParams``: the params groups they share;
- ``check_presenter``: the presenter exists and is trained (one-line InputError naming the stage to run otherwise);
- ``load_presenter``: its crops, landmarks and fitted head parameters, loaded once;
- ``pingpong_schedule`` / ``closed_mouth_frame``: which source frame (head pose, background) each output frame uses;
- ``CropSynthesizer``: render + composite + GAN for batches of (expression, source frame);
- ``RawFrames``: the presenter's full original frames, for the paste-back.
"""

from __future__ import annotations

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
    window_margin: int  # px around the batch's lower-face masks the GAN runs on (mask_window); -1 = whole crop
    paste: PasteConfig


@dataclass(frozen=True)
class SynthesisParams:
    """The params groups the crop synthesis shares with the composites stage (so speak draws what the GAN saw)."""

    head_model: HeadModelParams
    render: RenderParams
    composites: CompositesParams
    split: SplitParams

    @classmethod
    def load(cls, path: str | Path, params: dict | None = None) -> "SynthesisParams":
        """The groups from ``path``, or from its already loaded (e.g. overridden with speak -S) ``params``."""
        from .compositing import CompositesParams
        from .headmodel import HeadModelParams
        from .render import RenderParams
        from .split import SplitParams

        params = load_params(path) if params is None else params
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

    def __init__(self, presenter: Presenter, params: SynthesisParams, window_margin: int, device: str | None = None):
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
        self.window_margin = window_margin  # speak.window_margin: -1 = the GAN sees the whole crop
        self.bank = None  # retrieved mouths (gan/retrieval.py): only for a generator trained with them
        if self.generator.config.use_retrieval:
            from .gan.retrieval import MouthBank, RetrievalState

            self.bank = MouthBank.load(presenter.paths.mouth_bank)
            if len(self.bank.frames) and int(self.bank.frames.max()) >= presenter.n_frames:
                raise InputError(presenter.paths.mouth_bank, f"refers to frame {int(self.bank.frames.max())} but the "
                                                             f"presenter has {presenter.n_frames}; retrain its GAN")
            self.state = RetrievalState()  # the default sequence (speak's one stream of frames)

    def synthesize(self, expression: np.ndarray, source: np.ndarray, state=None) -> tuple[np.ndarray, np.ndarray]:
        """expression float32 [B, 53], source frame indices int [B] -> (generated crops uint8 [B, S, S, 3],
        lower-face masks float32 [B, S, S]). ``state``: the retrieval.RetrievalState of the frame sequence this batch
        continues (default: the synthesizer's own, i.e. one sequence across calls)."""
        generated, _, masks = self.synthesize_with_composites(expression, source, state)
        return generated, masks

    def synthesize_with_composites(self, expression: np.ndarray, source: np.ndarray,
                                   state=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As ``synthesize``, also returning the composites the generator read: (generated, composites, masks)."""
        import torch

        from .gan import generate, mask_window
        from .render import project_landmarks, render_parameters
        from .compositing import composite_lower_faces

        fitted = self.presenter.fitted
        size = self.presenter.crop_size
        params = {k: torch.from_numpy(fitted[k][source]).to(self.device) for k in PARAM_KEYS}
        params["expression"] = torch.from_numpy(np.asarray(expression, np.float32)).to(self.device)
        rendered = render_parameters(self.model, self.renderer, params)
        real = np.asarray(self.presenter.crops[np.sort(source)])[np.argsort(np.argsort(source))]  # memmap reads in order
        moved_from = project_landmarks(self.model, dict(params, expression=torch.from_numpy(
            fitted["expression"][source]).to(self.device)), size)  # [B, L, 2]: where each source frame has them
        # exactly the composites stage's composite (what the GAN was trained on); masks: the lower-face masks [B, S, S]
        masks, _, comps = composite_lower_faces(real, rendered.images, rendered.mask, self.presenter.lmk_crop[source],
                                                moved_from, rendered.landmarks, self.composite_params)
        window = None if self.window_margin < 0 else mask_window(masks, self.window_margin,
                                                                  self.generator.config.multiple)
        mouths = painted = None
        if self.bank is not None:  # the generator also reads retrieved mouths, exactly as in training
            from .gan.retrieval import lip_geometry, retrieved_inputs

            geometry = lip_geometry(self.model, {k: v.cpu().numpy() for k, v in params.items()}, size)
            picks = self.bank.retrieve(geometry.keys, self.state if state is None else state)
            comps, mouths, painted = retrieved_inputs(comps, self.presenter.crops, self.bank, picks, geometry.lips,
                                                      geometry.inner if self.generator.config.paint_mouth else None)
        generated = generate(self.generator, comps, None, batch_size=len(source), window=window, retrieved=mouths,
                             painted=painted)
        return generated, comps, masks


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
        # [N, 3] crop box (x0, y0, side) of each timeline frame in original pixels: where its crop goes back
        self.boxes = presenter.table[["crop_x0", "crop_y0", "crop_side"]].to_numpy(np.float64)

    def get(self, frames: np.ndarray) -> np.ndarray:
        """Timeline frame indices [B] -> uint8 [B, H, W, 3] upright original frames (writable)."""
        batch = self.reader.get(self.raw_index[frames])
        width, height = self.presenter.orig_size
        if batch.shape[1:3] != (height, width):
            import cv2

            batch = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in batch])
        return batch

    def paste(self, frames: np.ndarray, source: np.ndarray, crops: np.ndarray, masks: np.ndarray,
              config: PasteConfig) -> np.ndarray:
        """Blend generated crops uint8 [B, S, S, 3] under their lower-face masks float32 [B, S, S] into ``frames``
        (``get(source)``: uint8 [B, H, W, 3]), in place; returns ``frames``."""
        from .paste import paste_back

        for frame, crop, mask, src in zip(frames, crops, masks, source):
            paste_back(frame, crop, tuple(self.boxes[src]), mask, config, out=frame)
        return frames
