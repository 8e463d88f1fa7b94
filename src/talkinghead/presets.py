"""Quality presets: shipped YAML files of params.yaml overrides (``presets/NAME.yaml``), e.g. ``cuda`` for one GPU.

A preset is a mapping ``group: {key: value}``. It adds no new mechanism: it becomes the ``-S group.key=value`` items of
``dvc exp run`` (which writes them into params.yaml and reruns the stages they change).
Before printing them, every key is checked to exist in params.yaml and every group it touches is built through its
frozen config dataclass (params.load_config), so a typo or a wrong type is an error here, not a failed stage later.

    talkinghead preset cuda                # = dvc exp run -S gan.channels=[32,64,128,256] -S ... (checked first)
    talkinghead preset cuda --print        # only print the -S arguments
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .params import PARAMS_FILE, apply_overrides, load_config, load_params

PRESET_DIR = Path("presets")


def _config_classes() -> dict[str, type]:
    """The config dataclass of every params group a preset may touch (imported lazily: torch)."""
    from .gan.trainer import GanParams
    from .gan_prior import GanPriorParams
    from .lip.trainer import LipParams
    from .render.renderer import RenderParams
    from .synthesis import SpeakParams

    return {"gan": GanParams, "gan_prior": GanPriorParams, "lip": LipParams, "speak": SpeakParams, "render": RenderParams}


def preset_path(name: str, root: Path = Path(".")) -> Path:
    """``presets/NAME.yaml`` under the project ``root``, or ``name`` itself when it is a path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return root / PRESET_DIR / f"{name}.yaml"


def format_value(value: Any) -> str:
    """A YAML flow value without spaces (JSON is YAML), so that ``$(talkinghead preset ...)`` splits into one word
    per override."""
    return json.dumps(value, separators=(",", ":"))


def preset_overrides(path: Path, params_path: Path = PARAMS_FILE) -> list[str]:
    """The ``group.key=value`` items of the preset at ``path``, checked against ``params_path``: every key exists
    there, and each group touched builds into its config dataclass with the preset's values."""
    try:
        preset = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        known = sorted(p.stem for p in Path(path).parent.glob("*.yaml"))
        raise InputError(path, f"no such preset (shipped: {', '.join(known) or 'none'})") from exc
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({exc})") from exc
    classes = _config_classes()
    if not isinstance(preset, dict) or not all(isinstance(v, dict) for v in preset.values()):
        raise InputError(path, "a preset is a mapping of params groups to {key: value} mappings")
    unknown = sorted(set(preset) - set(classes))
    if unknown:
        raise InputError(path, f"group(s) {', '.join(unknown)} cannot be preset (only {', '.join(sorted(classes))})")
    items = [f"{group}.{key}={format_value(value)}" for group, values in preset.items() for key, value in values.items()]
    params = apply_overrides(load_params(params_path), items, params_path)
    for group in preset:
        load_config(classes[group], group, path, params)  # types and values checked as the stage will load them
    return items


def preset_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="talkinghead preset",
        description="apply a quality preset: check its params overrides against params.yaml, then run `dvc exp run` "
                    "with them as -S arguments (DVC writes them into params.yaml and reruns the stages they change)")
    parser.add_argument("preset", help="a shipped preset name (presets/NAME.yaml, e.g. cuda) or a YAML file")
    parser.add_argument("targets", nargs="*", help="stages to run, e.g. train_gan@demo (default: all)")
    parser.add_argument("--print", action="store_true", help="only print the -S arguments")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="the params.yaml to check against")
    args = parser.parse_args(argv)
    items = preset_overrides(preset_path(args.preset), args.params)
    if args.print:
        print(" ".join(f"-S {item}" for item in items))
        return 0
    from .repro import repro

    return repro(args.targets, [a for item in items for a in ("-S", item)], command=("exp", "run"))
