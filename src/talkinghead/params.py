"""params.yaml access: one way to turn a params group into its frozen config dataclass.

Every default lives in params.yaml (DVC tracks its keys); the group dataclasses have no defaults of their own, so a
key missing from params.yaml is an error, never a silent code default. Unknown keys (typos such as
``lip.target_los``) are errors too. Library code gets its config passed in and never reads params.yaml.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from .errors import InputError

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


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


def reject_unknown_keys(group: str, values: Mapping[str, Any], config_class: type, path: str | Path = PARAMS_FILE) -> None:
    """One clear error for keys of params.yaml's ``group`` that ``config_class`` (a dataclass) has no field for, so
    a typo never silently falls back to a default."""
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(path, f"unknown key(s) in {group}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def build_config(config_class: type[T], group: str, values: Mapping[str, Any], path: str | Path = PARAMS_FILE) -> T:
    """``config_class`` from the mapping ``values`` of params group ``group`` (a nested group is a nested dataclass):
    unknown and missing keys are errors naming the key and ``path``; lists become tuples where the field is a tuple,
    ints become floats where it is a float."""
    if not isinstance(values, Mapping):
        raise InputError(path, f"{group} must be a mapping of keys to values")
    reject_unknown_keys(group, values, config_class, path)
    hints = typing.get_type_hints(config_class)
    required = {f.name for f in dataclasses.fields(config_class)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(values))
    if missing:
        raise InputError(path, f"missing key(s) in {group}: {', '.join(missing)}")
    kwargs = {name: _coerce(hints[name], value, f"{group}.{name}", path) for name, value in values.items()}
    try:
        return config_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{group}: {exc}") from exc


def load_config(config_class: type[T], group: str, path: str | Path = PARAMS_FILE,
                params: Mapping[str, Any] | None = None) -> T:
    """Params group ``group`` of ``path`` (or of the already loaded ``params``) as ``config_class``."""
    params = load_params(path) if params is None else params
    if group not in params:
        raise InputError(path, f"parameter group {group!r} missing")
    return build_config(config_class, group, params[group], path)


def _coerce(hint: Any, value: Any, key: str, path: str | Path) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_config(hint, key, value, path)
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or len(options) > 1:  # e.g. extract.fps: 'auto' or a number, checked where it is used
            return value
        return _coerce(options[0], value, key, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(path, f"{key} must be a list, not {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, key, path) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        raise InputError(path, f"{key} must be {hint.__name__}, not {value!r}")
    return value


def apply_overrides(params: Mapping[str, Any], items: list[str] | tuple[str, ...],
                    path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """A copy of ``params`` with ``key=value`` overrides for one run (``speak -S speak.crf=18``): the dotted key must
    exist in params.yaml (so a typo is an error, never a silent new key); the value is parsed as YAML (``18``,
    ``true``, ``[1, 2]``). Types are checked where the group is loaded (load_config)."""
    import copy

    out = copy.deepcopy(dict(params))
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise InputError(None, f"-S {item!r}: expected KEY=VALUE, e.g. speak.crf=18")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(None, f"-S {item!r}: value is not valid YAML ({exc})") from exc
        node: Any = out
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                here = ".".join(parts[:depth]) or "params.yaml"
                known = ", ".join(sorted(map(str, node))) if isinstance(node, dict) else "no keys"
                raise InputError(path, f"-S {key}: no key {part!r} in {here} (it has: {known})")
            if depth == len(parts) - 1:
                if isinstance(node[part], dict):
                    raise InputError(path, f"-S {key}: a group; set one of its keys ({', '.join(node[part])})")
                node[part] = value
            else:
                node = node[part]
    return out
