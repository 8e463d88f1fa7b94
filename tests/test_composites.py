"""composites stage: lower-face mask, mouth box, blending, and the stage end to end on synthetic inputs made with the
shipped open head model (landmarks = the model's own landmarks projected, so mask and render line up)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkinghead import schemas
from talkinghead import compositing as comp
from talkinghead.benchmarks.render import project_landmarks, synthetic_parameters, synthetic_presenter
from talkinghead.errors import InputError
from talkinghead.paths import PresenterPaths
from talkinghead.split import heldout_start
from talkinghead.stages import composites as stage

from configs import project_config, write_project_params

ROOT = Path(__file__).resolve().parents[1]
S = 128
PARAMS = project_config(comp.CompositesParams, "composites")


@pytest.fixture(scope="module")
def model():
    from talkinghead.headmodel import load_head_model

    return load_head_model()


# -- mask -------------------------------------------------------------------------------------------------------------
def test_mask_is_feathered_below_the_nose_line(model):
    lmk = project_landmarks(model, synthetic_parameters(1), S)[0]
    mask = comp.lower_face_mask(lmk, S, PARAMS)
    assert mask.shape == (S, S) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask.max() == 1.0  # the mouth region is fully replaced
    below = comp.nose_line_distance(lmk, S, PARAMS)
    assert mask[below <= 0].max() == 0.0  # nothing on or above the nose line
    # Ramp down the face's midline from the nose line: 0 -> 1 monotonically over `feather` pixels.
    feather = PARAMS.feather * S
    x = int(round(lmk[13, 0]))  # column through the inner upper lip
    column = mask[:, x]
    top = int(np.nonzero(below[:, x] > 0)[0][0])
    ramp = column[top:int(lmk[13, 1])]
    assert np.all(np.diff(ramp) >= -1e-6)
    full = top + int(np.nonzero(ramp >= 1.0 - 1e-6)[0][0])
    assert abs(below[full, x] - feather) <= 1.0, (below[full, x], feather)
    half = top + int(np.nonzero(ramp >= 0.5)[0][0])
    assert abs(below[half, x] - feather / 2) <= 1.0  # smoothstep is symmetric: half-way at half the width
    # Beyond the chin the mask is 0 once past dilation + a pixel outside the jaw contour.
    chin = lmk[comp.CHIN, :2]
    outside = int(np.ceil(chin[1] + PARAMS.dilation * S + 1.5))
    assert mask[outside:, int(chin[0])].max() == 0.0
    assert mask[int(chin[1]), int(chin[0])] > 0.0  # the chin itself is covered (grown contour)
    # Far from the face: nothing.
    assert mask[:5].max() == 0.0 and mask[:, :3].max() == 0.0


def test_nose_line_follows_head_roll(model):
    lmk = project_landmarks(model, synthetic_parameters(1, seed=3), S)[0]
    turn = cv2.getRotationMatrix2D((S / 2, S / 2), 20.0, 1.0)  # [2, 3], pixel-centre convention ignored: same for both
    rolled = lmk.copy()
    rolled[:, :2] = lmk[:, :2] @ turn[:, :2].T + turn[:, 2]
    upright = comp.lower_face_mask(lmk, S, PARAMS)
    expected = cv2.warpAffine(upright, turn, (S, S), flags=cv2.INTER_LINEAR)
    got = comp.lower_face_mask(rolled, S, PARAMS)
    assert np.abs(got - expected).mean() < 0.01
    assert np.abs(got - upright).mean() > 0.03  # the roll matters


def test_coverage_mask_stays_inside_the_render():
    coverage = np.zeros((S, S), np.float32)
    coverage[20:100, 30:110] = 1
    soft = comp.coverage_mask(coverage, S, PARAMS)
    assert soft[coverage == 0].max() == 0.0
    assert soft[60, 70] == 1.0
    width = PARAMS.coverage_feather * S
    assert 0 < soft[60, 30] < 1 and soft[60, 30 + int(np.ceil(width)) + 1] == 1.0
    # A pinhole in the render (a gap in the mesh) is filled; a hole larger than max_hole is not.
    coverage[50, 60] = 0
    coverage[70:80, 40:70] = 0  # 300 px > 0.001 * 128^2
    soft = comp.coverage_mask(coverage, S, PARAMS)
    assert soft[50, 60] == 1.0
    assert soft[75, 55] == 0.0 and soft[coverage == 0].sum() == 0.0 + soft[50, 60]


def test_follow_expression_moves_the_chin_and_fades_at_the_mask_edge():
    size = 128
    real = np.zeros((size, size, 3), np.uint8)
    real[90:] = 200  # a bright "neck" below a chin edge at y = 90
    region = comp.Region(40, 120, 30, 100)
    face = np.ones((80, 70), np.float32)
    face[:, :10] = 0.0  # the mask's edge: no warp there
    xs = np.linspace(40, 90, 11)
    fitted = np.stack([xs, np.full_like(xs, 90.0)], axis=1)  # the chin where the frame has it ...
    rendered = fitted - [0.0, 8.0]  # ... and 8 px higher in the expression being rendered (the mouth opens less)
    same = comp.follow_expression(real, region, face, fitted, fitted, sigma=4.0)
    np.testing.assert_array_equal(same, real[region.slices])  # no expression change: the frame itself
    moved = comp.follow_expression(real, region, face, fitted, rendered, sigma=4.0)
    column = moved[:, 35, 0].astype(int)  # x = 65, mid-chin; rows are y - 40
    edge = int(np.argmax(column > 100)) + region.y0
    assert 81 <= edge <= 83  # the chin edge follows the rendered landmarks up by 8 px
    np.testing.assert_array_equal(moved[:, :10], real[40:120, 30:40])  # outside the mask: untouched
    off = comp.follow_expression(real, region, face, fitted, rendered, sigma=0.0)
    np.testing.assert_array_equal(off, real[region.slices])  # composites.warp_sigma 0: off


# -- mouth box --------------------------------------------------------------------------------------------------------
def test_mouth_box_is_square_and_contains_the_lips(model):
    lmks = project_landmarks(model, synthetic_parameters(8, seed=1, jaw=0.2), S)
    rng = np.random.default_rng(0)
    lmks[4:, :, :2] += rng.uniform(-40, 40, (4, 1, 2))  # mouths near the border: the box moves inside
    for lmk in lmks:
        x0, y0, x1, y1 = comp.mouth_box(lmk, S, PARAMS)
        assert all(isinstance(v, int) for v in (x0, y0, x1, y1))
        assert x1 - x0 == y1 - y0 > 0
        assert 0 <= x0 and 0 <= y0 and x1 <= S and y1 <= S
        lips = lmk[list(comp.LIPS), :2]
        inside_image = np.all((lips >= 0) & (lips < S), axis=1)
        assert np.all(lips[inside_image] >= [x0, y0]) and np.all(lips[inside_image] <= [x1, y1])
        extent = (lips.max(0) - lips.min(0)).max()
        assert x1 - x0 >= extent * (1 + 2 * PARAMS.mouth_margin)


# -- blending ---------------------------------------------------------------------------------------------------------
def test_composite_is_real_where_mask_0_and_render_where_mask_1():
    rng = np.random.default_rng(0)
    render = rng.integers(0, 256, (2, S, S, 3), dtype=np.uint8)
    real = rng.integers(0, 256, (2, S, S, 3), dtype=np.uint8)
    mask = rng.choice([0.0, 1.0, 0.5, 0.25], (2, S, S)).astype(np.float32)
    out = comp.composite(render, real, mask)
    assert out.dtype == np.uint8 and out.shape == real.shape
    np.testing.assert_array_equal(out[mask == 0], real[mask == 0])
    np.testing.assert_array_equal(out[mask == 1], render[mask == 1])
    half = mask == 0.5
    expected = (real[half].astype(float) + render[half]) / 2
    assert np.abs(out[half] - expected).max() <= 0.5 + 1e-6


# -- stage ------------------------------------------------------------------------------------------------------------
def write_presenter(root: Path, model, n: int, name: str = "tiny") -> tuple[PresenterPaths, dict, np.ndarray]:
    """Every input of the stage for a synthetic presenter under root; lip model: jaw wide open, fit: closed."""
    write_project_params(root, render={"upper_teeth": 0.3}, split={"heldout_fraction": 0.2},
                 composites={"examples": 3, "batch_size": 4})
    return synthetic_presenter(root, model, n, S, name, jaw=0.3)


def test_stage_end_to_end(tmp_path, monkeypatch, model):
    n = 10
    paths, fitted, lmk = write_presenter(tmp_path, model, n)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    stage.main([str(paths.interim.relative_to(tmp_path))])

    out = np.load(paths.composites)
    frames = np.load(paths.frames)
    assert out.shape == (n, S, S, 3) and out.dtype == np.uint8
    table = schemas.read_table(paths.composites_table, schemas.COMPOSITES)
    assert list(table["frame"]) == list(range(n))
    assert list(table["heldout"]) == [i >= heldout_start(n, 0.2) for i in range(n)]
    boxes = schemas.column_array(table, "mouth_box")
    for i in range(n):
        changed = np.any(out[i] != frames[i], axis=-1)
        assert changed.sum() > 200  # the lower face was replaced
        above = comp.nose_line_distance(lmk[i], S, PARAMS) <= 0
        assert not changed[above].any()  # never above the nose line
        # The mouth (from the lip coefficients: jaw open) shows teeth and a dark cavity inside the mouth box.
        x0, y0, x1, y1 = boxes[i].astype(int)
        mouth = out[i, y0:y1, x0:x1].reshape(-1, 3).astype(int)
        assert (mouth.sum(-1) < 120).sum() > 5, i  # cavity
        assert (np.abs(mouth - [219, 212, 194]).max(-1) < 25).sum() > 3, i  # teeth_color (0.86, 0.83, 0.76)
    strips = sorted((paths.report("composites") / "examples").glob("*.png"))
    assert len(strips) == 3
    metrics = json.loads((paths.report("composites") / "metrics.json").read_text())
    assert metrics["frames"] == n and 0 < metrics["mask_fraction"] <= metrics["render_coverage"] < 1
    assert metrics["seconds"] > 0
    strip = cv2.imread(str(strips[0]))
    assert strip.shape == (S, 4 * S, 3)


def test_stage_refuses_inconsistent_inputs(tmp_path, monkeypatch, capsys, model):
    paths, _, _ = write_presenter(tmp_path, model, 6)
    np.save(paths.frames, np.zeros((5, S, S, 3), np.uint8))  # one frame short of the tables
    with pytest.raises(InputError, match="landmarks.parquet"):
        stage.load_inputs(paths)
    paths.lip_coeffs.unlink()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        stage.main([str(paths.interim)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "landmarks.parquet" in err  # first problem found wins; the message names the file
    assert not paths.composites.exists()


def test_frame_without_landmarks_keeps_the_real_frame():
    lmk = np.full((478, 3), np.nan, np.float32)
    assert comp.lower_face_mask(lmk, S, PARAMS).max() == 0.0
    x0, y0, x1, y1 = comp.mouth_box(lmk, S, PARAMS)
    assert 0 <= x0 < x1 <= S and x1 - x0 == y1 - y0


def test_unknown_parameter_is_refused(tmp_path, monkeypatch, capsys):
    write_project_params(tmp_path, composites={"feathr": 0.1})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        stage.main(["data/interim/tiny"])
    assert exc.value.code == 2
    assert "params.yaml: unknown key(s) in composites: feathr" in capsys.readouterr().err


def test_render_pinholes_are_painted_from_the_surrounding_surface():
    from talkinghead.compositing import fill_render_pinholes

    size = 64
    image = np.zeros((size, size, 3), np.uint8)
    image[16:48, 16:48] = (200, 150, 120)  # a covered patch of "skin" ...
    coverage = np.zeros((size, size), np.float32)
    coverage[16:48, 16:48] = 1.0
    image[30, 30:33] = 0  # ... with a 3-pixel crack showing the black background
    coverage[30, 30:33] = 0.0
    filled = fill_render_pinholes(image, coverage, size, dataclasses.replace(PARAMS, max_hole=0.01))
    assert np.abs(filled[30, 30:33].astype(int) - (200, 150, 120)).max() <= 10  # crack takes the skin colour
    assert np.array_equal(filled[:16], image[:16])  # the uncovered outside is not a pinhole: untouched
    big_hole = coverage.copy()
    big_hole[20:44, 20:44] = 0.0  # larger than max_hole: a real opening, left alone
    assert np.array_equal(fill_render_pinholes(image, big_hole, size, dataclasses.replace(PARAMS, max_hole=0.01)), image)
