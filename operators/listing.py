"""The job's first stage: INPUT's listing as a stream of video rows, resume filter applied.

    ListingPart rows --ListSources (tasks)--> video rows (blocks of ~BLOCK_BYTES)
                     --one_video_per_block (zero-CPU repartition)--> DecodeStage

`ListSources` lists its part in order (`sources.iter_part`), drops the videos already
committed (`ResumeFilter` over the sorted ids in the object store) and yields the rest in
blocks as it goes, so decoding starts while listing goes on. Listing is much faster than
decoding, and Ray Data paces its stages by bytes, which listing rows hardly have: left
alone, the listing of millions would run ahead and the driver would hold a queued block
reference per video. So a `ListingPacer` actor keeps the listing at most `window` videos
ahead of the videos the driver has started to receive; it also counts what was listed and
skipped for the run report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from operators.sources import ListingPart, ResumeFilter, VideoSource, iter_part
from operators.storage import Storage

log = logging.getLogger("framesift")

# Ray Data's target block size for the job. Listing rows are ~150 bytes; Ray Data merges a
# task's output into blocks of up to this size before passing any on, so with its default
# (128 MiB) a listing task would pass nothing on for ~700k videos.
BLOCK_BYTES = 256 * 1024
WINDOW = 4096  # videos the listing may run ahead of the first chunks the driver received
MAX_WAIT_S = 30.0  # a listing task waits at most this long without any progress


class ListingPacer:
    """Counts per listing part (listed, skipped, emitted) and holds the listing back while
    more than `window` emitted videos have not reached the driver yet (`started`). Plain
    asyncio, run as a Ray actor by the job; tested without Ray.

    Counts are cumulative per part and overwritten, so a listing task that Ray runs again
    after a failure counts its part once."""

    def __init__(self, window: int = WINDOW, max_wait_s: float = MAX_WAIT_S) -> None:
        self.window = window
        self.max_wait_s = max_wait_s
        self.parts: dict[int, tuple[int, int, int, bool]] = {}
        self.started = 0
        self.peak_outstanding = 0
        self._changed: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def outstanding(self) -> int:
        """Videos emitted by the listing that have not reached the driver yet."""
        return sum(p[2] for p in self.parts.values()) - self.started

    async def report(self, part: int, listed: int, skipped: int, emitted: int, done: bool = False) -> None:
        """Record a part's counts so far; returns once the listing may go on (at once for a
        finished part), or after `max_wait_s` without progress (never a deadlock)."""
        self.parts[part] = (listed, skipped, emitted, done)
        self.peak_outstanding = max(self.peak_outstanding, self.outstanding())
        deadline = time.monotonic() + self.max_wait_s
        while not done and self.outstanding() > self.window:
            event = self._event()
            event.clear()
            before = self.started
            try:
                await asyncio.wait_for(event.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return
            if self.started > before:
                deadline = time.monotonic() + self.max_wait_s

    async def progress(self, started: int) -> None:
        """The driver has received the first row of `started` videos in all."""
        self.started = max(self.started, int(started))
        self._event().set()

    async def totals(self) -> dict:
        """listed / skipped / emitted summed over parts, how many parts are done, and the
        most videos the listing was ever ahead of the driver."""
        vals = list(self.parts.values())
        return {"listed": sum(v[0] for v in vals), "skipped": sum(v[1] for v in vals),
                "emitted": sum(v[2] for v in vals), "parts_done": sum(1 for v in vals if v[3]),
                "peak_ahead": self.peak_outstanding}


SCHEMA = pa.schema([("video_id", pa.string()), ("source_uri", pa.string()), ("size", pa.int64()),
                    ("version", pa.string()), ("error", pa.string())])


def _table(sources: list[VideoSource]) -> pa.Table:
    return pa.table({"video_id": [s.video_id for s in sources], "source_uri": [s.source_uri for s in sources],
                     "size": [s.size for s in sources], "version": [s.version for s in sources],
                     "error": [s.error for s in sources]}, schema=SCHEMA)


class ListSources:
    """Ray Data callable: listing-part rows (`part`: `ListingPart.to_json`) -> video rows of
    the sources not yet committed. `done_ref` is a one-element list holding the ObjectRef of
    the sorted committed ids (`sources.done_ids`), `pacer` the ListingPacer actor (or None),
    `limit` the most inputs listed (one part only)."""

    def __init__(self, storage: Storage, done_ref: list, pacer=None, limit: int | None = None,
                 block_bytes: int = BLOCK_BYTES) -> None:
        self.storage = storage
        self.done_ref = done_ref
        self.pacer = pacer
        self.limit = limit
        self.block_bytes = block_bytes

    def _filter(self) -> ResumeFilter:
        import ray

        ref = self.done_ref[0]
        return ResumeFilter(ray.get(ref) if isinstance(ref, ray.ObjectRef) else np.asarray(ref))

    def _report(self, part: int, listed: int, skipped: int, emitted: int, done: bool = False) -> None:
        if self.pacer is None:
            return
        import ray

        ray.get(self.pacer.report.remote(part, listed, skipped, emitted, done))

    def list_part(self, part: ListingPart, resume: ResumeFilter) -> Iterator[pa.Table]:
        """The part's uncommitted sources as tables of more than `block_bytes` (the last one
        smaller), reporting to the pacer after each, so that Ray Data passes every table on
        before the listing waits."""
        listed = skipped = emitted = 0
        pending: list[VideoSource] = []
        out: list[pa.Table] = []
        out_bytes = 0
        step = 16  # rows filtered at once; then as many as stay well under half a block

        def flush_pending() -> None:
            nonlocal skipped, out_bytes, step
            mask = resume.committed([s.video_id for s in pending])
            skipped += int(mask.sum())
            keep = [s for s, done in zip(pending, mask, strict=True) if not done]
            pending.clear()
            if keep:
                t = _table(keep)
                out.append(t)
                out_bytes += t.nbytes
                step = int(np.clip(self.block_bytes / 4 / (t.nbytes / len(keep)), 1, 256))

        for src in iter_part(self.storage, part):
            if self.limit is not None and listed >= self.limit:
                break
            listed += 1
            pending.append(src)
            if len(pending) >= step:  # small steps past block_bytes: Ray Data slices a block over 1.5x
                flush_pending()
                if out_bytes > self.block_bytes:
                    table = pa.concat_tables(out)
                    out, out_bytes = [], 0
                    emitted += len(table)
                    yield table
                    self._report(part.index, listed, skipped, emitted)
        flush_pending()
        if out:
            table = pa.concat_tables(out)
            emitted += len(table)
            yield table
        self._report(part.index, listed, skipped, emitted, done=True)

    def __call__(self, batch: dict) -> Iterator[pa.Table]:
        """One listing part per input row (map_batches batch_size=1)."""
        resume = self._filter()
        for text in batch["part"]:
            yield from self.list_part(ListingPart.from_json(str(text)), resume)


def one_video_per_block(ds):
    """`ds` (a Ray Data dataset of video rows) re-cut into blocks of one row, so that each
    decode task gets one video. `Dataset.repartition(target_num_rows_per_block=1)` runs its
    tasks with Ray's default of 1 CPU, which a node busy with decode tasks, embedding actors
    or a Serve app may never free (the run then waits forever); cutting blocks needs no CPU
    of its own, so its tasks ask for none."""
    ds = ds.repartition(target_num_rows_per_block=1)
    ds._logical_plan.dag.ray_remote_args["num_cpus"] = 0  # Ray Data has no public option for it
    return ds
