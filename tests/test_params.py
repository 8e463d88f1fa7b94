"""One config idiom: every params group becomes its frozen dataclass through params.load_config, which refuses
unknown keys (a typo never falls back silently) and missing keys (no default hides in code)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from talkinghead.compositing import CompositesParams
from talkinghead.errors import InputError
from talkinghead.fitting import FitConfig
from talkinghead.gan.trainer import GanParams
from talkinghead.gan_prior import GanPriorParams
from talkinghead.headmodel import HeadModelParams
from talkinghead.lip.trainer import LipParams
from talkinghead.params import load_config, load_params
from talkinghead.render import RenderParams
from talkinghead.app import AppParams
from talkinghead.synthesis import SpeakParams
from talkinghead.speech.features import AlignParams
from talkinghead.split import SplitParams
from talkinghead.sync_detector import SyncParams
from talkinghead.stages.crossdrive import CrossdriveParams
from talkinghead.stages.demo import DemoParams
from talkinghead.stages.evaluate import EvaluateParams
from talkinghead.stages.landmarks import LandmarksParams
from talkinghead.stream import StreamParams
from talkinghead.tts import TtsParams
from talkinghead.video import ExtractParams

from configs import PARAMS_YAML

GROUPS = {"demo": DemoParams, "extract": ExtractParams, "landmarks": LandmarksParams, "head_model": HeadModelParams, "fit": FitConfig,
          "render": RenderParams, "split": SplitParams, "sync": SyncParams, "align": AlignParams, "lip": LipParams,
          "crossdrive": CrossdriveParams, "composites": CompositesParams, "gan": GanParams, "gan_prior": GanPriorParams, "speak": SpeakParams,
          "evaluate": EvaluateParams, "stream": StreamParams, "tts": TtsParams, "app": AppParams}


def test_every_group_has_its_dataclass():
    assert set(load_params(PARAMS_YAML)) - {"presenters"} == set(GROUPS)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_project_params_load_and_are_frozen(group):
    config = load_config(GROUPS[group], group, PARAMS_YAML)
    field = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, None)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_typo_or_a_missing_key_is_one_error_naming_the_key_and_file(group, tmp_path):
    params = load_params(PARAMS_YAML)
    first = next(iter(params[group]))
    typo = {**params, group: {**params[group], first + "_typo": 1}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(typo))
    with pytest.raises(InputError, match=rf"params.yaml: unknown key\(s\) in {group}: {first}_typo"):
        load_config(GROUPS[group], group, path)
    missing = {**params, group: {k: v for k, v in params[group].items() if k != first}}
    path.write_text(yaml.safe_dump(missing))
    with pytest.raises(InputError, match=rf"params.yaml: missing key\(s\) in {group}: {first}\b"):
        load_config(GROUPS[group], group, path)


def test_values_of_the_wrong_type_are_refused(tmp_path):
    params = load_params(PARAMS_YAML)
    params["lip"]["max_steps"] = "many"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match="lip.max_steps must be int"):
        load_config(LipParams, "lip", path)


@pytest.mark.parametrize("key, value", [("chroma_pool", 0), ("w_mouth_keep", -1.0)])
def test_out_of_range_gan_values_are_one_error_naming_the_key(key, value, tmp_path):
    params = load_params(PARAMS_YAML)
    params["gan"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InputError, match=rf"params.yaml: gan: gan.{key} must be >= "):
        load_config(GanParams, "gan", path)


def test_lists_become_tuples_and_nested_groups_dataclasses():
    gan = load_config(GanParams, "gan", PARAMS_YAML)
    speak = load_config(SpeakParams, "speak", PARAMS_YAML)
    assert isinstance(gan.channels, tuple) and all(isinstance(c, int) for c in gan.channels)
    assert dataclasses.is_dataclass(speak.paste) and speak.paste.levels >= 1
