"""Compact an existing output's tables into shards (see operators/compact.py).

    python -m jobs.compact OUTPUT [--s3-endpoint URL] [--shard-rows N] [--shard-mb MB]
    framesift-compact OUTPUT ...

Safe to run again at any time, and after a killed run or a killed compaction; a second run
on a compacted output writes nothing. Do not run it while a `--retry-failed` run writes to
the same OUTPUT. Also holds `RunCompactor`, the job's compaction during a run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from operators.compact import (
    SHARD_BYTES,
    SHARD_ROWS,
    CompactError,
    CompactOptions,
    TableStats,
    compact_output,
)
from operators.storage import Storage, StorageError, is_folder

log = logging.getLogger("framesift")


def _compact_task(storage: Storage, output: str, video_ids: list[str]) -> dict:
    """A Ray task's body: gather the per-video files of videos a run has finished."""
    return compact_output(storage, output, set(video_ids), CompactOptions(pack=False))


class RunCompactor:
    """The job's compaction while it runs: every `every` committed videos, one Ray task
    gathers their per-video files into shards (one task at a time, so that shard sequence
    numbers never collide; the videos it takes are committed and nothing rewrites them).
    A failed round only leaves per-video files for the end-of-run compaction."""

    def __init__(self, ray, storage: Storage, output: str, every: int, ray_options: dict) -> None:
        self._ray, self._storage, self._output, self._every = ray, storage, output, every
        self._task = ray.remote(max_retries=1, **ray_options)(_compact_task)
        self._pending: list[str] = []
        self._inflight = None
        self.rounds = 0

    def committed(self, video_id: str) -> None:
        """Note one more committed video; start a round when enough are waiting."""
        if self._every <= 0:
            return
        self._pending.append(video_id)
        if len(self._pending) >= self._every and not self._busy():
            self._inflight = self._task.remote(self._storage, self._output, self._pending)
            self._pending = []
            self.rounds += 1

    def _busy(self) -> bool:
        if self._inflight is None:
            return False
        ready, _ = self._ray.wait([self._inflight], timeout=0)
        if ready:
            self._collect()
        return self._inflight is not None

    def _collect(self) -> None:
        try:
            self._ray.get(self._inflight)
        except Exception as exc:  # noqa: BLE001 - the end-of-run compaction covers it
            log.warning("compaction during the run failed (the end of the run retries): %s", exc)
        self._inflight = None

    def wait(self) -> None:
        """Wait for the round in flight, if any."""
        if self._inflight is not None:
            self._collect()


def build_parser() -> argparse.ArgumentParser:
    """The command line of framesift-compact."""
    p = argparse.ArgumentParser(
        prog="framesift-compact",
        description="Gather the per-video Parquet files of OUTPUT's tables (manifest, shots, "
        "timeline, videos) into shards, merge small shards and drop stale copies. Crash-safe "
        "and idempotent: run it again after any interruption.",
    )
    p.add_argument("output", help="output folder or s3:// prefix of a framesift run")
    p.add_argument("--s3-endpoint", default=None, help="endpoint URL of an S3-compatible store")
    p.add_argument("--shard-rows", type=int, default=SHARD_ROWS, help=f"rows per shard at most (default {SHARD_ROWS})")
    p.add_argument("--shard-mb", type=float, default=SHARD_BYTES / 2**20,
                   help=f"in-memory MB per shard at most (default {SHARD_BYTES // 2**20})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 when done, 1 when OUTPUT cannot be read or compacted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.shard_rows < 1 or args.shard_mb <= 0:
        print("framesift-compact: error: --shard-rows and --shard-mb must be > 0", file=sys.stderr)
        return 2
    storage = Storage(endpoint_url=args.s3_endpoint)
    try:
        if not is_folder(storage, args.output):
            print(f"framesift-compact: error: OUTPUT {args.output!r} does not exist", file=sys.stderr)
            return 1
        options = CompactOptions(shard_rows=args.shard_rows, shard_bytes=int(args.shard_mb * 2**20))
        stats = compact_output(storage, args.output, options=options)
    except (CompactError, StorageError, OSError) as exc:
        print(f"framesift-compact: error: {exc}", file=sys.stderr)
        return 1
    for s in stats.values():
        print(TableStats(**s).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
