"""A per-presenter ridge regression from the same audio features to the 53-d expression: a reference point that
tells "the lip model is weak" apart from "this footage holds no audio cue to the mouth".

It is fitted in closed form on the presenter's training frames; its strength is the one on a log grid with the
lowest validation-slice error relative to the still face (the training mean), and it is then applied to every
frame. When even this cannot beat a still face on the validation slice (a ratio >= 1 at every strength), a few
seconds of footage do not determine the mouth from the audio, and no model trained on them will generalise
either. Nothing here reads the held-out tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..split import TimeSplit

STRENGTHS = (1e1, 1e2, 1e3, 1e4, 1e5)  # ridge penalties (features are per-bin standardised; 880 inputs per frame)


@dataclass
class RidgeBaseline:
    prediction: np.ndarray  # float32 [N, 53] for every frame
    strength: float  # the chosen penalty
    validation_ratio: float  # validation MSE / the still face's validation MSE at that penalty (< 1: an audio cue)


def ridge_weights(gram: np.ndarray, xty: np.ndarray, strength: float) -> np.ndarray:
    """W [D, K] minimising |x W - y|^2 + strength |W|^2 for centred x [N, D], y [N, K], given gram = x^T x [D, D]
    and xty = x^T y [D, K] (computed once for every strength tried)."""
    return np.linalg.solve(gram + strength * np.eye(gram.shape[0]), xty)


def ridge_baseline(features: np.ndarray, expression: np.ndarray, split: TimeSplit,
                   strengths: tuple[float, ...] = STRENGTHS) -> RidgeBaseline | None:
    """Fit on split.train, choose the penalty on split.validation; features [N, C, M], expression [N, 53].
    None when the timeline has no validation slice or fewer training frames than two."""
    train, val = split.train, split.validation
    if len(val) < 2 or len(train) < 2:
        return None
    y = expression.astype(np.float64)
    y_mean = y[:train.stop].mean(axis=0)
    fit = pooled_ridge([features], [y - y_mean], [split], strengths)  # one presenter: centring = standardising
    x = features.reshape(len(features), -1).astype(np.float64)  # [N, C, M] -> [N, C*M]
    prediction = ((x - fit.x_mean) @ fit.weights + y_mean).astype(np.float32)
    return RidgeBaseline(prediction, fit.strength, fit.validation_ratio)


@dataclass
class PooledRidge:
    """A linear lip model: standardised 53-d expression = (features - x_mean) @ weights, one map for all
    presenters (each presenter's own target mean/std undo the standardisation), like the lip Transformer."""

    x_mean: np.ndarray  # [C*M]
    weights: np.ndarray  # [C*M, 53]
    strength: float
    validation_ratio: float  # pooled validation error / the still face's

    def predict(self, features: np.ndarray) -> np.ndarray:
        """features [N, C, M] -> standardised expression float32 [N, 53]."""
        x = features.reshape(len(features), -1).astype(np.float64) - self.x_mean  # [N, C, M] -> [N, C*M]
        return (x @ self.weights).astype(np.float32)


def pooled_ridge(features: list[np.ndarray], targets: list[np.ndarray], splits: list[TimeSplit],
                 strengths: tuple[float, ...] = STRENGTHS) -> PooledRidge:
    """Fit on every presenter's training frames together (features [N_p, C, M], targets [N_p, 53] with mean 0 over
    each presenter's training frames), choose the penalty on their validation slices pooled. Nothing reads a
    held-out tail."""
    flat = lambda a, r: a[r.start:r.stop].reshape(len(r), -1).astype(np.float64)  # noqa: E731  [n, C, M] -> [n, C*M]
    x_train = np.concatenate([flat(f, s.train) for f, s in zip(features, splits)])
    y_train = np.concatenate([t[s.train.start:s.train.stop] for t, s in zip(targets, splits)]).astype(np.float64)
    x_val = np.concatenate([flat(f, s.validation) for f, s in zip(features, splits)])
    y_val = np.concatenate([t[s.validation.start:s.validation.stop]
                            for t, s in zip(targets, splits)]).astype(np.float64)
    x_mean = x_train.mean(axis=0)
    xc = x_train - x_mean
    gram, xty = xc.T @ xc, xc.T @ y_train  # the targets' training mean is 0 per presenter: no intercept
    still_error = max(float((y_val ** 2).sum()), 1e-300)
    best: tuple[float, float, np.ndarray] | None = None
    for strength in strengths:
        weights = ridge_weights(gram, xty, strength)
        ratio = float((((x_val - x_mean) @ weights - y_val) ** 2).sum()) / still_error if len(y_val) else 1.0
        if best is None or ratio < best[0]:
            best = (ratio, strength, weights)
    ratio, strength, weights = best
    return PooledRidge(x_mean, weights, strength, ratio)
