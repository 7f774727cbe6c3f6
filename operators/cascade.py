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


def chunk_floor(chunk_frames: int, video_frames: int, min_candidates: int) -> int:
    """The fewest groups one chunk of `chunk_frames` frames may be cut into: its share of
    the `min_candidates` distinct frames the selection needs for the whole video of
    `video_frames` sampled frames (none when the video has no more frames than that, since
    it is kept whole anyway)."""
    need = min_candidates if video_frames > min_candidates else 0
    return -(-need * chunk_frames // max(video_frames, 1))


def plan_chunk(
    features: np.ndarray, video_frames: int, ratio: float | None, min_candidates: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Which frames of one chunk the model must see. Takes the chunk's features (n, D), the
    video's number of sampled frames, the cascade ratio (None: every frame, the dense
    job) and the distinct candidates the selection needs per video. Returns
    (representatives (m,), group_of (n,)) as `redundancy_groups` does."""
    n = len(features)
    if ratio is None:
        return np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)
    return redundancy_groups(features, ratio, min_groups=chunk_floor(n, video_frames, min_candidates))
