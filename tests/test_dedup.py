"""Corpus dedup (--dedup-corpus): the pure search core on arrays, and the job on real videos
plus re-encoded, resized, cropped and trimmed copies of them."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks.dedup import VARIANTS, make_corpus, pair_similarities
from jobs import curate
from jobs import dedup as dedup_cli
from jobs.config import ConfigError, CurateConfig
from operators.dedup import DROPS_SCHEMA, duplicates, keep_order, make_index, range_pairs, resolve, unit_rows
from operators.storage import Storage
from operators.write import read_table

THRESHOLD = 0.95  # copies measured >= 0.98, distinct real videos <= 0.75 (docs/decisions.md)


# --------------------------------------------------------------------------- pure core


def _clustered(n_groups: int, per: int, dim: int = 32, noise: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(n_groups, dim)))
    x = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_groups * per, dim))
    return unit_rows(x), np.repeat(np.arange(n_groups), per)


def test_duplicates_keeps_the_first_of_each_group_flat_and_ivf_agree() -> None:
    x, truth = _clustered(40, 3)
    n = len(x)
    order = np.arange(n)
    flat = duplicates(x, order, order, 0.9)
    ivf = duplicates(x, order, order, 0.9, flat_max=0, batch=17)  # IVF, several batches
    assert set(flat) == set(ivf)
    assert sorted(flat) == sorted(i for i in range(n) if i % 3)  # every member but the first
    assert all(truth[j] == truth[i] and j % 3 == 0 for i, (j, _) in flat.items())
    assert isinstance(make_index(32, n, x, flat_max=0), __import__("faiss").IndexIVFFlat)


def test_same_group_items_are_never_duplicates_of_each_other() -> None:
    x, truth = _clustered(5, 4)
    order = np.arange(len(x))
    assert duplicates(x, order, truth, 0.9) == {}  # every near neighbour is in its own group


def test_range_pairs_threshold_is_inclusive() -> None:
    import faiss

    a = unit_rows(np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], np.float32))
    index = faiss.IndexFlatIP(2)
    index.add(a)
    qi, j, s = range_pairs(index, a[:1], 0.6)
    assert sorted(j.tolist()) == [0, 1] and np.all(s >= 0.6 - 1e-6)


def test_resolve_names_only_kept_items() -> None:
    # chain 0 ~ 1 ~ 2 (2 not similar to 0): 1 goes as a copy of 0, 2 stays (its only
    # earlier neighbour was dropped); 3 ~ 0 and 3 ~ 2 -> the more similar kept one
    got = resolve(np.array([1, 2, 3, 3]), np.array([0, 1, 0, 2]), np.array([0.97, 0.96, 0.95, 0.99]),
                  np.arange(4))
    assert got == {1: (0, pytest.approx(0.97)), 3: (2, pytest.approx(0.99))}


def test_keep_order_prefers_longer_then_larger() -> None:
    vids = [{"video_id": "trim", "duration_s": 9.0, "width": 720, "height": 528, "size_bytes": 9},
            {"video_id": "orig", "duration_s": 11.0, "width": 720, "height": 528, "size_bytes": 5},
            {"video_id": "half", "duration_s": 11.0, "width": 360, "height": 264, "size_bytes": 50}]
    assert keep_order(vids) == ["orig", "half", "trim"]


def test_dedup_corpus_option_is_validated() -> None:
    with pytest.raises(ConfigError, match="dedup-corpus"):
        CurateConfig(input="a", output="b", dedup_corpus=1.5).validate()


# --------------------------------------------------------------------------- the job


@pytest.fixture(scope="module")
def copies_run(tmp_path_factory, shared_videos, ray_local):
    """Two real videos with four copies each, plus two other real videos, curated with the
    features embedder and --dedup-corpus."""
    root = tmp_path_factory.mktemp("dedup")
    truth = make_corpus(root / "in", originals=2, distractors=2)
    out = root / "out"
    argv = [str(root / "in"), str(out), "--embedder", "features", "--fps", "1", "--k", "8",
            "--dedup-corpus", str(THRESHOLD)]
    assert curate.main(argv) == 0
    return truth, out, argv


def _names(out: Path) -> dict[str, str]:
    return {r["video_id"]: Path(r["source_uri"]).name for r in read_table(Storage(), str(out), "videos").to_pylist()}


def test_every_copy_is_dropped_as_a_duplicate_of_its_group_and_no_distinct_video(copies_run) -> None:
    truth, out, _ = copies_run
    assert len(truth) == 2 + 2 * len(VARIANTS) + 2
    drops = pd.concat(pd.read_parquet(f) for f in glob.glob(str(out / "dedup" / "*.parquet")))
    videos = drops[drops.level == "video"]
    group = {n: truth[n] or n for n in truth}
    dropped = [Path(u).name for u in videos.source_uri]
    # each group of an original and its 4 copies keeps exactly one; distractors keep all
    for original in {g for g in truth.values() if g}:
        members = [n for n in truth if group[n] == original]
        assert len([n for n in members if n in dropped]) == len(members) - 1, (original, dropped)
    assert all(truth[n] is not None or n not in dropped or group[n] != n for n in truth)
    distractors = [n for n in truth if truth[n] is None and not any(truth[m] == n for m in truth)]
    assert not set(distractors) & set(dropped)
    for _, d in videos.iterrows():
        assert group[Path(d.source_uri).name] == group[Path(d.duplicate_uri).name]
        assert d.similarity >= THRESHOLD
        assert Path(d.duplicate_uri).name not in dropped  # the one it duplicates stays
    # the trimmed, resized and cropped copies never win over the original (longer, larger)
    for n in truth:
        if truth[n] and n.split("__")[1].startswith(("trim", "resize", "crop")):
            assert n in dropped
    assert pq.read_schema(glob.glob(str(out / "dedup" / "*.parquet"))[0]).names == DROPS_SCHEMA.names


def test_dropped_rows_are_gone_from_what_a_trainer_reads(copies_run) -> None:
    truth, out, _ = copies_run
    drops = pd.concat(pd.read_parquet(f) for f in glob.glob(str(out / "dedup" / "*.parquet")))
    gone = set(drops[drops.level == "video"].video_id)
    manifest = pd.read_parquet(out / "manifest")  # a plain reader, no framesift rule
    assert gone and not gone & set(manifest.video_id)
    assert len(manifest.video_id.unique()) == len(truth) - len(gone)
    rows = drops[drops.level != "video"]
    keyed = set(zip(manifest.video_id, manifest.kind, manifest.timestamp_s, strict=True))
    assert not {(r.video_id, r.kind, r.timestamp_s) for r in rows.itertuples()} & keyed
    html = (out / "report.html").read_text()
    assert f"Near-duplicate drops ({len(drops)})" in html


def test_copies_are_far_closer_than_distinct_videos(copies_run) -> None:
    """THRESHOLD sits in a wide margin: every copy's recorded similarity to the video it
    duplicates is above it, every pair of videos left in the manifest well below it."""
    truth, out, _ = copies_run
    drops = pd.concat(pd.read_parquet(f) for f in glob.glob(str(out / "dedup" / "*.parquet")))
    assert drops[drops.level == "video"].similarity.min() >= THRESHOLD
    same, diff = pair_similarities(str(out), {n: None for n in truth})  # the kept videos only
    assert not same and max(diff) < THRESHOLD - 0.1, max(diff)


def test_second_pass_and_rerun_find_nothing_new(copies_run, capsys) -> None:
    truth, out, argv = copies_run
    before = sorted(glob.glob(str(out / "dedup" / "*.parquet")))
    assert dedup_cli.main([str(out), "--threshold", str(THRESHOLD)]) == 0
    assert "dropped 0 video(s), 0 frame(s), 0 clip(s)" in capsys.readouterr().out
    assert sorted(glob.glob(str(out / "dedup" / "*.parquet"))) == before
    assert dedup_cli.main([str(out), "--threshold", "2"]) == 2
    assert dedup_cli.main([str(out / "missing"), "--threshold", "0.9"]) == 1


# --------------------------------------------------------------------------- tables


def _video_row(vid: str, duration: float) -> dict:
    return {"video_id": vid, "source_uri": f"/v/{vid}.mp4", "status": "done", "duration_s": duration,
            "width": 64, "height": 48, "size_bytes": 100}


def _frames(vid: str, emb: np.ndarray) -> list[dict]:
    return [{"video_id": vid, "source_uri": f"/v/{vid}.mp4", "kind": "frame", "frame_index": i,
             "timestamp_s": float(i), "embedding": e.tolist()} for i, e in enumerate(emb)]


@pytest.mark.parametrize("flat_max", [50_000, 0])  # flat index, then IVF for every level
def test_pass_over_shards_and_stale_copies(tmp_path, flat_max) -> None:
    """A and B are copies (B shorter), C is distinct but shares one frame with A. The rows sit
    in a shard, and B also in a newer per-video file (a retry after compaction): B's rows
    go from both, C's shared frame goes, A stays whole; IVF finds the same."""
    from operators.compact import compact_output
    from operators.dedup import dedup_output
    from operators.write import write_table

    rng = np.random.default_rng(1)
    a = unit_rows(rng.normal(size=(6, 8)))
    b = unit_rows(a + 0.01 * rng.normal(size=a.shape))
    c = unit_rows(rng.normal(size=(6, 8)))
    c[3] = a[2]
    storage, out = Storage(), str(tmp_path)
    for vid, emb, dur in (("A", a, 10.0), ("B", b, 8.0), ("C", c, 10.0)):
        write_table(storage, out, "manifest", vid, _frames(vid, emb), 8)
        write_table(storage, out, "videos", vid, [_video_row(vid, dur)])
    compact_output(storage, out)
    write_table(storage, out, "manifest", "B", _frames("B", b), 8)  # a newer copy of B
    res = dedup_output(storage, out, 0.95, flat_max=flat_max)
    assert res.dropped == {"video": 1, "frame": 1, "clip": 0}
    assert res.index["video"] == ("IndexFlatIP" if flat_max else "IndexIVFFlat")
    drops = pq.read_table(res.drops_uri).to_pylist()
    assert {(d["level"], d["video_id"], d["duplicate_of"], d["timestamp_s"], d["duplicate_timestamp_s"])
            for d in drops} == {("video", "B", "A", None, None), ("frame", "C", "A", 3.0, 2.0)}
    m = pd.read_parquet(tmp_path / "manifest")
    assert sorted(zip(m.video_id, m.timestamp_s, strict=True)) == [
        *(("A", float(i)) for i in range(6)), *(("C", float(i)) for i in range(6) if i != 3)]
    compact_output(storage, out)
    assert read_table(storage, out, "manifest").num_rows == 11
    assert dedup_output(storage, out, 0.95, flat_max=flat_max).drops_uri is None  # nothing left
