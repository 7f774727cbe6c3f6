"""Shot and scene segmentation over per-frame features (pure NumPy, no Ray).

Shots come from training-free per-frame features (colour histogram + edges + thumbnail,
L2-normalised); scenes group shots with semantic embeddings. Everything here works on
frames sampled at a fixed rate (a few frames a second), indexed 0..n-1.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-8


def _frame_step(timestamps: np.ndarray) -> float:
    """Median spacing in seconds of ascending timestamps (1.0 when fewer than two)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size < 2:
        return 1.0
    step = float(np.median(np.diff(ts)))
    return step if step > 0 else 1.0


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def _robust_threshold(values: np.ndarray, n_mads: float, floor: float) -> float:
    """``median + n_mads * MAD`` of ``values`` (MAD scaled to a standard deviation), >= floor."""
    if values.size == 0:
        return floor
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return max(floor, med + n_mads * mad)


def adjacent_distances(features: np.ndarray) -> np.ndarray:
    """Cosine distance between consecutive frames.

    Takes ``features`` (n, D) with unit rows; returns (max(n-1, 0),) float64 where entry
    ``b - 1`` is the distance across the candidate boundary before frame ``b``.
    """
    f = _unit_rows(features)
    if len(f) < 2:
        return np.zeros(0, dtype=np.float64)
    return np.clip(1.0 - np.sum(f[1:] * f[:-1], axis=1, dtype=np.float64), 0.0, 2.0)


def window_distances(features: np.ndarray, window: int) -> np.ndarray:
    """Cosine distance between the mean of ``window`` frames left and right of each boundary.

    Takes ``features`` (n, D) with unit rows and ``window`` >= 1 frames; returns
    (max(n-1, 0),) float64 where entry ``b - 1`` compares the mean of frames
    ``[b - window, b)`` with the mean of ``[b, b + window)`` (windows clipped at the ends).
    A gradual transition (dissolve, fade, wipe) that spans fewer than ``2 * window``
    frames shows up as a peak here even though no two neighbours differ much.
    """
    f = _unit_rows(features).astype(np.float64)
    n = len(f)
    if n < 2:
        return np.zeros(0, dtype=np.float64)
    csum = np.vstack([np.zeros((1, f.shape[1])), np.cumsum(f, axis=0)])
    b = np.arange(1, n)
    lo = np.maximum(b - window, 0)
    hi = np.minimum(b + window, n)
    left = _unit_rows((csum[b] - csum[lo]) / (b - lo)[:, None])
    right = _unit_rows((csum[hi] - csum[b]) / (hi - b)[:, None])
    return np.clip(1.0 - np.sum(left * right, axis=1, dtype=np.float64), 0.0, 2.0)


def _side_level(values: np.ndarray, b: int, gap: int, span: int) -> tuple[float, float]:
    """Mean of ``values`` over ``span`` entries starting ``gap`` before / after index ``b``."""
    left = values[max(0, b - gap - span + 1) : max(0, b - gap + 1)]
    right = values[b + gap : b + gap + span]
    lv = float(np.mean(left)) if left.size else np.nan
    rv = float(np.mean(right)) if right.size else np.nan
    return lv, rv


def _hard_cut_candidates(
    dist: np.ndarray, threshold: float, ratio: float, context: int
) -> list[tuple[int, float]]:
    """Boundaries whose adjacent distance clears ``threshold`` and ``ratio`` x its context.

    The context is the larger of the two neighbouring distances and of the median
    distance within ``context`` frames on either side (the boundary itself excluded), as
    in PySceneDetect's AdaptiveDetector: a cut is one isolated jump, while fast motion, a
    flash or a fade raise the distances of several frames in a row.
    Returns (boundary index b, strength) pairs, strength = distance / threshold.
    """
    out: list[tuple[int, float]] = []
    for i in np.flatnonzero(dist >= threshold):
        lo, hi = max(0, i - context), min(len(dist), i + context + 1)
        ctx = np.concatenate([dist[lo:i], dist[i + 1 : hi]])
        near = np.concatenate([dist[max(0, i - 1) : i], dist[i + 1 : i + 2]])
        base = max(
            float(np.median(ctx)) if ctx.size else 0.0,
            float(np.max(near)) if near.size else 0.0,
        )
        if dist[i] >= ratio * (base + 0.01):
            out.append((int(i) + 1, float(dist[i] / threshold)))
    return out


def _gradual_candidates(
    wdist: np.ndarray, threshold: float, prominence: float, window: int
) -> list[tuple[int, float]]:
    """Local maxima of windowed distance that stand out from both sides.

    A peak at boundary ``b`` must be the maximum within ``window`` entries, clear
    ``threshold``, and be ``prominence`` x the mean windowed distance ``window``..``2 window``
    entries away on the higher of the two sides. A transition between two steady shots
    peaks and falls back on both sides; steady camera motion keeps the windowed distance
    flat, so it never stands out. Returns (boundary index b, strength) pairs.
    """
    out: list[tuple[int, float]] = []
    n = len(wdist)
    for i in np.flatnonzero(wdist >= threshold):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        if wdist[i] < np.max(wdist[lo:hi]):
            continue
        left, right = _side_level(wdist, int(i), window + 1, window)
        sides = [v for v in (left, right) if not np.isnan(v)]
        side = max(sides) if sides else 0.0
        if wdist[i] >= prominence * (side + 0.01):
            out.append((int(i) + 1, float(wdist[i] / threshold)))
    return out


def _suppress(
    candidates: list[tuple[int, float]], timestamps: np.ndarray, min_gap_s: float
) -> list[int]:
    """Non-maximum suppression: keep the strongest boundaries at least ``min_gap_s`` apart.

    Boundaries closer than ``min_gap_s`` to the first or last frame are dropped too.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    kept: list[int] = []
    for b, _ in sorted(candidates, key=lambda c: -c[1]):
        t = 0.5 * (ts[b - 1] + ts[b])
        if t - ts[0] < min_gap_s or ts[-1] - t < min_gap_s:
            continue
        if all(abs(t - 0.5 * (ts[k - 1] + ts[k])) >= min_gap_s for k in kept):
            kept.append(b)
    return sorted(kept)


def detect_shots(
    features: np.ndarray,
    timestamps: np.ndarray,
    *,
    threshold: float | None = None,
    min_shot_s: float = 1.0,
    window_s: float = 1.0,
    hard_ratio: float = 3.0,
    gradual_threshold: float | None = None,
    gradual_prominence: float = 2.0,
) -> np.ndarray:
    """Shot boundaries, hard cuts and soft transitions alike, from training-free features.

    Two detectors vote, then non-maximum suppression keeps boundaries ``min_shot_s`` apart:

    * hard cuts: the cosine distance between neighbouring frames clears ``threshold`` and
      is ``hard_ratio`` x the distances next to it and around it (PySceneDetect's
      AdaptiveDetector idea: fast motion and fades raise several in a row, a cut one);
    * soft transitions (dissolve, fade, wipe, pixelize, particle effects): the mean of a
      ``window_s`` window left of each boundary is compared with the mean of the window to
      its right (the "window on either side" of TransNet-style and twin-comparison
      detectors, Zhang et al. 1993); a peak that clears ``gradual_threshold`` and is
      ``gradual_prominence`` x the level on both sides marks a transition at its middle.
      Slow camera motion and people walking past a fixed camera raise the windowed
      distance evenly and never form such a peak.

    Thresholds left ``None`` adapt to the video: median + 6 MADs of the distances, with
    absolute floors (0.15 for hard cuts, 0.12 for the windowed distance).

    Takes ``features`` (n, D) float32 with L2-normalised rows and ``timestamps`` (n,)
    ascending seconds. Returns int64 shot START indices into the n frames: starts with 0
    when n > 0, empty when n == 0.
    """
    feats = np.asarray(features, dtype=np.float32)
    ts = np.asarray(timestamps, dtype=np.float64)
    n = len(feats)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n < 3:
        return np.zeros(1, dtype=np.int64)
    step = _frame_step(ts)
    window = max(2, round(window_s / step))
    dist = adjacent_distances(feats)
    hard_thr = threshold if threshold is not None else _robust_threshold(dist, 6.0, 0.15)
    wdist = window_distances(feats, window)
    grad_thr = (
        gradual_threshold
        if gradual_threshold is not None
        else _robust_threshold(wdist, 6.0, 0.12)
    )
    cands = _hard_cut_candidates(dist, hard_thr, hard_ratio, window)
    cands += _gradual_candidates(wdist, grad_thr, gradual_prominence, window)
    starts = [0] + _suppress(cands, ts, min_shot_s)
    return np.asarray(starts, dtype=np.int64)


def shot_ids_from_starts(n: int, starts: np.ndarray) -> np.ndarray:
    """Shot index of every frame.

    Takes the frame count ``n`` and shot start indices (ascending, first 0); returns (n,)
    int64 where frame i gets the index of the last start <= i.
    """
    st = np.asarray(starts, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if st.size == 0:
        return np.zeros(n, dtype=np.int64)
    ids = np.searchsorted(st, np.arange(n), side="right") - 1
    return np.maximum(ids, 0).astype(np.int64)


def boundary_times(timestamps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Time in seconds of each shot boundary.

    Takes ``timestamps`` (n,) and shot ``starts``; returns (len(starts) - 1,) float64, the
    midpoint between the last frame of the old shot and the first frame of the new one for
    every start after the first.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    st = np.asarray(starts, dtype=np.int64)
    st = st[st > 0]
    return 0.5 * (ts[st - 1] + ts[st])
