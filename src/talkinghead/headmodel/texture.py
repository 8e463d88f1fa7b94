"""Per-vertex albedo model shared by the open model (stored in its asset) and FLAME (built at load time).

There is no licence-free texture space, so the albedo model is mean skin tone + smooth low-frequency colour modes:
modes 0-2 change the overall skin colour (one per RGB channel), the rest are orthonormalised random low-frequency
Fourier fields over the template's normalised coordinates, each times one colour channel. Deterministic (seeded).
"""

from __future__ import annotations

import numpy as np

# Mean albedo of light-to-medium skin in linear-ish [0, 1] RGB (a neutral start; the fit adapts it per presenter).
MEAN_SKIN_TONE = (0.78, 0.58, 0.48)
GLOBAL_MODE_STD = 0.08  # per-channel overall tone change for a unit coefficient
LOCAL_MODE_STD = 0.04  # RMS colour change of a unit coefficient of a spatial mode


def smooth_albedo_modes(template: np.ndarray, n_modes: int = 50, seed: int = 0,
                        max_frequency: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """template [V, 3] -> (albedo mean [V, 3], albedo basis [V, 3, n_modes]) float32."""
    v = template.astype(np.float64)
    centred = v - v.mean(axis=0)
    coords = centred / np.abs(centred).max()  # [V, 3] in [-1, 1]
    rng = np.random.default_rng(seed)
    n_fields = (n_modes + 2) // 3  # field 0 = constant
    freqs = rng.normal(scale=max_frequency / 2, size=(3, n_fields * 2))
    phases = rng.uniform(0, 2 * np.pi, size=n_fields * 2)
    fields = np.cos(np.pi * coords @ freqs + phases)  # [V, 2*n_fields]
    fields = np.concatenate([np.ones((len(v), 1)), fields], axis=1)
    q, _ = np.linalg.qr(fields)  # orthonormal columns, constant first
    q = q[:, :n_fields] * np.sqrt(len(v))  # unit RMS per field
    q[:, 0] = 1.0
    basis = np.zeros((len(v), 3, n_modes))
    for k in range(n_modes):  # k over modes (50), never over vertices
        field, channel = divmod(k, 3)
        basis[:, channel, k] = q[:, field] * (GLOBAL_MODE_STD if field == 0 else LOCAL_MODE_STD)
    mean = np.broadcast_to(np.asarray(MEAN_SKIN_TONE), (len(v), 3))
    return mean.astype(np.float32), basis.astype(np.float32)
