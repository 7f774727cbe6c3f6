"""List input videos from a local folder, an object-storage prefix or a listing file, give
each a stable id, and filter out the videos whose outputs are already committed (resume).

Listing streams: nothing here holds a corpus's listing in memory. INPUT is cut into a few
`ListingPart`s on the driver (cheap: the top level of a folder or prefix, byte ranges of a
text listing, row groups of a Parquet one), and `iter_part` lists one part in order, page
by page, in whichever task runs it. The committed ids are one sorted array (`done_ids`,
about 20 bytes a video) that `ResumeFilter` searches, not a set of strings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.parquet as pq

from operators.storage import Storage, StorageError, is_remote, join, read_failure
from operators.write import SHARD_PREFIX, is_shard, read_files, shard_seq

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv .vob".split()
)
LISTING_EXTENSIONS = (".txt", ".lst", ".parquet")
URI_COLUMNS = ("uri", "source_uri", "path", "url")
PROBE_ENTRIES = 10_000  # top-level entries looked at to cut a folder or prefix into parts
MAX_PARTS = 64  # listing parts at most (each is one listing task)
PART_WEIGHT = 256  # top-level files per part ...
DIR_WEIGHT = 64  # ... a top-level folder counting as this many
LINES_PART_BYTES = 1 << 20  # a text listing's byte range per part (~10k URIs)
STAT_BATCH = 256  # URIs of a listing file stat'ed at once (in threads)
S3_PAGE_KEYS = 1000  # keys per ListObjectsV2 request (S3's most)


@dataclass(frozen=True)
class VideoSource:
    """One input: where it is, its stable id, and what we know about it before decoding."""

    video_id: str
    source_uri: str
    size: int
    version: str  # ETag or modification time: changes when the object changes
    error: str = ""  # set when the input cannot even be listed (e.g. missing)

    def to_row(self) -> dict:
        """Plain dict for a Ray Data row."""
        return asdict(self)


def video_id_for(uri: str, size: int, version: str) -> str:
    """Stable id of a video: a hash of its URI, size and version (ETag or mtime).

    The same object always gets the same id, so outputs are keyed by it and a re-run can
    tell which videos are done; a changed object gets a new id and is processed again.
    """
    digest = hashlib.sha1(f"{uri}\x00{size}\x00{version}".encode()).hexdigest()
    return digest[:20]


def _version_of(info: dict) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def changed_since_listing(info: dict, listed_size: int, listed_version: str) -> str | None:
    """The reason a source's current `info` (fsspec's: size, ETag or mtime) shows it is not
    the one listed with `listed_size` bytes and version `listed_version`, or None. The
    video's id names the listed bytes, so a changed source is not read under it: the next
    run lists the new version under a new id."""
    size, version = int(info.get("size") or 0), _version_of(info)
    if size == listed_size and (not listed_version or version == listed_version):
        return None
    what = f"{size} bytes, listed with {listed_size}" if size != listed_size else "same size, new version"
    return f"source changed since it was listed ({what}); the next run processes the new version"


def _uri_of(uri_root: str, path: str) -> str:
    if is_remote(uri_root):
        scheme = uri_root.split("://", 1)[0]
        return f"{scheme}://{path}"
    return path


def _source(uri: str, info: dict) -> VideoSource:
    size = int(info.get("size") or 0)
    version = _version_of(info)
    return VideoSource(video_id_for(uri, size, version), uri, size, version)


def _stat_uris(storage: Storage, uris: list[str], workers: int = 32) -> list[VideoSource]:
    def stat(uri: str) -> VideoSource:
        try:
            fs, path = storage.fs_for(uri)
            return _source(uri, fs.info(path))
        except Exception as exc:  # noqa: BLE001 - a missing input is recorded, not fatal
            return VideoSource(video_id_for(uri, 0, ""), uri, 0, "", read_failure(exc, uri))

    if len(uris) <= 1:
        return [stat(u) for u in uris]
    with ThreadPoolExecutor(max_workers=min(workers, len(uris))) as pool:
        return list(pool.map(stat, uris))


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class ListingPart:
    """One part of INPUT's listing, listed in order by one task.

    kind "tree": the entries `items` (names under `root`, a trailing "/" for folders),
    folders listed recursively; no items means all of `root`. "lines": the URIs of a text
    listing whose line starts at a byte in [start, end). "rowgroups": row groups
    [start, end) of a Parquet listing, column `column`. "single": `root` is one video.
    "sources": already listed; `items` are the sources themselves (`VideoSource` rows as
    JSON, see `listed_parts`).
    """

    kind: str
    root: str
    index: int = 0
    items: tuple[str, ...] = ()
    start: int = 0
    end: int = -1
    column: str = ""
    extensions: tuple[str, ...] | None = field(default=tuple(sorted(VIDEO_EXTENSIONS)))

    def to_json(self) -> str:
        """The part as one JSON string (a Ray Data row cell)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ListingPart:
        """The inverse of `to_json`."""
        d = json.loads(text)
        d["items"] = tuple(d["items"])
        d["extensions"] = None if d["extensions"] is None else tuple(d["extensions"])
        return cls(**d)


def plan_listing(
    storage: Storage,
    input_uri: str,
    *,
    extensions: Iterable[str] | None = VIDEO_EXTENSIONS,
    limit: int | None = None,
    max_parts: int = MAX_PARTS,
) -> list[ListingPart]:
    """Cut INPUT into listing parts without listing it: a folder or prefix by its top-level
    entries (when there are at most PROBE_ENTRIES of them; else one part), a text listing
    by byte ranges, a Parquet listing by row groups, a single video as itself. With
    `limit` everything is one part, so that the first `limit` inputs are always the same.

    Raises StorageError when INPUT does not exist or cannot be read.
    """
    exts = None if extensions is None else tuple(sorted(extensions))
    fs, path = storage.fs_for(input_uri)
    try:
        is_dir = fs.isdir(path)
        is_file = not is_dir and fs.isfile(path)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"INPUT {input_uri!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not is_dir and not is_file:
        raise StorageError(f"INPUT {input_uri!r} does not exist")

    if is_file and input_uri.lower().endswith(".parquet"):
        return _parquet_parts(storage, input_uri, 1 if limit else max_parts, exts)
    if is_file and input_uri.lower().endswith(LISTING_EXTENSIONS):
        size = int(fs.size(path) or 0)
        if limit or size <= LINES_PART_BYTES:
            return [ListingPart("lines", input_uri, 0, start=0, end=-1, extensions=exts)]
        n = min(max(1, size // LINES_PART_BYTES), max_parts * 4)
        bounds = np.linspace(0, size, n + 1).astype(int)
        return [ListingPart("lines", input_uri, i, start=int(a), end=int(b), extensions=exts)
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
    if is_file:
        return [ListingPart("single", input_uri, 0, extensions=exts)]

    top = None if limit else _top_level(storage, input_uri, PROBE_ENTRIES)
    if not top:
        return [ListingPart("tree", input_uri, 0, extensions=exts)]
    # a part per ~PART_WEIGHT top-level files, a folder counting as DIR_WEIGHT of them:
    # a small input is one part (one task), a wide one is listed by several
    weights = np.array([DIR_WEIGHT if t.endswith("/") else 1 for t in top])
    n = int(min(max_parts, max(1, -(-weights.sum() // PART_WEIGHT))))
    cuts = np.searchsorted(np.cumsum(weights), np.linspace(0, weights.sum(), n + 1)[1:-1], side="right")
    groups = np.split(np.array(top, dtype=object), cuts)
    return [ListingPart("tree", input_uri, i, items=tuple(str(x) for x in g), extensions=exts)
            for i, g in enumerate(g for g in groups if len(g))]


def _parquet_parts(storage: Storage, uri: str, max_parts: int, exts) -> list[ListingPart]:
    fs, path = storage.fs_for(uri)
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
        names = meta.schema.to_arrow_schema().names
    column = next((c for c in URI_COLUMNS if c in names), None)
    if column is None:
        raise StorageError(f"listing {uri!r} has no 'uri' column (columns: {', '.join(names)})")
    groups = meta.num_row_groups
    if groups == 0:
        return [ListingPart("rowgroups", uri, 0, start=0, end=0, column=column, extensions=exts)]
    bounds = np.linspace(0, groups, min(groups, max_parts) + 1).astype(int)
    return [ListingPart("rowgroups", uri, i, start=int(a), end=int(b), column=column, extensions=exts)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if b > a]


def _entry_key(name: str, is_dir: bool) -> str:
    """Sort key of a folder entry such that listing folders depth first in this order gives
    the full paths in lexicographic order (as object stores list keys)."""
    return name + "/" if is_dir else name


def _top_level(storage: Storage, root: str, most: int) -> list[str] | None:
    """The names directly under `root` in listing order (folders with a trailing "/"), or
    None when there are more than `most` (or the store cannot list by delimiter)."""
    fs, path = storage.fs_for(root)
    if not is_remote(root):
        names = []
        with os.scandir(path) as it:
            for entry in it:
                names.append(_entry_key(entry.name, entry.is_dir()))
                if len(names) > most:
                    return None
        return sorted(names)
    if not root.startswith("s3://"):
        return None
    bucket, prefix = _bucket_prefix(path)
    names = []
    for page in _s3_pages(fs, bucket, prefix, delimiter="/"):
        names += [c["Prefix"][len(prefix):] for c in page.get("CommonPrefixes", [])]
        names += [c["Key"][len(prefix):] for c in page.get("Contents", [])]
        if len(names) > most:
            return None
    return sorted(n for n in names if n)


def _bucket_prefix(path: str) -> tuple[str, str]:
    bucket, _, key = path.partition("/")
    return bucket, (key.rstrip("/") + "/") if key else ""


def _s3_pages(fs, bucket: str, prefix: str, delimiter: str = "") -> Iterator[dict]:
    """ListObjectsV2 pages (1000 keys each) of a prefix, one request at a time."""
    token = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": S3_PAGE_KEYS}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        page = fs.call_s3("list_objects_v2", **kwargs)
        yield page
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


# --------------------------------------------------------------------------- listing one part


def _wanted(name: str, extensions) -> bool:
    base = name.rsplit("/", 1)[-1]
    if not base or base.startswith("."):
        return False
    return extensions is None or os.path.splitext(base)[1].lower() in extensions


def _walk_local(path: str, extensions) -> Iterator[VideoSource]:
    """Files under a local folder, depth first in lexicographic order of their paths."""
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: _entry_key(e.name, e.is_dir()))
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in entries:
        if e.is_dir():
            yield from _walk_local(e.path, extensions)
        elif _wanted(e.name, extensions) and e.is_file():
            st = e.stat()
            yield _source(e.path, {"size": st.st_size, "mtime": st.st_mtime})


def _tree(storage: Storage, part: ListingPart) -> Iterator[VideoSource]:
    fs, path = storage.fs_for(part.root)
    exts = None if part.extensions is None else frozenset(part.extensions)
    if not is_remote(part.root):
        if not part.items:
            yield from _walk_local(path, exts)
            return
        for item in part.items:
            full = os.path.join(path, item.rstrip("/"))
            if item.endswith("/"):
                yield from _walk_local(full, exts)
            elif _wanted(item, exts) and os.path.isfile(full):
                st = os.stat(full)
                yield _source(full, {"size": st.st_size, "mtime": st.st_mtime})
        return
    if part.root.startswith("s3://"):
        bucket, prefix = _bucket_prefix(path)
        for item in part.items or ("",):
            for page in _s3_pages(fs, bucket, prefix + item):
                for c in page.get("Contents", []):
                    key = c["Key"]
                    if key.endswith("/") or not _wanted(key, exts):
                        continue
                    if item and not item.endswith("/") and key != prefix + item:
                        continue  # a top-level file's name is also the prefix of others
                    yield _source(f"s3://{bucket}/{key}", {"ETag": c.get("ETag"), "size": c.get("Size")})
        return
    # other object stores: fsspec's own recursive listing (held by this task only)
    roots = [path.rstrip("/") + "/" + i.rstrip("/") for i in part.items] or [path]
    for r in roots:
        found = fs.find(r, detail=True) if fs.isdir(r) else {r: fs.info(r)}
        for p, info in sorted(found.items()):
            if info.get("type") != "directory" and _wanted(p, exts):
                yield _source(_uri_of(part.root, p), info)


def _lines(storage: Storage, part: ListingPart) -> Iterator[str]:
    """The URIs of a text listing whose lines start in the part's byte range (a line that
    straddles a boundary belongs to the part it starts in); blank lines and '#' comments
    skipped."""
    fs, path = storage.fs_for(part.root)
    with fs.open(path, "rb", block_size=1 << 20) as f:
        if part.start > 0:
            f.seek(part.start - 1)
            f.readline()  # the rest of the line that started in the previous part
        pos = f.tell()
        while part.end < 0 or pos < part.end:
            line = f.readline()
            if not line:
                return
            pos += len(line)
            text = line.decode("utf-8").strip()
            if text and not text.startswith("#"):
                yield text


def _rowgroup_uris(storage: Storage, part: ListingPart) -> Iterator[str]:
    fs, path = storage.fs_for(part.root)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        for g in range(part.start, part.end):
            for u in pf.read_row_group(g, columns=[part.column]).column(0).to_pylist():
                if u:
                    yield str(u)


def _stat_stream(storage: Storage, uris: Iterable[str]) -> Iterator[VideoSource]:
    """Stat listed URIs in batches of STAT_BATCH (in threads), in order; a URI seen before
    in this part is left out."""
    seen: set[str] = set()
    batch: list[str] = []
    for u in uris:
        if u in seen:
            continue
        seen.add(u)
        batch.append(u)
        if len(batch) >= STAT_BATCH:
            yield from _stat_uris(storage, batch)
            batch = []
    yield from _stat_uris(storage, batch)


def iter_part(storage: Storage, part: ListingPart) -> Iterator[VideoSource]:
    """The sources of one listing part, streamed in order (lexicographic for folders and
    prefixes, file order for listing files)."""
    if part.kind == "single":
        fs, path = storage.fs_for(part.root)
        yield _source(part.root, fs.info(path))
    elif part.kind == "tree":
        yield from _tree(storage, part)
    elif part.kind == "lines":
        yield from _stat_stream(storage, _lines(storage, part))
    elif part.kind == "rowgroups":
        yield from _stat_stream(storage, _rowgroup_uris(storage, part))
    elif part.kind == "sources":
        for item in part.items:
            yield VideoSource(**json.loads(item))
    else:
        raise ValueError(f"unknown listing part kind {part.kind!r}")


def iter_sources(storage: Storage, parts: Iterable[ListingPart], limit: int | None = None) -> Iterator[VideoSource]:
    """The sources of all `parts` in order, at most `limit`."""
    n = 0
    for part in parts:
        for src in iter_part(storage, part):
            if limit is not None and n >= limit:
                return
            n += 1
            yield src


def listed_parts(storage: Storage, parts: list[ListingPart], limit: int | None = None,
                 per_part: int = 10_000) -> list[ListingPart]:
    """List `parts` now (at most `limit` sources) into "sources" parts of `per_part` sources
    each, which the job then takes as listed: for small inputs whose listing must be fixed
    before the run (a test that changes a source between listing and decoding)."""
    sources = [json.dumps(s.to_row()) for s in iter_sources(storage, parts, limit)]
    root = parts[0].root if parts else ""
    return [ListingPart("sources", root, i, items=tuple(sources[a: a + per_part]))
            for i, a in enumerate(range(0, len(sources), per_part))] or [ListingPart("sources", root, 0)]


def read_listing(storage: Storage, uri: str) -> list[str]:
    """URIs named in a listing file: one per line (.txt / .lst; blank lines and '#' comments
    ignored) or a Parquet file with a `uri` (or `source_uri`, `path`) column."""
    fs, path = storage.fs_for(uri)
    data = fs.cat_file(path)
    if uri.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        for col in URI_COLUMNS:
            if col in table.column_names:
                return [str(u) for u in table.column(col).to_pylist() if u]
        raise StorageError(
            f"listing {uri!r} has no 'uri' column (columns: {', '.join(table.column_names)})"
        )
    lines = [ln.strip() for ln in data.decode("utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def list_inputs(
    storage: Storage,
    input_uri: str,
    *,
    extensions: frozenset[str] | None = VIDEO_EXTENSIONS,
    limit: int | None = None,
) -> list[VideoSource]:
    """Every video named by INPUT as one list (for small inputs: tests, benchmarks, the
    service); the job streams `iter_part` instead. A folder or prefix (recursive; files
    whose extension is in `extensions`, all non-hidden files when None) in lexicographic
    order, a single video, or a listing file (.txt / .parquet) in its order.

    Raises StorageError when INPUT does not exist or cannot be read.
    """
    parts = plan_listing(storage, input_uri, extensions=extensions, limit=limit)
    return list(iter_sources(storage, parts, limit))


# --------------------------------------------------------------------------- resume


def iter_committed_names(storage: Storage, output_uri: str) -> Iterator[str]:
    """Base names of the entries of OUTPUT/videos, streamed (a page at a time on S3)."""
    uri = join(output_uri, "videos")
    fs, path = storage.fs_for(uri)
    if not is_remote(uri):
        try:
            with os.scandir(path) as it:
                for e in it:
                    yield e.name
        except FileNotFoundError:
            return
        return
    if uri.startswith("s3://"):
        bucket, prefix = _bucket_prefix(path)
        try:
            for page in _s3_pages(fs, bucket, prefix):
                for c in page.get("Contents", []):
                    yield c["Key"].rsplit("/", 1)[-1]
        except FileNotFoundError:
            return
        return
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return
    for e in entries:
        yield e.rstrip("/").rsplit("/", 1)[-1]


def _sorted_ids(ids: Iterable[str], chunk: int = 1 << 16) -> np.ndarray:
    """Unique ids as one sorted fixed-width bytes array, built a chunk at a time."""
    parts, buf = [], []
    for i in ids:
        buf.append(i.encode())
        if len(buf) >= chunk:
            parts.append(np.array(buf))
            buf = []
    if buf:
        parts.append(np.array(buf))
    if not parts:
        return np.zeros(0, "S20")
    width = max(p.dtype.itemsize for p in parts)
    return np.unique(np.concatenate([p.astype(f"S{width}") for p in parts]))


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted union of two sorted id arrays (of any widths)."""
    width = max(a.dtype.itemsize, b.dtype.itemsize, 1)
    return np.union1d(a.astype(f"S{width}"), b.astype(f"S{width}"))


def _contains(ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `query` (bytes) are in the sorted array `ids`."""
    if not len(ids) or not len(query):
        return np.zeros(len(query), bool)
    width = max(ids.dtype.itemsize, query.dtype.itemsize)
    ids, query = ids.astype(f"S{width}"), query.astype(f"S{width}")
    pos = np.searchsorted(ids, query).clip(0, len(ids) - 1)
    return ids[pos] == query


def done_ids(storage: Storage, output_uri: str, retry_failed: bool = False) -> np.ndarray:
    """The ids of the videos committed under OUTPUT as a sorted bytes array (20 bytes a
    video): those of the per-video files of videos/ (their names, no read) and of its
    compacted shards (their video_id column, a shard at a time). With `retry_failed`,
    without those whose newest row (`operators.write.read_table`'s rule: the per-video
    file, else the highest-numbered shard) says failed."""
    shards: list[str] = []

    def per_video() -> Iterator[str]:
        for n in iter_committed_names(storage, output_uri):
            if not n.endswith(".parquet") or n.startswith((".", "_")):
                continue
            if is_shard(n):
                shards.append(n)
            elif not n.startswith(SHARD_PREFIX):
                yield n[: -len(".parquet")]

    own = _sorted_ids(per_video())
    failed = _sorted_ids(_failed_per_video(storage, output_uri)) if retry_failed and len(own) else own[:0]
    folder = storage.fs_for(join(output_uri, "videos"))[1].rstrip("/")
    ids = own
    # newest shard first: a video's row there hides its stale copies in older shards
    for name in sorted(shards, key=lambda n: (shard_seq(n), n), reverse=True):
        cols = ["video_id", "status"] if retry_failed else ["video_id"]
        (table,) = read_files(storage, output_uri, [f"{folder}/{name}"], cols)
        if not table.num_rows:
            continue
        vids = np.array([v.encode() for v in table.column("video_id").to_pylist()])
        if retry_failed and "status" in table.column_names:
            status = np.array(table.column("status").to_pylist(), dtype=object)
            newest = ~_contains(ids, vids)
            failed = _union(failed, np.unique(vids[newest & (status == "failed")]))
        ids = _union(ids, np.unique(vids))
    if len(failed):
        ids = np.setdiff1d(ids, failed.astype(ids.dtype), assume_unique=True)
    return ids


def _failed_per_video(storage: Storage, output_uri: str) -> Iterator[str]:
    """Ids of the videos whose per-video file in videos/ says failed (shards left out)."""
    import pyarrow.dataset as pads

    uri = join(output_uri, "videos")
    fs, path = storage.fs_for(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=True,
                           ignore_prefixes=[".", "_", SHARD_PREFIX])
    for batch in dataset.to_batches(columns=["video_id", "status"]):
        d = batch.to_pydict()
        yield from (v for v, s in zip(d["video_id"], d["status"], strict=True) if s == "failed")


def committed_video_ids(storage: Storage, output_uri: str) -> set[str]:
    """Ids of the videos whose outputs are committed under OUTPUT, as a set (small outputs,
    tests); the job keeps them as `done_ids`."""
    return {i.decode() for i in done_ids(storage, output_uri)}


class ResumeFilter:
    """Whether ids are among the committed ones, by binary search of `done_ids`' array."""

    def __init__(self, done: np.ndarray) -> None:
        self.done = done

    def committed(self, ids: list[str]) -> np.ndarray:
        """Boolean mask: True where the id is committed."""
        if not len(self.done) or not ids:
            return np.zeros(len(ids), bool)
        width = self.done.dtype.itemsize
        q = np.array([i.encode()[:width] for i in ids], dtype=self.done.dtype)
        pos = np.searchsorted(self.done, q).clip(0, len(self.done) - 1)
        fits = np.fromiter((len(i) <= width for i in ids), bool, len(ids))  # longer ids: never committed
        return (self.done[pos] == q) & fits


def _any_local(path: str, extensions) -> bool:
    """Whether a local folder holds any wanted file (no sorting: stops at the first)."""
    try:
        with os.scandir(path) as it:
            dirs = []
            for e in it:
                if e.is_dir():
                    dirs.append(e.path)
                elif _wanted(e.name, extensions) and e.is_file():
                    return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(_any_local(d, extensions) for d in dirs)


def has_inputs(storage: Storage, parts: list[ListingPart]) -> bool:
    """Whether the listing holds at least one input, found cheaply (the first page or
    line; a local folder without sorting)."""
    for part in parts:
        if part.kind == "tree" and not is_remote(part.root):
            exts = None if part.extensions is None else frozenset(part.extensions)
            root = storage.fs_for(part.root)[1]
            for item in part.items or ("",):
                full = os.path.join(root, item.rstrip("/")) if item else root
                if (item.endswith("/") or not item) and _any_local(full, exts):
                    return True
                if item and not item.endswith("/") and _wanted(item, exts) and os.path.isfile(full):
                    return True
            continue
        if part.kind in ("lines", "rowgroups"):
            uris = _lines(storage, part) if part.kind == "lines" else _rowgroup_uris(storage, part)
            if next(uris, None) is not None:
                return True
            continue
        if next(iter_part(storage, part), None) is not None:
            return True
    return False
