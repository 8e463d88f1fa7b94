"""Quality presets (presets/*.yaml): they load through the frozen-dataclass params path, DVC's own `-S` parser applies
them to params.yaml unchanged, bad presets are one clear error, and the CUDA preset trains on a GPU (skipped without)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from talkinghead.errors import InputError
from talkinghead.gan.trainer import GanParams
from talkinghead.lip.trainer import LipParams
from talkinghead.params import load_config
from talkinghead.presets import preset_main, preset_overrides, preset_path

from configs import PARAMS_YAML

ROOT = PARAMS_YAML.parent
CUDA_PRESET = ROOT / "presets" / "cuda.yaml"


def test_cuda_preset_loads_through_the_config_dataclasses():
    items = preset_overrides(CUDA_PRESET, PARAMS_YAML)
    assert "gan.channels=[32,64,128,256]" in items and all(" " not in item for item in items)
    assert preset_path("cuda", ROOT) == CUDA_PRESET
    preset = yaml.safe_load(CUDA_PRESET.read_text())
    cpu = load_config(GanParams, "gan", PARAMS_YAML)
    assert cpu.channels == (16, 32, 64, 128)  # params.yaml keeps the CPU budget of `make demo`
    assert preset["gan"]["batch_size"] > cpu.batch_size and preset["gan"]["max_steps"] > cpu.max_steps


def test_dvc_applies_the_preset_and_the_stages_load_it(tmp_path):
    """What `talkinghead preset cuda` hands to `dvc exp run -S`: DVC's own override parser writes it into params.yaml,
    and the stages' load_config then sees the preset's values with their dataclass types."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS_YAML, params)
    apply_overrides(str(params), preset_overrides(CUDA_PRESET, PARAMS_YAML))
    gan = load_config(GanParams, "gan", params)
    lip = load_config(LipParams, "lip", params)
    assert gan.channels == (32, 64, 128, 256) and gan.batch_size == 16 and gan.amp is True
    assert isinstance(gan.lr_g, float) and gan.lr_g == pytest.approx(0.0002) and gan.target_loss == 0.0
    assert lip.max_steps == 3000 and lip.target_loss == 0.0
    untouched = load_config(GanParams, "gan", PARAMS_YAML)
    assert gan.mouth_crop == untouched.mouth_crop and gan.retrieval == untouched.retrieval


def test_bad_presets_are_one_clear_error(tmp_path, capsys):
    cases = {"typo.yaml": "gan:\n  max_step: 10\n", "type.yaml": "gan:\n  channels: wide\n",
             "group.yaml": "extract:\n  fps: 5\n", "flat.yaml": "gan: 3\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match="max_step|channels|extract|mapping"):
            preset_overrides(tmp_path / name, PARAMS_YAML)
    with pytest.raises(InputError, match="no such preset"):
        preset_overrides(tmp_path / "missing.yaml", PARAMS_YAML)


def test_preset_command_runs_dvc_exp_run_with_the_overrides(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("talkinghead.repro.repro", lambda targets, extra, command: calls.append((targets, extra, command)) or 0)
    assert preset_main([str(CUDA_PRESET), "train_gan@demo", "--params", str(PARAMS_YAML)]) == 0
    targets, extra, command = calls[0]
    assert command == ("exp", "run") and targets == ["train_gan@demo"]
    assert extra[:2] == ["-S", "gan.channels=[32,64,128,256]"] and extra[::2] == ["-S"] * (len(extra) // 2)
    assert preset_main([str(CUDA_PRESET), "--print", "--params", str(PARAMS_YAML)]) == 0
    assert capsys.readouterr().out.startswith("-S gan.channels=[32,64,128,256] -S ")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CPU-only test machine)")
def test_cuda_preset_trains_on_the_gpu(tmp_path):
    """A few training steps of the CUDA preset's GAN (with retrieval, AMP) on a generated 256 px presenter: the nets
    and batches live on the GPU, the losses are finite, and the exported generator reloads and generates there."""
    import numpy as np

    from talkinghead.gan import generate, load_generator
    from talkinghead.gan.synthetic import make_synthetic_presenter
    from talkinghead.headmodel import HeadModelParams
    from talkinghead.paths import PresenterPaths
    from talkinghead.stages.train_gan import build_trainer, load_gan_data, load_retrieval
    from talkinghead.params import apply_overrides, load_params

    params_all = apply_overrides(load_params(PARAMS_YAML), preset_overrides(CUDA_PRESET, PARAMS_YAML))
    params = dataclasses.replace(load_config(GanParams, "gan", PARAMS_YAML, params_all), max_steps=4,
                                 checkpoint_every=2, log_every=1)
    paths = PresenterPaths.of("synth", tmp_path)
    make_synthetic_presenter(paths, n_frames=40, size=params.image_size, seed=0)
    data = load_gan_data(paths, 0.2)
    data.retrieval = load_retrieval(paths, data, params, load_config(HeadModelParams, "head_model", PARAMS_YAML))
    trainer = build_trainer(params, torch.device("cuda"))
    assert trainer.use_amp and next(trainer.generator.parameters()).is_cuda
    assert trainer.fit(data, tmp_path / "state.pt", progress=False) == "max_steps"
    assert trainer.step == 4 and np.isfinite(trainer.loss_ema)
    trainer.export(tmp_path / "gan.pt")
    generator = load_generator(tmp_path / "gan.pt", "cuda", params.image_size)
    out = generate(generator, np.asarray(data.composites[:2]))
    assert out.shape == (2, params.image_size, params.image_size, 3) and out.dtype == np.uint8
