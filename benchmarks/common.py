"""Helpers that several benchmarks share: where the real videos are, a free loopback port,
Markdown tables, an H.264 writer, and the CPU meter that says what the rest of a shared
machine used while a benchmark row ran.

Light to import (the standard library; PyAV only inside `encode_h264`), so that every
benchmark can use it before its heavy imports.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The real videos beside the checkout, as the tests find them (tests/conftest.py).
VIDEOS_DIR = Path(os.environ.get("FRAMESIFT_SHARED_VIDEOS", REPO.parent / "shared" / "videos"))
SAMPLE_VIDEOS_DIR = REPO / "samples" / "videos"
VIDEO_SUFFIXES = (".avi", ".webm", ".mpg", ".mp4", ".mkv", ".mov")


# --------------------------------------------------------------------------- videos


def videos_in(folder: str | Path) -> list[Path]:
    """The video files of `folder` (by suffix), in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


def find_videos(folder: str | None = None) -> list[str]:
    """The videos of `folder`, or of the first of the real videos (`VIDEOS_DIR`), a
    shared/videos inside the checkout and samples/videos that holds any."""
    candidates = [Path(folder)] if folder else [VIDEOS_DIR, REPO / "shared" / "videos", SAMPLE_VIDEOS_DIR]
    for d in candidates:
        if d.is_dir():
            found = [str(p) for p in videos_in(d)]
            if found:
                return found
    raise SystemExit(f"no videos found in {', '.join(str(d) for d in candidates)}")


def encode_h264(dest: str, frames: Iterable, rate: int, width: int, height: int,
                options: dict[str, str]) -> None:
    """Encode RGB uint8 `frames` (each (height, width, 3)) with libx264 in yuv420p at `rate`
    frames per second into `dest` (the container from its name), with the encoder
    `options` (preset, crf)."""
    import av

    with av.open(dest, "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# --------------------------------------------------------------------------- network, tables


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the header, its rule, a line per row of cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine load


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _tree_ticks(root: int) -> dict[int, int]:
    """utime + stime clock ticks of `root` and every live descendant, by pid."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(entry)] = int(rest[1])
        ticks[int(entry)] = int(rest[11]) + int(rest[12])
    mine: dict[int, int] = {}
    for pid in parent:
        p, hops = pid, 0
        while p and p != root and hops < 64:
            p, hops = parent.get(p, 0), hops + 1
        if p == root:
            mine[pid] = ticks[pid]
    return mine


# What a Ray worker runs, from the title Ray gives its process ("ray::MapBatches(DecodeStage)").
# Decode and finalize share one role: both are tasks in the same workers, and a finalize task
# is often shorter than CpuMeter's interval, so its CPU could not be told from the decode
# task its worker ran before.
DECODE_AND_FINALIZE = "decode + finalize tasks"
JOB_ROLES = (("EmbedStage", "embedding actor"), ("DecodeStage", DECODE_AND_FINALIZE), ("_span_rows", DECODE_AND_FINALIZE),
             ("finalize_video", DECODE_AND_FINALIZE), ("finalize_here", DECODE_AND_FINALIZE),
             ("AssemblerActor", "assemblers"),
             ("ListSources", "listing"), ("StreamingRepartition", "listing"),
             ("jobs.curate", "driver"))  # the last: a job run as its own driver process
ROLE_ORDER = ("embedding actor", DECODE_AND_FINALIZE, "assemblers", "driver", "Ray")
IDLE_WORKER = "ray::IDLE"


def process_role(cmdline: str, is_root: bool) -> str:
    """The part of a job a process of this benchmark's tree plays, from its command line:
    "driver" for the benchmark process itself, a JOB_ROLES stage for a Ray worker running
    it, and "Ray" for everything else (raylet, GCS, dashboard, Ray Data's own actors, idle
    workers). An idle worker is "" (its CPU then goes to what it ran last: see CpuMeter)."""
    if is_root:
        return "driver"
    for marker, role in JOB_ROLES:
        if marker in cmdline:
            return role
    return "" if cmdline.startswith(IDLE_WORKER) else "Ray"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """Wall time of a phase, and the CPU that the REST of the machine (processes this
    benchmark did not start) used meanwhile, in cores. The build machine is shared, so every
    row says how much of it other work took.

    Own CPU = this process and all its descendants (pool workers, Ray's raylet, workers and
    actors), sampled every `interval` s so that processes ending within the phase still
    count (up to their last sample); others = machine busy time (/proc/stat) - own.

    `by_role` splits own CPU by `process_role`: each process's CPU between two samples goes
    to its role at the later one, or, if it is an idle Ray worker by then, to its role at the
    earlier one (the task it finished). Ray names a worker after its task only while it runs,
    so a task that starts and ends between two samples counts as the worker's previous task,
    or as "Ray" for a fresh worker.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.wall = 0.0
        self.other_cores = 0.0
        self.own_cores = 0.0
        self.own_s = 0.0
        self.by_role: dict[str, float] = {}
        # role -> the largest private RSS (RssAnon: not the object store's shared pages it
        # wrote, which count in VmRSS) one busy process of it had
        self.peak_rss_mb: dict[str, float] = {}

    def _rss_mb(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/status") as f:
                return next((int(ln.split()[1]) / 1024 for ln in f if ln.startswith("RssAnon")), 0.0)
        except OSError:
            return 0.0

    def _sample(self) -> None:
        for pid, t in _tree_ticks(self._root).items():
            first = self._first.setdefault(pid, 0 if self._started else t)
            previous = self._last.get(pid, first)
            # a process that used no CPU since the last sample keeps its role unread: most of
            # Ray's ~100 processes are idle in any half second, and this thread runs in the driver
            if t > previous or pid not in self._role:
                role = process_role(_cmdline(pid), pid == self._root) or self._role.get(pid, "Ray")
                self._ticks[role] = self._ticks.get(role, 0) + t - previous
                self._role[pid] = role
                if t > previous:
                    self.peak_rss_mb[role] = max(self.peak_rss_mb.get(role, 0.0), self._rss_mb(pid))
            self._last[pid] = max(t, previous)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuMeter:
        import threading

        self._root, self._first, self._last, self._started = os.getpid(), {}, {}, False
        self._role: dict[int, str] = {}
        self._ticks: dict[str, int] = {}
        self._sample()
        self._started = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0, self.busy0 = time.perf_counter(), _busy_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        busy = _busy_seconds() - self.busy0
        self._stop.set()
        self._thread.join()
        self._sample()
        hz = os.sysconf("SC_CLK_TCK")
        own = sum(self._last[p] - self._first[p] for p in self._last) / hz
        self.own_s = own
        self.by_role = {role: ticks / hz for role, ticks in self._ticks.items()}
        self.own_cores = own / max(self.wall, 1e-9)
        self.other_cores = max(0.0, busy - own) / max(self.wall, 1e-9)


def wait_until_quiet(limit_s: float, threshold: float = 0.3, window: float = 2.0) -> float:
    """Wait (at most `limit_s`) until the rest of the machine uses under `threshold` cores
    over a `window`; returns the seconds waited. Called while the benchmark itself idles."""
    t0 = time.perf_counter()
    while True:
        with CpuMeter() as m:
            time.sleep(window)
        if m.other_cores < threshold or time.perf_counter() - t0 >= limit_s:
            return time.perf_counter() - t0


# --------------------------------------------------------------------------- many nodes


POOL_ENV = "RAY_num_workers_soft_limit"


def _pool_limit(cpus: int) -> str:
    """The idle-worker limit the job's own local Ray sets, for a node of `cpus` CPUs."""
    from jobs.config import CurateConfig
    from jobs.curate import worker_pool_env

    return worker_pool_env(cpus, CurateConfig().max_inflight_videos)[POOL_ENV]


class LocalCluster:
    """A real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head
    that runs no tasks (0 CPUs) and worker nodes, each with its own source cache folder
    under `root` (so that a finalize that lands off its video's node cannot read that node's
    copy). It lives in a private Ray temp folder (RAY_TMPDIR, short for Ray's socket paths),
    so that no other Ray on the machine finds it by ray_current_cluster; the test or
    benchmark process does not connect to it (drivers get `address` as RAY_ADDRESS). Every
    node keeps idle workers as cluster/README.md tells users to (`RAY_num_workers_soft_limit`
    of `jobs.curate.worker_pool_env`): with Ray's default of one per core, a 1-CPU node
    started a fresh Python worker, imports and all, for nearly every finalize task."""

    def __init__(self, root: str | Path, worker_cpus: Sequence[int] = (1, 1), head_cpus: int = 0) -> None:
        import tempfile

        from ray.cluster_utils import Cluster

        self.root = Path(root)
        self.tmp = tempfile.mkdtemp(prefix="fsc-", dir="/tmp")
        self._saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "FRAMESIFT_SOURCE_CACHE", POOL_ENV)}
        os.environ["RAY_TMPDIR"] = self.tmp
        os.environ[POOL_ENV] = _pool_limit(head_cpus)
        try:
            self.cluster = Cluster(initialize_head=True, connect=False,
                                   head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
        finally:
            _restore(POOL_ENV, self._saved[POOL_ENV])
        self.workers: list = []
        self._added = 0
        for i, cpus in enumerate(worker_cpus):
            self.add_worker(cpus, resources={"gpu_like": 1} if i == 1 else None)

    def add_worker(self, cpus: int = 1, resources: dict | None = None):
        """A new worker node of `cpus` CPUs with its own cache folder; returns it."""
        os.environ["FRAMESIFT_SOURCE_CACHE"] = str(self.root / f"cache-{self._added}")  # its raylet inherits it
        os.environ[POOL_ENV] = _pool_limit(cpus)
        self._added += 1
        try:
            node = self.cluster.add_node(num_cpus=cpus, resources=resources or {})
        finally:
            _restore("FRAMESIFT_SOURCE_CACHE", self._saved["FRAMESIFT_SOURCE_CACHE"])
            _restore(POOL_ENV, self._saved[POOL_ENV])
        self.workers.append(node)
        return node

    @property
    def address(self) -> str:
        """The address a driver connects to (RAY_ADDRESS)."""
        return self.cluster.address

    @staticmethod
    def raylet_pid(node) -> int:
        """The pid of a node's raylet (killing it kills the node)."""
        return node.all_processes["raylet"][0].process.pid

    def remove(self, node) -> None:
        """Forget a (killed) worker node, stopping what is left of it."""
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        """Stop every node and remove the private temp folder."""
        import shutil

        try:
            self.cluster.shutdown()
        finally:
            _restore("RAY_TMPDIR", self._saved["RAY_TMPDIR"])
            shutil.rmtree(self.tmp, ignore_errors=True)


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
