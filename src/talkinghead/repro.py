"""The repro driver: ``dvc repro`` under one MLflow parent run, after checking what DVC's own errors do not explain.
Used by ``talkinghead repro`` and ``talkinghead demo``."""

from __future__ import annotations

import os
import subprocess
import sys

from .errors import InputError


def check_presenters() -> None:
    """InputError unless params.yaml lists presenters: dvc.yaml's per-presenter stages loop over them, and DVC's own
    error for an empty list ("failed to resolve 'stages.extract.foreach'") does not say what to do."""
    from .gan_prior import GanPriorParams
    from .params import PARAMS_FILE, build_config, load_params

    params = load_params()
    presenters = params.get("presenters")
    if not presenters or not isinstance(presenters, list):
        raise InputError(PARAMS_FILE, f"`presenters` is {'empty' if not presenters else repr(presenters)}: list at "
                                      "least one (`- NAME` lines); add yours with `talkinghead add-presenter NAME "
                                      "VIDEO`, or list `- demo` and run `make demo`")
    prior = build_config(GanPriorParams, "gan_prior", params["gan_prior"]) if "gan_prior" in params else None
    if prior is not None and prior.enabled and prior.presenter not in presenters:
        # the stage gan_prior reads that presenter's composites; DVC would only say a dependency is missing
        raise InputError(PARAMS_FILE, f"gan_prior.presenter is {prior.presenter!r}, not one of the presenters "
                                      f"({', '.join(map(str, presenters))}): name one of them, or set "
                                      "gan_prior.max_steps: 0 (every GAN starts from random weights)")
    sync = params.get("sync")
    if isinstance(sync, dict) and sync.get("presenter") not in presenters:
        # stage sync_model fits the footage sync detector on that (generated) presenter's footage
        raise InputError(PARAMS_FILE, f"sync.presenter is {sync.get('presenter')!r}, not one of the presenters "
                                      f"({', '.join(map(str, presenters))}): name the generated demo presenter "
                                      "(list `- demo` under presenters)")


def repro(targets: list[str] | None = None, extra: list[str] | None = None,
          command: tuple[str, ...] = ("repro",)) -> int:
    """`dvc repro [targets]` (or another dvc ``command``, e.g. ``("exp", "run")``) with one MLflow parent run that
    every stage's child run attaches to."""
    from .tracking import PARENT_ENV, end_parent_run, start_parent_run

    check_presenters()
    env = dict(os.environ)
    # Stage commands say `python -m ...`: make that the interpreter running us (the project venv).
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    own_parent = PARENT_ENV not in env
    if own_parent:
        env[PARENT_ENV] = start_parent_run(" ".join(command) + " " + " ".join(targets or ["(all)"]))
    cmd = [sys.executable, "-m", "dvc", *command, *(extra or []), *(targets or [])]
    code = subprocess.call(cmd, env=env)
    if own_parent:
        end_parent_run(env[PARENT_ENV], ok=code == 0)
    return code
