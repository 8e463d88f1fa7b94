"""A presenter's recording as test speech for other faces: what was said, and how the real speaker's mouth moved.

Stage crossdrive (head-model mouths) and evaluate (MediaPipe on the generated video) both drive a face with another
presenter's speech and compare with that speaker's real mouth; this is the one place that reads such a clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import schemas
from .avsync import footage_audio
from .errors import InputError
from .lipmetrics import mouth_opening_ratio
from .paths import PresenterPaths
from .split import heldout_start

SAMPLE_RATE = 16000


@dataclass
class SpeakerClip:
    """Frames [start, N) of one presenter's recording."""

    name: str
    synthetic: bool  # a generated presenter (the demo): its mouth is a function of the phonemes
    fps: float
    start: int  # first frame of the clip on the presenter's timeline
    audio: np.ndarray  # float32 [T] at 16 kHz, exactly the clip's frames
    real_opening: np.ndarray  # float32 [n] inner-lip gap / eye-corner distance (lipmetrics.mouth_opening_ratio)
    voiced: np.ndarray  # bool [n]: Silero VAD calls the frame speech

    @property
    def frames(self) -> int:
        return len(self.real_opening)


def load_speaker_clip(paths: PresenterPaths, heldout_fraction: float | None,
                      vad_threshold: float = 0.5) -> SpeakerClip:
    """The held-out tail of ``paths``' recording (``heldout_fraction`` as in split), or all of it (None)."""
    from .speech.vad import voiced_frames

    frames = schemas.read_table(paths.frames_table, schemas.FRAMES)
    landmarks = schemas.read_table(paths.landmarks, schemas.LANDMARKS)
    n = len(frames)
    if len(landmarks) != n:
        raise InputError(paths.landmarks, f"{len(landmarks)} rows but {paths.frames_table} has {n}; rerun landmarks")
    start = 0 if heldout_fraction is None else heldout_start(n, heldout_fraction)
    fps = float(frames["fps"].iloc[0])
    (samples, _), rate = footage_audio(paths.audio, paths.sync, fps), SAMPLE_RATE  # on the video's clock (stage sync)
    lo, hi = int(round(start / fps * rate)), int(round(n / fps * rate))
    audio = samples[lo:hi]
    audio = np.pad(audio, (0, hi - lo - len(audio))).astype(np.float32)  # silence past the end of the file
    lmk = schemas.column_array(landmarks, "lmk_crop").reshape(n, schemas.N_LANDMARKS, 3)  # [N, 478*3] -> [N, 478, 3]
    return SpeakerClip(paths.name, paths.visemes.is_file(), fps, start, audio, mouth_opening_ratio(lmk[start:]),
                       voiced_frames(audio, n - start, fps, vad_threshold))
