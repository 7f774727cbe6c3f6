"""Probe and decode videos: sample at a fixed rate, scale to the model's resolution inside
the decoder (PyAV's swscale in order, or decord where seeking skips work), and hand frames
out in bounded chunks.

Frames for the model are decoded with the short side at `size` (aspect kept) and centre-
cropped to `size x size`, which is what CLIP's own preprocessing (resize + centre crop)
does, so no second resize happens downstream. Full-resolution frames are read only for the
few frames a method selects (`read_frames`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# decord must be imported before torch in the same process on some builds (it links its own
# ffmpeg); importing it here, at the bottom of the stack, keeps that order.
import decord
import numpy as np

decord.bridge.set_bridge("native")


# Every decoded frame's thumbnail, (width, height): TransNetV2's input size, and what the
# training-free shot detector reads; a box filter (swscale's AREA) keeps it cheap and unaliased.
THUMB_SIZE = (48, 27)


class DecodeError(RuntimeError):
    """The file cannot be decoded as a video; the message is the reason recorded for it."""


# What a file holds when it is clearly no video, from its first bytes.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
)
# decord's messages start with a time and its build machine's source path: "[02:07:53]
# /github/workspace/src/video/video_reader.cc:486: Error: ..."
_DECORD_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*|Check failed:.*?\)\s*|ERROR\s*|Error:\s*")


def one_sentence(message: str, limit: int = 200) -> str:
    """A decoder's message as one short sentence: its first line, without decord's
    timestamps and build paths, whitespace collapsed, at most `limit` characters."""
    lines = [ln for ln in str(message).strip().splitlines() if ln.strip()]
    text = _DECORD_NOISE.sub("", lines[0] if lines else "").strip(" .:")
    text = re.sub(r"\s+", " ", text)
    return text[:limit] if text else "unknown decoder error"


def _av_reason(exc: Exception) -> str:
    """PyAV's error as one sentence: FFmpeg's own text without the errno and file name."""
    return one_sentence(getattr(exc, "strerror", None) or str(exc))


def not_a_video(path: str) -> str | None:
    """What the file at `path` holds when its first bytes say it is no video (an image, a
    document, an archive, text or an HTML page), as "a PNG image", "text", ...; else None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4096th byte
            return None
        text = head[: exc.start].decode("utf-8")
    start = text.lstrip().lower()
    if start.startswith(("<!doctype html", "<html")):
        return "an HTML page"
    if start.startswith("<?xml"):
        return "an XML document"
    return "text" if all(c.isprintable() or c in "\r\n\t" for c in text) else None


def mp4_problem(path: str) -> str | None:
    """For an ISO-BMFF file (MP4, MOV: an `ftyp` box first), the reason it cannot be whole:
    a top-level box that runs past the end of the file (truncated), or no `moov` box (the
    index a recording or upload writes last, so one that never finished has none). Reads
    only box headers. None when the structure is sound or the file is no MP4."""
    size = os.path.getsize(path)
    kinds, pos = [], 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if not kinds and kind != b"ftyp":
                return None
            if box == 1 and len(head) == 16:
                box = int.from_bytes(head[8:16], "big")
            elif box == 0:
                box = size - pos
            if box < 8:
                return f"damaged MP4: a box at byte {pos} declares {box} bytes"
            if pos + box > size:
                return (f"truncated file: it holds {size} bytes but its MP4 '{kind.decode('latin-1')}' box "
                        f"ends at byte {pos + box}")
            kinds.append(kind)
            pos += box
    if kinds and b"moov" not in kinds:
        return "moov atom missing: the MP4 has no index (a recording or upload that never finished)"
    return None


def _why_undecodable(path: str, exc: Exception) -> str:
    """One sentence saying why decord could not open `path`: what the file holds instead,
    or what FFmpeg (through PyAV) says about it."""
    import av

    kind = not_a_video(path)
    if kind:
        return f"not a video: the file holds {kind}"
    try:
        with av.open(path) as container:
            streams = [s.type for s in container.streams]
    except av.error.FFmpegError as av_exc:
        return f"not a decodable video: {_av_reason(av_exc)}"
    except Exception:  # noqa: BLE001 - then decord's own words, cleaned
        return f"not a decodable video: {one_sentence(str(exc) or type(exc).__name__)}"
    if "video" not in streams:
        held = ", ".join(sorted({t for t in streams})) or "no streams"
        return f"no video stream: the file holds only {held}" if streams else "no video stream in the file"
    return f"not a decodable video: {one_sentence(str(exc) or type(exc).__name__)}"


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video without decoding it."""

    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    # every frame's presentation time (s, the first at 0) when the frame rate varies; None
    # when it is constant and frame i is at i / fps (see `variable_frame_times`)
    frame_times: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Chunk:
    """A bounded run of sampled frames of one video."""

    frame_index: np.ndarray  # (n,) int64 index into the source's frames
    timestamps: np.ndarray  # (n,) float64 seconds
    frames: np.ndarray  # (n, size, size, 3) uint8 RGB
    # each frame encoded at output size, when iter_chunks was asked to and decoded in order
    images: tuple[bytes, ...] | None = None
    # with `thumbs`: every source frame decoded since the previous chunk (through the end of
    # the video for the last chunk), as THUMB_SIZE RGB, and their indices
    thumb_index: np.ndarray | None = None  # (m,) int64
    thumbs: np.ndarray | None = None  # (m, 27, 48, 3) uint8


@dataclass(frozen=True)
class DecodeSpan:
    """The part of a video one task decodes when a long video is split (`iter_chunks`):
    the sampled frames at positions [first, end) of `sample_indices`, every source frame
    from `decode_from` (the decoder seeks to the keyframe before it) to `decode_to`
    (exclusive; None: the video's end)."""

    first: int
    end: int
    decode_from: int = 0
    decode_to: int | None = None


@dataclass(frozen=True)
class DecodedVideo:
    """All sampled frames of a (short) video, for the service, tests and benchmarks."""

    info: VideoInfo
    frame_index: np.ndarray
    timestamps: np.ndarray
    frames: np.ndarray


def _open(path: str, width: int = -1, height: int = -1, num_threads: int = 0):
    if not os.path.exists(path):
        raise DecodeError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        return decord.VideoReader(path, width=width, height=height, num_threads=num_threads)
    except Exception as exc:  # noqa: BLE001 - decord raises its own error types
        raise DecodeError(_why_undecodable(path, exc)) from exc


def probe_video(path: str) -> VideoInfo:
    """Open a local video file and return its frame count, fps, duration and size.

    Raises DecodeError with a one-sentence reason for empty, non-video, truncated or corrupt
    files (an MP4's box structure is checked first: a cut file can still open).
    """
    if os.path.exists(path) and os.path.getsize(path) > 0:
        problem = mp4_problem(path)
        if problem:
            raise DecodeError(problem)
    vr = _open(path, num_threads=1)
    n = len(vr)
    fps = float(vr.get_avg_fps() or 0.0)
    if n <= 0 or not np.isfinite(fps) or fps <= 0:
        raise DecodeError(f"no decodable video frames (frames={n}, fps={fps})")
    try:
        h, w = vr[0].shape[:2]
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"first frame cannot be decoded: {one_sentence(str(exc))}") from exc
    return VideoInfo(num_frames=n, fps=fps, duration_s=n / fps, width=int(w), height=int(h),
                     frame_times=variable_frame_times(path, vr))


def variable_frame_times(path: str, vr) -> np.ndarray | None:
    """Every frame's presentation time in seconds (the first at 0), from decord's index, when
    the video's frame rate varies: in an indexed container with finite, non-decreasing
    timestamps, more than 5% of the frame intervals off their median by half or more. None
    otherwise (a constant rate: frame i is at i / fps). Reads the index only (~1 ms)."""
    if os.path.splitext(path)[1].lower() not in SEEKABLE_CONTAINERS or len(vr) < 3:
        return None
    try:
        times = np.asarray(vr.get_frame_timestamp(list(range(len(vr))))[:, 0], np.float64)
    except Exception:  # noqa: BLE001 - no usable index: treated as constant
        return None
    gaps = np.diff(times)
    if not (np.all(np.isfinite(times)) and np.all(gaps >= 0)):
        return None
    usual = float(np.median(gaps))
    if usual <= 0 or np.mean((gaps > 1.5 * usual) | (gaps < usual / 1.5)) <= 0.05:
        return None
    return times - times[0]


def sample_indices(info: VideoInfo, fps: float, max_frames: int | None = None) -> np.ndarray:
    """Indices of the source frames sampled at `fps` frames a second (at most one per source
    frame), taking the frame nearest each sampling instant (by index / fps, or by the frames'
    own times when the rate varies). With `max_frames`, the rate is lowered so that no more
    than that many are taken. Returns int64 (n,)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if info.frame_times is not None:  # variable frame rate: the frame nearest each instant
        times = info.frame_times
        if max_frames is not None:
            fps = min(fps, max_frames / max(info.duration_s, 1e-9))
        instants = np.arange(0.0, times[-1] + 1e-9, 1.0 / fps)
        after = np.clip(np.searchsorted(times, instants), 1, len(times) - 1)
        nearer = np.where(instants - times[after - 1] <= times[after] - instants, after - 1, after)
        return np.unique(nearer.astype(np.int64))
    step = max(1.0, info.fps / fps)
    if max_frames is not None and info.num_frames / step > max_frames:
        step = info.num_frames / max_frames
    idx = np.floor(np.arange(0.0, info.num_frames, step) + 0.5).astype(np.int64)
    idx = idx[idx < info.num_frames]
    return np.unique(idx)


def sampling_step(info: VideoInfo, idx: np.ndarray) -> float:
    """The usual spacing, in source frames, of the sampled indices `idx` (their median gap;
    the video's length when there is one sample or none): what `open_reader` compares with the
    keyframe spacing to choose between seeking and decoding in order."""
    return float(np.median(np.diff(idx))) if len(idx) > 1 else float(info.num_frames)


def model_geometry(info: VideoInfo, size: int) -> tuple[int, int]:
    """(width, height) to decode at so that the short side is `size`, aspect kept, even."""
    scale = size / min(info.width, info.height)
    w = max(size, int(round(info.width * scale / 2)) * 2)
    h = max(size, int(round(info.height * scale / 2)) * 2)
    return w, h


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop (n, H, W, 3) frames to (n, size, size, 3) (a view, no copy)."""
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top : top + size, left : left + size]


def output_geometry(info: VideoInfo, max_side: int | None) -> tuple[int, int]:
    """(width, height) of frames written out: the source's size, (-1, -1), unless its long
    side exceeds `max_side`; then scaled to fit, aspect kept, even."""
    if max_side and max(info.width, info.height) > max_side:
        scale = max_side / max(info.width, info.height)
        return int(round(info.width * scale / 2)) * 2, int(round(info.height * scale / 2)) * 2
    return -1, -1


# Containers whose index decord seeks in exactly. In others decord can return the wrong
# frames: on AVI (OpenCV's Megamind.avi) get_batch lands ~100 frames early, and on MPEG-PS
# (cityCC0.mpg) even its sequential reads are 12 frames off. Those are decoded with PyAV
# (FFmpeg), in order, which is always exact.
SEEKABLE_CONTAINERS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm"})


def timestamps_are_sane(vr) -> bool:
    """True when decord's frame timestamps (first 64 frames) are finite, start at or after 0
    and never go back: its seeks are then exact in an indexed container."""
    try:
        ts = vr.get_frame_timestamp(list(range(min(len(vr), 64))))[:, 0]
    except Exception:  # noqa: BLE001 - no usable index
        return False
    return bool(np.all(np.isfinite(ts)) and ts[0] >= 0 and np.all(np.diff(ts) >= 0))


def display_order(path: str, frame_count: int) -> np.ndarray | None:
    """The presentation timestamps of a file's video frames in display order, read from its
    packets without decoding (a few ms per thousand frames). Returns int64 (frame_count,),
    or None unless every packet has a timestamp, none repeats and they name exactly
    `frame_count` frames (then frame i is the packet whose pts ranks i)."""
    import av

    missing = np.iinfo(np.int64).min
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            packets = (p for p in container.demux(stream) if p.size > 0)
            pts = np.fromiter((missing if p.pts is None else p.pts for p in packets), np.int64)
    except Exception:  # noqa: BLE001 - unreadable here means: decode without skipping
        return None
    if len(pts) != frame_count or np.any(pts == missing):
        return None
    order = np.sort(pts)
    return order if np.all(np.diff(order) > 0) else None


# Codecs whose decoders give every frame its own packet's timestamp, in display order, and
# skip only pictures nothing refers to. Not MPEG-4 Part 2: AVI's "packed" B-frames share a
# packet with the P-frame after them, and remuxed into MKV or MP4 they come out of the
# decoder with timestamps out of order (Megamind.avi remuxed: other frames than a full decode).
SKIPPABLE_CODECS = frozenset({"h264", "hevc"})


class _FrameCursor:
    """Walks (index, frame) pairs in ascending index and hands out the frame at a wanted
    index. A wanted frame that never came out of the decoder (a damaged picture) is stood in
    for by the next one, which stays available for the next wanted index."""

    def __init__(self, indexed: Iterator[tuple[int, object]],
                 seen: Callable[[int, object], None] | None = None) -> None:
        self.indexed = indexed
        self.pending: tuple[int, object] | None = None
        self.seen = seen  # called once for every frame that comes out of the decoder

    def _next(self) -> tuple[int, object] | None:
        item = next(self.indexed, None)
        if item is not None and self.seen is not None:
            self.seen(*item)
        return item

    def drain(self) -> None:
        """Decode the rest of the stream (for `seen`)."""
        while self._next() is not None:
            pass

    def at(self, i: int) -> object | None:
        """The frame at index `i` (or the first after it); None when the stream has ended."""
        while True:
            if self.pending is None:
                self.pending = self._next()
                if self.pending is None:
                    return None
            j, frame = self.pending
            if j < i:
                self.pending = None
                continue
            if j == i:
                self.pending = None
            return frame


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns that stand a decoded frame upright: its display
    matrix (a phone's portrait video is stored on its side), 0 without one."""
    rotation = frame.rotation if frame.side_data else 0
    return int(round(rotation / 90)) % 4


def _upright(reformatter, frame, size: dict, turns: int) -> np.ndarray:
    """The frame as RGB (h, w, 3), upright, at `size` ({} = the source's), which names the
    upright width and height: a frame on its side is scaled to the swapped size, then turned.
    (decord applies the display matrix itself.)"""
    if turns % 2 and size:
        size = {"width": size["height"], "height": size["width"]}
    rgb = reformatter.reformat(frame, format="rgb24", **size).to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _rank(order: np.ndarray, pts: int | None, last: int) -> int:
    """A decoded frame's index: the rank of its timestamp `pts` in `order`, after `last`.
    Raises DecodeError for a timestamp no packet has or one out of order."""
    j = int(np.searchsorted(order, pts)) if pts is not None else len(order)
    if j >= len(order) or order[j] != pts:
        raise DecodeError(f"a decoded frame has a timestamp ({pts}) no packet has")
    if j <= last:
        raise DecodeError(f"frames came out of the decoder out of timestamp order at frame {j}")
    return j


def _until(indexed: Iterator[tuple[int, object]], stop: int | None) -> Iterator[tuple[int, object]]:
    """The (index, frame) pairs before index `stop` (all when None)."""
    for j, frame in indexed:
        if stop is not None and j >= stop:
            return
        yield j, frame


class _SequentialReader:
    """Decodes forward with PyAV and keeps only the frames asked for (ascending indices),
    scaled to (width, height) by FFmpeg's swscale; -1 keeps the source size.

    With `wanted` (every index that will be read) and the file's `frame_count`, the decoder
    skips the frames that are neither wanted nor referenced by other frames (FFmpeg's
    skip_frame=NONREF, set packet by packet): in H.264 or HEVC with B-frames that is about
    half of them, and what is returned is bit for bit what a full decode gives. Frames are then
    indexed by the rank of their timestamp among the file's packets (`display_order`);
    without them (or where the packets' timestamps cannot be trusted), by counting.

    With `encode`, every kept frame is also converted at `image_size` ((-1, -1): the
    source's) and passed to `encode`; `images` then holds the last read's results.

    With `thumbs`, every decoded frame, kept or not, is also scaled to THUMB_SIZE; `thumbs`
    and `thumb_index` then hold those of the frames decoded since the last read (`drain`
    decodes the rest of the stream). No frame is skipped then.

    With `start_frame` > 0 (a span of a long video, see DecodeSpan), it seeks to the
    keyframe before that frame and indexes frames by their rank in `seek_order`
    (`display_order`); frames from `stop_frame` on are not decoded."""

    def __init__(
        self,
        path: str,
        width: int,
        height: int,
        num_threads: int = 0,
        encode: Callable[[np.ndarray], bytes] | None = None,
        image_size: tuple[int, int] = (-1, -1),
        wanted: np.ndarray | None = None,
        frame_count: int | None = None,
        thumbs: bool = False,
        start_frame: int = 0,
        stop_frame: int | None = None,
        seek_order: np.ndarray | None = None,
    ) -> None:
        import av

        self.container = av.open(path)
        stream = self.container.streams.video[0]
        if num_threads == 1:
            stream.codec_context.thread_count = 1  # one core's work, like decord's one thread
        else:
            stream.thread_type = "AUTO"
        self.decoded = 0  # frames the decoder produced, for tests and benchmarks
        self.skipping = False
        seen = self._thumb if thumbs else None
        if start_frame > 0 or stop_frame is not None:  # a span of a split video: no skipping
            if start_frame > 0 and seek_order is None:
                raise ValueError("decoding from a frame after the first needs the display order")
            indexed = (self._seeked(stream, seek_order, start_frame) if start_frame > 0
                       else enumerate(self._counted(stream)))
            self.cursor = _FrameCursor(_until(indexed, stop_frame), seen)
        else:
            order = None
            # Only streams that reorder pictures have B-frames to skip; the others would pay for
            # the packet pass and a Python loop per packet (~10% of decode on a 30 fps H.264).
            codec = stream.codec_context
            if (wanted is not None and frame_count and not thumbs and codec.has_b_frames
                    and codec.name in SKIPPABLE_CODECS):
                order = display_order(path, frame_count)
            self.skipping = order is not None
            if order is not None:
                keep = np.asarray(wanted, np.int64)
                keep = keep[(keep >= 0) & (keep < len(order))]
                self.cursor = _FrameCursor(self._ranked(stream, order, set(order[keep].tolist())))
            else:
                self.cursor = _FrameCursor(enumerate(self._counted(stream)), seen)
        self.damaged = 0  # packets the decoder rejected as invalid data, skipped
        self._thumbs: list[np.ndarray] = []
        self._thumb_index: list[int] = []
        self.thumb_reformatter = av.video.reformatter.VideoReformatter()
        self.size = {} if width < 0 else {"width": width, "height": height}
        # one reformatter (one swscale context) for the whole stream, not one per frame
        self.reformatter = av.video.reformatter.VideoReformatter()
        self.encode = encode
        if encode is not None:
            self.image_reformatter = av.video.reformatter.VideoReformatter()
            self.image_size = {} if image_size[0] < 0 else {"width": image_size[0], "height": image_size[1]}
        self.images: list[bytes] = []

    def _decoded(self, packet) -> list:
        """The frames a packet decodes to; none, counted in `damaged`, when the decoder
        rejects it as invalid data (a corrupt stretch: the frames after it still decode, and
        a wanted frame lost in it is stood in for by the next, see _FrameCursor)."""
        import av

        try:
            return packet.decode()
        except av.error.InvalidDataError:
            self.damaged += 1
            return []

    def _counted(self, stream) -> Iterator:
        for packet in self.container.demux(stream):
            for frame in self._decoded(packet):
                self.decoded += 1
                yield frame

    def _seeked(self, stream, order: np.ndarray, start: int) -> Iterator[tuple[int, object]]:
        """(index, frame) from source frame `start` on, after a seek to a keyframe before
        it; frames are indexed by their timestamp's rank in `order` (`display_order`). When
        the keyframe found lies after `start` (a seek by decode time can land there), it
        seeks further back."""
        margin = 0
        while True:
            self.container.seek(int(order[max(0, start - margin)]), backward=True, any_frame=False, stream=stream)
            frames = self._by_rank(stream, order)
            first = next(frames, None)
            if first is None or first[0] <= start or start - margin <= 0:
                break
            margin = max(4 * margin, 64)
        if first is None:
            return
        if first[0] >= start:
            yield first
        for j, frame in frames:
            if j >= start:
                yield j, frame

    def _by_rank(self, stream, order: np.ndarray) -> Iterator[tuple[int, object]]:
        """Every frame the decoder gives from where the container stands, indexed by its
        timestamp's rank in `order`."""
        last = -1
        for packet in self.container.demux(stream):
            for frame in self._decoded(packet):
                self.decoded += 1
                last = _rank(order, frame.pts, last)
                yield last, frame

    def _ranked(self, stream, order: np.ndarray, keep_pts: set[int]) -> Iterator[tuple[int, object]]:
        # a sorted int64 array, not a dict: 8 bytes a frame on a 3-hour video, and a lookup
        # costs ~1 us against ~150 us to decode the frame
        codec = stream.codec_context
        skip, last = False, -1
        for packet in self.container.demux(stream):
            # a wanted picture is decoded; any other only if later pictures refer to it
            want = packet.pts is None or packet.pts in keep_pts
            if want == skip:
                skip = not want
                codec.skip_frame = "NONREF" if skip else "DEFAULT"
            for frame in self._decoded(packet):
                self.decoded += 1
                last = _rank(order, frame.pts, last)
                yield last, frame

    def _thumb(self, i: int, frame) -> None:
        w, h = THUMB_SIZE
        rgb = self.thumb_reformatter.reformat(frame, format="rgb24", width=w, height=h, interpolation="AREA")
        self._thumbs.append(rgb.to_ndarray())
        self._thumb_index.append(i)

    def take_thumbs(self) -> tuple[np.ndarray, np.ndarray]:
        """The thumbnails (m, 27, 48, 3) and indices (m,) of the frames decoded since the
        last call."""
        w, h = THUMB_SIZE
        thumbs = np.stack(self._thumbs) if self._thumbs else np.zeros((0, h, w, 3), np.uint8)
        index = np.asarray(self._thumb_index, np.int64)
        self._thumbs, self._thumb_index = [], []
        return index, thumbs

    def drain(self) -> None:
        """Decode the rest of the stream (every frame's thumbnail, when asked for)."""
        self.cursor.drain()

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = []
        self.images = []
        for i in idx.tolist():
            frame = self.cursor.at(i)
            if frame is None:
                break  # the container claimed more frames than it holds
            turns = _quarter_turns(frame)
            out.append(_upright(self.reformatter, frame, self.size, turns))
            if self.encode is not None:
                self.images.append(self.encode(_upright(self.image_reformatter, frame, self.image_size, turns)))
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)

    def close(self) -> None:
        self.container.close()


def open_reader(
    path: str,
    width: int,
    height: int,
    num_threads: int,
    step: float | None = None,
    encode: Callable[[np.ndarray], bytes] | None = None,
    image_size: tuple[int, int] = (-1, -1),
    wanted: np.ndarray | None = None,
    thumbs: bool = False,
    span: DecodeSpan | None = None,
    seek_order: np.ndarray | None = None,
):
    """decord random access for indexed containers with sane timestamps, else PyAV in order
    (always in order with `thumbs`: every frame's thumbnail needs every frame decoded).

    `step` is the spacing, in source frames, of the frames that will be read (None: a few
    scattered frames). When it is no larger than the usual distance between keyframes, a
    seek cannot skip anything and every frame is decoded either way; then PyAV in order is
    cheaper too, as it converts and scales only the frames kept, where decord scales every
    decoded frame (docs/decisions.md, *Decode*).
    `encode` and `image_size` go to the in-order reader; decord's encodes nothing.

    `wanted`, every index that will be read, lets the in-order reader skip the frames
    nothing needs, in indexed containers whose packets name as many frames as decord's
    index does (see _SequentialReader).

    `span` (with `seek_order`) decodes only that part of the video in order (decord's
    random access, when chosen, needs neither)."""
    frame_count = None
    if not thumbs and os.path.splitext(path)[1].lower() in SEEKABLE_CONTAINERS:
        vr = _open(path, width=width, height=height, num_threads=num_threads)
        if timestamps_are_sane(vr):
            if step is None or step > keyframe_spacing(vr):
                return _RandomAccessReader(vr)
            frame_count = len(vr)
    if span is not None:
        return _SequentialReader(path, width, height, num_threads, encode, image_size, thumbs=thumbs,
                                 start_frame=span.decode_from, stop_frame=span.decode_to, seek_order=seek_order)
    return _SequentialReader(path, width, height, num_threads, encode, image_size, wanted, frame_count, thumbs)


def keyframe_spacing(vr) -> float:
    """Median distance, in frames, between a decord reader's keyframes (its frame count when
    it has one keyframe or its index lists none)."""
    try:
        keys = np.asarray(vr.get_key_indices(), np.int64)
    except Exception:  # noqa: BLE001 - no index: treat as one long GOP
        keys = np.zeros(0, np.int64)
    return float(np.median(np.diff(keys))) if len(keys) > 1 else float(len(vr))


class _RandomAccessReader:
    """decord's get_batch, for containers where its seeking is exact."""

    images: list[bytes] = []  # never encodes: see _SequentialReader

    def __init__(self, vr) -> None:
        self.vr = vr

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.vr.get_batch(idx.tolist()).asnumpy()

    def close(self) -> None:
        pass


def _drain(reader) -> None:
    """Decode the frames after the last sampled one, for their thumbnails; a damaged tail
    ends the thumbnails there (nothing sampled is lost)."""
    try:
        reader.drain()
    except Exception:  # noqa: BLE001 - decoder errors of any kind
        return


def _read(reader, idx: np.ndarray) -> np.ndarray:
    try:
        return reader.read(idx)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoder errors of any kind
        raise DecodeError(f"decoding failed near frame {int(idx[0])}: {_av_reason(exc)}") from exc


def iter_chunks(
    path: str,
    fps: float,
    size: int = 224,
    chunk_frames: int = 64,
    *,
    info: VideoInfo | None = None,
    max_frames: int | None = None,
    num_threads: int = 1,
    encode_images: Callable[[np.ndarray], bytes] | None = None,
    image_max_side: int | None = None,
    thumbs: bool = False,
    span: DecodeSpan | None = None,
    seek_order: np.ndarray | None = None,
) -> Iterator[Chunk]:
    """Decode the frames sampled at `fps`, `chunk_frames` at a time, at `size x size`.

    With `thumbs`, every source frame is decoded in order and each chunk also carries the
    THUMB_SIZE thumbnails of the frames decoded since the previous chunk (the last chunk:
    through the end of the video), for shot detection at source-frame precision.

    With `encode_images`, each sampled frame is also converted at output size (the
    source's, or fitted to `image_max_side` as `read_frames` does) and encoded by it into
    the chunk's `images`, from the same decoded picture: the selected frames then need no
    second read. Only the in-order decoder does this; where decord seeks (sparse sampling)
    `images` is None.

    With `span` (and the video's `seek_order`, `display_order`), only that span's sampled
    frames, and its source frames' thumbnails (the first chunk's from `span.decode_from`,
    the last one's to `span.decode_to`): one part of a long video split across tasks.

    Memory is bounded by one chunk whatever the video's length. Raises DecodeError when the
    file cannot be opened or a chunk cannot be decoded (a truncated file, for example).
    """
    info = info or probe_video(path)
    idx = sample_indices(info, fps, max_frames)
    w, h = model_geometry(info, size)
    step = sampling_step(info, idx)
    if span is not None:
        idx = idx[span.first : span.end]
    reader = open_reader(
        path, w, h, num_threads, step=step, encode=encode_images,
        image_size=output_geometry(info, image_max_side), wanted=idx, thumbs=thumbs,
        span=span, seek_order=seek_order,
    )
    try:
        for start in range(0, len(idx), chunk_frames):
            part = idx[start : start + chunk_frames]
            frames = _read(reader, part)
            ended = len(frames) < len(part)  # the container claimed more frames than it holds
            part = part[: len(frames)]
            thumb_index = thumb_pixels = None
            if thumbs:
                if start + chunk_frames >= len(idx) and not ended:
                    _drain(reader)
                thumb_index, thumb_pixels = reader.take_thumbs()
            if len(part):
                frames = np.ascontiguousarray(center_crop(frames, size))
                # images: empty unless the in-order reader was asked to encode
                times = info.frame_times[part] if info.frame_times is not None else part.astype(np.float64) / info.fps
                yield Chunk(part, times, frames, tuple(reader.images) or None, thumb_index, thumb_pixels)
            if ended:
                return
    finally:
        reader.close()


def decode_video(
    path: str, fps: float, size: int = 224, *, max_frames: int | None = None
) -> DecodedVideo:
    """Decode all frames sampled at `fps` of a local video into memory (short videos only:
    the batch job uses `iter_chunks`). Returns a DecodedVideo."""
    info = probe_video(path)
    chunks = list(iter_chunks(path, fps, size, chunk_frames=256, info=info, max_frames=max_frames))
    if not chunks:
        empty = np.zeros((0, size, size, 3), np.uint8)
        return DecodedVideo(info, np.zeros(0, np.int64), np.zeros(0), empty)
    return DecodedVideo(
        info,
        np.concatenate([c.frame_index for c in chunks]),
        np.concatenate([c.timestamps for c in chunks]),
        np.concatenate([c.frames for c in chunks]),
    )


def read_frames(
    path: str,
    frame_index: np.ndarray,
    max_side: int | None = None,
    *,
    info: VideoInfo | None = None,
) -> np.ndarray:
    """Read the given source frames at full resolution, or scaled so that the long side is
    at most `max_side` (`info`, when the caller has probed already, saves a second probe).
    Returns uint8 (m, H, W, 3) RGB in the order given."""
    if len(frame_index) == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    info = info or probe_video(path)
    w, h = output_geometry(info, max_side)
    reader = open_reader(path, w, h, 1)
    order = np.argsort(frame_index)
    try:
        frames = _read(reader, np.asarray(frame_index)[order])
    finally:
        reader.close()
    if len(frames) < len(order):
        raise DecodeError(f"frames {sorted(frame_index)[len(frames):]} could not be decoded")
    out = np.empty_like(frames)
    out[order] = frames
    return out


def image_for_model(data: bytes, size: int) -> np.ndarray:
    """Still-image bytes (JPEG, PNG, WebP ...) -> uint8 (1, size, size, 3) RGB with the same
    geometry decode gives video frames (short side resized to `size`, centre crop), for
    query images. Raises DecodeError when the bytes are not a readable image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DecodeError(f"not a readable image: {exc}") from None
    img = img.convert("RGB")
    scale = size / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))))
    return np.ascontiguousarray(center_crop(np.asarray(img)[None], size))
