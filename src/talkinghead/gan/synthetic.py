"""Synthetic presenter for developing and testing the GAN without the upstream stages.

Real frames: a textured face-like image (skin with fixed fine texture, eyes, lips, teeth, dark mouth interior)
that moves slightly and opens its mouth over time. Composites: the same frame with the lower face replaced,
behind a feathered mask, by a flat-shaded 'render' of the same mouth state (flat skin, flat lips, a grey mouth
interior without teeth) -- the gap the GAN must close. Written in the exact layout of the composites stage.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from ..paths import PresenterPaths
from ..schemas import COMPOSITES, LIP_COEFFS, PARAMETERS, write_table
from ..split import heldout_start
from ..tensorfile import save_tensor

SKIN = np.array([205, 160, 135], np.float32)
LIPS = np.array([170, 85, 90], np.float32)


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Fixed per-presenter skin texture: fine noise plus blotches, [S, S, 3] float around 0."""
    fine = cv2.GaussianBlur(rng.normal(0, 14, (size, size, 1)).astype(np.float32), (0, 0), 0.8)[..., None]
    blotch = cv2.GaussianBlur(rng.normal(0, 30, (size, size, 1)).astype(np.float32), (0, 0), 6)[..., None]
    return (fine + blotch) * np.array([1.0, 0.9, 0.85], np.float32)


def _mouth_state(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(n)
    opening = np.clip(9 + 8 * np.sin(t * 0.37) * np.sin(t * 0.053 + 1) + rng.normal(0, 1.5, n), 0, 18)
    dx = 4 * np.sin(t * 0.031)
    dy = 3 * np.sin(t * 0.047 + 0.5)
    return opening, dx, dy


def draw_frame(size: int, texture: np.ndarray, opening: float, dx: float, dy: float, rendered: bool) -> np.ndarray:
    """One frame, real (textured, teeth) or rendered (flat-shaded, no teeth). uint8 [S, S, 3]."""
    s = size / 256
    img = np.zeros((size, size, 3), np.float32)
    img[:] = np.linspace(60, 110, size, dtype=np.float32)[:, None, None] * np.array([0.6, 0.7, 1.0], np.float32)
    cx, cy = size / 2 + dx * s, size * 0.47 + dy * s
    face = np.zeros((size, size), np.float32)
    cv2.ellipse(face, (int(cx), int(cy)), (int(72 * s), int(98 * s)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    shade = np.clip(1.05 - ((np.arange(size)[None, :] - cx) / (90 * s)) ** 2 * 0.35, 0.6, 1.1)[..., None]
    skin = SKIN * shade + (0 if rendered else texture)
    img = img * (1 - face[..., None]) + skin * face[..., None]
    for ex in (-28, 28):  # eyes
        cv2.ellipse(img, (int(cx + ex * s), int(cy - 22 * s)), (int(12 * s), int(6 * s)), 0, 0, 360,
                    (40, 30, 30), -1, cv2.LINE_AA)
    mx, my = int(cx), int(cy + 52 * s)
    half_open = opening * s / 2
    lip_color = LIPS if rendered else LIPS + texture[my, mx] * 0.5
    cv2.ellipse(img, (mx, my), (int(26 * s), int(9 * s + half_open)), 0, 0, 360, lip_color.tolist(), -1, cv2.LINE_AA)
    if opening > 1:
        inner = (int(20 * s), max(1, int(half_open)))
        cv2.ellipse(img, (mx, my), inner, 0, 0, 360, (90, 70, 70) if rendered else (35, 10, 15), -1, cv2.LINE_AA)
        if not rendered:  # upper teeth: a white band under the upper lip
            teeth = np.zeros((size, size), np.float32)
            cv2.ellipse(teeth, (mx, my), inner, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
            teeth[int(my - half_open + max(2, half_open * 0.6)):] = 0
            img = img * (1 - teeth[..., None]) + np.array([235, 230, 220], np.float32) * teeth[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def mouth_box(size: int, opening: float, dx: float, dy: float) -> np.ndarray:
    s = size / 256
    cx, cy = size / 2 + dx * s, size * 0.47 + dy * s + 52 * s
    half_w, half_h = 26 * s * 1.25, (9 * s + opening * s / 2) * 1.25
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], np.float32)


def make_synthetic_presenter(paths: PresenterPaths, n_frames: int = 200, size: int = 256, seed: int = 0,
                             heldout_fraction: float = 0.2) -> None:
    """Write the frames, composites and composites table of a synthetic presenter where ``paths`` says, and head model
    fits (flame.parquet) and lip model coefficients (lip_coeffs.parquet) whose jaw opens with the drawn mouth (for the
    mouth retrieval; neutral otherwise)."""
    rng = np.random.default_rng(seed)
    texture = _texture(size, rng)
    opening, dx, dy = _mouth_state(n_frames, rng)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    composites = np.empty_like(frames)
    boxes = np.empty((n_frames, 4), np.float32)
    yy = np.arange(size, dtype=np.float32)[:, None, None]
    for i in range(n_frames):
        real = draw_frame(size, texture, opening[i], dx[i], dy[i], rendered=False)
        render = draw_frame(size, texture, opening[i], dx[i], dy[i], rendered=True)
        edge = size * 0.58 + dy[i] * size / 256  # lower-face mask starts below the nose, feathered over 12 px
        mask = np.clip((yy - edge) / (12 * size / 256), 0, 1)
        composites[i] = np.round(real * (1 - mask) + render * mask).astype(np.uint8)
        frames[i] = real
        boxes[i] = mouth_box(size, opening[i], dx[i], dy[i])
    save_tensor(paths.frames, frames)
    save_tensor(paths.composites, composites)
    first_heldout = heldout_start(n_frames, heldout_fraction)
    table = pd.DataFrame({"frame": np.arange(n_frames), "mouth_box": list(boxes),
                          "heldout": np.arange(n_frames) >= first_heldout})
    write_table(table, paths.composites_table, COMPOSITES)
    expression = np.zeros((n_frames, 53), np.float32)
    expression[:, 50] = opening / 18.0 * 0.3  # jaw axis-angle about x: up to 0.3 rad, as the drawn mouth opens
    camera = np.tile(np.array([8.0, 0.0, 0.3], np.float32), (n_frames, 1))  # the head fills the crop
    fits = pd.DataFrame({"frame": np.arange(n_frames), "shape": list(np.zeros((n_frames, 100), np.float32)),
                         "expression": list(expression), "texture": list(np.zeros((n_frames, 50), np.float32)),
                         "lighting": list(np.zeros((n_frames, 27), np.float32)), "camera": list(camera),
                         "pose": list(np.zeros((n_frames, 6), np.float32)), "fit_error": np.zeros(n_frames)})
    write_table(fits, paths.flame, PARAMETERS)
    lip = pd.DataFrame({"frame": np.arange(n_frames), "expression": list(expression),
                        "heldout": np.arange(n_frames) >= first_heldout})
    write_table(lip, paths.lip_coeffs, LIP_COEFFS)
