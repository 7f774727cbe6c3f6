"""The job at scale on this machine: many nodes, many inputs, a node killed.

    python -m benchmarks.scale                      # every table
    python -m benchmarks.scale --only nodes,kill    # some of them
    python -m benchmarks.scale --rss-inputs 1000,20000 --rss-process 1000

Tables (each ratio against a baseline measured in the same run):

- nodes: video-seconds per wall second and per CPU-second of the job (training-free
  embedder, 2 s synthetic clips) on one 2-CPU worker node against two 1-CPU worker nodes
  (a head with no CPUs either way: `ray.cluster_utils.Cluster`, real raylets), on the same
  cores, marginal (a run of 3N clips against one of N on the same cluster) and whole;
  and the marginal CPU-seconds per video (all processes: Ray, driver, decode, finalize).
  Target: two nodes >= 0.9x one.
- overhead: the per-video fixed cost, marginal (3N clips against N), by process role.
  Target: under 0.1 CPU-s a video.
- rss: the driver's peak RSS (VmHWM of the driver process) for N inputs, a listing file
  naming hard links of one small clip; with --rss-process P < N, all but P of them are
  committed first (real commit records), so every run lists and filters N inputs and
  processes P. Target: 20,000 within 1.2x of 1,000.
- assembler: what gathering chunk rows into videos takes: rows per second through
  ChunkRow.from_row + VideoAssembler.add in one process (64 frames a row, 512-d float16
  embeddings, 1 and 8 rows a video), through Ray Data's iter_rows on one driver (the job's
  path before the assembler actors), and through the job's path: contiguous blocks whose
  references the driver hands to its own assembler (one, the default below 128 CPUs) or
  to 2 assembler actors (jobs/assembly.py).
- long: one long video (Big Buck Bunny's 30 s looped, packets copied) decoded as one task
  (--segment-s 0) against spans at once (the default --segment-s), on one 2-CPU node:
  wall time, CPU, the largest decode worker's private RSS, and whether both wrote the same shots
  and frames. Target: no slower than 1/N of the one-task time with N decode slots free
  (N = 2 here); worker memory about the same at 10 min and 3 h.
- faults: the fault corpus (benchmarks/fault_corpus.py: broken, odd and changing files)
  through the job at its defaults but the model: each file's status and reason against
  the one it must get, and whether any was lost (no videos/ row). Target: none lost.
- kill: a worker node's raylet killed after the first commits: videos committed, lost,
  finalized off their node, duplicate rows dropped, wall time against the run without.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DECODE_AND_FINALIZE, REPO, ROLE_ORDER, CpuMeter, LocalCluster, markdown_table

TABLES = ("nodes", "overhead", "rss", "assembler", "long", "faults", "kill")
JOB_ARGS = ["--embedder", "features"]  # the defaults but the model: no CLIP weights here
CLIP_SECONDS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(TABLES), help=f"tables to print, of {','.join(TABLES)}")
    p.add_argument("--clips", type=int, default=48, help="2 s clips per throughput run")
    p.add_argument("--runs", type=int, default=2, help="runs of each cluster shape, alternating")
    p.add_argument("--rss-inputs", default="1000,20000", help="input counts of the RSS table")
    p.add_argument("--rss-process", type=int, default=1000,
                   help="videos each RSS run processes (the rest are committed first); 0 = all")
    p.add_argument("--long-minutes", default="10,180", help="lengths of the long-video table's videos")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- inputs


def make_clip(path: Path, seconds: float = CLIP_SECONDS) -> Path:
    """One synthetic clip (two shots, 160x120 at 10 fps)."""
    from tests.synthetic import make_shots_video

    make_shots_video(path, [seconds / 2, seconds / 2], fps=10, seed=1)
    return path


def linked_clips(folder: Path, clip: Path, n: int) -> list[Path]:
    """`n` names (hard links) of one clip: distinct inputs with distinct ids, one file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"clip-{i:06d}.mp4"
        if not p.exists():
            os.link(clip, p)
        out.append(p)
    return out


def driver(inp: str, out: Path, address: str, extra: list[str] | None = None) -> subprocess.Popen:
    """The job as its own driver process on the cluster at `address`; it prints its peak
    RSS (VmHWM, kB) as its last line."""
    code = ("import sys; from jobs.curate import main; rc = main(sys.argv[1:]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('PEAK_RSS_KB', hwm.split()[1]); sys.exit(rc)")
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    log = open(f"{out}.log", "w")
    return subprocess.Popen([sys.executable, "-c", code, inp, str(out), *JOB_ARGS, *(extra or [])],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen, out: Path, timeout: float = 3600) -> dict:
    """Wait for a driver; its report.json plus `rc` and `peak_rss_mb`."""
    rc = proc.wait(timeout=timeout)
    text = Path(f"{out}.log").read_text()
    rss = [ln.split()[1] for ln in text.splitlines() if ln.startswith("PEAK_RSS_KB")]
    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    if rc not in (0, 3):
        print(text[-3000:], file=sys.stderr)
    return {**rep, "rc": rc, "peak_rss_mb": int(rss[-1]) / 1024 if rss else float("nan")}


def warm_up(work: Path, cluster: LocalCluster) -> None:
    """A run of the 8 clips in work/warm-clips, not measured: the nodes' worker processes
    start and import before the measured runs."""
    out = work / "warm-out"
    rep = finished(driver(str(work / "warm-clips"), out, cluster.address), out)
    assert rep["videos"]["done"] == 8, rep
    shutil.rmtree(out, ignore_errors=True)


def committed(out: Path) -> int:
    """Videos committed in OUTPUT (per-video files and compacted shards alike)."""
    from operators.sources import committed_video_ids
    from operators.storage import Storage

    return len(committed_video_ids(Storage(), str(out))) if (out / "videos").is_dir() else 0


# --------------------------------------------------------------------------- tables


def table_nodes(work: Path, args) -> str:
    """Each cluster shape runs N clips, then 3N others on the same cluster: the marginal
    rate (2N clips over the difference in wall and CPU) leaves out what a run pays once per
    node (worker processes starting, imports), which 2 s clips would otherwise drown in."""
    clip = make_clip(work / "clip.mp4")
    n = args.clips
    for count in (n, 3 * n):
        linked_clips(work / f"nodes-clips-{count}", clip, count)
    linked_clips(work / "warm-clips", clip, 8)
    shapes = {"one node, 2 CPUs": (2,), "two nodes, 1 CPU each": (1, 1)}
    results: dict[str, list] = {k: [] for k in shapes}
    for run in range(args.runs):
        for name, cpus in shapes.items():
            cluster = LocalCluster(work / f"nodes-{run}-{len(cpus)}", worker_cpus=cpus)
            meters = {}
            try:
                warm_up(work, cluster)
                for count in (n, 3 * n):
                    out = work / f"out-{run}-{len(cpus)}-{count}"
                    with CpuMeter() as m:
                        rep = finished(driver(str(work / f"nodes-clips-{count}"), out, cluster.address), out)
                    assert rep["videos"]["done"] == count, rep
                    meters[count] = m
                    shutil.rmtree(out, ignore_errors=True)
            finally:
                cluster.shutdown()
            small, big = meters[n], meters[3 * n]
            results[name].append((big.wall, big.own_s, big.wall - small.wall, big.own_s - small.own_s,
                                  max(small.other_cores, big.other_cores), big.by_role))
    rows, base = [], None
    for name, runs in results.items():
        wall = min(r[0] for r in runs)
        d_wall, d_cpu = min(r[2] for r in runs), min(r[3] for r in runs)
        video_s = CLIP_SECONDS * 2 * n  # the 2N clips the 3N run has more
        per_wall, per_cpu = video_s / d_wall, video_s / d_cpu
        base = base or (per_wall, per_cpu)
        rows.append([name, f"{wall:.1f}", f"{CLIP_SECONDS * 3 * n / wall:.2f}", f"{per_wall:.2f}",
                     f"{per_wall / base[0]:.2f}x", f"{per_cpu:.2f}", f"{per_cpu / base[1]:.2f}x",
                     f"{d_cpu / (2 * n):.3f}", f"{max(r[4] for r in runs):.1f}"])
    head = ["cluster (+ head, 0 CPUs)", f"wall s, {3 * n} clips", "video-s / wall-s (whole run)",
            "video-s / wall-s (marginal)", "vs one node", "video-s / CPU-s (marginal)", "vs one node",
            "CPU-s / video (marginal)", "other load (cores)"]
    # where the CPU of each shape's fastest 3N run went: what a second node costs shows here
    fastest = {name: min(runs, key=lambda r: r[0]) for name, runs in results.items()}
    roles = sorted({role for r in fastest.values() for role in r[5]},
                   key=lambda x: (ROLE_ORDER.index(x) if x in ROLE_ORDER else len(ROLE_ORDER), x))
    by_role = [[role, *(f"{r[5].get(role, 0.0):.1f}" for r in fastest.values())] for role in roles]
    by_role.append(["all", *(f"{r[1]:.1f}" for r in fastest.values())])
    by_role.append(["wall s", *(f"{r[0]:.1f}" for r in fastest.values())])
    return (f"{n} then {3 * n} clips of {CLIP_SECONDS:.0f} s on each cluster, {args.runs} run(s) each, best of "
            f"each column\n\n" + markdown_table(head, rows)
            + f"\n\nCPU-s by process role in each shape's fastest {3 * n}-clip run\n\n"
            + markdown_table(["process role", *fastest], by_role))


def table_overhead(work: Path, args) -> str:
    """CPU-seconds per video as the marginal cost: (CPU of a run of 3N clips - CPU of a run
    of N) / 2N on one 2-CPU node, by role, so that what a run pays once (driver start-up,
    Ray Data's planning, worker start-up) does not count."""
    clip = make_clip(work / "ov-clip.mp4")
    n = max(8, 2 * args.clips)  # Ray's own CPU varies by seconds from run to run: many clips
    cluster = LocalCluster(work / "ov-nodes", worker_cpus=(2,))
    meters = {}
    linked_clips(work / "warm-clips", clip, 8)
    try:
        warm_up(work, cluster)
        for count in (n, 3 * n):
            linked_clips(work / f"ov-{count}", clip, count)
            out = work / f"ov-out-{count}"
            with CpuMeter() as m:
                rep = finished(driver(str(work / f"ov-{count}"), out, cluster.address), out)
            assert rep["videos"]["done"] == count, rep
            meters[count] = m
    finally:
        cluster.shutdown()
    small, big = meters[n], meters[3 * n]
    roles = sorted(set(small.by_role) | set(big.by_role))
    rows = [[role, f"{small.by_role.get(role, 0):.1f}", f"{big.by_role.get(role, 0):.1f}",
             f"{(big.by_role.get(role, 0) - small.by_role.get(role, 0)) / (2 * n):.3f}"] for role in roles]
    rows.append(["all", f"{small.own_s:.1f}", f"{big.own_s:.1f}", f"{(big.own_s - small.own_s) / (2 * n):.3f}"])
    head = ["process role", f"CPU-s, {n} clips", f"CPU-s, {3 * n} clips", "CPU-s per video (marginal)"]
    return (f"2 s clips (160x120, 10 fps), one 2-CPU worker node + head; other load during the runs: "
            f"{small.other_cores:.1f} / {big.other_cores:.1f} cores\n\n" + markdown_table(head, rows))


def _prefill(out: Path, listing: Path, keep: int) -> int:
    """Commit records for every input of `listing` but the last `keep` (as an earlier run
    would have left them); returns how many were written."""
    from operators.sources import iter_sources, plan_listing
    from operators.storage import Storage
    from operators.write import write_table

    storage = Storage()
    sources = list(iter_sources(storage, plan_listing(storage, str(listing))))
    for s in sources[: max(0, len(sources) - keep)]:
        write_table(storage, str(out), "videos", s.video_id, [{
            "video_id": s.video_id, "source_uri": s.source_uri, "status": "done", "frames_sampled": 0}])
    return max(0, len(sources) - keep)


def table_rss(work: Path, args) -> str:
    counts = [int(x) for x in args.rss_inputs.split(",") if x]
    clip = make_clip(work / "rss-clip.mp4")
    cluster = LocalCluster(work / "rss-nodes", worker_cpus=(2,))
    rows, base = [], None
    try:
        for n in counts:
            files = linked_clips(work / "rss-clips", clip, n)
            listing = work / f"list-{n}.txt"
            listing.write_text("".join(f"{f}\n" for f in files[:n]))
            out = work / f"rss-out-{n}"
            process = args.rss_process or n
            pre = _prefill(out, listing, process) if process < n else 0
            t0 = time.perf_counter()
            rep = finished(driver(str(listing), out, cluster.address), out)
            wall = time.perf_counter() - t0
            base = base or rep["peak_rss_mb"]
            rows.append([f"{n:,}", f"{pre:,}", f"{rep['videos']['done'] + rep['videos']['failed']:,}",
                         f"{rep['videos']['skipped']:,}", f"{rep['peak_rss_mb']:.0f}",
                         f"{rep['peak_rss_mb'] / base:.2f}x", str(rep.get("listing", {}).get("peak_ahead", "")),
                         str(rep.get("assembler", {}).get("peak_videos", "")), f"{wall:.0f}"])
            shutil.rmtree(out, ignore_errors=True)
    finally:
        cluster.shutdown()
    head = ["inputs", "committed before", "processed", "skipped", "driver peak RSS MB", "vs first",
            "listing ahead (peak)", "assembler videos (peak)", "wall s"]
    return "one 2-CPU worker node + head; a listing file of hard links of one 2 s clip\n\n" + markdown_table(head, rows)


def _chunk_rows(n_videos: int, per_video: int, frames: int = 64, dim: int = 512) -> list[dict]:
    import numpy as np

    from operators.chunk_row import ChunkRow
    from operators.features import FEATURE_DIM

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((frames, dim)).astype(np.float16)
    feats = rng.random((frames, FEATURE_DIM), dtype=np.float32)
    rows = []
    for v in range(n_videos):
        for c in range(per_video):
            r = ChunkRow(video_id=f"{v:020d}", source_uri=f"s3://b/{v}.mp4", chunk_index=c, n_chunks=per_video,
                         duration_s=64.0 * per_video, fps=1.0, frame_index=np.arange(c * frames, (c + 1) * frames),
                         timestamps=np.arange(frames, dtype=np.float64) + c * frames, features=feats,
                         embedding=emb, node_id="n" * 56)
            rows.append({k: v[0] for k, v in r.to_batch().items()})
    return rows


def table_assembler(work: Path, args) -> str:
    from operators.assemble import VideoAssembler
    from operators.chunk_row import ChunkRow

    rows_out = []
    for per_video in (1, 8):
        rows = _chunk_rows(4000 // per_video, per_video)
        a = VideoAssembler()
        t0 = time.process_time()
        done = sum(a.add(ChunkRow.from_row(r)) is not None for r in rows)
        cpu = time.process_time() - t0
        assert done == len(rows) // per_video, done
        rows_out.append([f"ChunkRow.from_row + VideoAssembler.add in process, {per_video} row(s) a video",
                         f"{len(rows):,}", f"{len(rows) / cpu:,.0f}", "", "", f"{len(rows) * 64 / cpu:,.0f} (CPU-s)"])
    # through Ray: the driver's iter_rows of row-by-row blocks (the job before the assembler
    # actors) against the job's path, on a local Ray
    import numpy as np
    import ray
    import ray.data

    from jobs.assembly import assembly_feeder
    from operators.listing import BLOCK_BYTES
    from operators.stages import one_chunk

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.target_max_block_size = BLOCK_BYTES
        ctx.execution_options.preserve_order = False
        for frames, n in ((2, 8000), (64, 2000)):
            template = _chunk_rows(1, 1, frames=frames)[0]

            def make(batch, template=template, chunks=1):
                # as DecodeStage does: row by row (each video `chunks` rows, the first only)
                for vid in batch["id"]:
                    yield {k: (np.array([f"{int(vid):020d}"], dtype=object) if k == "video_id" else
                               np.array([chunks]) if k == "n_chunks" else
                               (np.array([v], dtype=object) if isinstance(v, str) else np.array([v])))
                           for k, v in template.items()}

            ds = ray.data.range(n, override_num_blocks=50).map_batches(make, batch_size=1).materialize()
            a = VideoAssembler()
            t0, c0 = time.perf_counter(), time.process_time()
            got = sum(a.add(ChunkRow.from_row(r)) is not None for r in ds.iter_rows())
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert got == n, got
            base = n / wall
            rows_out.append([f"{frames}-frame rows: the driver's iter_rows + the above, row-by-row blocks (before)",
                             f"{n:,}", f"{n / cpu:,.0f}", f"{n / wall:,.0f}", "1.00x", f"{n * frames / wall:,.0f}"])
            # the job's path: contiguous blocks (one_chunk, fused into the decode tasks); the
            # driver hands their references to N assembler actors, which gather the rows (these
            # videos lack their second chunk: none is finalized, only the gathering is timed)
            held = ray.data.range(n, override_num_blocks=50).map_batches(
                functools.partial(make, chunks=2), batch_size=1).map_batches(
                one_chunk, batch_size=None, batch_format="pyarrow", zero_copy_batch=True).materialize()
            for count in (1, 2):
                best = None  # best of 3: on two shared cores a run now and then takes 2-3x as long
                for _ in range(3):
                    feeder, actors = assembly_feeder(ray, count, ray.put(None), {}, 8, lambda news: None)
                    ray.get([actor.stats.remote() for actor in actors])  # started (the job starts them meanwhile)
                    t0, c0 = time.perf_counter(), time.process_time()
                    for bundle in held.iter_internal_ref_bundles():
                        for ref in bundle.block_refs:
                            feeder.feed(ref)
                    stats = feeder.finish()
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    assert stats.never_completed == n, stats
                    for actor in actors:
                        ray.kill(actor)
                    best = min(best or (wall, cpu), (wall, cpu))
                wall, cpu = best
                where = "its own assembler (the job up to 127 CPUs)" if count == 1 else f"{count} assembler actors"
                rows_out.append([f"{frames}-frame rows: contiguous blocks, the driver hands their references to "
                                 f"{where}; best of 3", f"{n:,}", f"{n / cpu:,.0f} (driver)",
                                 f"{n / wall:,.0f}", f"{n / wall / base:.2f}x", f"{n * frames / wall:,.0f}"])
    finally:
        ray.shutdown()
    head = ["path", "rows", "rows / CPU-s", "rows / wall-s", "vs before", "sampled frames / wall-s"]
    return ("chunk rows of 2 sampled frames (a 2 s clip at 1 fps) and of 64 (a full chunk), 512-d float16 "
            "embeddings; the paths through Ray on a local 2-CPU Ray, each video's rows materialized first\n\n"
            + markdown_table(head, rows_out))


def _selection(out: Path) -> tuple:
    """What a run chose for its videos: shot starts and selected frames' timestamps."""
    from operators.storage import Storage
    from operators.write import read_table

    shots = sorted(r["start_s"] for r in read_table(Storage(), str(out), "shots").to_pylist())
    frames = sorted(r["timestamp_s"] for r in read_table(Storage(), str(out), "manifest").to_pylist())
    return shots, frames


def table_long(work: Path, args) -> str:
    from benchmarks.speed import loop_video
    from operators import defaults

    src = REPO.parent / "shared" / "videos" / "big_buck_bunny_0_30.webm"
    rows = []
    for minutes in [float(x) for x in args.long_minutes.split(",") if x]:
        folder = work / f"long-{minutes:g}"
        folder.mkdir()
        loops = loop_video(src, folder / "bbb.mkv", minutes * 60)
        runs = {}
        for label, seg in (("one task (--segment-s 0)", 0.0), (f"spans (--segment-s {defaults.SEGMENT_S:g}, default)",
                                                                 defaults.SEGMENT_S)):
            cluster = LocalCluster(work / f"long-nodes-{minutes:g}-{seg:g}", worker_cpus=(2,))
            out = work / f"long-out-{minutes:g}-{seg:g}"
            try:
                with CpuMeter() as m:
                    rep = finished(driver(str(folder), out, cluster.address, ["--segment-s", str(seg)]), out)
            finally:
                cluster.shutdown()
            assert rep["videos"]["done"] == 1, rep
            runs[label] = (m, rep, _selection(out))
            shutil.rmtree(out, ignore_errors=True)
        base = next(iter(runs.values()))
        for label, (m, rep, chosen) in runs.items():
            rows.append([f"{loops * 30 / 60:.0f} min", label, str(rep["split"]["span_tasks"] or 1), f"{m.wall:.0f}",
                         f"{base[0].wall / m.wall:.2f}x", f"{m.own_s:.0f}", f"{m.own_s / m.wall:.2f}",
                         f"{m.peak_rss_mb.get(DECODE_AND_FINALIZE, 0):.0f}",
                         "yes" if chosen == base[2] else "NO", f"{m.other_cores:.1f}"])
        shutil.rmtree(folder, ignore_errors=True)
    head = ["video", "decode", "tasks", "wall s", "speed-up", "CPU-s", "cores busy", "largest decode worker RSS MB",
            "same shots + frames", "other load (cores)"]
    return ("Big Buck Bunny 0-30 s (1280x720 VP8, 24 fps) looped into one MKV; one 2-CPU worker node + head; "
            "the job's defaults but the model\n\n" + markdown_table(head, rows))


def table_faults(work: Path, args) -> str:
    import re

    import ray

    from benchmarks.fault_corpus import build_fault_corpus
    from jobs import curate
    from operators.storage import Storage
    from operators.write import read_table

    cases = build_fault_corpus(work / "faults" / "in")
    out = work / "faults" / "out"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        cfg = curate.config_from_args([str(work / "faults" / "in"), str(out), *JOB_ARGS])
        listed = curate.preflight(cfg, Storage(), list_now=True)
        for case in cases:  # the file that changes between listing and decode
            if case.after_listing:
                case.after_listing()
        t0 = time.perf_counter()
        curate.run(cfg, listed=listed)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    got = {r["source_uri"]: r for r in read_table(Storage(), str(out), "videos").to_pylist()}
    rows = []
    for case in cases:
        row = got.get(str(case.path))
        status = row["status"] if row else "LOST"
        reason = (row or {}).get("error") or ""
        ok = row is not None and status == case.status and (
            case.reason is None or bool(re.search(case.reason, reason, re.IGNORECASE)))
        rows.append([case.name, case.status, status, reason.replace("|", "/")[:110], "yes" if ok else "NO"])
    lost = sum(r[2] == "LOST" for r in rows)
    head = ["input", "must be", "got", "reason (first 110 characters)", "as it must"]
    return (f"{len(cases)} inputs, one job run on a local 2-CPU Ray ({wall:.0f} s); lost: {lost}\n\n"
            + markdown_table(head, rows))


def table_kill(work: Path, args) -> str:
    clips = linked_clips(work / "clips", make_clip(work / "clip.mp4"), args.clips)
    rows = []
    for kill in (False, True):
        cluster = LocalCluster(work / f"kill-nodes-{kill}", worker_cpus=(1, 1))
        out = work / f"kill-out-{kill}"
        try:
            t0 = time.perf_counter()
            proc = driver(str(work / "clips"), out, cluster.address)
            at = ""
            if kill:
                while committed(out) < 3 and proc.poll() is None:
                    time.sleep(0.05)
                at = str(committed(out))
                os.kill(cluster.raylet_pid(cluster.workers[0]), signal.SIGKILL)
            rep = finished(proc, out)
            wall = time.perf_counter() - t0
            rows.append(["killed after the first commits" if kill else "no kill", at or "-", str(rep["rc"]),
                         f"{rep['videos']['done']}/{len(clips)}", str(committed(out)),
                         str(len(clips) - committed(out)), str(rep.get("uncommitted")),
                         str(rep["placement"]["finalized_off_source_node"]),
                         str(rep["assembler"]["duplicate_rows"]), f"{wall:.1f}"])
        finally:
            cluster.shutdown()
            shutil.rmtree(out, ignore_errors=True)
    head = ["worker node 0 (its raylet, SIGKILL)", "commits at kill", "exit", "done", "committed", "lost",
            "uncommitted", "finalized off node", "duplicate rows dropped", "wall s"]
    return f"{len(clips)} clips of {CLIP_SECONDS:.0f} s, head (0 CPUs) + two 1-CPU workers\n\n" + markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    """Print the chosen tables."""
    args = parse_args(argv)
    chosen = [t for t in args.only.split(",") if t]
    unknown = set(chosen) - set(TABLES)
    if unknown:
        raise SystemExit(f"unknown tables {sorted(unknown)}; choose from {', '.join(TABLES)}")
    work = Path(tempfile.mkdtemp(prefix="framesift-scale-"))
    try:
        for name in chosen:
            t0 = time.perf_counter()
            text = globals()[f"table_{name}"](work, args)
            print(f"\n### {name} ({time.perf_counter() - t0:.0f} s)\n\n{text}\n", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
