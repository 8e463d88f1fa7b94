"""Checkpoints load with weights_only: a lip.pt or gan.pt carrying a pickle payload (``__reduce__``) is refused
with one clear error and the payload never runs (checkpoints can come from a shared DVC cache or remote)."""

from __future__ import annotations

import pytest
import torch

from talkinghead.errors import InputError


class Payload:
    """Unpickling this creates a file: proof that code in the checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_lip_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    """A lip.pt carrying code (``__reduce__``) must not run it on load: one clear error instead."""
    from talkinghead.lip import load_lip_model

    marker = tmp_path / "payload-ran"
    torch.save({"config": {}, "state_dict": {}, "evil": Payload(marker)}, tmp_path / "lip.pt")
    with pytest.raises(InputError, match="lip.pt.*retrain"):
        load_lip_model(tmp_path / "lip.pt", "cpu")
    assert not marker.exists()


def test_gan_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    from talkinghead.gan import load_generator

    marker = tmp_path / "payload-ran"
    torch.save({"generator_config": {}, "generator": {}, "evil": Payload(marker)}, tmp_path / "gan.pt")
    with pytest.raises(InputError, match="gan.pt.*retrain"):
        load_generator(tmp_path / "gan.pt")
    assert not marker.exists()
