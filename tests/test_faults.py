"""Faults, with nothing lost: broken and awkward inputs get the right status and a one-sentence
reason while the run goes on; transient object-storage errors (through a fault-injecting
proxy in front of the loopback S3 server) are retried, a partial download is never decoded,
and a missing or forbidden object is a failed row at once."""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.fault_corpus import DONE, FAILED, MARKER, build_fault_corpus, scene, write_video
from jobs import curate
from operators import source_cache
from operators import storage as storage_mod
from operators.decode import (
    _SequentialReader,
    center_crop,
    iter_chunks,
    model_geometry,
    probe_video,
    read_frames,
)
from operators.storage import RetryPolicy, ShortRead, SourceError, Storage, retrying
from operators.write import read_table
from tests.faultproxy import FaultProxy

JOB_FLAGS = ["--embedder", "features", "--method", "uniform", "--fps", "2", "--k", "4"]


def _upright(img: np.ndarray) -> bool:
    """The corpus' red marker block is in the top-left corner (and only there)."""
    h, w = img.shape[:2]
    corner = img[: max(1, h // 20), : max(1, w // 20)].reshape(-1, 3).mean(0)
    other = img[-max(1, h // 20):, -max(1, w // 20):].reshape(-1, 3).mean(0)
    red = np.array(MARKER, float)
    return bool(np.abs(corner - red).max() < 60 and np.abs(other - red).max() > 60)


# --------------------------------------------------------------------------- the fault corpus


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory, ray_local):
    """The job on the fault corpus, with the changing file replaced after the listing."""
    folder = tmp_path_factory.mktemp("faults")
    cases = build_fault_corpus(folder / "in")
    out = folder / "out"
    cfg = curate.config_from_args([str(folder / "in"), str(out), *JOB_FLAGS])
    listed = curate.preflight(cfg, Storage(), list_now=True)  # listed here, decoded by the run
    for case in cases:
        if case.after_listing:
            case.after_listing()
    report = curate.run(cfg, listed=listed)
    rows = {r["source_uri"]: r for r in read_table(Storage(), str(out), "videos").to_pylist()}
    return cases, rows, report, out


@pytest.mark.integration
def test_every_fault_case_gets_its_status_and_a_one_sentence_reason(fault_run):
    cases, rows, report, _ = fault_run
    table = []
    for case in cases:
        row = rows.get(str(case.path))
        assert row is not None, f"{case.name}: no videos/ row"
        table.append((case.name, row["status"], row["error"]))
        assert row["status"] == case.status, (case.name, row["error"])
        if case.status == FAILED:
            reason = row["error"] or ""
            assert re.search(case.reason, reason, re.IGNORECASE), (case.name, reason)
            assert "\n" not in reason and len(reason) <= 200, (case.name, reason)
            assert not re.search(r"\[\d\d:\d\d:\d\d\]|/github|\.cc:\d+|Traceback", reason), (case.name, reason)
        else:
            assert row["error"] is None and row["frames_selected"] >= 1, (case.name, row)
    assert len(rows) == len(cases)  # nothing lost, nothing extra
    assert report["videos"]["done"] == sum(c.status == DONE for c in cases)
    assert report["videos"]["failed"] == sum(c.status == FAILED for c in cases)
    print("\n" + "\n".join(f"| {n} | {s} | {e or ''} |" for n, s, e in table))


@pytest.mark.integration
def test_done_fault_cases_write_upright_frames_at_their_size(fault_run):
    cases, rows, _, out = fault_run
    manifest = read_table(Storage(), str(out), "manifest").to_pylist()
    for case in cases:
        if case.status != DONE:
            continue
        frames = [r for r in manifest if r["source_uri"] == str(case.path)]
        assert frames, case.name
        for r in frames:
            img = np.asarray(Image.open(r["image_uri"]).convert("RGB"))
            assert (img.shape[1], img.shape[0]) == case.size, (case.name, img.shape)
            assert _upright(img), (case.name, r["image_uri"])
    vfr = next(c for c in cases if c.name == "variable frame rate")
    truth = _true_times(str(vfr.path))
    for r in (r for r in manifest if r["source_uri"] == str(vfr.path)):
        assert abs(truth[r["frame_index"]] - r["timestamp_s"]) < 1e-3, r


@pytest.mark.integration
def test_identical_files_under_two_names_are_two_videos_with_the_same_frames(fault_run):
    cases, rows, _, out = fault_run
    a, b = (c for c in cases if c.name.startswith("identical files"))
    assert rows[str(a.path)]["video_id"] != rows[str(b.path)]["video_id"]
    manifest = read_table(Storage(), str(out), "manifest").to_pylist()
    times = [sorted(r["timestamp_s"] for r in manifest if r["source_uri"] == str(c.path)) for c in (a, b)]
    assert times[0] == times[1] and times[0]


@pytest.mark.integration
def test_a_changed_source_is_processed_under_its_new_id_by_the_next_run(fault_run, tmp_path):
    cases, rows, _, out = fault_run
    changed = next(c for c in cases if c.after_listing)
    assert curate.main([str(changed.path.parent), str(out), *JOB_FLAGS]) == 0
    now = [r for r in read_table(Storage(), str(out), "videos").to_pylist() if r["source_uri"] == str(changed.path)]
    assert sorted(r["status"] for r in now) == [DONE, FAILED]  # the new version, done; the old row kept


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_decodes_upright_in_order_and_seeking(tmp_path, rotation):
    upright = scene(30, 120, 200, seed=rotation)  # portrait, marker top-left
    # what the camera stored: the upright picture turned back (clockwise by `rotation`)
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90, axes=(1, 2)))
    path = str(write_video(tmp_path / f"r{rotation}.mp4", stored, rotation=rotation, options={"g": "5"}))
    info = probe_video(path)
    assert (info.width, info.height) == (120, 200)
    w, h = model_geometry(info, 64)
    for fps in (10.0, 0.5):  # every frame (in order, PyAV) and sparse (decord seeks)
        chunks = list(iter_chunks(path, fps, 64, info=info, encode_images=lambda a: a))
        assert chunks, fps
        for c in chunks:
            for i, frame in zip(c.frame_index, c.frames, strict=True):  # the model's centre crops
                truth = center_crop(np.asarray(Image.fromarray(upright[i]).resize((w, h)))[None], 64)[0]
                error = np.abs(frame.astype(float) - truth).mean()
                assert error < 20 and error < np.abs(frame.astype(float) - truth[::-1, ::-1]).mean(), (fps, i)
            for img in c.images or ():  # full size, kept for finalize
                assert img.shape[:2] == (200, 120) and _upright(img)
    assert _upright(read_frames(path, np.array([3]))[0])


def _true_times(path: str) -> np.ndarray:
    """Every frame's presentation time (s, from the first), by a full PyAV decode."""
    import av

    with av.open(path) as container:
        times = np.array(sorted(float(f.time) for f in container.decode(video=0)))
    return times - times[0]


def test_variable_frame_rate_is_sampled_in_time_and_stamped_with_its_frames_times(tmp_path):
    gaps = [40] * 25 + [200] * 10 + [40] * 25  # ms: 25 fps, 5 fps, 25 fps
    pts = np.concatenate([[0], np.cumsum(gaps[:-1])]).astype(int).tolist()
    path = str(write_video(tmp_path / "vfr.mp4", scene(len(gaps), 96, 64), fps=25, pts=pts, time_base=1000))
    info = probe_video(path)
    chunks = list(iter_chunks(path, 2.0, 32, info=info))
    idx = np.concatenate([c.frame_index for c in chunks])
    stamps = np.concatenate([c.timestamps for c in chunks])
    truth = _true_times(path)
    assert np.abs(stamps - truth[idx]).max() < 1e-3  # each frame's own time, not index / mean fps
    # one frame every half second, in time: no sample farther than a frame from its instant
    instants = np.arange(len(idx)) * 0.5
    assert len(idx) == 8 and np.abs(stamps - instants).max() <= 0.1 + 1e-6
    constant = str(write_video(tmp_path / "cfr.mp4", scene(30, 96, 64), fps=10))
    assert probe_video(constant).frame_times is None


def test_corrupt_stretch_is_skipped_and_the_rest_decodes(tmp_path):
    # as the corpus' case: 6 s, a keyframe every 2 s, 6 packets of the second GOP overwritten
    path = str(write_video(tmp_path / "corrupt.mp4", scene(60, 160, 120, seed=2), options={"g": "20"},
                           damage=slice(24, 30)))
    reader = _SequentialReader(path, 64, 64, 1)
    try:
        frames = reader.read(np.arange(0, 60, 5))
    finally:
        reader.close()
    assert reader.damaged > 0 and len(frames) == 12  # lost frames stood in for by the next


# --------------------------------------------------------------------------- retries


def test_retrying_backs_off_within_bounds_and_stops_at_permanent_errors():
    waits: list[float] = []
    calls = iter([ConnectionResetError("reset"), ShortRead(5, "downloaded 1 of 2 bytes"), "ok"])

    def flaky():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    policy = RetryPolicy(attempts=4, base_s=1.0, max_s=1.5, total_s=60)
    assert retrying(flaky, "x", policy, sleep=waits.append) == "ok"
    assert len(waits) == 2 and 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 1.5
    for permanent in (FileNotFoundError("gone"), PermissionError("no"), SourceError("changed")):
        waits.clear()

        def fail(exc=permanent):
            raise exc

        with pytest.raises(type(permanent)):
            retrying(fail, "x", policy, sleep=waits.append)
        assert waits == []
    with pytest.raises(ConnectionResetError):  # attempts bounded
        retrying(lambda: (_ for _ in ()).throw(ConnectionResetError()), "x", RetryPolicy(attempts=3, base_s=0),
                 sleep=waits.append)
    assert len(waits) == 2


@pytest.fixture()
def bucket(s3fs_client):
    name = f"faults-{uuid.uuid4().hex[:8]}"
    s3fs_client.mkdir(name)
    return name


@pytest.fixture()
def proxy_for(s3_endpoint):
    started: list[FaultProxy] = []

    def start(**kwargs) -> FaultProxy:
        started.append(FaultProxy(s3_endpoint, **kwargs).start())
        return started[-1]

    yield start
    for p in started:
        p.stop()


def test_a_short_transfer_is_retried_and_never_kept(s3fs_client, bucket, proxy_for, tmp_path, monkeypatch):
    monkeypatch.setenv(source_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(storage_mod, "RETRY", RetryPolicy(attempts=3, base_s=0.01))
    import s3fs

    data = os.urandom(200_000)
    # stored without a checksum (as by older clients), so only the byte count can tell
    plain = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3fs_client.client_kwargs["endpoint_url"]},
                              config_kwargs={"request_checksum_calculation": "when_required"},
                              skip_instance_cache=True)
    plain.pipe(f"{bucket}/v.mp4", data)
    uri = f"s3://{bucket}/v.mp4"
    # every body cut short without a Content-Length: the client cannot tell, the size can
    always = proxy_for(share=1.0, kinds=("short",), methods=("GET",))
    with pytest.raises(ShortRead), source_cache.source_file(Storage(endpoint_url=always.url), uri, "v1", keep=True):
        pytest.fail("a short copy was handed out")
    assert not list((tmp_path / "cache").glob("*"))  # no copy, whole or partial
    assert always.counts["short"] >= 3  # retried, then given up
    sometimes = proxy_for(share=0.5, kinds=("short",), seed=3, methods=("GET",))
    before = storage_mod.retries_made
    with source_cache.source_file(Storage(endpoint_url=sometimes.url), uri, "v2", keep=False) as path:
        assert Path(path).read_bytes() == data
    assert storage_mod.retries_made > before


def _upload_corpus(s3fs_client, bucket: str, folder: Path) -> list[str]:
    clips = []
    for i, seconds in enumerate((3.0, 2.0, 4.0, 2.5)):
        path = write_video(folder / f"clip{i}.mp4", scene(int(seconds * 10), 320, 240, seed=20 + i))
        s3fs_client.put(str(path), f"{bucket}/in/clip{i}.mp4")
        clips.append(f"s3://{bucket}/in/clip{i}.mp4")
    for name in ("gone.mp4", "secret.mp4"):  # real videos that the proxy will refuse
        s3fs_client.put(str(folder / "clip0.mp4"), f"{bucket}/in/{name}")
    return clips


def _outputs(endpoint: str, out: str) -> tuple[dict, dict]:
    storage = Storage(endpoint_url=endpoint)
    videos = {r["source_uri"]: (r["status"], r["error"], r["frames_sampled"], r["frames_selected"])
              for r in read_table(storage, out, "videos").to_pylist()}
    frames: dict = {}
    for r in read_table(storage, out, "manifest").to_pylist():
        frames.setdefault(r["source_uri"], []).append((r["frame_index"], r["timestamp_s"], tuple(r["embedding"])))
    return videos, {k: sorted(v) for k, v in frames.items()}


@pytest.mark.integration
def test_job_through_a_faulty_store_loses_nothing(s3_endpoint, s3fs_client, bucket, proxy_for, tmp_path, ray_local):
    """~30% of requests fail (503, resets, slow answers, cut bodies): every video is done with
    the outputs of a run without faults; a 404 and a 403 are failed rows at once."""
    clips = _upload_corpus(s3fs_client, bucket, tmp_path)
    clean_proxy = proxy_for(permanent={"in/gone.mp4": 404, "in/secret.mp4": 403})
    t0 = time.perf_counter()
    assert curate.main([f"s3://{bucket}/in", f"s3://{bucket}/clean", "--s3-endpoint", clean_proxy.url, *JOB_FLAGS]) == 0
    clean_s = time.perf_counter() - t0

    faulty = proxy_for(share=0.3, seed=11, slow_s=0.5, permanent={"in/gone.mp4": 404, "in/secret.mp4": 403})
    t0 = time.perf_counter()
    assert curate.main([f"s3://{bucket}/in", f"s3://{bucket}/faulty", "--s3-endpoint", faulty.url, *JOB_FLAGS]) == 0
    faulty_s = time.perf_counter() - t0

    clean_videos, clean_frames = _outputs(s3_endpoint, f"s3://{bucket}/clean")
    videos, frames = _outputs(s3_endpoint, f"s3://{bucket}/faulty")
    for uri in clips:
        assert videos[uri][0] == DONE, videos[uri]
    assert videos == clean_videos and frames == clean_frames
    assert videos[f"s3://{bucket}/in/gone.mp4"][:2] == (FAILED, f"object not found: s3://{bucket}/in/gone.mp4")
    assert videos[f"s3://{bucket}/in/secret.mp4"][:2] == (FAILED, f"access denied to s3://{bucket}/in/secret.mp4")
    # at once: the refused keys were asked for once each (no retry of a permanent error)
    for key in ("in/gone.mp4", "in/secret.mp4"):
        assert sum(key in path.split("?")[0] for _, path in faulty.requests) == 1, key
    faults = sum(faulty.counts[k] for k in ("503", "reset", "slow", "truncate"))
    share = faults / faulty.counts["requests"]
    assert 0.2 < share < 0.4 and faulty.counts["truncate"] and faulty.counts["reset"] and faulty.counts["503"]
    print(f"\nfaults {dict(faulty.counts)} share {share:.2f}; requests clean {clean_proxy.counts['requests']} "
          f"faulty {faulty.counts['requests']}; wall clean {clean_s:.1f} s faulty {faulty_s:.1f} s")
