"""The row that flows between the job's stages: one chunk of one video.

    DecodeStage --ChunkRow(frames, group_of)--> EmbedStage --ChunkRow(embedding)--> VideoAssembler

A chunk is a bounded run of a video's sampled frames (`CHUNK_FRAMES` by default), never a
whole video, so memory does not grow with a video's length. Ray Data moves rows as dicts of
columns; `ChunkRow` is their one documented shape, and every stage converts with
`to_batch` / `from_row` instead of reading string keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from operators.features import FEATURE_DIM

STATUS_OK, STATUS_FAILED = "ok", "failed"
PIXEL_COLUMNS = ("frames", "group_of")  # present only while the model has not run
THUMB_COLUMNS = ("thumbs", "thumbs_before", "thumbs_after")  # present only until TransNetStage ran
_ARRAYS = ("frame_index", "timestamps", "features", "frames", "group_of", "embedding", "signal_index",
           "signal_dist", "signal_wdist", "signal_ldist", "signal_change", "signal_residual", "thumb_index", "thumbs", "thumbs_before",
           "thumbs_after", "transition_probs")


def _empty(name: str) -> np.ndarray:
    if name == "timestamps":
        return np.zeros(0, np.float64)
    if name == "features":
        return np.zeros((0, FEATURE_DIM), np.float32)
    return np.zeros(0, np.int64)


@dataclass
class ChunkRow:
    """One chunk of one video, or a video's failure, or its end marker.

    - A failed video is a single row with `status == STATUS_FAILED` and the reason in `error`.
    - `n_chunks` is the number of chunks the probe expects. When the decoder runs out early,
      an end marker (`is_end`, no frames) follows with the real count.
    - `frames` (m, S, S, 3) uint8 are the pixels the model must see (every frame, or one
      per near-duplicate group with the cascade); `group_of` (n,) maps each sampled frame to
      its representative in `frames`. The embed stage replaces both with `embedding`
      (n, D) float16, one per sampled frame. Without a model neither is set.
    - `signal_index`, `signal_dist`, `signal_wdist`, `signal_ldist`, `signal_change`,
      `signal_residual` (k,): the shot detector's
      signals of the source frames decoded since the previous chunk (segment.BoundarySignals).
    - With TransNetV2, `thumbs` (m, 27, 48, 3) uint8 RGB: every decoded frame of the chunk at
      TransNetV2's input size, `thumb_index` (m,) their source frame indices, and
      `thumb_start` the ordinal of `thumbs[0]` among all of the video's thumbs (TransNetV2's
      windows are aligned to it). `thumbs_before` / `thumbs_after` are up to
      `transnet.CONTEXT_FRAMES` thumbs of the neighbouring chunks (fewer only at the video's
      start / end), so that the shot stage needs no state across rows (`transnet.with_context`
      makes them). `TransNetStage` replaces the thumbs with `transition_probs` (m,) float32.
    - `node_id` is the Ray node that holds the source's cached copy (and kept images), where
      the video's finalize should run; "" means anywhere.
    """

    video_id: str
    source_uri: str
    size_bytes: int = 0
    status: str = STATUS_OK
    error: str = ""
    chunk_index: int = 0
    n_chunks: int = 0
    is_end: bool = False
    duration_s: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    download_s: float = 0.0
    decode_s: float = 0.0
    features_s: float = 0.0
    embed_s: float = 0.0
    n_embed: int = 0  # frames of this chunk the model embeds
    spans: int = 1  # span tasks the video was decoded in (DecodeStage, --segment-s)
    node_id: str = ""
    frame_index: np.ndarray = field(default_factory=lambda: _empty("frame_index"))
    timestamps: np.ndarray = field(default_factory=lambda: _empty("timestamps"))
    features: np.ndarray = field(default_factory=lambda: _empty("features"))
    frames: np.ndarray | None = None
    group_of: np.ndarray | None = None
    embedding: np.ndarray | None = None
    signal_index: np.ndarray | None = None
    signal_dist: np.ndarray | None = None
    signal_wdist: np.ndarray | None = None
    signal_ldist: np.ndarray | None = None
    signal_change: np.ndarray | None = None
    signal_residual: np.ndarray | None = None
    thumb_start: int = 0
    thumbs: np.ndarray | None = None
    thumb_index: np.ndarray | None = None
    thumbs_before: np.ndarray | None = None
    thumbs_after: np.ndarray | None = None
    transition_probs: np.ndarray | None = None
    shots_s: float = 0.0  # seconds the shot detector spent on this chunk

    @property
    def failed(self) -> bool:
        """Whether this row records the video's failure."""
        return self.status == STATUS_FAILED

    def to_batch(self) -> dict[str, np.ndarray]:
        """This row as a one-row Ray Data batch (each value a length-1 column; strings as
        object arrays). Array fields that are None are left out."""
        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, np.ndarray):
                out[f.name] = value[None]
            elif isinstance(value, str):
                out[f.name] = np.array([value], dtype=object)
            else:
                out[f.name] = np.array([value])
        return out

    @classmethod
    def from_row(cls, row: Mapping) -> ChunkRow:
        """A row as Ray Data hands it back (`iter_rows`, or one row of a batch)."""
        values = {}
        for f in fields(cls):
            if f.name not in row:
                continue
            value = row[f.name]
            if f.name in _ARRAYS:
                values[f.name] = np.asarray(value)
            elif f.type == "str":
                values[f.name] = "" if value is None else str(value)
            elif f.type == "bool":
                values[f.name] = bool(value)
            elif f.type == "int":
                values[f.name] = int(value)
            else:
                values[f.name] = float(value)
        return cls(**values)


def rows_of(batch: Mapping[str, np.ndarray]) -> list[ChunkRow]:
    """The rows of a Ray Data batch of chunk rows."""
    n = len(batch["video_id"])
    return [ChunkRow.from_row({k: v[i] for k, v in batch.items()}) for i in range(n)]


def batch_of(rows: list[ChunkRow]) -> dict[str, np.ndarray]:
    """Chunk rows as one Ray Data batch: a dense column where shapes agree, else an object
    column of per-row arrays (which Ray Data stores as a variable-shaped tensor column)."""
    parts = [r.to_batch() for r in rows]
    out: dict[str, np.ndarray] = {}
    for key in parts[0]:
        cols = [p[key] for p in parts]
        if len({c.shape for c in cols}) == 1 and cols[0].dtype != object:
            out[key] = np.concatenate(cols)
        elif cols[0].dtype == object and cols[0].ndim == 1 and isinstance(cols[0][0], str):
            out[key] = np.concatenate(cols)
        else:
            ragged = np.empty(len(cols), dtype=object)
            ragged[:] = [c[0] for c in cols]
            out[key] = ragged
    return out
