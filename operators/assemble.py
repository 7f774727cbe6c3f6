"""The driver's side of the job: gather each video's chunk rows as they stream in.

Rows arrive in any order, interleaved across videos. The assembler holds only the videos
in flight (embeddings, features and timestamps: no pixels) and hands a video's payload out
as soon as all its chunks, or its failure, have arrived.

It is bounded: at most `max_videos` videos and `max_bytes` of arrays in flight. Past
either, the video that has waited longest since its last chunk is given up (not
committed: a re-run processes it), so a video whose chunks stopped coming can never grow
the driver without end. A chunk row seen twice (a listing that names a video twice, a
task run again) is dropped, and so are rows of a video completed or given up shortly
before (the last `recent` ones).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from operators.chunk_row import ChunkRow
from operators.pipeline import SampledVideo

_META = ("video_id", "source_uri", "size_bytes", "duration_s", "fps", "width", "height")
_TIMES = ("download_s", "decode_s", "features_s", "embed_s")
MAX_VIDEOS = 10_000
MAX_BYTES = 2 * 2**30
RECENT = 65_536  # ids of videos completed or given up, remembered to drop late duplicates


@dataclass
class VideoPayload:
    """One whole video after embedding, ready for its finalize task."""

    meta: dict  # video_id, source_uri, size_bytes, duration_s, fps, width, height
    video: SampledVideo
    times: dict = field(default_factory=dict)  # seconds per stage, and frames_embedded
    error: str = ""
    node_id: str = ""  # the Ray node that decoded it and caches its source ("" = none)


_HELD = ("frame_index", "timestamps", "features", "embedding", "signal_index", "signal_dist", "signal_wdist",
         "signal_ldist", "signal_change", "signal_residual", "thumb_index", "transition_probs")  # the arrays a video's payload is built from


def _row_bytes(row: ChunkRow) -> int:
    arrays = (getattr(row, name) for name in _HELD)
    return int(sum(a.nbytes for a in arrays if a is not None))


@dataclass
class _Inflight:
    parts: dict[int, ChunkRow] = field(default_factory=dict)  # chunk index -> row
    expected: int = 0
    nbytes: int = 0


class VideoAssembler:
    """Collects ChunkRows and returns each video's payload once it is complete."""

    def __init__(self, max_videos: int = MAX_VIDEOS, max_bytes: int = MAX_BYTES, recent: int = RECENT) -> None:
        self.max_videos = max_videos
        self.max_bytes = max_bytes
        self._inflight: OrderedDict[str, _Inflight] = OrderedDict()  # least recently updated first
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_max = recent
        self.held_bytes = 0
        self.peak_videos = 0
        self.peak_bytes = 0
        self.duplicates = 0  # rows dropped as seen before
        self.given_up: list[tuple[str, str]] = []  # (video_id, source_uri), taken by the caller

    @property
    def pending(self) -> int:
        """Videos with some but not all chunks received."""
        return len(self._inflight)

    def pending_videos(self) -> list[tuple[str, str]]:
        """(video_id, source_uri) of the videos still in flight."""
        return [(vid, next(iter(v.parts.values())).source_uri if v.parts else "") for vid, v in self._inflight.items()]

    def _forget(self, vid: str) -> None:
        self._recent[vid] = None
        self._recent.move_to_end(vid)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _close(self, vid: str) -> _Inflight:
        entry = self._inflight.pop(vid)
        self.held_bytes -= entry.nbytes
        self._forget(vid)
        return entry

    def add(self, row: ChunkRow) -> VideoPayload | None:
        """Take one chunk row; return the video's payload when it is complete, else None."""
        vid = row.video_id
        if vid in self._recent:
            self.duplicates += 1
            return None
        if row.failed:
            if vid in self._inflight:
                self._close(vid)
            else:
                self._forget(vid)
            return payload_of(row, [], error=row.error or "failed")
        entry = self._inflight.get(vid)
        if entry is None:
            entry = self._inflight[vid] = _Inflight(expected=row.n_chunks)
        self._inflight.move_to_end(vid)
        if row.is_end:  # the real number of chunks
            entry.expected = row.n_chunks
        elif row.chunk_index in entry.parts:
            self.duplicates += 1
        else:
            entry.parts[row.chunk_index] = row
            size = _row_bytes(row)
            entry.nbytes += size
            self.held_bytes += size
        if entry.parts and len(entry.parts) >= entry.expected:
            self._close(vid)
            parts = [entry.parts[i] for i in sorted(entry.parts)]
            return payload_of(parts[0], parts)
        if entry.expected == 0:
            self._close(vid)
            return payload_of(row, [], error="no frames could be decoded")
        self.peak_videos = max(self.peak_videos, len(self._inflight))
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        self._bound()
        return None

    def _bound(self) -> None:
        """Give up the longest-waiting videos while over a bound (never the one just fed,
        which is last in the order)."""
        while len(self._inflight) > 1 and (len(self._inflight) > self.max_videos or self.held_bytes > self.max_bytes):
            vid, entry = next(iter(self._inflight.items()))
            uri = next(iter(entry.parts.values())).source_uri if entry.parts else ""
            self._close(vid)
            self.given_up.append((vid, uri))


def payload_of(first: ChunkRow, parts: list[ChunkRow], error: str = "") -> VideoPayload:
    """A video's payload from its chunk rows in order (none for a failed video)."""
    meta = {k: getattr(first, k) for k in _META}
    video = SampledVideo.concat(parts, [p.embedding for p in parts], first.duration_s, first.fps)
    times: dict = {t: float(sum(getattr(p, t) for p in parts)) for t in _TIMES} if parts else {}
    if parts:
        times["frames_embedded"] = int(sum(p.n_embed for p in parts))
    return VideoPayload(meta, video, times, error, node_id=first.node_id)
