"""The finalize task: select one video's frames, write its frames and tables, commit it.

Runs as a Ray task per video, ideally on the node that decoded it (which caches its
source and, for short videos, the encoded images). Selection is `pipeline.select_video`,
the same code the service runs. With clips on, the clip windows are cut after selection
(`operators.clips`; a clip that cannot be cut is a manifest row with its `clip_error`, not a
failure of the video); with WebDataset output the video's samples are written as one shard
piece (`operators.shards`). The video's `videos/` row is written last: it is the commit
record, so a video is either wholly written or not committed at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from operators import shards
from operators.assemble import VideoPayload
from operators.clips import ClipSettings, clip_windows, cut_clip, selection_windows, window_of
from operators.decode import VideoInfo, read_frames
from operators.pipeline import SampledVideo, SelectOptions, VideoSelection, select_video
from operators.resources import ClusterShape, Resources
from operators.segment import adjacent_distances
from operators.source_cache import discard, source_file, take_images
from operators.storage import Storage, failure_reason, write_bytes_atomic
from operators.write import IMAGE_EXT, clip_uri, encode_image, frame_uri, write_table

FINALIZE_CPUS = 0.5  # a finalize task is mostly I/O
FINALIZE_CLIP_CPUS = 1.0  # ... unless it cuts clips: re-encoding is one encoder thread's work


def finalize_resources(shape: ClusterShape, decode: Resources, embed: Resources | None,
                       clips: bool = False, beside: Resources | None = None) -> Resources:
    """One finalize task's request: half a CPU (it is mostly I/O, so it runs beside the
    streaming pipeline instead of queueing behind it), one when it cuts clips (`clips`: a
    re-encode keeps one core busy), and never more than what is left beside a CPU embedding
    actor, one decode task and `beside` (a CPU TransNetV2 actor), or it could not be placed."""
    want = FINALIZE_CLIP_CPUS if clips else FINALIZE_CPUS
    if embed is None or shape.embed_on_gpu:
        return Resources(cpus=want)
    other = beside.cpus if beside is not None and not beside.gpus else 0.0
    return Resources(cpus=min(want, shape.node_cpus - embed.cpus - decode.cpus - other))


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
    clips: ClipSettings | None = None  # None: no clip files
    webdataset: bool = False  # also write the video's samples as a shard piece


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
        piece_bytes = _write_outputs(p, s, result)
        t2 = time.perf_counter()
        row = _video_row(
            p, s, "done", frames_selected=len(result.selection.indices), shots=len(result.shots),
            k=result.selection.k, select_s=t1 - t0, write_s=t2 - t1,
        )
    except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
        discard(vid, p.meta["source_uri"])
        p.error = failure_reason(exc, p.meta["source_uri"])
        row = _video_row(p, s, "failed")
    write_table(s.storage, s.output, "videos", vid, [row])
    if row["status"] == "done" and s.webdataset:
        row = {**row, "shard_piece_bytes": piece_bytes}  # for the driver's shard planner, not stored
    return row


def _write_outputs(p: VideoPayload, s: FinalizeSettings, result: VideoSelection) -> int:
    """Write the video's clips, frames, tables and (WebDataset output) shard piece, in that
    order; returns the piece's size (0 without one). Raises on any write failure."""
    vid, uri = p.meta["video_id"], p.meta["source_uri"]
    sel, v = result.selection, p.video
    frames = result.frames()
    clip_rows, clip_data, frame_window = _cut_clips(p, s, result, frames) if s.clips else ([], [], None)
    images = _selected_images(p, s, v.frame_index[sel.indices])
    rows = []
    for j, frame in enumerate(frames):
        i = sel.indices[j]
        image_uri = frame_uri(s.output, vid, frame["timestamp_s"], s.image_format)
        write_bytes_atomic(s.storage, image_uri, images[j])
        clip = frame.pop("clip")
        method_clip = clip if clip is not None and clip["source"] == "method" else None
        row = {
            "video_id": vid, "source_uri": uri, "kind": "frame", **frame, "method": s.select.method,
            "embedder": s.embedder,
            "clip_start_s": method_clip["start_s"] if method_clip else None,
            "clip_end_s": method_clip["end_s"] if method_clip else None,
            "embedding": v.embeddings[i].astype(np.float32).tolist(), "image_uri": image_uri,
        }
        w = frame_window[j] if frame_window else None
        if w is not None:  # the clip file this frame belongs to
            c = clip_rows[w]
            row.update(clip_start_s=c["clip_start_s"], clip_end_s=c["clip_end_s"], clip_uri=c.get("clip_uri"))
        rows.append(row)
    write_table(s.storage, s.output, "shots", vid, [{"video_id": vid, "source_uri": uri, **shot,
                                                     "shot_detector": s.shot_detector} for shot in result.shots])
    write_table(s.storage, s.output, "timeline", vid, [timeline_row(vid, v)])
    write_table(s.storage, s.output, "manifest", vid, rows + clip_rows, embedding_dim=v.embeddings.shape[1])
    if not s.webdataset:
        return 0
    ext = IMAGE_EXT[s.image_format]
    samples = [(shards.sample_key(vid, "frame", r["timestamp_s"]), {ext: images[j], "json": shards.json_bytes(r)})
               for j, r in enumerate(rows)]
    samples += [(shards.sample_key(vid, "clip", r["clip_start_s"], r["clip_end_s"]),
                 {"mp4": data, "json": shards.json_bytes(r)})
                for r, data in zip(clip_rows, clip_data, strict=True) if data is not None]
    if not samples:
        return 0  # nothing to shard (no frame kept, no clip cut)
    return shards.write_piece(s.storage, s.output, vid, shards.video_piece(samples))


def _cut_clips(p: VideoPayload, s: FinalizeSettings, result: VideoSelection,
               frames: list[dict]) -> tuple[list[dict], list[bytes | None], list[int | None]]:
    """Cut the video's clip windows into clips/<video_id>/<start_ms>-<end_ms>.mp4. Returns the
    clip rows of the manifest (kind "clip"; a clip that could not be cut has its clip_error
    and no clip_uri), each clip's bytes (None when not cut) and, per selected frame, the
    index of the clip holding it. A storage failure raises (it fails the video)."""
    vid, uri = p.meta["video_id"], p.meta["source_uri"]
    cfg, v = s.clips, p.video
    ts = v.timestamps
    if cfg.mode == "shots":
        windows = clip_windows(result.shots, cfg.min_s, cfg.max_s)
        frame_window = [window_of(windows, f["shot_index"], f["timestamp_s"]) for f in frames]
    else:
        step = float(np.median(np.diff(ts))) if len(ts) > 1 else float(p.meta["duration_s"])
        windows, frame_window = selection_windows(result.shots, frames, cfg.max_s, step)
    rows, datas = [], []
    sel = result.selection
    with source_file(s.storage, uri, vid, keep=True) as path:  # the images' read cleans up
        for w, (shot_index, a, b) in enumerate(windows):
            inside = (ts >= a - 1e-9) & (ts < b)
            emb = v.embeddings[inside] if inside.any() else v.embeddings[[int(np.argmin(np.abs(ts - a)))]]
            scores = [float(sel.scores[j]) for j, fw in enumerate(frame_window) if fw == w]
            row = {
                "video_id": vid, "source_uri": uri, "kind": "clip",
                "frame_index": int(round(a * float(p.meta["fps"]))), "timestamp_s": a,
                "method": s.select.method if cfg.mode == "selected" else "shots", "embedder": s.embedder,
                "score": max(scores) if scores else None, "rank": None, "shot_index": shot_index,
                "cluster_id": None, "clip_start_s": a, "clip_end_s": b,
                "embedding": np.asarray(emb, np.float32).mean(axis=0).tolist(), "image_uri": None,
            }
            data = None
            try:
                data, rec = cut_clip(path, a, b, cfg.options, fps=float(p.meta["fps"]))
            except Exception as exc:  # noqa: BLE001 - a failure of this clip, recorded in its row
                row["clip_error"] = str(exc) if type(exc).__name__ == "ClipError" else f"{type(exc).__name__}: {exc}"
            else:
                target = clip_uri(s.output, vid, a, b)
                write_bytes_atomic(s.storage, target, data)  # raises: fails the video
                row.update(frame_index=rec.start_frame, clip_end_s=rec.end_s, clip_uri=target,
                           clip_frames=rec.frames, clip_fps=rec.fps, clip_mode=rec.mode, clip_codec=rec.codec,
                           clip_encoder=rec.encoder, clip_audio=rec.audio, clip_bytes=rec.bytes)
            rows.append(row)
            datas.append(data)
    return rows, datas, frame_window


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
