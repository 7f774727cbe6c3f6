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


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, codec: str = "mpeg4",
                options: dict[str, str] | None = None) -> Path:
    """Encode (n, H, W, 3) uint8 frames to a video file with the encoder's `options` (default:
    a keyframe every 12 frames); returns its path."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options or {"g": "12"}
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


def texture(seed: int, width: int, height: int, tint: tuple[int, int, int] | None = None) -> np.ndarray:
    """A smooth random colour texture (height, width, 3) float32 in [0, 255]: a coarse
    4 x 12 colour field plus finer detail, so that a window moved across it shows other
    colours and a global shift can be told from a change of content; ``tint`` pulls its
    colours towards one hue (two tints: two shots that look different)."""
    rng = np.random.default_rng(seed)

    def up(a: np.ndarray) -> np.ndarray:
        ys, xs = np.linspace(0, a.shape[0] - 1, height), np.linspace(0, a.shape[1] - 1, width)
        y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
        y1, x1 = np.minimum(y0 + 1, a.shape[0] - 1), np.minimum(x0 + 1, a.shape[1] - 1)
        fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
        return top * (1 - fy) + (a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx) * fy

    img = np.clip(up(rng.uniform(0, 255, (4, 12, 3))) + up(rng.uniform(-40, 40, (9, 36, 3))), 0, 255)
    if tint is not None:
        img = 0.6 * img + 0.4 * np.asarray(tint, np.float64)
    return img.astype(np.float32)


def window_view(img: np.ndarray, x: float, width: int) -> np.ndarray:
    """The ``width`` columns of ``img`` from the (fractional) column ``x``, interpolated."""
    x0 = int(np.floor(x))
    f = x - x0
    return img[:, x0 : x0 + width] * (1 - f) + img[:, x0 + 1 : x0 + width + 1] * f
