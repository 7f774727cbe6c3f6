"""Ray Data operators: one public callable per stage, thin wrappers over the pure core.

    video rows --DecodeStage--> chunk rows --EmbedStage--> chunk rows with embeddings

A chunk row is one bounded run of sampled frames of one video (never a whole video), so
memory does not grow with a video's length. Every chunk row carries the same columns, and
a video that cannot be read becomes a single row with status "failed" and its reason, so
the job records it and goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from operators.cascade import redundancy_groups
from operators.decode import Chunk, DecodeError, iter_chunks, probe_video, sample_indices
from operators.features import FEATURE_DIM, frame_features
from operators.source_cache import cache_limit_bytes, current_node_id, put_images, source_file
from operators.storage import Storage, is_remote

STATUS_OK, STATUS_FAILED = "ok", "failed"
log = logging.getLogger("framesift")


def _scalar_batch(values: dict) -> dict[str, np.ndarray]:
    """A one-row batch: every value wrapped into a length-1 array (object for strings)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, np.ndarray):
            out[key] = value[None]
        elif isinstance(value, str) or value is None:
            out[key] = np.array(["" if value is None else value], dtype=object)
        else:
            out[key] = np.array([value])
    return out


class DecodeStage:
    """Video row -> chunk rows: download (object storage), probe, decode at `size` sampling
    `fps`, compute training-free features, and emit one row per `chunk_frames` frames.

    With `keep_pixels` the rows carry the frames for the model; without it (the features
    embedder) only the features travel on. With `cascade_ratio` the model sees one frame
    per group of near-duplicates: at most that share of a chunk's frames or, if larger, the
    chunk's share of `cascade_min` when the video has more sampled frames than that (the
    distinct candidates the selection needs, e.g. k; a video of at most k frames is kept
    whole whatever the model says). Unreadable videos yield one failed row.

    With `encode_images`, a video of at most `carry_frames` sampled frames also has every
    sampled frame encoded (at output size: the source's, or fitted to `image_max_side`) and
    kept on this node for finalize (`source_cache.put_images`), which then writes the
    selected ones instead of reading the video again; its rows name this node.
    """

    def __init__(
        self,
        storage: Storage,
        fps: float,
        size: int = 224,
        chunk_frames: int = 64,
        keep_pixels: bool = True,
        max_frames: int | None = None,
        decode_threads: int = 1,
        cascade_ratio: float | None = None,
        cascade_min: int = 0,
        encode_images: Callable[[np.ndarray], bytes] | None = None,
        image_max_side: int | None = None,
        carry_frames: int = 0,
    ) -> None:
        self.storage = storage
        self.fps = fps
        self.size = size
        self.chunk_frames = chunk_frames
        self.keep_pixels = keep_pixels
        self.max_frames = max_frames
        self.decode_threads = decode_threads
        self.cascade_ratio = cascade_ratio
        self.cascade_min = cascade_min
        self.encode_images = encode_images
        self.image_max_side = image_max_side
        self.carry_frames = carry_frames
        self._node_id = ""  # set per video, in the worker that decodes it

    def _row(self, src: dict, **values) -> dict[str, np.ndarray]:
        base = {
            "video_id": src["video_id"],
            "source_uri": src["source_uri"],
            "size_bytes": int(src.get("size") or 0),
            "status": STATUS_OK,
            "error": "",
            "chunk_index": 0,
            "n_chunks": 0,
            "duration_s": 0.0,
            "fps": 0.0,
            "width": 0,
            "height": 0,
            "download_s": 0.0,
            "decode_s": 0.0,
            "features_s": 0.0,
            "frame_index": np.zeros(0, np.int64),
            "timestamps": np.zeros(0, np.float64),
            "features": np.zeros((0, FEATURE_DIM), np.float32),
            "n_embed": 0,
            # the node holding the cached source, where finalize should run ("" = anywhere)
            "node_id": self._node_id,
        }
        if self.keep_pixels:
            base["frames"] = np.zeros((0, self.size, self.size, 3), np.uint8)
            base["group_of"] = np.zeros(0, np.int64)
        base.update(values)
        return _scalar_batch(base)

    def _pixels_for_model(self, frames: np.ndarray, feats: np.ndarray, min_groups: int = 1) -> dict:
        """The frames the model must see: all of them, or with the cascade only one
        representative per group of near-duplicates (`group_of` maps every frame to its
        representative's position in `frames`); the cap on groups is the larger of the
        cascade ratio's share and `min_groups`."""
        if self.cascade_ratio is None:
            return {"frames": frames, "group_of": np.arange(len(frames), dtype=np.int64)}
        reps, group_of = redundancy_groups(feats, self.cascade_ratio, min_groups=min_groups)
        return {"frames": np.ascontiguousarray(frames[reps]), "group_of": group_of, "n_embed": len(reps)}

    @staticmethod
    def _keep_images(video_id: str, chunk_index: int, chunk: Chunk) -> None:
        """Keep a chunk's images for finalize; they only save a second read, so a full or
        unwritable disk costs that read, not the video."""
        try:
            put_images(video_id, chunk_index, chunk.frame_index.tolist(), chunk.images)
        except OSError as exc:
            log.warning("not keeping the images of %s (finalize will read them again): %s", video_id, exc)

    def _chunks(self, src: dict) -> Iterator[dict[str, np.ndarray]]:
        self._node_id = current_node_id() if is_remote(str(src["source_uri"])) else ""
        if isinstance(src.get("error"), str) and src["error"]:
            yield self._row(src, status=STATUS_FAILED, error=src["error"])
            return
        t0 = time.perf_counter()
        try:
            # a source in object storage stays on this node's disk for finalize to read again
            with source_file(self.storage, str(src["source_uri"]), str(src["video_id"]), keep=True) as path:
                t1 = time.perf_counter()
                info = probe_video(path)
                n = len(sample_indices(info, self.fps, self.max_frames))
                n_chunks = max(1, -(-n // self.chunk_frames))
                carry = (
                    self.encode_images is not None and 0 < n <= self.carry_frames and cache_limit_bytes() > 0
                )
                if carry:
                    self._node_id = current_node_id()  # finalize finds the images here
                meta = dict(
                    duration_s=info.duration_s, fps=info.fps, width=info.width,
                    height=info.height, n_chunks=n_chunks, download_s=t1 - t0,
                )
                chunks = iter_chunks(
                    path, self.fps, self.size, self.chunk_frames, info=info,
                    max_frames=self.max_frames, num_threads=self.decode_threads,
                    encode_images=self.encode_images if carry else None,
                    image_max_side=self.image_max_side,
                )
                i = 0
                while True:
                    t2 = time.perf_counter()
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    if chunk.images is not None:
                        self._keep_images(str(src["video_id"]), i, chunk)
                    t3 = time.perf_counter()
                    feats = frame_features(chunk.frames)
                    t4 = time.perf_counter()
                    values = dict(
                        meta, chunk_index=i, frame_index=chunk.frame_index,
                        timestamps=chunk.timestamps, features=feats,
                        decode_s=t3 - t2, features_s=t4 - t3, n_embed=len(feats),
                    )
                    if self.keep_pixels:
                        # this chunk's share of the candidates the method needs for the video
                        need = self.cascade_min if n > self.cascade_min else 0
                        floor = -(-need * len(feats) // max(n, 1))
                        values.update(self._pixels_for_model(chunk.frames, feats, floor))
                    yield self._row(src, **values)
                    meta["download_s"] = 0.0
                    i += 1
                if i != n_chunks:
                    # fewer frames than the container claimed: tell the assembler the real count
                    yield self._row(src, **dict(meta, chunk_index=-1, n_chunks=i))
        except DecodeError as exc:
            yield self._row(src, status=STATUS_FAILED, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - storage errors, decoder crashes: recorded
            yield self._row(src, status=STATUS_FAILED, error=f"{type(exc).__name__}: {exc}")

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """One video per input row (map_batches batch_size=1); yields one batch per chunk."""
        keys = list(batch)
        for i in range(len(batch[keys[0]])):
            yield from self._chunks({k: batch[k][i] for k in keys})


def passive_openmp_waits() -> bool:
    """Make torch's OpenMP threads in this process sleep, rather than spin, while they wait
    between parallel regions (OMP_WAIT_POLICY=PASSIVE, unless the environment already sets
    it). An embedding actor shares its node's cores with decode and finalize tasks: spinning
    threads take CPU those tasks could use (measured on 2 cores, ViT-B-32 fp32 in batches of
    8 beside two decode processes: 7.8 -> 6.0 CPU-s and 6.4 -> 5.6 s for 64 frames; alone,
    no change; the dense job on 12 short clips in bf16, four runs each: 16.3 -> 15.5 s on
    average). OpenMP reads the setting when torch loads it, so it applies only if torch is
    not imported yet; returns whether it did."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def freeze_startup_objects() -> int:
    """Move every object this process holds now into the garbage collector's permanent
    generation (`gc.freeze`), so that later collections, and the interpreter's teardown when
    the process exits, no longer walk them. For a long-lived process that has just loaded
    its model: the modules of torch, torchvision (with torch._dynamo and sympy) and
    open_clip are ~2,800 modules and ~0.5 million tracked objects that stay until exit anyway.
    Objects freed by reference counting are still freed; only cycles made before the call
    are kept for good. Measured on 2 cores: a process holding the bf16 ViT-B-32 spent 1.2
    CPU-s exiting, 0.2 frozen; Ray Data ends each run's embedding actor gracefully, so that
    CPU lands beside the next run's decode (or an autoscaling pool's other work): 12 short
    clips in bf16, back-to-back runs, four alternating runs each, cascade 8.73 -> 7.82 s,
    dense 16.78 -> 16.00 s. Returns the number of objects frozen."""
    import gc

    gc.freeze()
    return gc.get_freeze_count()


class EmbedStage:
    """Chunk rows -> the same rows with `embedding` (float16, L2-normalised, one per sampled
    frame) and `embed_s`, and without the pixels. A stateful actor: the model loads once per actor, on its GPU
    when it has one."""

    def __init__(self, spec, batch_size: int = 32, num_threads: int | None = None,
                 dtype: str = "auto") -> None:
        from operators.embed import create_embedder

        passive_openmp_waits()
        self.embedder = create_embedder(spec, batch_size=batch_size, num_threads=num_threads, dtype=dtype)
        freeze_startup_objects()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed every row's frames in one model pass (rows concatenated, then split back)."""
        frames = [np.asarray(f) for f in batch.pop("frames")]
        counts = [len(f) for f in frames]
        t0 = time.perf_counter()
        nonempty = [f for f in frames if len(f)]
        if nonempty:
            emb = self.embedder.encode_frames(np.concatenate(nonempty))
        else:
            emb = np.zeros((0, self.embedder.dim), np.float32)
        elapsed = time.perf_counter() - t0
        total = max(1, sum(counts))
        splits = np.split(emb.astype(np.float16), np.cumsum(counts)[:-1])
        # every sampled frame takes its representative's embedding
        groups = batch.pop("group_of")
        batch["embedding"] = _ragged([e[np.asarray(g, np.int64)] for e, g in zip(splits, groups, strict=True)])
        batch["embed_s"] = np.array([elapsed * c / total for c in counts])
        return batch


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A column of per-row arrays: a dense tensor when shapes agree, else an object array
    (which Ray Data stores as a variable-shaped tensor column)."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out
