"""The finalize task: select one video's frames, write its frames and tables, commit it.

Runs as a Ray task per video, ideally on the node that decoded it (which caches its
source and, for short videos, the encoded images). Selection is `pipeline.select_video`,
the same code the service runs. The video's `videos/` row is written last: it is the
commit record, so a video is either wholly written or not committed at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from operators.assemble import VideoPayload
from operators.decode import VideoInfo, read_frames
from operators.pipeline import SampledVideo, SelectOptions, VideoSelection, select_video
from operators.resources import ClusterShape, Resources
from operators.segment import adjacent_distances
from operators.source_cache import discard, source_file, take_images
from operators.storage import Storage, write_bytes_atomic
from operators.write import encode_image, frame_uri, write_table

FINALIZE_CPUS = 0.5  # a finalize task is mostly I/O


def finalize_resources(shape: ClusterShape, decode: Resources, embed: Resources | None) -> Resources:
    """One finalize task's request: half a CPU (it is mostly I/O, so it runs beside the
    streaming pipeline instead of queueing behind it), and never more than what is left
    beside a CPU embedding actor and one decode task, or it could not be placed."""
    if embed is None or shape.embed_on_gpu:
        return Resources(cpus=FINALIZE_CPUS)
    return Resources(cpus=min(FINALIZE_CPUS, shape.node_cpus - embed.cpus - decode.cpus))


@dataclass(frozen=True)
class FinalizeSettings:
    """What finishing a video needs to know, shipped once to every finalize task."""

    storage: Storage
    output: str
    select: SelectOptions
    embedder: str
    shot_detector: str = "features"
    image_format: str = "jpeg"
    image_quality: int = 90
    max_side: int | None = None
    query: np.ndarray | None = None


def _video_row(p: VideoPayload, s: FinalizeSettings, status: str, **extra) -> dict:
    row = {
        **p.meta,
        "status": status,
        "error": p.error or None,
        "frames_sampled": len(p.video.timestamps),
        "frames_embedded": 0,
        "frames_selected": 0,
        "shots": 0,
        "k": None,
        "method": s.select.method,
        "embedder": s.embedder,
        "shot_detector": s.shot_detector,
        **p.times,
        "select_s": 0.0,
        "write_s": 0.0,
        "finished_at": datetime.now(timezone.utc),
    }
    row.update(extra)
    return row


def finalize_video(p: VideoPayload, s: FinalizeSettings) -> dict:
    """Select, write frames and tables for one video, then commit its videos/ row.

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
        result = select_video(p.video, s.select, s.query, s.shot_detector)
        t1 = time.perf_counter()
        _write_outputs(p, s, result)
        t2 = time.perf_counter()
        row = _video_row(
            p, s, "done", frames_selected=len(result.selection.indices), shots=len(result.shots),
            k=result.selection.k, select_s=t1 - t0, write_s=t2 - t1,
        )
    except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
        discard(vid, p.meta["source_uri"])
        p.error = f"{type(exc).__name__}: {exc}"
        row = _video_row(p, s, "failed")
    write_table(s.storage, s.output, "videos", vid, [row])
    return row


def _write_outputs(p: VideoPayload, s: FinalizeSettings, result: VideoSelection) -> None:
    vid, uri = p.meta["video_id"], p.meta["source_uri"]
    sel, v = result.selection, p.video
    images = _selected_images(p, s, v.frame_index[sel.indices])
    rows = []
    for j, frame in enumerate(result.frames()):
        i = sel.indices[j]
        image_uri = frame_uri(s.output, vid, frame["timestamp_s"], s.image_format)
        write_bytes_atomic(s.storage, image_uri, images[j])
        clip = frame.pop("clip")
        method_clip = clip if clip is not None and clip["source"] == "method" else None
        rows.append({
            "video_id": vid, "source_uri": uri, **frame, "method": s.select.method, "embedder": s.embedder,
            "clip_start_s": method_clip["start_s"] if method_clip else None,
            "clip_end_s": method_clip["end_s"] if method_clip else None,
            "embedding": v.embeddings[i].astype(np.float32).tolist(), "image_uri": image_uri,
        })
    write_table(s.storage, s.output, "shots", vid, [{"video_id": vid, "source_uri": uri, **shot,
                                                     "shot_detector": s.shot_detector} for shot in result.shots])
    write_table(s.storage, s.output, "timeline", vid, [timeline_row(vid, v)])
    write_table(s.storage, s.output, "manifest", vid, rows, embedding_dim=v.embeddings.shape[1])


def timeline_row(video_id: str, v: SampledVideo) -> dict:
    """What the report's timeline of a video draws: every sampled frame's time and the
    cosine distance of its features to the previous frame's (0 for the first)."""
    dist = np.concatenate([np.zeros(min(1, len(v.timestamps))), adjacent_distances(v.features)])
    return {"video_id": video_id, "timestamps": np.asarray(v.timestamps, np.float32).tolist(),
            "distances": dist.astype(np.float32).tolist()}


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
