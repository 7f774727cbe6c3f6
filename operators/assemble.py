"""The driver's side of the job: gather each video's chunk rows as they stream in.

Rows arrive in any order, interleaved across videos. The assembler holds only the videos
in flight (embeddings, features and timestamps: no pixels) and hands a video's payload out
as soon as all its chunks, or its failure, have arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.chunk_row import ChunkRow
from operators.pipeline import SampledVideo

_META = ("video_id", "source_uri", "size_bytes", "duration_s", "fps", "width", "height")
_TIMES = ("download_s", "decode_s", "features_s", "embed_s")


@dataclass
class VideoPayload:
    """One whole video after embedding, ready for its finalize task."""

    meta: dict  # video_id, source_uri, size_bytes, duration_s, fps, width, height
    video: SampledVideo
    times: dict = field(default_factory=dict)  # seconds per stage, and frames_embedded
    error: str = ""
    node_id: str = ""  # the Ray node that decoded it and caches its source ("" = none)


class VideoAssembler:
    """Collects ChunkRows and returns each video's payload once it is complete."""

    def __init__(self) -> None:
        self._parts: dict[str, list[ChunkRow]] = {}
        self._expected: dict[str, int] = {}

    @property
    def pending(self) -> int:
        """Videos with some but not all chunks received."""
        return len(self._parts)

    def add(self, row: ChunkRow) -> VideoPayload | None:
        """Take one chunk row; return the video's payload when it is complete, else None."""
        vid = row.video_id
        if row.failed:
            self._parts.pop(vid, None)
            self._expected.pop(vid, None)
            return payload_of(row, [], error=row.error or "failed")
        parts = self._parts.setdefault(vid, [])
        if row.is_end:  # the real number of chunks
            self._expected[vid] = row.n_chunks
        else:
            parts.append(row)
            self._expected.setdefault(vid, row.n_chunks)
        if parts and len(parts) >= self._expected[vid]:
            del self._parts[vid], self._expected[vid]
            parts.sort(key=lambda r: r.chunk_index)
            return payload_of(parts[0], parts)
        if self._expected[vid] == 0:
            del self._parts[vid], self._expected[vid]
            return payload_of(row, [], error="no frames could be decoded")
        return None


def payload_of(first: ChunkRow, parts: list[ChunkRow], error: str = "") -> VideoPayload:
    """A video's payload from its chunk rows in order (none for a failed video)."""
    meta = {k: getattr(first, k) for k in _META}
    video = SampledVideo.concat(parts, [p.embedding for p in parts], first.duration_s, first.fps)
    times: dict = {t: float(sum(getattr(p, t) for p in parts)) for t in _TIMES} if parts else {}
    if parts:
        times["frames_embedded"] = int(sum(p.n_embed for p in parts))
    return VideoPayload(meta, video, times, error, node_id=first.node_id)
