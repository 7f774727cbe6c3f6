"""Tables at corpus scale: compaction of per-video files into shards (in a run, by
framesift-compact, killed half-way, on S3), resume and --retry-failed across it, and the
manifest read by pandas, pyarrow.dataset, Ray Data and HF datasets. Real runs of the job on
300 tiny synthetic videos."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import compact as compact_cli
from jobs import curate
from operators.compact import CompactOptions, compact_output
from operators.features import FEATURE_DIM
from operators.sources import committed_video_ids
from operators.storage import Storage, join, write_bytes_atomic
from operators.write import TABLES, list_table, read_files, read_table, shard_name, to_bytes
from tests.conftest import ROOT
from tests.synthetic import shot_frames, write_video

pytestmark = pytest.mark.integration

N_VIDEOS = 300
ARGS = ["--embedder", "features", "--method", "uniform", "--k", "2", "--fps", "4"]
# columns that differ between two runs of the same videos (when, and how long it took)
VOLATILE = {"finished_at", "download_s", "decode_s", "features_s", "embed_s", "select_s", "write_s"}


def tiny_video(path: Path, seed: int) -> Path:
    """A 0.8 s clip of two 'shots' at 64x48: a few kB, decoded in milliseconds."""
    frames = np.concatenate([shot_frames(4, seed, size=(64, 48)), shot_frames(4, seed + 10_000, size=(64, 48))])
    return write_video(path, frames, fps=10)


def corrupt_copy(good: Path, bad: Path) -> None:
    """Same size and mtime as `good` (so the same video id) but an unreadable header."""
    data = bytearray(good.read_bytes())
    data[:64] = b"\0" * 64
    bad.write_bytes(bytes(data))
    st = good.stat()
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))


def rows_of(out: Path | str, table: str, storage: Storage | None = None) -> list[tuple]:
    """A table's rows (as framesift reads it), volatile columns dropped, sorted."""
    t = read_table(storage or Storage(), str(out), table)
    return _canon(t)


def _canon(t: pa.Table) -> list[tuple]:
    """Rows as sortable tuples; image URIs from frames/ on (the same in any copy of OUTPUT)."""
    keep = [c for c in t.column_names if c not in VOLATILE]
    return sorted(tuple(re.sub(r'^"[^"]*/frames/', '"frames/', json.dumps(v, default=str)) for v in r.values())
                  for r in t.select(keep).to_pylist())


def plain_rows(out: Path, table: str) -> list[tuple]:
    """The same, as a plain Parquet reader that knows nothing of framesift sees the folder."""
    return _canon(pq.read_table(out / table))


def n_files(out: Path, table: str) -> int:
    return len(list((out / table).glob("*.parquet")))


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0].startswith("report")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus300")
    for i in range(N_VIDEOS - 2):
        tiny_video(d / f"clip{i:04d}.mp4", seed=i)
    (d / "notes.mp4").write_text("not a video\n" * 20)
    tiny_video(d / "good_later.mp4", seed=777)
    corrupt_copy(d / "good_later.mp4", d / "flaky.mp4")  # fails now; fixed for the retry test
    (d / "good_later.mp4").unlink()
    return d


@pytest.fixture(scope="module")
def uncompacted(corpus, tmp_path_factory, ray_local) -> Path:
    """The reference: the run with compaction off, one file per video per table."""
    out = tmp_path_factory.mktemp("uncompacted") / "out"
    assert curate.main([str(corpus), str(out), *ARGS, "--compact-every", "0"]) == 0
    return out


def test_uncompacted_run_leaves_one_file_per_video(uncompacted):
    assert n_files(uncompacted, "videos") == N_VIDEOS
    assert n_files(uncompacted, "manifest") == n_files(uncompacted, "timeline") == N_VIDEOS - 2
    videos = read_table(Storage(), str(uncompacted), "videos").to_pylist()
    assert sum(r["status"] == "failed" for r in videos) == 2


def test_framesift_compact_gathers_every_table_into_one_shard(uncompacted, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(uncompacted, out)
    assert compact_cli.main([str(out)]) == 0
    assert "videos: 300 -> 1 files" in capsys.readouterr().out
    for table in TABLES:
        assert n_files(out, table) == 1, table  # O(N / 1000) files: here one
        assert rows_of(out, table) == rows_of(uncompacted, table), table
        assert plain_rows(out, table) == rows_of(uncompacted, table), table  # no duplicate for any reader
    assert committed_video_ids(Storage(), str(out)) == committed_video_ids(Storage(), str(uncompacted))
    before = tree(out)
    assert compact_cli.main([str(out)]) == 0  # a second compaction writes nothing
    assert tree(out) == before


def test_compaction_killed_half_way_loses_and_duplicates_nothing(uncompacted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uncompacted, out)
    proc = subprocess.Popen([sys.executable, "-m", "jobs.compact", str(out), "--shard-rows", "40"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list((out / "manifest").glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert n_files(out, "videos") == N_VIDEOS  # killed before it reached videos/: half-way indeed
    for table in TABLES:
        assert rows_of(out, table) == rows_of(uncompacted, table), table
    assert committed_video_ids(Storage(), str(out)) == committed_video_ids(Storage(), str(uncompacted))
    assert compact_cli.main([str(out)]) == 0  # the next compaction repairs the folder
    for table in TABLES:
        assert n_files(out, table) == 1, table
        assert plain_rows(out, table) == rows_of(uncompacted, table), table


def test_stale_copies_left_by_a_crash_are_never_read_and_are_cleaned(uncompacted, tmp_path):
    """The states a crash leaves, made with the compactor's own writes: a shard written and
    none of its files deleted yet; an older shard holding other copies of the same videos."""
    out = tmp_path / "out"
    shutil.copytree(uncompacted, out)
    storage = Storage()
    files = list_table(storage, str(out), "manifest")
    some = sorted(files.videos)[:50]
    copy = pa.concat_tables(read_files(storage, str(out), [files.videos[v] for v in some]))
    for seq in (1, 2):  # two shards, both copies of files that are all still there
        write_bytes_atomic(storage, join(str(out), "manifest", shard_name(seq)), to_bytes(copy))
    assert rows_of(out, "manifest") == rows_of(uncompacted, "manifest")
    compact_output(storage, str(out), options=CompactOptions(shard_rows=250))
    assert rows_of(out, "manifest") == plain_rows(out, "manifest") == rows_of(uncompacted, "manifest")
    assert n_files(out, "manifest") == 3  # 596 rows in shards of at most 250


def test_in_run_compaction_and_resume(corpus, uncompacted, tmp_path, ray_local):
    """Compaction every 20 committed videos during a run of 60, and at its end; the rows
    are those of the uncompacted run; a second run writes nothing."""
    listing = tmp_path / "sixty.txt"
    names = sorted(p.name for p in corpus.glob("*.mp4"))[:60]
    listing.write_text("\n".join(str(corpus / n) for n in names))
    out = tmp_path / "out"
    argv = [str(listing), str(out), *ARGS, "--compact-every", "20"]
    assert curate.main(argv) == 0
    ids = committed_video_ids(Storage(), str(out))
    assert len(ids) == 60
    for table in TABLES:
        assert n_files(out, table) == 1, table
        (shard,) = (out / table).glob("part-*.parquet")
        expect = [r for r in rows_of(uncompacted, table) if json.loads(r[0]) in ids]
        assert plain_rows(out, table) == expect, table
    (shard,) = (out / "videos").glob("part-*.parquet")
    assert int(shard.name.split("-")[1]) >= 2, shard  # earlier shards were written and packed
    before = tree(out)
    assert curate.main(argv) == 0
    assert tree(out) == before
    assert json.loads((out / "report.json").read_text())["videos"] == {"done": 0, "failed": 0, "skipped": 60}


def test_retried_failed_video_replaces_its_compacted_row_once(tmp_path, ray_local):
    corpus = tmp_path / "in"
    corpus.mkdir()
    for i in range(3):
        tiny_video(corpus / f"ok{i}.mp4", seed=50 + i)
    good = tiny_video(tmp_path / "good.mp4", seed=99)
    corrupt_copy(good, corpus / "flaky.mp4")
    out = tmp_path / "out"
    assert curate.main([str(corpus), str(out), *ARGS]) == 0
    (failed,) = [r for r in read_table(Storage(), str(out), "videos").to_pylist() if r["status"] == "failed"]
    assert n_files(out, "videos") == 1
    shutil.copyfile(good, corpus / "flaky.mp4")  # fixed: same size and mtime, so the same id
    st = good.stat()
    os.utime(corpus / "flaky.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert curate.main([str(corpus), str(out), *ARGS, "--retry-failed"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["videos"] == {"done": 1, "failed": 0, "skipped": 3}
    for reader in (lambda: read_table(Storage(), str(out), "videos"), lambda: pq.read_table(out / "videos")):
        rows = [r for r in reader().to_pylist() if r["video_id"] == failed["video_id"]]
        assert [r["status"] for r in rows] == ["done"]
    manifest = pq.read_table(out / "manifest").to_pylist()
    assert sum(r["video_id"] == failed["video_id"] for r in manifest) == 2  # k rows, once
    assert n_files(out, "videos") == n_files(out, "manifest") == 1


def test_compact_an_output_in_s3(uncompacted, s3fs_client, s3_endpoint):
    s3fs_client.mkdir("compact-out")
    storage = Storage(endpoint_url=s3_endpoint)
    some = sorted(p.stem for p in (uncompacted / "manifest").glob("*.parquet"))[:30]
    for table in TABLES:
        for vid in some:
            s3fs_client.put_file(str(uncompacted / table / f"{vid}.parquet"), f"compact-out/run/{table}/{vid}.parquet")
    out = "s3://compact-out/run"
    assert compact_cli.main([out, "--s3-endpoint", s3_endpoint]) == 0
    for table in TABLES:
        names = s3fs_client.ls(f"compact-out/run/{table}")
        assert len(names) == 1 and names[0].rsplit("/", 1)[-1].startswith("part-"), names
        expect = [r for r in rows_of(uncompacted, table) if json.loads(r[0]) in set(some)]
        assert rows_of(out, table, storage) == expect, table
    assert committed_video_ids(storage, out) == set(some)


# ------------------------------------------------------------------ the manifest as a training set


@pytest.fixture(scope="module")
def compacted(uncompacted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compacted") / "out"
    shutil.copytree(uncompacted, out)
    assert compact_cli.main([str(out)]) == 0
    return out


def _expected(compacted: Path) -> tuple[int, np.ndarray]:
    t = read_table(Storage(), str(compacted), "manifest").sort_by("image_uri")
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))
    return t.num_rows, emb


def test_embedding_is_a_fixed_size_list(compacted):
    field = pq.read_schema(next((compacted / "manifest").glob("*.parquet"))).field("embedding")
    assert field.type == pa.list_(pa.float32(), FEATURE_DIM)


def test_manifest_loads_with_pandas_and_pyarrow_dataset(compacted):
    import pandas as pd
    import pyarrow.dataset as pads

    n, emb = _expected(compacted)
    df = pd.read_parquet(compacted / "manifest").sort_values("image_uri")
    assert len(df) == n
    assert np.array_equal(np.stack(df["embedding"].to_numpy()), emb)
    t = pads.dataset(compacted / "manifest", format="parquet").to_table().sort_by("image_uri")
    arr = t.column("embedding").combine_chunks()
    assert arr.type.list_size == FEATURE_DIM
    assert np.array_equal(arr.flatten().to_numpy().reshape(-1, FEATURE_DIM), emb)


def test_manifest_loads_with_ray_data(compacted, ray_local):
    import ray.data

    n, emb = _expected(compacted)
    batch = ray.data.read_parquet(str(compacted / "manifest")).take_batch(n + 1, batch_format="numpy")
    order = np.argsort(batch["image_uri"])
    # Ray Data gives a fixed-size list column as one float32 array per row
    rows = batch["embedding"][order]
    assert len(rows) == n and all(r.dtype == np.float32 and r.shape == (FEATURE_DIM,) for r in rows)
    assert np.array_equal(np.stack(rows), emb)


def test_manifest_loads_with_hf_datasets(compacted, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    n, emb = _expected(compacted)
    ds = datasets.load_dataset("parquet", data_files=str(compacted / "manifest" / "*.parquet"),
                               split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == n
    assert ds.features["embedding"].length == FEATURE_DIM
    rows = ds.sort("image_uri").with_format("numpy")[:]
    assert rows["embedding"].shape == (n, FEATURE_DIM) and rows["embedding"].dtype == np.float32
    assert np.array_equal(rows["embedding"], emb)


def test_compact_and_report_commands_name_a_missing_output(tmp_path, capsys):
    from jobs import report as report_cli

    assert compact_cli.main([str(tmp_path / "nope")]) == 1
    assert report_cli.main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.count("does not exist") == 2
    assert compact_cli.main([str(tmp_path), "--shard-rows", "0"]) == 2
