"""List input videos from a local folder, an object-storage prefix or a listing file, give
each a stable id, and filter out the videos whose outputs are already committed (resume).
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import pyarrow.parquet as pq

from operators.storage import Storage, StorageError, is_remote
from operators.write import list_table, read_files

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv .vob".split()
)
LISTING_EXTENSIONS = (".txt", ".lst", ".parquet")


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
            return VideoSource(video_id_for(uri, 0, ""), uri, 0, "", f"cannot stat input: {exc}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(stat, uris))


def read_listing(storage: Storage, uri: str) -> list[str]:
    """URIs named in a listing file: one per line (.txt / .lst; blank lines and '#' comments
    ignored) or a Parquet file with a `uri` (or `source_uri`, `path`) column."""
    fs, path = storage.fs_for(uri)
    data = fs.cat_file(path)
    if uri.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        for col in ("uri", "source_uri", "path", "url"):
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
    """List the videos named by INPUT: a folder or prefix (recursive; files whose extension
    is in `extensions`, all non-hidden files when None), a single video, or a listing file
    (.txt / .parquet). Returns sources sorted by URI (so --limit is deterministic).

    Raises StorageError when INPUT does not exist or cannot be read.
    """
    fs, path = storage.fs_for(input_uri)
    try:
        is_dir = fs.isdir(path)
        is_file = not is_dir and fs.isfile(path)
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"INPUT {input_uri!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not is_dir and not is_file:
        raise StorageError(f"INPUT {input_uri!r} does not exist")

    if is_file and input_uri.lower().endswith(LISTING_EXTENSIONS):
        uris = sorted(set(read_listing(storage, input_uri)))
        if limit is not None:
            uris = uris[:limit]
        return _stat_uris(storage, uris)
    if is_file:
        return [_source(input_uri, fs.info(path))]

    found = fs.find(path, detail=True)
    sources = []
    for p, info in sorted(found.items()):
        name = p.rsplit("/", 1)[-1]
        if name.startswith(".") or info.get("type") == "directory":
            continue
        if extensions is not None and os.path.splitext(name)[1].lower() not in extensions:
            continue
        sources.append(_source(_uri_of(input_uri, p), info))
        if limit is not None and len(sources) >= limit:
            break
    return sources


def committed_video_ids(storage: Storage, output_uri: str) -> set[str]:
    """Ids of the videos whose outputs are committed under OUTPUT: those with a row in
    videos/, in a per-video file (its name is the id: no read) or in a compacted shard (only
    its video_id column is read)."""
    files = list_table(storage, output_uri, "videos")
    ids = set(files.videos)
    for part in read_files(storage, output_uri, files.shards, columns=["video_id"]):
        ids.update(part.column("video_id").to_pylist())
    return ids
