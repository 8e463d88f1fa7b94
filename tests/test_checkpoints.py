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


def _lip_checkpoint() -> dict:
    from talkinghead.lip import LipConfig, LipTransformer, checkpoint_payload

    model = LipTransformer(LipConfig(presenters=["a"], n_layers=1, d_model=16, n_heads=2, ff_dim=16))
    return checkpoint_payload(model, torch.zeros(1, 53), torch.ones(1, 53), {"encoder": "mel"})


def _wrong_shape(ckpt):
    ckpt["state_dict"]["input_proj.0.weight"] = torch.zeros(3, 3)
    return ckpt


def _missing_weight(ckpt):
    del ckpt["state_dict"]["input_proj.0.weight"]
    return ckpt


def _missing_statistics(ckpt):
    del ckpt["target_mean"]
    return ckpt


def _unbuildable_config(ckpt):
    ckpt["config"]["n_heads"] = 3  # 16 is not divisible by 3: the network cannot be built
    return ckpt


def test_lip_checkpoint_with_bad_align_settings_names_the_checkpoint(tmp_path):
    """The align settings features are made with come from the checkpoint: the error must not blame params.yaml."""
    import numpy as np

    from talkinghead.lip import speech_features

    ckpt = _lip_checkpoint()
    ckpt["align"] = {"encoder": "nonsense"}
    torch.save(ckpt, tmp_path / "lip.pt")
    with pytest.raises(InputError, match=f"^{tmp_path / 'lip.pt'}: bad align settings in the checkpoint"):
        speech_features(tmp_path / "lip.pt", np.zeros(16000, np.float32), 25, 25.0)


def _gan_checkpoint(size: int = 32) -> dict:
    from talkinghead.gan import Generator, GeneratorConfig

    generator = Generator(GeneratorConfig(channels=(8, 16)))
    generator.reference = torch.zeros(1, 3, size, size)
    return {"generator_config": generator.config.to_dict(), "generator": generator.state_dict(), "step": 0}


def _gan_wrong_shape(ckpt):
    ckpt["generator"]["stem.0.weight"] = torch.zeros(3, 3)
    return ckpt


def _gan_missing_reference(ckpt):
    del ckpt["generator"]["reference"]
    return ckpt


def _load_lip(path):
    from talkinghead.lip import load_lip_model

    return load_lip_model(path, "cpu")


def _load_gan(path):
    from talkinghead.gan import load_generator

    return load_generator(path)


BARE_TENSOR = (lambda ckpt: torch.zeros(3), r"TypeError: it holds a Tensor, not a dict")


@pytest.mark.parametrize("kind, corrupt, reason", [
    ("lip", _wrong_shape, r"size mismatch for input_proj.0.weight"),
    ("lip", _missing_weight, r'Missing key\(s\) in state_dict: "input_proj.0.weight"'),
    ("lip", _missing_statistics, r"KeyError: 'target_mean'"),
    ("lip", _unbuildable_config, r"AssertionError: embed_dim must be divisible by num_heads"),
    ("lip", *BARE_TENSOR),
    ("gan", _gan_wrong_shape, r"size mismatch for stem.0.weight"),
    ("gan", _gan_missing_reference, r"KeyError: 'reference'"),
    ("gan", *BARE_TENSOR),
])
def test_checkpoint_of_the_wrong_shape_is_one_clear_error(tmp_path, kind, corrupt, reason):
    build, load, what = {"lip": (_lip_checkpoint, _load_lip, "a lip-model"),
                         "gan": (_gan_checkpoint, _load_gan, "a GAN generator")}[kind]
    path = tmp_path / f"{kind}.pt"
    torch.save(corrupt(build()), path)
    with pytest.raises(InputError, match=f"^{path}: not {what} checkpoint.*{reason}.*retrain") as caught:
        load(path)
    assert "\n" not in str(caught.value)


def test_gan_checkpoint_for_another_crop_size_is_refused_on_load(tmp_path):
    """A generator whose reference frame is 64 px cannot run on 32 px crops: said on load, naming the file."""
    from talkinghead.gan import load_generator

    torch.save(_gan_checkpoint(size=64), tmp_path / "gan.pt")
    assert load_generator(tmp_path / "gan.pt", image_size=64).reference.shape[-1] == 64
    with pytest.raises(InputError, match=r"gan.pt: stored reference frame has shape \(1, 3, 64, 64\), the crops need "
                                         r"\(1, 3, 32, 32\)"):
        load_generator(tmp_path / "gan.pt", image_size=32)
