"""Node-local copies of what finalize would otherwise read again: source videos from object
storage, and the encoded images of short videos' sampled frames.

The job reads every video twice: the decode stage samples it, and finalize reads the k
selected frames again at full resolution. For a video in object storage each read used to
download the whole object. Now the decode stage leaves its download in a cache folder on
its node; finalize, which the driver schedules on that node when it still can, reads it
from there and removes it. A finalize that runs elsewhere, or finds the copy evicted,
downloads again, so the cache only ever saves work. Local files are read in place.

For a short video the second read costs about what the first did (the codec decodes from
the keyframe before each selected frame, and on a clip that is most of it), while encoding
every sampled frame from the first decode costs much less. Then the decode stage leaves
those images beside the copies, one uncompressed zip per chunk (`<video_id>.frames-<chunk>.zip`,
`put_images`), and finalize writes the selected ones out (`take_images`) instead of decoding
again; when any is missing it reads the source as before. Being plain files, they are
evicted like the copies.

The folder is FRAMESIFT_SOURCE_CACHE (default: <tmp>/framesift-sources) and holds at most
FRAMESIFT_SOURCE_CACHE_GB gigabytes (default 20; 0 turns the cache off): the oldest copies
are evicted first, never one a reader claimed in the last minute, and copies left by a
killed run are evicted after a day.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence

import fsspec

from operators import defaults
from operators.sources import changed_since_listing
from operators.storage import SourceError, Storage, download, is_remote, local_copy, local_path, retrying

CACHE_ENV = defaults.SOURCE_CACHE_ENV
CACHE_GB_ENV = defaults.SOURCE_CACHE_GB_ENV
DEFAULT_CACHE_GB = 20.0
MAX_AGE_S = 24 * 3600
MIN_AGE_S = 60.0  # a copy used this recently is being read: never evicted for room
_PARTIAL = ".partial-"


def cache_dir() -> str:
    """The cache folder of this node (created on first use)."""
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "framesift-sources")


def cache_limit_bytes() -> int:
    """The most bytes the cache may hold; 0 when caching is off."""
    try:
        gb = float(os.environ.get(CACHE_GB_ENV, DEFAULT_CACHE_GB))
    except ValueError:
        gb = DEFAULT_CACHE_GB
    return max(0, int(gb * 2**30))


def cache_path(video_id: str, uri: str) -> str:
    """Where this node keeps its copy of video `video_id` (the source's extension kept, as
    some demuxers go by it)."""
    return os.path.join(cache_dir(), video_id + os.path.splitext(uri)[1].lower())


def evict(limit_bytes: int, incoming: int = 0, now: float | None = None) -> list[str]:
    """Remove cached copies, oldest first, until the cache holds at most `limit_bytes` with
    `incoming` more bytes; also any copy (or unfinished download) older than a day. Copies
    used in the last minute are kept even over the limit: a reader has just claimed them.
    Returns the paths removed."""
    folder = cache_dir()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    now = time.time() if now is None else now
    entries = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    entries.sort()
    total = sum(size for _, size, _ in entries)
    removed = []
    for mtime, size, path in entries:
        stale = now - mtime > MAX_AGE_S
        if not stale and (total + incoming <= limit_bytes or now - mtime < MIN_AGE_S):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
        total -= size
    return removed


def _download(storage: Storage, uri: str, target: str, listed: tuple[int, str] | None = None) -> None:
    """Download `uri` whole into `target`: its current size and version from the store
    (raising SourceError when they differ from `listed`, the (size, version) the listing
    saw), then the bytes (`storage.download`: retried, a short copy never kept)."""
    fs, path = storage.fs_for(uri)
    info = retrying(lambda: fs.info(path, refresh=True), f"reading {uri}")
    if listed is not None:
        changed = changed_since_listing(info, *listed)
        if changed:
            raise SourceError(changed)
    size = int(info.get("size") or 0)
    evict(cache_limit_bytes(), incoming=size)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}{_PARTIAL}{uuid.uuid4().hex}"
    try:
        download(fs, path, partial, size, f"downloading {uri}")
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


@contextlib.contextmanager
def source_file(storage: Storage, uri: str, video_id: str, keep: bool,
                listed: tuple[int, str] | None = None) -> Iterator[str]:
    """Yield a local path holding the source video `uri`.

    Local files: the file itself. Object storage: this node's cached copy, downloaded into
    the cache first when it is not there. With `keep` the copy stays for a later reader (the
    decode stage keeps it for finalize); without it the copy, and any images kept for the
    video, are removed on leaving (finalize, the last reader). They are also removed when
    the block raises: a video that failed will not be read again. With the cache off
    (FRAMESIFT_SOURCE_CACHE_GB=0) every read downloads to a temporary file, as before.

    `listed`, the (size, version) the listing saw, makes a source that has changed since
    raise SourceError instead of being read (its id names the listed bytes).
    """
    if not is_remote(uri):
        if listed is not None:
            changed = changed_since_listing(_local_info(uri), *listed)
            if changed:
                raise SourceError(changed)
        try:
            yield os.path.abspath(local_path(uri))
        except BaseException:
            discard(video_id, uri)
            raise
        if not keep:
            discard(video_id, uri)
        return
    if cache_limit_bytes() == 0:
        with local_copy(storage, uri) as path:
            yield path
        return
    target = cache_path(video_id, uri)
    try:
        os.utime(target)  # claimed: kept for a minute, then evicted last
    except FileNotFoundError:
        _download(storage, uri, target, listed)
    try:
        yield target
    except BaseException:
        discard(video_id, uri)
        raise
    if not keep:
        discard(video_id, uri)


def _local_info(uri: str) -> dict:
    """fsspec's info of a local file (size, mtime: what the listing recorded)."""
    return fsspec.filesystem("file").info(os.path.abspath(local_path(uri)))


def discard(video_id: str, uri: str) -> None:
    """Remove this node's cached copy of a video and its kept images, if any (its last
    reader is done)."""
    if uri and is_remote(uri):
        with contextlib.suppress(FileNotFoundError):
            os.remove(cache_path(video_id, uri))
    for path in _image_files(video_id):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _image_files(video_id: str) -> list[str]:
    prefix = video_id + ".frames-"
    try:
        names = os.listdir(cache_dir())
    except OSError:  # no cache folder (yet), or not one that can be read: nothing kept
        return []
    return [os.path.join(cache_dir(), n) for n in names if n.startswith(prefix) and n.endswith(".zip")]


def put_images(video_id: str, chunk_index: int, frame_index: Sequence[int], images: Sequence[bytes]) -> None:
    """Keep `images` (encoded bytes, one per source frame index in `frame_index`) of chunk
    `chunk_index` of a video for finalize on this node: one file, written whole or not at
    all."""
    folder = cache_dir()
    evict(cache_limit_bytes(), incoming=sum(len(b) for b in images))
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{video_id}.frames-{int(chunk_index)}.zip")
    partial = f"{target}{_PARTIAL}{uuid.uuid4().hex}"
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as z:  # images are compressed already
            for i, data in zip(frame_index, images, strict=True):
                z.writestr(str(int(i)), data)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def take_images(video_id: str, frame_index: Sequence[int]) -> list[bytes] | None:
    """The kept images of the given source frames, in order, or None when this node does
    not hold every one of them (finalize then reads the source)."""
    wanted = {str(int(i)) for i in frame_index}
    found: dict[str, bytes] = {}
    for path in _image_files(video_id):
        try:
            with zipfile.ZipFile(path) as z:
                for name in wanted.intersection(z.namelist()):
                    found[name] = z.read(name)
        except (FileNotFoundError, zipfile.BadZipFile):
            continue  # evicted meanwhile, or damaged: those frames are read again
    if len(found) < len(wanted):
        return None
    return [found[str(int(i))] for i in frame_index]


def current_node_id() -> str:
    """The Ray node this process runs on, or "" outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - no Ray, or an old one: no node preference then
        pass
    return ""
