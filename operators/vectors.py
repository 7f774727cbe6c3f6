"""Small vector helpers shared by the features, segmentation and selection code."""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` (or `x` itself, for a vector) as float32 scaled to unit L2 norm; zero rows
    stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, EPS)
