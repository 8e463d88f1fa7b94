"""The ``gan_prior`` params group, kept free of torch: ``talkinghead repro`` checks it before DVC runs, and the
stage gan_prior (talkinghead.stages.train_gan --prior) trains by it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GanPriorParams:
    """params.yaml's ``gan_prior`` group: the GAN every presenter's GAN starts from, trained first on ``presenter``'s
    footage with the ``gan`` settings for its own budget (``max_steps`` 0: no prior, random initial weights)."""

    presenter: str
    max_steps: int
    max_seconds: float

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.max_seconds < 0:
            raise ValueError("gan_prior.max_steps and max_seconds must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.max_steps > 0 and self.max_seconds > 0
