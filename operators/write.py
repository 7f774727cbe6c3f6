"""Write a curated dataset: selected frames as images, and Parquet tables keyed by video.

Layout under OUTPUT (each table is a folder of Parquet files):

    frames/<video_id>/<timestamp_ms>.jpg|.webp   selected frames
    clips/<video_id>/<start_ms>-<end_ms>.mp4     clips (--clips)
    manifest/                                    one row per selected frame (kind "frame")
                                                 and per clip window (kind "clip")
    shots/                                       one row per shot
    timeline/                                    one row per done video: its sampled frames'
                                                 times and adjacent-frame distances (report)
    videos/                                      one row per input video: the commit record
    report.json, report.html                     the last run's report

Finalize writes one file per video in each table, `<table>/<video_id>.parquet`; compaction
(operators/compact.py) later gathers committed videos' rows into shards
`<table>/part-<seq>-<tag>.parquet`. A video's row in videos/ is written last: its presence
means every other output of that video is complete (each single file is itself written
atomically), so a crashed run leaves no half-committed video and a re-run skips exactly the
committed ones. Outputs are named deterministically, so redoing an uncommitted video
overwrites rather than duplicates.

Reading a table (`read_table`) resolves the files the way compaction relies on: each
video_id's rows come from one file only, its per-video file when there is one (it is at
least as new as any copy of it), else the shard with the highest sequence number holding
it. So a compaction killed between writing a shard and deleting what it covers, or a failed
video retried after compaction, never shows a video twice.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from operators.storage import Storage, join, write_bytes_atomic

MANIFEST_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source_uri", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("method", pa.string()),
        ("embedder", pa.string()),
        ("score", pa.float32()),
        ("rank", pa.int32()),
        ("shot_index", pa.int32()),
        ("cluster_id", pa.int32()),
        ("clip_start_s", pa.float64()),
        ("clip_end_s", pa.float64()),
        ("embedding", pa.list_(pa.float32())),  # stored as list_(float32, D): manifest_schema
        ("image_uri", pa.string()),
        # clips (--clips): a frame row names the clip holding it; a clip row describes the
        # clip, or says in clip_error why it could not be cut
        ("kind", pa.string()),
        ("clip_uri", pa.string()),
        ("clip_frames", pa.int32()),
        ("clip_fps", pa.float64()),
        ("clip_mode", pa.string()),
        ("clip_codec", pa.string()),
        ("clip_encoder", pa.string()),
        ("clip_audio", pa.bool_()),
        ("clip_bytes", pa.int64()),
        ("clip_error", pa.string()),
    ]
)

SHOTS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source_uri", pa.string()),
        ("shot_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("start_frame_index", pa.int64()),
        ("num_sampled_frames", pa.int32()),
        ("shot_detector", pa.string()),
    ]
)

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source_uri", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("frames_sampled", pa.int32()),
        ("frames_embedded", pa.int32()),
        ("frames_selected", pa.int32()),
        ("shots", pa.int32()),
        ("k", pa.int32()),
        ("method", pa.string()),
        ("embedder", pa.string()),
        ("shot_detector", pa.string()),
        ("download_s", pa.float64()),
        ("decode_s", pa.float64()),
        ("features_s", pa.float64()),
        ("embed_s", pa.float64()),
        ("select_s", pa.float64()),
        ("write_s", pa.float64()),
        ("finished_at", pa.timestamp("ms", tz="UTC")),
    ]
)

TIMELINE_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("timestamps", pa.list_(pa.float32())),  # every sampled frame's time (s)
        ("distances", pa.list_(pa.float32())),  # cosine distance of features, frame i-1 to i
    ]
)

TABLES = {"manifest": MANIFEST_SCHEMA, "shots": SHOTS_SCHEMA, "timeline": TIMELINE_SCHEMA,
          "videos": VIDEOS_SCHEMA}
SHARD_PREFIX = "part-"
_SHARD_RE = re.compile(r"^part-(\d+)-([0-9a-f]+)\.parquet$")
_READ_THREADS = 16
IMAGE_EXT = {"jpeg": "jpg", "webp": "webp"}


def encode_image(frame: np.ndarray, image_format: str = "jpeg", quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG or WebP bytes."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format=image_format.upper(), quality=quality)
    return buf.getvalue()


def frame_uri(output: str, video_id: str, timestamp_s: float, image_format: str) -> str:
    """Where a selected frame goes: frames/<video_id>/<timestamp_ms>.<ext> (ms zero-padded
    to 9 digits so names sort in time order)."""
    ms = int(round(timestamp_s * 1000))
    return join(output, "frames", video_id, f"{ms:09d}.{IMAGE_EXT[image_format]}")


def clip_uri(output: str, video_id: str, start_s: float, end_s: float) -> str:
    """Where a clip goes: clips/<video_id>/<start_ms>-<end_ms>.mp4 (ms zero-padded to 9
    digits so names sort in time order)."""
    a, b = int(round(start_s * 1000)), int(round(end_s * 1000))
    return join(output, "clips", video_id, f"{a:09d}-{b:09d}.mp4")


def table_uri(output: str, table: str, video_id: str) -> str:
    """The Parquet file of one video in one of the tables (manifest, shots, videos)."""
    return join(output, table, f"{video_id}.parquet")


def manifest_schema(dim: int) -> pa.Schema:
    """The manifest's schema for embeddings of `dim` values (512 for ViT-B-32, FEATURE_DIM
    for the features embedder): `embedding` is a fixed-size list of float32, so that every
    Parquet reader (pandas, HF datasets, Ray Data) gives it back as a (rows, dim) array."""
    i = MANIFEST_SCHEMA.get_field_index("embedding")
    return MANIFEST_SCHEMA.set(i, pa.field("embedding", pa.list_(pa.float32(), int(dim))))


def schema_of(table: str, embedding_dim: int | None = None) -> pa.Schema:
    """A table's schema; the manifest's needs its embedding size (None: variable lists)."""
    if table == "manifest" and embedding_dim is not None:
        return manifest_schema(embedding_dim)
    return TABLES[table]


def to_bytes(data: pa.Table) -> bytes:
    """A table as one zstd-compressed Parquet file's bytes."""
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd")
    return buf.getvalue()


def write_table(storage: Storage, output: str, table: str, video_id: str, rows: list[dict],
                embedding_dim: int | None = None) -> None:
    """Write one video's rows of a table, atomically, with the table's fixed schema (the
    manifest's for `embedding_dim`-sized embeddings)."""
    data = pa.Table.from_pylist(rows, schema=schema_of(table, embedding_dim))
    write_bytes_atomic(storage, table_uri(output, table, video_id), to_bytes(data))


@dataclass
class TableFiles:
    """The Parquet files of one table: its shards, oldest (lowest sequence number) first,
    and its per-video files by video_id."""

    shards: list[str] = field(default_factory=list)
    videos: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes, by path

    def next_seq(self) -> int:
        """The sequence number a new shard takes: above every existing one."""
        return 1 + max((shard_seq(p) for p in self.shards), default=0)

    def ranked(self) -> list[tuple[str, int]]:
        """(path, rank) of every file; a higher rank wins a video_id: shards by sequence,
        per-video files above them all."""
        top = len(self.shards)
        return [*((p, i) for i, p in enumerate(self.shards)), *((p, top) for p in self.videos.values())]


def is_shard(name: str) -> bool:
    """Whether a file name is a compacted shard's (part-<seq>-<tag>.parquet)."""
    return _SHARD_RE.match(name) is not None


def shard_seq(path: str) -> int:
    """The sequence number in a shard's name."""
    return int(_SHARD_RE.match(path.rsplit("/", 1)[-1]).group(1))


def shard_name(seq: int) -> str:
    """A new shard's file name: part-<seq, 8 digits>-<random tag>.parquet (the tag keeps two
    writers from ever replacing each other's shard)."""
    return f"{SHARD_PREFIX}{seq:08d}-{uuid.uuid4().hex[:8]}.parquet"


def list_table(storage: Storage, output: str, table: str) -> TableFiles:
    """List a table's shards and per-video files (temporary and foreign files ignored)."""
    fs, path = storage.fs_for(join(output, table))
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return TableFiles()
    files = TableFiles()
    for e in sorted(entries, key=lambda e: e["name"]):
        p = e["name"].rstrip("/")
        name = p.rsplit("/", 1)[-1]
        if _SHARD_RE.match(name):
            files.shards.append(p)
        elif name.endswith(".parquet") and not name.startswith((".", "_", SHARD_PREFIX)):
            files.videos[name[: -len(".parquet")]] = p
        files.sizes[p] = int(e.get("size") or 0)
    files.shards.sort(key=lambda p: (shard_seq(p), p))
    return files


def read_files(storage: Storage, output: str, paths: Iterable[str], columns: list[str] | None = None) -> list[pa.Table]:
    """Read Parquet files (paths as `list_table` gives them) in parallel, in order; of
    `columns`, those each file has."""
    fs, _ = storage.fs_for(output)

    def one(p: str) -> pa.Table:
        with fs.open(p, "rb") as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names  # files written before a column was added lack it
            return normalise(pf.read(columns=None if columns is None else [c for c in columns if c in names]))

    paths = list(paths)
    if len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(paths))) as pool:
        return list(pool.map(one, paths))


def normalise(data: pa.Table) -> pa.Table:
    """Older outputs stored `embedding` as a variable-size list: give it the fixed size of
    its (equal) lengths, so that old and new files concatenate."""
    if "embedding" not in data.column_names or not pa.types.is_list(data.schema.field("embedding").type):
        return data
    col = data.column("embedding")
    lengths = pc.unique(pc.list_value_length(col)).to_pylist() if len(col) else []
    if len(lengths) != 1 or lengths[0] is None:
        return data
    i = data.column_names.index("embedding")
    return data.set_column(i, "embedding", col.cast(pa.list_(pa.float32(), lengths[0])))


def newest_rows(parts: list[pa.Table], ranks: list[int]) -> pa.Table | None:
    """Concatenate tables read from files of the given ranks, keeping for every video_id
    only the rows of its highest-ranked file (the newest copy of that video's rows); None
    when every table is empty."""
    kept = [(t, r) for t, r in zip(parts, ranks, strict=True) if t.num_rows]
    if not kept:
        return None
    data = pa.concat_tables([t for t, _ in kept], promote_options="default")
    rank = np.concatenate([np.full(t.num_rows, r, np.int64) for t, r in kept])
    codes = pc.dictionary_encode(data.column("video_id")).combine_chunks().indices.to_numpy()
    best = np.full(int(codes.max()) + 1, -1, np.int64)
    np.maximum.at(best, codes, rank)
    keep = rank == best[codes]
    return data if keep.all() else data.filter(pa.array(keep))


def read_table(storage: Storage, output: str, table: str, columns: list[str] | None = None) -> pa.Table:
    """Read a table (shards and per-video files) back as one Arrow table, each video's rows
    once, from its newest file (see the module docstring); empty when there is none.
    `columns` reads only those (video_id is always read)."""
    files = list_table(storage, output, table)
    if columns is not None and "video_id" not in columns:
        columns = ["video_id", *columns]
    ranked = files.ranked()
    parts = read_files(storage, output, [p for p, _ in ranked], columns)
    data = newest_rows(parts, [r for _, r in ranked])
    if data is None:
        empty = TABLES[table].empty_table()
        return empty.select([c for c in columns if c in empty.column_names]) if columns else empty
    return data


def write_report(storage: Storage, output: str, report: dict) -> str:
    """Write report.json at the top of OUTPUT; returns its URI."""
    uri = join(output, "report.json")
    write_bytes_atomic(storage, uri, json.dumps(report, indent=2, default=str).encode())
    return uri
