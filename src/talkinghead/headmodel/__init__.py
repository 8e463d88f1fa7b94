"""Head models: the open default (MediaPipe FaceMesh topology, no licence) or a user's FLAME model.

``load_head_model(load_config(HeadModelParams, "head_model"))`` returns a :class:`HeadModel` (headmodel/base.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, describe
from ..paths import OPEN_HEAD_MODEL
from .base import HeadModel, HeadOutput, mouth_opening
from .embedding import load_embedding
from .flame import FlameHeadModel
from .open_model import OpenHeadModel, load_open_model
from .pickle_io import load_pickle

__all__ = ["load_head_model", "HeadModelParams", "load_flame_model", "open_model_path", "HeadModel", "HeadOutput", "OpenHeadModel",
           "FlameHeadModel", "mouth_opening"]


def open_model_path() -> Path:
    """paths.OPEN_HEAD_MODEL relative to the working directory, else the copy in this source checkout."""
    if OPEN_HEAD_MODEL.exists():
        return OPEN_HEAD_MODEL
    checkout = Path(__file__).resolve().parents[3] / OPEN_HEAD_MODEL
    return checkout if checkout.exists() else OPEN_HEAD_MODEL


def load_flame_model(model_path: str | Path, embedding_path: str | Path | None = None,
                     masks_path: str | Path | None = None) -> FlameHeadModel:
    """A FLAME head model from the user's pickle, its MediaPipe landmark embedding and (optionally) FLAME_masks.pkl."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(model_path, "FLAME model file not found (head_model.flame_model in params.yaml)")
    model = load_pickle(model_path)
    if not isinstance(model, dict):
        raise InputError(model_path, f"not a FLAME model: the pickle holds a {type(model).__name__}, not a dict")
    try:
        num_faces = len(np.asarray(model.get("f", [])))
    except Exception as exc:  # a ragged or non-numeric face list
        raise InputError(model_path, f"not a FLAME model: unreadable faces 'f' ({describe(exc)})") from exc
    embedding = None if embedding_path is None else load_embedding(embedding_path, num_faces=num_faces)
    lip_ids = None
    if masks_path is not None:
        masks = load_pickle(masks_path)
        if not isinstance(masks, dict) or "lips" not in masks:
            raise InputError(masks_path, "FLAME masks file has no 'lips' vertex mask")
        lip_ids = np.asarray(masks["lips"], dtype=np.int64).reshape(-1)
        n_vertices = len(np.asarray(model.get("v_template", [])))
        if lip_ids.size == 0 or lip_ids.min() < 0 or lip_ids.max() >= n_vertices:
            raise InputError(masks_path, f"'lips' mask does not index the {n_vertices} vertices of {model_path}")
    try:
        return FlameHeadModel(model, model_path, embedding=embedding, lip_vertex_ids=lip_ids)
    except InputError:
        raise
    except Exception as exc:  # values its checks do not expect (e.g. triangles of letters, not vertex ids)
        raise InputError(model_path, f"not a usable FLAME model ({describe(exc)})") from exc


@dataclass(frozen=True)
class HeadModelParams:
    """params.yaml's ``head_model`` group: FLAME if ``flame_model`` is set, else the open default model."""

    flame_model: str | None  # FLAME 2020 generic_model.pkl or FLAME 2023 Open flame2023_Open.pkl
    landmark_embedding: str | None  # FLAME's mediapipe_landmark_embedding.npz (needed with FLAME)
    flame_masks: str | None  # optional FLAME_masks.pkl ('lips' mask -> lip vertices)


def load_head_model(params: HeadModelParams | None = None) -> HeadModel:
    """The head model ``params`` selects (None: the open default model). Errors name the offending file."""
    if params is None or not params.flame_model:
        return load_open_model(open_model_path())
    if not params.landmark_embedding:
        raise InputError(Path("params.yaml"), "head_model.landmark_embedding must name FLAME's "
                                              "mediapipe_landmark_embedding.npz when head_model.flame_model is set")
    return load_flame_model(params.flame_model, params.landmark_embedding, params.flame_masks)
