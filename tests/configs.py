"""The project's params.yaml as config dataclasses for tests: every default lives in params.yaml, so a test takes the
project's values and overrides only what it is about."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from talkinghead.params import load_config, load_params

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"
T = TypeVar("T")


def project_config(config_class: type[T], group: str, **overrides: Any) -> T:
    return dataclasses.replace(load_config(config_class, group, PARAMS_YAML), **overrides)


def project_group(group: str) -> dict[str, Any]:
    """The raw mapping of one params group (for stages whose functions take the group as read)."""
    return dict(load_params(PARAMS_YAML)[group])


def write_project_params(root: Path, **changes: dict[str, Any]) -> Path:
    """The project's params.yaml copied under ``root`` with some keys of some groups changed (``presenters=[...]``
    replaces the list); returns its path."""
    import yaml

    params = load_params(PARAMS_YAML)
    for group, values in changes.items():
        if isinstance(params.get(group), dict):
            params[group] = {**params[group], **values}
        else:
            params[group] = values
    path = Path(root) / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path
