"""Embeddings with planted structure (shots, gradual transitions) for the pure-core tests."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as float32 unit vectors."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_directions(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``count`` random unit vectors in ``dim`` dimensions (nearly orthogonal for big dim)."""
    return unit(rng.normal(size=(count, dim)))


def shot_video(
    rng: np.random.Generator,
    lengths: list[int],
    dim: int = 64,
    noise: float = 0.1,
    blend: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive shots: blocks of frames around distinct random unit vectors plus noise.

    With ``blend`` > 0 every boundary becomes a gradual transition: the ``blend`` frames
    around it are linear blends between the two shot vectors (a dissolve). Returns
    (frames (n, dim) unit rows, true shot start indices).
    """
    centres = random_directions(rng, len(lengths), dim)
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(lengths)])
    base = centres[labels].copy()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for s, b in enumerate(starts[1:], start=1):
        lo = b - blend // 2
        for j in range(blend):
            w = (j + 1) / (blend + 1)
            base[lo + j] = (1 - w) * centres[s - 1] + w * centres[s]
    return unit(base + noise * rng.normal(size=base.shape)), starts.astype(np.int64)
