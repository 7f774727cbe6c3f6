"""The cascade: decide from cheap features which frames the expensive model must see.

Consecutive frames that look alike (a static shot, a slow pan's neighbours, duplicates) are
grouped; only one representative per group is embedded, and the other frames of the group
take its embedding. This follows KFFocus's idea of using cheap codec-like redundancy
signals before any model runs: most sampled frames of real video are near-duplicates of a
neighbour, so the model's work drops to the number of visually distinct moments.
"""

from __future__ import annotations

import math

import numpy as np


def _segment(features: np.ndarray, tau: float) -> np.ndarray:
    """Start indices of runs in which every frame has cosine >= tau with the run's first."""
    starts = [0]
    anchor = features[0]
    for i in range(1, len(features)):
        if float(features[i] @ anchor) < tau:
            starts.append(i)
            anchor = features[i]
    return np.asarray(starts, np.int64)


def redundancy_groups(
    features: np.ndarray,
    max_ratio: float = 0.25,
    max_similarity: float = 0.995,
    iterations: int = 14,
    min_groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Group consecutive near-duplicate frames and pick one representative per group.

    Takes L2-normalised features (n, D) of consecutive sampled frames. Groups are temporal
    runs whose frames all stay within a cosine similarity `tau` of the run's first frame
    (so slow drift starts a new group, unlike adjacent-difference rules); `tau` is the
    strictest value in [0, max_similarity] that yields at most
    max(ceil(max_ratio * n), min_groups) groups (found by bisection). A static video
    therefore gets far fewer groups than the cap. The representative is the frame nearest
    its group's mean.

    Returns (representatives (m,) int64 ascending, group_of (n,) int64 index into them).
    """
    n = len(features)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    budget = max(1, math.ceil(max_ratio * n), min(n, min_groups))
    starts = _segment(features, max_similarity)
    if len(starts) > budget:
        lo, hi = -1.0, max_similarity  # count(lo) <= budget < count(hi)
        best = _segment(features, lo)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            cand = _segment(features, mid)
            if len(cand) <= budget:
                lo, best = mid, cand
            else:
                hi = mid
        starts = best
    ends = np.append(starts[1:], n)
    reps = np.empty(len(starts), np.int64)
    group_of = np.empty(n, np.int64)
    for g, (a, b) in enumerate(zip(starts, ends, strict=True)):
        seg = features[a:b]
        mean = seg.mean(axis=0)
        reps[g] = a + int(np.argmax(seg @ mean))
        group_of[a:b] = g
    return reps, group_of
