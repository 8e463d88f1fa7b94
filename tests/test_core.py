"""Core plumbing: atomic writes, tensor files, Parquet schemas, paths, params, CLI, MLflow nesting, dvc.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from talkinghead import schemas
from talkinghead.atomic import atomic_path
from talkinghead.errors import InputError, SchemaError
from talkinghead.paths import GAN_PRIOR, GAN_PRIOR_STATE, PRESENTER_NAME, PresenterPaths
from talkinghead.tensorfile import TensorWriter, load_tensor, save_tensor

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_tensor_writer_streams_and_validates(tmp_path):
    path = tmp_path / "frames.npy"
    with TensorWriter(path, n=4, row_shape=(8, 8, 3), dtype=np.uint8) as w:
        for i in range(4):
            w[i] = i
    arr = load_tensor(path, dtype=np.uint8, row_shape=(8, 8, 3), n=4)
    assert arr[3].max() == 3 and arr[0].max() == 0
    with pytest.raises(SchemaError, match="shape"):
        load_tensor(path, row_shape=(8, 8, 1))
    with pytest.raises(SchemaError, match="dtype"):
        load_tensor(path, dtype=np.float32)
    with pytest.raises(SchemaError, match="rows"):
        load_tensor(path, n=5)


def test_tensor_writer_leaves_nothing_on_error(tmp_path):
    save_tensor(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    with pytest.raises(ValueError):
        with TensorWriter(tmp_path / "a.npy", n=2, row_shape=(3,), dtype=np.float32) as w:
            w[0] = 5
            raise ValueError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    assert np.all(load_tensor(tmp_path / "a.npy") == 1)  # the old file survives


def _parameters_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "frame": np.arange(n), "shape": list(rng.normal(size=(n, 100))), "expression": list(rng.normal(size=(n, 53))),
        "texture": list(rng.normal(size=(n, 50))), "lighting": list(rng.normal(size=(n, 27))),
        "camera": list(rng.normal(size=(n, 3))), "pose": list(rng.normal(size=(n, 6))),
        "fit_error": rng.random(n),
    })


def test_schema_round_trip_and_validation(tmp_path):
    df = _parameters_frame(5)
    path = tmp_path / "flame.parquet"
    schemas.write_table(df, path, schemas.PARAMETERS, metadata={"model": "open"})
    back = schemas.read_table(path, schemas.PARAMETERS)
    assert schemas.column_array(back, "expression").shape == (5, 53)
    np.testing.assert_allclose(schemas.column_array(back, "pose"), np.stack(df["pose"]).astype(np.float32))
    assert schemas.read_metadata(path)["model"] == "open"
    # a reader expecting another schema gets a clear error naming the file
    with pytest.raises(SchemaError, match="flame.parquet.*column 'detected' missing"):
        schemas.read_table(path, schemas.LANDMARKS)


def test_schema_rejects_wrong_width_and_type(tmp_path):
    df = _parameters_frame(3)
    df["expression"] = list(np.zeros((3, 52)))
    with pytest.raises(SchemaError, match="width"):
        schemas.write_table(df, tmp_path / "x.parquet", schemas.PARAMETERS)
    bad = pa.table({"frame": pa.array([0.5]), "detected": pa.array([True])})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(SchemaError, match="type"):
        schemas.read_table(tmp_path / "bad.parquet", schemas.LANDMARKS)
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="corrupt.parquet.*not a readable Parquet"):
        schemas.read_table(tmp_path / "corrupt.parquet", schemas.LANDMARKS)


@pytest.mark.parametrize("name,ok", [("demo", True), ("bob_2-x", True), ("../x", False), ("Bob", False),
                                     ("has space", False), ("", False), ("-x", False), ("a" * 41, False)])
def test_presenter_name_rule(name, ok):
    assert bool(PRESENTER_NAME.match(name)) == ok


def test_presenter_paths_from_folder(tmp_path):
    p = PresenterPaths.from_folder(tmp_path / "data" / "interim" / "bob")
    assert p.frames == tmp_path / "data/interim/bob/frames.npy"
    assert p.composites == tmp_path / "data/processed/bob/composites.npy"
    with pytest.raises(InputError, match="no such presenter folder"):
        p.raw_video()


def _dvc_stage_paths() -> set[str]:
    """Every path named in dvc.yaml outs/deps/metrics, with ${item} replaced by 'demo'."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found: set[str] = set()
    for stage in stages.values():
        body = stage.get("do", stage)
        for key in ("deps", "outs", "metrics"):
            for entry in body.get(key, []):
                found.add((next(iter(entry)) if isinstance(entry, dict) else entry).replace("${item}", "demo"))
    return found


def test_dvc_yaml_paths_agree_with_paths_module():
    declared = _dvc_stage_paths()
    p = PresenterPaths.of("demo")
    for path in [p.frames, p.frames_table, p.audio, p.landmarks, p.flame, p.features, p.features_table,
                 p.lip_coeffs, p.composites, p.composites_table, GAN_PRIOR, GAN_PRIOR_STATE]:
        assert str(path) in declared, f"{path} is not declared in dvc.yaml"
    for entry in declared:  # every module a stage depends on exists
        if entry.startswith("src/"):
            assert (ROOT / entry).exists(), f"dvc.yaml names {entry}, which does not exist"


def test_dvc_yaml_stage_modules_exist():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        module = re.search(r"python -m ([\w.]+)", cmd).group(1)
        path = ROOT / "src" / (module.replace(".", "/") + ".py")
        assert path.exists(), f"stage {name} runs {module}, which does not exist"


def test_cli_unknown_command_exits_2():
    out = subprocess.run([sys.executable, "-m", "talkinghead.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command 'frobnicate'" in out.stderr


@pytest.mark.parametrize("listing", ["presenters:\n", "presenters: []\n", "presenters: demo\n"])
def test_repro_without_a_presenter_list_is_one_error_before_dvc(listing, tmp_path, monkeypatch, capsys):
    from talkinghead import cli
    from talkinghead.tracking import PARENT_ENV

    (tmp_path / "params.yaml").write_text("# who the per-presenter stages run for\n" + listing)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PARENT_ENV, "no-mlflow")  # an outer run: repro starts none of its own
    started = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: started.append(cmd) or 255)  # DVC's failure
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["repro"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and not started
    assert err.startswith("error: params.yaml: `presenters` is ") and err.count("\n") == 1
    assert "talkinghead add-presenter NAME VIDEO" in err and "make demo" in err


def test_repro_with_a_gan_prior_presenter_not_listed_is_one_error_before_dvc(tmp_path, monkeypatch, capsys):
    """A project without the demo presenter must name another prior presenter (or none) before DVC runs."""
    from talkinghead import cli
    from talkinghead.tracking import PARENT_ENV

    params = tmp_path / "params.yaml"
    params.write_text("presenters:\n  - anna\ngan_prior:\n  presenter: demo\n  max_steps: 500\n  max_seconds: 150\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PARENT_ENV, "no-mlflow")
    started = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: started.append(cmd) or 0)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["repro"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and not started
    assert err.startswith("error: params.yaml: gan_prior.presenter is 'demo', not one of the presenters (anna)")
    assert err.count("\n") == 1
    params.write_text(params.read_text().replace("max_steps: 500", "max_steps: 0"))  # no prior: nothing to check
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["repro"])
    assert exit_info.value.code == 0 and len(started) == 1
    # the footage sync detector is fitted on the generated demo: a project without it says so before DVC runs
    params.write_text(params.read_text() + "sync:\n  presenter: demo\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["repro"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(started) == 1
    assert err.startswith("error: params.yaml: sync.presenter is 'demo', not one of the presenters (anna)")


def test_mlflow_child_runs_nest_under_parent(tmp_path, monkeypatch):
    from talkinghead import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    parent = tracking.start_parent_run("test")
    monkeypatch.setenv(tracking.PARENT_ENV, parent)
    with tracking.stage_run("extract", "bob", {"extract": {"crop_size": 256}}) as mlflow:
        mlflow.log_metrics({"frames": 10.0}, step=0)
        child = mlflow.active_run().info.run_id
    run = mlflow.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["dvc_stage"] == "extract@bob" and run.data.tags["presenter"] == "bob"
    assert run.data.params["extract.crop_size"] == "256" and run.data.metrics["frames"] == 10.0


def test_store_is_anchored_at_the_project_root(tmp_path, monkeypatch):
    """A stage run anywhere in the project, or by `dvc exp run --temp` in a copy under .dvc/tmp/exps, logs to the
    project's own mlflow.db."""
    from talkinghead import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "data" / "interim").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "data" / "interim")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(copy))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_bare_dvc_repro_parent_spans_its_stages(tmp_path, monkeypatch):
    """Without `talkinghead repro`, the parent found by the dvc ancestor ends when the last stage ends."""
    import time

    from talkinghead import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "lr-sweep")
    monkeypatch.setattr(tracking, "_dvc_ancestor_key", lambda: "4242-1")
    with tracking.stage_run("extract", "bob") as mlflow:
        time.sleep(0.3)
        child = mlflow.active_run().info.run_id
    run = mlflow.get_run(child)
    parent = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "dvc exp lr-sweep"
    assert parent.info.end_time >= run.info.end_time - 5 and parent.info.end_time - parent.info.start_time >= 300


def test_facemesh_constants_match_mediapipe():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    from talkinghead import facemesh

    assert facemesh.LIPS == tuple(sorted({i for edge in FACEMESH_LIPS for i in edge}))
    loop = set(facemesh.INNER_UPPER) | set(facemesh.INNER_LOWER) | set(facemesh.OUTER_UPPER) | set(facemesh.OUTER_LOWER)
    assert loop == set(facemesh.LIPS)
    assert len(facemesh.INNER_LIP_PAIRS) == 9 and (13, 14) in facemesh.INNER_LIP_PAIRS


def test_torch_threads_sets_the_chosen_count_and_restores_it(monkeypatch):
    import torch

    from talkinghead.parallel import choose_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert choose_threads(3) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (1000.0, 0.0, 0.0))  # every core busy: auto is one thread
    assert choose_threads(0) == 1
