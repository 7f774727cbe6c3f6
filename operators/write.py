"""Write a curated dataset: selected frames as images, and Parquet tables keyed by video.

Layout under OUTPUT (one file per video in each table, named by its stable video id):

    frames/<video_id>/<timestamp_ms>.jpg|.webp   selected frames
    clips/<video_id>/<start_ms>-<end_ms>.mp4     clips (--clips)
    manifest/<video_id>.parquet                  one row per selected frame (kind "frame")
                                                 and per clip window (kind "clip")
    shots/<video_id>.parquet                     one row per shot
    videos/<video_id>.parquet                    one row per input video: the commit record
    report.json                                  the last run's report

A video's row in videos/ is written last: its presence means every other output of that
video is complete (each single file is itself written atomically), so a crashed run leaves
no half-committed video and a re-run skips exactly the committed ones. Outputs are named
deterministically, so redoing an uncommitted video overwrites rather than duplicates.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
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
        ("embedding", pa.list_(pa.float32())),
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

TABLES = {"manifest": MANIFEST_SCHEMA, "shots": SHOTS_SCHEMA, "videos": VIDEOS_SCHEMA}
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


def write_table(storage: Storage, output: str, table: str, video_id: str, rows: list[dict]) -> None:
    """Write one video's rows of a table, atomically, with the table's fixed schema."""
    data = pa.Table.from_pylist(rows, schema=TABLES[table])
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd")
    write_bytes_atomic(storage, table_uri(output, table, video_id), buf.getvalue())


def read_table(storage: Storage, output: str, table: str) -> pa.Table:
    """Read every video's file of a table back as one Arrow table (empty when none)."""
    fs, path = storage.fs_for(join(output, table))
    if not fs.exists(path):
        return TABLES[table].empty_table()
    files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    if not files:
        return TABLES[table].empty_table()
    parts = [pq.read_table(fs.open(f, "rb"), schema=TABLES[table]) for f in files]
    return pa.concat_tables(parts)


def write_report(storage: Storage, output: str, report: dict) -> str:
    """Write report.json at the top of OUTPUT; returns its URI."""
    uri = join(output, "report.json")
    write_bytes_atomic(storage, uri, json.dumps(report, indent=2, default=str).encode())
    return uri
