"""Compaction: gather the per-video Parquet files of committed videos into large shards.

Finalize writes one small file per video in each table (`<table>/<video_id>.parquet`): that
is what makes a video's commit atomic and resume exact, but a corpus of N videos would leave
4N tiny files. Compaction rewrites committed videos' rows into shards of about
`shard_rows` rows or `shard_bytes` bytes (`<table>/part-<seq>-<tag>.parquet`), so that
reading a table opens O(N / 1000) files, and removes the files it covered.

It is crash-safe by ordering alone, with the reading rule of `operators.write.read_table`
(per video_id, the per-video file wins, else the shard of highest sequence number):

1. a shard is written (atomically) before any file it covers is deleted, so a compaction
   killed at any point loses nothing;
2. a per-video file is at least as new as any shard holding that video (shards are copies
   of per-video files), and a new shard's sequence number is above every existing one, so
   a copy left behind by a killed compaction is never preferred to the newer one;
3. the next compaction (`pack`) rewrites every shard holding such stale copies without
   them, and merges small shards, so that plain Parquet readers (pandas, HF datasets, Ray
   Data), which do not apply the rule, see each video's rows once again.

Only committed videos (a row in videos/) are compacted, and videos/ last. Compaction must
not run on an output while a `--retry-failed` run rewrites it, except from inside that run
(jobs.curate compacts only the videos it has finished).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from operators.sources import committed_video_ids
from operators.storage import Storage, join, write_bytes_atomic
from operators.write import TableFiles, list_table, read_files, shard_name, to_bytes

log = logging.getLogger("framesift")

# videos/ last: a video's commit record moves into a shard only once its other rows have
COMPACT_ORDER = ("manifest", "shots", "timeline", "videos")
SHARD_ROWS = 100_000
SHARD_BYTES = 128 * 2**20
_READ_BATCH = 256  # files read in parallel at a time


class CompactError(RuntimeError):
    """A table cannot be compacted (e.g. its files disagree on the embedding size)."""


@dataclass(frozen=True)
class CompactOptions:
    """Shard size limits (rows, in-memory bytes), and whether to `pack`: also merge small
    shards and rewrite shards holding stale copies of a video (a full compaction; the job's
    compactions during a run only gather per-video files)."""

    shard_rows: int = SHARD_ROWS
    shard_bytes: int = SHARD_BYTES
    pack: bool = True


@dataclass
class TableStats:
    """What compacting one table did."""

    table: str
    files_before: int = 0
    files_after: int = 0
    shards_written: int = 0
    files_deleted: int = 0
    rows_written: int = 0

    def line(self) -> str:
        """One line for people."""
        return (f"{self.table}: {self.files_before} -> {self.files_after} files "
                f"({self.shards_written} shard(s) of {self.rows_written} rows written, "
                f"{self.files_deleted} file(s) removed)")


def compact_output(storage: Storage, output: str, video_ids: set[str] | None = None,
                   options: CompactOptions | None = None) -> dict[str, dict]:
    """Compact every table of OUTPUT. `video_ids` limits the per-video files gathered to
    those videos (which the caller knows are committed and that nothing writes any more);
    None takes every committed video. Returns each table's TableStats as a dict."""
    options = options or CompactOptions()
    committed = committed_video_ids(storage, output) if video_ids is None else set(video_ids)
    return {t: asdict(compact_table(storage, output, t, committed, options)) for t in COMPACT_ORDER}


def compact_table(storage: Storage, output: str, table: str, committed: set[str],
                  options: CompactOptions) -> TableStats:
    """Compact one table: the per-video files of `committed` videos, plus (with `pack`) the
    small shards and the shards holding stale rows, streamed into new shards; each group of
    files is deleted once the shard holding its rows is written."""
    files = list_table(storage, output, table)
    stats = TableStats(table, files_before=len(files.shards) + len(files.videos))
    take = sorted(v for v in files.videos if v in committed)
    rewrite, keep_rows = _shards_to_rewrite(storage, output, files, bool(take), options) if options.pack else ([], {})
    if not take and not rewrite:
        stats.files_after = stats.files_before
        return stats
    fs, _ = storage.fs_for(output)
    seq = files.next_seq()
    buffer: list[pa.Table] = []
    covered: list[str] = []
    rows = nbytes = 0

    def flush() -> None:
        nonlocal seq, rows, nbytes
        if rows:
            try:
                data = pa.concat_tables(buffer, promote_options="default")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise CompactError(f"{table}/ cannot be compacted: its files disagree on a column's "
                                   f"type (embeddings of different sizes?): {exc}") from exc
            write_bytes_atomic(storage, join(output, table, shard_name(seq)), to_bytes(data))
            seq += 1
            stats.shards_written += 1
            stats.rows_written += data.num_rows
        if covered:
            fs.rm(list(covered))
            stats.files_deleted += len(covered)
        buffer.clear()
        covered.clear()
        rows = nbytes = 0

    sources = [*rewrite, *(files.videos[v] for v in take)]
    for start in range(0, len(sources), _READ_BATCH):
        paths = sources[start : start + _READ_BATCH]
        for path, part in zip(paths, read_files(storage, output, paths), strict=True):
            if path in keep_rows:  # a shard: only the rows no newer file supersedes
                part = part.filter(keep_rows[path])
            if buffer and (rows + part.num_rows > options.shard_rows or nbytes + part.nbytes > options.shard_bytes):
                flush()
            buffer.append(part)
            covered.append(path)
            rows += part.num_rows
            nbytes += part.nbytes
    flush()
    stats.files_after = stats.files_before - stats.files_deleted + stats.shards_written
    return stats


def _shards_to_rewrite(storage: Storage, output: str, files: TableFiles, adding: bool,
                       options: CompactOptions) -> tuple[list[str], dict[str, pa.Array]]:
    """The shards a packing compaction rewrites, oldest first, and for each the mask of its
    rows to keep: those holding a stale row (a video whose newest copy is elsewhere), and
    the small ones (under half the limits) when there are two, or one and files to add."""
    if not files.shards:
        return [], {}
    ids = read_files(storage, output, files.shards, columns=["video_id"])
    newest: dict[str, int] = {}
    for i, part in enumerate(ids):  # oldest first: a later shard overrides
        for vid in pc.unique(part.column("video_id")).to_pylist():
            newest[vid] = i
    per_video = set(files.videos)
    masks, small = {}, []
    for i, (path, part) in enumerate(zip(files.shards, ids, strict=True)):
        col = part.column("video_id").to_pylist()
        keep = [newest[v] == i and v not in per_video for v in col]
        if not all(keep):
            masks[path] = pa.array(keep, pa.bool_())
        if len(col) < options.shard_rows // 2 and files.sizes.get(path, 0) < options.shard_bytes // 2:
            small.append(path)
    if len(small) >= 2 or (small and adding):
        masks.update({p: masks.get(p, pa.array([True] * ids[files.shards.index(p)].num_rows)) for p in small})
    rewrite = [p for p in files.shards if p in masks]
    return rewrite, masks
