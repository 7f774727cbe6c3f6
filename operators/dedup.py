"""Corpus-level near-duplicate removal (--dedup-corpus): a second pass over committed embeddings.

After a run's videos are committed, `dedup_output` streams the manifest (the embeddings of
the selected frames and clips) back, as NeMo Curator's semantic dedup runs over its
embedding Parquet, in two levels:

1. videos: each done video's mean frame embedding (normalised); a video whose mean is at
   least THRESHOLD (cosine) from a video earlier in keep order is dropped with all its rows;
2. rows: the frames (and, separately, the clips) of the remaining videos; a row at least
   THRESHOLD from a row of another, earlier video is dropped.

Keep order (`keep_order`): the longest video first, then the largest picture, then the
largest file, then the earliest committed: of a group of copies the best one stays. Unlike
SemDedup (which drops an item when any earlier item is that similar, so a chain A~B~C
drops B and C), an item is dropped only for an earlier item that stays (`resolve`), so
duplicate_of always names a video or row still in the dataset.

Search is faiss inner product on unit vectors: an exact IndexFlatIP up to `FLAT_MAX` items,
above that an IndexIVFFlat (nlist ~ sqrt(N), trained on a sample) — the same
`range_search` either way. The driver holds the index (N x D float32, as any faiss dedup
does) and small per-row keys, never the Arrow table: files are read one at a time, in
record batches, twice (add, then search).

Drops are recorded in OUTPUT/dedup/<run>.parquet (DROPS_SCHEMA) and the dropped rows are
removed from the manifest files that hold them, each file rewritten atomically
(docs/decisions.md says why rewriting rather than filtering in readers).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.storage import Storage, join, write_bytes_atomic
from operators.write import list_table, normalise, read_table, to_bytes

log = logging.getLogger("framesift")

FLAT_MAX = 50_000  # items searched exactly; above this an IVF index
IVF_TRAIN_PER_LIST = 64  # training vectors per inverted list
BATCH_ROWS = 8192  # rows read / searched at a time

DROPS_SCHEMA = pa.schema(
    [
        ("level", pa.string()),  # video | frame | clip
        ("video_id", pa.string()),  # what was dropped
        ("source_uri", pa.string()),
        ("kind", pa.string()),  # the manifest kind of a dropped row; None for a video
        ("timestamp_s", pa.float64()),  # the dropped row's; None for a video
        ("duplicate_of", pa.string()),  # the video_id it duplicates
        ("duplicate_uri", pa.string()),
        ("duplicate_timestamp_s", pa.float64()),  # the row it duplicates; None for a video
        ("similarity", pa.float32()),  # cosine
        ("threshold", pa.float32()),
    ]
)


class DedupError(ValueError):
    """The dedup pass cannot run on this output (bad threshold, mixed embedding sizes)."""


# --------------------------------------------------------------------------- pure core


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, D) float32 rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), np.float32)


def make_index(dim: int, n: int, train: np.ndarray | None = None, flat_max: int = FLAT_MAX):
    """An empty faiss inner-product index for `n` unit vectors of `dim`: IndexFlatIP when
    n <= flat_max, else IndexIVFFlat with nlist ~ sqrt(n), trained on `train` (a sample
    of the vectors, at least nlist rows) and probing enough lists for near-duplicates."""
    import faiss

    if n <= flat_max:
        return faiss.IndexFlatIP(dim)
    if train is None:
        raise DedupError("an IVF index needs a training sample")
    nlist = max(1, min(int(math.sqrt(n)), len(train) // 39))  # faiss wants >= 39 points per list
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(unit_rows(train))
    index.nprobe = min(nlist, max(8, nlist // 8))
    return index


def range_pairs(index, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, index id, similarity) with similarity >= threshold (faiss
    range_search, which returns sim > radius: the radius is nudged below)."""
    lims, sims, ids = index.range_search(unit_rows(queries), float(np.nextafter(np.float32(threshold), -np.inf)))
    q = np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))
    keep = sims >= threshold
    return q[keep], ids[keep].astype(np.int64), sims[keep]


def earlier_pairs(q_order: np.ndarray, q_group: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
                  order: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of range pairs (query i, id j, sim), those whose j comes earlier in keep order
    (order[j] < q_order[i]) and lies in another group (video)."""
    qi, j, s = pairs
    ok = (order[j] < q_order[qi]) & (group[j] != q_group[qi])
    return qi[ok], j[ok], s[ok]


def resolve(items: np.ndarray, dups: np.ndarray, sims: np.ndarray, order: np.ndarray) -> dict[int, tuple[int, float]]:
    """Greedy in keep order over candidate pairs (item, an earlier similar item, sim): an
    item is dropped when one of its earlier similar items is kept, and is recorded as a
    duplicate of the most similar kept one. So every drop names an item that stays, and of
    each group of near-duplicates the first in keep order stays. {item: (kept item, sim)}."""
    cand: dict[int, list[tuple[int, float]]] = {}
    for a, b, c in zip(items.tolist(), dups.tolist(), sims.tolist(), strict=True):
        cand.setdefault(a, []).append((b, c))
    dropped: dict[int, tuple[int, float]] = {}
    for a in sorted(cand, key=lambda x: order[x]):
        kept = [(b, c) for b, c in cand[a] if b not in dropped]
        if kept:
            dropped[a] = max(kept, key=lambda bc: bc[1])
    return dropped


def duplicates(vectors: np.ndarray, order: np.ndarray, group: np.ndarray, threshold: float,
               flat_max: int = FLAT_MAX, batch: int = BATCH_ROWS) -> dict[int, tuple[int, float]]:
    """In-memory form of the search (videos, and tests): {item: (the most similar earlier
    item of another group, similarity)} for every item with one at >= threshold."""
    vectors = unit_rows(vectors)
    n = len(vectors)
    if n == 0:
        return {}
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(n, min(n, IVF_TRAIN_PER_LIST * max(1, int(math.sqrt(n)))), replace=False)]
    index = make_index(vectors.shape[1], n, sample, flat_max)
    for s in range(0, n, batch):
        index.add(vectors[s : s + batch])
    parts = []
    for s in range(0, n, batch):
        qi, j, sim = earlier_pairs(order[s : s + batch], group[s : s + batch],
                                   range_pairs(index, vectors[s : s + batch], threshold), order, group)
        parts.append((qi + s, j, sim))
    return resolve(*(np.concatenate(x) for x in zip(*parts, strict=True)), order)


def keep_order(videos: list[dict]) -> list[str]:
    """video_ids best first: longest, then most pixels, then largest file, then earliest
    committed, then id (deterministic)."""
    def key(v: dict):
        pixels = (v.get("width") or 0) * (v.get("height") or 0)
        fin = v.get("finished_at")
        return (-(v.get("duration_s") or 0.0), -pixels, -(v.get("size_bytes") or 0),
                fin.timestamp() if fin is not None else math.inf, v["video_id"])
    return [v["video_id"] for v in sorted(videos, key=key)]


# --------------------------------------------------------------------------- streaming I/O


@dataclass
class DedupResult:
    """What a pass dropped: counts per level and the drops file written (or None)."""

    threshold: float
    videos_seen: int = 0
    rows_seen: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: {"video": 0, "frame": 0, "clip": 0})
    index: dict[str, str] = field(default_factory=dict)
    drops_uri: str | None = None
    files_rewritten: int = 0


def manifest_owners(storage: Storage, output: str) -> tuple[list[str], dict[str, int]]:
    """Manifest files (ranked oldest first) and per video_id the index of the one file its
    rows come from (the read rule of operators.write.read_table), reading video_id only."""
    files = list_table(storage, output, "manifest")
    ranked = files.ranked()
    fs, _ = storage.fs_for(output)
    owner: dict[str, tuple[int, int]] = {}
    for i, (p, rank) in enumerate(ranked):
        with fs.open(p, "rb") as f:
            ids = pq.ParquetFile(f).read(columns=["video_id"]).column("video_id")
        for vid in pc.unique(ids).to_pylist():
            if vid not in owner or rank >= owner[vid][1]:
                owner[vid] = (i, rank)
    return [p for p, _ in ranked], {v: i for v, (i, _) in owner.items()}


def _batches(storage: Storage, output: str, paths: list[str], owner: dict[str, int], kind: str,
             videos: set[str]) -> Iterator[pa.RecordBatch]:
    """Record batches of manifest rows of `kind` with an embedding, of `videos`, each
    from the file it is read from (stale copies skipped)."""
    fs, _ = storage.fs_for(output)
    cols = ["video_id", "kind", "timestamp_s", "embedding"]
    for i, p in enumerate(paths):
        with fs.open(p, "rb") as f:
            pf = pq.ParquetFile(f)
            for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
                t = normalise(pa.Table.from_batches([b]))
                vid = t.column("video_id").to_pylist()
                mask = [owner.get(v) == i and v in videos for v in vid]
                mask = pc.and_(pa.array(mask, pa.bool_()), pc.equal(t.column("kind"), kind))
                mask = pc.and_(pc.fill_null(mask, False), pc.is_valid(t.column("embedding")))
                t = t.filter(mask)
                if t.num_rows:
                    yield from t.to_batches()


def _matrix(batch: pa.RecordBatch) -> np.ndarray:
    col = batch.column(batch.schema.get_field_index("embedding"))
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(batch), -1)


def video_means(storage: Storage, output: str, paths: list[str], owner: dict[str, int],
                videos: set[str]) -> dict[str, np.ndarray]:
    """Per video its mean frame embedding (unnormalised sum / count), streamed."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for b in _batches(storage, output, paths, owner, "frame", videos):
        m = _matrix(b)
        for vid, row in zip(b.column(0).to_pylist(), m, strict=True):
            if vid in sums:
                if len(row) != len(sums[vid]):
                    raise DedupError(f"video {vid} has embeddings of different sizes")
                sums[vid] += row
            else:
                sums[vid] = row.astype(np.float64)
            counts[vid] = counts.get(vid, 0) + 1
    return {v: (s / counts[v]).astype(np.float32) for v, s in sums.items()}


def dedup_rows(storage: Storage, output: str, paths: list[str], owner: dict[str, int], kind: str,
               rank: dict[str, int], threshold: float, flat_max: int = FLAT_MAX) -> tuple[list[tuple], int, str]:
    """Near-duplicate rows of `kind` across the videos of `rank` (video_id -> keep order):
    two streamed passes (add in batches, search in batches). Returns the drops as tuples
    (video_id, timestamp_s, dup video_id, dup timestamp_s, sim), the rows seen and the
    index kind."""
    videos = set(rank)
    n, sample, dim = 0, [], None
    want = IVF_TRAIN_PER_LIST * 1024
    for b in _batches(storage, output, paths, owner, kind, videos):
        n += len(b)
        if sum(len(s) for s in sample) < want:
            sample.append(_matrix(b))
    if n == 0:
        return [], 0, "none"
    train = np.concatenate(sample)
    dim = train.shape[1]
    index = make_index(dim, n, train, flat_max)
    vid_of: list[str] = []
    ts = np.empty(n, np.float64)
    order = np.empty(n, np.int64)
    group = np.empty(n, np.int64)
    at = 0
    for b in _batches(storage, output, paths, owner, kind, videos):
        m = _matrix(b)
        if m.shape[1] != dim:
            raise DedupError(f"manifest embeddings have different sizes ({dim} and {m.shape[1]})")
        index.add(unit_rows(m))
        vids = b.column(0).to_pylist()
        t = b.column(2).to_numpy(zero_copy_only=False)
        vid_of.extend(vids)
        ts[at : at + len(b)] = t
        group[at : at + len(b)] = [rank[v] for v in vids]
        at += len(b)
    # keep order of rows: their video's, then time (a row never duplicates its own video's)
    order[np.lexsort((ts, group))] = np.arange(n)
    parts = []
    at = 0
    for b in _batches(storage, output, paths, owner, kind, videos):
        sl = slice(at, at + len(b))
        qi, j, sim = earlier_pairs(order[sl], group[sl], range_pairs(index, _matrix(b), threshold), order, group)
        parts.append((qi + at, j, sim))
        at += len(b)
    found = resolve(*(np.concatenate(x) for x in zip(*parts, strict=True)), order)
    drops = [(vid_of[i], float(ts[i]), vid_of[j], float(ts[j]), float(s)) for i, (j, s) in sorted(found.items())]
    return drops, n, type(index).__name__


def dedup_output(storage: Storage, output: str, threshold: float, flat_max: int = FLAT_MAX) -> DedupResult:
    """The corpus dedup pass over OUTPUT (see the module docstring): finds near-duplicate
    videos, then frames and clips, writes OUTPUT/dedup/<tag>.parquet and removes the dropped
    rows from the manifest. Returns what it did."""
    if not -1.0 <= threshold <= 1.0:
        raise DedupError(f"--dedup-corpus is a cosine similarity in [-1, 1], got {threshold}")
    res = DedupResult(threshold=threshold)
    done = [r for r in read_table(storage, output, "videos").to_pylist() if r["status"] == "done"]
    uri_of = {r["video_id"]: r["source_uri"] for r in done}
    paths, owner = manifest_owners(storage, output)
    means = video_means(storage, output, paths, owner, set(uri_of))
    ordered = [v for v in keep_order(done) if v in means]
    res.videos_seen = len(ordered)
    drops: list[dict] = []
    drop_videos: set[str] = set()
    if ordered:
        vec = np.stack([means[v] for v in ordered])
        pos = np.arange(len(ordered))
        res.index["video"] = "IndexFlatIP" if len(ordered) <= flat_max else "IndexIVFFlat"
        for i, (j, s) in sorted(duplicates(vec, pos, pos, threshold, flat_max).items()):
            a, b = ordered[i], ordered[j]
            drop_videos.add(a)
            drops.append({"level": "video", "video_id": a, "source_uri": uri_of[a], "kind": None,
                          "timestamp_s": None, "duplicate_of": b, "duplicate_uri": uri_of[b],
                          "duplicate_timestamp_s": None, "similarity": s, "threshold": threshold})
    rank = {v: i for i, v in enumerate(ordered) if v not in drop_videos}
    # every done video without frame embeddings still takes part in the clip level
    for v in keep_order(done):
        if v not in rank and v not in drop_videos:
            rank[v] = len(rank) + len(drop_videos)
    drop_rows: dict[str, set[float]] = {"frame": set(), "clip": set()}
    for kind in ("frame", "clip"):
        found, n, kind_index = dedup_rows(storage, output, paths, owner, kind, rank, threshold, flat_max)
        res.rows_seen[kind] = n
        res.index[kind] = kind_index
        for a, t, b, tb, s in found:
            drop_rows[kind].add((a, t))
            drops.append({"level": kind, "video_id": a, "source_uri": uri_of[a], "kind": kind, "timestamp_s": t,
                          "duplicate_of": b, "duplicate_uri": uri_of[b], "duplicate_timestamp_s": tb,
                          "similarity": s, "threshold": threshold})
    for d in drops:
        res.dropped[d["level"]] += 1
    tag = uuid.uuid4().hex[:12]
    if drops:
        res.drops_uri = join(output, "dedup", f"dedup-{tag}.parquet")
        write_bytes_atomic(storage, res.drops_uri, to_bytes(pa.Table.from_pylist(drops, DROPS_SCHEMA)))
    res.files_rewritten = remove_rows(storage, output, paths, drop_videos, drop_rows)
    log.info("dedup-corpus %.3f: %d video(s), %d frame(s), %d clip(s) dropped", threshold,
             res.dropped["video"], res.dropped["frame"], res.dropped["clip"])
    return res


def remove_rows(storage: Storage, output: str, paths: list[str], drop_videos: set[str],
                drop_rows: dict[str, set[tuple[str, float]]]) -> int:
    """Rewrite (atomically, one file at a time) each manifest file holding a dropped row,
    without it: every row of a dropped video, and the dropped (video_id, timestamp_s) rows
    of each kind. Stale copies in older shards are filtered as well, so no reader rule can
    bring a dropped row back. Returns the number of files rewritten."""
    if not drop_videos and not any(drop_rows.values()):
        return 0
    fs, _ = storage.fs_for(output)
    touched = drop_videos | {v for rows in drop_rows.values() for v, _ in rows}
    rewritten = 0
    for p in paths:
        with fs.open(p, "rb") as f:
            ids = pq.ParquetFile(f).read(columns=["video_id"]).column("video_id")
        if not pc.any(pc.is_in(ids, pa.array(sorted(touched), pa.string()))).as_py():
            continue
        with fs.open(p, "rb") as f:
            t = pq.read_table(f)
        vids = t.column("video_id").to_pylist()
        kinds = t.column("kind").to_pylist() if "kind" in t.column_names else ["frame"] * t.num_rows
        tss = t.column("timestamp_s").to_pylist()
        keep = [not (v in drop_videos or (v, s) in drop_rows.get(k or "frame", ())) for v, k, s in
                zip(vids, kinds, tss, strict=True)]
        if all(keep):
            continue
        write_bytes_atomic(storage, join(output, "manifest", p.rsplit("/", 1)[-1]),
                           to_bytes(t.filter(pa.array(keep, pa.bool_()))))
        rewritten += 1
    return rewritten

