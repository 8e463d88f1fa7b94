"""dvc.yaml's deps must be true: each stage depends on exactly the package code it runs and the assets that code reads.

A stage's code is the import closure of its module inside the package (imports inside functions count: they run),
found by reading the sources, not by importing them. A dep missing from dvc.yaml lets `dvc repro` report "up to
date" over stale artifacts; a dep on code the stage never runs reruns it for nothing. On failure the message lists
the paths to add or remove.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "talkinghead"

# Files read at run time by a module, keyed by that module (relative to the repository root).
ASSETS_READ_BY = {
    "src/talkinghead/headmodel/__init__.py": ["assets/open_head_model.npz"],
}
# Keys that only change how fast or how verbosely a stage runs, never its outputs: no stage may depend on them.
RUNTIME_ONLY_KEYS = {"lip.threads", "gan.threads", "gan.log_every", "gan.sample_every", "gan.checkpoint_every",
                     "fit.cpu_threads", "fit.device", "speak.batch_size", "evaluate.batch_size",
                     "composites.batch_size"}


def module_file(module: str) -> Path | None:
    """``talkinghead.a.b`` -> its source file (module or package __init__), or None outside the package."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Package modules ``path`` imports anywhere in its body (absolute or relative, ``from x import submodule`` too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where it is a module
    return {m for m in found if module_file(m) is not None}


def import_closure(module: str) -> set[Path]:
    """Every package source file that running ``python -m module`` executes, parent packages' __init__ included."""
    todo, seen = [module], set()
    while todo:
        current = todo.pop()
        parts = current.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_modules(path))
    return seen


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    body = stage.get("do", stage)
    match = re.search(r"python -m (\S+)", body["cmd"])
    assert match, f"stage command {body['cmd']!r} does not run a module"
    return match.group(1)


def dep_paths(stage: dict) -> list[str]:
    return [str(d) for d in stage.get("do", stage).get("deps", [])]


def covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("name", sorted(stages()))
def test_code_deps_are_the_import_closure(name):
    stage = stages()[name]
    closure = {str(p.relative_to(ROOT)) for p in import_closure(stage_module(stage))}
    assets = {a for f in closure for a in ASSETS_READ_BY.get(f, [])}
    deps = [d for d in dep_paths(stage) if d.startswith(("src/", "assets/"))]
    missing = sorted(f for f in closure | assets if not any(covers(d, f) for d in deps))
    stale = sorted(d for d in deps if not any(covers(d, f) for f in closure | assets))
    # A folder dep is exact only when the stage runs every module in it; otherwise list the files.
    too_wide = sorted(d for d in deps if (ROOT / d).is_dir()
                      and {str(p.relative_to(ROOT)) for p in (ROOT / d).rglob("*.py")} - closure)
    assert not (missing or stale or too_wide), (
        f"dvc.yaml stage {name}: add {missing}; remove {stale}; replace folders by their imported files: {too_wide}")


@pytest.mark.parametrize("name", sorted(stages()))
def test_params_deps_exist_and_change_results(name):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    listed = [str(p) for p in stages()[name].get("do", stages()[name]).get("params", [])]
    for key in listed:
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"stage {name} depends on {key}, absent from params.yaml"
            node = node[part]
        runtime = [k for k in RUNTIME_ONLY_KEYS if covers(key.replace(".", "/"), k.replace(".", "/"))]
        assert not runtime, f"stage {name} depends on {key}, which includes run-time-only keys {runtime}"


# (stage, group): the stage lists only the keys of the group it reads (a checkpoint carries the rest, or only part of
# the group applies); every other stage that lists a group key by key must list all of its keys that change results.
PARTIAL_GROUPS = {("predict_lip", "lip"), ("crossdrive", "lip"), ("evaluate", "gan"), ("evaluate", "speak")}
NOT_READ = {("evaluate", "composites.examples")}  # the composites stage's example strips


@pytest.mark.parametrize("name", sorted(stages()))
def test_params_deps_list_whole_groups(name):
    """A key added to params.yaml must reach the stages it changes: composites.warp_sigma and gan.paint_mouth did not."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    listed = [str(p) for p in stages()[name].get("do", stages()[name]).get("params", [])]
    groups = {key.split(".")[0] for key in listed if "." in key} - set(listed)
    missing = sorted(f"{group}.{key}" for group in groups if (name, group) not in PARTIAL_GROUPS
                     for key in params[group]
                     if f"{group}.{key}" not in listed and f"{group}.{key}" not in RUNTIME_ONLY_KEYS
                     and (name, f"{group}.{key}") not in NOT_READ)
    assert not missing, f"dvc.yaml stage {name}: add params {missing} (or name them run-time-only / not read)"


def test_closure_follows_lazy_and_relative_imports():
    """The closure finder itself: a stage that imports the head model inside a function must still pull it in."""
    closure = {str(p.relative_to(ROOT)) for p in import_closure("talkinghead.stages.crossdrive")}
    assert "src/talkinghead/headmodel/__init__.py" in closure  # imported inside a function
    assert "src/talkinghead/lip/ridge.py" in closure  # from ..lip.ridge import ...
    assert "src/talkinghead/stages/__init__.py" in closure
    assert "src/talkinghead/render/renderer.py" not in closure  # crossdrive never renders


def test_head_model_change_reruns_lip_training_and_evaluation_but_threads_do_not():
    """The reviewer's cases: a head-model file feeds train_lip and evaluate; lip.threads retrains nothing."""
    all_stages = stages()
    for name in ("train_lip", "evaluate"):
        assert any(covers(d, "src/talkinghead/headmodel/lbs.py") for d in dep_paths(all_stages[name])), name
        assert "assets/open_head_model.npz" in dep_paths(all_stages[name]), name
    for name, stage in all_stages.items():
        listed = [str(p) for p in stage.get("do", stage).get("params", [])]
        assert "lip" not in listed and "lip.threads" not in listed, name
