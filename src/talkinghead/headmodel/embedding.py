"""FLAME's MediaPipe landmark embedding: each landmark is a barycentric point on one mesh triangle.

File format (mediapipe_landmark_embedding.npz, distributed with FLAME): lmk_face_idx [L] (triangle index),
lmk_b_coords [L, 3] (barycentric weights), landmark_indices [L] (MediaPipe FaceMesh ids, 0..477).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError


@dataclass(frozen=True)
class LandmarkEmbedding:
    face_idx: np.ndarray  # int64 [L]
    bary_coords: np.ndarray  # float32 [L, 3]
    mp_ids: np.ndarray  # int64 [L]


def load_embedding(path: str | Path, num_faces: int | None = None) -> LandmarkEmbedding:
    """Read and validate a landmark embedding .npz (num_faces: the mesh's triangle count, to check indices)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices") if k in data.files}
    except FileNotFoundError as exc:
        raise InputError(path, "no such landmark embedding file") from exc
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable .npz ({exc})") from exc
    missing = {"lmk_face_idx", "lmk_b_coords", "landmark_indices"} - set(arrays)
    if missing:
        raise InputError(path, f"landmark embedding lacks {sorted(missing)}")
    face_idx = arrays["lmk_face_idx"].astype(np.int64).reshape(-1)
    bary = arrays["lmk_b_coords"].astype(np.float32)
    mp_ids = arrays["landmark_indices"].astype(np.int64).reshape(-1)
    n = len(face_idx)
    if bary.shape != (n, 3) or mp_ids.shape != (n,):
        raise InputError(path, f"inconsistent shapes: lmk_face_idx {face_idx.shape}, lmk_b_coords {bary.shape}, "
                               f"landmark_indices {mp_ids.shape}")
    if n == 0 or mp_ids.min() < 0 or mp_ids.max() > 477:
        raise InputError(path, "landmark_indices must be MediaPipe FaceMesh ids in 0..477")
    if face_idx.min() < 0 or (num_faces is not None and face_idx.max() >= num_faces):
        raise InputError(path, f"lmk_face_idx out of range for a mesh of {num_faces} triangles")
    return LandmarkEmbedding(face_idx=face_idx, bary_coords=bary, mp_ids=mp_ids)


def barycentric_landmarks(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary_coords: Tensor) -> Tensor:
    """vertices [B, V, 3], faces [F, 3], face_idx [L], bary_coords [L, 3] -> landmarks [B, L, 3]."""
    corners = vertices[:, faces[face_idx]]  # [B, L, 3 corners, 3 xyz]
    return torch.einsum("blkc,lk->blc", corners, bary_coords)
