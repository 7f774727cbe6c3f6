"""A video in object storage is downloaded once: the decode stage's copy serves finalize;
and a short video is decoded once: the images the decode stage kept serve finalize.

Runs the decode stage and finalize as plain functions (no Ray) against the loopback S3
server or local files; the copies and images live in a per-test cache folder.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import zipfile

import numpy as np
import pytest

from operators import source_cache
from operators.assemble import VideoAssembler
from operators.chunk_row import ChunkRow
from operators.finalize import FinalizeSettings, finalize_video
from operators.pipeline import SamplingOptions, SelectOptions
from operators.sources import list_inputs
from operators.stages import DecodeStage
from operators.storage import Storage
from operators.write import encode_image, read_table
from tests.conftest import SAMPLE_VIDEOS


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(source_cache.CACHE_ENV, str(folder))
    monkeypatch.delenv(source_cache.CACHE_GB_ENV, raising=False)
    return folder


@pytest.fixture()
def bucket(s3fs_client):
    name = f"cache-{uuid.uuid4().hex[:8]}"
    s3fs_client.mkdir(name)
    return name


def _decode(storage: Storage, uri_prefix: str, **stage_kwargs) -> tuple[list, list[dict]]:
    """List and decode every video under the prefix; (sources, chunk rows as dicts)."""
    sources = list_inputs(storage, uri_prefix)
    sampling = SamplingOptions(fps=2.0, with_model=False, chunk_frames=stage_kwargs.pop("chunk_frames", 64))
    stage = DecodeStage(storage, sampling, **stage_kwargs)
    rows = []
    for src in sources:
        batch = {k: np.array([v], dtype=object) for k, v in src.to_row().items()}
        for out in stage(batch):
            rows.append({k: v[0] for k, v in out.items()})
    return sources, rows


def _finalize(storage: Storage, rows: list[dict], out: str) -> list[dict]:
    settings = FinalizeSettings(storage=storage, output=out, select=SelectOptions(method="uniform", k=3),
                                embedder="features-v1")
    assembler, done = VideoAssembler(), []
    for row in rows:
        payload = assembler.add(ChunkRow.from_row(row))
        if payload is not None:
            done.append(finalize_video(payload, settings))
    return done


def test_finalize_reads_the_decode_stages_copy_not_the_bucket(s3_endpoint, s3fs_client, bucket, cache, tmp_path):
    storage = Storage(endpoint_url=s3_endpoint)
    s3fs_client.put(str(SAMPLE_VIDEOS / "cityCC0.mpg"), f"{bucket}/v/city.mpg")
    sources, rows = _decode(storage, f"s3://{bucket}/v")
    assert [p.name for p in cache.iterdir()] == [sources[0].video_id + ".mpg"]
    # gone from the bucket: finalize can only succeed from the copy on this node
    s3fs_client.rm(f"{bucket}/v/city.mpg")
    (row,) = _finalize(storage, rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    manifest = read_table(Storage(), str(tmp_path / "out"), "manifest").to_pylist()
    assert len(manifest) == 3 and all(os.path.getsize(m["image_uri"]) > 0 for m in manifest)
    assert list(cache.iterdir()) == []  # the last reader removed it


def test_finalize_downloads_again_when_the_copy_is_gone(s3_endpoint, s3fs_client, bucket, cache, tmp_path):
    storage = Storage(endpoint_url=s3_endpoint)
    s3fs_client.put(str(SAMPLE_VIDEOS / "cityCC0.mpg"), f"{bucket}/v/city.mpg")
    _, rows = _decode(storage, f"s3://{bucket}/v")
    for p in cache.iterdir():  # evicted, or finalize landed on another node
        p.unlink()
    (row,) = _finalize(storage, rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    assert list(cache.iterdir()) == []


def test_a_video_that_fails_leaves_no_copy(s3_endpoint, s3fs_client, bucket, cache, tmp_path):
    storage = Storage(endpoint_url=s3_endpoint)
    s3fs_client.pipe(f"{bucket}/v/broken.mp4", b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    _, rows = _decode(storage, f"s3://{bucket}/v")
    assert [r["status"] for r in rows] == ["failed"]
    assert list(cache.iterdir()) == []
    (row,) = _finalize(storage, rows, str(tmp_path / "out"))
    assert row["status"] == "failed" and row["error"]


def test_local_sources_are_read_in_place(cache):
    path = str(SAMPLE_VIDEOS / "cityCC0.mpg")
    with source_cache.source_file(Storage(), path, "anything", keep=True) as local:
        assert local == path
    assert not cache.exists()


def test_cache_off_downloads_to_a_temporary_file(s3_endpoint, s3fs_client, bucket, cache, monkeypatch):
    monkeypatch.setenv(source_cache.CACHE_GB_ENV, "0")
    s3fs_client.put(str(SAMPLE_VIDEOS / "cityCC0.mpg"), f"{bucket}/v/city.mpg")
    uri = f"s3://{bucket}/v/city.mpg"
    with source_cache.source_file(Storage(endpoint_url=s3_endpoint), uri, "vid", keep=True) as local:
        assert os.path.getsize(local) == s3fs_client.size(f"{bucket}/v/city.mpg")
    assert not os.path.exists(local) and not cache.exists()


def test_eviction_removes_the_oldest_copies_and_stale_ones(cache):
    cache.mkdir()
    now = time.time()
    for name, age in (("old.mp4", 300), ("mid.mp4", 200), ("new.mp4", 100), ("stale.mp4", 2 * 86400)):
        (cache / name).write_bytes(b"x" * 1000)
        os.utime(cache / name, (now - age, now - age))
    removed = source_cache.evict(limit_bytes=2500, incoming=500, now=now)
    # 4000 bytes + 500 incoming must fit in 2500: the stale copy goes whatever the room,
    # then the oldest ones until the rest fits (2000 + 500)
    assert sorted(os.path.basename(p) for p in removed) == ["old.mp4", "stale.mp4"]
    assert sorted(p.name for p in cache.iterdir()) == ["mid.mp4", "new.mp4"]
    assert source_cache.evict(limit_bytes=10_000, now=now) == []
    # a copy claimed by a reader in the last minute stays, even over the limit
    (cache / "claimed.mp4").write_bytes(b"x" * 1000)
    os.utime(cache / "claimed.mp4", (now - 5, now - 5))
    removed = source_cache.evict(limit_bytes=0, now=now)
    assert sorted(os.path.basename(p) for p in removed) == ["mid.mp4", "new.mp4"]
    assert [p.name for p in cache.iterdir()] == ["claimed.mp4"]


KEEP = {"encode_images": encode_image, "carry_frames": 256}


def _kept(cache, video_id: str) -> dict[int, bytes]:
    """The images this node keeps for a video, by source frame index."""
    out = {}
    for path in cache.glob(video_id + ".frames-*.zip"):
        with zipfile.ZipFile(path) as z:
            out.update({int(n): z.read(n) for n in z.namelist()})
    return out


def test_a_short_videos_images_serve_finalize_without_a_second_read(s3_endpoint, s3fs_client, bucket, cache, tmp_path):
    storage = Storage(endpoint_url=s3_endpoint)
    s3fs_client.put(str(SAMPLE_VIDEOS / "cityCC0.mpg"), f"{bucket}/v/city.mpg")
    sources, rows = _decode(storage, f"s3://{bucket}/v", **KEEP)
    vid = sources[0].video_id
    saved = _kept(cache, vid)
    assert sorted(saved) == sorted(int(i) for r in rows for i in r["frame_index"])  # every sampled frame
    # neither the bucket's object nor this node's copy is there: only the images can serve
    s3fs_client.rm(f"{bucket}/v/city.mpg")
    (cache / (vid + ".mpg")).unlink()
    (row,) = _finalize(storage, rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    manifest = read_table(Storage(), str(tmp_path / "out"), "manifest").to_pylist()
    assert len(manifest) == 3
    for m in manifest:  # the kept image of that very frame, written as it was
        with open(m["image_uri"], "rb") as f:
            assert f.read() == saved[m["frame_index"]]
    assert list(cache.iterdir()) == []  # images and copy gone with the last reader


def test_kept_images_are_the_frames_finalize_would_read(cache, tmp_path):
    video = tmp_path / "in" / "city.mpg"
    video.parent.mkdir()
    shutil.copy(SAMPLE_VIDEOS / "cityCC0.mpg", video)
    sources, rows = _decode(Storage(), str(video.parent), chunk_frames=4, **KEEP)
    assert len(rows) > 1  # several chunks, each kept in its own file
    saved = _kept(cache, sources[0].video_id)
    assert len(list(cache.glob("*.zip"))) == len(rows) and len(saved) == sum(len(r["frame_index"]) for r in rows)
    video.unlink()  # a local source gone too: finalize must not need it
    (row,) = _finalize(Storage(), rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    manifest = read_table(Storage(), str(tmp_path / "out"), "manifest").to_pylist()
    assert len(manifest) == 3
    for m in manifest:
        with open(m["image_uri"], "rb") as f:
            assert f.read() == saved[m["frame_index"]]
    assert list(cache.iterdir()) == []


def test_finalize_reads_the_source_when_a_kept_image_is_missing(cache, tmp_path):
    video = tmp_path / "in" / "city.mpg"
    video.parent.mkdir()
    shutil.copy(SAMPLE_VIDEOS / "cityCC0.mpg", video)
    _, rows = _decode(Storage(), str(video.parent), chunk_frames=4, **KEEP)
    files = sorted(cache.glob("*.zip"), key=lambda f: int(f.name.split("-")[-1][:-4]))
    assert len(files) == 4
    for f in files[:-1]:  # evicted for room: the selection spans them, so frames are read again
        f.unlink()
    (row,) = _finalize(Storage(), rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    manifest = read_table(Storage(), str(tmp_path / "out"), "manifest").to_pylist()
    assert len(manifest) == 3 and all(os.path.getsize(m["image_uri"]) > 0 for m in manifest)
    assert list(cache.iterdir()) == []  # the other chunks' images are gone too


def test_videos_over_the_limit_and_a_cache_turned_off_keep_no_images(cache, tmp_path, monkeypatch):
    video = tmp_path / "in" / "city.mpg"
    video.parent.mkdir()
    shutil.copy(SAMPLE_VIDEOS / "cityCC0.mpg", video)
    _, rows = _decode(Storage(), str(video.parent), encode_images=encode_image, carry_frames=5)
    assert sum(len(r["frame_index"]) for r in rows) > 5 and not cache.exists()
    monkeypatch.setenv(source_cache.CACHE_GB_ENV, "0")
    _decode(Storage(), str(video.parent), **KEEP)
    assert not cache.exists()


def test_a_cache_that_cannot_be_written_costs_the_second_read_not_the_video(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")  # the cache path is a file: keeping images fails with OSError
    monkeypatch.setenv(source_cache.CACHE_ENV, str(blocked))
    video = tmp_path / "in" / "city.mpg"
    video.parent.mkdir()
    shutil.copy(SAMPLE_VIDEOS / "cityCC0.mpg", video)
    _, rows = _decode(Storage(), str(video.parent), **KEEP)
    assert rows and all(r["status"] == "ok" for r in rows)
    (row,) = _finalize(Storage(), rows, str(tmp_path / "out"))
    assert row["status"] == "done", row["error"]
    manifest = read_table(Storage(), str(tmp_path / "out"), "manifest").to_pylist()
    assert len(manifest) == 3 and all(os.path.getsize(m["image_uri"]) > 0 for m in manifest)
