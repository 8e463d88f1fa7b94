"""OpenGL renderer: geometry matches the weak-perspective projection; depth test, mouth interior, batching, errors."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from talkinghead.render import Renderer, RenderParams
from talkinghead.render import renderer as renderer_module
from talkinghead.render.meshes import grid_plane, uv_sphere

from configs import project_config


STYLE = project_config(RenderParams, "render")  # the project's mouth colours, culling on, no MSAA

S = 128


def _rotation(axis_angle) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis_angle, np.float64))[0].astype(np.float32)


def _rasterise(ndc: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """Reference silhouette, independent of OpenGL: a pixel is covered when its centre (i + 0.5) lies inside some
    projected triangle (edge-function test, either winding)."""
    px = np.stack([(ndc[:, 0] + 1) * size / 2, (1 - ndc[:, 1]) * size / 2], -1)  # [V, 2] pixels, y down
    covered = np.zeros((size, size), bool)
    for a, b, c in px[faces]:
        x0, y0 = np.floor(np.minimum(np.minimum(a, b), c)).astype(int).clip(0, size - 1)
        x1, y1 = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int).clip(0, size - 1)
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1] + 0.5
        edges = [(q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0]) for p, q in ((a, b), (b, c), (c, a))]
        inside = np.all([e >= 0 for e in edges], 0) | np.all([e <= 0 for e in edges], 0)
        covered[y0:y1 + 1, x0:x1 + 1] |= inside
    return covered


@pytest.fixture(scope="module")
def sphere():
    vertices, faces = uv_sphere(24, 48, radius=1.0)
    return vertices, faces


@pytest.fixture(scope="module")
def sphere_renderer(sphere):
    vertices, faces = sphere
    renderer = Renderer(faces, len(vertices), S, STYLE)
    yield renderer
    renderer.release()


def test_silhouette_matches_projected_mesh(sphere, sphere_renderer):
    vertices, faces = sphere
    # An ellipsoid, rotated and shifted off-centre: asymmetric, so a flipped or transposed image would fail.
    ndc = (vertices * [0.35, 0.6, 0.45]) @ _rotation([0.3, -0.5, 0.7]).T + [0.25, 0.2, 0.0]
    colors = np.full_like(vertices, 0.5)
    out = sphere_renderer.render(ndc[None], colors[None])
    assert out.images.shape == (1, S, S, 3) and out.images.dtype == np.uint8
    assert out.mask.shape == (1, S, S) and out.mask.dtype == np.float32
    assert set(np.unique(out.mask)) <= {0.0, 1.0}
    reference = _rasterise(ndc, faces, S)
    got = out.mask[0] > 0.5
    iou = (got & reference).sum() / (got | reference).sum()
    assert iou > 0.98, iou
    # y up in NDC = towards row 0: the shape sits in the upper right quadrant of the image.
    rows, cols = np.nonzero(got)
    assert rows.mean() < S / 2 < cols.mean()
    # Background stays black; covered pixels carry the vertex colour.
    assert out.images[0][~got].max() == 0
    assert np.abs(out.images[0][got].astype(int) - 128).max() <= 1


def test_nearer_triangle_wins():
    near, faces = grid_plane(2, half=0.5, z=0.3)
    far, _ = grid_plane(2, half=0.5, z=-0.3)
    far = far + [0.3, 0.0, 0.0]  # overlap in x in [-0.2, 0.5]
    for near_first in (True, False):
        parts = [near, far] if near_first else [far, near]
        vertices = np.concatenate(parts)
        all_faces = np.concatenate([faces, faces + len(parts[0])])
        colors = np.concatenate([np.tile([1.0, 0, 0], (len(near), 1)), np.tile([0, 1.0, 0], (len(far), 1))])
        if not near_first:
            colors = colors[::-1].copy()  # colours follow their plane
        renderer = Renderer(all_faces, len(vertices), S, STYLE)
        out = renderer.render(vertices[None], colors[None])
        renderer.release()
        col = int((0.15 + 1) * S / 2)  # inside the overlap
        assert tuple(out.images[0, S // 2, col]) == (255, 0, 0), near_first
        col_far_only = int((0.7 + 1) * S / 2)
        assert tuple(out.images[0, S // 2, col_far_only]) == (0, 255, 0)


def test_mouth_interior_is_drawn_with_teeth_and_cavity():
    n = 20
    vertices, faces = grid_plane(n, half=0.9)
    grid_rows = np.repeat(np.arange(n + 1), n + 1)  # row i of vertex (i, j), top to bottom
    interior_t = np.full(len(vertices), -1.0, np.float32)
    band = (grid_rows >= 5) & (grid_rows <= 15)  # the "mouth": rows 5..15, t = 0 at the top (upper lip)
    interior_t[band] = (grid_rows[band] - 5) / 10.0
    skin = np.array([0.9, 0.6, 0.5], np.float32)
    colors = np.tile(skin, (len(vertices), 1))
    style = STYLE
    renderer = Renderer(faces, len(vertices), S, style)
    out = renderer.render(vertices[None], colors[None], interior_t)
    renderer.release()
    image = out.images[0].astype(np.float32) / 255

    def row_of_t(t):  # image row at interior_t = t (grid row 5 + 10 t, 1.8 NDC over n rows)
        y_ndc = 0.9 - (5 + 10 * t) * 1.8 / n
        return int(round((1 - y_ndc) * S / 2))

    col = S // 2
    np.testing.assert_allclose(image[row_of_t(0.08), col], style.teeth_color, atol=0.02)  # upper teeth
    np.testing.assert_allclose(image[row_of_t(0.96), col], style.teeth_color, atol=0.02)  # lower teeth
    np.testing.assert_allclose(image[row_of_t(style.tongue_center), col], style.tongue_color, atol=0.02)
    middle = image[row_of_t(0.4), col]
    assert middle.max() < 0.35  # dark cavity between the teeth
    np.testing.assert_allclose(image[row_of_t(-0.3), col], skin, atol=0.01)  # skin above the mouth
    np.testing.assert_allclose(image[row_of_t(1.3), col], skin, atol=0.01)  # skin below
    # The upper teeth band is thicker than the lower one.
    teeth = np.abs(image[:, col] - style.teeth_color).max(-1) < 0.05
    rows = np.nonzero(teeth)[0]
    upper = rows[rows < row_of_t(0.5)]
    lower = rows[rows > row_of_t(0.5)]
    assert len(upper) > len(lower) > 0
    inside = slice(int(0.1 * S / 2) + 1, int(1.9 * S / 2) - 1)  # the plane spans NDC [-0.9, 0.9]
    assert out.mask[0][inside, inside].min() == 1.0  # mouth included
    assert out.mask[0][:, :int(0.1 * S / 2) - 1].max() == 0.0


def test_batch_equals_sequential(sphere, sphere_renderer):
    vertices, faces = sphere
    rng = np.random.default_rng(0)
    ndc = np.stack([vertices @ _rotation(rng.normal(size=3)).T * 0.6 + [*rng.uniform(-0.2, 0.2, 2), 0]
                    for _ in range(3)]).astype(np.float32)
    colors = rng.uniform(0, 1, (3, *vertices.shape)).astype(np.float32)
    interior_t = np.where(vertices[:, 2] > 0.8, (vertices[:, 1] + 1) / 2, -1).astype(np.float32)
    batch = sphere_renderer.render(ndc, colors, interior_t)
    for b in range(3):
        single = sphere_renderer.render(ndc[b:b + 1], colors[b:b + 1], interior_t)
        np.testing.assert_array_equal(single.images[0], batch.images[b])
        np.testing.assert_array_equal(single.mask[0], batch.mask[b])
    assert not np.array_equal(batch.images[0], batch.images[1])


def test_accepts_torch_tensors(sphere, sphere_renderer):
    import torch
    vertices, _ = sphere
    ndc = vertices[None] * 0.5
    colors = np.full_like(ndc, 0.25)
    a = sphere_renderer.render(ndc, colors)
    b = sphere_renderer.render(torch.from_numpy(ndc), torch.from_numpy(colors))
    np.testing.assert_array_equal(a.images, b.images)


def test_bad_shapes_are_refused(sphere, sphere_renderer):
    vertices, _ = sphere
    with pytest.raises(ValueError, match="ndc must be"):
        sphere_renderer.render(vertices[None, :-1], vertices[None, :-1])
    with pytest.raises(ValueError, match="face indices"):
        Renderer(np.array([[0, 1, 5]]), 3, S, STYLE)


def test_missing_egl_gives_install_hint(monkeypatch):
    import moderngl

    def no_egl(*args, **kwargs):
        raise Exception("eglGetDisplay failed (simulated)")

    monkeypatch.setattr(moderngl, "create_standalone_context", no_egl)
    with pytest.raises(RuntimeError) as info:
        Renderer(np.array([[0, 1, 2]]), 3, S, STYLE)
    message = str(info.value)
    assert "EGL" in message and "simulated" in message
    for package in ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgbm1"):
        assert package in message
    assert len(renderer_module.CONTEXT_ATTEMPTS) >= 2  # every fallback was tried before giving up
    assert message.count("eglGetDisplay failed") == len(renderer_module.CONTEXT_ATTEMPTS)


def test_render_parameters_with_the_open_head_model():
    """The full chain (model -> to_ndc -> albedo -> normals -> SH shade -> rasterise) on the shipped open model:
    silhouette = the model's projected mesh; a wide-open jaw shows the mouth interior at the projected mouth."""
    import torch

    from talkinghead.headmodel import camera, load_head_model
    from talkinghead.headmodel.sh import ambient_lighting
    from talkinghead.render import render_parameters

    model = load_head_model()
    b = 2
    expression = torch.zeros(b, 53)
    expression[1, 50] = 0.35  # jaw open (axis-angle about x)
    params = {"shape": torch.zeros(b, 100), "expression": expression, "texture": torch.zeros(b, 50),
              "lighting": ambient_lighting(b, 1.0), "camera": torch.tensor([[5.0, 0.05, -0.05]] * b),
              "pose": torch.tensor([[0.0, 0.3, 0.0, 0, 0, 0]] * b)}
    style = STYLE
    renderer = Renderer(model.faces.numpy(), model.num_vertices, S, style)
    out = render_parameters(model, renderer, params)
    renderer.release()
    with torch.no_grad():
        vertices = model(params["shape"], params["expression"], params["pose"]).vertices
        ndc = camera.to_ndc(vertices, params["camera"]).numpy()
    for i in range(b):
        reference = _rasterise(ndc[i], model.faces.numpy(), S)
        got = out.mask[i] > 0.5
        assert (got & reference).sum() / (got | reference).sum() > 0.98
    # Teeth pixels appear only with the jaw open, and near the projected mouth.
    teeth = np.abs(out.images.astype(np.float32) / 255 - style.teeth_color).max(-1) < 0.04  # [B, S, S]
    assert teeth[1].sum() > 5 and teeth[1].sum() > 3 * teeth[0].sum()
    mouth = camera.project(vertices[1:2, model.inner_lip_upper_ids], params["camera"][:1], S)[0].numpy().mean(0)
    rows, cols = np.nonzero(teeth[1])
    assert np.hypot(cols.mean() - mouth[0], rows.mean() - mouth[1]) < 0.1 * S


def test_msaa_smooths_edges_and_keeps_the_mask_binary(sphere):
    vertices, faces = sphere
    ndc = (vertices * [0.6, 0.4, 0.5]) @ _rotation([0.2, 0.1, 0.4]).T
    colors = np.ones_like(vertices)
    aliased = Renderer(faces, len(vertices), S, STYLE)
    smooth = Renderer(faces, len(vertices), S, dataclasses.replace(STYLE, samples=4))
    a = aliased.render(ndc[None], colors[None])
    b = smooth.render(ndc[None], colors[None])
    aliased.release()
    smooth.release()
    assert set(np.unique(a.images)) == {0, 255}
    edge_levels = set(np.unique(b.images)) - {0, 255}
    assert len(edge_levels) >= 3  # partially covered pixels get intermediate values
    assert set(np.unique(b.mask)) == {0.0, 1.0}
    reference = _rasterise(ndc, faces, S)
    got = b.mask[0] > 0.5
    assert (got & reference).sum() / (got | reference).sum() > 0.98


def test_back_faces_are_culled_but_never_the_mouth_interior():
    vertices, faces = grid_plane(1, half=0.5)  # two counter-clockwise (front-facing) triangles
    flipped = faces[:, ::-1].copy()  # clockwise on screen: seen from behind
    colors = np.full((1, len(vertices), 3), 0.5, np.float32)
    skin = np.full(len(vertices), -1.0, np.float32)
    interior = np.linspace(0, 1, len(vertices)).astype(np.float32)
    for cull, expect_skin in ((True, 0.0), (False, 1.0)):
        renderer = Renderer(flipped, len(vertices), S, dataclasses.replace(STYLE, cull_back_faces=cull))
        assert renderer.render(vertices[None], colors, skin).mask[0, S // 2, S // 2] == expect_skin
        assert renderer.render(vertices[None], colors, interior).mask[0, S // 2, S // 2] == 1.0
        renderer.release()
    renderer = Renderer(faces, len(vertices), S, STYLE)  # culling on (params.yaml); front faces drawn
    assert renderer.render(vertices[None], colors, skin).mask[0, S // 2, S // 2] == 1.0
    renderer.release()


def test_a_process_can_render_and_then_import_triton():
    # Mesa's llvmpipe and triton each bring an LLVM: triton imported after an EGL context existed segfaulted (torch
    # imports it lazily, e.g. torch._dynamo on an optimiser's first step). Its own process: a crash must not take
    # the test run down with it.
    import subprocess
    import sys

    code = ("from talkinghead.render.renderer import create_context\n"
            "create_context().info\n"
            "import torch._dynamo\n"
            "print('rendered, then imported torch._dynamo')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "imported torch._dynamo" in done.stdout
