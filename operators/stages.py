"""Ray Data operators: one public callable class per stage, thin wrappers over the pure core.

    video rows --DecodeStage--> ChunkRow --EmbedStage--> ChunkRow with embeddings
                                ChunkRow with thumbs --TransNetStage--> ChunkRow with transition_probs

Each stage declares what one of its tasks or actors asks Ray for (`resources`). A video
that cannot be read becomes a single failed `ChunkRow` with its reason, so the job records
it and goes on.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from operators import defaults
from operators.attempts import MAX_ATTEMPTS, killed_reason
from operators.chunk_row import STATUS_FAILED, ChunkRow, batch_of, rows_of
from operators.decode import DecodeError, DecodeSpan, VideoInfo, probe_video
from operators.pipeline import (
    SampledChunk,
    SamplingOptions,
    expected_chunks,
    plan_spans,
    propagate,
    sample_chunks,
    sampled_count,
    seek_order,
)
from operators.resources import ClusterShape, Resources
from operators.source_cache import cache_limit_bytes, current_node_id, put_images, source_file
from operators.storage import Storage, failure_reason, is_remote
from operators.threads import CPU_FRAMES_PER_THREAD
from operators.transnet import TransNetV2Detector, pad_context

log = logging.getLogger("framesift")
SPAN_ROWS_AHEAD = 4  # rows a span task may have waiting in the object store (memory: 4 chunks a span)



def one_chunk(block):
    """A block (pyarrow Table) with each column in one contiguous chunk. A stage that yields
    row by row leaves one Arrow chunk per row in each column, and Ray then (de)serializes
    every chunk of every tensor column on its own, far slower than one contiguous chunk
    (docs/decisions.md). Applied right after such a stage, fused into its tasks."""
    return block.combine_chunks()


def _listed(src: dict) -> tuple[int, str] | None:
    """The (size, version) the listing saw of a source row (None: not listed with them)."""
    return (int(src.get("size") or 0), str(src.get("version") or "")) if "version" in src else None


def _with_thumb_context(chunks: Iterator[SampledChunk], on: bool) -> Iterator[tuple[SampledChunk, dict]]:
    """Each chunk with the ChunkRow fields TransNetStage needs to run it alone (the
    neighbours' thumbnails, `transnet.with_context`; a span's first and last chunks bring
    those past its edges), or with none when `on` is False."""
    if not on:
        for chunk in chunks:
            yield chunk, {}
        return
    from operators.transnet import with_context

    first = next(chunks, None)
    if first is None:
        return
    held: deque[SampledChunk] = deque()
    after: list[np.ndarray] = []

    def thumbs() -> Iterator[np.ndarray]:
        for chunk in itertools.chain([first], chunks):
            held.append(chunk)
            if chunk.context_after is not None:
                after.append(chunk.context_after)
            yield chunk.thumbs

    before = first.context_before
    start = int(first.thumb_index[0]) if before is not None and len(first.thumb_index) else 0
    for tail, _, head, at in with_context(thumbs(), before, start, lambda: after[-1] if after else None):
        yield held.popleft(), {"thumbs_before": tail, "thumbs_after": head, "thumb_start": int(at)}


class DecodeStage:
    """Video row -> ChunkRows: download (object storage), probe, then `sample_chunks` (decode
    at the model's size, features, the cascade's plan), one row per chunk.

    With `encode_images`, a video of at most `carry_frames` sampled frames also has every
    sampled frame encoded at output size (the source's, or fitted to `image_max_side`) and
    kept on this node for finalize (`source_cache.put_images`), which then writes the
    selected ones instead of reading the video again; its rows name this node.
    """

    MEMORY = 512 * 2**20  # a chunk of frames and the decoder's buffers

    def __init__(
        self,
        storage: Storage,
        sampling: SamplingOptions,
        encode_images: Callable[[np.ndarray], bytes] | None = None,
        image_max_side: int | None = None,
        carry_frames: int = 0,
        attempts=None,
        max_attempts: int = MAX_ATTEMPTS,
        segment_s: float = defaults.SEGMENT_S,
        span_options: dict | None = None,
    ) -> None:
        self.storage = storage
        self.segment_s = segment_s  # a video twice this long is decoded in spans at once (0: never)
        self.span_options = span_options or {"num_cpus": 1}  # one span task's Ray resources
        self.sampling = sampling
        self.attempts = attempts  # a DecodeAttempts actor (None: not counted)
        self.max_attempts = max_attempts
        self.encode_images = encode_images
        self.image_max_side = image_max_side
        self.carry_frames = carry_frames

    @staticmethod
    def resources(shape: ClusterShape, with_model: bool = True, beside: Resources | None = None) -> Resources:
        """One decode task's request. Beside GPU actors (or with no model) a whole CPU.
        Beside a CPU actor, which reserves all but one core, a share of the core left, so
        that one decode task per core runs and fills the time the model leaves. Declaring
        memory also keeps Ray Data from fusing decode into a CPU actor of the same CPU count,
        which would run decode and model in series. `beside`: another actor on the node's
        CPUs (a CPU TransNetV2 actor), whose share the decode tasks leave too."""
        if shape.embed_on_gpu or not with_model:
            return Resources(cpus=1.0, memory=DecodeStage.MEMORY)
        spare = shape.node_cpus - EmbedStage.resources(shape).cpus - (beside.cpus if beside and not beside.gpus else 0)
        return Resources(cpus=spare / max(2, shape.node_cpus), memory=DecodeStage.MEMORY)

    def _row(self, src: dict, node_id: str, **values) -> ChunkRow:
        """A ChunkRow of this video, with the pixel columns whenever a model follows (so
        every row of the stage has the same columns)."""
        row = ChunkRow(video_id=str(src["video_id"]), source_uri=str(src["source_uri"]),
                       size_bytes=int(src.get("size") or 0), node_id=node_id, **values)
        if self.sampling.with_model and row.frames is None:
            size = self.sampling.size
            row.frames = np.zeros((0, size, size, 3), np.uint8)
            row.group_of = np.zeros(0, np.int64)
        if self.sampling.shot_signals and row.signal_index is None:
            row.signal_index = np.zeros(0, np.int64)
            row.signal_dist = row.signal_wdist = row.signal_ldist = np.zeros(0, np.float32)
            row.signal_change = row.signal_residual = np.zeros(0, np.float32)
        if self.sampling.keep_thumbs and row.thumbs is None:
            row.thumb_index = np.zeros(0, np.int64)
            row.thumbs = row.thumbs_before = row.thumbs_after = np.zeros((0, 27, 48, 3), np.uint8)
        return row

    @staticmethod
    def _keep_images(video_id: str, chunk_index: int, chunk: SampledChunk) -> None:
        """Keep a chunk's images for finalize; they only save a second read, so a full or
        unwritable disk costs that read, not the video."""
        try:
            put_images(video_id, chunk_index, chunk.frame_index.tolist(), chunk.images)
        except OSError as exc:
            log.warning("not keeping the images of %s (finalize will read them again): %s", video_id, exc)

    def _earlier_attempts(self, video_id: str) -> tuple[int, int]:
        """How often this video's decode started (and so died) before in this run, and the
        most rows such an attempt could yield; (0, 0) when not counted."""
        if self.attempts is None:
            return 0, 0
        import ray

        try:
            return tuple(ray.get(self.attempts.start.remote(video_id), timeout=60))
        except Exception as exc:  # noqa: BLE001 - not counted beats not decoded
            log.warning("could not count the decodes of %s: %s", video_id, exc)
            return 0, 0

    def _chunks(self, src: dict) -> Iterator[ChunkRow]:
        node_id = current_node_id() if is_remote(str(src["source_uri"])) else ""
        if isinstance(src.get("error"), str) and src["error"]:
            yield self._row(src, node_id, status=STATUS_FAILED, error=src["error"])
            return
        vid = str(src["video_id"])
        died, rows_before = self._earlier_attempts(vid)
        if died >= self.max_attempts:
            # Ray passes on only this attempt's outputs past those a dead one yielded
            row = self._row(src, node_id, status=STATUS_FAILED, error=killed_reason(died))
            for _ in range(rows_before + 1):
                yield row
            return
        t0 = time.perf_counter()
        try:
            # a source in object storage stays on this node's disk for finalize to read again
            with source_file(self.storage, str(src["source_uri"]), vid, keep=True, listed=_listed(src)) as path:
                download_s = time.perf_counter() - t0
                info = probe_video(path)
                meta = dict(duration_s=info.duration_s, fps=info.fps, width=info.width, height=info.height,
                            n_chunks=expected_chunks(info, self.sampling))
                if self.attempts is not None:  # its chunks, an end marker or a failed row
                    self.attempts.expect.remote(vid, meta["n_chunks"] + 1)
                spans = plan_spans(info, self.sampling, self.segment_s)
                order = seek_order(path, info) if len(spans) > 1 else None
                if order is not None:
                    yield from self._spans_at_once(src, node_id, info, meta, spans, order, download_s)
                    return
                n = sampled_count(info, self.sampling)
                carry = self.encode_images is not None and 0 < n <= self.carry_frames and cache_limit_bytes() > 0
                if carry:
                    node_id = current_node_id()  # finalize finds the images here
                chunks = sample_chunks(path, info, self.sampling, encode_images=self.encode_images if carry else None,
                                       image_max_side=self.image_max_side)
                count = 0
                for row in self._rows_of(src, node_id, meta, chunks, 0, carry, download_s):
                    count += 1
                    yield row
                if count != meta["n_chunks"]:
                    # fewer frames than the container claimed: tell the assembler the real count
                    yield self._row(src, node_id, **dict(meta, n_chunks=count), is_end=True)
        except DecodeError as exc:
            yield self._row(src, node_id, status=STATUS_FAILED, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - storage errors, decoder crashes: recorded
            yield self._row(src, node_id, status=STATUS_FAILED, error=failure_reason(exc, str(src["source_uri"])))

    def _rows_of(self, src: dict, node_id: str, meta: dict, chunks: Iterator[SampledChunk], first: int,
                 carry: bool, download_s: float) -> Iterator[ChunkRow]:
        """The ChunkRows of `chunks` (a video's, or a span's whose first chunk is the video's
        chunk `first`), keeping their images for finalize when `carry`."""
        vid = str(src["video_id"])
        count = first
        for chunk, context in _with_thumb_context(chunks, self.sampling.keep_thumbs):
            if carry and chunk.images is not None:
                self._keep_images(vid, count, chunk)
            yield self._row(
                src, node_id, **meta, chunk_index=count, frame_index=chunk.frame_index,
                timestamps=chunk.timestamps, features=chunk.features, frames=chunk.frames,
                group_of=chunk.group_of, decode_s=chunk.decode_s, features_s=chunk.features_s,
                signal_index=chunk.signal_index, signal_dist=chunk.signal_dist,
                signal_wdist=chunk.signal_wdist, signal_ldist=chunk.signal_ldist,
                signal_change=chunk.signal_change, signal_residual=chunk.signal_residual,
                thumb_index=chunk.thumb_index, thumbs=chunk.thumbs, **context,
                download_s=download_s if count == 0 else 0.0,
                n_embed=len(chunk.frames) if chunk.frames is not None else len(chunk.features),
            )
            count += 1

    def span_rows(self, src: dict, node_id: str, info: VideoInfo, meta: dict, span: DecodeSpan,
                  order: np.ndarray) -> Iterator[ChunkRow]:
        """One span's ChunkRows, in a task of its own (`_spans_at_once`): the source from
        this node's cache (downloaded when missing), then `sample_chunks` over the span;
        then a row with the span's chunk count (`is_end`, `n_chunks`: the chunks it has)."""
        vid = str(src["video_id"])
        count = 0
        try:
            with source_file(self.storage, str(src["source_uri"]), vid, keep=True, listed=_listed(src)) as path:
                chunks = sample_chunks(path, info, self.sampling, span=span, order=order)
                first = span.first // self.sampling.chunk_frames
                for row in self._rows_of(src, node_id, meta, chunks, first, False, 0.0):
                    count += 1
                    yield row
        except DecodeError as exc:
            yield self._row(src, node_id, status=STATUS_FAILED, error=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - storage errors, decoder crashes: recorded
            yield self._row(src, node_id, status=STATUS_FAILED, error=failure_reason(exc, str(src["source_uri"])))
            return
        yield self._row(src, node_id, **dict(meta, n_chunks=count), is_end=True)

    def _spans_at_once(self, src: dict, node_id: str, info: VideoInfo, meta: dict, spans: list[DecodeSpan],
                       order: np.ndarray, download_s: float) -> Iterator[ChunkRow]:
        """A long video's rows from one task per span, run at once (this task waits on
        them, its CPU lent to them meanwhile), passed on as they come (each span at most
        SPAN_ROWS_AHEAD rows ahead). The video's rows
        are then those of one decode, but for the real chunk count at the end when the
        container claimed more frames than it has."""
        import ray

        task = ray.remote(_span_rows).options(num_returns="streaming", max_retries=2,
                                              _generator_backpressure_num_objects=SPAN_ROWS_AHEAD,
                                              **self.span_options)
        order_ref = ray.put(order)
        pending = [task.remote(self._for_span(), src, node_id, info, meta, span, order_ref) for span in spans]
        count, first = 0, True
        try:
            while pending:
                # a span with a row waiting, else block on the first: a task blocked in next()
                # lends its CPU to the spans (one blocked in ray.wait does not)
                ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                gen = ready[0] if ready else pending[0]
                try:
                    row = ray.get(next(gen))
                except StopIteration:
                    pending.remove(gen)
                    continue
                if row.failed:
                    yield row
                    return
                if row.is_end:
                    count += row.n_chunks
                    continue
                if first:
                    row.download_s, first = download_s, False
                row.spans = len(spans)
                yield row
        finally:
            for gen in pending:  # a failed span ends the video: the others need not go on
                try:
                    ray.cancel(gen)
                except Exception:  # noqa: BLE001 - already ended
                    pass
        if count != meta["n_chunks"]:
            yield self._row(src, node_id, **dict(meta, n_chunks=count), is_end=True)

    def _for_span(self) -> DecodeStage:
        """This stage as a span task needs it: no attempts ledger (the video's task counts)."""
        stage = copy.copy(self)
        stage.attempts = None
        return stage

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """One video per input row (map_batches batch_size=1); yields one batch per chunk."""
        keys = list(batch)
        for i in range(len(batch[keys[0]])):
            for row in self._chunks({k: batch[k][i] for k in keys}):
                yield row.to_batch()


def _span_rows(stage: DecodeStage, src: dict, node_id: str, info: VideoInfo, meta: dict, span: DecodeSpan,
               order: np.ndarray) -> Iterator[ChunkRow]:
    """A span task's body (`DecodeStage._spans_at_once`)."""
    yield from stage.span_rows(src, node_id, info, meta, span, order)


class EmbedStage:
    """ChunkRows -> the same rows with `embedding` (float16, L2-normalised, one per sampled
    frame) and `embed_s`, without the pixels. A stateful actor: the model loads once per
    actor, on its GPU when it has one."""

    def __init__(self, spec, batch_size: int = 32, num_threads: int | None = None, dtype: str = "auto") -> None:
        from operators.embed import create_embedder
        from operators.process import freeze_startup_objects, passive_openmp_waits

        passive_openmp_waits()
        self.embedder = create_embedder(spec, batch_size=batch_size, num_threads=num_threads, dtype=dtype)
        freeze_startup_objects()

    @staticmethod
    def resources(shape: ClusterShape) -> Resources:
        """One actor's request: a GPU and a CPU to feed it; on CPUs all but one core of the
        largest node (half a core on a 1-core node), whose threads use every core."""
        if shape.embed_on_gpu:
            return Resources(cpus=1.0, gpus=1.0)
        return Resources(cpus=max(1, shape.node_cpus - 1) if shape.node_cpus >= 2 else 0.5)

    @staticmethod
    def concurrency(shape: ClusterShape, requested: int | tuple[int, int] | None = None) -> int | tuple[int, int]:
        """The actor pool: `requested` (N or (MIN, MAX)) when given; else autoscaling between
        one actor and one per GPU, or one CPU actor."""
        if requested:
            return requested
        return (1, max(1, shape.gpus)) if shape.embed_on_gpu else 1

    @staticmethod
    def threads(shape: ClusterShape) -> int | None:
        """Threads of a CPU actor: one per core of its node (None on a GPU: torch's default)."""
        return None if shape.embed_on_gpu else shape.node_cpus

    @staticmethod
    def rows_per_call(batch_size: int, chunk_frames: int, cascade_ratio: float | None,
                      threads: int | None = None) -> int:
        """Chunk rows an actor takes per call, so that a call brings the model `batch_size`
        frames, and a CPU actor with `threads` threads at least CPU_FRAMES_PER_THREAD each.
        A dense row (`cascade_ratio` None) holds up to `chunk_frames` frames, a cascade row
        about `cascade_ratio` of them, so cascade rows are gathered."""
        frames = max(batch_size, CPU_FRAMES_PER_THREAD * (threads or 0))
        per_row = chunk_frames if cascade_ratio is None else max(1.0, chunk_frames * cascade_ratio)
        return max(1, math.ceil(frames / per_row))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed every row's frames in one model pass (rows concatenated, then split back)."""
        rows = rows_of(batch)
        counts = [len(r.frames) for r in rows]
        t0 = time.perf_counter()
        nonempty = [r.frames for r in rows if len(r.frames)]
        if nonempty:
            emb = self.embedder.encode_frames(np.concatenate(nonempty))
        else:
            emb = np.zeros((0, self.embedder.dim), np.float32)
        elapsed = time.perf_counter() - t0
        total = max(1, sum(counts))
        for row, part, count in zip(rows, np.split(emb, np.cumsum(counts)[:-1]), counts, strict=True):
            row.embedding = propagate(part, row.group_of)  # every sampled frame: its representative's
            row.embed_s = elapsed * count / total
            row.frames = row.group_of = None
        return batch_of(rows)


class TransNetStage:
    """ChunkRows with `thumbs` -> the same rows with `transition_probs` ((m,) float32:
    TransNetV2's probability that each thumb's frame is a shot transition) and `shots_s`,
    without the thumbs (`thumb_index` stays: it names the probabilities' frames).

    Stateless across rows: each row carries the context its windows need (`thumbs_before`,
    `thumbs_after`, `thumb_start`), so rows of many videos may reach any actor of the pool in
    any order, and every frame's probability equals the whole video's. The model loads once
    per actor; the windows of all rows of a call run together, `batch_size` per forward pass.
    A row whose thumbs are malformed becomes a failed row with the reason.
    """

    def __init__(self, device: str | None = None, dtype: str | None = None, batch_size: int | None = None,
                 num_threads: int | None = None) -> None:
        from operators.process import freeze_startup_objects, passive_openmp_waits

        passive_openmp_waits()
        self.detector = TransNetV2Detector(device=device, dtype=dtype, batch_size=batch_size,
                                           num_threads=num_threads)
        freeze_startup_objects()

    @staticmethod
    def resources(shape: ClusterShape) -> Resources:
        """One actor's request: a GPU and a CPU to feed it (fp16 there); on CPUs half a core (one
        torch thread), so that decode tasks still fit beside a CPU embedding actor."""
        if shape.embed_on_gpu:
            return Resources(cpus=1.0, gpus=1.0)
        return Resources(cpus=0.5)  # logical: beside a CPU embedding actor, decode needs room

    @staticmethod
    def device(shape: ClusterShape) -> str:
        """Where the actors run the model."""
        return "cuda" if shape.embed_on_gpu else "cpu"

    @staticmethod
    def threads(shape: ClusterShape) -> int | None:
        """Torch threads of a CPU actor: one (None on a GPU)."""
        return None if shape.embed_on_gpu else 1

    @staticmethod
    def concurrency(shape: ClusterShape, requested: int | tuple[int, int] | None = None) -> int | tuple[int, int]:
        """The actor pool: `requested` when given; else one to one per GPU, or one CPU actor."""
        if requested:
            return requested
        return (1, max(1, shape.gpus)) if shape.embed_on_gpu else 1

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every row's probabilities from one run of all their windows."""
        rows = rows_of(batch)
        todo, padded = [], []
        for row in rows:
            if row.thumbs is not None and not row.failed:
                try:
                    padded.append(pad_context(row.thumbs_before, row.thumbs, row.thumbs_after, row.thumb_start))
                    padded[-1].window_index()  # enough context? (raises ValueError)
                    todo.append(row)
                except ValueError as exc:
                    padded = padded[:len(todo)]
                    row.status, row.error = STATUS_FAILED, f"shot detector: {exc}"
        t0 = time.perf_counter()
        probs = self.detector.predict_many(padded)
        elapsed = time.perf_counter() - t0
        total = max(1, sum(len(p) for p in probs))
        for row, p in zip(todo, probs, strict=True):
            row.transition_probs = p.astype(np.float32)
            row.shots_s = elapsed * len(p) / total
        for row in rows:
            if row.transition_probs is None:
                row.transition_probs = np.zeros(0, np.float32)
            row.thumbs = row.thumbs_before = row.thumbs_after = None
        return batch_of(rows)
