"""Small synthetic videos for tests, written with PyAV: shots of known length and content."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def shot_frames(n: int, seed: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """n frames (n, H, W, 3) uint8 of one 'shot': a random smooth colour field with a square
    drifting across it, so consecutive frames differ a little and shots differ a lot."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    field = base[(yy * 4 // h), (xx * 4 // w)]
    frames = np.empty((n, h, w, 3), np.uint8)
    colour = rng.integers(0, 256, size=3)
    for i in range(n):
        f = field.copy()
        x0 = int((i / max(1, n - 1)) * (w - 30))
        f[h // 3 : h // 3 + 30, x0 : x0 + 30] = colour
        frames[i] = f.astype(np.uint8)
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, codec: str = "mpeg4") -> Path:
    """Encode (n, H, W, 3) uint8 frames to a video file; returns its path."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "12"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_shots_video(path: str | Path, shot_seconds: list[float], fps: int = 10, seed: int = 0) -> list[float]:
    """Write a video whose shots last `shot_seconds`; returns the boundary times (s)."""
    parts = [shot_frames(int(round(s * fps)), seed + i) for i, s in enumerate(shot_seconds)]
    write_video(path, np.concatenate(parts), fps=fps)
    return list(np.cumsum(shot_seconds)[:-1])
