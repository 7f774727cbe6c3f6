"""Load benchmark of the Ray Serve application (jobs/serve.py) on loopback.

    python -m benchmarks.serve_load                     # CLIP ViT-B-32 (random weights), 30 s per row
    python -m benchmarks.serve_load --duration 60       # longer rows
    python -m benchmarks.serve_load --embedder features # the training-free embedder (no model)

Starts two copies of the application on one local Ray instance (all cores), batching off
and batching on, and for each concurrency (1, 4, 16) keeps that many clients posting
`POST /select` (closed loop: each client sends its next request when its previous answer
arrives). The two copies are measured in alternating windows (`--window`, after `--warmup`
unmeasured seconds each) for `--duration` seconds in all, so that the background load of a
shared machine hits both alike. Prints requests/s, latency percentiles (of the requests that
finished in the measured windows), errors (anywhere in the run: a non-200 answer, a failed
connection or a 300 s timeout; in-flight requests are always waited for, none is dropped)
the model batch sizes the Embedder saw, and its frames per second while it was computing
(the batching efficiency itself, less sensitive to the rest of the machine than req/s).

The workload: a short synthetic clip (`--clip-s`, default 2 s, two shots) read from a local
allowed folder by URI, sampled at 1 fps, k=2 with `kmeans`: a few frames per request, the case
where batching across requests matters (a long video is already a big batch on its own).
Each request's frames go to the Embedder as one chunk (`embed_chunk_frames` = frames per
request); "batching off" sets the Embedder's `max_batch_frames` to that chunk, so every
request's frames run as their own model call; "on" lets `@serve.batch` merge up to
`--batch-frames` frames from concurrent requests.

Random CLIP weights cost exactly what real weights cost (same architecture, same FLOPs).
"""

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import free_port, markdown_table

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One load level's measurements."""

    batching: str
    concurrency: int
    seconds: float = 0.0
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    mean_batch_frames: float = 0.0
    model_fps: float = 0.0
    max_batch_requests: int = 0

    def pct(self, q: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies) * 1000, q, method="nearest"))

    def cells(self) -> list[str]:
        """The row as markdown table cells."""
        rps = self.ok / self.seconds if self.seconds else 0.0
        return [self.batching, str(self.concurrency), str(self.sent), f"{rps:.2f}",
                f"{self.pct(50):.0f}", f"{self.pct(95):.0f}", f"{self.pct(99):.0f}",
                str(self.errors),
                f"{self.mean_batch_frames:.1f}", str(self.max_batch_requests), f"{self.model_fps:.1f}"]


HEADER = ["batching", "concurrency", "requests (in window)", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
          "mean model batch (frames)", "max requests / batch", "model frames/s while busy"]


def make_clip(folder: Path, seconds: float) -> Path:
    """A synthetic clip of two shots in `folder` (PyAV)."""
    sys.path.insert(0, str(ROOT))
    from tests.synthetic import make_shots_video

    path = folder / "clip.mp4"
    make_shots_video(path, [seconds / 2, seconds / 2], fps=10)
    return path


def frames_per_request(args: argparse.Namespace) -> int:
    """Frames the service samples from the posted clip (one per 1/fps seconds)."""
    return max(1, math.ceil(args.clip_s * args.fps - 1e-9))


def service_config(args: argparse.Namespace, folder: Path, batching: bool) -> dict:
    """The service's options for one half of the benchmark."""
    one = {"autoscaling_config": None, "num_replicas": 1}
    cpus = os.cpu_count() or 2
    chunk = frames_per_request(args)  # one request = one chunk: "off" means one request per model call
    return {
        "allowed_prefixes": [str(folder)], "embedder": args.embedder, "pretrained": "random",
        "model": args.model, "embed_chunk_frames": chunk,
        "embed_max_batch_frames": args.batch_frames if batching else chunk,
        "embed_batch_wait_s": args.batch_wait_s, "embed_num_threads": cpus,
        "request_timeout_s": 300, "token_env": "",
        "ingress": {**one, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 0.25}},
        "embedding": {**one, "max_ongoing_requests": 256,
                      "ray_actor_options": {"num_cpus": 0.5, "num_gpus": "auto"}},
    }


async def load(url: str, body: dict, concurrency: int, seconds: float) -> list[tuple[float, float, bool]]:
    """Closed-loop load: `concurrency` clients posting until `seconds` have passed; requests
    in flight then are waited for. Returns (finish time, latency, ok) per request."""
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    done: list[tuple[float, float, bool]] = []
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    good = (await client.post(url, json=body)).status_code == 200
                except httpx.HTTPError:
                    good = False
                now = time.perf_counter()
                done.append((now, now - t, good))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def embedder_stats(app_name: str) -> dict:
    """The Embedder's batch counters, or zeros when there is no Embedder."""
    from ray import serve

    try:
        return serve.get_deployment_handle("Embedder", app_name).stats.remote().result()
    except Exception:  # noqa: BLE001 - the features embedder has no Embedder deployment
        return {"batches": 0, "frames": 0, "busy_s": 0.0, "max_batch_frames": 0, "max_batch_requests": 0}


def measure(base: str, body: dict, modes: list[str], concurrency: int, args) -> list[Row]:
    """One concurrency level for every mode, in alternating windows (off, on, off, on, ...) so
    that a change in the machine's background load hits both modes alike. Each window runs
    `--warmup` s unmeasured, then counts the requests that finish in the next `--window` s
    (steady state: no pipeline fill or drain in the count). Errors count whenever they occur."""
    rows = {m: Row(m, concurrency) for m in modes}
    before = {m: embedder_stats(f"load-{m}") for m in modes}
    rounds = max(1, round(args.duration / args.window))
    for _ in range(rounds):
        for m in modes:
            t0 = time.perf_counter() + args.warmup
            t1 = t0 + args.duration / rounds
            done = asyncio.run(load(f"{base}/{m}/select", body, concurrency, t1 - time.perf_counter()))
            r = rows[m]
            r.seconds += t1 - t0
            r.errors += sum(1 for _, _, ok in done if not ok)
            inside = [(lat, ok) for t, lat, ok in done if t0 <= t < t1]
            r.sent += len(inside)
            r.ok += sum(1 for _, ok in inside if ok)
            r.latencies += [lat for lat, ok in inside if ok]
    for m in modes:
        after = embedder_stats(f"load-{m}")
        batches = after["batches"] - before[m]["batches"]
        frames = after["frames"] - before[m]["frames"]
        busy = after["busy_s"] - before[m]["busy_s"]
        rows[m].mean_batch_frames = frames / batches if batches else 0.0
        rows[m].model_fps = frames / busy if busy else 0.0
        rows[m].max_batch_requests = after["max_batch_requests"]
    return [rows[m] for m in modes]


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    return markdown_table(HEADER, (r.cells() for r in rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per row (default 30)")
    p.add_argument("--warmup", type=float, default=4.0, help="unmeasured seconds before each window")
    p.add_argument("--window", type=float, default=15.0, help="alternation window (s) between modes")
    p.add_argument("--concurrency", default="1,4,16", help="client counts (default 1,4,16)")
    p.add_argument("--embedder", default="clip", choices=["clip", "features"])
    p.add_argument("--model", default="ViT-B-32", help="open_clip model (random weights)")
    p.add_argument("--clip-s", type=float, default=2.0, help="length of the posted clip (s)")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
    p.add_argument("--batch-frames", type=int, default=64, help="frames per model batch, batching on")
    # Serve forms a batch from what arrives within the wait, not from the backlog when the
    # model frees up; on CPU a few-frame model call takes ~0.3-0.5 s, so a 0.2 s wait costs
    # little and lets batches fill (on a GPU, 10-20 ms is the right order).
    p.add_argument("--batch-wait-s", type=float, default=0.2, help="@serve.batch wait (default 0.2)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    args = parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray import serve

    from jobs.serve import build_app

    levels = [int(c) for c in args.concurrency.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="framesift-serve-load-"))
    clip = make_clip(folder, args.clip_s)
    body = {"uri": str(clip), "method": "kmeans", "k": 2, "fps": args.fps}
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    base = f"http://127.0.0.1:{port}"
    modes = ["off", "on"] if args.embedder == "clip" else ["features"]
    rows: list[Row] = []
    try:
        for mode in modes:  # both applications stay up; the idle one costs nothing
            cfg = service_config(args, folder, batching=mode == "on")
            serve.run(build_app(cfg), name=f"load-{mode}", route_prefix=f"/{mode}",
                      logging_config={"log_level": "WARNING", "enable_access_log": False})
            probe = httpx.post(f"{base}/{mode}/select", json=body, timeout=300)
            probe.raise_for_status()
            print(f"batching {mode}: {probe.json()['video']['frames_sampled']} frames per request, "
                  f"embedder {probe.json()['embedder']}", flush=True)
        for c in levels:
            for row in measure(base, body, modes, c, args):
                rows.append(row)
                print("  " + " | ".join(row.cells()), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    print()
    print("command: python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{os.cpu_count()} CPUs, embedder {args.embedder} {args.model if args.embedder == 'clip' else ''}, "
          f"{args.duration:g} s per row, clip {args.clip_s:g} s at {args.fps:g} fps")
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ | {"p50_ms": r.pct(50)} for r in rows], indent=1))
    bad = sum(r.errors for r in rows)
    by = {(r.batching, r.concurrency): r.ok / r.seconds for r in rows if r.seconds}
    top = max(levels)
    if ("on", top) in by and ("off", top) in by:
        print(f"\nbatching speed-up at concurrency {top}: {by[('on', top)] / by[('off', top)]:.2f}x")
    print(f"median latency overall: {statistics.median([x for r in rows for x in r.latencies]) * 1000:.0f} ms"
          if any(r.latencies for r in rows) else "")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
