"""Shot and scene segmentation over per-frame features (pure NumPy, no Ray).

Shots come from training-free per-frame features (colour histogram + edges + thumbnail,
L2-normalised); scenes group shots with semantic embeddings. Everything here works on
frames sampled at a fixed rate (a few frames a second), indexed 0..n-1.
"""

from __future__ import annotations

import numpy as np

from operators.vectors import unit_rows


def _frame_step(timestamps: np.ndarray) -> float:
    """Median spacing in seconds of ascending timestamps (1.0 when fewer than two)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size < 2:
        return 1.0
    step = float(np.median(np.diff(ts)))
    return step if step > 0 else 1.0


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
    f = unit_rows(features)
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
    f = unit_rows(features).astype(np.float64)
    n = len(f)
    if n < 2:
        return np.zeros(0, dtype=np.float64)
    csum = np.vstack([np.zeros((1, f.shape[1])), np.cumsum(f, axis=0)])
    b = np.arange(1, n)
    lo = np.maximum(b - window, 0)
    hi = np.minimum(b + window, n)
    left = unit_rows((csum[b] - csum[lo]) / (b - lo)[:, None])
    right = unit_rows((csum[hi] - csum[b]) / (hi - b)[:, None])
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
    wdist: np.ndarray,
    dist: np.ndarray,
    threshold: float,
    prominence: float,
    steadiness: float,
    window: int,
) -> list[tuple[int, float]]:
    """Local maxima of the windowed distance that start or end a steady stretch.

    A peak at boundary ``b`` must be the maximum within ``window`` entries and clear
    ``threshold``. Then, on the calmer side (``window``..``2 window`` entries away), it
    must be ``prominence`` x the windowed distance and ``steadiness`` x the mean adjacent
    distance there. A transition joins shots that hold still for a moment at least on one
    side (the other may be busy with motion), while inside fast motion both sides stay
    busy and under steady camera motion the windowed distance is flat, so neither passes.
    Returns (boundary index b, strength) pairs.
    """
    out: list[tuple[int, float]] = []
    n = len(wdist)
    for i in np.flatnonzero(wdist >= threshold):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        if wdist[i] < np.max(wdist[lo:hi]):
            continue
        levels = [v for v in _side_level(wdist, int(i), window + 1, window) if not np.isnan(v)]
        busy = [v for v in _side_level(dist, int(i), window + 1, window) if not np.isnan(v)]
        if not levels or not busy:
            continue
        if wdist[i] >= prominence * (min(levels) + 0.01) and wdist[i] >= steadiness * (
            min(busy) + 0.005
        ):
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
    gradual_prominence: float = 4.0,
    steadiness: float = 20.0,
) -> np.ndarray:
    """Shot boundaries, hard cuts and soft transitions alike, from training-free features.

    Two detectors vote, then non-maximum suppression keeps boundaries ``min_shot_s`` apart:

    * hard cuts: the cosine distance between neighbouring frames clears ``threshold`` and
      is ``hard_ratio`` x the distances next to it and around it (PySceneDetect's
      AdaptiveDetector idea: fast motion and fades raise several in a row, a cut one);
    * soft transitions (dissolve, fade, wipe, pixelize, particle effects): the mean of a
      ``window_s`` window left of each boundary is compared with the mean of the window to
      its right (the "window on either side" of twin-comparison detectors, Zhang et al.
      1993, and TransNet-style models); a local peak that clears ``gradual_threshold`` and,
      on the calmer side, is ``gradual_prominence`` x the windowed distance and
      ``steadiness`` x the adjacent distance there, marks a transition at its middle.
      Slow camera motion and people walking past a fixed camera keep the windowed
      distance low and flat; fast motion keeps both sides busy. Neither fires.

    Thresholds left ``None`` adapt to the video: hard cuts median + 6 MADs of the adjacent
    distances (at least 0.15); soft transitions 2 x the median windowed distance (at least
    0.2). Boundaries closer than ``min_shot_s`` to each other or to either end of the video
    are suppressed (the stronger one is kept), so a fade-in from black is no boundary.
    Defaults: window_s = 1.0, hard_ratio = 3, gradual_prominence = 4, steadiness = 20,
    tuned on ../shared/videos and xfade transitions (benchmarks/quality.py).

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
        else max(0.2, 2.0 * float(np.median(wdist)))
    )
    cands = _hard_cut_candidates(dist, hard_thr, hard_ratio, window)
    cands += _gradual_candidates(
        wdist, dist, grad_thr, gradual_prominence, steadiness, window
    )
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


def shot_windows(
    timestamps: np.ndarray, starts: np.ndarray, duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Every shot as a time window.

    Takes ``timestamps`` (n,), shot ``starts`` and the video's duration; returns (start_s,
    end_s), two (len(starts),) float64 arrays: the first shot starts at 0, the last ends at
    ``duration_s``, and the shots meet at ``boundary_times``.
    """
    if len(starts) == 0:
        return np.zeros(0), np.zeros(0)
    inner = boundary_times(timestamps, starts)
    return np.append(0.0, inner), np.append(inner, float(duration_s))


def _tiling_depths(sims: np.ndarray) -> np.ndarray:
    """TextTiling depth of every gap: climb to the highest similarity on each side."""
    depths = np.zeros(len(sims))
    for g, value in enumerate(sims):
        left = value
        for v in sims[g::-1]:
            if v < left:
                break
            left = v
        right = value
        for v in sims[g:]:
            if v < right:
                break
            right = v
        depths[g] = (left - value) + (right - value)
    return depths


def stitch_shots(
    embeddings: np.ndarray, shot_starts: np.ndarray, similarity: float = 0.9
) -> np.ndarray:
    """Merge adjacent shots whose mean embeddings are alike (Panda-70M's stitching).

    Takes ``embeddings`` (n, D) unit rows and shot start indices; a shot whose mean
    embedding has cosine similarity >= ``similarity`` with the (stitched) shot before it
    joins that shot. Returns the kept start indices (int64, first 0).
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    starts = np.asarray(shot_starts, dtype=np.int64)
    if len(emb) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], len(emb))
    kept = [int(starts[0])]
    current = emb[starts[0] : ends[0]].sum(axis=0)
    for s, e in zip(starts[1:], ends[1:], strict=True):
        block = emb[s:e].sum(axis=0)
        a, b = unit_rows(current), unit_rows(block)
        if float(a @ b) >= similarity:
            current = current + block
        else:
            kept.append(int(s))
            current = block
    return np.asarray(kept, dtype=np.int64)


def detect_scenes(
    embeddings: np.ndarray,
    shot_starts: np.ndarray,
    *,
    depth_threshold: float | None = None,
    block: int = 2,
    stitch_similarity: float = 0.9,
) -> np.ndarray:
    """Group shots into semantic scenes (TextTiling; VideoLLaMB's SceneTilling).

    First stitches adjacent shots that look alike (``stitch_shots``, Panda-70M,
    ``stitch_similarity`` = 0.9). Then, at every gap between shots, compares the mean
    embedding of the ``block`` = 2 shots before it with the ``block`` shots after it,
    and scores the gap's TextTiling depth (Hearst 1997): how far the similarity dips below
    the nearest peaks on both sides. Gaps deeper than ``depth_threshold`` start a scene;
    None adapts it: mean + 0.5 std of the depths, at least 0.1.

    Takes ``embeddings`` (n, D) unit rows (semantic, e.g. CLIP) and shot start indices;
    returns int64 scene start indices (a subset of the shot starts, first 0; empty when
    n == 0).
    """
    emb = unit_rows(embeddings)
    n = len(emb)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    units = stitch_shots(emb, np.asarray(shot_starts, dtype=np.int64), stitch_similarity)
    if len(units) < 2:
        return units
    ends = np.append(units[1:], n)
    sums = np.stack([emb[s:e].sum(axis=0) for s, e in zip(units, ends, strict=True)])
    sims = np.empty(len(units) - 1)
    for g in range(1, len(units)):
        left = unit_rows(sums[max(0, g - block) : g].sum(axis=0))
        right = unit_rows(sums[g : g + block].sum(axis=0))
        sims[g - 1] = float(left @ right)
    depths = _tiling_depths(sims)
    if depth_threshold is None:
        depth_threshold = max(0.1, float(depths.mean() + 0.5 * depths.std()))
    cut = np.flatnonzero(depths >= depth_threshold) + 1
    return np.concatenate([[0], units[cut]]).astype(np.int64)
