"""Per-video finishing: gather a video's chunk rows, segment, select, write, commit.

A video's state here is small (its sampled frames' embeddings, features and timestamps,
never its pixels). The k selected frames' images come from this node's cache when the
decode stage kept them (short videos), else from reading the source again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from operators.decode import VideoInfo, read_frames
from operators.segment import detect_shots, shot_ids_from_starts, shot_windows
from operators.select import Selection, VideoFrames, select_frames
from operators.source_cache import discard, source_file, take_images
from operators.stages import STATUS_FAILED
from operators.storage import Storage, write_bytes_atomic
from operators.write import encode_image, frame_uri, write_table

_META = ("video_id", "source_uri", "size_bytes", "duration_s", "fps", "width", "height")
_TIMES = ("download_s", "decode_s", "features_s", "embed_s")


@dataclass
class VideoPayload:
    """All of one video's sampled frames after embedding (no pixels)."""

    meta: dict
    frame_index: np.ndarray
    timestamps: np.ndarray
    features: np.ndarray
    embeddings: np.ndarray
    times: dict = field(default_factory=dict)  # seconds per stage, and frames_embedded
    error: str = ""
    node_id: str = ""  # the Ray node that decoded it and caches its source ("" = none)


class VideoAssembler:
    """Collects chunk rows as they stream in (in any order, interleaved across videos) and
    hands out a video's payload once all its chunks, or its failure, have arrived."""

    def __init__(self) -> None:
        self._parts: dict[str, list[dict]] = {}
        self._expected: dict[str, int] = {}

    @property
    def pending(self) -> int:
        """Videos with some but not all chunks received."""
        return len(self._parts)

    def add(self, row: dict) -> VideoPayload | None:
        """Take one chunk row; return the video's payload when it is complete, else None."""
        vid = row["video_id"]
        if row["status"] == STATUS_FAILED:
            self._parts.pop(vid, None)
            self._expected.pop(vid, None)
            return _payload(row, [], error=row["error"] or "failed")
        parts = self._parts.setdefault(vid, [])
        if row["chunk_index"] == -1:  # end marker: the real number of chunks
            self._expected[vid] = int(row["n_chunks"])
        else:
            parts.append(row)
            self._expected.setdefault(vid, int(row["n_chunks"]))
        if len(parts) >= self._expected[vid] and parts:
            del self._parts[vid], self._expected[vid]
            parts.sort(key=lambda r: r["chunk_index"])
            return _payload(parts[0], parts)
        if self._expected[vid] == 0:
            del self._parts[vid], self._expected[vid]
            return _payload(row, [], error="no frames could be decoded")
        return None


def _payload(first: dict, parts: list[dict], error: str = "") -> VideoPayload:
    meta = {k: first.get(k) for k in _META}
    node_id = str(first.get("node_id") or "")
    if not parts:
        empty = np.zeros(0)
        return VideoPayload(meta, empty.astype(np.int64), empty, empty, empty, {}, error, node_id=node_id)
    feats = np.concatenate([np.asarray(p["features"], np.float32) for p in parts])
    if "embedding" in parts[0]:
        emb = np.concatenate([np.asarray(p["embedding"], np.float32) for p in parts])
    else:
        emb = feats
    times = {t: float(sum(float(p.get(t) or 0.0) for p in parts)) for t in _TIMES}
    times["frames_embedded"] = int(sum(int(p.get("n_embed") or 0) for p in parts))
    return VideoPayload(
        meta,
        np.concatenate([np.asarray(p["frame_index"], np.int64) for p in parts]),
        np.concatenate([np.asarray(p["timestamps"], np.float64) for p in parts]),
        feats,
        emb,
        times,
        node_id=node_id,
    )


@dataclass(frozen=True)
class FinalizeSettings:
    """What finishing a video needs to know, shipped once to every finalize task."""

    storage: Storage
    output: str
    method: str
    k: int | str
    embedder: str
    seed: int = 0
    dedup_threshold: float | None = None
    image_format: str = "jpeg"
    image_quality: int = 90
    max_side: int | None = None
    query: np.ndarray | None = None
    method_params: dict = field(default_factory=dict)


def segment_and_select(
    features: np.ndarray,
    embeddings: np.ndarray,
    timestamps: np.ndarray,
    method: str,
    k: int | str,
    *,
    query: np.ndarray | None = None,
    seed: int = 0,
    dedup_threshold: float | None = None,
    **method_params,
) -> tuple[np.ndarray, Selection]:
    """Shots and selection for one video: the one code path the job and the service share.

    Takes per-frame training-free `features` (n, Df), `embeddings` (n, D) and `timestamps`
    (n,), a method name and budget k (int or "auto"), and an optional query embedding.
    Returns (shot start indices (s,) int64, Selection).
    """
    starts = detect_shots(features, timestamps)
    frames = VideoFrames(
        embeddings=embeddings,
        timestamps=timestamps,
        shot_ids=shot_ids_from_starts(len(timestamps), starts),
        features=features,
        query=query,
    )
    sel = select_frames(method, frames, k, seed=seed, dedup_threshold=dedup_threshold, **method_params)
    return starts, sel


def _video_row(p: VideoPayload, s: FinalizeSettings, status: str, **extra) -> dict:
    row = {
        **p.meta,
        "status": status,
        "error": p.error or None,
        "frames_sampled": len(p.timestamps),
        "frames_embedded": 0,
        "frames_selected": 0,
        "shots": 0,
        "k": None,
        "method": s.method,
        "embedder": s.embedder,
        **p.times,
        "select_s": 0.0,
        "write_s": 0.0,
        "finished_at": datetime.now(timezone.utc),
    }
    row.update(extra)
    return row


def finalize_video(p: VideoPayload, s: FinalizeSettings) -> dict:
    """Segment, select, write frames and tables for one video, then commit its videos/ row.

    Returns the committed videos/ row. Any failure (including a source that decoded for
    sampling but not for the full-resolution read) commits a failed row with the reason.
    """
    vid = p.meta["video_id"]
    if p.error:
        discard(vid, p.meta["source_uri"])  # a copy the decode stage may have left
        row = _video_row(p, s, "failed")
        write_table(s.storage, s.output, "videos", vid, [row])
        return row
    try:
        t0 = time.perf_counter()
        starts, sel = segment_and_select(
            p.features, p.embeddings, p.timestamps, s.method, s.k, query=s.query, seed=s.seed,
            dedup_threshold=s.dedup_threshold, **s.method_params,
        )
        t1 = time.perf_counter()
        rows, shots = _write_outputs(p, s, starts, sel)
        t2 = time.perf_counter()
        row = _video_row(
            p, s, "done", frames_selected=len(sel.indices), shots=len(shots), k=sel.k,
            select_s=t1 - t0, write_s=t2 - t1,
        )
    except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
        discard(vid, p.meta["source_uri"])
        p.error = f"{type(exc).__name__}: {exc}"
        row = _video_row(p, s, "failed")
    write_table(s.storage, s.output, "videos", vid, [row])
    return row


def _write_outputs(
    p: VideoPayload, s: FinalizeSettings, starts: np.ndarray, sel: Selection
) -> tuple[list[dict], list[dict]]:
    vid, uri = p.meta["video_id"], p.meta["source_uri"]
    ts = p.timestamps
    sizes = np.diff(np.append(starts, len(ts)))
    start_s, end_s = shot_windows(ts, starts, p.meta["duration_s"])
    shots = [
        {
            "video_id": vid, "source_uri": uri, "shot_index": i,
            "start_s": float(start_s[i]), "end_s": float(end_s[i]),
            "start_frame_index": int(p.frame_index[a]), "num_sampled_frames": int(sizes[i]),
        }
        for i, a in enumerate(starts)
    ]
    shot_of = np.searchsorted(starts, sel.indices, side="right") - 1
    clip_of = _clip_windows(sel, ts)
    images = _selected_images(p, s, p.frame_index[sel.indices])
    rows = []
    order = np.argsort(-sel.scores, kind="stable")
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(len(order))
    for j, i in enumerate(sel.indices):
        image_uri = frame_uri(s.output, vid, float(ts[i]), s.image_format)
        write_bytes_atomic(s.storage, image_uri, images[j])
        rows.append(
            {
                "video_id": vid, "source_uri": uri, "frame_index": int(p.frame_index[i]),
                "timestamp_s": float(ts[i]), "method": s.method, "embedder": s.embedder,
                "score": float(sel.scores[j]), "rank": int(rank[j]),
                "shot_index": int(shot_of[j]), "cluster_id": int(sel.cluster_ids[j]),
                "clip_start_s": clip_of[j][0], "clip_end_s": clip_of[j][1],
                "embedding": p.embeddings[i].astype(np.float32).tolist(), "image_uri": image_uri,
            }
        )
    write_table(s.storage, s.output, "shots", vid, shots)
    write_table(s.storage, s.output, "manifest", vid, rows)
    return rows, shots


def _selected_images(p: VideoPayload, s: FinalizeSettings, frame_index: np.ndarray) -> list[bytes]:
    """The encoded images of the selected source frames: those the decode stage kept on this
    node, else read again from the source (this node's copy, or downloaded) and encoded.
    Either way this node's copy and images of the video are gone afterwards."""
    vid, uri = p.meta["video_id"], p.meta["source_uri"]
    kept = take_images(vid, frame_index)
    if kept is not None:
        discard(vid, uri)
        return kept
    with source_file(s.storage, uri, vid, keep=False) as path:  # the last reader: cleans up
        pixels = read_frames(path, frame_index, s.max_side, info=_info(p.meta))
    return [encode_image(px, s.image_format, s.image_quality) for px in pixels]


def _info(meta: dict) -> VideoInfo:
    """The probe the decode stage made, rebuilt from a payload's metadata."""
    fps = float(meta["fps"])
    return VideoInfo(
        num_frames=int(round(float(meta["duration_s"]) * fps)), fps=fps,
        duration_s=float(meta["duration_s"]), width=int(meta["width"]), height=int(meta["height"]),
    )


def _clip_windows(sel: Selection, ts: np.ndarray) -> list[tuple[float | None, float | None]]:
    """(start_s, end_s) of the clip each selected frame stands for, or (None, None)."""
    if sel.clips is None or len(sel.clips) == 0:
        return [(None, None)] * len(sel.indices)
    out = []
    for i in sel.indices:
        inside = [c for c in sel.clips if c[0] <= i <= c[1]]
        out.append((float(ts[inside[0][0]]), float(ts[inside[0][1]])) if inside else (None, None))
    return out
