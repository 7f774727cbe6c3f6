"""Data for the quality benchmark: ground truth of the real videos, soft-transition videos
made with ffmpeg's ``xfade`` filter (through PyAV's libavfilter), and needle splices.

Source clips are read with PyAV, frame by frame in decode order, so that every frame is
the one its timestamp names.
"""

from __future__ import annotations

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
WIDTH, HEIGHT, FPS = 320, 240, 25


@dataclass(frozen=True)
class SoftVideo:
    """A made video: its path, boundary times (middle of each transition), transitions."""

    path: str
    boundaries: list[float]
    transitions: list[str]


def read_clip(path: str, start_s: float, dur_s: float, fps: float = FPS,
              size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Frames of ``path`` from ``start_s`` for ``dur_s`` seconds at ``fps``, resized.

    Decodes sequentially with PyAV and takes the source frame nearest each output instant.
    Returns uint8 (m, H, W, 3) RGB.
    """
    container = av.open(path)
    stream = container.streams.video[0]
    rate = float(stream.average_rate)
    want = start_s + np.arange(int(round(dur_s * fps))) / fps
    out: list[np.ndarray] = []
    for i, frame in enumerate(container.decode(stream)):
        t = i / rate
        while len(out) < len(want) and t + 0.5 / rate >= want[len(out)]:
            out.append(cv2.resize(frame.to_ndarray(format="rgb24"), size,
                                  interpolation=cv2.INTER_AREA))
        if len(out) == len(want):
            break
    container.close()
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
