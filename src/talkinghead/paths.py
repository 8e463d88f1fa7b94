"""Every artifact path of the pipeline, in one place.

dvc.yaml spells the same paths on its command lines; tests/test_core.py checks the two agree.
All paths are relative to the project root (the directory holding dvc.yaml), which is where DVC runs stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PRESENTER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

DATA = Path("data")
RAW = DATA / "raw"
INTERIM = DATA / "interim"
# Artifacts downstream of the (shared) lip model live apart from data/interim: train_lip depends on the whole
# data/interim folder (every presenter's features and fits), so nothing it feeds may be written there (DVC cycle).
PROCESSED = DATA / "processed"
MODELS = Path("models")
REPORTS = Path("reports")
ASSETS = Path("assets")

# The shipped open head model (built by `python -m talkinghead.headmodel.build_open`).
OPEN_HEAD_MODEL = ASSETS / "open_head_model.npz"
# The lip model is shared by all presenters (presenter embedding), so it lives outside any presenter's folder.
LIP_CHECKPOINT = MODELS / "lip" / "lip.pt"
# Training curves and summary of the (shared) lip model: DVC plots / metrics.
LIP_VAL_LOSS = REPORTS / "lip" / "val_loss.csv"
LIP_TRAIN_METRICS = REPORTS / "lip" / "train_metrics.json"
# The GAN prior (stage gan_prior): every presenter's GAN starts from these weights; its resumable training state.
GAN_PRIOR = MODELS / "gan_prior" / "prior.pt"
GAN_PRIOR_STATE = MODELS / "gan_prior" / "train_state.pt"
# The footage sync detector (stage sync_model, fitted on the generated demo presenter; talkinghead.avsync).
SYNC_DETECTOR = MODELS / "sync" / "detector.npz"
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class PresenterPaths:
    """Where one presenter's artifacts live. ``PresenterPaths.of("demo").frames`` etc."""

    name: str
    raw_dir: Path
    interim: Path
    processed: Path
    report_dir: Path
    gan_dir: Path

    @classmethod
    def of(cls, name: str, root: str | Path = ".") -> "PresenterPaths":
        root = Path(root)
        return cls(
            name=name,
            raw_dir=root / RAW / name,
            interim=root / INTERIM / name,
            processed=root / PROCESSED / name,
            report_dir=root / REPORTS,
            gan_dir=root / MODELS / "gan" / name,
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> "PresenterPaths":
        """From a presenter folder given on a stage's command line, e.g. ``data/interim/demo`` or ``data/raw/demo``:
        the name is its last component and the project root three levels up."""
        folder = Path(folder)
        return cls.of(folder.name, root=folder.parent.parent.parent)

    # demo (only the generated demo presenter has it)
    @property
    def visemes(self) -> Path:
        """Ground-truth mouth shape per frame of a generated presenter (schemas.VISEMES), next to its video."""
        return self.raw_dir / "visemes.parquet"

    # extract
    @property
    def frames(self) -> Path:
        """uint8 tensor file (.npy) [N, S, S, 3], RGB face-centred crops."""
        return self.interim / "frames.npy"

    @property
    def frames_table(self) -> Path:
        return self.interim / "frames.parquet"

    @property
    def audio(self) -> Path:
        """16 kHz mono 16-bit PCM WAV."""
        return self.interim / "audio.wav"

    # landmarks
    @property
    def landmarks(self) -> Path:
        return self.interim / "landmarks.parquet"

    # sync
    @property
    def sync(self) -> Path:
        """JSON: the footage's measured audio offset and the one applied (talkinghead.avsync.SyncEstimate)."""
        return self.interim / "sync.json"

    # fit
    @property
    def flame(self) -> Path:
        return self.interim / "flame.parquet"

    # align
    @property
    def features(self) -> Path:
        """float32 tensor file (.npy) [N, context, n_mels]."""
        return self.interim / "features.npy"

    @property
    def features_table(self) -> Path:
        return self.interim / "features.parquet"

    # lip model outputs
    @property
    def lip_coeffs(self) -> Path:
        return self.processed / "lip_coeffs.parquet"

    # composites
    @property
    def composites(self) -> Path:
        """uint8 tensor file (.npy) [N, S, S, 3]."""
        return self.processed / "composites.npy"

    @property
    def composites_table(self) -> Path:
        return self.processed / "composites.parquet"

    @property
    def gan_checkpoint(self) -> Path:
        return self.gan_dir / "gan.pt"

    @property
    def mouth_bank(self) -> Path:
        """Training frames the generator retrieves mouths from (rows, mouth-shape keys, lips; gan/retrieval.py)."""
        return self.gan_dir / "mouth_bank.npz"

    @property
    def gan_train_state(self) -> Path:
        """Resumable GAN training state (networks, optimizers, RNG, step); DVC `persist: true` keeps it."""
        return self.gan_dir / "train_state.pt"

    def report(self, stage: str) -> Path:
        """reports/<stage>/<name>/: plots, overlays and metrics.json of one stage for this presenter."""
        return self.report_dir / stage / self.name

    def raw_video(self) -> Path:
        """The single raw video in data/raw/<name>/ (any common container)."""
        from .errors import InputError

        if not self.raw_dir.is_dir():
            raise InputError(self.raw_dir, "no such presenter folder; add one with `talkinghead add-presenter`")
        videos = sorted(p for p in self.raw_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if len(videos) != 1:
            raise InputError(self.raw_dir, f"expected exactly one video ({', '.join(VIDEO_SUFFIXES)}), found {len(videos)}")
        return videos[0]
