"""Time split of a presenter's timeline.

The last ``split.heldout_fraction`` of every presenter's frames is held out of ALL training (lip model and GAN), so
the evaluation measures generalisation to unseen speech. The split is by time, never by random frames: neighbouring
frames are nearly identical, so a random split would leak the test set into training.

Layout of one timeline of ``n`` frames::

    [0, validation_start)                  training frames
    [validation_start, heldout_start)      validation frames (inside the training part; used for early stopping)
    [heldout_start, n)                     held-out tail (never trained on, never used for model selection)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitParams:
    """params.yaml's ``split`` group."""

    heldout_fraction: float  # the last fraction of every presenter's timeline is never trained on


def heldout_start(n_frames: int, fraction: float) -> int:
    """Index of the first held-out frame: frames ``[heldout_start, n_frames)`` are the held-out tail.

    ``round`` rather than ``floor`` so that float error in ``n * (1 - fraction)`` (e.g. 1499.9999) cannot move the
    boundary by a frame.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return int(round(n_frames * (1.0 - fraction)))


def validation_start(n_frames: int, heldout_fraction: float, validation_fraction: float) -> int:
    """Index of the first validation frame: the slice of the training part just before the held-out tail,
    ``validation_fraction`` of the whole timeline long."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    end = heldout_start(n_frames, heldout_fraction)
    return max(0, end - int(round(n_frames * validation_fraction)))


@dataclass(frozen=True)
class TimeSplit:
    """Frame ranges of one timeline (half-open, ``start <= frame < stop``)."""

    n_frames: int
    validation_start: int
    heldout_start: int

    @property
    def train(self) -> range:
        return range(0, self.validation_start)

    @property
    def validation(self) -> range:
        return range(self.validation_start, self.heldout_start)

    @property
    def heldout(self) -> range:
        return range(self.heldout_start, self.n_frames)


def time_split(n_frames: int, heldout_fraction: float, validation_fraction: float = 0.0) -> TimeSplit:
    """The train / validation / held-out ranges of a timeline of ``n_frames`` frames."""
    return TimeSplit(n_frames, validation_start(n_frames, heldout_fraction, validation_fraction),
                     heldout_start(n_frames, heldout_fraction))
