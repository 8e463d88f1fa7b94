"""params.yaml access. Stages read only their own group (and DVC lists that group as the stage's dependency)."""

from __future__ import annotations

from dataclasses import fields
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


def reject_unknown_keys(group: str, values: dict[str, Any], config_class: type, path: str | Path = PARAMS_FILE) -> None:
    """One clear error for keys of params.yaml's ``group`` that ``config_class`` (a dataclass) has no field for, so
    a typo never silently falls back to a default."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(path, f"unknown key(s) in {group}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
