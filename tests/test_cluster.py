"""The job on a real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a
head that runs no tasks (0 CPUs) and two 1-CPU worker nodes, each with its own source
cache folder, one with a custom `gpu_like` resource. The job runs as its own driver process
(`python -m jobs.curate` with RAY_ADDRESS), so that it can be killed.

- outputs on three nodes equal a one-node run's; videos are decoded on both workers, and
  each video's finalize runs on the node that decoded it (the report counts misses);
- a worker node's raylet killed mid-run, then a single worker process: the job finishes
  on what is left, every video committed once, none lost, outputs unchanged;
- a video whose decode is killed each time it starts (as the out-of-memory killer does to
  a huge frame) becomes a failed video with its reason, the run goes on and ends;
- the driver killed (SIGINT, SIGKILL) mid-run, then run again: committed videos are
  skipped, nothing half-written counts as done, outputs equal an uninterrupted run.

The cluster lives in its own Ray temp folder (RAY_TMPDIR), so that no other Ray on this
machine finds it, and the session's `ray_local` Ray is shut down first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.common import LocalCluster
from operators.attempts import MAX_ATTEMPTS, killed_reason
from operators.sources import committed_video_ids
from operators.storage import Storage
from operators.write import read_table
from tests.conftest import ROOT
from tests.synthetic import make_shots_video

pytestmark = pytest.mark.integration

N_CLIPS = 12
JOB_ARGS = ["--embedder", "features", "--fps", "4", "--k", "3", "--method", "kmeans", "--max-inflight-videos", "4",
            "--assemblers", "2"]  # two assembler actors: rows are handed between them
TIMINGS = {"download_s", "decode_s", "features_s", "embed_s", "select_s", "write_s", "finished_at"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """N_CLIPS synthetic videos of 2 s (two shots each), all different."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(N_CLIPS):
        make_shots_video(d / f"clip{i:02d}.mp4", [1.0, 1.0], fps=10, seed=10 * i)
    return d


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    had_session_ray = ray.is_initialized()
    if had_session_ray:  # the session's ray_local: these tests run their own cluster
        ray.shutdown()
    c = LocalCluster(tmp_path_factory.mktemp("nodes"), worker_cpus=(1, 1))
    yield c
    c.shutdown()
    if had_session_ray:  # give the tests after this module the session's Ray back (as conftest starts it)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


def start_job(inp: Path, out: Path, address: str | None, args: list[str] = JOB_ARGS) -> subprocess.Popen:
    """The job as its own driver process with `args`, on the cluster at `address` (None: a
    one-node local Ray of its own)."""
    env = {**os.environ, "RAY_ADDRESS": address or "local", "PYTHONPATH": str(ROOT)}
    if address is None:
        env.pop("RAY_TMPDIR", None)
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "jobs.curate", str(inp), str(out), *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, out: Path, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job did not finish in {timeout} s:\n{log_tail(out)}")


def log_tail(out: Path) -> str:
    path = out.parent / f"{out.name}.log"
    return path.read_text()[-4000:] if path.exists() else ""


def committed(out: Path) -> set[str]:
    """The committed videos' ids (per-video files and compacted shards)."""
    return committed_video_ids(Storage(), str(out))


def wait_for_commits(proc: subprocess.Popen, out: Path, n: int, timeout: float = 180) -> None:
    """Until `n` videos are committed (fails if the job ends or times out first)."""
    deadline = time.time() + timeout
    while len(committed(out)) < n:
        if proc.poll() is not None:
            pytest.fail(f"the job ended (rc {proc.returncode}) before {n} commits:\n{log_tail(out)}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"fewer than {n} commits in {timeout} s:\n{log_tail(out)}")
        time.sleep(0.05)


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def snapshot(out: Path) -> dict:
    """What a run wrote, without timings and with OUTPUT's own path taken out: every row of
    manifest/, shots/ and videos/ per video, and a hash of every frame file."""
    prefix = str(out)
    tables: dict = {}
    for table in ("manifest", "shots", "videos"):
        # per-video files and compacted shards alike, each video's rows once
        for r in read_table(Storage(), str(out), table).to_pylist():
            for k in TIMINGS:
                r.pop(k, None)
            if r.get("image_uri"):
                r["image_uri"] = r["image_uri"].replace(prefix, "OUT")
            if r.get("embedding"):
                r["embedding"] = [round(x, 5) for x in r["embedding"]]
            tables.setdefault((table, r["video_id"]), []).append(r)
    for rows in tables.values():
        rows.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
    frames = {str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest()
              for p in sorted((out / "frames").rglob("*")) if p.is_file()}
    return {"tables": tables, "frames": frames}


def assert_same_outputs(out: Path, reference: dict) -> None:
    got = snapshot(out)
    assert got["frames"] == reference["frames"]
    assert set(got["tables"]) == set(reference["tables"])
    for key, rows in reference["tables"].items():
        assert got["tables"][key] == rows, key


@pytest.fixture(scope="module")
def one_node(clips, tmp_path_factory) -> dict:
    """The reference: the same job on a one-node local Ray (2 CPUs)."""
    out = tmp_path_factory.mktemp("one-node") / "out"
    proc = start_job(clips, out, None)
    assert finish(proc, out) == 0, log_tail(out)
    assert report(out)["videos"] == {"done": N_CLIPS, "failed": 0, "skipped": 0}
    return snapshot(out)


@pytest.fixture(scope="module")
def three_nodes(clips, cluster, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("three-nodes") / "out"
    proc = start_job(clips, out, cluster.address)
    assert finish(proc, out) == 0, log_tail(out)
    return out


def test_three_nodes_equal_one_node(three_nodes, one_node, cluster):
    assert_same_outputs(three_nodes, one_node)
    rep = report(three_nodes)
    assert rep["videos"] == {"done": N_CLIPS, "failed": 0, "skipped": 0}
    decoded_on = rep["placement"]["decoded_on"]
    workers = {w.node_id for w in cluster.workers}
    # both workers decoded videos, the head (no CPUs) none
    assert set(decoded_on) == workers, (decoded_on, workers)
    assert sum(decoded_on.values()) == N_CLIPS
    # each finalize ran where its video was decoded and its images kept: none elsewhere
    assert rep["placement"]["finalized_off_source_node"] == 0
    assert rep["uncommitted"] == 0 and rep["assembler"]["never_completed"] == 0


def test_a_killed_worker_node_loses_no_video(clips, cluster, one_node, tmp_path):
    out = tmp_path / "out"
    proc = start_job(clips, out, cluster.address)
    wait_for_commits(proc, out, 2)
    victim = cluster.workers[0]
    os.kill(cluster.raylet_pid(victim), signal.SIGKILL)  # the node dies with its workers
    try:
        assert finish(proc, out) == 0, log_tail(out)
        rep = report(out)
        # every video committed, each once (the report counts a video per commit it returned)
        assert rep["videos"] == {"done": N_CLIPS, "failed": 0, "skipped": 0}, log_tail(out)
        assert rep["uncommitted"] == 0
        assert_same_outputs(out, one_node)
    finally:
        cluster.remove(victim)
        cluster.add_worker()  # back to two workers for the next tests


def _worker_pids(cluster) -> list[int]:
    """The worker processes of the cluster's worker nodes (children of their raylets)."""
    raylets = {cluster.raylet_pid(w) for w in cluster.workers}
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) in raylets:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _running_task_pids(cluster, names: tuple[str, ...]) -> list[int]:
    """Worker processes of the cluster's worker nodes now running one of the named tasks
    (Ray titles a worker 'ray::<task>' while it runs one)."""
    pids = []
    for pid in _worker_pids(cluster):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if any(cmd.startswith(f"ray::{n}") for n in names):
            pids.append(pid)
    return pids


def _kill_one_running(proc: subprocess.Popen, cluster, names: tuple[str, ...], out: Path) -> int | None:
    """SIGKILL the first worker caught running one of the named tasks while the job `proc`
    still runs and has not committed every video (60 s at most); returns its pid (None: none
    caught)."""
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        pids = _running_task_pids(cluster, names)
        if pids:
            assert len(committed(out)) < N_CLIPS, "the run ended before a worker could be killed"
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.01)
    return None


def test_a_killed_worker_process_loses_no_video(clips, cluster, one_node, tmp_path):
    out = tmp_path / "out"
    proc = start_job(clips, out, cluster.address)
    wait_for_commits(proc, out, 1)
    killed = _kill_one_running(proc, cluster, ("MapBatches(DecodeStage)", "finalize_here"), out)
    assert killed is not None, "no decode or finalize task was caught running"
    assert finish(proc, out) == 0, log_tail(out)
    rep = report(out)
    assert rep["videos"] == {"done": N_CLIPS, "failed": 0, "skipped": 0}, log_tail(out)
    assert rep["uncommitted"] == 0
    assert_same_outputs(out, one_node)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_killed_driver_resumes_where_it_stopped(clips, cluster, one_node, tmp_path, sig):
    out = tmp_path / "out"
    proc = start_job(clips, out, cluster.address)
    wait_for_commits(proc, out, 3)
    proc.send_signal(sig)
    rc = finish(proc, out, timeout=60)
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL), log_tail(out)
    time.sleep(1.0)  # a finalize task of the dead driver may still be ending
    before = committed(out)
    assert 3 <= len(before) < N_CLIPS, "the driver was killed too late to test anything"
    if sig == signal.SIGINT:
        assert report(out)["interrupted"] is True  # it said so before it went
    # videos with some outputs but no commit record exist or not; either way they are redone
    proc = start_job(clips, out, cluster.address)
    assert finish(proc, out) == 0, log_tail(out)
    rep = report(out)
    # a finalize of the dead driver may have committed one more after `before` was read
    skipped = rep["videos"]["skipped"]
    assert len(before) <= skipped < N_CLIPS and rep["listing"]["listed"] == N_CLIPS
    assert rep["videos"]["done"] + rep["videos"]["failed"] == N_CLIPS - skipped
    assert committed(out) >= before and len(committed(out)) == N_CLIPS
    assert_same_outputs(out, one_node)


def test_a_killed_embedding_actor_is_restarted_and_its_chunks_retried(clips, cluster, clip_checkpoint, tmp_path):
    """CLIP (random weights from one file) in a CPU actor; its process killed mid-run: Ray
    restarts the actor, Ray Data resubmits its chunks, and the run equals one without."""
    args = [*JOB_ARGS, "--embedder", "clip", "--weights", clip_checkpoint, "--embed-dtype", "fp32"]
    ref = tmp_path / "ref"
    assert finish(start_job(clips, ref, cluster.address, args), ref) == 0, log_tail(ref)
    out = tmp_path / "out"
    proc = start_job(clips, out, cluster.address, args)
    wait_for_commits(proc, out, 1)
    killed = _kill_one_running(proc, cluster, ("MapWorker(MapBatches(EmbedStage))",), out)
    assert killed is not None, "no embedding actor was found"
    assert finish(proc, out) == 0, log_tail(out)
    rep = report(out)
    assert rep["videos"] == {"done": N_CLIPS, "failed": 0, "skipped": 0}, log_tail(out)
    assert rep["uncommitted"] == 0 and len(committed(out)) == N_CLIPS
    assert_same_outputs(out, snapshot(ref))


def _has_open(pid: int, path: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_video_that_kills_its_decoder_is_a_failed_video(clips, cluster, shared_videos, tmp_path):
    """An out-of-memory killer of our own: every worker process that opens the poison video
    is SIGKILLed at once, each time. Ray Data retries a task without end; the run must
    instead record the video as failed (with why) after MAX_ATTEMPTS deaths and finish the
    others."""
    inp = tmp_path / "in"
    inp.mkdir()
    for p in sorted(clips.iterdir())[:4]:
        shutil.copy(p, inp / p.name)
    poison = inp / "poison.avi"
    shutil.copy(shared_videos / "vtest.avi", poison)  # 768x576, seconds to decode: caught
    out = tmp_path / "out"
    proc = start_job(inp, out, cluster.address)
    kills, deadline = 0, time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        for pid in _worker_pids(cluster):
            if _has_open(pid, str(poison)):
                os.kill(pid, signal.SIGKILL)
                kills += 1
        time.sleep(0.005)
    assert finish(proc, out, timeout=5) == 0, log_tail(out)
    assert kills >= MAX_ATTEMPTS
    rep = report(out)
    assert rep["videos"] == {"done": 4, "failed": 1, "skipped": 0}, log_tail(out)
    assert rep["uncommitted"] == 0 and len(committed(out)) == 5
    failed = [r for r in read_table(Storage(), str(out), "videos").to_pylist() if r["status"] == "failed"]
    assert [(r["source_uri"].rsplit("/", 1)[-1], r["error"]) for r in failed] == [
        ("poison.avi", killed_reason(MAX_ATTEMPTS))]
