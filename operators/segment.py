"""Shot and scene segmentation over per-frame features (pure NumPy, no Ray).

Shots come from training-free per-frame features (colour histogram + edges + thumbnail,
L2-normalised) of EVERY source frame, as tiny thumbnails the decoder makes anyway: a cut
lies between two source frames, which sampling at 1 fps would throw away. The detector
reads per-frame signals (`BoundarySignals`, streamed chunk by chunk in the decode task so
memory stays bounded): feature distances across each frame and how much of each frame's
change no global camera motion explains, and `detect_cuts` finds boundaries at
source-frame precision.
`detect_shots` runs the same detector on any sequence of frames held in memory. Scenes
group shots with semantic embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    dist: np.ndarray, wdist: np.ndarray, threshold: float, ratio: float, context: int, lasting: float
) -> list[tuple[int, float]]:
    """Boundaries whose adjacent distance clears ``threshold`` and ``ratio`` x its context,
    and whose windowed distance is at least ``lasting`` x the jump.

    The context is the larger of the two neighbouring distances and of the median
    distance within ``context`` frames on either side (the boundary itself excluded), as
    in PySceneDetect's AdaptiveDetector: a cut is one isolated jump, while fast motion or
    a fade raise the distances of several frames in a row. A flash jumps away and back: the
    frames a window after it look like those before, so its windowed distance stays low.
    Returns (boundary index b, strength) pairs, strength = distance / threshold.
    """
    out: list[tuple[int, float]] = []
    for i in np.flatnonzero((dist >= threshold) & (wdist >= lasting * dist)):
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


def _grey(thumbs: np.ndarray) -> np.ndarray:
    """Luma of RGB thumbnails (m, h, w, 3) uint8 as float32 (m, h, w)."""
    return np.asarray(thumbs, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _zoomed(grey: np.ndarray, scale: float) -> np.ndarray:
    """Frames (m, h, w) magnified by ``scale`` about their centre (bilinear, edges held)."""
    h, w = grey.shape[1:]
    y = np.clip((np.arange(h) - (h - 1) / 2) / scale + (h - 1) / 2, 0, h - 1)
    x = np.clip((np.arange(w) - (w - 1) / 2) / scale + (w - 1) / 2, 0, w - 1)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[None, :, None], (x - x0)[None, None, :]
    top = grey[:, y0][:, :, x0] * (1 - fx) + grey[:, y0][:, :, x1] * fx
    bottom = grey[:, y1][:, :, x0] * (1 - fx) + grey[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


ZOOMS = (0.8, 0.9, 1 / 0.9, 1 / 0.8)  # the per-frame zooms `motion_residuals` tries


def motion_residuals(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much each frame changed from the one before it, and how much of that change no
    global camera motion explains.

    Takes ``grey`` (m + 1, h, w) float32 luma thumbnails (the frame before the first one
    first). Returns (change, residual), (m,) float32 each: the mean absolute difference
    with the previous frame, and the smallest such difference after moving the previous
    frame by a global shift (up to a sixth of the frame each way, on a 2x2-pooled copy) or
    a zoom about its centre (ZOOMS, on a 3x3-blurred copy, so that resampling itself costs
    little), over the part of the frame every candidate covers. A pan or a zoom leaves
    little residual; a cut, a dissolve, a wipe or an iris leave most of the change.
    """
    m = len(grey) - 1
    if m <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    h, w = grey.shape[1:]
    half = grey[:, : h // 2 * 2, : w // 2 * 2].reshape(m + 1, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    hh, hw = half.shape[1:]
    sy, sx = max(1, hh // 6), max(1, hw // 6)
    cur, prev = half[1:, sy : hh - sy, sx : hw - sx], half[:-1]
    change = np.abs(cur - prev[:, sy : hh - sy, sx : hw - sx]).mean(axis=(1, 2))
    shifted = change.copy()
    for dy in range(-sy, sy + 1):
        for dx in range(-sx, sx + 1):
            moved = prev[:, sy + dy : hh - sy + dy, sx + dx : hw - sx + dx]
            shifted = np.minimum(shifted, np.abs(cur - moved).mean(axis=(1, 2)))
    pad = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blur = sum(pad[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    my, mx = max(1, h // 6), max(1, w // 8)
    cur, prev = blur[1:, my : h - my, mx : w - mx], blur[:-1]
    still = np.abs(cur - prev[:, my : h - my, mx : w - mx]).mean(axis=(1, 2))
    zoomed = still.copy()
    for scale in ZOOMS:
        zoomed = np.minimum(zoomed, np.abs(cur - _zoomed(prev, scale)[:, my : h - my, mx : w - mx]).mean(axis=(1, 2)))
    share = np.minimum(shifted / np.maximum(change, 1e-6), zoomed / np.maximum(still, 1e-6))
    return change.astype(np.float32), (change * np.minimum(share, 1.0)).astype(np.float32)


def _unexplained(change: np.ndarray, residual: np.ndarray, lo: int, hi: int) -> float:
    """Share of the change over entries [lo, hi) that no global motion explains (1.0 when
    nothing changed)."""
    lo, hi = max(0, lo), min(len(change), hi)
    total = float(np.sum(change[lo:hi]))
    return float(np.sum(residual[lo:hi])) / total if total > 1e-6 else 1.0


WINDOW_S = 1.0  # the soft-transition detector's window on either side of a boundary
MIN_SHOT_S = 1.0  # no shot is shorter (a boundary nearer one or the video's ends is dropped)
LAG_S = 0.25  # the step of the "how busy is it" signal: what sampling at 4 fps would see


def signal_window(fps: float, window_s: float = WINDOW_S) -> int:
    """The window, in frames, of a signal over frames `fps` a second."""
    return max(2, round(window_s * fps))


def signal_lag(fps: float, window: int) -> int:
    """The lag, in frames, of the `ldist` signal (at most the window)."""
    return max(1, min(window, round(LAG_S * fps)))


class BoundarySignals:
    """The shot detector's signals, streamed over one video's frames chunk by chunk.

    For every frame i (in the order pushed): `dist[i]`, the cosine distance to frame i-1;
    `wdist[i]`, the distance between the mean of the `window` frames before i and of the
    `window` frames from i on (windows clipped at the video's ends); `ldist[i]`, the
    distance to frame i-`lag` (clipped at the start); with thumbnails, `change[i]` and
    `residual[i]`, the grey-level change from frame i-1 and what of it no global shift or
    zoom explains (`motion_residuals`); all 0 for the first frame (change and residual 0
    without thumbnails). `push` returns the frames whose signals are complete (a frame's
    `wdist` needs `window` frames after it), `finish` the rest. Memory: 2 x `window`
    frames' features and one thumbnail. Returns are (frame_index (k,) int64, dist, wdist,
    ldist, change, residual (k,) float32).

    The first `skip` frames pushed are context only (their signals are never returned):
    a span of a long video decoded on its own starts with the frames before it.
    """

    def __init__(self, window: int, lag: int = 1, skip: int = 0) -> None:
        self.window = int(window)
        self.lag = max(1, min(int(lag), self.window))
        self._feats = np.zeros((0, 0), np.float64)
        self._index = np.zeros(0, np.int64)
        self._motion = np.zeros((2, 0), np.float32)  # change, residual of the buffer's frames
        self._grey: np.ndarray | None = None  # the last frame's luma thumbnail
        self._base = 0  # position of the buffer's first frame
        self._next = int(skip)  # position of the first frame whose signals are not out yet
        self._seen = 0

    def push(self, features: np.ndarray, frame_index: np.ndarray,
             thumbs: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Take the next frames' features (m, D), source indices (m,) and, for the motion
        signals, their thumbnails (m, h, w, 3) uint8."""
        f = unit_rows(features).astype(np.float64)
        self._feats = f if self._feats.size == 0 else np.concatenate([self._feats, f])
        self._index = np.concatenate([self._index, np.asarray(frame_index, np.int64)])
        motion = np.zeros((2, len(f)), np.float32)
        if thumbs is not None and len(thumbs):
            grey = _grey(thumbs)
            before = grey[:1] if self._grey is None else self._grey[None]
            motion = np.stack(motion_residuals(np.concatenate([before, grey])))
            self._grey = grey[-1]
        self._motion = np.concatenate([self._motion, motion], axis=1)
        self._seen += len(f)
        return self._emit(self._seen - self.window + 1, clip_right=False)

    def finish(self) -> tuple[np.ndarray, ...]:
        """The signals of the frames still held (the video has ended)."""
        return self._emit(self._seen, clip_right=True)

    def _emit(self, upto: int, clip_right: bool) -> tuple[np.ndarray, ...]:
        lo, hi = self._next, max(self._next, min(upto, self._seen))
        if hi <= lo:
            return np.zeros(0, np.int64), *(np.zeros(0, np.float32) for _ in range(5))
        w, base, f = self.window, self._base, self._feats
        b = np.arange(lo, hi)
        dist, wdist, ldist = np.zeros(len(b)), np.zeros(len(b)), np.zeros(len(b))
        inner = b > 0
        bi = b[inner] - base
        dist[inner] = np.clip(1.0 - np.sum(f[bi] * f[bi - 1], axis=1), 0.0, 2.0)
        back = np.maximum(b[inner] - self.lag, 0) - base
        ldist[inner] = np.clip(1.0 - np.sum(f[bi] * f[back], axis=1), 0.0, 2.0)
        csum = np.vstack([np.zeros((1, f.shape[1])), np.cumsum(f, axis=0)])
        left_lo = np.maximum(b[inner] - w, 0) - base
        right_hi = np.minimum(b[inner] + w, self._seen if clip_right else b[inner] + w) - base
        left = unit_rows((csum[bi] - csum[left_lo]) / (bi - left_lo)[:, None])
        right = unit_rows((csum[right_hi] - csum[bi]) / (right_hi - bi)[:, None])
        wdist[inner] = np.clip(1.0 - np.sum(left * right, axis=1, dtype=np.float64), 0.0, 2.0)
        change, residual = self._motion[:, b - base]
        out = (self._index[b - base], dist.astype(np.float32), wdist.astype(np.float32), ldist.astype(np.float32),
               change, residual)
        self._next = hi
        keep_from = max(0, hi - w)  # the next frame's left window starts here
        self._feats, self._index = self._feats[keep_from - base :], self._index[keep_from - base :]
        self._motion = self._motion[:, keep_from - base :]
        self._base = keep_from
        return out


def boundary_signals(features: np.ndarray, window: int, lag: int = 1,
                     thumbs: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """`BoundarySignals` of frames held in memory: (dist, wdist, ldist, change, residual),
    each (n,)."""
    signals = BoundarySignals(window, lag)
    parts = [signals.push(features, np.arange(len(features)), thumbs), signals.finish()]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(1, 6))


@dataclass(frozen=True)
class ShotSignals:
    """One video's detector input: per source frame (every decoded frame, in order) its
    index, `dist`, `wdist` and `ldist` (see BoundarySignals), and, with TransNetV2, its
    transition probability; `change` and `residual` (BoundarySignals' motion signals;
    None: no motion test)."""

    frame_index: np.ndarray
    dist: np.ndarray
    wdist: np.ndarray
    ldist: np.ndarray
    probs: np.ndarray | None = None
    change: np.ndarray | None = None
    residual: np.ndarray | None = None


# detect_cuts' rule on every source frame, tuned on the benchmark's sets: a lower floor, a
# milder prominence and steadiness than on 4 fps samples find transitions of 1.5-2 s, and
# the motion test keeps whip pans and fast zooms out (docs/decisions.md, "Shots")
DENSE_PARAMS = {"gradual_floor": 0.14, "gradual_median": 1.5, "gradual_prominence": 3.0, "steadiness": 12.0,
                "min_unexplained": 0.6}


def detect_cuts(signals: ShotSignals, fps: float, **params) -> np.ndarray:
    """Shot starts at source-frame precision: the source frame index of each shot's first
    frame (0 first) from a video's `ShotSignals` and frame rate, with `detect_shots`'
    detector (DENSE_PARAMS unless `params` say otherwise)."""
    if len(signals.frame_index) == 0:
        return np.zeros(1, np.int64)
    params = {**DENSE_PARAMS, **params}
    ts = signals.frame_index.astype(np.float64) / fps
    sig = [np.asarray(x[1:], np.float64) for x in (signals.dist, signals.wdist, signals.ldist)]
    if signals.change is not None and signals.residual is not None:
        params["motion"] = tuple(np.asarray(x[1:], np.float64) for x in (signals.change, signals.residual))
    starts = _shots_from_signals(*sig, ts, signal_window(fps, params.pop("window_s", WINDOW_S)), **params)
    cuts = signals.frame_index[starts]
    cuts[0] = 0
    return cuts


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
    window = max(2, round(window_s / _frame_step(ts)))
    dist, wdist, *_ = boundary_signals(feats, window)
    dist, wdist = dist[1:].astype(np.float64), wdist[1:].astype(np.float64)
    return _shots_from_signals(dist, wdist, dist, ts, window,
                               threshold=threshold, min_shot_s=min_shot_s, hard_ratio=hard_ratio,
                               gradual_threshold=gradual_threshold, gradual_prominence=gradual_prominence,
                               steadiness=steadiness)


def _shots_from_signals(
    dist: np.ndarray,
    wdist: np.ndarray,
    busy: np.ndarray,
    ts: np.ndarray,
    window: int,
    *,
    threshold: float | None = None,
    min_shot_s: float = 1.0,
    hard_ratio: float = 3.0,
    lasting: float = 0.5,
    gradual_threshold: float | None = None,
    gradual_floor: float = 0.2,
    gradual_median: float = 2.0,
    gradual_prominence: float = 4.0,
    steadiness: float = 20.0,
    motion: tuple[np.ndarray, np.ndarray] | None = None,
    min_unexplained: float = 0.0,
) -> np.ndarray:
    """detect_shots' decision from the signals across each boundary, (n-1,) each, entry
    b-1 for the boundary before frame b: `dist` (adjacent frames), `wdist` (windows),
    `busy` (frames LAG_S apart: the motion measure the soft-transition rule compares with,
    the adjacent distance itself for frames sampled a few a second); frame times `ts` (n,),
    the window in frames; optionally `motion`, (change, residual) across each boundary
    (BoundarySignals). With it, a boundary must leave `min_unexplained` of its grey-level
    change unexplained by a global shift or zoom: a hard cut across its own frame pair, a
    soft transition over the half window on either side of its peak; a whip pan or a fast
    zoom changes the picture as much, but moves it. Returns shot start positions (first 0)."""
    n = len(ts)
    if n < 3:
        return np.zeros(1, dtype=np.int64)
    hard_thr = threshold if threshold is not None else _robust_threshold(dist, 6.0, 0.15)
    grad_thr = (
        gradual_threshold
        if gradual_threshold is not None
        else max(gradual_floor, gradual_median * float(np.median(wdist)))
    )
    cands = _hard_cut_candidates(dist, wdist, hard_thr, hard_ratio, window, lasting)
    gradual = _gradual_candidates(wdist, busy, grad_thr, gradual_prominence, steadiness, window)
    if motion is not None and min_unexplained > 0:
        change, residual = motion
        half = max(1, window // 2)
        cands = [c for c in cands if _unexplained(change, residual, c[0] - 1, c[0]) >= min_unexplained]
        gradual = [c for c in gradual
                   if _unexplained(change, residual, c[0] - 1 - half, c[0] + half) >= min_unexplained]
    cands += gradual
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
