"""WebDataset shards of the curated samples, written per video and rolled up by size.

    OUTPUT/shards/shard-NNNNNN.tar                  the dataset: one sample per selected
                                                    frame (.jpg/.webp + .json) or clip
                                                    (.mp4 + .json); shards of about
                                                    --shard-size-mb
    OUTPUT/shards-work/pieces/<video_id>.tarpart    one video's samples, written by its
                                                    finalize task before its commit row
    OUTPUT/shards-work/index/shard-NNNNNN.json      which videos a shard holds: its commit

A finalize task writes its video's samples as one piece (tar members without the end of
archive marker), atomically and before the video's commit row, so a piece that cannot be
written (unwritable output, full disk) fails the video. The driver groups committed videos'
pieces until they reach the shard size and has a task concatenate them into a shard (pieces
are tar members, so this is a byte copy), written atomically (a temporary name renamed into
place; one PUT or multipart upload on object storage), then its index, then the pieces are
deleted. A shard is counted only once its index exists; a crash before that leaves the
pieces, which the next run rolls into a shard of the same number (overwriting any orphan).
video2dataset writes one tar per input shard straight to its final name and marks it done
with a `<shard>_stats.json` that resume looks for (a crash leaves a half-written tar there
until it is redone); webdataset's ShardWriter rolls to a new tar at maxsize / maxcount. Here
the unit of work is a video, so shards are rolled by size from committed videos' pieces, the
index plays the role of the stats file, and no tar is visible before it is whole.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
import uuid
from collections.abc import Iterable

from operators.storage import Storage, is_remote, join, local_path, write_bytes_atomic

SHARDS = "shards"
WORK = "shards-work"
PIECE_EXT = ".tarpart"
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK
COPY_CHUNK = 8 << 20


def sample_key(video_id: str, kind: str, start_s: float, end_s: float | None = None) -> str:
    """The WebDataset key of a sample (no dots: webdataset splits names at the first dot):
    <video_id>_f<ms> for a frame, <video_id>_c<start_ms>-<end_ms> for a clip."""
    ms = int(round(start_s * 1000))
    if kind == "clip":
        return f"{video_id}_c{ms:09d}-{int(round((end_s or start_s) * 1000)):09d}"
    return f"{video_id}_f{ms:09d}"


def tar_member(name: str, data: bytes, mtime: float | None = None) -> bytes:
    """One tar member (ustar header, data, padding to 512 bytes) as bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime if mtime is not None else time.time()), 0o644
    pad = (-len(data)) % TAR_BLOCK
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * pad


def video_piece(samples: Iterable[tuple[str, dict[str, bytes]]]) -> bytes:
    """The tar members of one video's samples: (key, {extension: bytes}) each, members named
    <key>.<extension>, a sample's members together (as WebDataset readers expect)."""
    now = time.time()
    return b"".join(tar_member(f"{key}.{ext}", data, now) for key, files in samples for ext, data in files.items())


def json_bytes(row: dict) -> bytes:
    """A manifest row (minus its embedding) as the sample's .json."""
    return json.dumps({k: v for k, v in row.items() if k != "embedding"}, default=str).encode()


def piece_uri(output: str, video_id: str) -> str:
    """Where a video's piece is written."""
    return join(output, WORK, "pieces", video_id + PIECE_EXT)


def write_piece(storage: Storage, output: str, video_id: str, piece: bytes) -> int:
    """Write one video's piece atomically; returns its size. Raises OSError (or the store's
    error) when it cannot be written: the caller fails the video."""
    write_bytes_atomic(storage, piece_uri(output, video_id), piece)
    return len(piece)


def shard_uri(output: str, number: int) -> str:
    """Where shard `number` goes."""
    return join(output, SHARDS, f"shard-{number:06d}.tar")


def index_uri(output: str, number: int) -> str:
    """The index (commit record) of shard `number`."""
    return join(output, WORK, "index", f"shard-{number:06d}.json")


def _ls(storage: Storage, uri: str) -> list[dict]:
    fs, path = storage.fs_for(uri)
    try:
        return [e for e in fs.ls(path, detail=True) if e.get("type") != "directory"]
    except FileNotFoundError:
        return []


def _name(entry: dict) -> str:
    return entry["name"].rstrip("/").rsplit("/", 1)[-1]


def roll_shard(storage: Storage, output: str, number: int, video_ids: list[str]) -> dict:
    """Concatenate the pieces of `video_ids` (in order) into shard `number`, write it
    atomically, then its index, then delete the pieces. Returns the index record. Memory
    stays at one copy buffer; the shard is never visible half-written."""
    uri = shard_uri(output, number)
    fs, path = storage.fs_for(uri)
    size = 0
    if is_remote(uri):
        sink, tmp = fs.open(path, "wb"), None
    else:
        folder = os.path.dirname(local_path(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        sink = open(tmp, "wb")
    try:
        for vid in video_ids:
            pfs, ppath = storage.fs_for(piece_uri(output, vid))
            with pfs.open(ppath, "rb") as src:
                while chunk := src.read(COPY_CHUNK):
                    sink.write(chunk)
                    size += len(chunk)
        end = 2 * TAR_BLOCK + (-(size + 2 * TAR_BLOCK)) % TAR_RECORD
        sink.write(b"\0" * end)
        size += end
        sink.close()
        if tmp:
            os.replace(tmp, local_path(path))
    except BaseException:
        if tmp:
            sink.close()
            if os.path.exists(tmp):
                os.remove(tmp)
        else:
            sink.discard() if hasattr(sink, "discard") else sink.close()
        raise
    record = {"shard": number, "uri": uri, "bytes": size, "videos": list(video_ids)}
    write_bytes_atomic(storage, index_uri(output, number), json.dumps(record).encode())
    for vid in video_ids:
        pfs, ppath = storage.fs_for(piece_uri(output, vid))
        try:
            pfs.rm_file(ppath)
        except FileNotFoundError:
            pass
    return record


class ShardPlanner:
    """The driver's side: which committed videos' pieces go into which shard.

    Reads the existing indexes (the next shard number, the videos already in a shard) and the
    pieces left by an earlier run; `add` takes each newly committed video's piece size and
    returns a batch (number, video ids) once the pending pieces reach `shard_bytes`; `flush`
    returns the rest. Pieces already in a shard (a crash after its index) are deleted."""

    def __init__(self, storage: Storage, output: str, shard_bytes: int) -> None:
        self.storage, self.output, self.shard_bytes = storage, output, max(1, int(shard_bytes))
        self.rolled: set[str] = set()
        numbers = [-1]
        for entry in _ls(storage, join(output, WORK, "index")):
            name = _name(entry)
            if name.startswith("shard-") and name.endswith(".json"):
                fs, path = storage.fs_for(index_uri(output, int(name[6:-5])))
                with fs.open(path, "rb") as f:
                    record = json.load(f)
                numbers.append(int(record["shard"]))
                self.rolled.update(record["videos"])
        self.next_number = max(numbers) + 1
        self.taken: set[str] = set()  # put in a shard by this run
        self.pending: list[str] = []
        self.pending_bytes = 0

    def resume(self, committed_done: set[str]) -> list[tuple[int, list[str]]]:
        """Take up the pieces an earlier run left: those of videos committed done and in no
        shard are pending again (returns any batches they fill); those already in a shard
        are deleted. Pieces of uncommitted videos stay: redoing the video overwrites them."""
        batches = []
        for entry in sorted(_ls(self.storage, join(self.output, WORK, "pieces")), key=_name):
            name = _name(entry)
            if not name.endswith(PIECE_EXT):
                continue
            vid = name[: -len(PIECE_EXT)]
            if vid in self.rolled:
                fs, path = self.storage.fs_for(piece_uri(self.output, vid))
                fs.rm_file(path)
            elif vid in committed_done and vid not in self.taken:
                batches += self.add(vid, int(entry.get("size") or 0))
        return batches

    def add(self, video_id: str, piece_bytes: int) -> list[tuple[int, list[str]]]:
        """A committed video's piece; returns [(shard number, video ids)] when it fills one."""
        if video_id in self.rolled or video_id in self.taken or video_id in self.pending:
            return []
        self.pending.append(video_id)
        self.pending_bytes += piece_bytes
        if self.pending_bytes >= self.shard_bytes:
            return [self._take()]
        return []

    def flush(self) -> list[tuple[int, list[str]]]:
        """The last, smaller shard of the run (none when nothing is pending)."""
        return [self._take()] if self.pending else []

    def _take(self) -> tuple[int, list[str]]:
        batch = (self.next_number, self.pending)
        self.taken.update(self.pending)
        self.next_number += 1
        self.pending, self.pending_bytes = [], 0
        return batch


def shard_count(storage: Storage, output: str) -> int:
    """How many shards are committed (have an index)."""
    return sum(1 for e in _ls(storage, join(output, WORK, "index")) if _name(e).endswith(".json"))



class ShardRoller:
    """The driver's shard bookkeeping for one run: feed it every finalize row (`committed`);
    it plans shards with a ShardPlanner and rolls each one in a Ray task (`bind(ray)`; in
    this process when Ray is not up). `finish` takes up pieces left by earlier runs, rolls the
    last shard, waits for every roll and returns {"shards": committed shards in OUTPUT,
    "rolled": rolled by this run, "errors": [reasons]}: a roll that fails leaves its pieces
    for the next run, nothing half-written is counted."""

    def __init__(self, storage: Storage, output: str, shard_bytes: int) -> None:
        self.storage, self.output = storage, output
        self.planner = ShardPlanner(storage, output, shard_bytes)
        self._ray = None
        self._remote = None
        self._futures: list = []
        self._done: list[dict] = []
        self.errors: list[str] = []

    def bind(self, ray, **ray_options) -> None:
        """Roll shards in Ray tasks from now on."""
        self._ray = ray
        self._remote = ray.remote(max_retries=2, **ray_options)(roll_shard)

    def committed(self, row: dict) -> None:
        """One finalize row: a done video with a piece joins the pending shard."""
        if row.get("status") == "done" and row.get("shard_piece_bytes"):
            self._launch(self.planner.add(row["video_id"], int(row["shard_piece_bytes"])))

    def finish(self, done_ids) -> dict:
        """Roll what is left; `done_ids()` gives the videos committed done (asked only when an
        earlier run left pieces)."""
        self._wait()  # this run's rolls first: their pieces are not leftovers
        leftovers = [e for e in _ls(self.storage, join(self.output, WORK, "pieces"))
                     if _name(e).endswith(PIECE_EXT) and _name(e)[: -len(PIECE_EXT)] not in self.planner.taken]
        if leftovers:
            self._launch(self.planner.resume(set(done_ids())))
        self._launch(self.planner.flush())
        self._wait()
        return {"shards": shard_count(self.storage, self.output), "rolled": len(self._done), "errors": self.errors}

    def _wait(self) -> None:
        for fut in self._futures:
            try:
                self._done.append(self._ray.get(fut))
            except Exception as exc:  # noqa: BLE001 - recorded; the pieces stay for the next run
                cause = getattr(exc, "cause", None) or exc  # a RayTaskError's own exception
                self.errors.append(f"{type(cause).__name__}: {cause}")
        self._futures = []

    def _launch(self, batches: list[tuple[int, list[str]]]) -> None:
        for number, vids in batches:
            if self._remote is not None:
                self._futures.append(self._remote.remote(self.storage, self.output, number, vids))
                continue
            try:
                self._done.append(roll_shard(self.storage, self.output, number, vids))
            except Exception as exc:  # noqa: BLE001 - recorded; the pieces stay for the next run
                self.errors.append(f"{type(exc).__name__}: {exc}")
