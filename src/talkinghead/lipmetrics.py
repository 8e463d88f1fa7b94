"""Lip-sync metrics on per-frame signals and head-model vertices.

- ``lve``: lip vertex error (FaceFormer's definition): per frame the largest squared distance over the lip vertices,
  averaged over frames. The head models are in metres; reports give it in mm^2 (``M2_TO_MM2``, key ``lve_mm2``).
- ``pearson_r``: correlation of two 1-D signals (e.g. mouth opening predicted vs fitted).
- ``av_offset``: the lag (frames) that maximises the correlation of two signals; 0 for a synchronised prediction.
- ``mouth_opening_ratio``: a scale-free mouth opening from FaceMesh landmarks (real or generated frames).
- ``pair_metrics``: r at lag 0, best lag, r on voiced frames of a generated vs a real mouth-opening curve.
"""

from __future__ import annotations

import numpy as np

from . import facemesh

M2_TO_MM2 = 1e6  # the open head model and FLAME are in metres: LVE m^2 -> mm^2, a size a person reads (~10, not 1e-5)
LEFT_EYE_CORNER, RIGHT_EYE_CORNER = 33, 263  # FaceMesh outer eye corners: the face's scale in the image


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D signals [N]. 0.0 when either is constant (no linear relation measurable)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"signals differ in length: {a.shape} vs {b.shape}")
    da, db = a - a.mean(), b - b.mean()
    # "Constant" relative to the signal's own magnitude: float residue of a constant is ~1e-16 of it.
    var_a, var_b = (da * da).sum(), (db * db).sum()
    if var_a <= 1e-20 * (a * a).sum() + 1e-300 or var_b <= 1e-20 * (b * b).sum() + 1e-300:
        return 0.0
    denom = np.sqrt(var_a * var_b)
    return float((da * db).sum() / denom)


def lagged_correlations(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> dict[int, float]:
    """{lag: r} for lag in [-max_lag, max_lag], r = pearson_r(a[t - lag], b[t]) over the overlapping frames
    (positive lag: ``b`` lags ``a``, i.e. b[t] looks like a[t - lag])."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    n = len(a)
    if len(b) != n:
        raise ValueError(f"signals differ in length: {len(a)} vs {len(b)}")
    if n <= 2 * max_lag + 1:
        raise ValueError(f"{n} frames are too few for lags up to {max_lag}")
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            out[lag] = pearson_r(a[: n - lag], b[lag:])
        else:
            out[lag] = pearson_r(a[-lag:], b[: n + lag])
    return out


def av_offset(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> int:
    """Lag in frames in [-max_lag, max_lag] maximising the cross-correlation of ``a`` and ``b``; positive = ``b``
    lags ``a``. Ties go to the smallest |lag| (a constant signal gives 0)."""
    return best_lag(lagged_correlations(a, b, max_lag))


def best_lag(curve: dict[int, float]) -> int:
    """The lag of a {lag: r} curve with the highest r; ties go to the smallest |lag|."""
    return max(curve, key=lambda lag: (round(curve[lag], 9), -abs(lag)))


def lve(pred_vertices: np.ndarray, true_vertices: np.ndarray, lip_ids: np.ndarray) -> float:
    """Lip vertex error: mean over frames of max over lip vertices of the squared L2 distance.

    pred_vertices, true_vertices: [N, V, 3] (or already [N, L, 3] with ``lip_ids`` = all); lip_ids: int [L].
    Units: squared head-model units (m^2 for the open model and FLAME; times M2_TO_MM2 for mm^2).
    """
    pred = np.asarray(pred_vertices, dtype=np.float64)[:, np.asarray(lip_ids)]  # [N, L, 3]
    true = np.asarray(true_vertices, dtype=np.float64)[:, np.asarray(lip_ids)]
    if pred.shape != true.shape:
        raise ValueError(f"vertex arrays differ: {pred.shape} vs {true.shape}")
    return float(((pred - true) ** 2).sum(axis=-1).max(axis=1).mean())


def mouth_opening_ratio(landmarks: np.ndarray) -> np.ndarray:
    """FaceMesh landmarks [N, 478, >=2] -> inner-lip gap over the eye-corner distance [N] (scale-free, so the
    presenter moving towards the camera does not open the mouth)."""
    upper = np.array([u for u, _ in facemesh.INNER_LIP_PAIRS])
    lower = np.array([d for _, d in facemesh.INNER_LIP_PAIRS])
    gap = np.abs(landmarks[:, lower, 1] - landmarks[:, upper, 1]).mean(axis=1)  # [N, K] -> [N]
    eyes = np.linalg.norm(landmarks[:, LEFT_EYE_CORNER, :2] - landmarks[:, RIGHT_EYE_CORNER, :2], axis=1)
    return (gap / np.maximum(eyes, 1e-6)).astype(np.float32)


def pair_metrics(generated: np.ndarray, real: np.ndarray, voiced: np.ndarray, max_lag: int) -> dict[str, float]:
    """Correlation of a generated mouth-opening curve [n] with the real one [n]: r at lag 0, the best lag in
    [-max_lag, max_lag] (positive: generated late) with its r, r on voiced frames (lag 0)."""
    curve = lagged_correlations(real, generated, max_lag)
    best = best_lag(curve)
    r_voiced = pearson_r(generated[voiced], real[voiced]) if voiced.sum() > 2 else float("nan")
    return {"r": curve[0], "best_lag": int(best), "r_best_lag": curve[best], "r_voiced": r_voiced,
            **{f"r_lag_{lag}": v for lag, v in curve.items()}}


def delayed(series: np.ndarray, frames: int) -> np.ndarray:
    """``series`` [N, ...] delayed by ``frames`` (out[i] = series[i - frames], the first value repeated at the start):
    a prediction that is ``frames`` late, the shifted baseline of predict_lip and evaluate."""
    if frames <= 0:
        return series.copy()
    return np.concatenate([np.repeat(series[:1], frames, axis=0), series[:-frames]])
