"""How to spend a CPU node's cores on the CLIP image tower: one embedding process or several,
torch's operator threads or each thread on its own slice of the batch.

    python -m benchmarks.cpu_threads                    # every layout that fits this machine
    python -m benchmarks.cpu_threads --processes 1,2,4 --frames 64 --seconds 3

For each layout (P processes x T threads, T = cores / P) and each way of using the T threads
it starts P fresh processes that each build a `operators.embed.ClipEmbedder` on the CPU, as
the job's embedding actor does (OpenMP waits passive, `operators.stages.passive_openmp_waits`),
and then, all at once, embed random uint8 frames in calls of `--frames` frames (the job's
dense chunk row is 64) for `--seconds`. The ways:

* ``operator``: torch's intra-op threads, T per process (every operator split across them);
* ``split``: T Python threads per process, each running the tower with one torch thread on its
  own slice of the call (`ClipEmbedder(split_batches=True)`, the default on a CPU with more
  than one thread: `operators.threads.splits_batches`);

one thread per process is both. Prints frames/s for the node, per core and against the best
layout, for each precision (`--dtypes`; `auto` is the job's: bf16 on CPUs with native bf16).
Random weights cost what real ones cost. Needs torch, open_clip and numpy (no Ray, no video).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

from benchmarks.common import markdown_table

MODEL = "ViT-B-32"


def _worker(threads: int, way: str, dtype: str, frames: int, seconds: float, barrier, out) -> None:
    """One embedding process: build the embedder, wait for the others, embed for `seconds`;
    puts (frames embedded, wall s, CPU s, the precision used) on `out`."""
    import logging

    from operators.process import passive_openmp_waits

    passive_openmp_waits()
    logging.disable(logging.WARNING)  # open_clip warns that the weights are random: they are meant to be
    from operators.embed import ClipEmbedder
    from operators.weights import EmbedderSpec

    emb = ClipEmbedder(EmbedderSpec("clip", MODEL), device="cpu", batch_size=frames,
                       num_threads=threads, dtype=dtype, split_batches=way == "split")
    x = np.random.default_rng(os.getpid()).integers(0, 256, (frames, emb.image_size, emb.image_size, 3),
                                                    dtype=np.uint8)
    emb.encode_frames(x)  # warm-up: first-call allocations and kernel selection
    barrier.wait()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n == 0 or time.perf_counter() - t0 < seconds:
        emb.encode_frames(x)
        n += frames
    out.put((n, time.perf_counter() - t0, time.process_time() - c0, emb.dtype_name))


def measure(processes: int, threads: int, way: str, dtype: str, frames: int, seconds: float) -> dict:
    """Run one layout in fresh processes (spawned: no torch state shared with this one).
    Returns frames/s for all of them together and the precision they ran in."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(threads, way, dtype, frames, seconds, barrier, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    return {"processes": processes, "threads": threads, "way": way, "dtype": results[0][3],
            "frames": frames, "fps": n / wall, "cores_busy": sum(r[2] for r in results) / wall}


def layouts(cores: int, processes: list[int]) -> list[tuple[int, int, str]]:
    """(processes, threads each, way) for every process count that divides the cores evenly:
    both ways where a process has more than one thread, else the single-thread way."""
    out = []
    for p in processes:
        if p < 1 or p > cores or cores % p:
            continue
        t = cores // p
        out += [(p, t, "operator"), (p, t, "split")] if t > 1 else [(p, 1, "operator")]
    return out


def render(rows: list[dict], cores: int) -> str:
    """Markdown table of the measured layouts, per precision, best first."""
    head = ["precision", "processes x threads", "way", "frames/call", "frames/s (node)", "per core", "x best",
            "cores busy"]
    cells = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        sub = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: -r["fps"])
        best = sub[0]["fps"]
        for r in sub:
            way = r["way"] if r["threads"] > 1 else "one thread"
            cells.append([dtype, f"{r['processes']} x {r['threads']}", way, str(r["frames"]), f"{r['fps']:.1f}",
                          f"{r['fps'] / cores:.2f}", f"{r['fps'] / best:.2f}", f"{r['cores_busy']:.2f}"])
    return markdown_table(head, cells)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cpu_threads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores to fill (default: all)")
    ap.add_argument("--processes", default=None,
                    help="comma-separated process counts (default: 1, 2, 4, ... up to the cores)")
    ap.add_argument("--frames", type=int, default=64, help="frames per call (the job's dense chunk row: 64)")
    ap.add_argument("--dtypes", default="auto,fp32", help="comma-separated precisions (auto = the job's)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per layout")
    ap.add_argument("--json", default=None, help="also write the rows here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure every layout, print the table; returns the exit status."""
    args = parse_args(argv)
    if args.processes:
        procs = [int(p) for p in args.processes.split(",")]
    else:
        procs = [1 << i for i in range(args.cores.bit_length()) if (1 << i) <= args.cores]
    from operators.precision import embed_dtype

    rows = []
    # `auto` is fp32 on CPUs without native bf16: each precision is measured once
    for dtype in dict.fromkeys(embed_dtype(d, "cpu") for d in args.dtypes.split(",")):
        for p, t, way in layouts(args.cores, procs):
            r = measure(p, t, way, dtype, args.frames, args.seconds)
            rows.append(r)
            print(f"{r['dtype']} {p} x {t} {way}: {r['fps']:.1f} frames/s", file=sys.stderr, flush=True)
    print(f"{MODEL} image tower on {args.cores} cores, random uint8 frames, {args.frames} per call, "
          f"{args.seconds:g} s per layout")
    print(render(rows, args.cores))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
