"""FLAME (Li et al. 2017) built from a user's model pickle: FLAME 2020 generic_model.pkl or FLAME 2023 Open.

Parameter mapping: our shape[100] = FLAME shape coefficients 0..99 (shapedirs[..., :100]); our expression[53] =
FLAME expression 0..49 (shapedirs[..., 300:350]) + jaw axis-angle (FLAME joint 2). Global, neck and eye joints stay at
rest; the head pose is applied rigidly after skinning (R v + t about the model origin), as for the open model.
A mouth interior (mouth.py) is added behind FLAME's mouth hole; its vertices follow the lips (lerp), after skinning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from ..errors import InputError
from ..facemesh import INNER_LIP_PAIRS
from .base import N_EXPRESSION, N_SHAPE, HeadModel
from .embedding import LandmarkEmbedding, barycentric_landmarks
from .lbs import lbs
from .mouth import (INTERIOR_COLOUR, boundary_loops, interior_grid, interior_offsets, interior_positions,
                    mouth_columns, orient_toward_camera)
from .texture import smooth_albedo_modes

FLAME_SHAPE_BASIS = 300  # FLAME stores 300 shape then 100 expression components in shapedirs
JAW_JOINT = 2
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
# MediaPipe inner-lip pairs (upper, lower) used for mouth opening when the embedding covers them.


def _array(model: dict, key: str, path: Path) -> np.ndarray:
    value = model[key]
    if scipy.sparse.issparse(value):
        value = value.toarray()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"FLAME key {key!r} is not numeric ({exc})") from exc


def mouth_interior(v_template: np.ndarray, faces: np.ndarray, lip_vertex_of_mp: dict[int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mouth-interior grid (mouth.py) behind FLAME's mouth hole: the mesh boundary loop nearest the inner-lip
    landmarks 13/14, when the embedding has them and the loop is mouth-sized. Returns upper ids, lower ids, s, faces
    (all empty when there is no such loop)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3), np.int64))
    if 13 not in lip_vertex_of_mp or 14 not in lip_vertex_of_mp:
        return empty
    centre = (v_template[lip_vertex_of_mp[13]] + v_template[lip_vertex_of_mp[14]]) / 2
    width = np.ptp(v_template[:, 0])
    candidates = []
    for loop in boundary_loops(faces):
        points = v_template[loop]
        if np.ptp(points[:, 0]) < 0.5 * width and np.all(points[:, :2].min(0) <= centre[:2]) \
                and np.all(points[:, :2].max(0) >= centre[:2]):
            candidates.append((float(np.linalg.norm(points.mean(0) - centre)), loop))
    if not candidates:
        return empty
    loop = min(candidates, key=lambda c: c[0])[1]
    columns = mouth_columns(loop, v_template)
    upper, lower, s, tris = interior_grid(columns, len(v_template))
    if len(tris) == 0:
        return empty
    opened = v_template.copy()
    opened[[lo for _, lo in columns[1:-1]]] -= np.array([0.0, 0.01, 0.0])  # open the mouth to see which way is front
    w = s[:, None]
    positions = np.concatenate([opened, (1 - w) * opened[upper] + w * opened[lower] + interior_offsets(s)])
    return upper, lower, s, orient_toward_camera(tris, positions)


class FlameHeadModel(HeadModel):
    v_template: Tensor
    shapedirs: Tensor
    posedirs: Tensor
    j_regressor: Tensor
    parents: Tensor
    lbs_weights: Tensor
    lmk_face_idx: Tensor
    lmk_bary_coords: Tensor

    def __init__(self, model: dict, path: Path, embedding: LandmarkEmbedding | None = None,
                 lip_vertex_ids: np.ndarray | None = None) -> None:
        missing = [k for k in REQUIRED_KEYS if k not in model]
        if missing:
            raise InputError(path, f"not a FLAME model: missing keys {missing}")
        v_template = _array(model, "v_template", path)
        n_vertices = v_template.shape[0]
        shapedirs = _array(model, "shapedirs", path)
        faces = np.asarray(model["f"], dtype=np.int64)
        kintree = np.asarray(model["kintree_table"], dtype=np.int64)
        weights = _array(model, "weights", path)
        j_regressor = _array(model, "J_regressor", path)
        posedirs = _array(model, "posedirs", path)
        n_joints = kintree.shape[1] if kintree.ndim == 2 else -1
        n_components = shapedirs.shape[-1] if shapedirs.ndim == 3 else 0
        checks = [
            (v_template.shape == (n_vertices, 3), f"v_template {v_template.shape}"),
            (shapedirs.shape[:2] == (n_vertices, 3) and n_components >= FLAME_SHAPE_BASIS + N_EXPRESSION,
             f"shapedirs {shapedirs.shape} (need [V, 3, >= {FLAME_SHAPE_BASIS + N_EXPRESSION}])"),
            (kintree.ndim == 2 and kintree.shape[0] == 2 and n_joints > JAW_JOINT, f"kintree_table {kintree.shape}"),
            (weights.shape == (n_vertices, n_joints), f"weights {weights.shape}"),
            (j_regressor.shape == (n_joints, n_vertices), f"J_regressor {j_regressor.shape}"),
            (posedirs.size == n_vertices * 3 * (n_joints - 1) * 9, f"posedirs {posedirs.shape}"),
            (faces.ndim == 2 and faces.shape[1] == 3 and faces.size and faces.max() < n_vertices, f"f {faces.shape}"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise InputError(path, f"FLAME arrays have unexpected shapes: {', '.join(bad)}")
        if embedding is not None and embedding.face_idx.max() >= len(faces):
            raise InputError(path, "landmark embedding refers to triangles this FLAME mesh does not have")

        if embedding is not None:
            mp_ids, face_idx, bary = embedding.mp_ids, embedding.face_idx, embedding.bary_coords
        else:  # no embedding: no landmarks (the fit stage needs one, and says so)
            mp_ids, face_idx, bary = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
        # Inner-lip pairs: the dominant vertex of each embedded inner-lip landmark's triangle.
        nearest = {int(m): int(faces[f][np.argmax(b)]) for m, f, b in zip(mp_ids, face_idx, bary)}
        pairs = [(nearest[u], nearest[lo]) for u, lo in INNER_LIP_PAIRS if u in nearest and lo in nearest]
        if lip_vertex_ids is None:
            lip_mp = {i for pair in INNER_LIP_PAIRS for i in pair} | {0, 17, 61, 291, 37, 267, 84, 314, 39, 269}
            lip_vertex_ids = np.unique(faces[[f for m, f in zip(mp_ids, face_idx) if int(m) in lip_mp]].reshape(-1))
        upper, lower, s, tris = mouth_interior(v_template, faces, nearest)
        albedo_mean, albedo_basis = smooth_albedo_modes(v_template)
        n_interior = len(s)
        albedo_mean = np.concatenate([albedo_mean, np.tile(np.asarray(INTERIOR_COLOUR, np.float32), (n_interior, 1))])
        albedo_basis = np.concatenate([albedo_basis, np.zeros((n_interior,) + albedo_basis.shape[1:], np.float32)])

        super().__init__(
            faces=np.concatenate([faces, tris]), landmark_mp_ids=mp_ids, lip_vertex_ids=lip_vertex_ids,
            inner_lip_upper_ids=[p[0] for p in pairs], inner_lip_lower_ids=[p[1] for p in pairs],
            interior_t=np.concatenate([-np.ones(n_vertices), s]), albedo_mean=albedo_mean, albedo_basis=albedo_basis,
            name="flame",
        )
        self.register_buffer("interior_upper", torch.as_tensor(upper))  # [M] FLAME vertex ids
        self.register_buffer("interior_lower", torch.as_tensor(lower))
        self.register_buffer("interior_s", torch.as_tensor(s, dtype=torch.float32))
        self.register_buffer("interior_offsets", torch.as_tensor(interior_offsets(s), dtype=torch.float32))
        parents = kintree[0].copy()
        parents[0] = -1  # FLAME stores the root's parent as a huge unsigned number
        expression_dirs = shapedirs[..., FLAME_SHAPE_BASIS:FLAME_SHAPE_BASIS + N_EXPRESSION]
        basis = np.concatenate([shapedirs[..., :N_SHAPE], expression_dirs], axis=2)  # [V, 3, 150]
        posedirs = posedirs.reshape(-1, (n_joints - 1) * 9).T  # FLAME's [V, 3, P] -> [V*3, P] -> [P, V*3]
        f32 = torch.float32
        self.register_buffer("v_template", torch.as_tensor(v_template, dtype=f32))
        self.register_buffer("shapedirs", torch.as_tensor(basis, dtype=f32))
        self.register_buffer("posedirs", torch.as_tensor(np.ascontiguousarray(posedirs), dtype=f32))
        self.register_buffer("j_regressor", torch.as_tensor(j_regressor, dtype=f32))
        self.register_buffer("parents", torch.as_tensor(parents))
        self.register_buffer("lbs_weights", torch.as_tensor(weights, dtype=f32))
        self.register_buffer("lmk_face_idx", torch.as_tensor(face_idx))
        self.register_buffer("lmk_bary_coords", torch.as_tensor(bary, dtype=f32))
        self.n_joints = n_joints

    def deform(self, shape: Tensor, expression: Tensor) -> Tensor:
        """shape [B, 100], expression [B, 53] -> skinned vertices [B, V, 3] (only the jaw joint rotates)."""
        batch = shape.shape[0]
        betas = torch.cat([shape, expression[:, :N_EXPRESSION]], dim=1)  # [B, 150]
        full_pose = shape.new_zeros(batch, self.n_joints, 3)
        full_pose[:, JAW_JOINT] = expression[:, N_EXPRESSION:N_EXPRESSION + 3]
        vertices, _ = lbs(betas, full_pose.view(batch, -1), self.v_template, self.shapedirs, self.posedirs,
                          self.j_regressor, self.parents, self.lbs_weights)  # [B, J, 3] -> [B, J*3]
        if self.interior_s.numel() == 0:
            return vertices
        interior = interior_positions(vertices, self.interior_upper, self.interior_lower, self.interior_s,
                                      self.interior_offsets)
        return torch.cat([vertices, interior], dim=1)  # [B, V + M, 3]

    def landmarks_from(self, vertices: Tensor) -> Tensor:
        return barycentric_landmarks(vertices, self.faces, self.lmk_face_idx, self.lmk_bary_coords)
