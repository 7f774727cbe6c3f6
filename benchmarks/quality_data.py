"""Data for the quality benchmark: ground truth of the real videos, soft-transition videos
made with ffmpeg's ``xfade`` filter (through PyAV's libavfilter), and needle splices.

Source clips are read with PyAV, frame by frame in decode order, so that every frame is
the one its timestamp names.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter
import cv2
import numpy as np

from benchmarks.common import VIDEOS_DIR, encode_h264

# Shot boundaries in seconds, from ../shared/videos/SOURCES.md (read off 4 fps frame sheets).
HARD_CUT_TRUTH: dict[str, list[float]] = {
    "Megamind.avi": [4.13, 6.46, 8.38],
    "big_buck_bunny_0_30.webm": [11.80, 15.67, 22.96],
    "cityCC0.mpg": [4.64],
}
NEGATIVE_TRUTH: dict[str, list[float]] = {"vtest.avi": [], "cockatoo.mp4": []}
# Motion graphics: only its hard cuts are labelled, its many animated changes are not.
PARTIAL_TRUTH: dict[str, list[float]] = {
    "wannaworktogether.mp4": [83.4, 96.7, 102.2, 103.8, 105.0, 112.8]
}

# Steady stretches (no cut inside) of the real videos: (file, start_s, end_s).
STEADY_CLIPS: list[tuple[str, float, float]] = [
    ("big_buck_bunny_0_30.webm", 3.0, 11.5),
    ("big_buck_bunny_0_30.webm", 12.0, 15.5),
    ("big_buck_bunny_0_30.webm", 23.2, 29.8),
    ("Megamind.avi", 0.3, 4.0),
    ("Megamind.avi", 8.5, 11.2),
    ("cityCC0.mpg", 0.0, 4.5),
    ("cityCC0.mpg", 4.8, 7.5),
    ("vtest.avi", 0.0, 79.0),
    ("cockatoo.mp4", 0.0, 14.0),
]
TRANSITIONS = ("fade", "dissolve", "wipeleft", "pixelize")
# The harder set's transitions (ffmpeg xfade names): cross-dissolve, particle dissolve, fade
# through black, wipe, iris, pixelation, clock wipe, zoom; each at every one of the durations.
HARDER_TRANSITIONS = ("fade", "dissolve", "fadeblack", "wipeleft", "circleopen", "pixelize",
                      "radial", "zoomin")
HARDER_DURATIONS = (0.5, 1.0, 1.5, 2.0)
STEADY_S = 2.0  # the harder set's still part of every shot, between its transitions
WIDTH, HEIGHT, FPS = 320, 240, 25


@dataclass(frozen=True)
class SoftVideo:
    """A made video: its path, boundary times (middle of each transition), transitions."""

    path: str
    boundaries: list[float]
    transitions: list[str]
    durations: tuple[float, ...] = ()  # of each transition, seconds (empty: DURATION_S each)


def read_clip(path: str, start_s: float, dur_s: float, fps: float = FPS,
              size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Frames of ``path`` from ``start_s`` for ``dur_s`` seconds at ``fps``, resized.

    Decodes sequentially with PyAV and takes the source frame nearest each output instant.
    Returns uint8 (m, H, W, 3) RGB.
    """
    return read_times(path, start_s + np.arange(int(round(dur_s * fps))) / fps, size)


def read_times(path: str, times: np.ndarray, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """The source frames of ``path`` nearest each of the ascending ``times`` (seconds),
    resized to ``size`` (width, height); a source frame repeats when times are denser than
    the source's frames and frames are skipped when they are sparser (fast playback).
    Decodes sequentially with PyAV. Returns uint8 (len(times), H, W, 3) RGB.
    """
    want = np.asarray(times, dtype=np.float64)
    container = av.open(path)
    stream = container.streams.video[0]
    rate = float(stream.average_rate)
    out: list[np.ndarray] = []
    for i, frame in enumerate(container.decode(stream)):
        t = i / rate
        img = None
        while len(out) < len(want) and t + 0.5 / rate >= want[len(out)]:
            if img is None:
                img = cv2.resize(frame.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_AREA)
            out.append(img)
        if len(out) == len(want):
            break
    container.close()
    if len(out) < len(want):
        raise ValueError(f"{path} ends before {want[len(out)]:.2f} s")
    return np.stack(out)


def _buffer(graph: av.filter.Graph, fps: int) -> av.filter.context.FilterContext:
    """A video buffer source of WIDTH x HEIGHT yuv420p at ``fps``."""
    args = (f"video_size={WIDTH}x{HEIGHT}:pix_fmt=yuv420p:time_base=1/{fps}"
            f":pixel_aspect=1/1:frame_rate={fps}/1")
    return graph.add("buffer", args)


def xfade(a: np.ndarray, b: np.ndarray, transition: str, duration_s: float,
          fps: int = FPS) -> np.ndarray:
    """Join clips ``a`` and ``b`` with ffmpeg's ``xfade`` filter (run by PyAV).

    The transition starts ``duration_s`` before the end of ``a``. Returns uint8
    (len(a) + len(b) - duration frames, H, W, 3) RGB.
    """
    graph = av.filter.Graph()
    src_a, src_b = _buffer(graph, fps), _buffer(graph, fps)
    offset = len(a) / fps - duration_s
    fx = graph.add("xfade", f"transition={transition}:duration={duration_s}:offset={offset}")
    sink = graph.add("buffersink")
    src_a.link_to(fx, 0, 0)
    src_b.link_to(fx, 0, 1)
    fx.link_to(sink)
    graph.configure()
    for src, clip in ((src_a, a), (src_b, b)):
        for i, img in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            src.push(frame)
        src.push(None)
    out = []
    while True:
        try:
            out.append(sink.pull().to_ndarray(format="rgb24"))
        except (EOFError, av.error.BlockingIOError):
            break
    return np.stack(out)


def write_video(path: str, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode RGB ``frames`` to an H.264 MP4 at ``path``."""
    encode_h264(path, frames, fps, WIDTH, HEIGHT, {"crf": "18", "preset": "veryfast"})


def _plan(rng: np.random.Generator, n_videos: int, clips_per_video: int, clip_s: float
          ) -> list[list[tuple[str, float]]]:
    """Pick (file, start) clips: consecutive clips of a video come from different files."""
    plans = []
    for _ in range(n_videos):
        plan: list[tuple[str, float]] = []
        while len(plan) < clips_per_video:
            name, lo, hi = STEADY_CLIPS[int(rng.integers(len(STEADY_CLIPS)))]
            if (plan and plan[-1][0] == name) or hi - lo < clip_s:
                continue
            plan.append((name, float(rng.uniform(lo, hi - clip_s))))
        plans.append(plan)
    return plans


def soft_transition_set(workdir: str, n_videos: int = 8, clips_per_video: int = 4,
                        clip_s: float = 4.0, duration_s: float = 1.0,
                        seed: int = 0) -> list[SoftVideo]:
    """Make (or reuse from ``workdir``) videos of real clips joined by soft transitions.

    Each video joins ``clips_per_video`` clips of ``clip_s`` seconds from different real
    videos with ``duration_s`` xfade transitions cycling through fade, dissolve, wipeleft
    and pixelize, so every kind appears equally often. The boundary of a transition is its
    middle. Returns the videos with their boundaries.
    """
    os.makedirs(workdir, exist_ok=True)
    rng = np.random.default_rng(seed)
    videos = []
    for v, plan in enumerate(_plan(rng, n_videos, clips_per_video, clip_s)):
        kinds = [TRANSITIONS[(v + j) % len(TRANSITIONS)] for j in range(len(plan) - 1)]
        path = os.path.join(workdir, f"soft_{v}_{'-'.join(kinds)}_{duration_s:g}s_{seed}.mp4")
        bounds, total = [], clip_s
        for _ in kinds:
            bounds.append(total - duration_s / 2)
            total += clip_s - duration_s
        if not os.path.exists(path):
            joined = read_clip(str(VIDEOS_DIR / plan[0][0]), plan[0][1], clip_s)
            for (name, start), kind in zip(plan[1:], kinds, strict=True):
                clip = read_clip(str(VIDEOS_DIR / name), start, clip_s)
                joined = xfade(joined, clip, kind, duration_s)
            write_video(path + ".part.mp4", joined)
            os.replace(path + ".part.mp4", path)
        videos.append(SoftVideo(path, bounds, kinds))
    return videos


def _pick(rng: np.random.Generator, need_s: float, avoid: str | None) -> tuple[str, float]:
    """A random (file, start) of ``need_s`` seconds inside one steady stretch, from a file
    other than ``avoid``."""
    fits = [c for c in STEADY_CLIPS if c[2] - c[1] >= need_s and c[0] != avoid]
    name, lo, hi = fits[int(rng.integers(len(fits)))]
    return name, float(rng.uniform(lo, hi - need_s))


def harder_transition_set(workdir: str, n_videos: int = len(HARDER_TRANSITIONS),
                          seed: int = 0) -> list[SoftVideo]:
    """Make (or reuse from ``workdir``) videos of real clips joined by long and varied
    transitions: each video joins five shots with four xfade transitions, transition j of
    video v of kind HARDER_TRANSITIONS[(v + j) % 8] and HARDER_DURATIONS[(j + 2 v) % 4]
    seconds long (0.5-2 s), so that with the default eight videos every kind appears once at
    every duration. Every shot
    holds STEADY_S seconds outside its transitions and comes from a steady stretch of a
    real video other than its neighbour's. The boundary of a transition is its middle.
    """
    os.makedirs(workdir, exist_ok=True)
    rng = np.random.default_rng(seed + 1000)
    videos = []
    for v in range(n_videos):
        kinds = [HARDER_TRANSITIONS[(v + j) % len(HARDER_TRANSITIONS)] for j in range(len(HARDER_DURATIONS))]
        durs = [HARDER_DURATIONS[(j + 2 * v) % len(HARDER_DURATIONS)] for j in range(len(kinds))]
        lengths = [a + b + STEADY_S for a, b in zip([0.0, *durs], [*durs, 0.0], strict=True)]
        plan: list[tuple[str, float]] = []
        for need in lengths:
            plan.append(_pick(rng, need, plan[-1][0] if plan else None))
        name = "-".join(f"{k}{d:g}" for k, d in zip(kinds, durs, strict=True))
        path = os.path.join(workdir, f"harder_{v}_{name}_{seed}.mp4")
        bounds, frames_so_far = [], int(round(lengths[0] * FPS))
        for d, length in zip(durs, lengths[1:], strict=True):
            bounds.append(frames_so_far / FPS - d / 2)
            frames_so_far += int(round(length * FPS)) - int(round(d * FPS))
        if not os.path.exists(path):
            joined = read_clip(str(VIDEOS_DIR / plan[0][0]), plan[0][1], lengths[0])
            for (src, start), length, kind, d in zip(plan[1:], lengths[1:], kinds, durs, strict=True):
                joined = xfade(joined, read_clip(str(VIDEOS_DIR / src), start, length), kind, d)
            write_video(path + ".part.mp4", joined)
            os.replace(path + ".part.mp4", path)
        videos.append(SoftVideo(path, bounds, kinds, tuple(durs)))
    return videos


@dataclass(frozen=True)
class NegativeVideo:
    """A made video of one continuous shot with events that are no cut: its path, the kind
    of event (pan, zoom, 8x, flash) and the (start_s, end_s) of each event."""

    path: str
    kind: str
    events: list[tuple[float, float]]


def _smooth(u: np.ndarray) -> np.ndarray:
    """Smoothstep of ``u`` clipped to [0, 1]: a camera move that eases in and out."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _crops(big: np.ndarray, x0: np.ndarray, y0: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per frame, the crop of ``big`` (m, BH, BW, 3) of ``scale`` x its size whose top-left
    is at fractions ``x0``, ``y0`` of the free margin, resized to WIDTH x HEIGHT."""
    bh, bw = big.shape[1:3]
    out = []
    for img, fx, fy, s in zip(big, x0, y0, scale, strict=True):
        w, h = max(8, int(round(bw * s))), max(8, int(round(bh * s)))
        left, top = int(round((bw - w) * fx)), int(round((bh - h) * fy))
        out.append(cv2.resize(img[top : top + h, left : left + w], (WIDTH, HEIGHT),
                              interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _pan(src: str, start: float, dur: float, moves: list[tuple[float, float]]) -> tuple[np.ndarray, list]:
    """A clip seen through a window half its size that whips across it: one move per
    (start_s, length_s) of ``moves``, alternating left-to-right and back."""
    big = read_clip(src, start, dur, size=(2 * WIDTH, 2 * HEIGHT))
    t = np.arange(len(big)) / FPS
    x = np.zeros(len(big))
    for j, (a, length) in enumerate(moves):
        step = _smooth((t - a) / length)
        x = np.where(t >= a, step if j % 2 == 0 else 1.0 - step, x)
    return _crops(big, x, np.full(len(big), 0.5), np.full(len(big), 0.5)), [(a, a + n) for a, n in moves]


def _zoom(src: str, start: float, dur: float, moves: list[tuple[float, float]]) -> tuple[np.ndarray, list]:
    """A clip with fast zooms: one move per (start_s, length_s) of ``moves``, alternating
    in to 0.35 of the frame and back out."""
    big = read_clip(src, start, dur, size=(2 * WIDTH, 2 * HEIGHT))
    t = np.arange(len(big)) / FPS
    s = np.ones(len(big))
    for j, (a, length) in enumerate(moves):
        step = _smooth((t - a) / length)
        s = np.where(t >= a, 1.0 - 0.65 * step if j % 2 == 0 else 0.35 + 0.65 * step, s)
    half = np.full(len(big), 0.5)
    return _crops(big, half, half, s), [(a, a + n) for a, n in moves]


def _fast(src: str, start: float, before_s: float, fast_s: float, after_s: float,
          speed: float = 8.0) -> tuple[np.ndarray, list]:
    """A continuous stretch played at 1x for ``before_s``, at ``speed`` x for ``fast_s``
    (output seconds) and at 1x again for ``after_s``: no jump in time, only in speed."""
    out_t = np.arange(int(round((before_s + fast_s + after_s) * FPS))) / FPS
    rate = np.where((out_t >= before_s) & (out_t < before_s + fast_s), speed, 1.0)
    src_t = start + np.concatenate([[0.0], np.cumsum(rate[:-1]) / FPS])
    return read_times(src, src_t), [(before_s, before_s + fast_s)]


def _flash(src: str, start: float, dur: float, at: list[float],
           levels: tuple[float, ...] = (0.95, 0.9, 0.6, 0.3)) -> tuple[np.ndarray, list]:
    """A clip with camera flashes: from each time in ``at``, a few frames blended towards
    white by ``levels`` (the flash and its decay), cycling through 1, 2 and 4 frames."""
    frames = read_clip(src, start, dur).astype(np.float32)
    events = []
    for j, a in enumerate(at):
        n = (1, 2, 4)[j % 3]
        i0 = int(round(a * FPS))
        for k, level in enumerate(levels[:n]):
            frames[i0 + k] = frames[i0 + k] * (1.0 - level) + 255.0 * level
        events.append((a, a + n / FPS))
    return np.clip(frames, 0, 255).astype(np.uint8), events


# Hard negatives from steady stretches of the real videos: (kind, maker, source, start_s, args).
NEGATIVES: list[tuple[str, str, float, tuple]] = [
    ("pan", "big_buck_bunny_0_30.webm", 3.0, (8.0, [(2.0, 0.5), (5.0, 0.7)])),
    ("pan", "cockatoo.mp4", 2.0, (8.0, [(2.5, 0.6), (5.5, 0.5)])),
    ("zoom", "vtest.avi", 10.0, (8.0, [(2.0, 0.6), (5.0, 0.5)])),
    ("zoom", "cockatoo.mp4", 5.0, (8.0, [(2.0, 0.5), (5.0, 0.6)])),
    ("8x", "vtest.avi", 20.0, (2.0, 4.0, 2.0)),
    ("8x", "cockatoo.mp4", 0.5, (2.0, 1.0, 2.5)),
    ("flash", "vtest.avi", 60.0, (8.0, [2.0, 4.0, 6.0])),
    ("flash", "big_buck_bunny_0_30.webm", 3.2, (8.0, [1.8, 3.6, 5.4])),
]
NEGATIVE_KINDS = ("pan", "zoom", "8x", "flash")


def motion_flash_set(workdir: str) -> list[NegativeVideo]:
    """Make (or reuse from ``workdir``) one-shot videos from steady stretches of the real
    videos with events a shot detector must not take for cuts (NEGATIVES): fast whip pans
    and fast zooms over real footage, real footage played at 8x for a while, and camera
    flashes of 1-4 frames of near-white. Events are returned with each video (their times
    are recomputed cheaply; the pixels are made once).
    """
    os.makedirs(workdir, exist_ok=True)
    makers = {"pan": _pan, "zoom": _zoom, "8x": _fast, "flash": _flash}
    out = []
    for i, (kind, src, start, args) in enumerate(NEGATIVES):
        path = os.path.join(workdir, f"negative_{i}_{kind}_{os.path.splitext(src)[0]}.mp4")
        events_path = path + ".events"
        if not (os.path.exists(path) and os.path.exists(events_path)):
            frames, events = makers[kind](str(VIDEOS_DIR / src), start, *args)
            write_video(path + ".part.mp4", frames)
            with open(events_path, "w") as f:
                f.write(repr([(round(a, 3), round(b, 3)) for a, b in events]))
            os.replace(path + ".part.mp4", path)
        with open(events_path) as f:
            events = [tuple(e) for e in ast.literal_eval(f.read())]
        out.append(NegativeVideo(path, kind, events))
    return out


def splice_needle(host: np.ndarray, needle: np.ndarray, at: int) -> np.ndarray:
    """Insert ``needle`` frames into ``host`` frames before index ``at``; returns the video."""
    return np.concatenate([host[:at], needle, host[at:]])


def decode_sequential(path: str, fps: float, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``fps`` decoded in order with PyAV (a cross-check decoder).

    Same geometry as ``operators.decode``: short side resized to ``size``, centre crop.
    Returns (timestamps (n,) float64 seconds, frames (n, size, size, 3) uint8).
    """
    container = av.open(path)
    stream = container.streams.video[0]
    rate = float(stream.average_rate)
    frames, times, next_t = [], [], 0.0
    for i, frame in enumerate(container.decode(stream)):
        t = i / rate
        if t + 0.5 / rate < next_t:
            continue
        next_t += 1.0 / fps
        img = frame.to_ndarray(format="rgb24")
        h, w = img.shape[:2]
        scale = size / min(h, w)
        img = cv2.resize(img, (max(size, round(w * scale)), max(size, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        frames.append(img[top : top + size, left : left + size])
        times.append(t)
    container.close()
    return np.asarray(times, dtype=np.float64), np.stack(frames)
