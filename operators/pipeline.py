"""One video's path from sampled frames to a selection: the code the job and the service share.

    sample_chunks     decode a chunk of sampled frames, compute features, plan the cascade
    propagate         every sampled frame takes its representative's embedding
    select_video      shots, the selection, each selected frame's shot and clip window

The job runs `sample_chunks` in its decode stage and `select_video` in its finalize task,
with the embedding stage between them; the service runs the same three in one request.
Neither has a second copy of any step, so the same video with the same options gets the
same frames from both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from operators import defaults
from operators.cascade import plan_chunk
from operators.decode import (
    SEEKABLE_CONTAINERS,
    DecodeSpan,
    VideoInfo,
    display_order,
    image_for_model,
    iter_chunks,
    sample_indices,
)
from operators.features import frame_features
from operators.segment import (
    MIN_SHOT_S,
    BoundarySignals,
    ShotSignals,
    detect_cuts,
    detect_shots,
    signal_lag,
    signal_window,
)
from operators.select import Selection, VideoFrames, select_frames


@dataclass(frozen=True)
class SamplingOptions:
    """Which frames of a video are sampled, and which of those the model sees.

    `size` is the model's input size; `cascade_ratio` None embeds every sampled frame (the
    dense job), otherwise one frame per near-duplicate group, at least `min_candidates` per
    video (the distinct frames the selection needs); `with_model` False (the training-free
    features embedder) keeps no pixels at all. `shot_signals` decodes every source frame in
    order for the shot detector (independent of `fps`); without it shots are found on the
    sampled frames.
    """

    fps: float = defaults.FPS
    size: int = defaults.FEATURES_IMAGE_SIZE
    chunk_frames: int = defaults.CHUNK_FRAMES
    shot_signals: bool = True  # every source frame's thumbnail -> the shot detector's signals
    keep_thumbs: bool = False  # also hand the thumbnails on (for TransNetV2)
    max_frames: int | None = None
    cascade_ratio: float | None = defaults.CASCADE_RATIO
    min_candidates: int = 0
    with_model: bool = True
    decode_threads: int = 1


@dataclass(frozen=True)
class SampledChunk:
    """One decoded chunk: sampled frames' indices, times and features; with a model, the
    pixels it must embed (`frames`) and each sampled frame's representative (`group_of`);
    with shot signals, those of the source frames decoded since the previous chunk
    (`signal_index`, `signal_dist`, `signal_wdist`, `signal_ldist`, `signal_change`,
    `signal_residual`; see segment.BoundarySignals) and, with
    `keep_thumbs`, their thumbnails."""

    frame_index: np.ndarray
    timestamps: np.ndarray
    features: np.ndarray
    frames: np.ndarray | None
    group_of: np.ndarray | None
    images: tuple[bytes, ...] | None
    decode_s: float
    features_s: float
    signal_index: np.ndarray | None = None
    signal_dist: np.ndarray | None = None
    signal_wdist: np.ndarray | None = None
    signal_ldist: np.ndarray | None = None
    signal_change: np.ndarray | None = None
    signal_residual: np.ndarray | None = None
    thumb_index: np.ndarray | None = None
    thumbs: np.ndarray | None = None
    transition_probs: np.ndarray | None = None  # TransNetV2's, one per thumbnail (set by its caller)
    # with `keep_thumbs`, a span's first / last chunk: the thumbnails before / after the span
    # (TransNetV2's windows reach past its edges), None elsewhere
    context_before: np.ndarray | None = None
    context_after: np.ndarray | None = None


def shot_detector_for(requested: str) -> str:
    """The shot detector a run uses: `requested`, with "auto" resolved to "features", which
    measured at least as accurate as TransNetV2 on every benchmark set at a small share
    of its cost (benchmarks/RESULTS.md, *Quality*)."""
    return "features" if requested == "auto" else requested


def sampling_for_detector(detector: str) -> dict:
    """The SamplingOptions fields a shot detector needs: the decoder's per-frame signals for
    "features" and "transnetv2" (which also needs the thumbnails), none for "sampled"."""
    return {"shot_signals": detector != "sampled", "keep_thumbs": detector == "transnetv2"}


def with_transition_probs(chunks: list[SampledChunk], detector) -> list[SampledChunk]:
    """A whole (short) video's chunks with TransNetV2's probabilities from `detector` (a
    `transnet.TransNetV2Detector`), for callers that hold the video in one process (the
    service); the job runs its own TransNetStage."""
    from operators.transnet import StreamingPredictor

    stream, probs = StreamingPredictor(detector), []
    for c in chunks:
        probs.append(stream.feed(c.thumbs))
    probs.append(stream.finish())
    flat = np.concatenate(probs)
    cuts = np.cumsum([len(c.thumbs) for c in chunks])[:-1]
    return [replace(c, transition_probs=p, thumbs=None) for c, p in zip(chunks, np.split(flat, cuts), strict=True)]


def cascade_candidates(k: int | str) -> int:
    """The fewest frames per video the cascade may cap its model calls at: k distinct
    candidates for a fixed k (fewer would force duplicate picks), the adaptive budget's
    upper bound for "auto"."""
    return int(k) if k != "auto" else defaults.AUTO_K_MAX


def sampled_count(info: VideoInfo, opts: SamplingOptions) -> int:
    """How many frames of a probed video `opts` samples."""
    return len(sample_indices(info, opts.fps, opts.max_frames))


def expected_chunks(info: VideoInfo, opts: SamplingOptions) -> int:
    """How many chunks the probe says the video has (at least one)."""
    return max(1, -(-sampled_count(info, opts) // opts.chunk_frames))


def plan_spans(info: VideoInfo, opts: SamplingOptions, segment_s: float = defaults.SEGMENT_S) -> list[DecodeSpan]:
    """How a video's decode splits into spans of about `segment_s` seconds (whole chunks
    each) that separate tasks decode at once; one span (the whole video) when it is shorter
    than two segments or `segment_s` is 0. Each span after the first starts decoding early
    enough for the shot signals' windows (and TransNetV2's context) at its edge, and each
    before the last stops where the next one's chunks start (TransNetV2: its context later),
    so that the spans' chunks equal one decode's."""
    idx = sample_indices(info, opts.fps, opts.max_frames)
    whole = [DecodeSpan(0, len(idx))]
    if segment_s <= 0 or info.duration_s < 2 * segment_s or len(idx) < 2 * opts.chunk_frames:
        return whole
    per = max(1, round(segment_s * len(idx) / info.duration_s / opts.chunk_frames)) * opts.chunk_frames
    firsts = list(range(0, len(idx), per))
    if len(idx) - firsts[-1] < per // 2:  # no short last span: it joins the one before
        firsts.pop()
    if len(firsts) < 2:
        return whole
    from operators.transnet import CONTEXT_FRAMES

    window = signal_window(info.fps)
    lead = max(2 * window, CONTEXT_FRAMES if opts.keep_thumbs else 0) if opts.shot_signals else 0
    lag = CONTEXT_FRAMES if opts.keep_thumbs else 0
    ends = [*firsts[1:], len(idx)]
    spans = []
    for first, end in zip(firsts, ends, strict=True):
        if opts.shot_signals:  # every source frame from the one after the last span's last sample
            start = 0 if first == 0 else max(0, int(idx[first - 1]) + 1 - lead)
            stop = None if end == len(idx) else int(idx[end - 1]) + 1 + lag
        else:
            start, stop = int(idx[first]), None if end == len(idx) else int(idx[end - 1]) + 1
        spans.append(DecodeSpan(first, end, start, stop))
    return spans


def seek_order(path: str, info: VideoInfo) -> np.ndarray | None:
    """The timestamps a span's decoder indexes frames by after a seek (`display_order`), or
    None when the video cannot be split: a container without an index to seek in, or
    packets whose timestamps do not name each frame once. A variable frame rate splits as
    a constant one: frames are indexed by their timestamp's rank either way."""
    if os.path.splitext(path)[1].lower() not in SEEKABLE_CONTAINERS:
        return None
    return display_order(path, info.num_frames)


def span_edges(info: VideoInfo, opts: SamplingOptions, span: DecodeSpan | None,
               window: int) -> tuple[int, int | None, int]:
    """A span's own source frames, `own_from` to `own_to` (inclusive; None: to the end),
    whose thumbnails its chunks carry as one whole decode's same chunks do, and the first
    frame whose shot signals it emits (`emit_from`: BoundarySignals emits a frame's once
    `window` frames after it are in)."""
    if span is None or span.first == 0 and span.decode_to is None:
        return 0, None, 0
    idx = sample_indices(info, opts.fps, opts.max_frames)
    own_from = int(idx[span.first - 1]) + 1 if span.first > 0 else 0
    own_to = int(idx[span.end - 1]) if span.end < len(idx) else None
    emit_from = max(0, own_from + 1 - window) if span.first > 0 else 0
    return own_from, own_to, emit_from


def sample_chunks(
    path: str,
    info: VideoInfo,
    opts: SamplingOptions,
    *,
    encode_images: Callable[[np.ndarray], bytes] | None = None,
    image_max_side: int | None = None,
    span: DecodeSpan | None = None,
    order: np.ndarray | None = None,
) -> Iterator[SampledChunk]:
    """Decode a local video chunk by chunk: the sampled frames at the model's size, their
    training-free features and, with a model, the cascade's plan of what it must embed.
    `encode_images` also encodes each sampled frame at output size (see `iter_chunks`).
    With `span` (one of `plan_spans`, and `order` from `seek_order`), only that span's
    chunks, equal to the same chunks of the whole video's decode.
    Raises DecodeError when the video cannot be decoded."""
    n = sampled_count(info, opts)
    chunks = iter_chunks(
        path, opts.fps, opts.size, opts.chunk_frames, info=info, max_frames=opts.max_frames,
        num_threads=opts.decode_threads, encode_images=encode_images, image_max_side=image_max_side,
        thumbs=opts.shot_signals, span=span, seek_order=order,
    )
    window = signal_window(info.fps)
    own_from, own_to, emit_from = span_edges(info, opts, span, window)
    signals: BoundarySignals | None = None
    held: SampledChunk | None = None  # one chunk back: the last one takes the signals' tail
    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        if chunk is None:
            break
        t1 = time.perf_counter()
        feats = frame_features(chunk.frames)
        frames = group_of = None
        if opts.with_model:
            reps, group_of = plan_chunk(feats, n, opts.cascade_ratio, opts.min_candidates)
            frames = chunk.frames if len(reps) == len(feats) else np.ascontiguousarray(chunk.frames[reps])
        sig: tuple = (None,) * 6
        thumb_index, thumbs = chunk.thumb_index, chunk.thumbs
        before = after = None
        if opts.shot_signals:
            # a span's thumbnails before its own (the first chunk) are the signals' context,
            # those after it (the last chunk) TransNetV2's only
            pushed = thumb_index <= own_to if own_to is not None else np.ones(len(thumb_index), bool)
            mine = pushed & (thumb_index >= own_from)
            if opts.keep_thumbs and span is not None:
                from operators.transnet import CONTEXT_FRAMES

                before = thumbs[thumb_index < own_from][-CONTEXT_FRAMES:] if held is None else None
                after = thumbs[~pushed] if own_to is not None and not pushed.all() else None
            if signals is None:
                skip = int(np.sum(thumb_index[pushed] < emit_from))
                signals = BoundarySignals(window, signal_lag(info.fps, window), skip=skip)
            sig = signals.push(frame_features(thumbs[pushed]), thumb_index[pushed], thumbs[pushed])
            thumb_index, thumbs = thumb_index[mine], thumbs[mine]
        t2 = time.perf_counter()
        if held is not None:
            yield held
        held = SampledChunk(chunk.frame_index, chunk.timestamps, feats, frames, group_of, chunk.images,
                            decode_s=t1 - t0, features_s=t2 - t1, signal_index=sig[0], signal_dist=sig[1],
                            signal_wdist=sig[2], signal_ldist=sig[3], signal_change=sig[4],
                            signal_residual=sig[5], thumb_index=thumb_index if opts.keep_thumbs else None,
                            thumbs=thumbs if opts.keep_thumbs else None, context_before=before, context_after=after)
    if own_to is not None:  # a span before the last: the next one has the signals' tail
        signals = None
    if held is not None and signals is not None:
        tail = signals.finish()
        held = replace(held, signal_index=np.concatenate([held.signal_index, tail[0]]),
                       signal_dist=np.concatenate([held.signal_dist, tail[1]]),
                       signal_wdist=np.concatenate([held.signal_wdist, tail[2]]),
                       signal_ldist=np.concatenate([held.signal_ldist, tail[3]]),
                       signal_change=np.concatenate([held.signal_change, tail[4]]),
                       signal_residual=np.concatenate([held.signal_residual, tail[5]]))
    if held is not None:
        yield held


def propagate(embeddings: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Every sampled frame's embedding: its representative's, from the model's (m, D)
    output. Returns float16 (n, D), the precision the job carries and stores."""
    return np.asarray(embeddings, np.float32).astype(np.float16)[np.asarray(group_of, np.int64)]


@dataclass
class SampledVideo:
    """One video after embedding: per sampled frame its source index, time, features and
    embedding (the features themselves without a model); the shot detector's signals over
    every source frame (None: shots are found on the sampled frames). No pixels."""

    frame_index: np.ndarray
    timestamps: np.ndarray
    features: np.ndarray
    embeddings: np.ndarray
    duration_s: float
    fps: float = 0.0
    signals: ShotSignals | None = None

    @classmethod
    def concat(cls, parts: list, embeddings: list[np.ndarray | None], duration_s: float, fps: float) -> SampledVideo:
        """A video from its chunks in order: objects with frame_index, timestamps, features
        and signal_index / signal_dist / signal_wdist (SampledChunk, ChunkRow), optional
        `transition_probs`, and each chunk's embeddings (None: the features themselves)."""
        if not parts:
            z = np.zeros(0)
            return cls(z.astype(np.int64), z, z.reshape(0, 0), z.reshape(0, 0), duration_s, fps)

        def cat(name: str, dtype) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(p, name), dtype) for p in parts])

        feats = cat("features", np.float32)
        emb = feats if embeddings[0] is None else np.concatenate([np.asarray(e, np.float32) for e in embeddings])
        signals = None
        if getattr(parts[0], "signal_index", None) is not None:
            index = cat("signal_index", np.int64)
            probs = None
            if getattr(parts[0], "transition_probs", None) is not None:
                # TransNetV2's probabilities come per thumbnail: put them at their frames
                probs = np.zeros(len(index), np.float32)
                at = np.searchsorted(index, cat("thumb_index", np.int64))
                ok = at < len(index)
                probs[at[ok]] = cat("transition_probs", np.float32)[ok]
            motion = [cat(name, np.float32) if getattr(parts[0], name, None) is not None else None
                      for name in ("signal_change", "signal_residual")]
            signals = ShotSignals(index, cat("signal_dist", np.float32), cat("signal_wdist", np.float32),
                                  cat("signal_ldist", np.float32), probs, *motion)
        return cls(cat("frame_index", np.int64), cat("timestamps", np.float64), feats, emb, duration_s, fps, signals)


@dataclass(frozen=True)
class SelectOptions:
    """How one video's frames are selected: method, budget (int or "auto"), seed, the
    near-duplicate threshold and the method's own parameters."""

    method: str = defaults.METHOD
    k: int | str = defaults.K
    seed: int = 0
    dedup_threshold: float | None = None
    params: dict = field(default_factory=dict)


@dataclass
class VideoSelection:
    """A video's shots and selection, with each selected frame's shot and clip window.

    `clip_of[j]` is the window selected frame j stands for: the method's own clip holding
    it (`source` "method"; None if no clip of a clip method holds it), or, for methods
    without clips, the frame's shot (`source` "shot"). `clips` lists the distinct windows.
    """

    video: SampledVideo
    cuts: np.ndarray  # source frame index of each shot's first frame
    selection: Selection
    shots: list[dict]
    shot_of: np.ndarray
    clips: list[dict]
    clip_of: list[dict | None]
    shot_detector: str = "features"

    def frames(self) -> list[dict]:
        """One dict per selected frame, in time order: frame_index, timestamp_s, score, rank
        (0 = best score), shot_index, cluster_id, clip."""
        sel, v = self.selection, self.video
        order = np.argsort(-sel.scores, kind="stable")
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return [
            {
                "frame_index": int(v.frame_index[i]), "timestamp_s": float(v.timestamps[i]),
                "score": float(sel.scores[j]), "rank": int(rank[j]), "shot_index": int(self.shot_of[j]),
                "cluster_id": int(sel.cluster_ids[j]), "clip": self.clip_of[j],
            }
            for j, i in enumerate(sel.indices)
        ]


def find_cuts(video: SampledVideo, detector: str = "features") -> np.ndarray:
    """Source frame index of each shot's first frame (0 first): from the per-frame signals
    ("features"), TransNetV2's transition probabilities ("transnetv2"), or the sampled
    frames alone ("sampled", and whenever the video carries no signals)."""
    sig = video.signals
    if detector == "transnetv2":
        if sig is None or sig.probs is None:
            raise ValueError("shot detector 'transnetv2' needs the TransNetV2 stage's probabilities")
        from operators.transnet import boundaries

        gap = max(1, round(video.fps * MIN_SHOT_S))  # as the features detector's shortest shot
        return np.unique(np.concatenate([[0], sig.frame_index[boundaries(sig.probs, min_gap_frames=gap)]])).astype(np.int64)
    if detector != "sampled" and sig is not None and len(sig.frame_index):
        return detect_cuts(sig, video.fps)
    starts = detect_shots(video.features, video.timestamps)
    cuts = video.frame_index[starts] if len(starts) else np.zeros(1, np.int64)
    cuts[:1] = 0
    return cuts


def select_video(video: SampledVideo, options: SelectOptions, query: np.ndarray | None = None,
                 shot_detector: str = "features") -> VideoSelection:
    """Shots (`find_cuts` with `shot_detector`) and selection for one video, the one code
    path of the job and the service. Raises ValueError for a bad method, k or parameter
    (TypeError for a parameter of the wrong type)."""
    ts, fi = video.timestamps, video.frame_index
    cuts = find_cuts(video, shot_detector)
    shot_ids = np.searchsorted(cuts, fi, side="right") - 1
    frames = VideoFrames(embeddings=video.embeddings, timestamps=ts, shot_ids=shot_ids,
                         features=video.features, query=query)
    sel = select_frames(options.method, frames, options.k, seed=options.seed,
                        dedup_threshold=options.dedup_threshold, **options.params)
    shots = shot_table(video, cuts)
    shot_of = shot_ids[sel.indices]
    clips, clip_of = _clip_windows(video, sel, shots, shot_of)
    return VideoSelection(video, cuts, sel, shots, shot_of, clips, clip_of, shot_detector)


def shot_table(video: SampledVideo, cuts: np.ndarray) -> list[dict]:
    """Every shot: shot_index, start_s / end_s (at its first source frame; the last ends at
    the video's end), start_frame_index and num_sampled_frames."""
    fps = video.fps or 1.0
    ends = np.append(cuts[1:] / fps, video.duration_s)
    sizes = np.diff(np.searchsorted(video.frame_index, np.append(cuts, np.iinfo(np.int64).max)))
    return [
        {"shot_index": i, "start_s": float(c / fps), "end_s": float(ends[i]),
         "start_frame_index": int(c), "num_sampled_frames": int(sizes[i])}
        for i, c in enumerate(cuts)
    ]


def _clip_windows(video: SampledVideo, sel: Selection, shots: list[dict],
                  shot_of: np.ndarray) -> tuple[list[dict], list[dict | None]]:
    ts, fi = video.timestamps, video.frame_index
    if sel.clips is not None and len(sel.clips):
        clips = [{"start_s": float(ts[a]), "end_s": float(ts[b]), "start_frame_index": int(fi[a]),
                  "end_frame_index": int(fi[b]), "source": "method"} for a, b in sel.clips]
        clip_of = [next((c for c, (a, b) in zip(clips, sel.clips, strict=True) if a <= i <= b), None)
                   for i in sel.indices]
        return clips, clip_of
    clip_of = [{"start_s": shots[s]["start_s"], "end_s": shots[s]["end_s"], "source": "shot"} for s in shot_of]
    unique = {(c["start_s"], c["end_s"]): c for c in clip_of}
    return list(unique.values()), clip_of


def query_vector(
    text: str | None,
    image: bytes | None,
    *,
    encode_text: Callable[[list[str]], np.ndarray] | None,
    encode_frames: Callable[[np.ndarray], np.ndarray],
    image_size: int,
) -> np.ndarray | None:
    """The query embedding of a text (needs `encode_text`) or of still-image bytes (decoded
    as video frames are, then embedded), or None when there is neither. Raises DecodeError
    for unreadable image bytes and ValueError for a text query without a text tower."""
    if text:
        if encode_text is None:
            raise ValueError("text queries need the CLIP embedder; use a query image with 'features'")
        return np.asarray(encode_text([text])[0], np.float32)
    if image is None:
        return None
    return np.asarray(encode_frames(image_for_model(image, image_size))[0], np.float32)
