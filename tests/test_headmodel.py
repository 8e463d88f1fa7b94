"""Head models: FLAME LBS on a small generated FLAME-format pickle, the restricted unpickler, the open model."""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from talkinghead.errors import InputError
from talkinghead.headmodel import HeadModel, HeadModelParams, load_flame_model, load_head_model, mouth_opening
from talkinghead.headmodel.camera import project, to_ndc
from talkinghead.headmodel.embedding import load_embedding
from talkinghead.headmodel.geometry import vertex_normals
from talkinghead.headmodel.lbs import batch_rodrigues
from talkinghead.headmodel.pickle_io import load_pickle
from talkinghead.headmodel.sh import ambient_lighting, shade, sh_basis

SHARED_FLAME = Path(__file__).resolve().parents[2] / "shared" / "flame"
N_V, N_J, N_JAW_V = 30, 5, 10  # vertices, joints, vertices skinned to the jaw


# ----------------------------------------------------------------------------------------------- fake FLAME file
class _Ch:
    """Stand-in for chumpy.ch.Ch while pickling: registered as chumpy.ch.Ch, state {'x': array} like chumpy's."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = {"x"}  # chumpy's state also holds sets (pickled via builtins.set at protocol 2)


def _dump_with_fake_chumpy(obj, path: Path, protocol: int) -> None:
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")
    _Ch.__module__, _Ch.__qualname__, _Ch.__name__ = "chumpy.ch", "Ch", "Ch"
    chumpy_ch.Ch = _Ch
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def fake_flame_arrays(seed: int = 0, template: np.ndarray | None = None, faces: np.ndarray | None = None) -> dict:
    rng = np.random.default_rng(seed)
    template = rng.normal(scale=0.05, size=(N_V, 3)) if template is None else template
    n_v = len(template)
    weights = np.zeros((n_v, N_J))
    weights[:N_JAW_V, 2] = 1.0  # jaw
    weights[N_JAW_V:20, 1] = 0.7  # neck
    weights[N_JAW_V:20, 0] = 0.3
    weights[20:, 0] = 1.0  # root
    posedirs = rng.normal(scale=1e-3, size=(n_v, 3, (N_J - 1) * 9))  # FLAME layout [V, 3, 36]
    posedirs[N_JAW_V:] = 0.0  # correctives only where the jaw skins, so non-jaw vertices must stay put
    regressor = np.zeros((N_J, n_v))
    for j in range(N_J):
        regressor[j, rng.choice(n_v, 4, replace=False)] = 0.25
    if faces is None:
        faces = np.array([(i, i + 1, i + 2) for i in range(n_v - 2)], dtype=np.uint32)
    return {
        "v_template": template,
        "shapedirs": rng.normal(scale=1e-2, size=(n_v, 3, 400)),
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": weights,
        "f": faces,
        "bs_style": "lbs",
    }


@pytest.fixture(scope="module", params=[2, 0, 5])
def fake_flame(request, tmp_path_factory) -> tuple[Path, dict]:
    """A FLAME-format pickle; shapedirs and v_template are chumpy objects, as in generic_model.pkl."""
    arrays = fake_flame_arrays()
    stored = dict(arrays, shapedirs=_Ch(arrays["shapedirs"]), v_template=_Ch(arrays["v_template"]))
    path = tmp_path_factory.mktemp("flame") / f"generic_model_p{request.param}.pkl"
    _dump_with_fake_chumpy(stored, path, protocol=request.param)
    return path, arrays


@pytest.fixture(scope="module")
def fake_embedding(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("emb") / "mediapipe_landmark_embedding.npz"
    np.savez(path, lmk_face_idx=np.array([0, 3, 5, 7], np.uint32),
             lmk_b_coords=np.array([[1, 0, 0], [0.2, 0.3, 0.5], [0, 0, 1], [0.6, 0.4, 0]], np.float64),
             landmark_indices=np.array([13, 14, 1, 152], np.int64))
    return path


def reference_lbs(arrays: dict, betas: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Plain numpy FLAME LBS for one sample (independent of lbs.py): betas [400], pose [5, 3] -> [V, 3]."""
    v = arrays["v_template"] + arrays["shapedirs"] @ betas
    joints = arrays["J_regressor"].toarray() @ v
    rots = batch_rodrigues(torch.as_tensor(pose)).numpy()
    feature = (rots[1:] - np.eye(3)).reshape(-1)
    v = v + np.einsum("vcp,p->vc", arrays["posedirs"], feature)
    parents = [-1, 0, 1, 1, 1]
    world = []
    for j in range(N_J):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    skin = []
    for j in range(N_J):
        t = world[j].copy()
        t[:3, 3] -= world[j][:3, :3] @ joints[j]
        skin.append(t)
    blended = np.einsum("vj,jab->vab", arrays["weights"], np.stack(skin))
    return np.einsum("vab,vb->va", blended, np.concatenate([v, np.ones((N_V, 1))], 1))[:, :3]


# ----------------------------------------------------------------------------------------------- FLAME tests
def test_restricted_unpickler_reads_chumpy_and_sparse(fake_flame):
    path, arrays = fake_flame
    assert "chumpy" not in sys.modules  # the stand-in never imports chumpy
    model = load_pickle(path)
    assert isinstance(model["shapedirs"], np.ndarray)
    np.testing.assert_array_equal(model["shapedirs"], arrays["shapedirs"])
    assert scipy.sparse.issparse(model["J_regressor"])
    np.testing.assert_array_equal(model["J_regressor"].toarray(), arrays["J_regressor"].toarray())


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loader_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"v_template": _Evil(marker)}, f, protocol=2)
    with pytest.raises(InputError) as info:
        load_flame_model(path)
    assert str(path) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()


def test_flame_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.pkl"
    with pytest.raises(InputError, match="nope.pkl"):
        load_head_model(HeadModelParams(flame_model=str(missing), landmark_embedding="x.npz", flame_masks=None))
    not_model = tmp_path / "list.pkl"
    not_model.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="list.pkl"):
        load_flame_model(not_model)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.zeros(3)})[:20])
    with pytest.raises(InputError, match="truncated.pkl"):
        load_flame_model(truncated)


class _UnknownCodec:
    """Pickles as a call of the allowed ``_codecs.encode`` with a codec that does not exist (LookupError on load)."""

    def __reduce__(self):
        import codecs

        return (codecs.encode, ("abc", "no-such-codec"))


def test_flame_pickle_failing_inside_an_allowed_call_names_the_file(tmp_path, fake_embedding):
    codec = tmp_path / "codec.pkl"
    codec.write_bytes(pickle.dumps({"v_template": _UnknownCodec()}, protocol=2))
    with pytest.raises(InputError, match=r"codec.pkl: not a readable model pickle \(LookupError: unknown encoding"):
        load_head_model(HeadModelParams(flame_model=str(codec), landmark_embedding=str(fake_embedding), flame_masks=None))
    text_faces = tmp_path / "text_faces.pkl"
    text_faces.write_bytes(pickle.dumps(dict(fake_flame_arrays(), f="not faces"), protocol=2))
    with pytest.raises(InputError, match=r"text_faces.pkl: not a FLAME model: unreadable faces 'f'"):
        load_flame_model(text_faces, fake_embedding)
    letter_faces = tmp_path / "letter_faces.pkl"  # a list of triangles, but of letters: fails only when built
    letter_faces.write_bytes(pickle.dumps(dict(fake_flame_arrays(), f=[["a", "b", "c"]]), protocol=2))
    with pytest.raises(InputError, match=r"letter_faces.pkl: not a usable FLAME model \(ValueError: invalid literal"):
        load_flame_model(letter_faces)  # (no embedding: it would refuse the one triangle first)


def test_flame_zero_parameters_give_template(fake_flame, fake_embedding):
    path, arrays = fake_flame
    model = load_flame_model(path, fake_embedding)
    z = model.zero_parameters(2)
    out = model(z["shape"], z["expression"], z["pose"])
    expected = torch.as_tensor(arrays["v_template"], dtype=torch.float32)
    torch.testing.assert_close(out.vertices[:, :N_V], expected.expand(2, -1, -1), atol=1e-6, rtol=0)


def test_flame_shape_and_expression_are_linear_in_the_right_components(fake_flame, fake_embedding):
    path, arrays = fake_flame
    model = load_flame_model(path, fake_embedding)
    rng = np.random.default_rng(1)
    a, b = (torch.as_tensor(rng.normal(size=(1, 100)), dtype=torch.float32) for _ in range(2))
    z = model.zero_parameters(1)

    def verts(shape, expression=z["expression"]):
        return model(shape, expression, z["pose"]).vertices - model.v_template

    torch.testing.assert_close(verts(a + 2 * b), verts(a) + 2 * verts(b), atol=1e-5, rtol=1e-4)
    expected = np.einsum("k,vck->vc", a[0].numpy(), arrays["shapedirs"][..., :100])
    np.testing.assert_allclose(verts(a)[0].numpy(), expected, atol=1e-5)
    expr = torch.zeros(1, 53)
    expr[0, 7] = 1.5  # FLAME expression component 7 = shapedirs[..., 307]
    np.testing.assert_allclose(verts(z["shape"], expr)[0].numpy(), 1.5 * arrays["shapedirs"][..., 307], atol=1e-5)


def test_flame_jaw_moves_only_jaw_vertices_and_matches_reference(fake_flame, fake_embedding):
    path, arrays = fake_flame
    model = load_flame_model(path, fake_embedding)
    z = model.zero_parameters(1)
    rng = np.random.default_rng(2)
    shape = torch.as_tensor(rng.normal(size=(1, 100)), dtype=torch.float32)
    expr = torch.zeros(1, 53)
    expr[0, :50] = torch.as_tensor(rng.normal(size=50))
    rest = model(shape, expr, z["pose"]).vertices
    expr[0, 50:] = torch.tensor([0.3, 0.05, -0.02])
    moved = model(shape, expr, z["pose"]).vertices
    change = (moved - rest)[0, :N_V].norm(dim=1)
    assert change[N_JAW_V:].max() < 1e-6
    assert change[:N_JAW_V].min() > 1e-4
    betas = np.zeros(400)
    betas[:100] = shape[0].numpy()
    betas[300:350] = expr[0, :50].numpy()
    pose = np.zeros((N_J, 3))
    pose[2] = expr[0, 50:].numpy()
    np.testing.assert_allclose(moved[0, :N_V].numpy(), reference_lbs(arrays, betas, pose), atol=1e-5)


def test_flame_head_pose_is_rigid(fake_flame, fake_embedding):
    path, _ = fake_flame
    model = load_flame_model(path, fake_embedding)
    z = model.zero_parameters(1)
    pose = torch.tensor([[0.1, -0.4, 0.2, 0.01, 0.02, -0.03]])
    posed = model(z["shape"], z["expression"], pose).vertices[0]
    rot = batch_rodrigues(pose[:, :3])[0]
    torch.testing.assert_close(posed[:N_V], model.v_template @ rot.T + pose[0, 3:], atol=1e-6, rtol=0)


def test_flame_landmarks_follow_the_embedding(fake_flame, fake_embedding):
    path, _ = fake_flame
    model = load_flame_model(path, fake_embedding)
    z = model.zero_parameters(1)
    out = model(z["shape"], z["expression"], z["pose"])
    assert model.landmark_mp_ids.tolist() == [13, 14, 1, 152]
    v = model.v_template
    f = model.faces
    torch.testing.assert_close(out.landmarks[0, 1], 0.2 * v[f[3, 0]] + 0.3 * v[f[3, 1]] + 0.5 * v[f[3, 2]])
    torch.testing.assert_close(out.landmarks[0, 2], v[f[5, 2]])
    assert model.inner_lip_upper_ids.tolist() == [int(f[0, 0])]  # mp 13: dominant corner of triangle 0
    assert (model.interior_t[:N_V] == -1).all()


def test_flame_mouth_interior_fills_the_mouth_hole(tmp_path):
    """A ring mesh (hexagonal mouth hole inside a larger hexagon): the interior spans the hole, follows the jaw."""
    inner = 0.01 * np.array([[-2, 0, 0], [-1, 0.5, 0], [1, 0.5, 0], [2, 0, 0], [1, -0.5, 0], [-1, -0.5, 0]])
    template = np.concatenate([inner, 3 * inner, np.zeros((N_V - 12, 3)) + [0, 0, -0.1]])  # spare: joints, behind
    faces = []
    for i in range(6):
        j = (i + 1) % 6
        faces += [(i, 6 + j, 6 + i), (i, j, 6 + j)]
    arrays = fake_flame_arrays(template=template, faces=np.array(faces, np.uint32))
    arrays["weights"][:] = 0.0
    arrays["weights"][:, 0] = 1.0
    arrays["weights"][[4, 5], :] = np.eye(N_J)[2]  # the lower inner lip rides the jaw
    arrays["posedirs"][:] = 0.0
    arrays["J_regressor"] = scipy.sparse.csc_matrix(np.eye(N_V)[[12] * N_J])  # all joints 10 cm behind the mouth
    model_path = tmp_path / "ring.pkl"
    model_path.write_bytes(pickle.dumps(arrays, protocol=2))
    up_face = next(k for k, f in enumerate(faces) if 1 in f)
    low_face = next(k for k, f in enumerate(faces) if 5 in f)
    emb = tmp_path / "emb.npz"
    np.savez(emb, lmk_face_idx=np.array([up_face, low_face], np.uint32),
             lmk_b_coords=np.array([np.eye(3)[faces[up_face].index(1)], np.eye(3)[faces[low_face].index(5)]]),
             landmark_indices=np.array([13, 14]))
    model = load_flame_model(model_path, emb)
    interior = model.interior_t >= 0
    assert model.num_vertices > N_V and not interior[:N_V].any()
    assert set(model.interior_t[interior].tolist()) >= {0.0, 1.0}
    assert (model.faces[len(faces):] >= N_V).all()  # interior triangles use interior vertices only
    z = model.zero_parameters(2)
    expr = z["expression"].clone()
    expr[1, 50] = 0.3
    out = model(z["shape"], expr, z["pose"])
    assert mouth_opening(out.vertices, model)[1] > mouth_opening(out.vertices, model)[0]
    normals = vertex_normals(out.vertices[1:], model.faces)[0]
    assert (normals[N_V:, 2] > 0).all()  # the cavity faces the camera
    # the cavity collapses onto the lips: row s=0 sits 1 mm behind its upper-lip vertex
    top = torch.nonzero(model.interior_t == 0).flatten()
    gaps = (out.vertices[0, top, :2].unsqueeze(1) - out.vertices[0, [1, 2], :2]).norm(dim=-1)  # [rows, 2 lip vertices]
    assert (gaps.min(1).values < 1e-6).all()


@pytest.mark.real_media
def test_real_embedding_and_masks(fake_flame, tmp_path):
    emb_path, masks_path = SHARED_FLAME / "mediapipe_landmark_embedding.npz", SHARED_FLAME / "FLAME_masks.pkl"
    if not emb_path.exists() or not masks_path.exists():
        pytest.skip(f"{SHARED_FLAME} has no FLAME side files")
    emb = load_embedding(emb_path, num_faces=9976)
    assert len(emb.mp_ids) == 105 and emb.bary_coords.shape == (105, 3)
    np.testing.assert_allclose(emb.bary_coords.sum(1), 1.0, atol=1e-4)
    with pytest.raises(InputError, match="out of range"):
        load_embedding(emb_path, num_faces=N_V - 2)  # the fake mesh is too small for the real embedding
    masks = load_pickle(masks_path)
    assert len(masks["lips"]) == 254 and masks["lips"].max() < 5023
    # the loader takes the lip vertices from the masks file (indices checked against this tiny mesh)
    small = tmp_path / "masks.pkl"
    small.write_bytes(pickle.dumps({"lips": np.arange(5)}))
    path, _ = fake_flame
    model = load_flame_model(path, None, small)
    assert model.lip_vertex_ids.tolist() == list(range(5))
    with pytest.raises(InputError, match="FLAME_masks.pkl"):  # the real masks index 5023 vertices, not 30
        load_flame_model(path, None, masks_path)


# ----------------------------------------------------------------------------------------------- open model
@pytest.fixture(scope="module")
def open_model() -> HeadModel:
    return load_head_model()


def test_open_model_shapes_and_template(open_model):
    model = open_model
    z = model.zero_parameters(3)
    out = model(z["shape"], z["expression"], z["pose"])
    v = model.num_vertices
    assert out.vertices.shape == (3, v, 3) and out.landmarks.shape == (3, 478, 3)
    assert model.landmark_mp_ids.tolist() == list(range(478))
    torch.testing.assert_close(out.vertices[0], model.template)
    assert model.faces.dtype == torch.long and int(model.faces.max()) < v
    assert model.albedo(z["texture"]).shape == (3, v, 3)
    assert len(model.inner_lip_upper_ids) == len(model.inner_lip_lower_ids) > 0
    interior = model.interior_t >= 0
    assert interior[:478].sum() == 0 and interior.sum() > 0
    assert model.interior_t[interior].min() == 0 and model.interior_t[interior].max() == 1
    # face width ~ 0.15 m, y up (forehead above chin), z toward the camera (nose tip in front of the cheeks)
    t = model.template
    assert 0.12 < float((t[454] - t[234]).norm()) < 0.18
    assert t[10, 1] > t[152, 1] and t[1, 2] > t[234, 2] + 0.03 and t[454, 0] > t[234, 0]


def test_open_model_is_differentiable_and_batched(open_model):
    model = open_model
    rng = np.random.default_rng(3)
    params = {k: torch.as_tensor(rng.normal(scale=0.5, size=(4, n)), dtype=torch.float32).requires_grad_()
              for k, n in (("shape", 100), ("expression", 53), ("pose", 6))}
    out = model(params["shape"], params["expression"], params["pose"])
    single = model(params["shape"][2:3], params["expression"][2:3], params["pose"][2:3])
    torch.testing.assert_close(out.vertices[2:3], single.vertices)
    out.landmarks.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_open_model_jaw_opens_the_mouth(open_model):
    model = open_model
    z = model.zero_parameters(3)
    expr = z["expression"].clone()
    expr[1, 50] = 0.15  # jaw open (positive rotation about x)
    expr[2, 50] = 0.30
    out = model(z["shape"], expr, z["pose"])
    opening = mouth_opening(out.vertices, model)
    assert opening[0] < opening[1] < opening[2]
    moved = (out.vertices[2] - out.vertices[0]).norm(dim=1)
    assert moved[10] < 1e-6 and moved[1] < 1e-3  # forehead and nose tip stay
    assert moved[152] > 0.01  # chin drops


def test_open_model_faces_point_outward(open_model):
    model = open_model
    normals = vertex_normals(model.template[None], model.faces)[0]
    front = [1, 4, 5, 6, 9, 10, 151, 168, 200, 50, 280]  # nose, forehead, chin, cheeks
    assert (normals[front, 2] > 0.5).all()
    assert (normals[:468, 2] > 0).float().mean() > 0.95
    faces = model.faces.tolist()
    edge_uses = collections.Counter(tuple(sorted(e)) for f in faces for e in itertools.combinations(f, 2))
    assert max(edge_uses.values()) <= 2  # a manifold surface: no spurious triangles
    # consistent orientation: every interior edge is walked once in each direction
    directed = collections.Counter((f[i], f[(i + 1) % 3]) for f in model.faces.tolist() for i in range(3))
    assert max(directed.values()) == 1


# ----------------------------------------------------------------------------------------------- camera, SH, normals
def test_camera_projection_matches_the_conventions():
    vertices = torch.tensor([[[0.0, 0.0, 0.0], [0.1, 0.2, 0.05], [-0.5, -0.25, 0.0]]])
    camera = torch.tensor([[2.0, 0.1, -0.2]])  # s, tx, ty
    size = 256
    px = project(vertices, camera, size)
    # point 1: ndc = 2*(0.1, 0.2) + (0.1, -0.2) = (0.3, 0.2) -> px = (1.3*128, 0.8*128)
    torch.testing.assert_close(px[0, 1], torch.tensor([166.4, 102.4]))
    # point 2: ndc = (-1.0 + 0.1, -0.5 - 0.2) = (-0.9, -0.7) -> y down in pixels, below the centre
    torch.testing.assert_close(px[0, 2], torch.tensor([12.8, 217.6]))
    ndc = to_ndc(vertices, camera)
    assert ndc[0, 1, 2] > ndc[0, 0, 2]  # nearer (larger z) stays larger


def test_sh_shading_and_normals():
    plane = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    normals = vertex_normals(plane, faces)
    torch.testing.assert_close(normals, torch.tensor([0.0, 0, 1]).expand(1, 4, 3))
    albedo = torch.full((1, 4, 3), 0.6)
    torch.testing.assert_close(shade(albedo, normals, ambient_lighting(1)), albedo)
    basis = sh_basis(normals)
    assert basis.shape == (1, 4, 9)
    lit_from_front = torch.zeros(1, 9, 3)
    lit_from_front[0, 3] = 1.0  # band z
    assert (shade(albedo, normals, lit_from_front.view(1, 27)) > 0).all()
    assert (shade(albedo, -normals, lit_from_front.view(1, 27)) < 0).all()


# ----------------------------------------------------------------------------------------------- builder
def _synthetic_tracks(model: HeadModel, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """FaceMesh-like tracks (pixels, y down, z away) of three 'videos' made with the open model itself."""
    gen = torch.Generator().manual_seed(seed)
    tracks = {}
    for clip, n in (("a", 24), ("b", 16), ("c", 20)):
        shape = 0.5 * torch.randn(1, 100, generator=gen).expand(n, -1)
        expr = torch.cat([torch.randn(n, 50, generator=gen), 0.1 * torch.rand(n, 1, generator=gen), torch.zeros(n, 2)], 1)
        pose = torch.cat([0.1 * torch.randn(n, 3, generator=gen), torch.zeros(n, 3)], 1)
        with torch.no_grad():
            lmk = model(shape, expr, pose).landmarks.numpy()
        pixels = lmk * np.array([1000.0, -1000.0, -1000.0]) + np.array([256.0, 256.0, 0.0])
        colours = np.full(pixels.shape, 180, np.uint8)
        tracks[clip] = (pixels.astype(np.float32), colours)
    return tracks


def test_builder_is_deterministic_and_valid(open_model):
    from talkinghead.headmodel.build_open import build_arrays
    from talkinghead.headmodel.open_model import OpenHeadModel

    tracks = _synthetic_tracks(open_model, seed=4)
    first = build_arrays(tracks, verbose=False)
    second = build_arrays(tracks, verbose=False)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    model = OpenHeadModel(first)
    t = model.template
    assert abs(float((t[454] - t[234]).norm()) - 0.15) < 1e-4  # scaled to the stated face width
    assert float(t[10, 1]) > float(t[152, 1]) and float(t[1, 2]) > float(t[234, 2])  # y up, z toward the camera
    assert model.jaw_weights[list(range(468, 478))].abs().max() == 0  # irises never ride the jaw
    assert model.jaw_weights[14] == 1 and model.jaw_weights[13] == 0
    ratio = first["expression_variance_ratio"]
    assert np.all(np.diff(ratio) <= 1e-6) and ratio.sum() > 0.9


@pytest.mark.real_media
def test_open_model_fits_real_mouths(open_model):
    """Expression + jaw reach real FaceMesh mouths (open / closed / spread / rounded) to sub-pixel-ish accuracy."""
    video = Path(__file__).resolve().parents[2] / "shared" / "media" / "video" / "hdtf_katiehill.mp4"
    if not video.exists():
        pytest.skip(f"{video} absent")
    from talkinghead.headmodel.build_open import lip_ids
    from talkinghead.headmodel.check_open import fit_frames, select_frames, to_crop_pixels
    from talkinghead.headmodel.tracking_data import track_video

    points, _ = track_video(video, max_frames=80)
    points = points[~np.isnan(points).any(axis=(1, 2))]
    frames = select_frames(points)
    target = torch.as_tensor(to_crop_pixels(points[list(frames.values())]), dtype=torch.float32)
    torch.manual_seed(0)
    err, opening = fit_frames(open_model, target, with_expression=True, steps=200)
    base_err, _ = fit_frames(open_model, target, with_expression=False, steps=200)
    lips = torch.as_tensor(lip_ids())
    lip_err, base_lip_err = err[:, lips].mean(1), base_err[:, lips].mean(1)
    assert (lip_err < 1.5).all(), lip_err  # px in a 256 crop whose face width is 128 px
    assert lip_err.mean() < 0.8 * base_lip_err.mean()  # the expression basis is what gets the lips right
    kinds = list(frames)
    assert opening[kinds.index("open")] > opening[kinds.index("closed")] + 0.005  # metres


def test_rodrigues_is_a_rotation():
    from talkinghead.headmodel.lbs import rodrigues

    quarter = rodrigues(torch.tensor([0.0, 0.0, np.pi / 2]))
    torch.testing.assert_close(quarter @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    rots = batch_rodrigues(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(rots @ rots.transpose(1, 2), torch.eye(3).expand(8, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rots), torch.ones(8))
    torch.testing.assert_close(batch_rodrigues(torch.zeros(2, 3)), torch.eye(3).expand(2, 3, 3))
