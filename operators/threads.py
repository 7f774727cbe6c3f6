"""How a CPU embedder uses its threads: batches split into slices, one per thread."""

from __future__ import annotations

import numpy as np

# Frames per thread a CPU actor's call should bring, so that no thread runs the tower on a
# batch too small to be efficient (docs/decisions.md).
CPU_FRAMES_PER_THREAD = 16


def splits_batches(device: str, threads: int) -> bool:
    """Whether a ClipEmbedder on `device` with `threads` threads splits each batch across
    them by default: on a CPU with more than one thread, where one torch thread per slice
    beat torch's operator threads at every size measured (`benchmarks.cpu_threads`)."""
    return device == "cpu" and threads > 1


def batch_slices(n: int, batch_size: int, workers: int = 1) -> list[slice]:
    """Split n frames into the fewest slices of equal size (to within one frame) that give
    every one of `workers` the same number of slices, none over `batch_size`. Returns the
    slices in order; none when n is 0."""
    if n <= 0:
        return []
    rounds = -(-n // (max(1, workers) * max(1, batch_size)))
    count = min(n, max(1, workers) * rounds)
    edges = np.linspace(0, n, count + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


