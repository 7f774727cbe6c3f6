"""Shots at source-frame precision, independent of --fps: the detector reads every decoded
frame's thumbnail, not the frames sampled for selection."""

from __future__ import annotations

import numpy as np
import pytest

from jobs import curate
from operators.decode import THUMB_SIZE, iter_chunks, probe_video
from operators.features import frame_features
from operators.pipeline import SampledVideo, SamplingOptions, SelectOptions, sample_chunks, select_video
from operators.segment import (
    BoundarySignals,
    ShotSignals,
    boundary_signals,
    detect_cuts,
    signal_lag,
    signal_window,
)
from operators.storage import Storage
from operators.write import read_table
from tests.synthetic import shot_frames, texture, window_view, write_video

FPS = 25


def _shots(path: str, fps: float, chunk_frames: int = 64) -> list[dict]:
    info = probe_video(path)
    chunks = list(sample_chunks(path, info, SamplingOptions(fps=fps, chunk_frames=chunk_frames, with_model=False)))
    video = SampledVideo.concat(chunks, [None] * len(chunks), info.duration_s, info.fps)
    return select_video(video, SelectOptions(method="shots", k=4)).shots


@pytest.fixture(scope="module")
def cut_between_samples(tmp_path_factory) -> str:
    """Two shots cut at 2.48 s (frame 62 of 25 fps): at 1 fps the samples are frames 0, 25,
    50, 75, ..., so no two sampled frames lie on either side of the cut closer than 0.5 s."""
    path = tmp_path_factory.mktemp("cut") / "cut.mp4"
    write_video(path, np.concatenate([shot_frames(62, 1), shot_frames(63, 2)]), fps=FPS)
    return str(path)


def test_a_cut_between_two_sampled_frames_is_found_to_the_frame(cut_between_samples):
    for fps in (0.5, 1.0, 2.0):
        shots = _shots(cut_between_samples, fps)
        assert [s["start_frame_index"] for s in shots] == [0, 62], (fps, shots)
        assert shots[1]["start_s"] == pytest.approx(62 / FPS)


def test_a_flash_is_no_cut(tmp_path):
    frames = shot_frames(100, 3)
    frames[48:50] = 250  # two near-white frames in the middle of one shot
    path = write_video(tmp_path / "flash.mp4", frames, fps=FPS)
    assert [s["start_frame_index"] for s in _shots(str(path), 1.0)] == [0]


def test_shots_do_not_depend_on_chunking_or_fps(cut_between_samples):
    base = _shots(cut_between_samples, 1.0)
    assert _shots(cut_between_samples, 1.0, chunk_frames=1) == base
    assert [s["start_s"] for s in _shots(cut_between_samples, 2.0, chunk_frames=3)] == [s["start_s"] for s in base]


def test_every_source_frame_has_a_thumbnail_once(cut_between_samples):
    info = probe_video(cut_between_samples)
    chunks = list(iter_chunks(cut_between_samples, 1.0, 64, chunk_frames=2, info=info, thumbs=True))
    index = np.concatenate([c.thumb_index for c in chunks])
    assert np.array_equal(index, np.arange(info.num_frames))  # the tail after the last sample too
    assert chunks[0].thumbs.shape[1:] == (THUMB_SIZE[1], THUMB_SIZE[0], 3)


@pytest.mark.parametrize("chunk", [1, 7, 64, 500])
def test_streamed_signals_equal_the_whole_video_at_once(chunk):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 12)).astype(np.float32)
    thumbs = rng.integers(0, 256, size=(300, 27, 48, 3), dtype=np.uint8)
    whole = boundary_signals(feats, 9, 3, thumbs)
    signals, parts = BoundarySignals(9, 3), []
    for i in range(0, len(feats), chunk):
        parts.append(signals.push(feats[i : i + chunk], np.arange(i, min(i + chunk, len(feats))), thumbs[i : i + chunk]))
    parts.append(signals.finish())
    assert np.array_equal(np.concatenate([p[0] for p in parts]), np.arange(300))
    for k, signal in enumerate(whole, start=1):  # dist, wdist, ldist, change, residual
        assert np.allclose(np.concatenate([p[k] for p in parts]), signal, rtol=0, atol=1e-6), k
    dist, wdist, _, change, residual = whole
    assert dist[0] == wdist[0] == change[0] == 0.0 and np.all(dist[1:] > 0) and np.all(change[1:] > 0)
    assert np.all(residual <= change)


def _cuts(frames: np.ndarray, fps: int = FPS) -> list[int]:
    """detect_cuts at its defaults over thumbnails, as the decode task streams them."""
    thumbs = np.clip(frames, 0, 255).astype(np.uint8)
    window = signal_window(fps)
    signals = BoundarySignals(window, signal_lag(fps, window))
    parts = [signals.push(frame_features(thumbs), np.arange(len(thumbs)), thumbs), signals.finish()]
    index, dist, wdist, ldist, change, residual = (np.concatenate([p[i] for p in parts]) for i in range(6))
    return detect_cuts(ShotSignals(index, dist, wdist, ldist, None, change, residual), fps).tolist()


def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pan_s", [0.4, 0.7])
def test_a_whip_pan_is_no_cut(seed, pan_s):
    """One shot of 8 s whose camera whips 90 px (almost two frame widths) across a scene
    in `pan_s` seconds: the colours change as much as at a soft transition, but the
    picture moves, so the motion test leaves no boundary (the rule without it found one)."""
    scene = texture(seed, 144, 27)
    t = np.arange(8 * FPS) / FPS
    x = 2 + 90 * _smooth((t - 3.0) / pan_s)
    grain = np.random.default_rng(seed).normal(0, 2, size=(len(t), 27, 48, 3))
    frames = np.stack([window_view(scene, xi, 48) for xi in x]) + grain
    assert _cuts(frames) == [0]


@pytest.mark.parametrize("seed", range(6))
def test_a_two_second_dissolve_between_grainy_drifting_shots_is_one_boundary(seed):
    """Two shots of different tints, each drifting 0.1 px a frame under heavy grain,
    joined by a 2 s cross-dissolve from 3 s to 5 s: one boundary within 1 s of its middle.
    The grain keeps the frames 0.25 s apart busy, and the drift is partly a global shift:
    the rule before the milder steadiness missed two of the six."""
    t = np.arange(8 * FPS) / FPS
    x = 2 + 0.1 * np.arange(len(t))
    a, b = texture(2 * seed + 2, 144, 27, (230, 120, 40)), texture(2 * seed + 3, 144, 27, (40, 120, 230))
    alpha = np.clip((t - 3.0) / 2.0, 0, 1)[:, None, None, None]
    grain = np.random.default_rng(0).normal(0, 8, size=(len(t), 27, 48, 3))
    frames = np.stack([window_view(a, v, 48) for v in x]) * (1 - alpha) + np.stack(
        [window_view(b, v, 48) for v in x]) * alpha + grain
    cuts = _cuts(frames)
    assert len(cuts) == 2 and abs(cuts[1] / FPS - 4.0) <= 1.0, cuts


@pytest.mark.integration
@pytest.mark.parametrize("name, truth", [
    ("Megamind.avi", [4.13, 6.46, 8.38]),
    ("big_buck_bunny_0_30.webm", [11.80, 15.67, 22.96]),
])
def test_job_at_default_options_finds_the_labelled_cuts(shared_videos, tmp_path, ray_local, name, truth):
    out = tmp_path / "out"
    assert curate.main([str(shared_videos / name), str(out), "--embedder", "features"]) == 0
    starts = sorted(r["start_s"] for r in read_table(Storage(), str(out), "shots").to_pylist())[1:]
    assert len(starts) == len(truth), starts
    assert np.max(np.abs(np.array(starts) - truth)) <= 0.25, starts


def test_in_process_transnetv2_equals_the_whole_video_at_once(cut_between_samples):
    """The service's path: TransNetV2 over a video's chunks, streamed, as on the whole video."""
    from operators.pipeline import with_transition_probs
    from operators.transnet import TransNetV2Detector

    info = probe_video(cut_between_samples)
    opts = SamplingOptions(fps=1.0, chunk_frames=1, with_model=False, keep_thumbs=True)
    chunks = list(sample_chunks(cut_between_samples, info, opts))
    detector = TransNetV2Detector()
    whole = detector.predict(np.concatenate([c.thumbs for c in chunks]))
    streamed = with_transition_probs(chunks, detector)
    assert np.allclose(np.concatenate([c.transition_probs for c in streamed]), whole, atol=1e-5)
    video = SampledVideo.concat(streamed, [None] * len(streamed), info.duration_s, info.fps)
    shots = select_video(video, SelectOptions(method="shots", k=4), shot_detector="transnetv2").shots
    assert [s["start_frame_index"] for s in shots] == [0, 62]


@pytest.mark.integration
def test_job_with_transnetv2_records_it_and_finds_the_cuts(shared_videos, tmp_path, ray_local):
    out = tmp_path / "out"
    argv = [str(shared_videos / "Megamind.avi"), str(out), "--embedder", "features", "--shot-detector", "transnetv2"]
    assert curate.main(argv) == 0
    shots = read_table(Storage(), str(out), "shots").to_pylist()
    assert {s["shot_detector"] for s in shots} == {"transnetv2"}
    assert read_table(Storage(), str(out), "videos").to_pylist()[0]["shot_detector"] == "transnetv2"
    starts = sorted(s["start_s"] for s in shots)[1:]
    assert len(starts) == 3 and np.max(np.abs(np.array(starts) - [4.13, 6.46, 8.38])) <= 0.25, starts


def test_the_jobs_decode_stage_carries_the_motion_signals(tmp_path):
    """A whip pan through the job's path (DecodeStage rows -> ChunkRow -> VideoAssembler):
    the assembled video holds the same motion signals as the in-process path, and no cut."""
    from operators.assemble import VideoAssembler
    from operators.chunk_row import ChunkRow
    from operators.pipeline import find_cuts
    from operators.sources import list_inputs
    from operators.stages import DecodeStage

    scene = np.repeat(np.repeat(texture(5, 144, 27), 4, axis=0), 4, axis=1)  # 576 x 108
    t = np.arange(8 * FPS) / FPS
    x = 8 + 360 * _smooth((t - 3.0) / 0.5)
    frames = np.stack([window_view(scene, xi, 192) for xi in x]).astype(np.uint8)
    (tmp_path / "v").mkdir()
    path = str(write_video(tmp_path / "v" / "pan.mp4", frames, fps=FPS))
    sampling = SamplingOptions(fps=1.0, with_model=False, chunk_frames=3)
    stage, assembler, payloads = DecodeStage(Storage(), sampling), VideoAssembler(), []
    for src in list_inputs(Storage(), str(tmp_path / "v")):
        for out in stage({k: np.array([v], dtype=object) for k, v in src.to_row().items()}):
            payload = assembler.add(ChunkRow.from_row({k: v[0] for k, v in out.items()}))
            payloads += [payload] if payload is not None else []
    (payload,) = payloads
    info = probe_video(path)
    chunks = list(sample_chunks(path, info, sampling))
    local = SampledVideo.concat(chunks, [None] * len(chunks), info.duration_s, info.fps)
    job = payload.video.signals
    assert job.change is not None and np.array_equal(job.change, local.signals.change)
    assert np.array_equal(job.residual, local.signals.residual) and job.change.max() > 0
    assert find_cuts(payload.video).tolist() == [0]
