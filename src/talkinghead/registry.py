"""MLflow model registry: the lip model and each presenter's GAN generator as registered, safely loadable models.

- ``talkinghead-lip``: the lip model (stage train_lip); ``talkinghead-gan-NAME``: presenter NAME's generator (stage
  train_gan@NAME). Every training run adds a version, logged inside the stage's MLflow run.
- A version is a pyfunc model "from code" (registry_model.py) whose one artifact is the project's own checkpoint file
  (lip.pt / gan.pt: tensors and plain containers). It loads with ``torch.load(weights_only=True)`` like the DVC output,
  never by unpickling a module. It carries a signature and an input example.
- Tags of each version: ``git_commit``, ``dvc_stage`` (e.g. train_gan@demo) and ``dvc_deps_md5``. The stage's
  dvc.lock entry is written by DVC only after the stage has finished, so a version cannot carry it; instead
  ``dvc_deps_md5`` fingerprints what dvc.lock's entry is made from: the stage's command, the content of every dep
  in dvc.yaml and the values of its params. Same deps and params, same fingerprint.
- ``talkinghead speak --model-version lip=N,gan=M`` (or ``latest``) speaks with registered versions instead of
  models/ (``registered_checkpoints``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .paths import PresenterPaths

LIP_MODEL = "talkinghead-lip"
WRAPPER = Path(__file__).with_name("registry_model.py")


def gan_model_name(presenter: str) -> str:
    return f"talkinghead-gan-{presenter}"


# ---------------------------------------------------------------------------------------------------------------
# the stage fingerprint

def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _dep_md5(path: Path) -> str:
    """md5 of a file's content, or of a folder's (relative path, content md5) list; 'missing' if absent."""
    if path.is_file():
        return _file_md5(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        listing = [(str(p.relative_to(path)), _file_md5(p)) for p in files]
        return hashlib.md5(json.dumps(listing).encode()).hexdigest()
    return "missing"


def _param_value(params: dict, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def stage_deps_md5(stage: str, root: str | Path = ".") -> str:
    """Fingerprint of a DVC stage's inputs (``train_lip``, ``train_gan@demo``): md5 over its command, the content of
    every dep dvc.yaml lists for it and the values of its params in params.yaml. 'no dvc.yaml' outside a project."""
    import yaml

    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        return "no dvc.yaml"
    name, _, item = stage.partition("@")
    definition = (yaml.safe_load((root / "dvc.yaml").read_text()).get("stages") or {}).get(name)
    if definition is None:
        return "stage not in dvc.yaml"
    if "do" in definition:
        definition = definition["do"]

    def resolve(text: str) -> str:
        return text.replace("${item}", item)

    params = yaml.safe_load((root / "params.yaml").read_text()) if (root / "params.yaml").is_file() else {}
    keys = [k for entry in definition.get("params") or [] for k in ([entry] if isinstance(entry, str) else entry)]
    record = {"cmd": resolve(str(definition.get("cmd", ""))),
              "deps": {resolve(d): _dep_md5(root / resolve(d)) for d in sorted(definition.get("deps") or [])},
              "params": {k: _param_value(params, k) for k in sorted(keys)}}
    return hashlib.md5(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# logging and registering

def _requirements() -> list[str]:
    """Pinned from this environment (inferring them would load the model in a subprocess: seconds per version).
    The talkinghead package itself comes from the project checkout (pip install -e .)."""
    return [f"{name}=={metadata.version(name)}" for name in ("mlflow", "torch", "numpy")]


def signature(kind: str, example: np.ndarray, checkpoint: str | Path, presenter: str | None):
    """The model's signature, written out (inferring it would run the model once more): batch dimension free."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    from .tensorfile import load_checkpoint

    inputs = Schema([TensorSpec(example.dtype, (-1, *example.shape[1:]))])
    if kind == "gan":  # uint8 composites [B, S, S, 3] -> uint8 frames of the same shape
        return ModelSignature(inputs, inputs)
    n_out = int(load_checkpoint(checkpoint)["config"]["n_out"])  # features [N, C, D] -> expression [N, 53]
    return ModelSignature(inputs, Schema([TensorSpec(np.dtype(np.float32), (-1, n_out))]),
                          ParamSchema([ParamSpec("presenter", "string", presenter or "")]))


def register_checkpoint(mlflow, kind: str, checkpoint: str | Path, name: str, example: np.ndarray,
                        stage: str, presenter: str | None = None, root: str | Path = ".",
                        extra: dict[str, Path] | None = None):
    """Log ``checkpoint`` as a pyfunc model in the active run and register it as a new version of ``name``.
    ``mlflow``: the module yielded by tracking.stage_run. MLflow checks while logging that the stored version loads
    and runs on ``example``. ``extra``: more files stored next to the checkpoint (the GAN's mouth bank). Returns the
    registered ModelVersion."""
    from .tracking import git_commit

    artifacts = {kind: str(checkpoint), **{k: str(v) for k, v in (extra or {}).items()}}
    info = mlflow.pyfunc.log_model(name=kind, python_model=str(WRAPPER), artifacts=artifacts,
                                   signature=signature(kind, example, checkpoint, presenter), input_example=example,
                                   pip_requirements=_requirements())
    tags = {"git_commit": git_commit(), "dvc_stage": stage, "dvc_deps_md5": stage_deps_md5(stage, root)}
    if presenter is not None:
        tags["presenter"] = presenter
    return mlflow.register_model(info.model_uri, name, tags=tags)


def register_lip(mlflow, checkpoint: str | Path, features: np.ndarray, presenter: str, root: str | Path = "."):
    """Register lip.pt as a version of ``talkinghead-lip``; ``features`` [n, C, D] of ``presenter`` as the example."""
    return register_checkpoint(mlflow, "lip", checkpoint, LIP_MODEL, np.asarray(features, np.float32), "train_lip",
                               presenter, root)


def register_gan(mlflow, checkpoint: str | Path, presenter: str, composites: np.ndarray, root: str | Path = ".",
                 mouth_bank: Path | None = None):
    """Register gan.pt as a version of ``talkinghead-gan-NAME``; ``composites`` uint8 [b, S, S, 3] as the example.
    ``mouth_bank``: a retrieval generator's mouth_bank.npz, stored next to gan.pt so speak --model-version finds it
    (the pyfunc model itself generates from composites alone, i.e. without retrieved mouths)."""
    return register_checkpoint(mlflow, "gan", checkpoint, gan_model_name(presenter), np.asarray(composites, np.uint8),
                               f"train_gan@{presenter}", presenter, root,
                               {"mouth_bank": mouth_bank} if mouth_bank is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# loading registered versions

SPEC = re.compile(r"^(lip|gan)=(\d+|latest)$")


def parse_model_version(spec: str) -> dict[str, str]:
    """'latest' -> {lip: latest, gan: latest}; 'lip=3,gan=2' / 'gan=2' -> the versions named (others: models/)."""
    if spec.strip() == "latest":
        return {"lip": "latest", "gan": "latest"}
    versions: dict[str, str] = {}
    for part in spec.split(","):
        match = SPEC.match(part.strip())
        if match is None or match.group(1) in versions:
            raise InputError(None, f"--model-version {spec!r}: expected 'latest' or 'lip=N,gan=M' (N, M: a "
                                   "registered version number or 'latest'; a model left out comes from models/)")
        versions[match.group(1)] = match.group(2)
    return versions


def registered_checkpoint(name: str, version: str, dst: str | Path | None = None) -> Path:
    """The checkpoint file of version ``version`` ('latest' or a number) of registered model ``name``, downloaded
    from the project's MLflow store into ``dst`` (default: a temporary folder removed at exit)."""
    import atexit
    import shutil
    import tempfile

    import mlflow

    from .tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        if version == "latest":
            found = client.search_model_versions(f"name = '{name}'")
            if not found:
                raise LookupError("no versions")
            version = str(max(int(v.version) for v in found))
        client.get_model_version(name, version)
    except Exception as exc:  # MlflowException for an unknown name or version
        raise InputError(None, f"registered model {name!r} has no version {version} in {tracking_uri()} "
                               "(`make ui` lists them; train_lip/train_gan register one per run)") from exc
    if dst is None:  # removed when the process ends (speak reads the checkpoints until then)
        dst = tempfile.mkdtemp(prefix=f"{name}-v{version}-")
        atexit.register(shutil.rmtree, dst, ignore_errors=True)
    folder = Path(dst)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(folder)))
    files = sorted((local / "artifacts").glob("*.pt"))
    if len(files) != 1:
        raise InputError(local, f"registered model {name} v{version} holds {len(files)} checkpoint files, expected 1")
    return files[0]


def registered_checkpoints(paths: PresenterPaths, lip_checkpoint: Path, spec: str | None
                           ) -> tuple[PresenterPaths, Path]:
    """``speak``'s checkpoints: (presenter paths whose gan_checkpoint is the registered generator, lip checkpoint).
    ``spec``: ``--model-version`` (None: the DVC outputs, unchanged)."""
    if not spec:
        return paths, lip_checkpoint
    versions = parse_model_version(spec)
    if "lip" in versions:
        lip_checkpoint = registered_checkpoint(LIP_MODEL, versions["lip"])
    if "gan" in versions:
        gan = registered_checkpoint(gan_model_name(paths.name), versions["gan"])
        paths = replace(paths, gan_dir=gan.parent)
        if gan.name != paths.gan_checkpoint.name:  # PresenterPaths reads <gan_dir>/gan.pt
            raise InputError(gan, f"registered generator is named {gan.name}, expected {paths.gan_checkpoint.name}")
    return paths, lip_checkpoint
