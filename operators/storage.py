"""Storage access for local paths and object storage (s3://), through fsspec / s3fs.

Every stage reaches storage through these helpers so that local folders and S3-compatible
stores behave the same: one `Storage` value (picklable, small) travels to Ray workers and
opens its own filesystem there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import fsspec


class StorageError(RuntimeError):
    """A storage location is missing, unreadable or unwritable (raised before work starts)."""


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
        fs.pipe_file(path, data)
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

    Remote objects are downloaded to a temporary file that is removed afterwards, so that
    decoders can seek freely without holding a whole video in memory.
    """
    if not is_remote(uri):
        yield os.path.abspath(local_path(uri))
        return
    fs, path = storage.fs_for(uri)
    tmpdir = tempfile.mkdtemp(prefix="framesift-")
    try:
        suffix = os.path.splitext(path)[1]
        target = os.path.join(tmpdir, "video" + suffix)
        fs.get_file(path, target)
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
