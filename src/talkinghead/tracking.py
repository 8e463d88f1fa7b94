"""MLflow tracking for DVC stages.

- Tracking URI: $MLFLOW_TRACKING_URI, else a local SQLite store ``mlflow.db`` in the project root: $DVC_ROOT (DVC
  sets it for every stage, also for ``dvc exp run --temp`` in a copy under .dvc/tmp/exps, so experiments land in the
  project's store, not a throwaway one), else the nearest folder up from here holding dvc.yaml (view it with
  ``make ui``).
- One parent run per ``dvc repro`` and one child run per stage. DVC starts every stage as its own process,
  so the parent is found, not passed: ``talkinghead repro`` (and ``make``) sets $TALKINGHEAD_PARENT_RUN;
  under a bare ``dvc repro`` the stages look up the parent tagged with the id of their ``dvc`` ancestor
  process and create it if they are the first stage.
- Every child run is tagged with the DVC stage, the presenter and the git commit.
- Models: train_lip and train_gan register their checkpoints (registry.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

EXPERIMENT = "talkinghead"
PARENT_ENV = "TALKINGHEAD_PARENT_RUN"


def project_root(start: str | Path = ".") -> Path:
    """The project the store belongs to: the main checkout for a DVC experiment run in a temp copy."""
    if os.environ.get("DVC_ROOT"):
        root = Path(os.environ["DVC_ROOT"]).resolve()
        # `dvc exp run --temp` runs in <project>/.dvc/tmp/exps/...: log to the project's store, not the copy's
        parts = root.parts
        if ".dvc" in parts:
            return Path(*parts[:parts.index(".dvc")])
        return root
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _dvc_ancestor_key() -> str | None:
    """'<pid>-<start time>' of the nearest ancestor process running dvc, or None outside DVC."""
    import psutil

    proc = psutil.Process()
    for parent in proc.parents():
        try:
            cmd = " ".join(parent.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if "dvc" in Path(cmd.split(" ")[0]).name or " dvc " in f" {cmd} " or "/dvc " in cmd:
            return f"{parent.pid}-{int(parent.create_time())}"
    return None


def _client():
    # no tqdm bar per artifact download (model logging validates its input example through one) in the stage logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(EXPERIMENT)
    return mlflow, mlflow.MlflowClient(), experiment.experiment_id


def start_parent_run(name: str = "repro") -> str:
    """Create a parent run for one pipeline invocation and return its id (used by ``talkinghead repro``)."""
    _, client, exp_id = _client()
    run = client.create_run(exp_id, run_name=name, tags={"git_commit": git_commit(), "kind": "repro"})
    return run.info.run_id


def end_parent_run(run_id: str, ok: bool) -> None:
    """Close a parent run made by ``start_parent_run`` once the whole pipeline invocation is over."""
    _, client, _ = _client()
    client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")


def _parent_run_id(client, exp_id: str) -> str | None:
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    key = _dvc_ancestor_key()
    if key is None:
        return None
    found = client.search_runs([exp_id], filter_string=f"tags.dvc_repro = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    experiment = os.environ.get("DVC_EXP_NAME")
    run = client.create_run(exp_id, run_name=f"dvc exp {experiment}" if experiment else f"dvc repro {key}",
                            tags={"dvc_repro": key, "git_commit": git_commit(), "kind": "repro",
                                  **({"dvc_exp_name": experiment} if experiment else {})})
    # Nobody outlives a bare `dvc repro` to close this run; each stage moves its end to when that stage finished
    # (stage_run), so it spans the whole pipeline once the last stage is done.
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, presenter: str | None = None, params: dict[str, Any] | None = None) -> Iterator[Any]:
    """Context manager: an MLflow child run for one stage. Yields the ``mlflow`` module for log_* calls.

    >>> with stage_run("extract", "demo", params) as mlflow:
    ...     mlflow.log_metrics({"frames": 1875}, step=0)
    """
    mlflow, client, exp_id = _client()
    tags = {"dvc_stage": stage if presenter is None else f"{stage}@{presenter}", "stage": stage,
            "git_commit": git_commit()}
    if presenter is not None:
        tags["presenter"] = presenter
    parent = _parent_run_id(client, exp_id)
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_name=tags["dvc_stage"], tags=tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield mlflow
    del run
    if parent is not None and not os.environ.get(PARENT_ENV):
        client.set_terminated(parent, status="FINISHED", end_time=int(time.time() * 1000))


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (config dataclasses count as dicts); MLflow params are flat strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
