"""Tests of the fit stage: parameter recovery from self-generated landmarks, step preservation, interpolation of
undetected frames, texture/lighting recovery, schema round-trip and a stage smoke test.

Most tests use a small stand-in head model (random template + random linear bases + an LBS jaw, same forward
signature as the real one) so they do not depend on the shipped asset; the stage smoke test uses the real open
model when assets/open_head_model.npz exists.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import Delaunay

from talkinghead import schemas
from talkinghead.fitting import (LIP_MP_IDS, RIGID_MP_IDS, FitConfig, FrameParameters, fit_metrics, fit_sequence,
                                 fit_texture_lighting, interpolate_missing, project_landmarks, rigid_init,
                                 visible_geometry)
from talkinghead.headmodel import camera as head_camera
from talkinghead.headmodel import sh
from talkinghead.headmodel.geometry import vertex_normals
from talkinghead.headmodel.base import HeadModel
from talkinghead.headmodel.lbs import batch_rodrigues, blend_shapes
from talkinghead.stages import fit as fit_stage

from configs import project_config, write_project_params

S = 256


class StandInModel(HeadModel):
    """Random face-like point cloud with random shape/expression bases and a jaw hinge (LBS, two joints)."""

    def __init__(self, seed: int = 0, n_other: int = 300):
        rng = np.random.default_rng(seed)
        ids = sorted(set(LIP_MP_IDS) | set(RIGID_MP_IDS) | set(rng.choice(468, n_other, replace=False).tolist()))
        v = len(ids)
        # Points on the front of an ellipsoid ~ 16 x 22 cm, lips around y = -0.05, eye corners at y = +0.03.
        xy = rng.uniform([-0.08, -0.11], [0.08, 0.11], size=(v, 2))
        lip = np.isin(ids, LIP_MP_IDS)
        xy[lip] = np.c_[rng.uniform(-0.04, 0.04, lip.sum()), rng.uniform(-0.08, -0.03, lip.sum())]
        xy[ids.index(33)], xy[ids.index(263)] = (-0.05, 0.03), (0.05, 0.03)
        z = 0.06 * np.sqrt(np.clip(1 - (xy[:, 0] / 0.09) ** 2 - (xy[:, 1] / 0.12) ** 2, 0.05, 1))
        template = np.c_[xy, z].astype(np.float32)
        faces = Delaunay(xy).simplices
        a, b, c = (template[faces[:, k]] for k in range(3))
        flip = np.cross(b - a, c - a)[:, 2] < 0  # make triangles counter-clockwise seen from +z
        faces[flip] = faces[flip][:, [0, 2, 1]]
        super().__init__(faces=faces, landmark_mp_ids=ids, lip_vertex_ids=np.flatnonzero(lip),
                         inner_lip_upper_ids=[ids.index(13)], inner_lip_lower_ids=[ids.index(14)],
                         interior_t=-np.ones(v), albedo_mean=np.full((v, 3), 0.6),
                         albedo_basis=rng.normal(0, 0.03, (v, 3, 50)), name="stand-in")
        self.register_buffer("template", torch.as_tensor(template))
        self.register_buffer("shape_basis", torch.as_tensor(rng.normal(0, 0.003, (v, 3, 100)), dtype=torch.float32))
        self.register_buffer("expression_basis",
                             torch.as_tensor(rng.normal(0, 0.002, (v, 3, 50)), dtype=torch.float32))
        self.register_buffer("jaw_pivot", torch.tensor([0.0, 0.0, -0.08]))
        lower = 1 / (1 + np.exp((xy[:, 1] + 0.04) / 0.01))  # below the mouth corners: moves with the jaw
        self.register_buffer("jaw_weights", torch.as_tensor(lower, dtype=torch.float32))

    def deform(self, shape, expression):
        vertices = (self.template[None] + blend_shapes(shape, self.shape_basis)
                    + blend_shapes(expression[:, :50], self.expression_basis))
        jaw = batch_rodrigues(expression[:, 50:53])
        rotated = torch.einsum("bij,bvj->bvi", jaw, vertices - self.jaw_pivot) + self.jaw_pivot
        return vertices + self.jaw_weights[None, :, None] * (rotated - vertices)

    def landmarks_from(self, vertices):
        return vertices


def synthesise(model, n: int, seed: int = 1, jaw: np.ndarray | None = None, noise_px: float = 0.3):
    """Smooth random parameters -> (lmk_crop [N,478,3], truth dict of numpy arrays)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    shape = rng.normal(0, 1, 100).astype(np.float32)
    expression = np.zeros((n, 53), np.float32)
    phase = rng.uniform(0, 1, 50)
    expression[:, :50] = rng.normal(0, 0.8, 50) * np.sin(2 * np.pi * (t * rng.uniform(0.5, 2, 50) + phase))
    expression[:, 50] = 0.12 * (1 + np.sin(2 * np.pi * 3 * t[:, 0])) if jaw is None else jaw
    # Head motion of a presenter: 0.15 rad nods and turns, slower than the 40-frame (1.6 s) clip.
    rotation = (0.15 * np.sin(2 * np.pi * (t * [0.35, 0.25, 0.15] + rng.uniform(0, 1, 3)))).astype(np.float32)
    camera = np.c_[np.full(n, 5.0), 0.05 * np.sin(2 * np.pi * t[:, 0]), 0.02 * t[:, 0]].astype(np.float32)
    with torch.no_grad():
        out = model(torch.as_tensor(shape).expand(n, -1), torch.as_tensor(expression),
                    torch.cat([torch.as_tensor(rotation), torch.zeros(n, 3)], 1))
        px = head_camera.project(out.landmarks, torch.as_tensor(camera), S).numpy()
        z = out.landmarks[..., 2].numpy() * 5.0 * S / 2
    lmk = np.zeros((n, schemas.N_LANDMARKS, 3), np.float32)
    ids = model.landmark_mp_ids.numpy()
    lmk[:, ids, :2] = px + rng.normal(0, noise_px, px.shape)
    lmk[:, ids, 2] = z
    return lmk, {"shape": shape, "expression": expression, "rotation": rotation, "camera": camera}


FAST = dict(shape_frames=24, device="cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return StandInModel()


def test_rigid_init_recovers_rotation():
    rng = np.random.default_rng(0)
    points = rng.normal(0, 0.05, (50, 3))
    rot = np.array([[0.2, -0.1, 0.05], [-0.3, 0.25, 0.0]])
    mats = batch_rodrigues(torch.as_tensor(rot, dtype=torch.float32)).numpy()
    ndc = 4.0 * np.einsum("nij,lj->nli", mats, points)[..., :2] + [[[0.1, -0.2]], [[0.0, 0.3]]]
    rotation, camera = rigid_init(points, ndc)
    np.testing.assert_allclose(rotation, rot, atol=1e-4)
    np.testing.assert_allclose(camera, [[4.0, 0.1, -0.2], [4.0, 0.0, 0.3]], atol=1e-4)


def test_fit_recovers_parameters(model):
    lmk, truth = synthesise(model, 40)
    detected = np.ones(40, bool)
    shape, params = fit_sequence(model, lmk, detected, S, project_config(FitConfig, "fit", **FAST))
    jaw_err = np.abs(params.expression[:, 50:].numpy() - truth["expression"][:, 50:]).max()
    rot_err = np.abs(params.rotation.numpy() - truth["rotation"]).max()
    scale_err = np.abs(params.camera[:, 0].numpy() / truth["camera"][:, 0] - 1).max()
    assert jaw_err < 0.03, jaw_err
    assert rot_err < 0.03, rot_err
    assert scale_err < 0.05, scale_err
    # Expression: per-frame coefficients correlate with the truth (priors shrink them a little).
    corr = np.corrcoef(params.expression[:, :50].numpy().ravel(), truth["expression"][:, :50].ravel())[0, 1]
    assert corr > 0.8, corr
    pred = project_landmarks(model, shape, params, S)[..., :2].numpy()
    metrics = fit_metrics(pred, lmk, detected, model.landmark_mp_ids.numpy())
    assert metrics["nme"] < 0.01 and metrics["lip_nme"] < 0.01, metrics


def test_smoothing_keeps_jaw_step(model):
    n = 40
    jaw = np.where(np.arange(n) < 20, 0.0, 0.3).astype(np.float32)
    lmk, truth = synthesise(model, n, seed=2, jaw=jaw)
    _, params = fit_sequence(model, lmk, np.ones(n, bool), S, project_config(FitConfig, "fit", **FAST))
    fitted = params.expression[:, 50].numpy()
    assert fitted[19] < 0.05 and fitted[18] < 0.05, fitted[15:25]
    assert fitted[20] > 0.25 and fitted[21] > 0.25, fitted[15:25]


def test_undetected_frames_are_interpolated(model):
    n = 40
    lmk, truth = synthesise(model, n, seed=3)
    detected = np.ones(n, bool)
    detected[10:15] = False
    lmk[10:15] = 0.0  # garbage the fit must ignore
    _, params = fit_sequence(model, lmk, detected, S, project_config(FitConfig, "fit", **FAST))
    for name in ("rotation", "camera"):
        values = getattr(params, name).numpy()
        assert np.isfinite(values).all()
        expected = interpolate_missing(values, detected)
        np.testing.assert_allclose(values[10:15], expected[10:15], atol=1e-6)
        np.testing.assert_allclose(values[10:15], truth[name][10:15], atol=0.05 * np.abs(truth[name]).max() + 0.02)


def test_interpolate_missing():
    values = np.array([[0.0], [9.0], [9.0], [3.0], [9.0]])
    out = interpolate_missing(values, np.array([True, False, False, True, False]))
    np.testing.assert_allclose(out[:, 0], [0, 1, 2, 3, 3])
    with pytest.raises(ValueError):
        interpolate_missing(values, np.zeros(5, bool))


def test_texture_and_lighting_recovered_from_colours():
    """Colour the mesh with known texture + lighting by splatting vertex colours, then solve them back."""
    model = StandInModel(n_other=40)  # sparse points: the splatted patches rarely overlap
    n = 4
    lmk, truth = synthesise(model, n, seed=4, noise_px=0.0)
    # Neutral shape and expression: the stand-in's random bases crumple the surface, and its normals with it.
    params = FrameParameters(torch.zeros(n, 53), torch.as_tensor(truth["rotation"]), torch.as_tensor(truth["camera"]))
    shape = torch.zeros(100)
    # A moderate texture: brighter ones saturate the 8-bit frame, which no linear solve can undo.
    texture = torch.as_tensor(np.random.default_rng(5).normal(0, 0.3, 50), dtype=torch.float32)
    lighting = sh.ambient_lighting(n, 0.8)
    lighting.view(n, 9, 3)[:, 3, :] += 0.3  # light from the front (+z)
    with torch.no_grad():
        out = model(shape.expand(n, -1), params.expression, params.pose())
        colours = sh.shade(model.albedo(texture.expand(n, -1)), vertex_normals(out.vertices, model.faces), lighting)
        px = head_camera.project(out.vertices, params.camera, S).numpy()
    frames = np.zeros((n, S, S, 3), np.uint8)
    order = np.argsort(out.vertices[..., 2].numpy(), axis=1)  # far to near: nearer patches overwrite
    for i in range(n):  # constant 3x3 patches around each vertex: bilinear sampling at the vertex reads only them
        for v in order[i]:
            x, y = np.floor(px[i, v] - 0.5).astype(int)
            frames[i, y - 1:y + 3, x - 1:x + 3] = np.clip(colours[i, v].numpy() * 255, 0, 255).round()
    got_tex, got_light = fit_texture_lighting(model, frames, shape, params, S, project_config(FitConfig, "fit", texture_prior=1e-4, lighting_prior=1e-5))
    with torch.no_grad():
        normals = vertex_normals(out.vertices, model.faces)
        fitted = sh.shade(model.albedo(got_tex.expand(n, -1)), normals, got_light)
        _, _, visible = visible_geometry(model, shape, params, S, project_config(FitConfig, "fit").min_normal_z)
    error = (fitted - colours).abs().mean(-1)[visible]  # [visible vertices]
    assert visible.float().mean() > 0.5
    assert error.median() < 0.02 and error.mean() < 0.03, (error.median(), error.mean())


def test_stage_writes_schema_tables_and_reports(model, tmp_path):
    n = 30
    lmk, truth = synthesise(model, n, seed=6)
    detected = np.ones(n, bool)
    detected[5] = False
    frames = np.full((n, S, S, 3), 128, np.uint8)
    result = fit_stage.fit_presenter(model, lmk, detected, frames, project_config(FitConfig, "fit", **FAST), progress=False)
    table = fit_stage.parameters_table(result)
    path = tmp_path / "flame.parquet"
    schemas.write_table(table, path, schemas.PARAMETERS)
    back = schemas.read_table(path, schemas.PARAMETERS)
    assert len(back) == n and list(back["frame"]) == list(range(n))
    shapes = schemas.column_array(back, "shape")
    assert np.all(shapes == shapes[0]) and np.isfinite(schemas.column_array(back, "expression")).all()
    np.testing.assert_allclose(schemas.column_array(back, "pose"), result.pose, atol=1e-6)
    overlays = fit_stage.write_reports(tmp_path / "reports", result, frames, lmk, detected,
                                       model.faces.numpy(), model.landmark_mp_ids.numpy(), 3)
    assert len(overlays) == 3 and all(p.exists() for p in overlays)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["nme_pct"] < 2.0 and metrics["jitter_px"] >= 0
    assert metrics["nme_pct"] == pytest.approx(100 * result.metrics["nme"], abs=1e-4)  # in %, the unit in the name
    assert len(pd.read_csv(tmp_path / "reports" / "fit_error.csv")) == n


def test_stage_main_on_open_model(tmp_path, monkeypatch):
    """CLI end to end with the shipped open model on landmarks synthesised from it."""
    from talkinghead.headmodel import load_head_model

    real = load_head_model()
    n = 20
    lmk, _ = synthesise(real, n, seed=7)
    interim = tmp_path / "data" / "interim" / "tiny"
    frames = np.full((n, S, S, 3), 100, np.uint8)
    interim.mkdir(parents=True)
    np.save(interim / "frames.npy", frames)
    rows = pd.DataFrame({"frame": np.arange(n), "detected": np.ones(n, bool), "lmk_crop": list(lmk.reshape(n, -1)),
                         "lmk_orig": list(lmk[..., :2].reshape(n, -1))})
    schemas.write_table(rows, interim / "landmarks.parquet", schemas.LANDMARKS)
    write_project_params(tmp_path, fit={"shape_frames": 10, "shape_iters": 60, "frame_iters": 60})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    fit_stage.main([str(interim)])
    back = schemas.read_table(interim / "flame.parquet", schemas.PARAMETERS)
    assert len(back) == n
    assert json.loads((tmp_path / "reports" / "fit" / "tiny" / "metrics.json").read_text())["nme_pct"] < 3.0


def test_stage_main_rejects_missing_landmarks(tmp_path, capsys, monkeypatch):
    write_project_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        fit_stage.main([str(tmp_path / "nobody")])
    assert exc.value.code == 2
    assert "landmarks.parquet" in capsys.readouterr().err


def test_landmark_surrogate_matches_model(model):
    """The probed fast landmark model reproduces the stand-in's forward (shape, expression, jaw LBS, pose)."""
    from talkinghead.fitting import LandmarkSurrogate

    shape = torch.randn(100, generator=torch.Generator().manual_seed(0))
    surrogate, error = LandmarkSurrogate.identify(model, shape)
    assert error < 1e-4, error
    expression = torch.zeros(3, 53)
    expression[:, 50] = torch.tensor([0.0, 0.2, 0.4])  # jaw opening beyond the probed range
    pose = torch.tensor([[0.1, -0.2, 0.05, 0.0, 0.01, 0.0]]).expand(3, -1)
    truth = model(shape.expand(3, -1), expression, pose).landmarks
    np.testing.assert_allclose(surrogate(shape.expand(3, -1), expression, pose).landmarks, truth, atol=1e-4)
