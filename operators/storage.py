"""Storage access for local paths and object storage (s3://), through fsspec / s3fs.

Every stage reaches storage through these helpers so that local folders and S3-compatible
stores behave the same: one `Storage` value (picklable, small) travels to Ray workers and
opens its own filesystem there.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import fsspec

log = logging.getLogger("framesift")
T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage location is missing, unreadable or unwritable (raised before work starts)."""


class SourceError(RuntimeError):
    """A source cannot be read as listed, for good (it changed since the listing, say); the
    message is the one-sentence reason recorded for the video."""


class ShortRead(OSError):
    """A transfer ended with fewer bytes than the object holds: retried, never decoded."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of a whole transfer, on top of the per-request retries botocore and
    s3fs already make (see docs/decisions.md, *Retries*): at most `attempts` tries, waits
    drawn uniformly from [0, min(`max_s`, `base_s` * 2**n)] (exponential backoff with full
    jitter), and no new try that would start after `total_s` seconds."""

    attempts: int = 3
    base_s: float = 1.0
    max_s: float = 10.0
    total_s: float = 120.0


RETRY = RetryPolicy()
retries_made = 0  # whole-transfer retries this process made (for tests and benchmarks)
_PERMANENT_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EEXIST}


def is_transient(exc: BaseException) -> bool:
    """True for errors a later try may not meet: a short transfer, a timeout, a dropped
    connection, an OSError the store answered with a server error. False for a missing
    object, denied access, a changed source and other client errors."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, SourceError)):
        return False
    if isinstance(exc, (ShortRead, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in _PERMANENT_ERRNOS
    return type(exc).__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore", "urllib3", "http")


def retrying(fn: Callable[[], T], what: str, policy: RetryPolicy | None = None,
             sleep: Callable[[float], None] = time.sleep) -> T:
    """`fn()`, tried again after a transient error (`is_transient`) as `policy` (default
    `RETRY`) allows; permanent errors and the last transient one are raised. `what` names
    it in the log."""
    global retries_made
    policy = policy or RETRY
    deadline = time.monotonic() + policy.total_s
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:
            wait = random.uniform(0.0, min(policy.max_s, policy.base_s * 2**attempt))
            if (not is_transient(exc) or attempt + 1 >= policy.attempts
                    or time.monotonic() + wait > deadline):
                raise
            retries_made += 1
            log.warning("retrying %s in %.1f s (try %d of %d): %s: %s", what, wait, attempt + 2,
                        policy.attempts, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            sleep(wait)
    raise AssertionError("unreachable")


def read_failure(exc: BaseException, uri: str) -> str:
    """One sentence saying why `uri` could not be read: not found, access denied, the
    SourceError's reason, or the error's first line."""
    if isinstance(exc, SourceError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"object not found: {uri}" if is_remote(uri) else f"file not found: {uri}"
    if isinstance(exc, PermissionError):
        return f"access denied to {uri}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"cannot read {uri}: {type(exc).__name__}" + (f": {first[:200]}" if first else "")


def failure_reason(exc: BaseException, uri: str) -> str:
    """One sentence for a video's failed row: a storage error's reason (`read_failure`:
    not found, access denied, changed, ...), else the error's type and first line."""
    if isinstance(exc, (OSError, SourceError)):
        return read_failure(exc, uri)
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def download(fs: fsspec.AbstractFileSystem, path: str, target: str, size: int, what: str) -> None:
    """Copy object `path` to the local file `target`, whole: retried (`retrying`) when a try
    fails transiently or ends with other than `size` bytes (the size the store listed), so
    that a partial copy is never taken for the object."""

    def once() -> None:
        fs.get_file(path, target)
        got = os.path.getsize(target)
        if got != size:
            raise ShortRead(errno.EIO, f"downloaded {got} of {size} bytes")

    retrying(once, what)


@dataclass(frozen=True)
class Storage:
    """How to reach object storage: an optional S3 endpoint and extra s3fs options.

    Credentials come from the usual AWS environment variables (or instance roles);
    `endpoint_url` points at an S3-compatible store (MinIO, Ceph, moto, R2 ...).
    """

    endpoint_url: str | None = None
    options: dict = field(default_factory=dict)

    def fs_for(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """Return (filesystem, path-within-it) for a local path or URI."""
        if is_remote(uri):
            kwargs = dict(self.options)
            endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                kwargs.setdefault("client_kwargs", {})["endpoint_url"] = endpoint
            kwargs.setdefault("skip_instance_cache", False)
            fs, path = fsspec.core.url_to_fs(uri, **kwargs)
            return fs, path
        return fsspec.filesystem("file"), os.path.abspath(local_path(uri))


def is_remote(uri: str) -> bool:
    """True for URIs with a non-file scheme (s3://, gs://, ...)."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> str:
    """Strip a file:// scheme."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def join(base: str, *parts: str) -> str:
    """Join URI or path parts with '/' (object stores) or os.sep (local)."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return os.path.join(local_path(base), *parts)


def write_bytes_atomic(storage: Storage, uri: str, data: bytes) -> None:
    """Write `data` to `uri` so that readers see either nothing or the whole object.

    Object stores make a single PUT atomic already; on a local filesystem the bytes go to a
    temporary name in the same folder first and are renamed into place.
    """
    fs, path = storage.fs_for(uri)
    if is_remote(uri):
        retrying(lambda: fs.pipe_file(path, data), f"writing {uri}")
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def exists(storage: Storage, uri: str) -> bool:
    """True when the object or file exists."""
    fs, path = storage.fs_for(uri)
    return bool(fs.exists(path))


def is_folder(storage: Storage, uri: str) -> bool:
    """Whether `uri` names an existing folder or prefix (an output to work on)."""
    fs, path = storage.fs_for(uri)
    return bool(fs.isdir(path))


def list_names(storage: Storage, uri: str) -> list[str]:
    """Base names of the entries directly under a folder / prefix; [] when it does not exist."""
    fs, path = storage.fs_for(uri)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]


@contextmanager
def local_copy(storage: Storage, uri: str) -> Iterator[str]:
    """Yield a local file path holding the object's bytes (the path itself for local files).

    Remote objects are downloaded whole (`download`: retried, the byte count checked) to a
    temporary file that is removed afterwards, so that decoders can seek freely without
    holding a whole video in memory.
    """
    if not is_remote(uri):
        yield os.path.abspath(local_path(uri))
        return
    fs, path = storage.fs_for(uri)
    tmpdir = tempfile.mkdtemp(prefix="framesift-")
    try:
        suffix = os.path.splitext(path)[1]
        target = os.path.join(tmpdir, "video" + suffix)
        info = retrying(lambda: fs.info(path), f"reading {uri}")
        download(fs, path, target, int(info.get("size") or 0), f"downloading {uri}")
        yield target
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def check_writable(storage: Storage, uri: str) -> None:
    """Fail fast with a clear message when `uri` cannot be written (missing bucket, bad
    credentials, read-only folder). Writes and removes a small probe object."""
    probe = join(uri, f"_framesift_write_probe_{uuid.uuid4().hex}")
    try:
        fs, path = storage.fs_for(probe)
        if not is_remote(uri):
            os.makedirs(local_path(uri), exist_ok=True)
        fs.pipe_file(path, b"ok")
        fs.rm_file(path)
    except Exception as exc:  # noqa: BLE001 - turned into one clear message
        raise StorageError(f"OUTPUT {uri!r} is not writable: {type(exc).__name__}: {exc}") from exc
