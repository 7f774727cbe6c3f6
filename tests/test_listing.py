"""The streamed listing, the resume filter, the listing's pacing, the bounded assembler and
the aggregated report: for inputs of millions, none of them holds the corpus in memory.

Pure parts without Ray; the S3 listing against the moto server; one test streams a
listing through real Ray Data to show that work starts before the listing ends and that
the listing never runs further ahead than its window.
"""

from __future__ import annotations

import asyncio
import os

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.tally import RunTally
from operators import sources
from operators.assemble import VideoAssembler
from operators.chunk_row import STATUS_FAILED, ChunkRow
from operators.listing import ListingPacer, ListSources, one_video_per_block
from operators.sources import (
    ResumeFilter,
    done_ids,
    has_inputs,
    iter_sources,
    plan_listing,
    video_id_for,
)
from operators.storage import Storage
from operators.write import shard_name, write_table


def _old_listing(root: str, fs=None, scheme: str = "") -> list[tuple[str, str]]:
    """(uri, id) of every video under `root` as the job listed them before streaming (fsspec
    find, sorted, hidden names and other extensions left out): ids must not change, or a
    re-run after upgrading would redo every video."""
    fs = fs or fsspec.filesystem("file")
    out = []
    for p, info in sorted(fs.find(root, detail=True).items()):
        name = p.rsplit("/", 1)[-1]
        if name.startswith(".") or os.path.splitext(name)[1].lower() not in sources.VIDEO_EXTENSIONS:
            continue
        uri = f"{scheme}://{p}" if scheme else p
        out.append((uri, sources._source(uri, info).video_id))
    return out


@pytest.fixture()
def tree(tmp_path) -> str:
    """Nested folders whose names sort differently as paths and as names ('a-c' < 'a/')."""
    for rel in ("a/b/x.mp4", "a/y.MP4", "a-c/z.mkv", "a.mp4", "b.webm", ".hidden.mp4", "notes.txt",
                "a/.tmp.mp4", "d/e/f/g.avi", "d/readme.md"):
        p = tmp_path / "in" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode())
    return str(tmp_path / "in")


def test_folder_listing_is_sorted_and_keeps_the_ids(tree, monkeypatch):
    storage = Storage()
    old = _old_listing(tree)
    parts = plan_listing(storage, tree)
    got = [(s.source_uri, s.video_id) for s in iter_sources(storage, parts)]
    assert got == old and len(got) == 6
    # a wide folder is listed in several parts; together they list the same, in order
    monkeypatch.setattr(sources, "PART_WEIGHT", 2)
    monkeypatch.setattr(sources, "DIR_WEIGHT", 1)
    parts = plan_listing(storage, tree)
    assert len(parts) > 2
    assert [(s.source_uri, s.video_id) for s in iter_sources(storage, parts)] == old
    # --limit: one part, the first N in order
    limited = plan_listing(storage, tree, limit=2)
    assert len(limited) == 1 and [s.source_uri for s in iter_sources(storage, limited, 2)] == [u for u, _ in old[:2]]


def test_a_folder_without_videos_is_found_empty_without_sorting(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "notes.txt").write_text("x")
    storage = Storage()
    assert not has_inputs(storage, plan_listing(storage, str(tmp_path / "in")))
    (tmp_path / "in" / "sub" / "deep").mkdir()
    (tmp_path / "in" / "sub" / "deep" / "v.mp4").write_bytes(b"x")
    assert has_inputs(storage, plan_listing(storage, str(tmp_path / "in")))


def test_a_text_listing_is_cut_at_line_starts(tmp_path, monkeypatch):
    files = []
    for i in range(60):
        p = tmp_path / f"video-{i:03d}-{'x' * (i % 7)}.mp4"
        p.write_bytes(b"v" * i)
        files.append(str(p))
    lines = ["# a listing", ""]
    for i, f in enumerate(files):
        lines.append(f)
        if i % 10 == 0:
            lines.append(f)  # named twice in a row: listed once by a part
    lines.append(str(tmp_path / "missing.mp4"))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    storage = Storage()
    monkeypatch.setattr(sources, "LINES_PART_BYTES", 200)  # a part every ~3 lines
    parts = plan_listing(storage, str(listing))
    assert len(parts) > 10 and parts[0].start == 0 and parts[-1].end == listing.stat().st_size
    per_part = [[s.source_uri for s in sources.iter_part(storage, p)] for p in parts]
    assert all(len(set(uris)) == len(uris) for uris in per_part)  # no part lists a URI twice
    # a line belongs to the part it starts in: every URI once, in order (a repeat that the
    # cut separates is listed by both parts; the assembler drops the second copy)
    listed = [u for uris in per_part for u in uris]
    repeated = {f for i, f in enumerate(files) if i % 10 == 0}
    assert set(listed[i] for i in range(1, len(listed)) if listed[i] == listed[i - 1]) <= repeated
    assert list(dict.fromkeys(listed)) == [*files, str(tmp_path / "missing.mp4")]
    got = list({s.source_uri: s for s in iter_sources(storage, parts)}.values())
    assert got[-1].error.startswith("file not found") and not any(s.error for s in got[:-1])
    fs = fsspec.filesystem("file")
    assert [s.video_id for s in got[:-1]] == [sources._source(f, fs.info(f)).video_id for f in files]


def test_a_parquet_listing_is_cut_by_row_groups(tmp_path):
    files = []
    for i in range(25):
        p = tmp_path / f"v{i:02d}.mp4"
        p.write_bytes(b"v")
        files.append(str(p))
    listing = tmp_path / "list.parquet"
    pq.write_table(pa.table({"n": list(range(25)), "source_uri": files}), listing, row_group_size=4)
    storage = Storage()
    parts = plan_listing(storage, str(listing))
    assert len(parts) == 7 and {p.column for p in parts} == {"source_uri"}
    assert [s.source_uri for s in iter_sources(storage, parts)] == files
    pq.write_table(pa.table({"name": files}), tmp_path / "bad.parquet")
    with pytest.raises(sources.StorageError, match="no 'uri' column"):
        plan_listing(storage, str(tmp_path / "bad.parquet"))


@pytest.mark.integration
def test_an_s3_prefix_is_listed_page_by_page(s3_endpoint, s3fs_client, monkeypatch):
    bucket = "listing-pages"
    s3fs_client.mkdir(bucket)
    keys = ["in/a.mp4", "in/a/b.mp4", "in/a/c/d.webm", "in/a-b.mkv", "in/b.mp4", "in/b.mp4.txt",
            "in/c/.hidden.mp4", "in/c/e.avi", "in/c/f.mp4", "in/z.mov", "other/x.mp4"]
    for k in keys:
        s3fs_client.pipe(f"{bucket}/{k}", k.encode())
    storage = Storage(endpoint_url=s3_endpoint)
    old = _old_listing(f"{bucket}/in", s3fs_client, "s3")
    monkeypatch.setattr(sources, "S3_PAGE_KEYS", 2)  # every listing takes several requests
    monkeypatch.setattr(sources, "PART_WEIGHT", 2)
    monkeypatch.setattr(sources, "DIR_WEIGHT", 1)
    parts = plan_listing(storage, f"s3://{bucket}/in")
    assert len(parts) > 1
    got = [(s.source_uri, s.video_id) for s in iter_sources(storage, parts)]
    assert got == old and len(got) == 8
    assert has_inputs(storage, parts)
    one = plan_listing(storage, f"s3://{bucket}/in", limit=3)
    assert [s.source_uri for s in iter_sources(storage, one, 3)] == [u for u, _ in old[:3]]


def _videos_row(vid: str, status: str) -> dict:
    return {"video_id": vid, "source_uri": f"/x/{vid}.mp4", "status": status}


def test_committed_ids_are_one_sorted_array(tmp_path):
    storage, out = Storage(), str(tmp_path / "out")
    assert len(done_ids(storage, out)) == 0
    ids = [video_id_for(f"/v/{i}.mp4", i, "1") for i in range(300)]
    for i, vid in enumerate(ids):
        write_table(storage, out, "videos", vid, [_videos_row(vid, "failed" if i % 3 == 0 else "done")])
    (tmp_path / "out" / "videos" / ".tmp-123-abc.parquet").write_bytes(b"half written")
    done = done_ids(storage, out)
    assert done.dtype == np.dtype("S20") and list(done) == sorted(i.encode() for i in ids)
    assert done.nbytes == 20 * len(ids)  # 20 bytes a committed video, not a Python string each
    other = [video_id_for(f"/w/{i}.mp4", i, "1") for i in range(50)]
    mask = ResumeFilter(done).committed(ids[::7] + other + ["short", "x" * 40])
    assert mask.tolist() == [True] * len(ids[::7]) + [False] * (len(other) + 2)
    # --retry-failed: the failed ones count as not done
    retry = ResumeFilter(done_ids(storage, out, retry_failed=True))
    assert retry.committed(ids).tolist() == [i % 3 != 0 for i in range(len(ids))]


def test_committed_ids_include_compacted_shards_with_the_newest_row_winning(tmp_path):
    """After compaction the ids live in videos/part-*.parquet: they are committed too, and
    --retry-failed takes each video's newest row (the per-video file, else the newest shard)."""
    from operators.compact import CompactOptions, compact_output

    storage, out = Storage(), str(tmp_path / "out")
    ids = [video_id_for(f"/v/{i}.mp4", i, "1") for i in range(120)]
    for i, vid in enumerate(ids[:100]):
        write_table(storage, out, "videos", vid, [_videos_row(vid, "failed" if i % 4 == 0 else "done")])
    compact_output(storage, out, options=CompactOptions(shard_rows=30))  # 4 shards
    assert len(list((tmp_path / "out" / "videos").glob("part-*.parquet"))) == 4
    assert not list((tmp_path / "out" / "videos").glob("[0-9a-f]*.parquet"))
    for vid in ids[100:]:
        write_table(storage, out, "videos", vid, [_videos_row(vid, "done")])
    assert list(done_ids(storage, out)) == sorted(i.encode() for i in ids)
    assert sources.committed_video_ids(storage, out) == set(ids)
    # a retried video's newer per-video row wins over its failed row in a shard, and a newer
    # shard's failed row over an older shard's done row
    write_table(storage, out, "videos", ids[0], [_videos_row(ids[0], "done")])
    newer = {ids[1]: "failed", ids[4]: "done"}  # done and failed in the old shards
    write_table(storage, out, "videos", "tmp", [_videos_row(v, st) for v, st in newer.items()])
    os.replace(tmp_path / "out" / "videos" / "tmp.parquet", tmp_path / "out" / "videos" / shard_name(99))
    failed = {v for i, v in enumerate(ids[:100]) if i % 4 == 0} - {ids[0], ids[4]} | {ids[1]}
    retry = done_ids(storage, out, retry_failed=True)
    assert sorted(retry) == sorted(i.encode() for i in set(ids) - failed)


def test_the_pacer_holds_the_listing_to_its_window():
    async def scenario():
        pacer = ListingPacer(window=10, max_wait_s=5)
        await pacer.report(0, listed=8, skipped=0, emitted=8)  # within the window: at once
        waiting = asyncio.ensure_future(pacer.report(1, listed=30, skipped=5, emitted=25))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 33 emitted, none received: held back
        await pacer.progress(20)
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 13 ahead: still
        await pacer.progress(23)
        await asyncio.wait_for(waiting, 1)  # 10 ahead: goes on
        await pacer.report(1, listed=30, skipped=5, emitted=25, done=True)  # a retried part counts once
        return await pacer.totals()

    totals = asyncio.run(scenario())
    assert totals == {"listed": 38, "skipped": 5, "emitted": 33, "parts_done": 1, "peak_ahead": 33}


def test_the_pacer_never_waits_forever_without_progress():
    async def scenario():
        pacer = ListingPacer(window=1, max_wait_s=0.2)
        await asyncio.wait_for(pacer.report(0, 10, 0, 10), 2)

    asyncio.run(scenario())


def test_list_sources_yields_uncommitted_videos_in_blocks_over_the_block_size(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(400):
        (d / f"clip-{i:04d}.mp4").write_bytes(b"v")
    storage = Storage()
    (part,) = plan_listing(storage, str(d), limit=400)  # one part
    every = list(iter_sources(storage, [part]))
    done = sources._sorted_ids(s.video_id for s in every[::4])
    tables = list(ListSources(storage, [done], block_bytes=8000).list_part(part, ResumeFilter(done)))
    assert len(tables) > 3
    assert all(t.nbytes > 8000 for t in tables[:-1])  # each passes Ray Data's block size: sent on at once
    assert all(t.nbytes < 1.5 * 8000 for t in tables)  # ... and is not sliced, which could keep a rest back
    rows = pa.concat_tables(tables).to_pylist()
    assert [r["source_uri"] for r in rows] == [s.source_uri for i, s in enumerate(every) if i % 4]


def _chunk(vid: str, i: int, n: int, frames: int = 8, **kw) -> ChunkRow:
    return ChunkRow(video_id=vid, source_uri=f"/v/{vid}.mp4", chunk_index=i, n_chunks=n, duration_s=10.0,
                    frame_index=np.arange(i * frames, (i + 1) * frames), timestamps=np.arange(frames) + i * frames,
                    features=np.full((frames, 4), i, np.float32),
                    embedding=np.full((frames, 4), i, np.float16), **kw)


def test_the_assembler_drops_rows_it_has_seen():
    a = VideoAssembler()
    assert a.add(_chunk("v", 1, 3)) is None
    assert a.add(_chunk("v", 1, 3)) is None  # a second copy of the same chunk
    assert a.add(_chunk("v", 0, 3)) is None
    p = a.add(_chunk("v", 2, 3))
    assert p is not None and p.video.frame_index.tolist() == list(range(24))
    # a late copy of a finished video starts nothing
    assert a.add(_chunk("v", 0, 3)) is None and a.add(_chunk("v", 2, 3)) is None
    assert a.pending == 0 and a.duplicates == 3 and a.held_bytes == 0
    failed = ChunkRow(video_id="w", source_uri="/v/w.mp4", status=STATUS_FAILED, error="broken")
    assert a.add(failed).error == "broken" and a.add(failed) is None


def test_the_assembler_is_bounded_and_says_what_it_gave_up():
    a = VideoAssembler(max_videos=3)
    for v in "abcd":
        a.add(_chunk(v, 0, 2))
    assert a.pending == 3 and a.given_up == [("a", "/v/a.mp4")]
    a.add(_chunk("b", 1, 2))  # b completes; c, d wait
    assert a.pending == 2
    a.add(_chunk("a", 1, 2))  # a row of the given-up video starts nothing
    assert a.pending == 2 and a.duplicates == 1
    probe = VideoAssembler()
    probe.add(_chunk("x", 0, 2))
    per_chunk = probe.held_bytes
    assert per_chunk > 0
    small = VideoAssembler(max_bytes=int(2.5 * per_chunk))
    for v in "xyz":
        small.add(_chunk(v, 0, 2))
    assert [g[0] for g in small.given_up] == ["x"] and small.held_bytes <= 2.5 * per_chunk
    assert small.peak_bytes <= 3 * per_chunk


def test_the_report_lists_a_bounded_number_of_failures():
    t = RunTally(max_failures=5)
    for i in range(12):
        t.add({"status": "failed", "source_uri": f"/v/{i}", "error": "bad"}, source_node="n1", ran_on="n2")
    t.add({"status": "done", "source_uri": "/v/ok", "error": None, "frames_sampled": 10, "frames_embedded": 4,
           "frames_selected": 3, "duration_s": 5.0, "decode_s": 1.5}, source_node="n1", ran_on="n1")
    class Cfg:
        input, output, method, k, fps = "in", "out", "kmeans", 3, 1.0
    rep = t.report(Cfg, "features-v1", skipped=2, wall=2.0)
    assert rep["videos"] == {"done": 1, "failed": 12, "skipped": 2}
    assert len(rep["failures"]) == 5 and rep["failures_not_listed"] == 7
    assert rep["frames_kept"] == 3 and rep["stage_seconds"]["decode_s"] == 1.5
    assert rep["placement"] == {"decoded_on": {"n1": 13}, "finalized_off_source_node": 12}


@pytest.mark.integration
def test_work_starts_before_the_listing_ends_and_the_listing_stays_within_its_window(tmp_path, ray_local):
    """A real Ray Data pipeline of the job's shape (parts -> ListSources -> one row a block ->
    a task per video): the driver gets its first video while the listing is far from done,
    and the listing is never more than its window (plus one block) ahead of the driver."""
    import ray.data

    src = tmp_path / "one.mp4"
    src.write_bytes(b"v" * 100)
    d = tmp_path / "in"
    d.mkdir()
    n = 240
    for i in range(n):
        os.link(src, d / f"clip-{i:05d}.mp4")  # many names, one file
    storage = Storage()
    parts = plan_listing(storage, str(d), max_parts=4)
    assert len(parts) == 1  # a small folder is one part (one listing task) ...
    parts = [sources.ListingPart("tree", str(d), i, items=tuple(f"clip-{j:05d}.mp4" for j in range(i, n, 2)))
             for i in range(2)]  # ... here two, listed at once
    window, block = 40, 1500  # 12-16 videos a block
    pacer = ray_local.remote(num_cpus=0)(ListingPacer).remote(window=window)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.execution_options.preserve_order
    ctx.target_max_block_size, ctx.execution_options.preserve_order = block, False
    try:
        ds = ray.data.from_items([{"part": p.to_json()} for p in parts])
        ds = ds.map_batches(ListSources(storage, [np.zeros(0, "S20")], pacer, block_bytes=block),
                            batch_size=1, num_cpus=0, concurrency=2)
        ds = one_video_per_block(ds)
        ds = ds.map_batches(lambda b: b, batch_size=1, num_cpus=0.5)
        seen, first_totals = [], None
        for row in ds.iter_rows():
            seen.append(row["source_uri"])
            if first_totals is None:
                first_totals = ray_local.get(pacer.totals.remote())
            if len(seen) % 16 == 0:
                pacer.progress.remote(len(seen))
        totals = ray_local.get(pacer.totals.remote())
    finally:
        ctx.target_max_block_size, ctx.execution_options.preserve_order = saved
    assert sorted(seen) == sorted(str(d / f"clip-{i:05d}.mp4") for i in range(n))
    assert first_totals["parts_done"] == 0 and first_totals["emitted"] < n / 2
    assert totals["listed"] == totals["emitted"] == n and totals["parts_done"] == len(parts)
    # ahead by the window, one block per listing task and the driver's reporting lag at most
    assert totals["peak_ahead"] <= window + 2 * 20 + 16 < n / 2, totals
