"""params.yaml access. Stages read only their own group (and DVC lists that group as the stage's dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

PARAMS_FILE = Path("params.yaml")


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except FileNotFoundError as exc:
        raise InputError(path, "missing; run from the project root (the folder with dvc.yaml)") from exc
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(params, dict):
        raise InputError(path, "must be a mapping of parameter groups")
    return params


def params_group(name: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    params = load_params(path)
    if name not in params or not isinstance(params[name], dict):
        raise InputError(path, f"parameter group {name!r} missing")
    return params[name]
