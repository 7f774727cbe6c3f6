"""A long video split into spans decoded apart (`plan_spans`, `sample_chunks(span=...)`)
gives the same chunks as one decode of the whole video: frames, features, thumbnails,
the shot signals at the spans' edges and TransNetV2's context. Pure: no Ray."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.fault_corpus import write_video as write_timed
from operators.decode import probe_video
from operators.pipeline import SampledVideo, SamplingOptions, find_cuts, plan_spans, sample_chunks, seek_order
from operators.stages import _with_thumb_context
from tests.synthetic import shot_frames, write_video

FPS = 25
SHOTS_S = [2.6, 3.3, 1.7, 4.1, 2.2, 3.0, 2.9, 4.2]  # 24 s, cuts between sampled frames


def write_h264(path: Path, frames: np.ndarray, gop: int = 50) -> Path:
    """H.264 in MP4 with x264's B-frames and a keyframe every `gop` frames."""
    options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "3"}
    return write_video(path, frames, fps=FPS, codec="libx264", options=options)


def shots() -> np.ndarray:
    return np.concatenate([shot_frames(round(s * FPS), 100 + i) for i, s in enumerate(SHOTS_S)])


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    return write_h264(tmp_path_factory.mktemp("spans") / "long.mp4", shots())


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory) -> Path:
    """The same frames at a variable rate: 25 fps with a stretch of 10 fps every 3 s (ms
    timestamps), H.264 with B-frames in MP4."""
    frames = shots()
    gaps = [100 if (i // 25) % 3 == 1 and i % 25 < 10 else 40 for i in range(len(frames))]
    pts = np.concatenate([[0], np.cumsum(gaps[:-1])]).tolist()
    options = {"g": "50", "keyint_min": "50", "sc_threshold": "0", "bf": "3", "preset": "medium"}
    path = tmp_path_factory.mktemp("spans-vfr") / "vfr.mp4"
    return write_timed(path, frames, fps=FPS, options=options, pts=pts, time_base=1000)


@pytest.fixture(params=["constant", "variable"])
def any_rate(request, long_video, vfr_video) -> Path:
    """The long video at a constant and at a variable frame rate."""
    return long_video if request.param == "constant" else vfr_video


OPTS = SamplingOptions(fps=2, size=32, chunk_frames=4, with_model=False, cascade_ratio=None)


def _decode(path: Path, opts: SamplingOptions, segment_s: float) -> tuple[list, list]:
    info = probe_video(str(path))
    whole = list(sample_chunks(str(path), info, opts))
    spans = plan_spans(info, opts, segment_s)
    order = seek_order(str(path), info)
    assert order is not None and len(spans) >= 4
    return whole, [[c for c in sample_chunks(str(path), info, opts, span=s, order=order)] for s in spans]


def test_spans_cover_the_video_in_whole_chunks(long_video):
    info = probe_video(str(long_video))
    spans = plan_spans(info, OPTS, segment_s=4)
    n = 48  # 24 s at 2 fps
    assert spans[0].first == 0 and spans[-1].end == n and spans[-1].decode_to is None
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end == b.first and a.end % OPTS.chunk_frames == 0
        assert b.decode_from < a.decode_to  # each span decodes the frames its edges' signals need
    assert plan_spans(info, OPTS, segment_s=0) == plan_spans(info, OPTS, segment_s=13) == [spans[0].__class__(0, n)]


def test_spans_give_the_whole_decodes_chunks(any_rate):
    whole, per_span = _decode(any_rate, OPTS, segment_s=4)
    parts = [c for span in per_span for c in span]
    assert len(parts) == len(whole)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_array_equal(a.frame_index, b.frame_index)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.features, b.features)  # the same decoded pixels after a seek
        np.testing.assert_array_equal(a.signal_index, b.signal_index)
        for name in ("signal_dist", "signal_wdist", "signal_ldist", "signal_change", "signal_residual"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-6, err_msg=name)
    info = probe_video(str(any_rate))
    videos = [SampledVideo.concat(c, [None] * len(c), info.duration_s, info.fps) for c in (whole, parts)]
    cuts = find_cuts(videos[0])
    assert len(cuts) == len(SHOTS_S)  # every cut, found to the frame
    np.testing.assert_array_equal(cuts, np.cumsum([0, *(round(x * FPS) for x in SHOTS_S[:-1])]))
    np.testing.assert_array_equal(find_cuts(videos[1]), cuts)


def test_spans_give_transnets_thumbnails_and_context(any_rate):
    opts = replace(OPTS, keep_thumbs=True)
    whole, per_span = _decode(any_rate, opts, segment_s=4)
    ref = list(_with_thumb_context(iter(whole), True))
    got = [pair for span in per_span for pair in _with_thumb_context(iter(span), True)]
    assert len(got) == len(ref)
    for (a, ctx_a), (b, ctx_b) in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a.thumb_index, b.thumb_index)
        np.testing.assert_array_equal(a.thumbs, b.thumbs)
        assert ctx_a["thumb_start"] == ctx_b["thumb_start"]
        np.testing.assert_array_equal(ctx_a["thumbs_before"], ctx_b["thumbs_before"])
        np.testing.assert_array_equal(ctx_a["thumbs_after"], ctx_b["thumbs_after"])


def test_only_videos_in_indexed_containers_are_split(long_video, vfr_video, shared_videos):
    assert seek_order(str(long_video), probe_video(str(long_video))) is not None
    info = probe_video(str(vfr_video))
    assert info.frame_times is not None  # the variable rate is seen, and it splits too
    assert seek_order(str(vfr_video), info) is not None
    avi = str(shared_videos / "Megamind.avi")  # no index to seek in
    assert seek_order(avi, probe_video(avi)) is None


@pytest.mark.integration
@pytest.mark.parametrize(("rate", "detector"), [("constant", "features"), ("constant", "transnetv2"),
                                               ("variable", "features")])
def test_the_job_splits_a_long_video_and_writes_what_one_decode_writes(ray_local, long_video, vfr_video,
                                                                       tmp_path, rate, detector):
    """The job with spans of 4 s (six span tasks for the 24 s video, seven for its 28.8 s
    variable-rate twin) against --segment-s 0."""
    from jobs import curate
    from tests.test_cluster import snapshot

    video = long_video if rate == "constant" else vfr_video
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / video.name).symlink_to(video)
    args = ["--embedder", "features", "--fps", "2", "--chunk-frames", "4", "--k", "6",
            "--shot-detector", detector]
    outs = {}
    for seg in ("0", "4"):
        outs[seg] = tmp_path / f"out{seg}"
        assert curate.main([str(inp), str(outs[seg]), *args, "--segment-s", seg]) == 0
    reports = {seg: json.loads((out / "report.json").read_text()) for seg, out in outs.items()}
    assert reports["0"]["split"] == {"videos": 0, "span_tasks": 0}
    assert reports["4"]["split"] == {"videos": 1, "span_tasks": 6 if rate == "constant" else 7}
    one, split = snapshot(outs["0"]), snapshot(outs["4"])
    assert split == one
    shots = [r for (table, _), rows in one["tables"].items() if table == "shots" for r in rows]
    assert len(shots) == len(SHOTS_S)
